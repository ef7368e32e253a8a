"""Streaming text: a corpus of UTF-8 files read as segments that can be encoded apart.

Encoding a corpus larger than memory, on several cores, needs it in pieces whose encodings
joined are the encoding of the whole. `iter_segments` reads the documents (files, or
texts held as bytes) in windows of about `target_bytes` and ends each segment at a *safe
cut*: a place where the tokenizer's split always cuts, whatever comes before or after
(`Tokenizer.stream_cut`: before a word for GPT-2/GPT-4 BPE, between two characters for a
character tokenizer). A segment is a tuple of `Piece`s, consecutive byte ranges of one or
more documents:

    >>> import os, tempfile
    >>> folder = tempfile.mkdtemp()
    >>> for name, text in (("a.txt", "one two three"), ("b.txt", "four")):
    ...     with open(os.path.join(folder, name), "w") as file: _ = file.write(text)
    >>> cut = lambda data, end: data.rfind(b" ", 1, end)        # before a space
    >>> sources = [os.path.join(folder, name) for name in ("a.txt", "b.txt")]
    >>> [[piece.data for piece in segment]
    ...  for segment in iter_segments(sources, cut, target_bytes=6, documents_apart=True)]
    [[b'one'], [b' two'], [b' three'], [b'four']]

A segment depends only on where it starts (the bytes from there on): a preparation
stopped after any segment restarts at that segment's start and goes on exactly as it
would have (`start=(document, byte offset)`). `documents_apart=True` treats the end of a
document as a safe cut too (each document is encoded on its own, as `tinyllm tokenizer
encode` does); `False` reads the documents as one text, joined by a separator the
encoder puts in (as `tinyllm train` does), so segments may span documents.

One rule decides what text is, for every file tinyllm reads for training or tokenizer
training: UTF-8 without NUL bytes. A UTF-16 or UTF-32 file (a byte-order mark, or NUL
bytes between ASCII letters), a binary file (NUL bytes: an executable, an image) and
bytes that are not UTF-8 are refused with a TextFileError naming the file, what was found
and where (`decode_piece`; `read_text_file` for a file read whole).

Leaves out: the cut rules themselves (cuts.py, the tokenizers), encoding (prepare.py).
A text with no safe cut for a long way (one chunk of many megabytes, the "none" pattern)
makes a segment that long: a chunk is encoded whole.
"""

from __future__ import annotations

import os
from typing import Callable, Iterator, NamedTuple, Sequence

from tinyllm.errors import UserError

DEFAULT_BLOCK_BYTES = 1 << 20  # 1 MiB: segments this long make per-segment overhead vanish
WIDE_BYTE_ORDER_MARKS = (b"\xff\xfe", b"\xfe\xff", b"\x00\x00\xfe\xff")  # UTF-16/32 (LE UTF-32 starts like LE UTF-16)


class TextFileError(UserError):
    """A file that is not UTF-8 text; the message names the file, what was found and the fix."""


class Piece(NamedTuple):
    """Bytes `data` of document `source` (named `name`) from byte `offset`; `ends_document`
    when they run to its end."""

    name: str
    source: int
    offset: int
    data: bytes
    ends_document: bool


def check_text_bytes(name: str, data: bytes, offset: int) -> None:
    """TextFileError when raw bytes of `name` read at `offset` cannot be UTF-8 text: a wide
    byte-order mark at the start of the file, or a NUL byte."""
    if offset == 0 and data.startswith(WIDE_BYTE_ORDER_MARKS):
        raise TextFileError(f"{name}: UTF-16 or UTF-32 text (it starts with a byte-order mark), not UTF-8; "
                            f"convert it first, e.g. iconv -f UTF-16 -t UTF-8 {name} > {name}.utf8")
    nul = data.find(b"\0")
    if nul >= 0:
        raise TextFileError(f"{name}: binary data, or UTF-16 text without a byte-order mark (a NUL byte at "
                            f"byte {offset + nul}), not UTF-8 text; give text files (or convert the file)")


def decode_piece(piece: Piece) -> str:
    """The text of a piece, checked (`check_text_bytes`, then strict UTF-8)."""
    check_text_bytes(piece.name, piece.data, piece.offset)
    try:
        return piece.data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise TextFileError(f"{piece.name}: not valid UTF-8 near byte {piece.offset + error.start} "
                            f"({error.reason}); convert the file to UTF-8 first (e.g. iconv -f latin1 -t UTF-8)"
                            ) from None


def read_text_file(path: str | os.PathLike) -> str:
    """The whole text of a UTF-8 file, checked as every piece is. A missing file raises
    FileNotFoundError naming it."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"text file not found: {path!r}")
    with open(path, "rb") as file:
        return decode_piece(Piece(path, 0, 0, file.read(), True))


def document_names(sources: Sequence, names: Sequence[str] | None = None) -> list[str]:
    """`names`, or each document's path (`<text N>` for one held as bytes)."""
    if names is not None:
        return list(names)
    return [f"<text {i}>" if isinstance(s, (bytes, bytearray)) else os.fspath(s) for i, s in enumerate(sources)]


