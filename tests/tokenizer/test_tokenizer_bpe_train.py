"""BPE training: the Wikipedia example, agreement with a naive trainer, inputs and errors."""

from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given, strategies as st

from tinyllm.tokenizer import BPETokenizer
from tinyllm.tokenizer.bpe_train import train_bpe_merges
from tinyllm.tokenizer.patterns import split_text


def naive_train(chunk_counts: dict[bytes, int], num_merges: int):
    """The textbook trainer: recount every pair after every merge. Same tie rule as
    the real one (most frequent, then smallest left id, then smallest right id) and
    the same skip of pairs whose bytes are already a token."""
    words = {chunk: list(chunk) for chunk in chunk_counts}
    vocab = [bytes([b]) for b in range(256)]
    skipped = set()
    merges = []
    while len(merges) < num_merges:
        pair_counts = Counter()
        for chunk, word in words.items():
            for pair in zip(word, word[1:]):
                pair_counts[pair] += chunk_counts[chunk]
        candidates = [p for p, c in pair_counts.items() if c > 0 and p not in skipped]
        if not candidates:
            break
        best = max(candidates, key=lambda p: (pair_counts[p], -p[0], -p[1]))
        merged = vocab[best[0]] + vocab[best[1]]
        if merged in vocab:
            skipped.add(best)
            continue
        new_id = len(vocab)
        vocab.append(merged)
        merges.append(best)
        for chunk, word in words.items():
            out, i = [], 0
            while i < len(word):
                if i + 1 < len(word) and (word[i], word[i + 1]) == best:
                    out.append(new_id)
                    i += 2
                else:
                    out.append(word[i])
                    i += 1
            words[chunk] = out
    return merges, vocab


def test_wikipedia_example():
    # https://en.wikipedia.org/wiki/Byte_pair_encoding: aaabdaaabac -> Z=aa, Y=ab, X=ZY
    tokenizer = BPETokenizer.train("aaabdaaabac", vocab_size=259, pattern="none", progress=False)
    assert [tokenizer.decode_bytes([i]) for i in (256, 257, 258)] == [b"aa", b"ab", b"aaab"]
    assert tokenizer.encode("aaabdaaabac") == [258, ord("d"), 258, ord("a"), ord("c")]


@given(st.lists(st.text(alphabet="abc ", min_size=1, max_size=12), min_size=1, max_size=8),
       st.integers(0, 30))
def test_incremental_trainer_matches_naive_trainer(texts, num_merges):
    chunk_counts = Counter()
    for text in texts:
        chunk_counts.update(chunk.encode() for chunk in split_text(text, "gpt2"))
    chunk_counts.update(text.encode() for text in texts)  # whole texts too: long, repetitive
    assert train_bpe_merges(chunk_counts, num_merges) == naive_train(chunk_counts, num_merges)


@given(st.binary(min_size=2, max_size=40), st.integers(1, 20))
def test_trainer_matches_naive_on_raw_bytes(data, num_merges):
    counts = {data: 3, data[::-1]: 1}
    assert train_bpe_merges(counts, num_merges) == naive_train(counts, num_merges)


def test_duplicate_bytes_are_never_two_tokens():
    # "a"+"bc" and "ab"+"c" both make "abc": the second path is skipped
    counts = {b"abc": 1, b"xbc": 5, b"abd": 4, b"abcabc": 0}
    merges, vocab = train_bpe_merges(counts, 10)
    assert len(vocab) == len(set(vocab))
    assert (merges, vocab) == naive_train(counts, 10)


def test_vocab_size_counts_special_tokens_and_small_sizes_are_refused():
    tokenizer = BPETokenizer.train("hello hello", vocab_size=260,
                                   special_tokens=["<|endoftext|>"], progress=False)
    assert tokenizer.vocab_size == 260 and tokenizer.eot_id == 259
    with pytest.raises(ValueError, match="vocab_size=255 is too small"):
        BPETokenizer.train("x", vocab_size=255)
    with pytest.raises(ValueError, match="at least 257"):
        BPETokenizer.train("x", vocab_size=256, special_tokens=["<|endoftext|>"])


def test_corpus_running_out_of_pairs_gives_smaller_vocabulary():
    tokenizer = BPETokenizer.train("abab", vocab_size=1000, pattern="none", progress=False)
    assert tokenizer.vocab_size == 258  # "ab", then "abab"


def test_special_tokens_are_cut_out_of_the_training_text():
    text = "<|endoftext|>" * 50 + "hi"
    tokenizer = BPETokenizer.train(text, vocab_size=300, pattern="none",
                                   special_tokens=["<|endoftext|>"], progress=False)
    learned = {tokenizer.decode_bytes([i]) for i in range(256, tokenizer.vocab_size - 1)}
    assert learned == {b"hi"}


def test_training_on_files_equals_training_on_text(tmp_path, corpus_text):
    text = corpus_text[:20_000] + "<|endoftext|>" + corpus_text[20_000:30_000]
    halves = [text[:12_345], text[12_345:]]
    paths = []
    for i, half in enumerate(halves):
        paths.append(tmp_path / f"part{i}.txt")
        paths[-1].write_text(half, encoding="utf-8", newline="")
    options = dict(vocab_size=400, pattern="gpt2", special_tokens=["<|endoftext|>"], progress=False)
    from_text = BPETokenizer.train(text, **options)
    from_files = BPETokenizer.train_from_files([str(p) for p in paths], block_bytes=999, **options)
    # the file boundary cuts the text, which one text does not: train on the halves as texts
    from_texts = BPETokenizer.train(halves, **options)
    assert from_files.mergeable_ranks == from_texts.mergeable_ranks
    assert BPETokenizer.train(paths, block_bytes=999, **options).mergeable_ranks == \
        from_files.mergeable_ranks
    assert len(from_text.mergeable_ranks) == len(from_files.mergeable_ranks)


def test_training_rejects_bad_inputs(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        BPETokenizer.train(Path(tmp_path / "nope.txt"), vocab_size=300)
    with pytest.raises(TypeError, match="int"):
        BPETokenizer.train(["ok", 3], vocab_size=300)
    with pytest.raises(ValueError, match="not a valid regex"):
        BPETokenizer.train("x", vocab_size=300, pattern="(")
