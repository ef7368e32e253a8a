"""Tokenizer files: our format, .tiktoken files, GPT-2's encoder.json + vocab.bpe,
and errors that name the file and line."""

import base64
import json

import pytest

from tinyllm.tokenizer import (BPETokenizer, CharTokenizer, Tokenizer, TokenizerFileError,
                               gpt2_bytes_to_unicode, load_tokenizer)


@pytest.fixture
def sample(corpus_text):
    return corpus_text[150_000:160_000] + " <|endoftext|> \x00\xff é 🙂"


def test_save_load_gives_identical_encodings(tmp_path, trained_bpe, sample):
    path = tmp_path / "bpe.tok"
    trained_bpe.save(path)
    for loaded in (BPETokenizer.load(path), load_tokenizer(path)):
        assert loaded.mergeable_ranks == trained_bpe.mergeable_ranks
        assert loaded.special_tokens == trained_bpe.special_tokens
        assert loaded.pattern == trained_bpe.pattern
        assert loaded.encode(sample, allowed_special="all") == \
            trained_bpe.encode(sample, allowed_special="all")
        assert loaded.hash() == trained_bpe.hash()
    assert path.read_text().splitlines()[0] == "tinyllm-tokenizer 1 bpe"


def test_hash_changes_with_content(trained_bpe):
    other = BPETokenizer(trained_bpe.mergeable_ranks, "gpt2", trained_bpe.special_tokens)
    assert len(trained_bpe.hash()) == 64 and other.hash() != trained_bpe.hash()


def test_tiktoken_file_round_trip(tmp_path, trained_bpe, sample):
    path = tmp_path / "ranks.tiktoken"
    trained_bpe.save_tiktoken(path)
    loaded = BPETokenizer.from_tiktoken(path, pattern="gpt4",
                                        special_tokens=trained_bpe.special_tokens)
    assert loaded.encode(sample, allowed_special="all") == \
        trained_bpe.encode(sample, allowed_special="all")
    first = path.read_text().splitlines()[0]
    assert first == "AA== 0"  # base64 of the byte 0, rank 0


def test_tiktoken_file_accepts_single_bytes_in_any_order(tmp_path):
    order = [bytes([b]) for b in reversed(range(256))] + [b"ab"]
    path = tmp_path / "odd.tiktoken"
    path.write_text("".join(f"{base64.b64encode(t).decode()} {r}\n" for r, t in enumerate(order)))
    tokenizer = BPETokenizer.from_tiktoken(path, pattern="gpt2")
    assert tokenizer.encode("ab a") == [256, 255 - 32, 255 - ord("a")]


@pytest.mark.parametrize("line, message", [
    ("YQ== 1 2", "expected 'BASE64TOKEN RANK'"),
    ("!!!! 300", "is not base64"),
    ("YWI= x", "rank 'x' is not a non-negative integer"),
    ("AA== 300", "appears twice"),
    ("YWI= 0", "rank 0 was already given on line 1"),
])
def test_malformed_tiktoken_file_names_file_and_line(tmp_path, line, message):
    lines = [f"{base64.b64encode(bytes([b])).decode()} {b}" for b in range(256)]
    path = tmp_path / "bad.tiktoken"
    path.write_text("\n".join(lines[:100] + [line] + lines[100:]) + "\n")
    with pytest.raises(TokenizerFileError, match=r"bad\.tiktoken, line 101: .*" + message):
        BPETokenizer.from_tiktoken(path, pattern="gpt2")


def test_tiktoken_file_missing_bytes(tmp_path):
    path = tmp_path / "short.tiktoken"
    path.write_text("YQ== 0\n")
    with pytest.raises(TokenizerFileError, match=r"short\.tiktoken: .*lacks the single bytes"):
        BPETokenizer.from_tiktoken(path, pattern="gpt2")


def write_gpt2_files(tokenizer: BPETokenizer, folder):
    """encoder.json and vocab.bpe the way OpenAI wrote GPT-2's, from our ranks."""
    to_char = gpt2_bytes_to_unicode()
    as_text = lambda token: "".join(to_char[b] for b in token)
    encoder = {as_text(t): r for t, r in tokenizer.mergeable_ranks.items()}
    encoder.update(tokenizer.special_tokens)
    merges = ["#version: 0.2"]
    for token, rank in sorted(tokenizer.mergeable_ranks.items(), key=lambda kv: kv[1]):
        if len(token) > 1:  # any split into two tokens of lower rank will do
            cut = next(c for c in range(1, len(token))
                       if tokenizer.mergeable_ranks.get(token[:c], rank) < rank
                       and tokenizer.mergeable_ranks.get(token[c:], rank) < rank)
            merges.append(f"{as_text(token[:cut])} {as_text(token[cut:])}")
    (folder / "encoder.json").write_text(json.dumps(encoder), encoding="utf-8")
    (folder / "vocab.bpe").write_text("\n".join(merges) + "\n", encoding="utf-8")
    return folder / "encoder.json", folder / "vocab.bpe"


