"""The tokenizer base class: special tokens, the file format, hashing.

`Tokenizer` owns everything the character and BPE tokenizers share, so that each
subclass only says how ordinary text becomes ids and back (`encode_ordinary`,
`decode_bytes`) and what its vocabulary lines look like in a file:

- special tokens with tiktoken's rules (`encode(text, allowed_special=...,
  disallowed_special=...)`),
- `save` / `load` in our versioned, human-readable text format (reading one kind;
  files.py's `load_tokenizer` reads either),
- `hash()`: a stable content hash that token shards record.

The file format (version 1), one item per line, UTF-8:

    tinyllm-tokenizer 1 bpe                   header: magic word, version, kind
    pattern "'(?:[sdmt]|ll|ve|re)| ?\\\\p{L}..."   (bpe only) the split regex, as a JSON string
    special 4095 "<|endoftext|>"              zero or more: id and JSON string
    tokens 4095                               how many token lines follow
    0 b'\\x00'                                 id and token: a Python bytes literal (bpe)
    ...                                       or a JSON string of one character (char)

Leaves out: how a vocabulary is learned or applied (char.py, bpe.py), reading a file
of either kind (files.py), the line-level reading and quoting (lines.py) and token
shards (shards.py).
"""

from __future__ import annotations

import hashlib
import os
from typing import ClassVar, Iterable

import numpy as np
import regex

from tinyllm import io

from .lines import FileLines, TokenizerFileError, check_ids, json_string, parse_id, parse_int, parse_json_string

FORMAT_MAGIC = "tinyllm-tokenizer"
FORMAT_VERSION = 1
EOT_TOKEN = "<|endoftext|>"  # the end-of-text special token, as GPT-2 spells it


