"""Safe cuts: places where a split pattern always cuts a text, whatever comes before or after.

A corpus is encoded in segments, on several cores (prepare.py); a segment may end only
where encoding the two sides apart gives the ids of the whole (textstream.iter_segments
asks `PatternCut`, through `BPETokenizer.stream_cut`). For the GPT-2 and GPT-4 patterns
such places are found by looking at a byte or two (`cut_before_a_word`, and for GPT-4
`cut_after_a_line_end`); for any pattern, by splitting the bytes (`cut_before_last_chunk`).

    >>> cut = PatternCut(GPT4_PATTERN)
    >>> data = "First Citizen: we  go.".encode()
    >>> cut(data, len(data))                  # before "  go.", after a letter
    17

Leaves out: the splitting itself (patterns.py, fastsplit.py) and reading text (textstream.py).
"""

from __future__ import annotations

from .patterns import GPT2_PATTERN, GPT4_PATTERN, compile_pattern


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
        >>> split = compile_pattern(GPT4_PATTERN).findall
        >>> split("one two") == split(data[:cut].decode()) + split(data[cut:].decode())
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
