"""Split patterns: known GPT-2/GPT-4 splits, and the fast paths (ASCII twins, ASCII
stand-ins) and the safe cuts (before a word, after a line end) split exactly like the
patterns."""


import pytest
import regex
from hypothesis import given, strategies as st

from tinyllm.tokenizer.cuts import cut_after_a_line_end, cut_before_a_word
from tinyllm.tokenizer.fastsplit import STDLIB_POSSESSIVE, ChunkSplitter, ascii_split_pattern
from tinyllm.tokenizer.patterns import GPT2_PATTERN, GPT4_PATTERN, compile_pattern, resolve_pattern, split_text

# The fast paths are standard-library regexes with possessive quantifiers, which `re` has from
# Python 3.11; on 3.10 they are absent (test_no_fast_paths_without_possessive_quantifiers).
fast_paths = pytest.mark.skipif(not STDLIB_POSSESSIVE, reason="the stdlib fast paths need Python 3.11's re")


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


# Characters where the cuts and splits could go wrong: every kind of whitespace
# (standard-library-only \x1c-\x1f, \x85, no-break and ideographic spaces, line
# separators), letters ASCII and not (the long s and Kelvin sign fold to s and k),
# contraction letters, digits ASCII and not, symbols, the apostrophe.
tricky_text = st.lists(st.sampled_from(list(
    " \n\r\t\x0b\x0c\x1c\x1f\x85\xa0\u1680\u2028\u3000"
    "aZé\u017f\u212a'sStTlLvVreDdMm19\u0663\u00b2.,!-_(") + ["  ", "\n\n", " \n", "'s"]),
    max_size=40).map("".join)


@given(st.one_of(tricky_text, st.text(max_size=40)))
@pytest.mark.parametrize("pattern", [GPT2_PATTERN, GPT4_PATTERN], ids=["gpt2", "gpt4"])
def test_stand_in_split_equals_the_pattern_on_any_text(pattern, text):
    """Non-ASCII characters replaced by ASCII stand-ins, split by the twin, cut again from the text."""
    assert ChunkSplitter(pattern)(text) == compile_pattern(pattern).findall(text)


@fast_paths
def test_stand_ins_answer_the_pattern_s_tests_alike():
    split = ChunkSplitter(GPT4_PATTERN)
    assert split("\u017f'\u017f") == ["\u017f", "'\u017f"]          # the long s is an "s" to GPT-4's (?i:s)
    assert ChunkSplitter(GPT2_PATTERN)("\u017f'\u017f") == ["\u017f", "'", "\u017f"]   # GPT-2 is case-sensitive
    assert split("x\u00a0\u00a0y\u0663\u0663\u0663\u0663") == ["x", "\u00a0", "\u00a0y", "\u0663\u0663\u0663", "\u0663"]
    assert split("\u00e9\u2019\u2028") == ["\u00e9", "\u2019", "\u2028"]
    stand_ins = {chr(code): chr(split.stand_ins[code]) for code in (0xE9, 0x2019, 0xA0, 0x663, 0x17F, 0x2028)}
    assert stand_ins == {"\u00e9": "a", "\u2019": "!", "\u00a0": "\t", "\u0663": "0", "\u017f": "s", "\u2028": "\t"}


@given(st.one_of(tricky_text, st.text(max_size=40)), st.data())
@pytest.mark.parametrize("pattern", [GPT2_PATTERN, GPT4_PATTERN], ids=["gpt2", "gpt4"])
def test_a_cut_before_a_word_keeps_the_chunks(pattern, text, data):
    encoded = text.encode("utf-8", "surrogatepass")
    end = data.draw(st.integers(0, len(encoded)))
    cut = cut_before_a_word(encoded, end)
    compiled = compile_pattern(pattern)
    if cut < 0:
        assert not any(encoded[p] == 32 and 0x21 <= encoded[p - 1] <= 0x7E for p in range(1, end))
        return
    assert cut < end and encoded[cut] == 32 and 0x21 <= encoded[cut - 1] <= 0x7E
    before, after = (part.decode("utf-8", "surrogatepass") for part in (encoded[:cut], encoded[cut:]))
    assert compiled.findall(before) + compiled.findall(after) == compiled.findall(text)


@given(st.one_of(tricky_text, st.text(max_size=40)), st.data())
def test_a_cut_after_a_line_end_keeps_gpt4_s_chunks(text, data):
    encoded = text.encode("utf-8", "surrogatepass")
    end = data.draw(st.integers(0, len(encoded)))
    cut = cut_after_a_line_end(encoded, end)
    if cut < 0:
        return
    assert 0 < cut < end and encoded[cut - 1] == 10
    compiled = compile_pattern(GPT4_PATTERN)
    before, after = (part.decode("utf-8", "surrogatepass") for part in (encoded[:cut], encoded[cut:]))
    assert not after[0].isspace()
    assert compiled.findall(before) + compiled.findall(after) == compiled.findall(text)


@fast_paths
@given(st.one_of(st.text(alphabet=st.characters(max_codepoint=127), max_size=40),
                 tricky_text.map(lambda text: text.encode("ascii", "ignore").decode())))
@pytest.mark.parametrize("pattern", [GPT2_PATTERN, GPT4_PATTERN], ids=["gpt2", "gpt4"])
def test_ascii_split_equals_the_pattern_on_ascii_text(pattern, text):
    assert ascii_split_pattern(pattern).findall(text) == compile_pattern(pattern).findall(text)


@pytest.mark.skipif(STDLIB_POSSESSIVE, reason="Python 3.10 only: 3.11+ has the fast paths, tested above")
def test_no_fast_paths_without_possessive_quantifiers():
    """On Python 3.10 the tokenizer splits with `regex` alone: no ASCII twin, same chunks."""
    assert ascii_split_pattern(GPT4_PATTERN) is None and ascii_split_pattern(GPT2_PATTERN) is None
    assert split_text("IT'S 12345 ok", "gpt4") == ["IT", "'S", " ", "123", "45", " ok"]
