"""The character tokenizer: vocabulary, round trips, errors, files."""

import pytest
from hypothesis import given, strategies as st

from tinyllm.tokenizer import CharTokenizer, TokenizerFileError, load_tokenizer


def test_vocabulary_is_sorted_characters_then_specials():
    tokenizer = CharTokenizer.train(["hello", "<|endoftext|>world"],
                                    special_tokens=["<|endoftext|>"])
    assert tokenizer.chars == sorted(set("helloworld"))
    assert tokenizer.vocab_size == len(tokenizer.chars) + 1
    assert tokenizer.eot_id == len(tokenizer.chars)


@given(st.text(min_size=1))
def test_round_trip(text):
    tokenizer = CharTokenizer.train(text)
    assert tokenizer.decode(tokenizer.encode(text)) == text


@given(st.text(alphabet=st.characters(codec="utf-8"), min_size=1))
def test_save_load_round_trip(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("char") / "c.tok"
    tokenizer = CharTokenizer.train(text, special_tokens=["<|endoftext|>"])
    tokenizer.save(path)
    loaded = load_tokenizer(path)
    assert loaded.chars == tokenizer.chars and loaded.special_tokens == tokenizer.special_tokens
    assert loaded.hash() == tokenizer.hash()


def test_unknown_character_and_id_are_named():
    tokenizer = CharTokenizer.train("abc")
    with pytest.raises(ValueError, match=r"character 'z' at position 1 is not in"):
        tokenizer.encode("az")
    with pytest.raises(ValueError, match=r"token id 3 is not in this CharTokenizer"):
        tokenizer.decode([0, 3])


def test_malformed_char_file(tmp_path):
    path = tmp_path / "c.tok"
    CharTokenizer.train("ab").save(path)
    path.write_text(path.read_text().replace('1 "b"', '1 "bb"'))
    with pytest.raises(TokenizerFileError, match=r"c\.tok, line 4: expected one character"):
        load_tokenizer(path)
