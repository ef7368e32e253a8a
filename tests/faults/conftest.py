"""Fixtures for the hostile-input and fault tests: a tiny trained run, and `tinyllm` in a bounded
subprocess (bounded.py: the address space capped, a timeout that kills the process group)."""
import shutil

import pytest

from bounded import TINY, assert_one_line_error, corpus_text, run_tinyllm


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