class Tokenizer:
    """What every tokenizer offers. Subclasses set `kind` and implement
    `encode_ordinary`, `decode`, `decode_bytes`, `_vocab_lines` and `_from_lines`."""

    kind: ClassVar[str] = ""  # the word in the file header: "bpe" | "char"

    def __init__(self, special_tokens: dict[str, int] | None = None):
        self.special_tokens: dict[str, int] = dict(special_tokens or {})  # str -> id
        check_ids(self.special_tokens.values(), "special token id")
        self.special_id_to_text = {i: s for s, i in self.special_tokens.items()}  # id -> str
        if len(self.special_id_to_text) != len(self.special_tokens):
            raise ValueError(f"special tokens share ids: {self.special_tokens}")

    # -- what subclasses provide ------------------------------------------------

    @property
    def vocab_size(self) -> int:
        """One more than the largest id (the size an embedding table needs)."""
        raise NotImplementedError

    def encode_ordinary(self, text: str) -> list[int]:
        """Encode text, reading special-token strings as ordinary text."""
        raise NotImplementedError

    def encode_array(self, text: str) -> np.ndarray:
        """`encode_ordinary` as a NumPy array: uint16 when every id fits, else uint32."""
        return np.array(self.encode_ordinary(text), dtype=np.uint16 if self.vocab_size <= 1 << 16 else np.uint32)

    def decode(self, ids: Iterable[int]) -> str:
        raise NotImplementedError

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        raise NotImplementedError

    def _vocab_lines(self) -> list[str]:
        """The lines after the header and before `special` (e.g. `pattern ...`)."""
        return []

    def _token_lines(self) -> list[str]:
        """One `id token` line per ordinary token."""
        raise NotImplementedError

    @classmethod
    def _from_lines(cls, reader: FileLines, header_fields: dict[str, tuple[int, str]],
                    special_tokens: dict[str, int], token_lines: list[tuple[int, str]]):
        raise NotImplementedError

    # -- special tokens ---------------------------------------------------------

    @property
    def eot_id(self) -> int | None:
        """The id of "<|endoftext|>", or None when the tokenizer has none."""
        return self.special_tokens.get(EOT_TOKEN)

    def encode(self, text: str, allowed_special: str | Iterable[str] = (),
               disallowed_special: str | Iterable[str] = "all") -> list[int]:
        """Encode text to ids, with tiktoken's rules for special tokens.

        allowed_special: "all" or the special tokens to map to their ids.
        disallowed_special: "all" (every special token not allowed) or the ones whose
        appearance in the text is an error; () reads them as ordinary text.

            >>> from tinyllm.tokenizer import CharTokenizer
            >>> tok = CharTokenizer.train("ab", special_tokens=["<|endoftext|>"])
            >>> tok.encode("ab<|endoftext|>", allowed_special="all")
            [0, 1, 2]
            >>> tok.encode("ab<|endoftext|>")
            Traceback (most recent call last):
            ...
            ValueError: the text contains the special token '<|endoftext|>' at character 2, which is disallowed; pass allowed_special={'<|endoftext|>'} (or 'all') to encode it as its special id, or disallowed_special=() to encode it as ordinary text
        """
        allowed = set(self.special_tokens) if allowed_special == "all" else set(allowed_special)
        unknown = allowed - set(self.special_tokens)
        if unknown:
            raise ValueError(f"allowed_special names tokens this tokenizer does not have: "
                             f"{sorted(unknown)}; its special tokens are {sorted(self.special_tokens)}")
        if disallowed_special == "all":
            disallowed = set(self.special_tokens) - allowed
        else:
            disallowed = set(disallowed_special)
        if disallowed:
            found = _special_token_regex(frozenset(disallowed)).search(text)
            if found:
                token = found.group()
                raise ValueError(
                    f"the text contains the special token {token!r} at character {found.start()}, "
                    f"which is disallowed; pass allowed_special={{{token!r}}} (or 'all') to encode "
                    f"it as its special id, or disallowed_special=() to encode it as ordinary text"
                )
        if not allowed:
            return self.encode_ordinary(text)
        ids: list[int] = []
        position = 0
        for found in _special_token_regex(frozenset(allowed)).finditer(text):
            ids.extend(self.encode_ordinary(text[position:found.start()]))
            ids.append(self.special_tokens[found.group()])
            position = found.end()
        ids.extend(self.encode_ordinary(text[position:]))
        return ids

    def split_on_special_tokens(self, text: str) -> list[str]:
        """The pieces of text between special-token strings (the tokens removed);
        trainers use this so that no merge is learned across or inside them."""
        if not self.special_tokens:
            return [text]
        return _special_token_regex(frozenset(self.special_tokens)).split(text)

    def stream_cut(self, data: bytes, end: int) -> int:
        """The last place p, 0 < p < end, in UTF-8 bytes `data` where the text can be cut and
        both sides encoded apart with the ids of the whole, whatever surrounds them; -1 if
        none (textstream.iter_segments cuts a corpus there). Here: between two characters,
        right for a tokenizer that encodes each character alone; BPETokenizer cuts where its
        split pattern always cuts."""
        for p in range(end - 1, max(0, end - 5), -1):  # a UTF-8 character has at most 4 bytes
            if data[p] & 0xC0 != 0x80:  # not a continuation byte: a character starts here
                return p
        return end - 1 if end > 1 else -1  # not UTF-8: any cut, the decoder will name the bytes

    # -- files ------------------------------------------------------------------

    def to_text(self) -> str:
        """The whole file, as `save` writes it."""
        lines = [f"{FORMAT_MAGIC} {FORMAT_VERSION} {self.kind}"]
        lines += self._vocab_lines()
        for text, token_id in sorted(self.special_tokens.items(), key=lambda item: item[1]):
            lines.append(f"special {token_id} {json_string(text)}")
        token_lines = self._token_lines()
        lines.append(f"tokens {len(token_lines)}")
        lines += token_lines
        return "\n".join(lines) + "\n"

    def save(self, path: str | os.PathLike) -> None:
        """Write the tokenizer file atomically (a crash leaves the old file or none)."""
        io.write_bytes(path, self.to_text().encode("utf-8"))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Tokenizer":
        """Read a file written by `save`; it must hold a tokenizer of this class's kind
        (`tinyllm.tokenizer.load_tokenizer` reads either kind)."""
        if not cls.kind:
            raise TypeError("Tokenizer.load: the base class reads no kind of file; use "
                            "tinyllm.tokenizer.load_tokenizer(path) to load either kind")
        reader = FileLines(path)
        kind = read_kind(reader)
        if kind != cls.kind:
            raise TokenizerFileError(
                f"{reader.path}: holds a {kind!r} tokenizer, not {cls.kind!r}; "
                "use tinyllm.tokenizer.load_tokenizer to load either kind"
            )
        return cls.from_file_lines(reader)

    @classmethod
    def from_file_lines(cls, reader: FileLines) -> "Tokenizer":
        """Build a tokenizer of this class from a file whose header `read_kind` checked."""
        line_number = 2
        header_fields: dict[str, tuple[int, str]] = {}  # name -> (line number, raw value)
        special_tokens: dict[str, int] = {}
        while True:
            line = reader.line(line_number)
            name, _, rest = line.partition(" ")
            if name == "tokens":
                break
            if name == "special":
                id_text, _, string_text = rest.partition(" ")
                token_id = parse_id(reader, line_number, id_text, "special token id")
                text = parse_json_string(reader, line_number, string_text)
                if text in special_tokens:
                    raise reader.error(line_number, f"special token {text!r} appears twice")
                special_tokens[text] = token_id
            elif name in header_fields or not name:
                raise reader.error(line_number, f"unexpected line {line[:60]!r}")
            else:
                header_fields[name] = (line_number, rest)
            line_number += 1
        count = parse_int(reader, line_number, rest, "token count")
        token_lines: list[tuple[int, str]] = []  # (line number, text)
        for line_number in range(line_number + 1, line_number + 1 + count):
            token_lines.append((line_number, reader.line(line_number)))
        if len(reader.lines) > line_number:
            raise reader.error(line_number + 1, f"unexpected line after the {count} tokens "
                                                "the file announced")
        return cls._from_lines(reader, header_fields, special_tokens, token_lines)

    def hash(self) -> str:
        """SHA-256 hex digest of the file text: equal iff the tokenizers encode alike.

        Stable across runs, machines and Python versions (it hashes the saved file,
        not Python objects). Token shards record it.
        """
        return hashlib.sha256(self.to_text().encode("utf-8")).hexdigest()

    def __len__(self) -> int:
        return self.vocab_size

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(vocab_size={self.vocab_size}, "
                f"special_tokens={self.special_tokens})")


