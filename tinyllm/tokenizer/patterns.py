"""Pre-tokenization: the split patterns that cut text into chunks before BPE.

Byte-level BPE never merges across a chunk boundary, so the split pattern decides
what a token can be (" the" but never "e t"). This module names the standard
patterns and turns a user's choice into a compiled `regex` pattern.

    >>> split_text("Hello world's 123", "gpt4")
    ['Hello', ' world', "'s", ' ', '123']

For the GPT-2 and GPT-4 patterns, `ascii_split_pattern` gives a standard-library regex
that splits ASCII text the same way, faster than `regex` (docs/performance.md);
`ChunkSplitter` splits any text with it, non-ASCII characters replaced by ASCII stand-ins
that the pattern cannot tell apart from them; `cut_before_a_word` finds places where the
patterns always cut, so a long text can be split in pieces on several cores.

Leaves out: the stream reader that applies a pattern to files block by block
(textstream.py) and special tokens (handled by the tokenizers before splitting).
"""

from __future__ import annotations

import functools
import re
import sys

import numpy as np
import regex

# The GPT-2 split (tiktoken's r50k/p50k/gpt2 pattern): contractions, optional space
# + letters, optional space + digits, optional space + other symbols, whitespace.
GPT2_PATTERN = (
    r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""
)

# The GPT-4 split (tiktoken's cl100k_base pattern): case-insensitive contractions,
# one leading non-letter glued to a word, digits in groups of at most three, and
# newlines kept apart from other whitespace.
GPT4_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+"""
    r"""| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""
)

# "none": no split at all, the whole text is one chunk (only sensible for short texts:
# merging inside a chunk is O(L log L) and a chunk cannot be streamed).
NO_SPLIT_PATTERN = ""

NAMED_PATTERNS = {  # str -> str: the names accepted wherever a pattern is asked for
    "gpt2": GPT2_PATTERN,
    "gpt4": GPT4_PATTERN,
    "none": NO_SPLIT_PATTERN,
}


def resolve_pattern(pattern: str) -> str:
    """A pattern name ("gpt2", "gpt4", "none") or a regex string -> the regex string.

    "none" resolves to the empty string, which this package reads as "do not split".
    A regex that does not compile raises ValueError naming it.

        >>> resolve_pattern("gpt2") == GPT2_PATTERN
        True
    """
    if not isinstance(pattern, str):
        raise TypeError(f"pattern must be a name or a regex string, got {pattern!r}")
    regex_text = NAMED_PATTERNS.get(pattern, pattern)
    compile_pattern(regex_text)  # fail here, at the boundary, on a bad regex
    return regex_text


def pattern_name(regex_text: str) -> str | None:
    """The name of a standard pattern, or None for a custom regex."""
    for name, known in NAMED_PATTERNS.items():
        if regex_text == known:
            return name
    return None


@functools.lru_cache(maxsize=32)
def compile_pattern(regex_text: str) -> regex.Pattern | None:
    """Compile a split regex once; None stands for "none" (no split)."""
    if regex_text == NO_SPLIT_PATTERN:
        return None
    try:
        compiled = regex.compile(regex_text)
    except regex.error as error:
        raise ValueError(
            f"split pattern {regex_text!r} is not a valid regex ({error}); "
            "use 'gpt2', 'gpt4', 'none' or a regex the `regex` package accepts"
        ) from None
    if compiled.groups:
        # findall would return the groups instead of the whole chunks
        raise ValueError(
            f"split pattern {regex_text!r} has capturing groups; write them as (?:...)"
        )
    return compiled


def split_text(text: str, pattern: str) -> list[str]:
    """Cut `text` into chunks with a named pattern or regex.

    Characters the regex does not match are dropped, exactly as tiktoken drops them
    (the standard patterns match every character).

        >>> split_text("  two  spaces", "gpt2")
        [' ', ' two', ' ', ' spaces']
        >>> split_text("one chunk", "none")
        ['one chunk']
    """
    compiled = compile_pattern(resolve_pattern(pattern))
    if compiled is None:
        return [text] if text else []
    return compiled.findall(text)


