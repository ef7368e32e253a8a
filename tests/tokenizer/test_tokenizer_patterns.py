"""Split patterns: known GPT-2/GPT-4 splits, and streaming splits equal whole-text splits."""

import pytest
import regex
from hypothesis import given, strategies as st

from tinyllm.tokenizer.patterns import (GPT2_PATTERN, GPT4_PATTERN, compile_pattern,
                                        resolve_pattern, split_text)
from tinyllm.tokenizer.textstream import iter_chunk_lists, iter_text_blocks


def test_gpt2_splits_contractions():
    assert split_text("I'm sure you'll see they've gone, it's John's", "gpt2") == [
        "I", "'m", " sure", " you", "'ll", " see", " they", "'ve", " gone", ",", " it",
        "'s", " John", "'s"]
    # GPT-2's contractions are lower case only; GPT-4's ignore case
    assert split_text("IT'S", "gpt2") == ["IT", "'", "S"]
    assert split_text("IT'S", "gpt4") == ["IT", "'S"]


def test_gpt2_splits_numbers_and_punctuation():
    assert split_text("in 2024, 12345 items!", "gpt2") == [
        "in", " 2024", ",", " 12345", " items", "!"]
    # GPT-4 groups digits by three and glues one leading symbol to a word
    assert split_text("12345 (word", "gpt4") == ["123", "45", " (", "word"]


def test_gpt2_splits_whitespace_runs():
    # a run of spaces leaves its last space to the next word
    assert split_text("a   b", "gpt2") == ["a", "  ", " b"]
    assert split_text("a\n\n  b  ", "gpt2") == ["a", "\n\n ", " b", "  "]
    assert split_text("a\n\n  b", "gpt4") == ["a", "\n\n", " ", " b"]


def test_none_pattern_and_custom_regex():
    assert split_text("two words", "none") == ["two words"]
    assert split_text("a-b c", r"[a-z]+|\S") == ["a", "-", "b", "c"]
    assert resolve_pattern("gpt4") == GPT4_PATTERN


@pytest.mark.parametrize("bad", ["(unclosed", "(a)|b"])
def test_bad_regex_is_named(bad):
    with pytest.raises(ValueError, match=regex.escape(repr(bad))):
        resolve_pattern(bad)


whitespace_heavy_text = st.text(alphabet=st.sampled_from(list("ab1 '\n\r\t.,é\u00a0\u3000Z")),
                                max_size=60)


@given(whitespace_heavy_text, st.integers(1, 9))
@pytest.mark.parametrize("pattern", [GPT2_PATTERN, GPT4_PATTERN])
def test_streamed_chunks_equal_whole_text_chunks(pattern, text, block_chars):
    compiled = compile_pattern(pattern)
    blocks = [(text[i:i + block_chars], 0) for i in range(0, len(text), block_chars)]
    streamed = [chunk for chunks, _ in iter_chunk_lists(blocks, compiled) for chunk in chunks]
    assert streamed == compiled.findall(text)


def test_text_blocks_keep_bytes_and_name_bad_files(tmp_path):
    path = tmp_path / "t.txt"
    path.write_bytes("é\r\nx".encode() * 1000)
    blocks = list(iter_text_blocks(path, block_bytes=7))  # cuts inside "é"
    assert "".join(text for text, _ in blocks) == "é\r\nx" * 1000
    assert sum(n for _, n in blocks) == path.stat().st_size
    path.write_bytes(b"ok\xff")
    with pytest.raises(ValueError, match=r"t\.txt: not valid UTF-8 near byte 2"):
        list(iter_text_blocks(path))
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        list(iter_text_blocks(tmp_path / "missing.txt"))
