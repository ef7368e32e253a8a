"""Preparing a corpus: text files -> token shards, streaming, on every core, resumable.

    shards = encode_files_to_shards(tokenizer, "corpus/", "shards/", workers=0)  # 0: one per core
    counts = count_chunks(["big.txt"], pattern="gpt4", workers=0)               # for BPE training
    chars = corpus_characters(["big.txt"], workers=0)                           # for a CharTokenizer

The corpus is read as segments of about 1 MiB that end where the tokenizer's split
always cuts (textstream.iter_segments), so each segment is encoded alone, in a worker
process (workers.py), and the ids joined in order are the ids of the whole: the same
from one process and from many, and the same as encoding the text in one piece.
Memory stays bounded whatever the corpus size: a few segments in flight, one shard
being written, each worker's chunk cache (bpe.py bounds it).

Documents are encoded apart, each followed by "<|endoftext|>" when the tokenizer has it
(`tinyllm tokenizer encode`), or read as one text joined by a `separator` (`tinyllm
train`, whose documents are joined by a blank line).

Shards are written one at a time, atomically (shards.py: temporary file, fsync,
rename), and after each one `{prefix}_manifest.json` records it and where in the corpus
the ids after it begin. A preparation that is interrupted (Ctrl-C, a crash, a full disk)
leaves whole shards and a manifest marked unfinished; run again with the same corpus,
tokenizer and settings, it keeps the finished shards and goes on from there (never half a
shard published). A finished preparation run again does nothing. Anything else (another
corpus, tokenizer or shard size) starts from the beginning, and shards of the prefix
left by an earlier run are removed once the new ones are written.

Leaves out: compression, and sharing chunk caches between workers (each warms its own).
"""

from __future__ import annotations

import collections
import glob
import hashlib
import json
import os
import sys
import time
from typing import Sequence

import numpy as np
from tqdm.auto import tqdm

from tinyllm import io
from tinyllm.limits import MAX_METADATA_BYTES

from .base import Tokenizer
from .cuts import PatternCut
from .fastsplit import chunk_splitter
from .patterns import resolve_pattern
from .shards import (DEFAULT_SHARD_TOKENS, ShardError, ShardWriter, expand_data_paths, read_shard_header,
                     shard_dtype)
from .textstream import (DEFAULT_BLOCK_BYTES, Piece, decode_piece, document_names, iter_segments, load_pieces,
                         piece_places)
from .workers import WorkerPool

MANIFEST_FORMAT = "tinyllm-shards 1"
COUNT_BLOCK_BYTES = 4 << 20  # segments for counting: fewer, larger partial counts to merge
LOG_EVERY_S = 10.0  # a progress line this often when there is no terminal for a bar


def manifest_path(out_dir: str | os.PathLike, prefix: str = "shard") -> str:
    """Where the preparation of `prefix` shards in `out_dir` keeps its record."""
    return os.path.join(os.fspath(out_dir), f"{prefix}_manifest.json")


def read_manifest(path: str | os.PathLike) -> dict | None:
    """A manifest's content, or None when the file is missing or is not one."""
    path = os.fspath(path)
    try:
        if os.path.getsize(path) > MAX_METADATA_BYTES:
            return None
        with open(path, encoding="utf-8") as file:
            manifest = json.load(file)
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) and manifest.get("format") == MANIFEST_FORMAT else None


def encode_files_to_shards(tokenizer: Tokenizer, paths, out_dir: str | os.PathLike,
                           shard_tokens: int = DEFAULT_SHARD_TOKENS, append_eot: bool = True,
                           prefix: str = "shard", progress: bool | str | None = None,
                           block_bytes: int | None = None, workers: int | None = 1, log=None) -> list[str]:
    """Encode text files into shards `out_dir/{prefix}_000000.bin`, ... of `shard_tokens`
    ids each (the last one fewer), each file as ordinary text (special-token strings in
    it are plain text, like tiktoken's encode_ordinary) followed by "<|endoftext|>" when
    `append_eot` and the tokenizer has it. paths: anything `expand_data_paths` takes.
    workers: processes (0 or None: one per core). Returns the shard paths."""
    return encode_to_shards(tokenizer, expand_data_paths(paths), out_dir, shard_tokens=shard_tokens,
                            append_eot=append_eot, prefix=prefix, progress=progress,
                            block_bytes=block_bytes, workers=workers, log=log)


