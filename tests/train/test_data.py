"""Corpora, the token-shard cache, the train/val split, batches, downloads, and training from token shards."""
import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import urllib.error
from pathlib import Path

import numpy as np
import pytest

from tinyllm import data, download
from tinyllm.data import (BatchSampler, DataError, builtin_text, prepare_dataset, resolve_corpus, split_point)
from tinyllm.errors import UserError
from tinyllm.tokenizer import BPETokenizer, encode_files_to_shards, load_tokenizer, read_shard, write_shard
from tinyllm.build import build_run
from tinyllm.settings import RunSettings
from tinyllm.train import Pretraining, train


def test_builtin_corpus_is_the_pydoc_topics_text():
    text = builtin_text()
    assert len(text) > 400_000
    assert "assert" in text and text == builtin_text()
    corpus = resolve_corpus(None)
    assert corpus.text() == text and corpus.name == "pydoc_data.topics"


def test_stdlib_corpus_lists_library_sources_without_tests():
    corpus = resolve_corpus("stdlib")
    files = corpus.sources[1:]
    assert len(files) > 200 and all(f.endswith(".py") for f in files)
    assert any(f.endswith(os.sep + "argparse.py") for f in files)
    assert not any(os.sep + "test" + os.sep in f for f in files)


def test_file_directory_and_glob(tmp_path):
    (tmp_path / "a.txt").write_text("alpha")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.md").write_text("beta")
    (tmp_path / "sub" / "c.bin").write_bytes(b"\x00\x01")
    assert resolve_corpus(str(tmp_path / "a.txt")).text() == "alpha"
    directory = resolve_corpus(str(tmp_path), extensions=".txt,.md")
    assert [os.path.basename(s) for s in directory.sources] == ["a.txt", "b.md"]
    assert resolve_corpus(str(tmp_path), extensions=".md").text() == "beta"
    globbed = resolve_corpus(str(tmp_path / "**" / "*.md"))
    assert [os.path.basename(s) for s in globbed.sources] == ["b.md"]
    with pytest.raises(DataError, match="no such file"):
        resolve_corpus(str(tmp_path / "missing.txt"))
    with pytest.raises(DataError, match="--data-ext"):
        resolve_corpus(str(tmp_path), extensions=".rst")
    with pytest.raises(DataError, match="matches no files"):
        resolve_corpus(str(tmp_path / "*.csv"))


def test_dataset_is_cached_reused_and_rebuilt_when_the_corpus_changes(tmp_path, corpus_file):
    messages = []
    first = prepare_dataset(resolve_corpus(str(corpus_file)), "char", tmp_path / "run", log=messages.append)
    assert any("tokenizing" in m for m in messages)
    n = first.meta["n_tokens"]
    assert first.meta["n_train"] == split_point(n, 0.1) == int(0.9 * n)
    text = corpus_file.read_text()
    ids = np.concatenate([np.asarray(first.train), np.asarray(first.val)])
    assert first.tokenizer.decode(ids.tolist()) == text           # the split loses nothing
    messages.clear()
    again = prepare_dataset(resolve_corpus(str(corpus_file)), "char", tmp_path / "run", log=messages.append)
    assert messages == [] and again.cache_dir == first.cache_dir   # reused, no tokenizing
    np.testing.assert_array_equal(again.val, first.val)
    corpus_file.write_text(text + "zebra quokka\n")
    changed = prepare_dataset(resolve_corpus(str(corpus_file)), "char", tmp_path / "run", log=messages.append)
    assert any("tokenizing" in m for m in messages) and changed.cache_dir != first.cache_dir
    assert not os.path.exists(first.cache_dir)                     # the stale cache is gone
    assert changed.vocab_size > first.vocab_size                   # "z" and "q" joined the vocabulary


def test_bpe_and_tokenizer_file_choices(tmp_path, corpus_file):
    corpus = resolve_corpus(str(corpus_file))
    bpe = prepare_dataset(corpus, "bpe", tmp_path / "run", vocab_size=300)
    assert bpe.vocab_size <= 300 and bpe.meta["n_tokens"] < len(corpus.text())
    tok_path = tmp_path / "tok.txt"
    bpe.tokenizer.save(tok_path)
    from_file = prepare_dataset(corpus, str(tok_path), tmp_path / "run2")
    np.testing.assert_array_equal(from_file.train, bpe.train)
    with pytest.raises(DataError, match="no such file"):
        prepare_dataset(corpus, str(tmp_path / "nope.tok"), tmp_path / "run3")


