"""Byte-level BPE with tiktoken's encoding rule, files and training.

A vocabulary is `mergeable_ranks`, bytes -> rank, exactly tiktoken's layout: token id
= rank, every single byte has a rank (so any text, any bytes, can be encoded), and
special tokens take ids after the ranks. Encoding a text:

1. cut it into chunks with the split pattern (patterns.py);
2. a chunk whose bytes are a token is that token;
3. otherwise start from its single bytes and repeatedly merge the adjacent pair whose
   concatenation has the lowest rank (the leftmost one on a tie) until no adjacent
   pair is a token.

    >>> tok = BPETokenizer.train("aaabdaaabac", vocab_size=259, pattern="none")
    >>> tok.encode("aaabdaaabac")
    [258, 100, 258, 97, 99]
    >>> [tok.decode_bytes([i]) for i in (256, 257, 258)]
    [b'aa', b'ab', b'aaab']

Step 3 goes through merges by rank, not by replaying the training merges; it is what
tiktoken does, so with the same ranks and pattern the ids are identical to tiktoken's.
Encodings of chunks are cached (text repeats its words). With the gpt2/gpt4 patterns,
text is split by a faster standard-library twin of the pattern whose classes list the
characters met so far (fastsplit.ChunkSplitter); chunk ids are cached packed as bytes,
so a text's ids are one join of them.

Leaves out: the merge-learning algorithm (bpe_train.py), block-wise file reading
(textstream.py), shard files (shards.py), the parsing of OpenAI's files (openai_files.py). Encoding does not use threads.
"""

from __future__ import annotations

import ast
import json
import os
from array import array
from collections import Counter
from typing import Iterable, Iterator, Mapping, Sequence

import numpy as np

from .base import Tokenizer
from .bpe_train import train_bpe_merges
from .cuts import PatternCut
from .fastsplit import chunk_splitter
from .lines import FileLines, TokenizerFileError, check_ids, parse_id, parse_json_string
from .openai_files import read_gpt2_files, read_tiktoken_ranks, write_tiktoken_ranks
from .patterns import pattern_name, resolve_pattern
from .prepare import COUNT_BLOCK_BYTES, count_chunks
from .rank_merge import PairTable, merge_chunk, merge_long_chunk, merge_many_chunks

LONG_CHUNK_BYTES = 512  # from this length on, merge with a heap (O(L log L), not O(L^2))
BATCH_MIN_CHUNKS = 256  # from this many cache misses on, merge them together with NumPy
CHUNK_CACHE_ENTRIES = 1 << 18  # the chunk cache is emptied before it grows past this