def encode_to_shards(tokenizer: Tokenizer, sources: Sequence, out_dir: str | os.PathLike, *,
                     names: Sequence[str] | None = None, prefix: str = "shard",
                     shard_tokens: int = DEFAULT_SHARD_TOKENS, separator: str | None = None,
                     append_eot: bool = True, workers: int | None = 1, progress: bool | str | None = None,
                     log=None, block_bytes: int | None = None) -> list[str]:
    """Encode documents (file paths, or texts as UTF-8 bytes; `names` name them) into shards;
    see the module docstring. separator: None encodes the documents apart (each followed by
    "<|endoftext|>" when `append_eot` and the tokenizer has it); a string joins them into
    one text with it between them."""
    if shard_tokens <= 0:
        raise ValueError(f"shard_tokens={shard_tokens} must be positive")
    out_dir = os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    names = document_names(sources, names)
    eot = tokenizer.eot_id if append_eot and separator is None else None
    plan = {"format": MANIFEST_FORMAT, "tokenizer_hash": tokenizer.hash(), "vocab_size": int(tokenizer.vocab_size),
            "shard_tokens": int(shard_tokens), "block_bytes": int(block_bytes or DEFAULT_BLOCK_BYTES),
            "separator": separator, "eot": eot, "sources": [_fingerprint(s, n) for s, n in zip(sources, names)]}
    record = _ManifestRecord(manifest_path(out_dir, prefix), plan, out_dir, prefix, log)
    if record.complete:
        return record.shard_paths()
    sizes = [len(s) if isinstance(s, (bytes, bytearray)) else os.path.getsize(s) for s in sources]
    start, skip = record.resume_point()
    done_bytes = sum(sizes[:start[0]]) + start[1]
    sink = _ShardSink(record, tokenizer, shard_tokens)
    job = _EncodeJob(sources, tokenizer, separator, eot, shard_dtype(tokenizer.vocab_size))
    spans: collections.deque = collections.deque()  # (start, end, bytes) of each segment sent out

    def segments():
        for segment in iter_segments(sources, tokenizer.stream_cut, plan["block_bytes"], separator is None,
                                     start=start, names=names):
            spans.append((_start_of(segment), _end_of(segment), sum(len(piece.data) for piece in segment)))
            yield piece_places(segment)

    with WorkerPool(workers, job) as pool:
        bar = _Progress(sum(sizes), done_bytes, f"encoding {len(sources)} file(s)", progress, log)
        try:
            for ids in pool.map(encode_segment, segments()):
                segment_start, segment_end, nbytes = spans.popleft()
                already, skip = skip, 0  # ids of the first segment written before an interruption
                sink.write(ids[already:], segment_start, segment_end, already)
                bar.update(nbytes)
            sink.finish()
        finally:
            sink.abort()
            bar.close()
    return record.shard_paths()


def count_chunks(sources: Sequence, pattern: str = "gpt4", special_tokens: Sequence[str] = (),
                 separator: str | None = None, workers: int | None = 1, names: Sequence[str] | None = None,
                 progress: bool | str | None = None, log=None, block_bytes: int = COUNT_BLOCK_BYTES) -> collections.Counter:
    """How often each chunk of the split occurs in the documents (paths, or UTF-8 bytes):
    str -> count, what BPE training learns from. Special-token strings are cut out first (no
    chunk spans one); documents are split apart, or joined by `separator` (as
    `encode_to_shards` reads them)."""
    regex_text = resolve_pattern(pattern)
    splitter = Tokenizer({token: i for i, token in enumerate(special_tokens)})
    cut = _AvoidingSpecialTokens(PatternCut(regex_text), special_tokens)
    counts: collections.Counter = collections.Counter()
    for partial in _map_segments(_count_segment, (regex_text, splitter, separator), sources, cut, separator,
                                 workers, names, progress, log, block_bytes, "counting chunks"):
        counts.update(partial)
    return counts


