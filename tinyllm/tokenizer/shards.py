"""Token shards: a corpus as flat arrays of token ids on disk, read back with memmap.

A shard is a 64-byte header followed by the ids, uint16 when the vocabulary fits in
65,536 ids, else uint32, little-endian. Header fields (little-endian, no padding):

    offset size  field
    0      8     magic b"TLLMTOKS"
    8      2     format version (1)
    10     2     bytes per id: 2 (uint16) or 4 (uint32)
    12     4     vocab_size: every id is below it
    16     8     number of ids
    24     4     CRC-32 of the id bytes (checked by read_shard(..., verify=True))
    28     4     CRC-32 of the 64 header bytes with this field zeroed
    32     32    SHA-256 of the tokenizer file (Tokenizer.hash()), or zeros if unknown

    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "tiny.bin")
    >>> write_shard(path, [5, 0, 7], vocab_size=8, tokenizer_hash=None)
    >>> read_shard(path).tolist(), read_shard_header(path).dtype
    ([5, 0, 7], dtype('uint16'))

Files are written atomically (tinyllm.io: temporary file, fsync, rename, fsync of the
folder): a reader never sees a half-written shard under the final name. Leaves out:
encoding a corpus into shards (prepare.py), batching and train/val splits (tinyllm/data.py)
and compression. `ConcatenatedTokens` reads several shards as one sequence.
"""

from __future__ import annotations

import dataclasses
import glob
import os
import struct
import zlib
from typing import Iterable

import numpy as np

from tinyllm import io
from tinyllm.errors import UserError

SHARD_MAGIC = b"TLLMTOKS"
SHARD_VERSION = 1
HEADER_BYTES = 64
_HEADER = struct.Struct("<8sHHIQII32s")  # the fields above, in order
assert _HEADER.size == HEADER_BYTES
_HEADER_CRC_OFFSET = 28
DEFAULT_SHARD_TOKENS = 100_000_000  # ids per shard: 200 MB as uint16
VERIFY_BLOCK_BYTES = 8 << 20  # read this much at a time to check a shard


class ShardError(UserError):
    """A shard file that is not what its header says; the message names the file."""


@dataclasses.dataclass(frozen=True)
class ShardHeader:
    path: str
    version: int
    dtype: np.dtype  # uint16 or uint32, little-endian
    vocab_size: int
    num_tokens: int
    data_crc32: int
    tokenizer_hash: str | None  # hex SHA-256, None when the writer did not know it


def shard_dtype(vocab_size: int) -> np.dtype:
    """uint16 when every id fits (vocab_size <= 65,536), else uint32."""
    if vocab_size <= 0 or vocab_size > 2 ** 32:
        raise ValueError(f"vocab_size={vocab_size} is out of range for a token shard (1..2**32)")
    return np.dtype("<u2") if vocab_size <= 2 ** 16 else np.dtype("<u4")


class ShardWriter:
    """Write one shard piece by piece with bounded memory; `close()` publishes it.

        with ShardWriter(path, vocab_size, tokenizer_hash) as writer:
            writer.append(ids_of_block_1); writer.append(ids_of_block_2)

    On an exception inside the `with`, the temporary file is removed and nothing
    appears under `path`.
    """

    def __init__(self, path: str | os.PathLike, vocab_size: int, tokenizer_hash: str | None):
        self.path = os.fspath(path)
        self.vocab_size = vocab_size
        self.dtype = shard_dtype(vocab_size)
        self.hash_bytes = _hash_bytes(tokenizer_hash)
        self.num_tokens = 0
        self.data_crc32 = 0
        self.out = io.AtomicFile(self.path)
        self.out.file.write(bytes(HEADER_BYTES))  # the real header is written on close

    def append(self, ids) -> None:
        array = np.asarray(ids)
        if array.ndim != 1:
            raise ValueError(f"token ids must be a 1-D sequence, got shape {array.shape}")
        if array.size == 0:
            return
        if not np.issubdtype(array.dtype, np.integer):
            raise ValueError(f"token ids must be integers, got dtype {array.dtype}")
        low, high = int(array.min()), int(array.max())
        if low < 0 or high >= self.vocab_size:
            bad = low if low < 0 else high
            raise ValueError(f"token id {bad} is outside 0..{self.vocab_size - 1} "
                             f"(vocab_size={self.vocab_size}) for shard {self.path!r}")
        data = array.astype(self.dtype, copy=False).tobytes()
        self.out.file.write(data)
        self.data_crc32 = zlib.crc32(data, self.data_crc32)
        self.num_tokens += array.size

    def close(self) -> None:
        header = bytearray(_HEADER.pack(SHARD_MAGIC, SHARD_VERSION, self.dtype.itemsize,
                                        self.vocab_size, self.num_tokens, self.data_crc32, 0,
                                        self.hash_bytes))
        struct.pack_into("<I", header, _HEADER_CRC_OFFSET, zlib.crc32(header))
        self.out.file.seek(0)
        self.out.file.write(header)
        self.out.commit()

    def abort(self) -> None:
        self.out.abort()

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_shard(path: str | os.PathLike, ids, vocab_size: int,
                tokenizer_hash: str | None) -> None:
    """Write `ids` (any 1-D integer sequence) as one shard, atomically.
    tokenizer_hash: Tokenizer.hash() of the tokenizer that made the ids, or None."""
    with ShardWriter(path, vocab_size, tokenizer_hash) as writer:
        writer.append(np.asarray(ids, dtype=np.int64) if not hasattr(ids, "dtype") else ids)


