"""Character-level tokenizer: one id per distinct character of the training text.

The classic char-level setup (char-rnn, nanoGPT's shakespeare_char): the vocabulary is
the sorted set of characters, so ids follow code-point order; special tokens, if any,
come after them.

    >>> tok = CharTokenizer.train("hello")
    >>> tok.chars, tok.encode("hole"), tok.decode([3, 1])
    (['e', 'h', 'l', 'o'], [1, 3, 2, 0], 'oh')

Leaves out: characters not seen in training (encoding one is an error naming it,
UnknownCharacterError, there is no unknown-token id) and any notion of merging.
"""

from __future__ import annotations

import json
from typing import Iterable

from tinyllm.errors import UserError

from .base import Tokenizer
from .lines import FileLines, json_string


class UnknownCharacterError(UserError):
    """Text holds a character the vocabulary lacks (a ValueError, as before; the user's to fix: one line)."""


class CharTokenizer(Tokenizer):
    kind = "char"

    def __init__(self, chars: Iterable[str], special_tokens: dict[str, int] | None = None):
        self.chars: list[str] = list(chars)  # id -> character
        self.char_to_id: dict[str, int] = {c: i for i, c in enumerate(self.chars)}  # str -> id
        if len(self.char_to_id) != len(self.chars):
            raise ValueError("the characters of a CharTokenizer must be distinct")
        if any(len(c) != 1 for c in self.chars):
            raise ValueError(f"every entry must be one character, got "
                             f"{next(c for c in self.chars if len(c) != 1)!r}")
        super().__init__(special_tokens)
        clashes = [i for i in self.special_tokens.values() if i < len(self.chars)]
        if clashes:
            raise ValueError(f"special token ids {clashes} collide with character ids "
                             f"0..{len(self.chars) - 1}")

    @classmethod
    def train(cls, text_or_texts: str | Iterable[str],
              special_tokens: Iterable[str] | None = None) -> "CharTokenizer":
        """The vocabulary of all characters in a text (or an iterable of texts), sorted;
        special-token strings in the text are not counted as characters."""
        texts = [text_or_texts] if isinstance(text_or_texts, str) else text_or_texts
        specials = list(special_tokens or [])
        splitter = Tokenizer({s: i for i, s in enumerate(specials)})
        seen: set[str] = set()
        for text in texts:
            for piece in splitter.split_on_special_tokens(text):
                seen.update(piece)
        chars = sorted(seen)
        return cls(chars, {s: len(chars) + i for i, s in enumerate(specials)})

    @property
    def vocab_size(self) -> int:
        return max([len(self.chars) - 1, *self.special_tokens.values()]) + 1

    def encode_ordinary(self, text: str) -> list[int]:
        try:
            return [self.char_to_id[c] for c in text]
        except KeyError:
            position = next(i for i, c in enumerate(text) if c not in self.char_to_id)
            raise UnknownCharacterError(
                f"character {text[position]!r} at position {position} is not in this "
                f"CharTokenizer's vocabulary of {len(self.chars)} characters; train it on "
                "text that contains it"
            ) from None

    def decode(self, ids: Iterable[int]) -> str:
        if hasattr(ids, "tolist"):
            ids = ids.tolist()
        pieces = []
        for token_id in ids:
            if 0 <= token_id < len(self.chars):
                pieces.append(self.chars[token_id])
            elif token_id in self.special_id_to_text:
                pieces.append(self.special_id_to_text[token_id])
            else:
                raise ValueError(f"token id {token_id!r} is not in this CharTokenizer "
                                 f"(ids run 0..{self.vocab_size - 1})")
        return "".join(pieces)

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        return self.decode(ids).encode("utf-8", errors="surrogatepass")

    def _token_lines(self) -> list[str]:
        return [f"{i} {json_string(c)}" for i, c in enumerate(self.chars)]

    @classmethod
    def _from_lines(cls, reader: FileLines, header_fields, special_tokens, token_lines):
        if header_fields:
            name, (line_number, _) = next(iter(header_fields.items()))
            raise reader.error(line_number, f"a char tokenizer file has no {name!r} line")
        if not token_lines:
            line_number = next((n for n, line in enumerate(reader.lines, start=1) if line.startswith("tokens")), 1)
            raise reader.error(line_number, "a char tokenizer file lists at least one character (tokens 0 makes "
                                            "a tokenizer that can encode nothing)")
        chars = []
        for expected_id, (line_number, line) in enumerate(token_lines):
            id_text, _, char_text = line.partition(" ")
            if id_text != str(expected_id):
                raise reader.error(line_number, f"expected token id {expected_id}, got {id_text!r}")
            try:
                char = json.loads(char_text)
            except json.JSONDecodeError:
                char = None
            if not isinstance(char, str) or len(char) != 1:
                raise reader.error(line_number, f"expected one character as a JSON string, "
                                                f"got {char_text[:40]!r}")
            chars.append(char)
        try:
            return cls(chars, special_tokens)
        except ValueError as error:
            raise reader.error(token_lines[-1][0] if token_lines else 1, str(error)) from None
