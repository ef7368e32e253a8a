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
folder): a reader never sees a half-written shard under the final name. Leaves out: batching and train/val splits
(tinyllm/data.py) and compression.
"""

from __future__ import annotations

import dataclasses
import glob
import os
import struct
import zlib
from typing import Iterable

import numpy as np
from tqdm.auto import tqdm

from tinyllm import io
from tinyllm.errors import UserError

SHARD_MAGIC = b"TLLMTOKS"
SHARD_VERSION = 1
HEADER_BYTES = 64
_HEADER = struct.Struct("<8sHHIQII32s")  # the fields above, in order
assert _HEADER.size == HEADER_BYTES
_HEADER_CRC_OFFSET = 28
DEFAULT_SHARD_TOKENS = 100_000_000  # ids per shard: 200 MB as uint16


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
    ids = np.memmap(header.path, dtype=header.dtype, mode="r", offset=HEADER_BYTES,
                    shape=(header.num_tokens,))
    if verify:
        if zlib.crc32(ids) != header.data_crc32:
            raise ShardError(f"{header.path}: the ids are corrupted (checksum mismatch)")
        if int(ids.max()) >= header.vocab_size:
            raise ShardError(f"{header.path}: holds id {int(ids.max())}, not below "
                             f"vocab_size {header.vocab_size}")
    return ids


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


def encode_files_to_shards(tokenizer, paths, out_dir: str | os.PathLike,
                           shard_tokens: int = DEFAULT_SHARD_TOKENS, append_eot: bool = True,
                           prefix: str = "shard", progress: bool | None = None,
                           block_bytes: int | None = None) -> list[str]:
    """Encode text files into shards `out_dir/{prefix}_000000.bin`, ... of at most
    `shard_tokens` ids each, streaming (one block of text in memory at a time).

    paths: anything `expand_data_paths` takes. Each file is encoded as ordinary text
    (special-token strings in it are plain text, like tiktoken's encode_ordinary) and,
    when `append_eot` and the tokenizer has "<|endoftext|>", followed by that token to
    mark the document's end. Shards of this prefix left in out_dir by an earlier run
    are removed once the new ones are written. Returns the shard paths.
    """
    if shard_tokens <= 0:
        raise ValueError(f"shard_tokens={shard_tokens} must be positive")
    files = expand_data_paths(paths)
    out_dir = os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    vocab_size, tokenizer_hash = tokenizer.vocab_size, tokenizer.hash()
    eot = tokenizer.eot_id if append_eot else None
    written: list[str] = []
    writer: ShardWriter | None = None

    def write(ids: np.ndarray) -> None:
        nonlocal writer
        while ids.size:
            if writer is None:
                shard_path = os.path.join(out_dir, f"{prefix}_{len(written):06d}.bin")
                writer = ShardWriter(shard_path, vocab_size, tokenizer_hash)
                written.append(shard_path)
            room = shard_tokens - writer.num_tokens
            writer.append(ids[:room])
            ids = ids[room:]
            if writer.num_tokens == shard_tokens:
                writer.close()
                writer = None

    dtype = shard_dtype(vocab_size)
    total_bytes = sum(os.path.getsize(path) for path in files)
    bar = tqdm(total=total_bytes, unit="B", unit_scale=True, unit_divisor=1024,
               desc="encoding", disable=None if progress is None else not progress)
    try:
        for path in files:
            for ids, bytes_read in tokenizer.iter_encode_file(path, block_bytes):
                write(np.asarray(ids, dtype=dtype))
                bar.update(bytes_read)
            if eot is not None:
                write(np.asarray([eot], dtype=dtype))
        if writer is not None:
            writer.close()
            writer = None
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    finally:
        bar.close()
    for stale in sorted(glob.glob(os.path.join(glob.escape(out_dir), f"{glob.escape(prefix)}_*.bin"))):
        if stale not in written and os.path.basename(stale)[len(prefix) + 1:-4].isdigit():
            os.unlink(stale)
    return written


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
