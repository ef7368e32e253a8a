"""Token shards: round trips, dtype choice, streaming encoding, corruption errors."""

import os

import numpy as np
import pytest
from hypothesis import given, strategies as st

from tinyllm.tokenizer import (CharTokenizer, ShardError, encode_files_to_shards, read_shard,
                               read_shard_header, write_shard)
from tinyllm.tokenizer.shards import HEADER_BYTES


@given(st.lists(st.integers(0, 70_000), max_size=50), st.booleans())
def test_write_read_round_trip(tmp_path_factory, ids, small_vocab):
    vocab_size = 65_536 if small_vocab else 70_001
    ids = [i % vocab_size for i in ids]
    path = tmp_path_factory.mktemp("shard") / "s.bin"
    write_shard(path, ids, vocab_size, tokenizer_hash="ab" * 32)
    header = read_shard_header(path)
    assert header.dtype == (np.uint16 if small_vocab else np.uint32)
    assert (header.num_tokens, header.vocab_size, header.tokenizer_hash) == \
        (len(ids), vocab_size, "ab" * 32)
    assert read_shard(path, tokenizer_hash="ab" * 32, verify=True).tolist() == ids
    assert os.path.getsize(path) == HEADER_BYTES + len(ids) * header.dtype.itemsize


def test_write_rejects_bad_ids_and_hash(tmp_path):
    with pytest.raises(ValueError, match=r"token id 10 is outside 0..9"):
        write_shard(tmp_path / "s.bin", [1, 10], vocab_size=10, tokenizer_hash=None)
    with pytest.raises(ValueError, match="token id -1"):
        write_shard(tmp_path / "s.bin", [-1], vocab_size=10, tokenizer_hash=None)
    with pytest.raises(ValueError, match="SHA-256 hex digest"):
        write_shard(tmp_path / "s.bin", [1], vocab_size=10, tokenizer_hash="xyz")
    assert os.listdir(tmp_path) == []  # nothing half-written left behind


@pytest.fixture
def shard(tmp_path):
    path = tmp_path / "s.bin"
    write_shard(path, np.arange(100), vocab_size=100, tokenizer_hash=None)
    return path


def test_truncated_shard(shard):
    data = shard.read_bytes()
    shard.write_bytes(data[:-2])
    with pytest.raises(ShardError, match=r"s\.bin: truncated: the header announces 100 ids"):
        read_shard(shard)
    shard.write_bytes(data[:10])
    with pytest.raises(ShardError, match=r"s\.bin: truncated: 10 bytes"):
        read_shard(shard)
    shard.write_bytes(data + b"\0")
    with pytest.raises(ShardError, match="has trailing bytes"):
        read_shard(shard)


def test_corrupted_shard(shard):
    data = bytearray(shard.read_bytes())
    data[16] ^= 1  # the id count
    shard.write_bytes(bytes(data))
    with pytest.raises(ShardError, match=r"s\.bin: the shard header is corrupted"):
        read_shard(shard)
    data[16] ^= 1
    data[HEADER_BYTES + 5] ^= 1  # an id
    shard.write_bytes(bytes(data))
    assert read_shard(shard).shape == (100,)  # lazily opened: not noticed
    with pytest.raises(ShardError, match=r"s\.bin: the ids are corrupted"):
        read_shard(shard, verify=True)
    shard.write_bytes(b"NOTASHRD" + bytes(data[8:]))
    with pytest.raises(ShardError, match="not a tinyllm token shard"):
        read_shard(shard)


def test_an_id_beyond_the_header_s_vocabulary_is_found_by_verify(shard):
    """A shard not written by tinyllm (its header rewritten, checksums made to match)."""
    import struct
    import zlib
    data = bytearray(shard.read_bytes())
    struct.pack_into("<I", data, 12, 50)  # vocab_size 50, but the ids run to 99
    struct.pack_into("<I", data, 28, 0)
    struct.pack_into("<I", data, 28, zlib.crc32(bytes(data[:HEADER_BYTES])))
    shard.write_bytes(bytes(data))
    with pytest.raises(ShardError, match=r"s\.bin: holds id 99, not below vocab_size 50"):
        read_shard(shard, verify=True)


def test_wrong_tokenizer_and_missing_shard(shard, tmp_path):
    with pytest.raises(ShardError, match="re-encode the corpus"):
        read_shard(shard, tokenizer_hash="cd" * 32)
    with pytest.raises(FileNotFoundError, match="gone.bin"):
        read_shard(tmp_path / "gone.bin")


def test_empty_shard(tmp_path):
    write_shard(tmp_path / "e.bin", [], vocab_size=5, tokenizer_hash=None)
    assert read_shard(tmp_path / "e.bin").size == 0


def test_encode_files_to_shards_streams_like_whole_file_encoding(tmp_path, trained_bpe,
                                                                  corpus_text):
    texts = [corpus_text[:30_000], corpus_text[30_000:41_000] + "<|endoftext|> é"]
    folder = tmp_path / "corpus"
    folder.mkdir()
    for i, text in enumerate(texts):
        (folder / f"{i}.txt").write_text(text, encoding="utf-8", newline="")
    out = tmp_path / "shards"
    stale = out / "shard_000099.bin"
    out.mkdir()
    stale.write_bytes(b"old")
    paths = encode_files_to_shards(trained_bpe, folder, out, shard_tokens=3_000,
                                   block_bytes=1_000, progress=False)
    expected = []
    for text in texts:
        expected += trained_bpe.encode_ordinary(text) + [trained_bpe.eot_id]
    ids = np.concatenate([read_shard(p, tokenizer_hash=trained_bpe.hash(), verify=True)
                          for p in paths])
    assert ids.tolist() == expected
    assert [len(read_shard(p)) for p in paths[:-1]] == [3_000] * (len(paths) - 1)
    assert not stale.exists()


def test_char_tokenizer_shards(tmp_path):
    tokenizer = CharTokenizer.train("hello world")
    (tmp_path / "a.txt").write_text("hello")
    [path] = encode_files_to_shards(tokenizer, tmp_path / "a.txt", tmp_path / "out",
                                    progress=False)
    assert tokenizer.decode(read_shard(path)) == "hello"  # no eot: it has none


@pytest.mark.parametrize("umask", [0o022, 0o077], ids=["umask022", "umask077"])
def test_written_files_get_the_umask_permissions(tmp_path, umask):
    """Shards, tokenizer files and the atomic JSON/bytes writes are created with open()'s
    permissions under the umask (0644 under 022), not mkstemp's private 0600."""
    from tinyllm import io
    old = os.umask(umask)
    try:
        write_shard(tmp_path / "s.bin", [1, 2, 3], vocab_size=5, tokenizer_hash=None)
        CharTokenizer.train("abc").save(tmp_path / "tok.json")
        io.write_json(tmp_path / "config.json", {"a": 1})
    finally:
        os.umask(old)
    for name in ("s.bin", "tok.json", "config.json"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o666 & ~umask, name