def read_shard_header(path: str | os.PathLike) -> ShardHeader:
    """Read and check a shard's header against the file: magic, version, header
    checksum, id width, and that the file holds exactly the ids it announces."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"token shard not found: {path!r}")
    file_bytes = os.path.getsize(path)
    if file_bytes < HEADER_BYTES:
        raise ShardError(f"{path}: truncated: {file_bytes} bytes, less than the "
                         f"{HEADER_BYTES}-byte shard header")
    with open(path, "rb") as file:
        header = file.read(HEADER_BYTES)
    magic, version, itemsize, vocab_size, num_tokens, data_crc32, header_crc32, hash_bytes = \
        _HEADER.unpack(header)
    if magic != SHARD_MAGIC:
        raise ShardError(f"{path}: not a tinyllm token shard (starts with {magic!r}, "
                         f"expected {SHARD_MAGIC!r})")
    zeroed = bytearray(header)
    zeroed[_HEADER_CRC_OFFSET:_HEADER_CRC_OFFSET + 4] = bytes(4)
    if zlib.crc32(zeroed) != header_crc32:
        raise ShardError(f"{path}: the shard header is corrupted (checksum mismatch)")
    if version != SHARD_VERSION:
        raise ShardError(f"{path}: shard format version {version} is not supported "
                         f"(this tinyllm reads version {SHARD_VERSION})")
    if itemsize not in (2, 4):
        raise ShardError(f"{path}: {itemsize} bytes per id is not supported (2 or 4)")
    expected_bytes = HEADER_BYTES + num_tokens * itemsize
    if file_bytes != expected_bytes:
        what = "truncated" if file_bytes < expected_bytes else "has trailing bytes"
        raise ShardError(f"{path}: {what}: the header announces {num_tokens} ids "
                         f"({expected_bytes} bytes in all) but the file has {file_bytes} bytes")
    return ShardHeader(path=path, version=version, dtype=np.dtype(f"<u{itemsize}"),
                       vocab_size=vocab_size, num_tokens=num_tokens, data_crc32=data_crc32,
                       tokenizer_hash=hash_bytes.hex() if any(hash_bytes) else None)


def read_shard(path: str | os.PathLike, tokenizer_hash: str | None = None,
               verify: bool = False) -> np.ndarray:
    """The ids of a shard as a read-only memmap (nothing is read until used).

    tokenizer_hash: when given, the shard must have been written with this tokenizer.
    verify: also read every id to check the data checksum and that ids are below
    vocab_size (a full pass over the file).
    """
    header = read_shard_header(path)
    if tokenizer_hash is not None and header.tokenizer_hash != tokenizer_hash:
        raise ShardError(f"{header.path}: written with tokenizer {header.tokenizer_hash}, "
                         f"not the expected {tokenizer_hash}; re-encode the corpus with "
                         "this tokenizer")
    if header.num_tokens == 0:
        return np.zeros(0, dtype=header.dtype)
    if verify:
        verify_shard(header)
    return np.memmap(header.path, dtype=header.dtype, mode="r", offset=HEADER_BYTES,
                     shape=(header.num_tokens,))


def verify_shard(header: ShardHeader, block_bytes: int = VERIFY_BLOCK_BYTES) -> None:
    """Read every id of a shard (in blocks, so memory stays flat whatever its size) to check
    the data checksum and that every id is below the header's vocab_size (ShardError)."""
    crc, largest = 0, -1
    buffer = bytearray(block_bytes - block_bytes % header.dtype.itemsize)
    with open(header.path, "rb") as file:
        file.seek(HEADER_BYTES)
        while True:
            size = file.readinto(buffer)
            if not size:
                break
            block = memoryview(buffer)[:size]
            crc = zlib.crc32(block, crc)
            largest = max(largest, int(np.frombuffer(block, dtype=header.dtype).max()))
    if crc != header.data_crc32:
        raise ShardError(f"{header.path}: the ids are corrupted (checksum mismatch); the file was damaged "
                         "after it was written: encode the corpus again")
    if largest >= header.vocab_size:
        raise ShardError(f"{header.path}: holds id {largest}, not below vocab_size {header.vocab_size}; "
                         "the file was not written by tinyllm: encode the corpus again")