# The standard library's `re` has possessive quantifiers from Python 3.11; on 3.10 there are
# no ASCII twins, and the tokenizer splits with `regex` alone (same chunks, slower).
STDLIB_POSSESSIVE = sys.version_info >= (3, 11)


# The GPT-2 and GPT-4 patterns with every class cut down to ASCII: \p{L} -> A-Za-z,
# \p{N} -> 0-9, \s -> \t-\r and space (regex's \s; the standard library's would add
# \x1c-\x1f). On ASCII text each class matches the same characters, so the matches
# are the same (tested against `regex`).
_ASCII_SPLITS = {} if not STDLIB_POSSESSIVE else {
    GPT2_PATTERN: re.compile(
        r"""'(?:[sdmt]|ll|ve|re)| ?[A-Za-z]++| ?[0-9]++| ?[^\t-\r A-Za-z0-9]++"""
        r"""|[\t-\r ]++$|[\t-\r ]+(?![^\t-\r ])|[\t-\r ]""", re.ASCII),
    GPT4_PATTERN: re.compile(
        r"""'(?i:[sdmt]|ll|ve|re)|[^\r\nA-Za-z0-9]?+[A-Za-z]++|[0-9]{1,3}+"""
        r"""| ?[^\t-\r A-Za-z0-9]++[\r\n]*+|[\t-\r ]++$|[\t-\r ]*[\r\n]"""
        r"""|[\t-\r ]+(?![^\t-\r ])|[\t-\r ]""", re.ASCII),
}


def ascii_split_pattern(regex_text: str) -> re.Pattern | None:
    """A standard-library regex that splits ASCII text (`text.isascii()`) exactly as
    the GPT-2 or GPT-4 pattern does; None for other patterns. Not for other text.

        >>> ascii_split_pattern(GPT4_PATTERN).findall("IT'S 12345 ok")
        ['IT', "'S", ' ', '123', '45', ' ok']
    """
    return _ASCII_SPLITS.get(regex_text)


# Everything the GPT-2 and GPT-4 patterns ask of a character. Each of their atoms is a
# literal (', space, the contraction letters) or a class made of \p{L}, \p{N}, \s, \r and
# \n; `$` asks whether a "\n" ends the text, `(?!\S)` whether \s holds. GPT-4 reads the
# contraction letters ignoring case (so "\u017f", the long s, is an "s" there).
_CHARACTER_TESTS = {
    GPT2_PATTERN: (r"\p{L}", r"\p{N}", r"\s", r"[\r\n]", "'", " ", *"sdmtlver"),
    GPT4_PATTERN: (r"\p{L}", r"\p{N}", r"\s", r"[\r\n]", "'", " ", *(f"(?i:{c})" for c in "sdmtlver")),
}
_STAND_IN_CANDIDATES = "a0\t!sdmtlverSDMTLVER"  # a letter, a digit, whitespace, a symbol, ...
_UNKNOWN, _NO_STAND_IN = 0, 255  # table entries: not looked at yet; no ASCII character answers alike