def corpus_characters(sources: Sequence, separator: str | None = None, workers: int | None = 1,
                      names: Sequence[str] | None = None, progress: bool | str | None = None, log=None,
                      block_bytes: int = COUNT_BLOCK_BYTES) -> set:
    """The distinct characters of the documents (joined by `separator`, if given)."""
    seen: set = set()
    for partial in _map_segments(_segment_characters, separator, sources, Tokenizer().stream_cut, separator,
                                 workers, names, progress, log, block_bytes, "reading characters"):
        seen |= partial
    return seen


def segment_texts(segment: Sequence[Piece], separator: str | None) -> list[str]:
    """A segment's text: one per piece when documents are apart (separator None), else one,
    with the separator before every document but the first.

        >>> segment = (Piece("a.txt", 0, 4, b"two", True), Piece("b.txt", 1, 0, b"three", False))
        >>> segment_texts(segment, None), segment_texts(segment, "\\n\\n")
        (['two', 'three'], ['two\\n\\nthree'])
    """
    if separator is None:
        return [decode_piece(piece) for piece in segment]
    return ["".join(separator + decode_piece(piece) if piece.offset == 0 and piece.source > 0
                    else decode_piece(piece) for piece in segment)]


def encode_segment(job: "_EncodeJob", places: tuple) -> np.ndarray:
    """The ids of one segment (runs in a worker), read from where `places` says."""
    segment = load_pieces(job.sources, places)
    texts = segment_texts(segment, job.separator)
    if job.separator is not None:
        return job.tokenizer.encode_array(texts[0]).astype(job.dtype, copy=False)
    parts = []
    for piece, text in zip(segment, texts):
        parts.append(job.tokenizer.encode_array(text))
        if job.eot is not None and piece.ends_document:
            parts.append(np.array([job.eot]))
    return np.concatenate(parts).astype(job.dtype, copy=False) if parts else np.zeros(0, dtype=job.dtype)


class _EncodeJob:
    """What every worker needs to encode a segment."""

    def __init__(self, sources: Sequence, tokenizer: Tokenizer, separator: str | None, eot: int | None,
                 dtype: np.dtype):
        self.sources, self.tokenizer, self.separator, self.eot, self.dtype = sources, tokenizer, separator, eot, dtype


def _count_segment(state, places) -> collections.Counter:
    sources, (regex_text, splitter, separator) = state
    split = chunk_splitter(regex_text)
    counts: collections.Counter = collections.Counter()
    for text in segment_texts(load_pieces(sources, places), separator):
        for part in splitter.split_on_special_tokens(text):
            counts.update(split(part))
    return counts


def _segment_characters(state, places) -> set:
    sources, separator = state
    return set().union(*segment_texts(load_pieces(sources, places), separator))


def _map_segments(function, state, sources, cut, separator, workers, names, progress, log, block_bytes, what):
    """function(state, segment) over the corpus's segments, on `workers`, with a progress bar."""
    names = document_names(sources, names)
    sizes = [len(s) if isinstance(s, (bytes, bytearray)) else os.path.getsize(s) for s in sources]
    spans: collections.deque = collections.deque()

    def segments():
        for segment in iter_segments(sources, cut, block_bytes, separator is None, names=names):
            spans.append(sum(len(piece.data) for piece in segment))
            yield piece_places(segment)

    with WorkerPool(workers, (sources, state)) as pool:
        bar = _Progress(sum(sizes), 0, what, progress, log)
        try:
            for result in pool.map(function, segments()):
                bar.update(spans.popleft())
                yield result
        finally:
            bar.close()


