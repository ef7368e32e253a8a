"""Streaming text: read files in blocks and split them into chunks as if whole.

Training on a corpus larger than memory, or encoding it into shards, must not load a
file at once. This module reads a file as UTF-8 blocks of about `block_bytes` and
applies the split regex block by block, holding back the last chunk of each block
(it may continue in the next block) so that the chunks come out the same as
`pattern.findall(whole_file_text)`.

    >>> import regex
    >>> blocks = [("Hello wor", 9), ("ld, hi", 6)]
    >>> [chunks for chunks, _ in iter_chunk_lists(blocks, regex.compile(r" ?\\w+|[^\\w ]+| +"))]
    [['Hello'], [' world', ','], [' hi']]

Why holding back one chunk is exact for the standard patterns: each of their
alternatives either stops at a character it cannot take or, when it runs into the end
of the text, ends there; so a chunk that ends before the last one never looked past the
start of the last one. A custom regex that backtracks from the end of the text (for
example `a+b|a`) may differ at block boundaries; `block_bytes` large enough keeps such
places rare. Leaves out: special tokens (a special token cut by a block boundary is
read as ordinary text) and the "none" pattern, which needs the whole file as one chunk.

Every text file tinyllm reads for training or tokenizer training goes through
`iter_text_blocks` (or `read_text_file`, the same blocks joined), so one rule decides what
text is: UTF-8 without NUL bytes. A UTF-16 or UTF-32 file (a byte-order mark, or NUL bytes
between ASCII letters), a binary file (NUL bytes: an executable, an image) and bytes that
are not UTF-8 are refused with a TextFileError naming the file, what was found and where.
"""

from __future__ import annotations

import codecs
import os
from typing import Iterable, Iterator

from tinyllm.errors import UserError

DEFAULT_BLOCK_BYTES = 1 << 20  # 1 MiB: big enough that per-block overhead vanishes
WIDE_BYTE_ORDER_MARKS = (b"\xff\xfe", b"\xfe\xff", b"\x00\x00\xfe\xff")  # UTF-16/32 (LE UTF-32 starts like LE UTF-16)


class TextFileError(UserError):
    """A file that is not UTF-8 text; the message names the file, what was found and the fix."""


def iter_text_blocks(path: str | os.PathLike, block_bytes: int = DEFAULT_BLOCK_BYTES
                     ) -> Iterator[tuple[str, int]]:
    """Yield (text, bytes_read) blocks of a UTF-8 file, bytes kept exactly (no newline
    translation). A missing file raises FileNotFoundError; a file that is not UTF-8 text
    (see the module docstring) raises TextFileError; both name the file."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"text file not found: {path!r}")
    decoder = codecs.getincrementaldecoder("utf-8")(errors="strict")
    offset = 0  # bytes read so far, to say where bad UTF-8 sits
    with open(path, "rb") as file:
        while True:
            raw = file.read(block_bytes)
            final = not raw
            if offset == 0 and raw.startswith(WIDE_BYTE_ORDER_MARKS):
                raise TextFileError(f"{path}: UTF-16 or UTF-32 text (it starts with a byte-order mark), not UTF-8; "
                                    f"convert it first, e.g. iconv -f UTF-16 -t UTF-8 {path} > {path}.utf8")
            nul = raw.find(b"\0")
            if nul >= 0:
                raise TextFileError(f"{path}: binary data, or UTF-16 text without a byte-order mark (a NUL byte at "
                                    f"byte {offset + nul}), not UTF-8 text; give text files (or convert the file)")
            try:
                text = decoder.decode(raw, final=final)
            except UnicodeDecodeError as error:
                raise TextFileError(
                    f"{path}: not valid UTF-8 near byte {offset + error.start} ({error.reason}); "
                    "convert the file to UTF-8 first (e.g. iconv -f latin1 -t UTF-8)"
                ) from None
            offset += len(raw)
            if text or raw:
                yield text, len(raw)
            if final:
                return


def read_text_file(path: str | os.PathLike) -> str:
    """The whole text of a UTF-8 file, checked as `iter_text_blocks` checks it."""
    return "".join(text for text, _ in iter_text_blocks(path))


def iter_chunk_lists(blocks: Iterable[tuple[str, int]], compiled_pattern,
                     ascii_pattern=None) -> Iterator[tuple[list[str], int]]:
    """Split a stream of (text, bytes_read) blocks into lists of chunks.

    The concatenation of the lists equals `compiled_pattern.findall("".join(texts))`
    for the standard patterns (see the module docstring); `compiled_pattern=None`
    means "no split" and yields the whole stream as a single chunk at the end.
    `ascii_pattern` (patterns.ascii_split_pattern), when given, splits the blocks
    that are all ASCII instead. A block whose text is None is a hard boundary: no
    chunk spans it. The byte counts pass through so callers can report progress.
    """
    held_back = ""  # the tail of the previous block, from the start of its last chunk
    held_bytes = 0
    for text, bytes_read in blocks:
        if text is None:
            if held_back:
                yield _split_all(held_back, compiled_pattern, ascii_pattern), held_bytes
                held_back, held_bytes = "", 0
            continue
        text = held_back + text
        if compiled_pattern is None:
            held_back, held_bytes = text, held_bytes + bytes_read
            continue
        pattern = _pattern_for(text, compiled_pattern, ascii_pattern)
        chunks = pattern.findall(text)
        if not chunks:
            held_back, held_bytes = text, held_bytes + bytes_read
            continue
        cut = _start_of_last_chunk(text, chunks, pattern)
        held_back = text[cut:]
        yield chunks[:-1], held_bytes + bytes_read
        held_bytes = 0
    if held_back or held_bytes:
        yield _split_all(held_back, compiled_pattern, ascii_pattern), held_bytes


def _pattern_for(text: str, compiled_pattern, ascii_pattern):
    if ascii_pattern is not None and text.isascii():
        return ascii_pattern
    return compiled_pattern


def _split_all(text: str, compiled_pattern, ascii_pattern) -> list[str]:
    if compiled_pattern is None:
        return [text] if text else []
    return _pattern_for(text, compiled_pattern, ascii_pattern).findall(text)


def _start_of_last_chunk(text: str, chunks: list[str], compiled_pattern) -> int:
    """Where the last match of `chunks = findall(text)` starts."""
    last = chunks[-1]
    if sum(map(len, chunks)) == len(text):
        # the usual case: the matches tile the text, so the last one ends it
        return len(text) - len(last)
    start = 0
    for match in compiled_pattern.finditer(text):
        start = match.start()
    return start
