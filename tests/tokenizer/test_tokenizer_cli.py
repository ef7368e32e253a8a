"""`tinyllm tokenizer train|encode`, called through register() and the handlers."""

import argparse
import os

import pytest

from tinyllm.tokenizer import load_tokenizer, read_shard
from tinyllm.tokenizer import cli

def run(argv):
    parser = argparse.ArgumentParser(prog="tinyllm")
    cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.handler(args)

def test_train_then_encode(tmp_path, corpus_text, capsys):
    (tmp_path / "data.txt").write_text(corpus_text[:20_000])
    tokenizer_file = tmp_path / "bpe.tok"
    assert run(["tokenizer", "train", "--data", str(tmp_path / "data.txt"), "--vocab-size", "300",
                "--out", str(tokenizer_file), "--pattern", "gpt2"]) == 0
    tokenizer = load_tokenizer(tokenizer_file)
    assert tokenizer.vocab_size == 300 and tokenizer.eot_id == 299
    assert run(["tokenizer", "encode", "--tokenizer", str(tokenizer_file),
                "--data", str(tmp_path / "*.txt"), "--out", str(tmp_path / "shards")]) == 0
    shard_path = capsys.readouterr().out.strip().splitlines()[-1]
    ids = read_shard(shard_path, tokenizer_hash=tokenizer.hash())
    assert tokenizer.decode(ids) == corpus_text[:20_000] + "<|endoftext|>"

def test_encode_on_several_workers_with_a_prefix_and_again(tmp_path, corpus_text, trained_bpe, capsys):
    (tmp_path / "val.txt").write_text(corpus_text[:30_000])
    trained_bpe.save(tmp_path / "bpe.tok")
    argv = ["tokenizer", "encode", "--tokenizer", str(tmp_path / "bpe.tok"), "--data", str(tmp_path / "val.txt"),
            "--out", str(tmp_path / "shards"), "--prefix", "val", "--workers", "2", "--shard-tokens", "2000"]
    assert run(argv) == 0
    first = capsys.readouterr()
    paths = first.out.split()
    assert [p.rsplit("/", 1)[1] for p in paths[:2]] == ["val_000000.bin", "val_000001.bin"]
    assert "train on them with: tinyllm train --data" in first.err
    ids = [i for p in paths for i in read_shard(p).tolist()]
    assert ids == trained_bpe.encode_ordinary(corpus_text[:30_000]) + [trained_bpe.eot_id]
    mtimes = [os.stat(p).st_mtime_ns for p in paths]
    assert run(argv) == 0 and capsys.readouterr().out.split() == paths   # done already: nothing rewritten
    assert [os.stat(p).st_mtime_ns for p in paths] == mtimes


def test_train_without_special_tokens(tmp_path):
    (tmp_path / "d.txt").write_text("abc abc")
    run(["tokenizer", "train", "--data", str(tmp_path), "--vocab-size", "258",
         "--out", str(tmp_path / "t.tok"), "--special-tokens"])
    assert load_tokenizer(tmp_path / "t.tok").special_tokens == {}

@pytest.mark.parametrize("argv, error, message", [
    (["train", "--data", "{d}/d.txt", "--vocab-size", "100", "--out", "{d}/t"], ValueError,
     "--vocab-size 100 is too small"),
    (["train", "--data", "{d}/missing.txt", "--vocab-size", "300", "--out", "{d}/t"],
     FileNotFoundError, "missing.txt"),
    (["encode", "--tokenizer", "{d}/d.txt", "--data", "{d}/d.txt", "--out", "{d}/o"], ValueError,
     r"d\.txt, line 1: not a tinyllm tokenizer file"),
    (["encode", "--tokenizer", "{d}/d.txt", "--data", "{d}/d.txt", "--out", "{d}/o", "--prefix", "a/b"], ValueError,
     r"--prefix 'a/b': use letters, digits, - and _"),
    (["encode", "--tokenizer", "{d}/d.txt", "--data", "{d}/d.txt", "--out", "{d}/o", "--workers", "-1"], ValueError,
     r"--workers -1: must be 0 \(one per core\) or a positive integer"),
])
def test_bad_input_gives_one_line_errors(tmp_path, argv, error, message):
    (tmp_path / "d.txt").write_text("some text")
    with pytest.raises(error, match=message):
        run(["tokenizer", *[a.format(d=tmp_path) for a in argv]])

def test_main_exits_with_status_2_and_a_message(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["train", "--data", str(tmp_path / "nope"), "--vocab-size", "300",
                  "--out", str(tmp_path / "t")])
    assert exit_info.value.code == 2
    assert "tinyllm tokenizer: error: data path" in capsys.readouterr().err
