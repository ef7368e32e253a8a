"""Streaming text: segments end at safe cuts, so their chunks are the chunks of the whole,
a segment depends only on where it starts, and text that is not UTF-8 is named."""

import pytest
from hypothesis import given, strategies as st

from tinyllm.tokenizer import CharTokenizer, TextFileError, read_text_file
from tinyllm.tokenizer.cuts import PatternCut
from tinyllm.tokenizer.patterns import GPT2_PATTERN, GPT4_PATTERN, compile_pattern
from tinyllm.tokenizer.prepare import segment_texts
from tinyllm.tokenizer.textstream import Piece, decode_piece, iter_segments

documents = st.lists(st.lists(st.sampled_from(list(" \n\t\xa0aZé\u017f's19\u0663.,-行。") + ["  ", "\n\n", " \n"]),
                              max_size=30).map("".join), min_size=1, max_size=3)


@given(documents, st.integers(1, 12), st.booleans())
@pytest.mark.parametrize("pattern", [GPT2_PATTERN, GPT4_PATTERN, r"\w+|\s+|[^\w\s]+"], ids=["gpt2", "gpt4", "custom"])
def test_segments_split_into_the_chunks_of_the_whole(pattern, texts, target, apart):
    sources = [text.encode() for text in texts]
    separator = None if apart else "\n\n"
    segments = list(iter_segments(sources, PatternCut(pattern), target, documents_apart=apart))
    pieces = [piece for segment in segments for piece in segment]
    for index, text in enumerate(texts):  # the pieces cover each document, in order
        assert b"".join(p.data for p in pieces if p.source == index) == text.encode()
    split = compile_pattern(pattern).findall
    got = [chunk for segment in segments for text in segment_texts(segment, separator) for chunk in split(text)]
    whole = [chunk for text in texts for chunk in split(text)] if apart else split("\n\n".join(texts))
    assert got == whole
    for k, segment in enumerate(segments):  # restarted at a segment's start, the rest comes out the same
        restarted = list(iter_segments(sources, PatternCut(pattern), target, apart,
                                       start=(segment[0].source, segment[0].offset)))
        assert restarted == segments[k:]


def test_segments_of_files_end_near_the_target_and_name_their_files(tmp_path):
    text = "word " * 2000
    (tmp_path / "a.txt").write_text(text)
    (tmp_path / "b.txt").write_text("tail")
    files = [str(tmp_path / "a.txt"), str(tmp_path / "b.txt")]
    segments = list(iter_segments(files, PatternCut(GPT4_PATTERN), 1000))
    assert all(995 <= len(s[0].data) < 1000 for s in segments[:-1])   # the last cut before 1000 bytes
    assert b"".join(s[0].data for s in segments) == text.encode()
    assert segments[-1][-1] == Piece(files[1], 1, 0, b"tail", True)   # the corpus ends within 1000 bytes
    joined = list(iter_segments(files, PatternCut(GPT4_PATTERN), 1000, documents_apart=False))
    assert [p.source for p in joined[-1]] == [0, 1]  # the last words of a.txt go with b.txt


def test_a_character_tokenizer_cuts_between_characters():
    data = "aé行🙂".encode()
    cut = CharTokenizer.train("x").stream_cut
    assert [cut(data, end) for end in range(len(data) + 1)] == [-1, -1, 1, 1, 3, 3, 3, 6, 6, 6, 6]


@pytest.mark.parametrize("content, message", [
    (b"ok\xff", r"t\.txt: not valid UTF-8 near byte 2"),
    (b"\xff\xfeh\x00i\x00", r"t\.txt: UTF-16 or UTF-32 text"),
    (b"ab\x00cd", r"t\.txt: binary data, .* \(a NUL byte at byte 2\)"),
])
def test_text_that_is_not_utf8_is_named(tmp_path, content, message):
    path = tmp_path / "t.txt"
    path.write_bytes(content)
    with pytest.raises(TextFileError, match=message):
        read_text_file(path)
    with pytest.raises(TextFileError, match=message):
        for segment in iter_segments([str(path)], PatternCut(GPT4_PATTERN), 4):
            [decode_piece(piece) for piece in segment]


def test_a_bad_byte_deep_in_a_file_is_named_by_its_offset(tmp_path):
    path = tmp_path / "big.txt"
    path.write_bytes(b"word " * 1000 + b"caf\xe9 " + b"word " * 10)
    with pytest.raises(TextFileError, match=r"big\.txt: not valid UTF-8 near byte 5003"):
        for segment in iter_segments([str(path)], PatternCut(GPT4_PATTERN), 100):
            [decode_piece(piece) for piece in segment]
