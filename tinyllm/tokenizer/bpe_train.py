"""Learning byte-level BPE merges from chunk counts, incrementally.

The textbook trainer recounts every adjacent pair of the corpus after each merge:
O(merges x corpus). This one counts the distinct chunks once (a corpus of a million
words has only tens of thousands of distinct ones), then after merging the pair
(a, b) -> X it visits only the chunks where (a, b) occurs and adjusts the counts of
the pairs around each occurrence:

    chunk "x a b y" (seen c times) becomes "x X y":
        (x, a) -= c   (a, b) -= c   (b, y) -= c      the pairs that disappear
        (x, X) += c   (X, y) += c                    the pairs that appear

Structures:
    words       list of token-id lists, one per distinct chunk
    counts      how often each distinct chunk occurs in the corpus
    pair_counts (int, int) -> int, occurrences of each adjacent pair, weighted by counts
    pair_where  (int, int) -> set of word indices that may hold the pair (it may have
                left some of them since; those are skipped when visited)
    heap        (-count, left, right) entries; an entry may be stale

Which pair to merge: the most frequent; among equally frequent pairs, the one whose
left token id is smallest, then whose right token id is smallest. Ids are ranks: the
256 single bytes in byte order, then merged tokens in the order they were made.

The heap is lazy. A pair's count only goes down, except for pairs that contain the
newest token, which did not exist before the merge and are pushed once the merge is
done. So every entry holds at least the pair's current count; when the top entry is
out of date it is pushed back with the current count, and when it is up to date it is
the true maximum.

A merge whose bytes equal an existing token (two paths to one string, like "a"+"bc"
and "ab"+"c") is skipped for good: a vocabulary in tiktoken's layout holds each byte
string once.

    >>> merges, vocab = train_bpe_merges({b"aaabdaaabac": 1}, num_merges=3)
    >>> merges
    [(97, 97), (97, 98), (256, 257)]
    >>> vocab[256:]
    [b'aa', b'ab', b'aaab']

(Wikipedia's example: Z=aa, Y=ab, X=ZY. After the first merge, (aa, a) and (a, b) both
occur twice; (a, b) wins the tie because id 97 < 256.)

Leaves out: reading and splitting text (bpe.py, textstream.py), encoding.
"""

from __future__ import annotations

import heapq
from collections import defaultdict
from typing import Mapping

from tqdm.auto import tqdm


def train_bpe_merges(chunk_counts: Mapping[bytes, int], num_merges: int,
                     progress: bool | str | None = False) -> tuple[list[tuple[int, int]], list[bytes]]:
    """Learn up to `num_merges` merges from distinct chunks and their counts.

    Returns (merges, vocab): merges[k] = (left id, right id) made token 256 + k, and
    vocab[i] is the bytes of token i (256 single bytes, then one per merge). Fewer
    merges come back when no pair is left to merge.
    """
    words: list[list[int]] = []  # distinct chunks of 2+ bytes, as token ids
    counts: list[int] = []
    for chunk, count in chunk_counts.items():
        if len(chunk) >= 2 and count > 0:
            words.append(list(chunk))
            counts.append(count)

    pair_counts: dict[tuple[int, int], int] = defaultdict(int)
    pair_where: dict[tuple[int, int], set[int]] = defaultdict(set)
    for index, word in enumerate(words):
        count = counts[index]
        for pair in zip(word, word[1:]):
            pair_counts[pair] += count
            pair_where[pair].add(index)
    heap = [(-count, left, right) for (left, right), count in pair_counts.items()]
    heapq.heapify(heap)

    vocab = [bytes([byte]) for byte in range(256)]  # id -> bytes
    known = set(vocab)  # bytes already made into a token
    merges: list[tuple[int, int]] = []
    bar = tqdm(total=num_merges, desc="BPE merges", unit="merge", disable=tqdm_disable(progress))
    while len(merges) < num_merges and heap:
        negative_count, left, right = heapq.heappop(heap)
        pair = (left, right)
        current = pair_counts.get(pair, 0)
        if current <= 0:
            pair_counts.pop(pair, None)
            continue
        if current != -negative_count:
            heapq.heappush(heap, (-current, left, right))
            continue
        merged = vocab[left] + vocab[right]
        if merged in known:
            continue  # another path already made these bytes a token; never merge this pair
        new_id = len(vocab)
        vocab.append(merged)
        known.add(merged)
        merges.append(pair)
        touched = _merge_pair_everywhere(words, counts, pair, new_id, pair_counts, pair_where)
        del pair_counts[pair]
        for new_pair in touched:
            count = pair_counts[new_pair]
            if count > 0:
                heapq.heappush(heap, (-count, new_pair[0], new_pair[1]))
        bar.update(1)
    bar.close()
    return merges, vocab


def _merge_pair_everywhere(words, counts, pair, new_id, pair_counts, pair_where) -> set:
    """Replace each occurrence of `pair` by `new_id` in the words that hold it, left to
    right, and adjust the pair counts around every occurrence. Returns the pairs that
    contain `new_id` (the only ones whose counts went up)."""
    left, right = pair
    touched: set[tuple[int, int]] = set()
    for index in pair_where.pop(pair):
        word = words[index]
        if left not in word:
            continue  # stale entry: an earlier merge took the pair away
        count = counts[index]
        merged_word: list[int] = []
        position, length = 0, len(word)
        while position < length:
            if word[position] == left and position + 1 < length and word[position + 1] == right:
                if merged_word:
                    before = merged_word[-1]
                    pair_counts[(before, left)] -= count
                    pair_counts[(before, new_id)] += count
                    pair_where[(before, new_id)].add(index)
                    touched.add((before, new_id))
                if position + 2 < length:
                    after = word[position + 2]
                    pair_counts[(right, after)] -= count
                    pair_counts[(new_id, after)] += count
                    pair_where[(new_id, after)].add(index)
                    touched.add((new_id, after))
                merged_word.append(new_id)
                position += 2
            else:
                merged_word.append(word[position])
                position += 1
        words[index] = merged_word
    return touched


def tqdm_disable(progress: bool | str | None) -> bool | None:
    """tqdm's `disable` for a `progress` setting: True or "bar" shows the bar, False, "none" or
    "log" hides it, None or "auto" shows it only on a terminal (tqdm's own rule)."""
    if progress in (None, "auto"):
        return None
    return progress not in (True, "bar")