class BPETokenizer(Tokenizer):
    kind = "bpe"

    def __init__(self, mergeable_ranks: Mapping[bytes, int], pattern: str = "gpt4",
                 special_tokens: Mapping[str, int] | None = None):
        """mergeable_ranks: bytes -> rank (= id), with all 256 single bytes, in any order.
        pattern: "gpt2" | "gpt4" | "none" | a regex. special_tokens: str -> id, ids
        distinct from the ranks."""
        super().__init__(dict(special_tokens or {}))
        self.mergeable_ranks: dict[bytes, int] = dict(mergeable_ranks)  # bytes -> rank
        check_ids(self.mergeable_ranks.values(), "rank")
        self.pattern: str = resolve_pattern(pattern)  # the split regex ("" = no split)
        missing = [b for b in range(256) if bytes([b]) not in self.mergeable_ranks]
        if missing:
            raise ValueError(f"mergeable_ranks lacks the single bytes {missing[:8]}"
                             f"{'...' if len(missing) > 8 else ''}; a byte-level BPE needs "
                             "all 256 to encode any text")
        self._id_to_bytes: dict[int, bytes] = {}  # id -> bytes, specials included
        for token, rank in self.mergeable_ranks.items():
            if rank in self._id_to_bytes:
                raise ValueError(f"rank {rank} is given to both {self._id_to_bytes[rank]!r} "
                                 f"and {token!r}")
            self._id_to_bytes[rank] = token
        for text, token_id in self.special_tokens.items():
            if token_id in self._id_to_bytes:
                raise ValueError(f"special token {text!r} has id {token_id}, which is already "
                                 f"the token {self._id_to_bytes[token_id]!r}")
            self._id_to_bytes[token_id] = text.encode("utf-8")
        self._split = chunk_splitter(self.pattern)  # text -> chunks, the fastest exact way
        self._cut = PatternCut(self.pattern)  # where a stream of text may be cut (stream_cut)
        self._id_type = "H" if max(self._id_to_bytes) < 1 << 16 else "I"  # ids packed as uint16, else uint32
        self._chunk_cache: dict[str, bytes] = {}  # chunk text -> its ids, packed (array(self._id_type).tobytes())
        self._pair_table: PairTable | None = None  # built on the first batch of misses

    # -- training ---------------------------------------------------------------

    @classmethod
    def train(cls, text_or_iterable: str | os.PathLike | Iterable[str | os.PathLike],
              vocab_size: int, pattern: str = "gpt4",
              special_tokens: Iterable[str] | None = None,
              progress: bool | None = None, workers: int | None = 1,
              block_bytes: int = COUNT_BLOCK_BYTES) -> "BPETokenizer":
        """Learn a vocabulary of `vocab_size` ids (special tokens included).

        text_or_iterable: a text, a file path (pathlib.Path or other os.PathLike), or an
        iterable of texts and paths; files are streamed in segments, counted on `workers`
        processes (0 or None: one per core; prepare.count_chunks), so a corpus larger
        than memory only needs its distinct chunks to fit. Strings are always text:
        wrap file names in pathlib.Path (or use `train_from_files`).

        Special-token strings in the corpus are cut out before counting, so no merge
        is learned inside or across them. Ties between equally frequent pairs go to
        the smallest (left id, right id); see bpe_train.py. Ranks 0..255 are the
        single bytes in byte order. If the corpus runs out of pairs first, the
        vocabulary is smaller than asked.

            >>> tok = BPETokenizer.train("the cat the hat the", vocab_size=258, pattern="gpt2")
            >>> [tok.decode_bytes([i]) for i in (256, 257)]
            [b'he', b'the']
        """
        specials = _checked_special_tokens(special_tokens, vocab_size)
        regex_text = resolve_pattern(pattern)
        split = chunk_splitter(regex_text)
        splitter = Tokenizer({s: i for i, s in enumerate(specials)})
        chunk_counts: Counter = Counter()  # str -> occurrences
        files = []
        for item in _as_sources(text_or_iterable):
            if isinstance(item, os.PathLike):
                files.append(os.fspath(item))
                continue
            for piece in splitter.split_on_special_tokens(item):
                chunk_counts.update(split(piece))
        if files:
            chunk_counts.update(count_chunks(files, regex_text, specials, workers=workers, progress=progress,
                                             block_bytes=block_bytes))
        return cls.from_chunk_counts(chunk_counts, vocab_size, regex_text, specials, progress)

    @classmethod
    def from_chunk_counts(cls, chunk_counts: Mapping[str, int], vocab_size: int, pattern: str = "gpt4",
                          special_tokens: Iterable[str] | None = None,
                          progress: bool | None = None) -> "BPETokenizer":
        """Learn the merges from chunks already counted (str -> occurrences, as
        prepare.count_chunks gives them); see `train`."""
        specials = _checked_special_tokens(special_tokens, vocab_size)
        byte_counts: Counter = Counter()  # bytes -> occurrences
        for chunk, count in chunk_counts.items():
            byte_counts[chunk.encode("utf-8", errors="surrogatepass")] += count
        num_merges = vocab_size - len(specials) - 256
        merges, vocab = train_bpe_merges(byte_counts, num_merges, progress)
        ranks = {token: rank for rank, token in enumerate(vocab)}
        return cls(ranks, resolve_pattern(pattern), {s: len(vocab) + i for i, s in enumerate(specials)})

    @classmethod
    def train_from_files(cls, paths: Iterable[str | os.PathLike], vocab_size: int,
                         **options) -> "BPETokenizer":
        """`train` on files given by name (str or path-like)."""
        return cls.train([_PathName(os.fspath(path)) for path in paths], vocab_size, **options)

    # -- encoding ---------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        return max(self._id_to_bytes) + 1

    def encode_ordinary(self, text: str) -> list[int]:
        """Encode text with no special tokens (their strings are ordinary text), like
        tiktoken's `encode_ordinary`.

            >>> tok = BPETokenizer({bytes([b]): b for b in range(256)}, "gpt2")
            >>> tok.encode_ordinary("hi!")
            [104, 105, 33]
        """
        return self.encode_array(text).tolist()

    def encode_array(self, text: str) -> np.ndarray:
        """`encode_ordinary` as a read-only NumPy array: uint16 when every id fits, else uint32."""
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            # lone surrogates are not text; tiktoken replaces them with U+FFFD
            text = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
        return np.frombuffer(self._packed_ids(self._split(text)), dtype=np.dtype(self._id_type))

    def encode_chunks(self, chunks: Sequence[str]) -> list[int]:
        """Encode already-split chunks (each one merged on its own), with the cache."""
        return np.frombuffer(self._packed_ids(chunks), dtype=np.dtype(self._id_type)).tolist()

    def _packed_ids(self, chunks: Sequence[str]) -> bytes:
        """The ids of the chunks, packed: one join of the cached ids of each. Chunks missing from
        the cache are encoded first, all together when there are many (`merge_many_chunks`)."""
        cache = self._chunk_cache
        try:
            return b"".join(map(cache.__getitem__, chunks))
        except KeyError:
            misses = _missing_keys(cache, chunks)
            packed = [array(self._id_type, ids).tobytes() for ids in self._encode_uncached(misses)]
            cache.update(zip(misses, packed))
            return b"".join(map(cache.__getitem__, chunks))

    def _encode_uncached(self, chunks: list[str]) -> list[tuple[int, ...]]:
        if len(chunks) < BATCH_MIN_CHUNKS:
            return [self._encode_chunk_uncached(chunk) for chunk in chunks]
        ranks = self.mergeable_ranks
        pieces = [chunk.encode("utf-8", errors="surrogatepass") for chunk in chunks]
        results: list[tuple[int, ...] | None] = [None] * len(pieces)
        batch = []  # indices of the pieces to merge together
        for index, piece in enumerate(pieces):
            rank = ranks.get(piece)
            if rank is not None:
                results[index] = (rank,)
            elif len(piece) >= LONG_CHUNK_BYTES:
                results[index] = merge_long_chunk(piece, ranks)
            else:
                batch.append(index)
        if self._pair_table is None:
            self._pair_table = PairTable(ranks)
        merged = merge_many_chunks([pieces[i] for i in batch], self._pair_table)
        for index, ids in zip(batch, merged):
            results[index] = ids
        return results  # type: ignore[return-value]

    def encode_bytes(self, data: bytes) -> list[int]:
        """Encode raw bytes as one chunk, no split (bytes that are not UTF-8 too).

            >>> tok = BPETokenizer({bytes([b]): b for b in range(256)}, "gpt2")
            >>> tok.encode_bytes(b"\\xff\\x00")
            [255, 0]
        """
        return list(self._merge_by_rank(bytes(data)))

    def _encode_chunk_uncached(self, chunk: str) -> tuple[int, ...]:
        piece = chunk.encode("utf-8", errors="surrogatepass")
        rank = self.mergeable_ranks.get(piece)
        if rank is not None:
            return (rank,)
        return self._merge_by_rank(piece)

    def _merge_by_rank(self, piece: bytes) -> tuple[int, ...]:
        if len(piece) >= LONG_CHUNK_BYTES:
            return merge_long_chunk(piece, self.mergeable_ranks)
        return merge_chunk(piece, self.mergeable_ranks)

    def stream_cut(self, data: bytes, end: int) -> int:
        """Where the split pattern always cuts (cuts.PatternCut); see Tokenizer.stream_cut."""
        return self._cut(data, end)

    # -- decoding ---------------------------------------------------------------

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        """The exact bytes of the tokens (special tokens as their UTF-8 text).

            >>> tok = BPETokenizer({bytes([b]): b for b in range(256)}, "gpt2")
            >>> tok.decode_bytes([226, 130])
            b'\\xe2\\x82'
        """
        if hasattr(ids, "tolist"):
            ids = ids.tolist()  # numpy arrays: plain ints look up faster
        try:
            return b"".join(map(self._id_to_bytes.__getitem__, ids))
        except (KeyError, TypeError):
            bad = next(i for i in ids if not isinstance(i, int) or i not in self._id_to_bytes)
            raise ValueError(f"token id {bad!r} is not in this tokenizer (ids run "
                             f"0..{self.vocab_size - 1})") from None

    def decode(self, ids: Iterable[int], errors: str = "replace") -> str:
        """Text of the tokens; bytes that are not valid UTF-8 (a token sequence cut in
        the middle of a character) become U+FFFD unless `errors` says otherwise."""
        return self.decode_bytes(ids).decode("utf-8", errors=errors)

    # -- OpenAI's files (openai_files.py) -------------------------------------

    @classmethod
    def from_tiktoken(cls, path: str | os.PathLike, pattern: str,
                      special_tokens: Mapping[str, int] | None = None) -> "BPETokenizer":
        """Read a `.tiktoken` file: one `base64(token) rank` per line, single bytes in
        any order. The file holds no pattern or special tokens, so pass them (for
        cl100k_base: pattern="gpt4", special_tokens={"<|endoftext|>": 100257, ...})."""
        return _build_from_file(cls, path, read_tiktoken_ranks(path), pattern, special_tokens)

    def save_tiktoken(self, path: str | os.PathLike) -> None:
        """Write the ranks as a `.tiktoken` file (pattern and special tokens are not in
        that format; keep them yourself or use `save`)."""
        write_tiktoken_ranks(path, self.mergeable_ranks)

    @classmethod
    def from_gpt2_files(cls, encoder_json: str | os.PathLike, vocab_bpe: str | os.PathLike,
                        pattern: str = "gpt2") -> "BPETokenizer":
        """Read OpenAI's GPT-2 `encoder.json` (token string -> id) and `vocab.bpe`
        (merges); "<|endoftext|>" is a special token. See openai_files.py."""
        ranks, special_tokens = read_gpt2_files(encoder_json, vocab_bpe)
        return _build_from_file(cls, vocab_bpe, ranks, pattern, special_tokens)

    # -- our own file format ----------------------------------------------------

    def _vocab_lines(self) -> list[str]:
        return [f"pattern {json.dumps(self.pattern)}"]

    def _token_lines(self) -> list[str]:
        return [f"{rank} {token!r}"
                for token, rank in sorted(self.mergeable_ranks.items(), key=lambda kv: kv[1])]

    @classmethod
    def _from_lines(cls, reader: FileLines, header_fields, special_tokens, token_lines):
        if "pattern" not in header_fields:
            raise reader.error(2, "a bpe tokenizer file needs a 'pattern \"REGEX\"' line")
        unexpected = sorted(set(header_fields) - {"pattern"})
        if unexpected:
            raise reader.error(header_fields[unexpected[0]][0],
                               f"unknown field {unexpected[0]!r} in a bpe tokenizer file")
        pattern_line, pattern_text = header_fields["pattern"]
        pattern = parse_json_string(reader, pattern_line, pattern_text)
        try:
            resolve_pattern(pattern)
        except ValueError as error:
            raise reader.error(pattern_line, str(error)) from None
        ranks: dict[bytes, int] = {}
        for line_number, line in token_lines:
            rank_text, _, literal = line.partition(" ")
            if not rank_text.isdigit():
                raise reader.error(line_number, f"expected 'RANK b\"BYTES\"', got {line[:60]!r}")
            rank = parse_id(reader, line_number, rank_text, "rank")
            token = _parse_bytes_literal(literal)
            if token is None:
                raise reader.error(line_number, f"{literal[:60]!r} is not a Python bytes literal")
            if token in ranks:
                raise reader.error(line_number, f"token {token!r} appears twice")
            ranks[token] = rank
        return _build_from_file(cls, reader.path, ranks, pattern, special_tokens)

    @property
    def pattern_name(self) -> str | None:
        """"gpt2", "gpt4", "none" for the standard patterns, else None."""
        return pattern_name(self.pattern)


