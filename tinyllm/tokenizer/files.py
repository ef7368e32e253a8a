"""Reading a tokenizer file of any kind: `load_tokenizer` picks the class from the header.

    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "tok.txt")
    >>> CharTokenizer.train("hello").save(path)
    >>> load_tokenizer(path)
    CharTokenizer(vocab_size=4, special_tokens={})

It sits above base.py, bpe.py and char.py, so the base class never imports its own
subclasses. Leaves out: the format itself (base.py) and files of other projects
(openai_files.py, behind `BPETokenizer.from_tiktoken` and `from_gpt2_files`).
"""

from __future__ import annotations

import os

from .base import Tokenizer, read_kind
from .bpe import BPETokenizer
from .char import CharTokenizer
from .lines import FileLines

KINDS: dict[str, type[Tokenizer]] = {BPETokenizer.kind: BPETokenizer, CharTokenizer.kind: CharTokenizer}


def load_tokenizer(path: str | os.PathLike) -> Tokenizer:
    """Load a tokenizer file written by `save`, whatever its kind.

    The kind comes from the header line (`tinyllm-tokenizer 1 bpe`). A `.tiktoken`
    file has no pattern in it: read it with BPETokenizer.from_tiktoken(path, pattern).
    """
    reader = FileLines(path)
    kind = read_kind(reader)
    if kind not in KINDS:
        raise reader.error(1, f"unknown tokenizer kind {kind!r}; expected one of {sorted(KINDS)}")
    return KINDS[kind].from_file_lines(reader)
