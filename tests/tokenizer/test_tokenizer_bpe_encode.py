"""BPE encoding and decoding: round trips, agreement with a naive encoder, the three
merge implementations, special tokens, errors."""

import random

import numpy as np
import pytest
from hypothesis import given, strategies as st

from tinyllm.tokenizer import BPETokenizer
from tinyllm.tokenizer.patterns import compile_pattern
from tinyllm.tokenizer.rank_merge import (PairTable, merge_chunk, merge_long_chunk,
                                          merge_many_chunks)


def naive_encode_chunk(piece: bytes, ranks: dict[bytes, int]) -> list[int]:
    """tiktoken's rule, spelled out: a whole-chunk token maps directly; otherwise merge
    the lowest-rank adjacent pair (leftmost on a tie) until no pair is a token."""
    if piece in ranks:
        return [ranks[piece]]
    parts = [bytes([b]) for b in piece]
    while True:
        candidates = [(ranks[parts[i] + parts[i + 1]], i) for i in range(len(parts) - 1)
                      if parts[i] + parts[i + 1] in ranks]
        if not candidates:
            return [ranks[p] for p in parts]
        _, i = min(candidates)
        parts[i:i + 2] = [parts[i] + parts[i + 1]]


def shuffled_vocabulary(seed: int) -> dict[bytes, int]:
    """256 bytes plus random tokens over a small alphabet, ranks in random order: no
    guarantee that a token's parts rank below it (from_tiktoken must take any file)."""
    rng = random.Random(seed)
    tokens = {bytes([b]) for b in range(256)}
    while len(tokens) < 256 + 60:
        tokens.add(bytes(rng.choice(b"ab c") for _ in range(rng.randint(2, 5))))
    order = list(tokens)
    rng.shuffle(order)
    return {token: rank for rank, token in enumerate(order)}


@given(st.text())
def test_decode_inverts_encode(trained_bpe, text):
    assert trained_bpe.decode(trained_bpe.encode(text)) == text


@given(st.binary())
def test_encode_bytes_round_trips_any_bytes(trained_bpe, data):
    ids = trained_bpe.encode_bytes(data)
    assert trained_bpe.decode_bytes(ids) == data


@given(st.lists(st.integers(0, 599)))
def test_decode_bytes_is_the_concatenation_of_token_bytes(trained_bpe, ids):
    assert trained_bpe.decode_bytes(ids) == b"".join(trained_bpe.decode_bytes([i]) for i in ids)
    assert trained_bpe.decode(ids) == trained_bpe.decode_bytes(ids).decode("utf-8", "replace")


@given(st.text(alphabet="ab c\n", max_size=40))
def test_encoding_equals_naive_encoder(trained_bpe, text):
    ranks = trained_bpe.mergeable_ranks
    expected = [i for chunk in compile_pattern(trained_bpe.pattern).findall(text)
                for i in naive_encode_chunk(chunk.encode(), ranks)]
    assert trained_bpe.encode(text) == expected


@given(st.lists(st.binary(max_size=24).map(lambda b: bytes(x % 4 + 97 for x in b)), max_size=30),
       st.integers(0, 5))
def test_three_merge_implementations_agree_with_naive(pieces, seed):
    ranks = shuffled_vocabulary(seed)
    pieces = [p.replace(b"d", b" ") for p in pieces]
    expected = [tuple(naive_encode_chunk(p, ranks)) if p not in ranks or len(p) < 2
                else None for p in pieces]
    for piece, want in zip(pieces, expected):
        if want is None:  # whole-chunk tokens are looked up before merging
            continue
        assert merge_chunk(piece, ranks) == want
        assert merge_long_chunk(piece, ranks) == want
    many = merge_many_chunks(pieces, PairTable(ranks))
    assert [m for m, want in zip(many, expected) if want is not None] == \
        [want for want in expected if want is not None]


@given(st.lists(st.sampled_from(list("ab c\n\t\r\x1c\xa0\u3000é\u017f'sT1.,") + ["  ", "\n\n"]),
                max_size=40).map("".join))
@pytest.mark.parametrize("pattern", ["gpt2", "gpt4"])
def test_fast_splits_encode_like_the_naive_encoder(trained_bpe, pattern, text):
    """ASCII text (the twin) and other text (ASCII stand-ins), cold and then from the cache."""
    fresh = BPETokenizer(trained_bpe.mergeable_ranks, pattern)
    ranks = fresh.mergeable_ranks
    expected = [i for chunk in compile_pattern(fresh.pattern).findall(text)
                for i in naive_encode_chunk(chunk.encode(), ranks)]
    assert fresh.encode_ordinary(text) == expected
    assert fresh.encode_ordinary(text) == expected


