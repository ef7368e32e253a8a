"""Every path a run stores is absolute (or the run directory's own).

A run made in one directory with relative `--data`, `--tokenizer FILE`, `--init-from` and a
finetune's `--data` must be usable (`sample`, `eval`, `classify`) and resumable from any other
working directory; a TOML file's relative paths likewise.
"""
import json
import os
import shutil

from .bounded import TINY, cli
from tinyllm import checkpoint as ckpt
from tinyllm.tokenizer import CharTokenizer


def ok(capsys, *argv) -> str:
    """stdout of `tinyllm argv...`, which must succeed."""
    code, out, err = cli(capsys, *argv)
    assert code == 0, err
    return out


def write_records(path) -> None:
    """A classification file in the corpus's words (its characters are the char tokenizer's)."""
    texts = ["the cat sat on a mat", "the dog ran to it", "a cat and a dog", "it sat on the mat"] * 4
    path.write_text("".join(json.dumps({"text": text, "label": "cat" if "cat" in text else "dog"}) + "\n"
                            for text in texts))


def test_a_run_made_with_relative_paths_is_used_and_resumed_from_elsewhere(tmp_path, corpus, capsys, monkeypatch):
    made, elsewhere = tmp_path / "made", tmp_path / "elsewhere"
    made.mkdir(), elsewhere.mkdir()
    shutil.copy(corpus, made / "corpus.txt")
    CharTokenizer.train(corpus.read_text()).save(made / "chars.tok")
    write_records(made / "records.jsonl")
    monkeypatch.chdir(made)
    ok(capsys, "train", "--data", "corpus.txt", "--tokenizer", "chars.tok", "--out", "run", *TINY, "--max-iters", "2")
    ok(capsys, "finetune", "--task", "classify", "--init-from", "run", "--data", "records.jsonl", "--out", "clf",
        "--max-iters", "2", "--eval-interval", "1", "--progress", "none")
    state = ckpt.read_state("run")
    assert state["train_config"]["data"] == str(made / "corpus.txt")
    assert state["train_config"]["tokenizer"] == str(made / "chars.tok")
    finetune = ckpt.read_state("clf")["finetune"]["config"]
    assert finetune["init_from"] == str(made / "run") and finetune["data"] == str(made / "records.jsonl")

    monkeypatch.chdir(elsewhere)
    ok(capsys, "train", "--out", made / "run", "--resume", "--max-iters", "4", "--progress", "none")
    ok(capsys, "eval", "--ckpt", made / "run", "--max-tokens", "50")
    ok(capsys, "sample", "--ckpt", made / "run", "--max-new-tokens", "5")
    assert "\t" in ok(capsys, "classify", "--ckpt", made / "clf", "the cat sat")
    ok(capsys, "finetune", "--out", made / "clf", "--resume", "--max-iters", "3", "--progress", "none")
    assert ckpt.read_state(made / "clf")["step"] == 3


def test_a_toml_files_relative_data_is_stored_absolute(tmp_path, corpus, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shutil.copy(corpus, tmp_path / "corpus.txt")
    (tmp_path / "run.toml").write_text('data = "corpus.txt"\ntokenizer = "char"\n')
    ok(capsys, "train", "--config", "run.toml", "--out", "run", *TINY, "--max-iters", "1")
    config = json.loads((tmp_path / "run" / "config.json").read_text())["train"]
    assert config["data"] == str(tmp_path / "corpus.txt") and config["tokenizer"] == "char"
    os.chdir(tmp_path.parent)
    ok(capsys, "train", "--out", tmp_path / "run", "--resume", "--max-iters", "2", "--data", tmp_path / "corpus.txt")
