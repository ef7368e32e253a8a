"""Corpora, the token-shard cache, the train/val split, batches, and downloads."""
import hashlib
import os
import urllib.error

import numpy as np
import pytest

from tinyllm import data
from tinyllm.data import (BatchSampler, DataError, builtin_text, prepare_dataset, resolve_corpus, split_point)


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
    spec = data.Download(url="https://example.invalid/x.txt", filename="x.txt", size=len(payload),
                         sha256=hashlib.sha256(payload).hexdigest())
    monkeypatch.setitem(data.DOWNLOADS, "tiny", spec)


def test_download_from_a_file_url_checks_and_writes_atomically(tmp_path, monkeypatch):
    payload = b"First Citizen:\nBefore we proceed any further, hear me speak.\n"
    source = tmp_path / "mirror.txt"
    source.write_bytes(payload)
    _fake_download(monkeypatch, payload)
    out = data.download("tiny", out=tmp_path / "got" / "tiny.txt", url=source.as_uri())
    assert out.read_bytes() == payload
    source.write_bytes(payload[:-5])
    with pytest.raises(DataError, match="expected"):
        data.download("tiny", out=tmp_path / "short.txt", url=source.as_uri())
    assert not (tmp_path / "short.txt").exists()


def test_download_offline_names_the_url_and_the_way_out(tmp_path, monkeypatch):
    def offline(url, timeout):
        raise urllib.error.URLError("Temporary failure in name resolution")
    with pytest.raises(DataError, match="could not download tinyshakespeare from https://raw.githubusercontent"):
        data.download("tinyshakespeare", out=tmp_path / "t.txt", opener=offline)
    assert data.DOWNLOADS["tinyshakespeare"].size == 1_115_394
    with pytest.raises(DataError, match="unknown dataset"):
        data.download("imagenet")
