"""Pre-tokenization: the split patterns that cut text into chunks before BPE.

Byte-level BPE never merges across a chunk boundary, so the split pattern decides
what a token can be (" the" but never "e t"). This module names the standard
patterns and turns a user's choice into a compiled `regex` pattern.

    >>> split_text("Hello world's 123", "gpt4")
    ['Hello', ' world', "'s", ' ', '123']

Faster twins of the GPT-2 and GPT-4 patterns live in fastsplit.py; the places where a
pattern always cuts (so a long text can be split in pieces on several cores) in cuts.py.

Leaves out: the stream reader that applies a pattern to files block by block
(textstream.py) and special tokens (handled by the tokenizers before splitting).
"""

from __future__ import annotations

import functools

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