def test_many_cache_misses_and_long_chunks_encode_like_single_ones(corpus_text, trained_bpe):
    ascii_text = corpus_text[100_000:130_000].encode("ascii", "ignore").decode() \
        + " " * 600 + "x" + "ab" * 300
    for text in (ascii_text, ascii_text.replace("e ", "é ")):  # the twin, then stand-ins
        fresh = BPETokenizer(trained_bpe.mergeable_ranks, trained_bpe.pattern)
        one_by_one = [i for chunk in compile_pattern(fresh.pattern).findall(text)
                      for i in naive_encode_chunk(chunk.encode(), fresh.mergeable_ranks)]
        assert fresh.encode(text) == one_by_one  # cold cache: the batched path
        assert fresh.encode(text) == one_by_one  # warm cache
    none = BPETokenizer(trained_bpe.mergeable_ranks, "none")
    assert none.encode(text[:700]) == naive_encode_chunk(text[:700].encode(), none.mergeable_ranks)


def test_a_full_cache_is_emptied_without_losing_ids(trained_bpe, monkeypatch):
    from tinyllm.tokenizer import bpe
    monkeypatch.setattr(bpe, "CHUNK_CACHE_ENTRIES", 4)
    tok = BPETokenizer(trained_bpe.mergeable_ranks, trained_bpe.pattern)
    for text in ("a b c", "a b c d e f", "é a b c", "é a b c d e f g"):
        chunks = compile_pattern(tok.pattern).findall(text)
        expected = [i for chunk in chunks
                    for i in naive_encode_chunk(chunk.encode(), tok.mergeable_ranks)]
        assert tok.encode(text) == expected
        assert len(tok._chunk_cache) <= max(4, len(chunks))


def test_special_tokens_follow_tiktoken_rules(trained_bpe):
    eot, pad = trained_bpe.special_tokens["<|endoftext|>"], trained_bpe.special_tokens["<|pad|>"]
    text = "a<|endoftext|>b<|pad|>"
    with pytest.raises(ValueError, match=r"special token '<\|endoftext\|>' at character 1.*"
                                         r"allowed_special=\{'<\|endoftext\|>'\}"):
        trained_bpe.encode(text)
    assert trained_bpe.encode(text, allowed_special="all") == [
        *trained_bpe.encode("a"), eot, *trained_bpe.encode("b"), pad]
    with pytest.raises(ValueError, match=r"<\|pad\|>"):
        trained_bpe.encode(text, allowed_special={"<|endoftext|>"})
    mixed = trained_bpe.encode(text, allowed_special={"<|endoftext|>"}, disallowed_special=())
    assert mixed[:3] == [*trained_bpe.encode("a"), eot, *trained_bpe.encode("b")][:3]
    assert pad not in mixed
    ordinary = trained_bpe.encode(text, disallowed_special=())
    assert ordinary == trained_bpe.encode_ordinary(text) and eot not in ordinary
    assert trained_bpe.decode(trained_bpe.encode(text, allowed_special="all")) == text
    with pytest.raises(ValueError, match="does not have"):
        trained_bpe.encode("x", allowed_special={"<|nope|>"})


def test_unknown_ids_are_named(trained_bpe):
    with pytest.raises(ValueError, match=r"token id 600 is not in this tokenizer \(ids run 0..599\)"):
        trained_bpe.decode([1, 600])
    with pytest.raises(ValueError, match="token id -1"):
        trained_bpe.decode([-1])
    assert trained_bpe.decode(np.array([104, 105])) == "hi"


def test_lone_surrogates_become_replacement_characters(trained_bpe):
    assert trained_bpe.decode(trained_bpe.encode("a\ud800b")) == "a\ufffdb"


def test_constructor_checks_the_vocabulary():
    ranks = {bytes([b]): b for b in range(256)}
    with pytest.raises(ValueError, match="lacks the single bytes"):
        BPETokenizer({b"a": 0}, "gpt2")
    with pytest.raises(ValueError, match="rank 5 is given to both"):
        BPETokenizer({**ranks, b"ab": 5}, "gpt2")
    with pytest.raises(ValueError, match="already the token"):
        BPETokenizer(ranks, "gpt2", special_tokens={"<|x|>": 3})
