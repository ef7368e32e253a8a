"""OpenAI's tokenizer files: tiktoken's `.tiktoken` ranks and GPT-2's encoder.json + vocab.bpe.

These functions read and write the files only; they return what the files hold (ranks,
bytes -> id, and special tokens) and `BPETokenizer.from_tiktoken`, `save_tiktoken` and
`from_gpt2_files` (bpe.py) build the tokenizer from it:

    ranks = read_tiktoken_ranks("cl100k_base.tiktoken")          # dict[bytes, int]
    write_tiktoken_ranks("copy.tiktoken", ranks)
    ranks, special_tokens = read_gpt2_files("encoder.json", "vocab.bpe")

- `.tiktoken`: one `base64(token) rank` per line, single bytes in any order. The file
  holds no split pattern and no special tokens.
- GPT-2: `encoder.json` maps each token, written with GPT-2's byte-to-unicode table
  (`gpt2_bytes_to_unicode`), to its id; `<|...|>` entries are special tokens. `vocab.bpe`
  lists the merges in rank order (`left right` per line); every merge must make a token of
  encoder.json with a higher id than the merges before it, since ids are the ranks.

Every malformed file is a TokenizerFileError naming the file (and the line); every id is
checked below 2**24 (tinyllm/limits.py). Leaves out: our own format (base.py) and Hugging
Face's tokenizer.json.
"""

from __future__ import annotations

import base64
import binascii
import json
import os

from tinyllm import io
from tinyllm.limits import MAX_TOKENIZER_FILE_BYTES, MAX_VOCAB, check_file_size

from .lines import FileLines, TokenizerFileError, parse_id


def read_tiktoken_ranks(path: str | os.PathLike) -> dict[bytes, int]:
    """The ranks of a `.tiktoken` file: bytes -> rank."""
    reader = FileLines(path)
    ranks: dict[bytes, int] = {}
    seen_ranks: dict[int, int] = {}  # rank -> line number
    for line_number, line in enumerate(reader.lines, start=1):
        if not line:
            continue
        fields = line.split()
        if len(fields) != 2:
            raise reader.error(line_number, f"expected 'BASE64TOKEN RANK', got {line[:60]!r}")
        try:
            token = base64.b64decode(fields[0], validate=True)
        except (binascii.Error, ValueError):
            raise reader.error(line_number, f"{fields[0][:40]!r} is not base64") from None
        if not fields[1].isdigit():
            raise reader.error(line_number, f"rank {fields[1]!r} is not a non-negative integer")
        rank = parse_id(reader, line_number, fields[1], "rank")
        if token in ranks:
            raise reader.error(line_number, f"token {token!r} appears twice")
        if rank in seen_ranks:
            raise reader.error(line_number, f"rank {rank} was already given on line {seen_ranks[rank]}")
        ranks[token] = rank
        seen_ranks[rank] = line_number
    return ranks


def write_tiktoken_ranks(path: str | os.PathLike, ranks: dict[bytes, int]) -> None:
    """Write ranks as a `.tiktoken` file, in rank order, atomically."""
    lines = [f"{base64.b64encode(token).decode('ascii')} {rank}\n"
             for token, rank in sorted(ranks.items(), key=lambda kv: kv[1])]
    io.write_bytes(path, "".join(lines).encode("ascii"))


def read_gpt2_files(encoder_json: str | os.PathLike, vocab_bpe: str | os.PathLike
                    ) -> tuple[dict[bytes, int], dict[str, int]]:
    """(ranks, special_tokens) of OpenAI's GPT-2 `encoder.json` and `vocab.bpe` (see the module
    docstring); the merges of vocab.bpe are checked against the ids of encoder.json."""
    byte_of = {char: byte for byte, char in gpt2_bytes_to_unicode().items()}  # str -> int
    encoder_path = os.fspath(encoder_json)
    if not os.path.isfile(encoder_path):
        raise FileNotFoundError(f"GPT-2 encoder file not found: {encoder_path!r}")
    check_file_size(encoder_path, MAX_TOKENIZER_FILE_BYTES, "GPT-2 encoder file")
    try:
        with open(encoder_path, encoding="utf-8") as file:
            encoder = json.load(file)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        where = f", line {error.lineno}" if isinstance(error, json.JSONDecodeError) else ""
        raise TokenizerFileError(f"{encoder_path}{where}: not a JSON file ({error})") from None
    if not isinstance(encoder, dict):
        raise TokenizerFileError(f"{encoder_path}: expected a JSON object of token -> id")
    ranks: dict[bytes, int] = {}
    special_tokens: dict[str, int] = {}
    for token_text, token_id in encoder.items():
        if isinstance(token_id, bool) or not isinstance(token_id, int) or not 0 <= token_id < MAX_VOCAB:
            raise TokenizerFileError(f"{encoder_path}: token {token_text!r} has id "
                                     f"{token_id!r}, not an integer in [0, {MAX_VOCAB:,})")
        if token_text.startswith("<|") and token_text.endswith("|>"):
            special_tokens[token_text] = token_id
            continue
        try:
            ranks[bytes(byte_of[char] for char in token_text)] = token_id
        except KeyError:
            raise TokenizerFileError(f"{encoder_path}: token {token_text!r} has a character "
                                     "outside GPT-2's byte-to-unicode table") from None
    merges = FileLines(vocab_bpe)
    last_rank = -1
    for line_number, line in enumerate(merges.lines, start=1):
        if line_number == 1 and line.startswith("#version"):
            continue
        if not line.strip():
            continue
        parts = line.split(" ")
        if len(parts) != 2:
            raise merges.error(line_number, f"expected 'LEFT RIGHT', got {line[:60]!r}")
        merged = parts[0] + parts[1]
        if merged not in encoder:
            raise merges.error(line_number, f"the merge {line!r} makes {merged!r}, which is "
                                            f"not in {encoder_path}")
        if encoder[merged] <= last_rank:
            raise merges.error(line_number, f"the merge {line!r} has id {encoder[merged]}, "
                                            f"not above the previous merge's {last_rank}")
        last_rank = encoder[merged]
    return ranks, special_tokens


def gpt2_bytes_to_unicode() -> dict[int, str]:
    """GPT-2's table from bytes to printable characters, used to write tokens in
    encoder.json and vocab.bpe: printable Latin-1 bytes stand for themselves, the
    others (control characters, space, ...) take the characters from U+0100 upwards
    in byte order. So the space byte 32 is 'Ġ' (U+0120) and the newline 10 is 'Ċ'.

        >>> table = gpt2_bytes_to_unicode()
        >>> table[ord("A")], table[32], table[10]
        ('A', 'Ġ', 'Ċ')
    """
    printable = set(range(ord("!"), ord("~") + 1)) | set(range(ord("¡"), ord("¬") + 1)) \
        | set(range(ord("®"), ord("ÿ") + 1))
    table = {}
    next_stand_in = 256
    for byte in range(256):
        if byte in printable:
            table[byte] = chr(byte)
        else:
            table[byte] = chr(next_stand_in)
            next_stand_in += 1
    return table