def read_kind(reader: FileLines) -> str:
    """Check a tokenizer file's header line (`tinyllm-tokenizer 1 bpe`) and return its kind."""
    header = reader.line(1).split(" ") if reader.lines else [""]
    if len(header) != 3 or header[0] != FORMAT_MAGIC:
        hint = ""
        if len(header) == 2 and header[1].isdigit():
            hint = ("; it looks like a .tiktoken file: use "
                    "BPETokenizer.from_tiktoken(path, pattern='gpt2'|'gpt4'|...)")
        raise reader.error(1, f"not a tinyllm tokenizer file (expected "
                              f"'{FORMAT_MAGIC} {FORMAT_VERSION} KIND'){hint}")
    version, kind = header[1], header[2]
    if version != str(FORMAT_VERSION):
        raise reader.error(1, f"format version {version!r} is not supported "
                              f"(this tinyllm reads version {FORMAT_VERSION})")
    return kind


_special_regex_cache: dict[frozenset, regex.Pattern] = {}  # frozenset[str] -> compiled alternation


def _special_token_regex(tokens: frozenset) -> regex.Pattern:
    """An alternation of the literal tokens, longest first so that a token that
    contains another wins."""
    compiled = _special_regex_cache.get(tokens)
    if compiled is None:
        alternatives = sorted(tokens, key=lambda token: (-len(token), token))
        compiled = regex.compile("|".join(regex.escape(token) for token in alternatives))
        if len(_special_regex_cache) > 64:
            _special_regex_cache.clear()
        _special_regex_cache[tokens] = compiled
    return compiled