def _missing_keys(cache: dict, keys: Sequence[str]) -> list[str]:
    """The distinct keys not in `cache`, in order of first appearance. A cache that
    would grow past CHUNK_CACHE_ENTRIES is emptied first (then every key is missing)."""
    misses = [key for key in dict.fromkeys(keys) if key not in cache]
    if len(cache) + len(misses) > CHUNK_CACHE_ENTRIES:
        cache.clear()
        misses = list(dict.fromkeys(keys))
    return misses


class _PathName(str):
    """A file name passed through `train_from_files` (plain strings mean text)."""

    def __fspath__(self) -> str:
        return str(self)


def _checked_special_tokens(special_tokens, vocab_size) -> list[str]:
    """The special tokens as a list, checked with the vocabulary size they must fit in."""
    specials = list(special_tokens or [])
    if len(set(specials)) != len(specials):
        raise ValueError(f"special_tokens has duplicates: {specials}")
    if not isinstance(vocab_size, int) or vocab_size < 256 + len(specials):
        raise ValueError(f"vocab_size={vocab_size!r} is too small: a byte-level BPE needs 256 ids for "
                         f"the bytes plus {len(specials)} for special tokens; ask for at least "
                         f"{256 + len(specials)}")
    return specials


def _as_sources(text_or_iterable) -> Iterator[str | os.PathLike]:
    """A text, a path, or an iterable of them -> texts and paths one at a time."""
    if isinstance(text_or_iterable, (str, os.PathLike)):
        yield text_or_iterable
        return
    for item in text_or_iterable:
        if not isinstance(item, (str, os.PathLike)):
            raise TypeError(f"training items must be texts (str) or paths (os.PathLike), "
                            f"got {type(item).__name__}")
        yield item


def _parse_bytes_literal(literal: str) -> bytes | None:
    if not (literal.startswith(("b'", 'b"')) and literal.endswith(literal[1]) and len(literal) >= 3):
        return None
    body = literal[2:-1]
    if "\\" not in body and literal[1] not in body:
        return body.encode("latin-1") if body.isascii() else None
    try:
        value = ast.literal_eval(literal)
    except (ValueError, SyntaxError):
        return None
    return value if isinstance(value, bytes) else None


def _build_from_file(cls, path, ranks, pattern, special_tokens) -> "BPETokenizer":
    """Construct, turning a constructor complaint into an error naming the file."""
    try:
        return cls(ranks, pattern, special_tokens)
    except ValueError as error:
        raise TokenizerFileError(f"{os.fspath(path)}: {error}") from None
