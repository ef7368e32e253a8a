"""Fixtures for the hostile-input and fault tests: a tiny trained run, and `tinyllm` in a bounded
subprocess (bounded.py: the address space capped, a timeout that kills the process group)."""
import json
import shutil

import pytest

from .bounded import TINY, assert_one_line_error, corpus_text, run_tinyllm


@pytest.fixture(scope="session")
def tinyllm():
    return run_tinyllm


@pytest.fixture(scope="session")
def one_line_error():
    return assert_one_line_error


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("faults-corpus") / "corpus.txt"
    path.write_text(corpus_text(), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def trained(tmp_path_factory, corpus):
    """A tiny finished run (step 4, float32), trained in this process; copy it before changing it."""
    from tinyllm.cli import main
    run = tmp_path_factory.mktemp("faults-run") / "run"
    assert main(["train", "--data", str(corpus), "--out", str(run), "--max-iters", "4", "--eval-interval", "2",
                 *TINY]) == 0
    return run


@pytest.fixture
def copy_of(tmp_path):
    """copy_of(run) -> a private copy of a run directory (links kept), to damage."""
    def copy(run, name="copy"):
        target = tmp_path / name
        shutil.copytree(run, target, symlinks=True)
        return target
    return copy


@pytest.fixture
def write_records(tmp_path):
    """write_records(labels=...) -> a .jsonl classification file (and a char tokenizer at hf/tok if needed)."""
    def write(labels=("pos", "neg") * 6, name="data.jsonl"):
        from tinyllm.tokenizer import BPETokenizer
        hf_tok = tmp_path / "hf" / "tok"
        if (tmp_path / "hf").is_dir() and not hf_tok.exists():
            BPETokenizer({bytes([b]): b for b in range(256)}, "gpt2").save(hf_tok)
        path = tmp_path / name
        path.write_text("".join(json.dumps({"text": f"text number {i}", "label": label}) + "\n"
                                for i, label in enumerate(labels)))
        return path
    return write