def test_batches_are_shifted_windows_reproducible_from_seed_and_state():
    tokens = np.arange(1000, dtype=np.uint16)
    sampler = BatchSampler(tokens, block_size=8, batch_size=5, seed=3)
    x, y = sampler.next_batch()
    assert x.shape == y.shape == (5, 8) and x.dtype == np.int64
    np.testing.assert_array_equal(y, x + 1)                       # y is x shifted by one token
    np.testing.assert_array_equal(x[:, 1:], x[:, :-1] + 1)       # contiguous windows
    state = sampler.state()
    following = [sampler.next_batch()[0] for _ in range(3)]
    other = BatchSampler(tokens, 8, 5, seed=99)
    other.set_state(state)
    for expected in following:
        np.testing.assert_array_equal(other.next_batch()[0], expected)
    same_seed = BatchSampler(tokens, 8, 5, seed=3)
    np.testing.assert_array_equal(same_seed.next_batch()[0], x)
    starts = np.concatenate([BatchSampler(tokens, 8, 64, seed=s).next_batch()[0][:, 0] for s in range(20)])
    assert starts.min() >= 0 and starts.max() + 8 < 1000           # every y stays inside the data


def _fake_download(monkeypatch, payload: bytes):
    spec = download.Download(url="https://example.invalid/x.txt", filename="x.txt", size=len(payload),
                         sha256=hashlib.sha256(payload).hexdigest())
    monkeypatch.setitem(download.DOWNLOADS, "tiny", spec)


def test_download_from_a_file_url_checks_and_writes_atomically(tmp_path, monkeypatch):
    payload = b"First Citizen:\nBefore we proceed any further, hear me speak.\n"
    source = tmp_path / "mirror.txt"
    source.write_bytes(payload)
    _fake_download(monkeypatch, payload)
    out = download.download("tiny", out=tmp_path / "got" / "tiny.txt", url=source.as_uri())
    assert out.read_bytes() == payload
    source.write_bytes(payload[:-5])
    with pytest.raises(DataError, match="expected"):
        download.download("tiny", out=tmp_path / "short.txt", url=source.as_uri())
    assert not (tmp_path / "short.txt").exists()


def test_download_offline_names_the_url_and_the_way_out(tmp_path, monkeypatch):
    def offline(url, timeout):
        raise urllib.error.URLError("Temporary failure in name resolution")
    with pytest.raises(DataError, match="could not download tinyshakespeare from https://raw.githubusercontent"):
        download.download("tinyshakespeare", out=tmp_path / "t.txt", opener=offline)
    assert download.DOWNLOADS["tinyshakespeare"].size == 1_115_394
    with pytest.raises(DataError, match="unknown dataset"):
        download.download("imagenet")


# ---- token shards ------------------------------------------------------------------------


@pytest.fixture
def bpe_file(tmp_path, corpus_file):
    path = tmp_path / "bpe.tok"
    BPETokenizer.train(corpus_file.read_text(), 300, special_tokens=["<|endoftext|>"], progress=False).save(path)
    return path


def encode(tokenizer_file, text_file, out, **options):
    options = {"append_eot": False, "progress": False, **options}
    return encode_files_to_shards(load_tokenizer(tokenizer_file), text_file, out, **options)


def test_training_from_shards_equals_training_from_the_same_text(tmp_path, corpus_file, bpe_file, tiny):
    shards = encode(bpe_file, corpus_file, tmp_path / "shards", shard_tokens=700)
    assert len(shards) > 3
    settings = dict(tokenizer=str(bpe_file), threads=1, max_iters=12, eval_interval=6)
    from_text = train(tiny(corpus_file, tmp_path / "a", **settings))
    from_shards = train(tiny(tmp_path / "shards", tmp_path / "b", **settings))
    assert from_shards.train_losses == from_text.train_losses and from_shards.last_eval == from_text.last_eval
    assert not (tmp_path / "b" / "data").exists()   # nothing tokenized again


