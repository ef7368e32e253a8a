"""Splitting text with the GPT-2 and GPT-4 patterns fast: standard-library twins of them.

The split patterns (patterns.py) are `regex` patterns with Unicode classes (\\p{L}, \\p{N}).
The standard library's `re` runs the same alternatives faster when every class is spelled
out (docs/performance.md), and a text only ever meets the characters it holds. So
`ChunkSplitter` splits a text with a `re` twin of the pattern whose classes list the
characters of each kind seen so far: ASCII ranges (`ascii_split_pattern`, the twin for
ASCII text), plus every non-ASCII character met, sorted into its kind by the `regex`
pattern's own tests (`_CHARACTER_TESTS`) a 256-character page at a time:

    >>> split = ChunkSplitter(GPT4_PATTERN)
    >>> split("Don’t stop été\\u00a0now 123456")
    ['Don', '’t', ' stop', ' été', '\\xa0now', ' ', '123', '456']

Why the chunks are the pattern's: each atom of the GPT-2/GPT-4 pattern is a literal (', a
space, the contraction letters) or a class made of \\p{L}, \\p{N}, \\s, \\r and \\n, and `$`
and `(?!\\S)` ask only whether a character is "\\n" or whitespace. On a text whose every
character the twin's classes sort as the pattern does, each atom matches the same
characters, so the matches are the same (property-tested against `regex` on random text;
a one-off run also compared them on every code point in twelve contexts). GPT-4 reads the contraction letters ignoring case,
so "\\u017f" (the long s) counts as an "s" there, and its twin says so.

Leaves out: other patterns (`regex` splits them), and Python 3.10, whose `re` has no
possessive quantifiers (`regex` splits everything there: the same chunks, slower).
"""

from __future__ import annotations

import functools
import re
import sys

import numpy as np
import regex

from .patterns import GPT2_PATTERN, GPT4_PATTERN, compile_pattern

STDLIB_POSSESSIVE = sys.version_info >= (3, 11)  # `re` has possessive quantifiers from 3.11

# The twins, with {L} {N} {S} the non-ASCII letters, digits and whitespace met so far and
# {s} {d} ... the non-ASCII characters GPT-4 reads as that contraction letter. With them
# empty, the ASCII twins: \p{L} -> A-Za-z, \p{N} -> 0-9, \s -> \t-\r and space (regex's \s;
# the standard library's would add \x1c-\x1f).
_TWINS = {
    GPT2_PATTERN: (r"""'(?:[sdmt]|ll|ve|re)| ?[A-Za-z{L}]++| ?[0-9{N}]++| ?[^\t-\r A-Za-z0-9{L}{N}{S}]++"""
                   r"""|[\t-\r {S}]++$|[\t-\r {S}]+(?![^\t-\r {S}])|[\t-\r {S}]"""),
    GPT4_PATTERN: (r"""'(?:[sS{s}]|[dD{d}]|[mM{m}]|[tT{t}]|[lL{l}][lL{l}]|[vV{v}][eE{e}]|[rR{r}][eE{e}])"""
                   r"""|[^\r\nA-Za-z0-9{L}{N}]?+[A-Za-z{L}]++|[0-9{N}]{{1,3}}+"""
                   r"""| ?[^\t-\r A-Za-z0-9{L}{N}{S}]++[\r\n]*+|[\t-\r {S}]++$|[\t-\r {S}]*[\r\n]"""
                   r"""|[\t-\r {S}]+(?![^\t-\r {S}])|[\t-\r {S}]"""),
}
_KINDS = ("L", "N", "S", *"sdmtlver")  # the placeholders

# Everything the patterns ask of a character (see the module docstring), and ASCII
# characters that answer alike: the kind of a non-ASCII character is its stand-in's.
_CHARACTER_TESTS = {
    GPT2_PATTERN: (r"\p{L}", r"\p{N}", r"\s", r"[\r\n]", "'", " ", *"sdmtlver"),
    GPT4_PATTERN: (r"\p{L}", r"\p{N}", r"\s", r"[\r\n]", "'", " ", *(f"(?i:{c})" for c in "sdmtlver")),
}
_STAND_IN_CANDIDATES = "a0\t!sdmtlverSDMTLVER"  # a letter, a digit, whitespace, a symbol, ...
_UNKNOWN, _NO_STAND_IN = 0, 255  # stand-in table entries: not looked at yet; none answers alike