class ChunkSplitter:
    """`split(text)`: the chunks of `pattern.findall(text)`, computed the fastest exact way.

    - ASCII text with the GPT-2/GPT-4 pattern: the pattern's ASCII twin
      (`ascii_split_pattern`), a standard-library regex, faster than `regex`.
    - Other text with those patterns: every non-ASCII character is replaced by an ASCII
      stand-in that answers every test the pattern makes of a character alike
      (`_CHARACTER_TESTS`: "é" -> "a", "\u2019" -> "!", "\u00a0" -> "\t", "\u0663" -> "0"),
      the twin splits that ASCII text, and the chunks that hold a replaced character
      are cut again out of the real text. The pattern cannot tell the two texts apart,
      so the chunks lie at the same places.
    - Other patterns (or Python 3.10, without twins): `regex`'s findall.

        >>> split = ChunkSplitter(GPT4_PATTERN)
        >>> split("Don\u2019t stop \u00e9t\u00e9\u00a0now")
        ['Don', '\u2019t', ' stop', ' \u00e9t\u00e9', '\u00a0now']
    """

    def __init__(self, regex_text: str):
        self.compiled = compile_pattern(regex_text)
        self.twin = ascii_split_pattern(regex_text)
        tests = _CHARACTER_TESTS.get(regex_text, ())
        self.tests = [regex.compile(test) for test in tests]
        self.stand_ins = None  # (sys.maxunicode + 1,) uint8: code point -> stand-in, filled as met

    def __call__(self, text: str) -> list[str]:
        if self.compiled is None:
            return [text] if text else []
        if self.twin is not None:
            if text.isascii():
                return self.twin.findall(text)
            chunks = self._split_with_stand_ins(text)
            if chunks is not None:
                return chunks
        return self.compiled.findall(text)

    def _split_with_stand_ins(self, text: str) -> list[str] | None:
        codes = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)  # (L,)
        wide = np.flatnonzero(codes >= 128)  # positions of the non-ASCII characters
        stand_ins = self._stand_ins_for(codes[wide])
        if stand_ins is None:
            return None
        ascii_codes = codes.astype(np.uint8)
        ascii_codes[wide] = stand_ins
        chunks = self.twin.findall(ascii_codes.tobytes().decode("ascii"))
        lengths = np.fromiter(map(len, chunks), dtype=np.int64, count=len(chunks))
        ends = np.cumsum(lengths)  # (chunks,) one past each chunk's last character
        touched = np.searchsorted(ends, wide, side="right")  # the chunk of each replaced character
        touched = touched[np.r_[True, touched[1:] != touched[:-1]]] if touched.size else touched
        starts = ends - lengths
        for index, start, end in zip(touched.tolist(), starts[touched].tolist(), ends[touched].tolist()):
            chunks[index] = text[start:end]
        return chunks

    def _stand_ins_for(self, codes: np.ndarray) -> np.ndarray | None:
        """The stand-in of each code point, None if one has none."""
        if self.stand_ins is None:
            self.stand_ins = np.zeros(sys.maxunicode + 1, dtype=np.uint8)
        stand_ins = self.stand_ins[codes]
        if (stand_ins == _UNKNOWN).any():
            for code in np.unique(codes[stand_ins == _UNKNOWN]).tolist():
                self.stand_ins[code] = self._stand_in(chr(code))
            stand_ins = self.stand_ins[codes]
        return None if (stand_ins == _NO_STAND_IN).any() else stand_ins

    def _stand_in(self, char: str) -> int:
        answers = [test.match(char) is not None for test in self.tests]
        for candidate in _STAND_IN_CANDIDATES:
            if [test.match(candidate) is not None for test in self.tests] == answers:
                return ord(candidate)
        return _NO_STAND_IN


@functools.lru_cache(maxsize=32)
def chunk_splitter(regex_text: str) -> ChunkSplitter:
    """The ChunkSplitter of a split regex ("" = no split), one per pattern and process."""
    return ChunkSplitter(regex_text)


def cut_before_a_word(data: bytes, end: int | None = None) -> int:
    r"""The last place p < end in UTF-8 text where the GPT-2 and GPT-4 patterns always cut:
    data[p] is " " and data[p - 1] is an ASCII letter, digit or symbol; -1 if there is none.

    Encoding data[:p] and data[p:] apart gives the chunks of the whole, whatever comes
    before or after. Why: every test that matching from a start s < p makes at p (is
    text[p] in a class; a lookahead; `$`) comes out as it would at the end of the text,
    so the matches before p are those of text[:p] and end exactly at p; and the patterns
    have no lookbehind, `` or `^`, so the matches from p on are those of text[p:].
    Nothing matched from s < p reaches p: every alternative that can take a non-space
    character stops before a space (GPT-4's one-character prefix `[^
\p{L}\p{N}]?`
    only starts a match, and `[
]*+` after symbols does not take " "), and the
    whitespace alternatives cannot run through the non-space character at p - 1.

        >>> cut_before_a_word(b"Before we  go.")
        9
        >>> data = b"one two"; cut = cut_before_a_word(data)
        >>> split_text("one two", "gpt4") == split_text(data[:cut].decode(), "gpt4") + split_text(data[cut:].decode(), "gpt4")
        True
    """
    end = len(data) if end is None else end
    while True:
        p = data.rfind(b" ", 1, end)
        if p < 0 or 0x21 <= data[p - 1] <= 0x7E:
            return p
        end = p


