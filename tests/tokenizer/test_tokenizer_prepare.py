"""Preparing a corpus: the same ids from one process and from several, equal to encoding the
text whole; an interrupted preparation resumed without redoing its finished shards; worker
processes that keep order, report errors and deaths, and leave none behind."""

import json
import multiprocessing
import os
from collections import Counter

import numpy as np
import pytest

from tinyllm.tokenizer import (BPETokenizer, CharTokenizer, TextFileError, WorkerError, count_chunks,
                               encode_files_to_shards, read_shard, read_shard_header, verify_shard)
from tinyllm.tokenizer.patterns import compile_pattern
from tinyllm.tokenizer.prepare import corpus_characters, encode_to_shards, manifest_path, read_manifest
from tinyllm.tokenizer.workers import WorkerPool


@pytest.fixture
def corpus(tmp_path, corpus_text):
    """Three documents, one of them with non-ASCII text and no spaces for a long stretch."""
    folder = tmp_path / "corpus"
    folder.mkdir()
    texts = [corpus_text[:25_000], corpus_text[25_000:33_000].replace("'", "\u2019") + " café",
             "行。\n" * 400 + "end"]
    for i, text in enumerate(texts):
        (folder / f"{i}.txt").write_text(text, encoding="utf-8", newline="")
    return folder, texts


def all_ids(paths) -> list:
    return np.concatenate([read_shard(p, verify=True) for p in paths]).tolist()