class _AvoidingSpecialTokens:
    """A cut rule that never cuts inside a special-token string (which training cuts out)."""

    def __init__(self, cut, special_tokens: Sequence[str]):
        self.cut = cut
        self.tokens = [token.encode("utf-8") for token in special_tokens if len(token.encode("utf-8")) > 1]

    def __call__(self, data: bytes, end: int) -> int:
        while True:
            p = self.cut(data, end)
            if p <= 0:
                return p
            inside = [start for token in self.tokens  # occurrences of a token that p would cut
                      for start in [data.rfind(token, max(0, p - len(token) + 1), p + len(token) - 1)]
                      if start >= 0]
            if not inside:
                return p
            end = min(inside)  # look again before the token


class _ManifestRecord:
    """`{prefix}_manifest.json`: the plan (corpus, tokenizer, settings), the shards written and
    where the corpus goes on after each one."""

    def __init__(self, path: str, plan: dict, out_dir: str, prefix: str, log):
        self.path, self.plan, self.out_dir, self.prefix = path, plan, out_dir, prefix
        self.shards: list[dict] = []  # {"file", "num_tokens", "crc32", "next": [source, offset, skip]}
        self.complete = False
        old = read_manifest(path)
        if old is not None and {k: old.get(k) for k in plan} == plan:
            self.shards = self._whole_prefix(old.get("shards", []))
            self.complete = bool(old.get("complete")) and len(self.shards) == len(old.get("shards", []))
            if self.shards and not self.complete and log:
                log(f"{out_dir}: going on with an interrupted preparation after its {len(self.shards)} "
                    "finished shard(s)")
        elif old is not None and log:
            log(f"{out_dir}: the corpus, tokenizer or settings changed since {path} was written; "
                "encoding from the start")
        if not self.complete:
            self.save(complete=False)
            leftovers = os.path.join(glob.escape(out_dir), f"{glob.escape(prefix)}_[0-9]*.bin.*.tmp")
            for leftover in glob.glob(leftovers):  # a shard being written when a run was killed
                os.unlink(leftover)

    def _whole_prefix(self, shards: list) -> list:
        """The recorded shards, up to the first that is missing or not what was recorded."""
        kept = []
        for number, shard in enumerate(shards):
            try:
                header = read_shard_header(os.path.join(self.out_dir, shard["file"]))
                ok = (shard["file"] == self.shard_name(number) and header.num_tokens == shard["num_tokens"]
                      and header.data_crc32 == shard["crc32"]
                      and header.tokenizer_hash == self.plan["tokenizer_hash"])
            except (OSError, ShardError, KeyError, TypeError):
                ok = False
            if not ok:
                break
            kept.append(shard)
        return kept

    def shard_name(self, number: int) -> str:
        return f"{self.prefix}_{number:06d}.bin"

    def shard_paths(self) -> list[str]:
        return [os.path.join(self.out_dir, shard["file"]) for shard in self.shards]

    def resume_point(self) -> tuple[tuple[int, int], int]:
        """((document, byte offset) of the segment to start at, ids of it already written)."""
        if not self.shards:
            return (0, 0), 0
        source, offset, skip = self.shards[-1]["next"]
        return (source, offset), skip

    def add(self, shard: dict) -> None:
        self.shards.append(shard)
        self.save(complete=False)

    def save(self, complete: bool) -> None:
        self.complete = complete
        io.write_json(self.path, {**self.plan, "complete": complete, "shards": self.shards,
                                  "num_tokens": sum(s["num_tokens"] for s in self.shards)})