def test_resume_across_shard_boundaries_is_exact(tmp_path, corpus_file, bpe_file, tiny):
    encode(bpe_file, corpus_file, tmp_path / "shards", shard_tokens=150)   # some windows of 17 span two shards
    dataset = prepare_dataset(resolve_corpus(str(tmp_path / "shards")), str(bpe_file), tmp_path / "x")
    whole = np.asarray(dataset.train)
    sampler = BatchSampler(dataset.train, 16, 64, seed=5)
    starts = BatchSampler(whole, 16, 64, seed=5).rng.integers(0, len(whole) - 16, size=64)
    np.testing.assert_array_equal(sampler.next_batch()[0], whole[starts[:, None] + np.arange(16)])
    assert (starts // 150 != (starts + 16) // 150).any()
    settings = dict(tokenizer=str(bpe_file), threads=1, max_iters=16, eval_interval=6, grad_accum=2)
    straight = build_run(tiny(tmp_path / "shards", tmp_path / "a", **settings), Pretraining(), log=lambda m: None)
    full = straight.run()
    head = build_run(tiny(tmp_path / "shards", tmp_path / "b", **settings), Pretraining(), log=lambda m: None).run(stop_at=8)
    resumed = build_run(tiny(tmp_path / "shards", tmp_path / "b", resume=True, **settings), Pretraining(),
                        log=lambda m: None)
    tail = resumed.run()
    assert head.train_losses + tail.train_losses == full.train_losses and tail.last_eval == full.last_eval
    for (name, a), (_, b) in zip(straight.model.named_parameters(), resumed.model.named_parameters()):
        assert np.array_equal(a.data, b.data), name


def test_shards_named_val_are_the_validation_set(tmp_path, corpus_file, bpe_file):
    text = corpus_file.read_text()
    (tmp_path / "train.txt").write_text(text[:6000])
    (tmp_path / "held_out.txt").write_text(text[6000:])
    train_ids = np.concatenate([read_shard(p) for p in encode(bpe_file, tmp_path / "train.txt", tmp_path / "s",
                                                               prefix="train", shard_tokens=500)])
    [val] = encode(bpe_file, tmp_path / "held_out.txt", tmp_path / "s", prefix="val")
    dataset = prepare_dataset(resolve_corpus(str(tmp_path / "s")), str(bpe_file), tmp_path / "run")
    np.testing.assert_array_equal(np.asarray(dataset.train), train_ids)
    np.testing.assert_array_equal(np.asarray(dataset.val), read_shard(val))


def test_bad_shards_are_one_line_naming_the_file_and_the_fix(tmp_path, corpus_file, bpe_file):
    [shard] = encode(bpe_file, corpus_file, tmp_path / "s")
    corpus = resolve_corpus(str(tmp_path / "s"))

    def refused(message, spec=str(bpe_file), data=corpus):
        with pytest.raises(UserError, match=message):
            prepare_dataset(data, spec, tmp_path / "run")

    refused(r"holds token shards \(written by tokenizer [0-9a-f]{16}\); pass the tokenizer .* --tokenizer FILE",
            spec="char")
    other = tmp_path / "other.tok"
    BPETokenizer.train("another text altogether", 260).save(other)
    refused(r"shard_000000\.bin: written by another tokenizer .* encode the text again", spec=str(other))
    data = open(shard, "rb").read()
    with open(shard, "wb") as file:
        file.write(data[:-3])
    refused(r"shard_000000\.bin: truncated")
    with open(shard, "wb") as file:
        file.write(data[:100] + bytes([data[100] ^ 1]) + data[101:])
    refused(r"shard_000000\.bin: the ids are corrupted \(checksum mismatch\)")
    write_shard(shard, [1, 2, 5000], vocab_size=6000, tokenizer_hash=None)
    refused(r"shard_000000\.bin: holds ids up to 5,999, beyond the \d+ ids of --tokenizer .*bpe\.tok")
    (tmp_path / "s" / "notes.txt").write_text("text beside shards")
    with pytest.raises(DataError, match=r"holds both token shards \(.*shard_000000\.bin, \.\.\.\) and text files"):
        resolve_corpus(str(tmp_path / "s"))


def test_an_unfinished_encoding_is_refused(tmp_path, corpus_file, bpe_file, monkeypatch):
    from tinyllm.tokenizer import prepare

    def interrupted(self, after):
        raise KeyboardInterrupt
    with monkeypatch.context() as patch:
        patch.setattr(prepare._ShardSink, "_close", interrupted)
        with pytest.raises(KeyboardInterrupt):
            encode(bpe_file, corpus_file, tmp_path / "s", shard_tokens=300)
    with pytest.raises(DataError, match=r"shard_manifest\.json records an unfinished encoding .* run the same "
                                         r"`tinyllm tokenizer encode` again"):
        prepare_dataset(resolve_corpus(str(tmp_path / "s")), str(bpe_file), tmp_path / "run")


def test_an_interrupted_preparation_is_resumed_by_the_next_run(tmp_path, corpus_file, monkeypatch):
    from tinyllm.tokenizer import prepare
    monkeypatch.setattr(data, "SHARD_TOKENS", 400)
    corpus = resolve_corpus(str(corpus_file))
    reference = prepare_dataset(corpus, "bpe", tmp_path / "reference", vocab_size=300, workers=1)
    close, shards = prepare._ShardSink._close, []

    def close_then_stop(self, after):
        close(self, after)
        shards.append(after)
        if len(shards) == 3:
            raise KeyboardInterrupt
    with monkeypatch.context() as patch:
        patch.setattr(prepare._ShardSink, "_close", close_then_stop)
        with pytest.raises(KeyboardInterrupt):
            prepare_dataset(corpus, "bpe", tmp_path / "run", vocab_size=300, workers=1)
    [partial] = (tmp_path / "run" / "data").iterdir()
    assert partial.name.endswith(".partial") and len(list(partial.glob("shard_*.bin"))) == 3
    messages = []
    dataset = prepare_dataset(corpus, "bpe", tmp_path / "run", vocab_size=300, workers=2, log=messages.append)
    assert any("going on with an interrupted preparation after its 3 finished shard(s)" in m for m in messages)
    assert not any("building" in m for m in messages)   # the tokenizer was kept too
    assert [p.name for p in (tmp_path / "run" / "data").iterdir()] == [os.path.basename(dataset.cache_dir)]
    for split in ("train", "val"):
        np.testing.assert_array_equal(np.asarray(getattr(dataset, split)), np.asarray(getattr(reference, split)))
    assert dataset.meta["shards"] == reference.meta["shards"] and len(reference.meta["shards"]) > 3


@pytest.mark.mpi
@pytest.mark.skipif(shutil.which("mpiexec") is None or importlib.util.find_spec("mpi4py") is None,
                    reason="needs mpiexec and mpi4py (pip install 'tinyllm[mpi]')")
def test_data_parallel_ranks_train_from_shards_as_one_process_does(tmp_path, corpus_file, bpe_file):
    """Rank 0 opens the shards first, the other rank then opens the same; each takes its rows."""
    encode(bpe_file, corpus_file, tmp_path / "shards", shard_tokens=300)
    settings = dict(data=str(tmp_path / "shards"), tokenizer=str(bpe_file), n_layer=2, n_head=2, n_embd=16,
                    block_size=8, batch_size=8, max_iters=3, eval_interval=3, eval_iters=1, dtype="float64",
                    progress="none", seed=3)
    reference = train(RunSettings.of(**settings, out=str(tmp_path / "one"), workers=1))
    config = tmp_path / "config.json"
    config.write_text(json.dumps({**settings, "out": str(tmp_path / "ranks"), "data_parallel": 2, "microbatches": 2}))
    command = [shutil.which("mpiexec"), "-n", "2", sys.executable, "-m", "parallel.runner", str(config),
               "--result", str(tmp_path / "result.json")]
    proc = subprocess.run(command, cwd=Path(__file__).resolve().parents[2], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr
    result = json.loads((tmp_path / "result.json").read_text())
    np.testing.assert_allclose(result["train_losses"], reference.train_losses, rtol=1e-12, atol=0)
    assert result["last_eval"]["val"] == pytest.approx(reference.last_eval["val"], rel=1e-12)