def test_one_and_several_workers_write_the_same_shards(tmp_path, corpus, trained_bpe):
    folder, texts = corpus
    expected = [i for text in texts for i in trained_bpe.encode_ordinary(text) + [trained_bpe.eot_id]]
    shards = {}
    for workers in (1, 3):
        out = tmp_path / f"out{workers}"
        paths = encode_files_to_shards(trained_bpe, folder, out, shard_tokens=2_500, block_bytes=700,
                                       workers=workers, progress=False)
        shards[workers] = [open(p, "rb").read() for p in paths]
        assert all_ids(paths) == expected
    assert shards[1] == shards[3]  # byte for byte
    assert len(shards[1]) == -(-len(expected) // 2_500)


def test_documents_joined_by_a_separator_encode_like_the_joined_text(tmp_path, corpus, trained_bpe):
    folder, texts = corpus
    sources = [str(folder / f"{i}.txt") for i in range(3)] + [b"in memory"]
    paths = encode_to_shards(trained_bpe, sources, tmp_path / "out", separator="\n\n", block_bytes=500,
                             workers=2, progress=False)
    assert all_ids(paths) == trained_bpe.encode_ordinary("\n\n".join(texts + ["in memory"]))


def test_chunk_counts_and_characters_from_several_workers(corpus, trained_bpe):
    folder, texts = corpus
    files = [str(folder / f"{i}.txt") for i in range(3)]
    split = compile_pattern(trained_bpe.pattern).findall
    expected = Counter(chunk for text in texts for chunk in split(text))
    for workers in (1, 2):
        assert count_chunks(files, trained_bpe.pattern, workers=workers, block_bytes=600) == expected
        assert corpus_characters(files, "\n\n", workers=workers, block_bytes=600) == set("\n\n".join(texts))
    one = BPETokenizer.train_from_files(files, 400, special_tokens=["<|endoftext|>"], workers=1, progress=False)
    two = BPETokenizer.train_from_files(files, 400, special_tokens=["<|endoftext|>"], workers=2, progress=False)
    in_memory = BPETokenizer.train(texts, 400, special_tokens=["<|endoftext|>"], progress=False)
    assert one.hash() == two.hash() == in_memory.hash()


class Interrupted(Exception):
    pass


class StopAfter(BPETokenizer):
    """A tokenizer that counts its encodings and can be told to stop (as Ctrl-C would) at the n-th."""

    calls = 0
    stop_at = None

    def encode_array(self, text):
        type(self).calls += 1
        if self.calls == self.stop_at:
            raise Interrupted
        return super().encode_array(text)


def test_an_interrupted_preparation_goes_on_from_its_finished_shards(tmp_path, corpus, trained_bpe):
    folder, texts = corpus
    tokenizer = StopAfter(trained_bpe.mergeable_ranks, trained_bpe.pattern, trained_bpe.special_tokens)
    options = dict(shard_tokens=1_000, block_bytes=400, workers=1, progress=False)
    StopAfter.calls = 0
    whole = encode_files_to_shards(tokenizer, folder, tmp_path / "whole", **options)
    calls_of_a_whole_run = StopAfter.calls

    out = tmp_path / "out"
    StopAfter.calls, tokenizer.stop_at = 0, 40
    with pytest.raises(Interrupted):
        encode_files_to_shards(tokenizer, folder, out, **options)
    manifest = read_manifest(manifest_path(out))
    finished = [out / shard["file"] for shard in manifest["shards"]]
    assert not manifest["complete"] and 2 <= len(finished) < len(whole)
    assert sorted(os.listdir(out)) == sorted([p.name for p in finished] + ["shard_manifest.json"])  # no half shard
    for path in finished:
        verify_shard(read_shard_header(path))
    written = {path: os.stat(path).st_mtime_ns for path in finished}

    StopAfter.calls, tokenizer.stop_at = 0, None
    paths = encode_files_to_shards(tokenizer, folder, out, **options)
    assert [open(p, "rb").read() for p in paths] == [open(p, "rb").read() for p in whole]
    assert {path: os.stat(path).st_mtime_ns for path in finished} == written   # kept, not written again
    assert StopAfter.calls <= calls_of_a_whole_run - 30                         # their text not encoded again
    assert read_manifest(manifest_path(out))["complete"]

    StopAfter.calls = 0
    assert encode_files_to_shards(tokenizer, folder, out, **options) == paths and StopAfter.calls == 0  # done
    (folder / "0.txt").write_text(texts[0] + "!")  # another corpus: from the start
    assert encode_files_to_shards(tokenizer, folder, out, **options) != []
    assert StopAfter.calls >= calls_of_a_whole_run


def test_a_character_tokenizer_prepares_the_same_way(tmp_path, corpus):
    folder, texts = corpus
    tokenizer = CharTokenizer.train("".join(texts))
    paths = encode_files_to_shards(tokenizer, folder, tmp_path / "out", block_bytes=300, workers=2, progress=False)
    assert all_ids(paths) == tokenizer.encode("".join(texts))   # no <|endoftext|>: it has none
    assert json.loads((tmp_path / "out" / "shard_manifest.json").read_text())["complete"]


def die_on_three(state, item):
    if item == 3:
        os.kill(os.getpid(), 9)
    return item * state


def fail_on_three(state, item):
    if item == 3:
        raise TextFileError("three.txt: not valid UTF-8 near byte 3")
    return item * state


def test_worker_pool_keeps_order_and_reports_a_death_or_an_error(tmp_path):
    with WorkerPool(3, state=10) as pool:
        assert list(pool.map(fail_on_three, [5, 1, 4, 2], ahead=2)) == [50, 10, 40, 20]
    assert multiprocessing.active_children() == []
    with pytest.raises(WorkerError, match="a worker process died .* --workers"):
        with WorkerPool(2, state=1) as pool:
            list(pool.map(die_on_three, range(6)))
    with pytest.raises(TextFileError, match="three.txt"):
        with WorkerPool(2, state=1) as pool:
            list(pool.map(fail_on_three, range(6)))
    assert multiprocessing.active_children() == []   # stopped, none left behind


def test_a_bad_byte_is_named_from_a_worker(tmp_path, trained_bpe):
    (tmp_path / "bad.txt").write_bytes(b"word " * 3000 + b"caf\xe9 " + b"word " * 3000)
    with pytest.raises(TextFileError, match=r"bad\.txt: not valid UTF-8 near byte 15003"):
        encode_files_to_shards(trained_bpe, tmp_path / "bad.txt", tmp_path / "out", block_bytes=1000, workers=2,
                               progress=False)


def test_a_worker_found_dead_when_work_is_sent_to_it_is_the_same_error(tmp_path):
    """The pool may learn of a death by writing to the dead worker's pipe (a race with reading its
    result): a WorkerError either way, never a BrokenPipeError."""
    with pytest.raises(WorkerError, match="a worker process died .* --workers"):
        with WorkerPool(2, state=1) as pool:
            for process, _, _ in pool.processes:
                process.kill()
                process.join()
            list(pool.map(fail_on_three, range(6)))