class _Reader:
    """Reads byte ranges of the documents: file paths (read when asked), or bytes."""

    def __init__(self, sources: Sequence, names: Sequence[str] | None):
        self.sources = list(sources)
        self.names = document_names(self.sources, names)
        self.open_source, self.file = -1, None

    def read(self, source: int, offset: int, size: int) -> Piece:
        document = self.sources[source]
        name = self.names[source]
        if isinstance(document, (bytes, bytearray)):
            data = bytes(document[offset:offset + size])
            return Piece(name, source, offset, data, offset + len(data) >= len(document))
        if source != self.open_source:
            self.close()
            if not os.path.isfile(document):
                raise FileNotFoundError(f"text file not found: {name!r}")
            self.file, self.open_source = open(document, "rb"), source
        self.file.seek(offset)
        data = self.file.read(size)
        check_text_bytes(name, data, offset)  # fail before a binary file fills a window
        return Piece(name, source, offset, data, len(data) < size or not self.file.peek(1))

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
        self.open_source, self.file = -1, None


def piece_places(segment: Sequence[Piece]) -> tuple:
    """Where a segment's pieces lie, without their bytes (small: what goes to a worker process)."""
    return tuple((piece.name, piece.source, piece.offset, len(piece.data), piece.ends_document) for piece in segment)


def load_pieces(sources: Sequence, places: Sequence[tuple]) -> tuple[Piece, ...]:
    """The pieces at `places` (from `piece_places`), their bytes read again from `sources`."""
    pieces = []
    for name, source, offset, length, ends_document in places:
        document = sources[source]
        if isinstance(document, (bytes, bytearray)):
            data = bytes(document[offset:offset + length])
        else:
            with open(document, "rb") as file:
                file.seek(offset)
                data = file.read(length)
        if len(data) != length:
            raise TextFileError(f"{name}: changed while it was being read (shorter than before); run again")
        pieces.append(Piece(name, source, offset, data, ends_document))
    return tuple(pieces)


def iter_segments(sources: Sequence, stream_cut: Callable[[bytes, int], int],
                  target_bytes: int = DEFAULT_BLOCK_BYTES, documents_apart: bool = True,
                  start: tuple[int, int] = (0, 0), names: Sequence[str] | None = None
                  ) -> Iterator[tuple[Piece, ...]]:
    """The segments of the documents `sources` (paths, or bytes) from `start`, in order.

    stream_cut(data, end): the last safe cut p, 0 < p < end, in `data` (bytes of one
    document), or -1. Each segment runs from its start to the last safe cut within the
    first `target_bytes` (within twice that, four times, ... until there is one), or to
    the end of the corpus when that comes first. `names` name the documents in errors
    (default: the paths).
    """
    if target_bytes <= 0:
        raise ValueError(f"target_bytes={target_bytes} must be positive")
    reader = _Reader(sources, names)
    source, offset = start
    window: list[Piece] = []  # bytes read from the segment's start on (one piece per document)
    try:
        while source < len(reader.sources):
            budget = target_bytes
            while True:
                window = _fill(reader, window, source, offset, budget)
                cut = _last_cut(window, budget, stream_cut, documents_apart, len(reader.sources))
                if cut is not None:
                    break
                budget *= 2
            index, position = cut
            last = window[index]
            head = last._replace(data=last.data[:position],
                                 ends_document=last.ends_document and position == len(last.data))
            yield (*window[:index], head)
            if head.ends_document:
                window, source, offset = window[index + 1:], last.source + 1, 0
            else:
                window = [last._replace(offset=last.offset + position, data=last.data[position:])] + window[index + 1:]
                source, offset = last.source, last.offset + position
    finally:
        reader.close()


def _fill(reader: _Reader, window: list[Piece], source: int, offset: int, budget: int) -> list[Piece]:
    """`window` (the pieces from (source, offset) on) read on until it holds `budget` bytes
    or the corpus ends."""
    window = list(window)
    held = sum(len(piece.data) for piece in window)
    if window:
        last = window[-1]
        source, offset = (last.source + 1, 0) if last.ends_document else (last.source, last.offset + len(last.data))
    while held < budget and source < len(reader.sources):
        piece = reader.read(source, offset, budget - held)
        held += len(piece.data)
        if window and window[-1].source == source:
            previous = window.pop()
            piece = previous._replace(data=previous.data + piece.data, ends_document=piece.ends_document)
        window.append(piece)
        source, offset = (source + 1, 0) if piece.ends_document else (source, piece.offset + len(piece.data))
    return window


def _last_cut(window: list[Piece], budget: int, stream_cut, documents_apart: bool,
              documents: int) -> tuple[int, int] | None:
    """(piece index, byte position) of the last safe cut in the first `budget` bytes of the
    window: the end of the corpus if it lies within them, the end of a document if
    `documents_apart`, else stream_cut's. None when there is none."""
    ends = []  # bytes of the window up to the end of each piece
    total = 0
    for piece in window:
        total += len(piece.data)
        ends.append(total)
    last = window[-1]
    if last.ends_document and last.source == documents - 1 and total <= budget:
        return len(window) - 1, len(last.data)
    for index in range(len(window) - 1, -1, -1):
        piece = window[index]
        before = ends[index] - len(piece.data)
        if before >= budget:
            continue
        within = min(len(piece.data), budget - before)  # this piece's bytes inside the budget
        if documents_apart and piece.ends_document and within == len(piece.data):
            return index, within
        position = stream_cut(piece.data, within)
        if position > 0:
            return index, position
    return None