def test_gpt2_files_round_trip(tmp_path, trained_bpe, sample):
    encoder_json, vocab_bpe = write_gpt2_files(trained_bpe, tmp_path)
    loaded = BPETokenizer.from_gpt2_files(encoder_json, vocab_bpe, pattern="gpt4")
    assert loaded.mergeable_ranks == trained_bpe.mergeable_ranks
    assert loaded.encode(sample, allowed_special="all") == \
        trained_bpe.encode(sample, allowed_special="all")


def test_gpt2_byte_table_is_a_bijection_onto_printable_characters():
    table = gpt2_bytes_to_unicode()
    assert len(set(table.values())) == 256
    assert all(c.isprintable() and not c.isspace() for c in table.values())
    assert (table[32], table[10], table[ord("a")]) == ("Ġ", "Ċ", "a")


def test_malformed_gpt2_files(tmp_path, trained_bpe):
    encoder_json, vocab_bpe = write_gpt2_files(trained_bpe, tmp_path)
    lines = vocab_bpe.read_text().splitlines()
    vocab_bpe.write_text("\n".join(lines[:5] + ["Ġ q z"] + lines[5:]))
    with pytest.raises(TokenizerFileError, match=r"vocab\.bpe, line 6: expected 'LEFT RIGHT'"):
        BPETokenizer.from_gpt2_files(encoder_json, vocab_bpe)
    vocab_bpe.write_text("\n".join(lines[:5] + ["q z"] + lines[5:]))
    with pytest.raises(TokenizerFileError, match=r"line 6: .* 'qz', which is not in"):
        BPETokenizer.from_gpt2_files(encoder_json, vocab_bpe)
    encoder_json.write_text("{\n  oops")
    with pytest.raises(TokenizerFileError, match=r"encoder\.json, line 2: not a JSON file"):
        BPETokenizer.from_gpt2_files(encoder_json, vocab_bpe)


def corrupt(path, line_number, new_line):
    lines = path.read_text().split("\n")
    lines[line_number - 1] = new_line
    path.write_text("\n".join(lines))


@pytest.mark.parametrize("line_number, new_line, message", [
    (1, "hello", "not a tinyllm tokenizer file"),
    (1, "tinyllm-tokenizer 9 bpe", "format version '9' is not supported"),
    (1, "tinyllm-tokenizer 1 wordpiece", "unknown tokenizer kind 'wordpiece'"),
    (2, 'pattern "(unclosed"', "is not a valid regex"),
    (2, "pattern unquoted", "expected a JSON string"),
    (3, 'special x "<|endoftext|>"', "special token id must be a non-negative integer"),
    (5, "tokens many", "token count must be a non-negative integer"),
    (9, "3 '\\x03'", "is not a Python bytes literal"),
    (9, "3 b'\\x01'", r"token b'\\x01' appears twice"),
    (9, "x b'\\x03'", "expected 'RANK"),
])
def test_malformed_tokenizer_file_names_file_and_line(tmp_path, trained_bpe, line_number,
                                                      new_line, message):
    path = tmp_path / "bad.tok"
    trained_bpe.save(path)
    corrupt(path, line_number, new_line)
    with pytest.raises(TokenizerFileError, match=rf"bad\.tok, line {line_number}: .*{message}"):
        load_tokenizer(path)


def test_truncated_and_extended_tokenizer_files(tmp_path, trained_bpe):
    path = tmp_path / "cut.tok"
    trained_bpe.save(path)
    text = path.read_text()
    path.write_text("".join(text.splitlines(keepends=True)[:-3]))
    with pytest.raises(TokenizerFileError, match=r"cut\.tok, line \d+: the file ends early"):
        load_tokenizer(path)
    path.write_text(text + "600 b'zz'\n")
    with pytest.raises(TokenizerFileError, match="unexpected line after the 598 tokens"):
        load_tokenizer(path)


def test_load_tokenizer_detects_kind_and_hints_at_tiktoken(tmp_path, trained_bpe):
    chars = CharTokenizer.train("hello")
    chars.save(tmp_path / "c.tok")
    assert isinstance(load_tokenizer(tmp_path / "c.tok"), CharTokenizer)
    with pytest.raises(TokenizerFileError, match="holds a 'char' tokenizer, not 'bpe'"):
        BPETokenizer.load(tmp_path / "c.tok")
    assert CharTokenizer.load(tmp_path / "c.tok").chars == chars.chars
    with pytest.raises(TypeError, match="use tinyllm.tokenizer.load_tokenizer"):
        Tokenizer.load(tmp_path / "c.tok")
    trained_bpe.save_tiktoken(tmp_path / "r.tiktoken")
    with pytest.raises(TokenizerFileError, match="looks like a .tiktoken file"):
        load_tokenizer(tmp_path / "r.tiktoken")
    with pytest.raises(FileNotFoundError, match="nothing.tok"):
        load_tokenizer(tmp_path / "nothing.tok")
