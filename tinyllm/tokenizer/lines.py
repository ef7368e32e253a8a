"""The line-level pieces of tokenizer files: numbered lines, and JSON-quoted strings.

Our tokenizer format (base.py), tiktoken's `.tiktoken` files and GPT-2's `vocab.bpe`
(openai_files.py) are all read as numbered text lines; every problem is a TokenizerFileError
that names the file and the line:

    >>> json_string("tab\\there"), json_string("é")
    ('"tab\\\\there"', '"é"')

Leaves out: what the lines mean (base.py, bpe.py, char.py, openai_files.py).
"""

from __future__ import annotations

import json
import os

from tinyllm.errors import UserError
from tinyllm.limits import MAX_TOKENIZER_FILE_BYTES, MAX_VOCAB


class TokenizerFileError(UserError):
    """A tokenizer file that cannot be read; the message names the file and line."""


class FileLines:
    """The numbered lines of a text file, and errors that name the file and line."""

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        if not os.path.isfile(self.path):
            raise FileNotFoundError(f"tokenizer file not found: {self.path!r}")
        size = os.path.getsize(self.path)
        if size > MAX_TOKENIZER_FILE_BYTES:
            raise TokenizerFileError(f"{self.path}: {size:,} bytes, more than a tokenizer file holds "
                                     f"(at most {MAX_TOKENIZER_FILE_BYTES:,}); it is not a tokenizer file")
        try:
            with open(self.path, encoding="utf-8", newline="\n") as file:
                self.lines = file.read().split("\n")  # list[str], line n at index n - 1
        except UnicodeDecodeError as error:
            raise TokenizerFileError(f"{self.path}: not a text file (bad UTF-8 at byte "
                                     f"{error.start})") from None
        if self.lines and self.lines[-1] == "":
            self.lines.pop()

    def error(self, line_number: int, message: str) -> TokenizerFileError:
        return TokenizerFileError(f"{self.path}, line {line_number}: {message}")

    def line(self, line_number: int) -> str:
        if line_number > len(self.lines):
            raise self.error(line_number, "the file ends early (truncated?)")
        return self.lines[line_number - 1]


def json_string(text: str) -> str:
    """JSON-quote a string, escaping only what is not printable (so the file stays
    readable and lone surrogates survive the trip through UTF-8)."""
    return json.dumps(text, ensure_ascii=not text.isprintable())


def parse_json_string(reader: FileLines, line_number: int, text: str) -> str:
    """The string a JSON-quoted `text` on line `line_number` stands for."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise reader.error(line_number, f"expected a JSON string, got {text[:60]!r} ({error.msg})") from None
    if not isinstance(value, str):
        raise reader.error(line_number, f"expected a JSON string, got {text[:60]!r}")
    return value


def parse_int(reader: FileLines, line_number: int, text: str, what: str) -> int:
    """A non-negative decimal integer on line `line_number`; `what` names it in the error."""
    if not (text.isascii() and text.isdigit()) or len(text) > 18:
        raise reader.error(line_number, f"{what} must be a non-negative integer, got {text[:40]!r}")
    return int(text)


def parse_id(reader: FileLines, line_number: int, text: str, what: str) -> int:
    """A token id (a rank, a special token's id) on line `line_number`: below MAX_VOCAB (2**24),
    so that a file cannot ask for an embedding of any size it likes."""
    value = parse_int(reader, line_number, text, what)
    if value >= MAX_VOCAB:
        raise reader.error(line_number, f"{what} {value:,} is out of range: token ids must be below {MAX_VOCAB:,} "
                                        "(a vocabulary of at most 2**24 entries)")
    return value


def check_ids(ids, what: str) -> None:
    """ValueError unless every id in `ids` is in [0, MAX_VOCAB) (for tokenizers built in Python)."""
    bad = [i for i in ids if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < MAX_VOCAB]
    if bad:
        raise ValueError(f"{what} {bad[0]!r} is out of range: token ids are integers in [0, {MAX_VOCAB:,})")