class ConcatenatedTokens:
    """The ids of several shards (memory-mapped arrays) as one sequence; a window of ids may
    span two of them. Indexing takes a slice (a view: one array when it lies in one) or an
    integer array (the ids at those places, as an array of that shape).

        >>> tokens = ConcatenatedTokens([np.arange(3), np.arange(10, 12)])
        >>> len(tokens), tokens[np.array([[1, 2, 3], [2, 3, 4]])].tolist()
        (5, [[1, 2, 10], [2, 10, 11]])
        >>> np.asarray(tokens[2:4]).tolist()
        [2, 10]
    """

    def __init__(self, parts: list):
        self.parts = [part for part in parts if len(part)] or [np.zeros(0, dtype=np.uint16)]
        self.starts = np.cumsum([0] + [len(part) for part in self.parts])  # (P + 1,) where each part starts
        self.dtype = np.result_type(*[part.dtype for part in self.parts])

    def __len__(self) -> int:
        return int(self.starts[-1])

    def __getitem__(self, index):
        if isinstance(index, slice):
            start, stop, step = index.indices(len(self))
            if step != 1:
                raise IndexError("ConcatenatedTokens takes slices with step 1")
            return concatenate_shards([part[max(start - lo, 0):max(stop - lo, 0)]
                                       for part, lo in zip(self.parts, self.starts[:-1].tolist())])
        index = np.asarray(index)
        if index.size and (index.min() < 0 or index.max() >= len(self)):
            raise IndexError(f"token index out of range 0..{len(self) - 1}")
        part_of = np.searchsorted(self.starts, index, side="right") - 1  # the part that holds each place
        out = np.empty(index.shape, dtype=self.dtype)
        for k in np.unique(part_of).tolist():
            inside = part_of == k
            out[inside] = self.parts[k][index[inside] - self.starts[k]]
        return out

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        whole = np.concatenate(self.parts)
        return whole if dtype is None else whole.astype(dtype)


def concatenate_shards(parts: list):
    """The ids of `parts` as one sequence: the one array itself when only one holds ids (as a
    small corpus has always been held), else a ConcatenatedTokens."""
    tokens = ConcatenatedTokens(parts)
    return tokens.parts[0] if len(tokens.parts) == 1 else tokens


def expand_data_paths(spec: str | os.PathLike | Iterable[str | os.PathLike]) -> list[str]:
    """A file, a folder (its files, recursively, sorted; hidden ones skipped), a glob
    pattern, or a list of these -> the files, in a stable order."""
    if not isinstance(spec, (str, os.PathLike)):
        return [path for item in spec for path in expand_data_paths(item)]
    spec = os.fspath(spec)
    if os.path.isfile(spec):
        return [spec]
    if os.path.isdir(spec):
        found = []
        for folder, subfolders, files in os.walk(spec):
            subfolders[:] = sorted(d for d in subfolders if not d.startswith("."))
            found += [os.path.join(folder, f) for f in sorted(files) if not f.startswith(".")]
        if not found:
            raise FileNotFoundError(f"data folder {spec!r} holds no files")
        return found
    matches = sorted(p for p in glob.glob(spec, recursive=True) if os.path.isfile(p))
    if not matches:
        raise FileNotFoundError(f"data path {spec!r} is not a file, a folder, or a glob "
                                "that matches files")
    return matches


def _hash_bytes(tokenizer_hash: str | None) -> bytes:
    if tokenizer_hash is None:
        return bytes(32)
    try:
        raw = bytes.fromhex(tokenizer_hash)
    except (ValueError, TypeError):
        raw = b""
    if len(raw) != 32:
        raise ValueError(f"tokenizer_hash must be a SHA-256 hex digest (64 hex digits, as "
                         f"Tokenizer.hash() gives), got {tokenizer_hash!r}")
    return raw
