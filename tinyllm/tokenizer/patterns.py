"""Pre-tokenization: the split patterns that cut text into chunks before BPE.

Byte-level BPE never merges across a chunk boundary, so the split pattern decides
what a token can be (" the" but never "e t"). This module names the standard
patterns and turns a user's choice into a compiled `regex` pattern.

    >>> split_text("Hello world's 123", "gpt4")
    ['Hello', ' world', "'s", ' ', '123']

For the GPT-2 and GPT-4 patterns, `piece_cutter` gives a much cheaper regex that cuts
text into pieces (" word", " speak.\n\n") only at places where the split pattern
always cuts too, so a piece's chunks can be cached as a whole (see its docstring),
and `ascii_split_pattern` a standard-library regex that splits ASCII text the same
way, faster than `regex` (docs/performance.md).

Leaves out: the stream reader that applies a pattern to files block by block
(textstream.py) and special tokens (handled by the tokenizers before splitting).
"""

from __future__ import annotations

import functools
import re
import sys

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


# Piece cutters (standard library `re`, several times faster than the split patterns).
# Each match runs from one cut to the next: a leading whitespace run, a non-space
# run, then whitespace runs glued to the next non-space run unless the run starts
# with " " (a cut before it) or ends a line (a cut after it). `\s`/`\S` here are the
# standard library's, whose whitespace includes all of `regex`'s (tested).
_GPT4_PIECE = r"\s*+\S*+(?:(?! )\s++(?<!\n)\S++)*+(?:(?! )\s++)?"
_GPT2_PIECE = r"\s*+\S*+(?:(?! )(?!\n\S)\s++\S++)*+(?:(?! )\s++)?"
# The standard library's `re` has possessive quantifiers from Python 3.11; on 3.10 there are
# no cutters and no ASCII twins, and the tokenizer splits with `regex` alone (same chunks, slower).
STDLIB_POSSESSIVE = sys.version_info >= (3, 11)
_PIECE_CUTTERS = ({GPT4_PATTERN: re.compile(_GPT4_PIECE), GPT2_PATTERN: re.compile(_GPT2_PIECE)}
                  if STDLIB_POSSESSIVE else {})


def piece_cutter(regex_text: str) -> re.Pattern | None:
    r"""A regex whose matches cut text into pieces with the same chunks as the text:

        [c for piece in cutter.findall(text) for c in split.findall(piece)]
            == split.findall(text)

    for `split` the GPT-2 or GPT-4 pattern; None for other patterns. findall's last
    match is the empty piece at the end of the text.

    Why: a cut at position p of `text` keeps the chunks if every test that matching
    from a start s < p makes at p (is text[p] in a class; lookahead; `$`) comes out
    as it would at the end of the text. Then the matches before p are those of
    text[:p] and end exactly at p, and the patterns have no lookbehind, `\b` or `^`,
    so the matches from p on are those of text[p:]. The cutters cut only at:

    (a) a non-space character followed by " ". Nothing matched from s < p reaches p:
        every alternative that can take a non-space character stops before a space
        (GPT-4's one-character prefix `[^\r\n\p{L}\p{N}]?` only starts a match, and
        `[\r\n]*+` after symbols does not take " "); the whitespace alternatives
        cannot run through the non-space character at p - 1.
    (b) GPT-4: "\n" followed by a non-space character. Symbols then `[\r\n]*+` stop at
        p either way; a whitespace run from s that ends with this "\n" is taken whole,
        by `\s++$` at the end of the text and by `\s*[\r\n]` (giving back the one
        "\n") inside it.
        GPT-2: a lone "\n" between non-space characters. At p - 1, `\s++$` takes it
        at the end of the text; inside, `\s+(?!\S)` fails and `\s` takes it.

        >>> piece_cutter("gpt4") is None  # it takes the regex text, not a name
        True
        >>> piece_cutter(GPT4_PATTERN).findall("First Citizen:\nBefore we  go.\n\n")
        ['First', ' Citizen:\n', 'Before', ' we', '  go.\n\n', '']
    """
    return _PIECE_CUTTERS.get(regex_text)


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