def _twin(regex_text: str, classes: dict) -> re.Pattern:
    return re.compile(_TWINS[regex_text].format(**{kind: classes.get(kind, "") for kind in _KINDS}))


_ASCII_TWINS = {pattern: _twin(pattern, {}) for pattern in _TWINS} if STDLIB_POSSESSIVE else {}


def ascii_split_pattern(regex_text: str) -> re.Pattern | None:
    """A standard-library regex that splits ASCII text (`text.isascii()`) exactly as
    the GPT-2 or GPT-4 pattern does; None for other patterns. Not for other text.

        >>> ascii_split_pattern(GPT4_PATTERN).findall("IT'S 12345 ok")
        ['IT', "'S", ' ', '123', '45', ' ok']
    """
    return _ASCII_TWINS.get(regex_text)


class ChunkSplitter:
    """`split(text)`: the chunks of `pattern.findall(text)`, computed the fastest exact way
    (see the module docstring); `regex`'s findall for patterns without a twin."""

    def __init__(self, regex_text: str):
        self.regex_text = regex_text
        self.compiled = compile_pattern(regex_text)
        self.ascii_twin = ascii_split_pattern(regex_text)
        self.twin = self.ascii_twin  # the twin for every character met so far
        self.tests = [regex.compile(test) for test in _CHARACTER_TESTS.get(regex_text, ())]
        self.candidates = [(ord(c), self._answers(c)) for c in _STAND_IN_CANDIDATES]
        self.stand_ins = None  # (sys.maxunicode + 1,) uint8: code point -> its stand-in, filled a page at a time
        self.known_pages = None  # (pages,) bool
        self.has_no_stand_in = False

    def __call__(self, text: str) -> list[str]:
        if self.compiled is None:
            return [text] if text else []
        if self.ascii_twin is None:
            return self.compiled.findall(text)
        if text.isascii():
            return self.ascii_twin.findall(text)
        codes = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
        wide = codes[codes >= 128]  # the non-ASCII characters
        if self.known_pages is None:
            self.stand_ins = np.zeros(sys.maxunicode + 1, dtype=np.uint8)
            self.known_pages = np.zeros((sys.maxunicode >> 8) + 1, dtype=bool)
        pages = wide >> 8
        new = ~self.known_pages[pages]
        if new.any():
            self._learn(np.unique(pages[new]).tolist())
        if self.has_no_stand_in and (self.stand_ins[wide] == _NO_STAND_IN).any():
            return self.compiled.findall(text)
        return self.twin.findall(text)

    def _learn(self, pages: list) -> None:
        """Sort the characters of `pages` into their kinds and rebuild the twin."""
        for page in pages:
            for code in range(max(page << 8, 128), (page + 1) << 8):  # ASCII is the twin's already
                self.stand_ins[code] = self._stand_in(chr(code))
            self.known_pages[page] = True
        self.has_no_stand_in = bool((self.stand_ins == _NO_STAND_IN).any())
        kinds = {"L": "asdmtlver", "N": "0", "S": "\t", **{letter: letter for letter in "sdmtlver"}}
        classes = {kind: _class_of(np.isin(self.stand_ins, [ord(c) for c in members]))
                   for kind, members in kinds.items()}
        self.twin = _twin(self.regex_text, classes)

    def _answers(self, char: str) -> list:
        return [test.match(char) is not None for test in self.tests]

    def _stand_in(self, char: str) -> int:
        answers = self._answers(char)
        return next((code for code, candidate in self.candidates if candidate == answers), _NO_STAND_IN)


def _class_of(members: np.ndarray) -> str:
    r"""The code points where `members` (a bool per code point) holds, as ranges for a class:
    "\U000000e0-\U000000f6\U000000f8-..." (ASCII left out: the twin lists it)."""
    codes = np.flatnonzero(members[128:]) + 128
    if not codes.size:
        return ""
    breaks = np.flatnonzero(np.diff(codes) != 1)
    starts = np.r_[codes[0], codes[breaks + 1]]
    ends = np.r_[codes[breaks], codes[-1]]
    return "".join(f"\\U{a:08x}" if a == b else f"\\U{a:08x}-\\U{b:08x}" for a, b in zip(starts.tolist(), ends.tolist()))


@functools.lru_cache(maxsize=32)
def chunk_splitter(regex_text: str) -> ChunkSplitter:
    """The ChunkSplitter of a split regex ("" = no split), one per pattern and process."""
    return ChunkSplitter(regex_text)