class _ShardSink:
    """Writes ids into numbered shards of `shard_tokens` ids, recording each in the manifest."""

    def __init__(self, record: _ManifestRecord, tokenizer: Tokenizer, shard_tokens: int):
        self.record, self.shard_tokens = record, shard_tokens
        self.vocab_size, self.tokenizer_hash = tokenizer.vocab_size, tokenizer.hash()
        self.writer: ShardWriter | None = None

    def write(self, ids: np.ndarray, start: tuple, end: tuple, already: int = 0) -> None:
        """ids of the segment that runs from `start` to `end`, its first `already` ids written before."""
        position = 0
        while position < len(ids):
            if self.writer is None:
                name = self.record.shard_name(len(self.record.shards))
                self.writer = ShardWriter(os.path.join(self.record.out_dir, name), self.vocab_size,
                                          self.tokenizer_hash)
            room = self.shard_tokens - self.writer.num_tokens
            self.writer.append(ids[position:position + room])
            position += min(room, len(ids) - position)
            if self.writer.num_tokens == self.shard_tokens:
                after = [*end, 0] if position == len(ids) else [*start, already + position]
                self._close(after)

    def finish(self) -> None:
        if self.writer is not None:
            self._close(None)
        self.record.save(complete=True)
        written = set(self.record.shard_paths())
        pattern = os.path.join(glob.escape(self.record.out_dir), f"{glob.escape(self.record.prefix)}_*.bin")
        for stale in sorted(glob.glob(pattern)):  # shards of this prefix from an earlier preparation
            number = os.path.basename(stale)[len(self.record.prefix) + 1:-4]
            if stale not in written and number.isdigit() and len(number) == 6:
                os.unlink(stale)

    def abort(self) -> None:
        if self.writer is not None:
            self.writer.abort()
            self.writer = None

    def _close(self, after) -> None:
        writer, self.writer = self.writer, None
        writer.close()
        self.record.add({"file": os.path.basename(writer.path), "num_tokens": writer.num_tokens,
                         "crc32": writer.data_crc32, "next": after})


def _start_of(segment: Sequence[Piece]) -> tuple[int, int]:
    return segment[0].source, segment[0].offset


def _end_of(segment: Sequence[Piece]) -> tuple[int, int]:
    last = segment[-1]
    return (last.source + 1, 0) if last.ends_document else (last.source, last.offset + len(last.data))


def _fingerprint(source, name: str) -> dict:
    """What a document is, for deciding whether a recorded preparation still applies."""
    if isinstance(source, (bytes, bytearray)):
        return {"name": name, "sha256": hashlib.sha256(source).hexdigest()}
    stat = os.stat(source)
    return {"path": os.path.abspath(source), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


class _Progress:
    """Bytes done, as `progress` says: True or "bar": a tqdm bar (MB, MB/s, ETA) on stderr; "log":
    a `log` line every LOG_EVERY_S seconds; None or "auto": the bar on a terminal, else the
    lines; False or "none": nothing."""

    def __init__(self, total: int, initial: int, what: str, progress, log):
        self.total, self.done, self.what = total, initial, what
        self.bar = None
        self.log = None
        if progress in (None, "auto"):
            progress = "bar" if sys.stderr.isatty() else "log"
        if progress in (True, "bar"):
            self.bar = tqdm(total=total, initial=initial, unit="B", unit_scale=True, unit_divisor=1000,
                            desc=what, file=sys.stderr, dynamic_ncols=True)
        elif progress == "log" and log is not None:
            self.log = log
        self.started = self.last_log = time.monotonic()
        self.initial = initial

    def update(self, nbytes: int) -> None:
        self.done += nbytes
        if self.bar is not None:
            self.bar.update(nbytes)
        elif self.log is not None and time.monotonic() - self.last_log >= LOG_EVERY_S:
            self.last_log = time.monotonic()
            rate = (self.done - self.initial) / max(self.last_log - self.started, 1e-9)
            eta = (self.total - self.done) / rate if rate > 0 else float("inf")
            self.log(f"{self.what}: {self.done / 1e6:,.0f} of {self.total / 1e6:,.0f} MB "
                     f"({100 * self.done / max(self.total, 1):.0f}%), {rate / 1e6:.1f} MB/s, {eta:.0f} s left")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