def cut_after_a_line_end(data: bytes, end: int | None = None) -> int:
    r"""GPT-4 only: the last place p < end in UTF-8 text where data[p - 1] is "\n" and
    data[p] starts a character that is not whitespace; -1 if there is none. The GPT-4
    pattern always cuts there (text in a language written without spaces has line ends).

    Why (as for `cut_before_a_word`): symbols followed by `[\r\n]*+` stop at p either way,
    and a whitespace run from s < p that ends with this "\n" is taken whole, by `\s++$` at
    the end of the text and by `\s*[\r\n]` (giving back the one "\n") inside it.

        >>> cut_after_a_line_end("行。\n次の行".encode())   # 3 + 3 + 1 bytes before it
        7
    """
    end = len(data) if end is None else end
    while end > 1:
        line_end = data.rfind(b"\n", 0, end - 1)
        if line_end < 0:
            return -1
        p = line_end + 1
        lead = data[p]
        if 0x21 <= lead <= 0x7E:
            return p
        if lead >= 0xC2:
            length = 2 if lead < 0xE0 else 3 if lead < 0xF0 else 4
            char = data[p:p + length].decode("utf-8", "replace")
            if len(char) == 1 and char != "\ufffd" and not char.isspace():  # str.isspace holds all of \s
                return p
        end = p
    return -1


def cut_before_last_chunk(data: bytes, end: int, compiled) -> int:
    r"""The start of the last chunk of the split of data[:end] (decoded) that follows a
    character that is not whitespace, as a byte offset; -1 if there is none.

    Every chunk but the last of that split stopped at a character it could not take, so
    the chunk starts are places where the whole text is cut too, whatever follows; and
    the text before such a start, split alone, gives the same chunks when its last
    character is not whitespace: the standard patterns look at the end of a text (`$`,
    `(?!\S)`) only from within a whitespace run. With no lookbehind, the chunks from
    there on are those of the rest. (A custom regex that looks further ahead may split a
    few chunks differently at such places.)

        >>> cut_before_last_chunk(b"Hello world", 11, compile_pattern(GPT2_PATTERN))
        5
        >>> cut_before_last_chunk(b"Hello  ", 7, compile_pattern(GPT2_PATTERN))  # after "Hello": ' ', ' '
        5
    """
    end = _complete_characters(data, end)  # a character cut by `end` is not a character it could not take
    text = data[:end].decode("utf-8", "surrogateescape")  # bytes that are not UTF-8: errors come later
    starts = [match.start() for match in compiled.finditer(text)]
    for start in reversed(starts[1:]):
        if not text[start - 1].isspace():  # str.isspace holds all of regex's \s
            return len(text[:start].encode("utf-8", "surrogateescape"))
    return -1


class PatternCut:
    """`cut(data, end)`: the last place p, 0 < p < end, where a split pattern always cuts UTF-8
    bytes `data` (see textstream.iter_segments); -1 if there is none.

    GPT-2/GPT-4: before a word (`cut_before_a_word`), else (GPT-4) after a line end, else
    before the last chunk of the split (`cut_before_last_chunk`, which runs the pattern over
    the bytes: the rare case). Other patterns: before the last chunk. "none": nowhere.
    """

    def __init__(self, regex_text: str):
        self.compiled = compile_pattern(regex_text)
        self.standard = regex_text in (GPT2_PATTERN, GPT4_PATTERN)
        self.line_ends = regex_text == GPT4_PATTERN

    def __call__(self, data: bytes, end: int) -> int:
        if self.compiled is None:
            return -1
        if self.standard:
            cut = cut_before_a_word(data, end)
            if cut < 0 and self.line_ends:
                cut = cut_after_a_line_end(data, end)
            if cut > 0:
                return cut
        return cut_before_last_chunk(data, end, self.compiled)


def _complete_characters(data: bytes, end: int) -> int:
    """`end`, moved back to the start of a UTF-8 character that data[:end] would cut."""
    for start in range(end - 1, max(-1, end - 4), -1):
        lead = data[start]
        if lead & 0xC0 != 0x80:  # the last character starts here
            length = 1 if lead < 0xC0 else 2 if lead < 0xE0 else 3 if lead < 0xF0 else 4
            return end if start + length <= end else start
    return end
