"""tiktoken's merge rule for one chunk, written three ways for three workloads.

The rule: start from the chunk's single bytes; while some adjacent pair of parts
joins into a token, merge the pair whose joined bytes have the lowest rank (the
leftmost such pair on a tie). The ids are the ranks of the final parts.

    ranks: a=97, b=98, aa=256, ab=257, aaab=258
    "aaab": [a, a, a, b] -> [aa, a, b] -> [aa, ab] -> [aaab]  -> [258]

- `merge_chunk`: the plain loop, a list of part boundaries and a list of pair ranks;
  O(L^2) but the fastest for the short chunks text is made of. The reference.
- `merge_long_chunk`: the same rule with a heap of candidate pairs and a linked list
  of parts, O(L log L), for long chunks (a run of 10,000 spaces, the "none" pattern).
- `merge_many_chunks`: thousands of chunks at once with NumPy, one merge per chunk
  per round, for the first encoding of a large text, when most chunks miss the cache.

Leaves out: splitting text into chunks and caching (bpe.py).
"""

from __future__ import annotations

import heapq
from typing import Mapping, Sequence

import numpy as np

NO_RANK = 1 << 62  # larger than any rank: "these two parts do not join into a token"


def merge_chunk(piece: bytes, ranks: Mapping[bytes, int]) -> tuple[int, ...]:
    """The rule on one chunk's bytes, with two lists:

        boundaries = [0, 1, 2, ..., L]   part k is piece[boundaries[k]:boundaries[k + 1]]
        pair_ranks[k] = rank of parts k and k + 1 joined, NO_RANK if that is no token

    Merging pair k drops boundary k + 1 and re-ranks the pairs on either side.

        >>> merge_chunk(b"aaab", {b"a": 97, b"b": 98, b"aa": 256, b"ab": 257, b"aaab": 258})
        (258,)
    """
    if len(piece) < 2:
        return tuple(ranks[piece[i:i + 1]] for i in range(len(piece)))
    boundaries = list(range(len(piece) + 1))
    pair_ranks = [ranks.get(piece[i:i + 2], NO_RANK) for i in range(len(piece) - 1)]
    while pair_ranks:
        best = min(pair_ranks)
        if best == NO_RANK:
            break
        k = pair_ranks.index(best)  # the leftmost pair of lowest rank
        del boundaries[k + 1]
        del pair_ranks[k]
        if k < len(pair_ranks):  # the merged part and the part after it
            pair_ranks[k] = ranks.get(piece[boundaries[k]:boundaries[k + 2]], NO_RANK)
        if k > 0:  # the part before it and the merged part
            pair_ranks[k - 1] = ranks.get(piece[boundaries[k - 1]:boundaries[k + 1]], NO_RANK)
    return tuple(ranks[piece[start:end]] for start, end in zip(boundaries, boundaries[1:]))


def merge_long_chunk(piece: bytes, ranks: Mapping[bytes, int]) -> tuple[int, ...]:
    """The rule in O(L log L). Parts are a linked list of start offsets; the heap holds
    (rank, start) for candidate pairs, so the lowest rank comes first and then the
    leftmost. An entry is stale when its part has been swallowed or its pair's bytes
    changed since it was pushed (then their rank differs); stale entries are skipped.

        >>> merge_long_chunk(b"aaab", {b"a": 97, b"b": 98, b"aa": 256, b"ab": 257, b"aaab": 258})
        (258,)
    """
    length = len(piece)
    next_start = list(range(1, length + 1))  # start of a part -> start of the next part
    previous_start = list(range(-1, length - 1))  # start of a part -> start of the previous
    alive = [True] * length  # whether a part starts at this offset

    def pair_rank(start: int) -> int:
        middle = next_start[start]
        if middle >= length:
            return NO_RANK
        return ranks.get(piece[start:next_start[middle]], NO_RANK)

    heap = [(rank, start) for start in range(length - 1)
            if (rank := pair_rank(start)) != NO_RANK]
    heapq.heapify(heap)
    while heap:
        rank, start = heapq.heappop(heap)
        if not alive[start] or pair_rank(start) != rank:
            continue
        swallowed = next_start[start]
        alive[swallowed] = False
        next_start[start] = next_start[swallowed]
        if next_start[start] < length:
            previous_start[next_start[start]] = start
        for candidate in (start, previous_start[start]):
            if candidate >= 0 and (new_rank := pair_rank(candidate)) != NO_RANK:
                heapq.heappush(heap, (new_rank, candidate))
    ids = []
    start = 0
    while start < length:
        ids.append(ranks[piece[start:next_start[start]]])
        start = next_start[start]
    return tuple(ids)


class PairTable:
    """Every pair of tokens that joins into a token, as sorted NumPy keys.

    key = left_id * size + right_id  ->  rank of the joined bytes

    Parts are always tokens, so these are the only pairs the rule can merge. Built
    once per vocabulary from each token's splits into two tokens (for "abc": "a"+"bc"
    and "ab"+"c"). Pairs that join into no token get NO_PAIR, a number above every
    rank that still leaves room to pack (rank, position) into one int64.
    """

    NO_PAIR = (1 << 31) - 1

    def __init__(self, ranks: Mapping[bytes, int]):
        self.size = max(ranks.values()) + 1
        if self.size >= self.NO_PAIR:
            raise ValueError(f"ranks run up to {self.size - 1}; batched merging needs them "
                             f"below {self.NO_PAIR}")
        keys: list[int] = []
        merged_ranks: list[int] = []
        for token, rank in ranks.items():
            for cut in range(1, len(token)):
                left, right = ranks.get(token[:cut]), ranks.get(token[cut:])
                if left is not None and right is not None:
                    keys.append(left * self.size + right)
                    merged_ranks.append(rank)
        # a last key above every real one, so a search never runs off the end
        keys.append(np.iinfo(np.int64).max)
        merged_ranks.append(self.NO_PAIR)
        order = np.argsort(np.asarray(keys, dtype=np.int64), kind="stable")
        self.keys = np.asarray(keys, dtype=np.int64)[order]  # (P + 1,) sorted
        self.merged_ranks = np.asarray(merged_ranks, dtype=np.int64)[order]  # (P + 1,)
        self.byte_ranks = np.array([ranks[bytes([b])] for b in range(256)], dtype=np.int64)
        # (256, 256) rank of two single bytes joined: the first lookups, without a search
        self.byte_pair_ranks = np.full((256, 256), self.NO_PAIR, dtype=np.int64)
        for token, rank in ranks.items():
            if len(token) == 2:
                self.byte_pair_ranks[token[0], token[1]] = rank

    def lookup(self, left: np.ndarray, right: np.ndarray) -> np.ndarray:
        """Rank of each joined pair, NO_PAIR where the pair is no token."""
        keys = left * self.size + right
        where = np.searchsorted(self.keys, keys)
        return np.where(self.keys[where] == keys, self.merged_ranks[where], self.NO_PAIR)


def merge_many_chunks(pieces: Sequence[bytes], table: PairTable) -> list[tuple[int, ...]]:
    """The rule on many chunks at once: each round merges, in every unfinished chunk,
    its leftmost lowest-rank pair (exactly the step `merge_chunk` takes), and retires
    chunks with nothing left to merge.

    Working arrays (the unfinished chunks' parts laid end to end: N parts, C chunks):
        part_ids   (N,) current token id of each part
        pair_ranks (N,) rank of the part joined with the next part of its chunk,
                        NO_PAIR at a chunk's last part
        alive      (C,) index into `pieces` of each unfinished chunk
        counts     (C,) number of parts of each unfinished chunk

    One minimum per chunk of (pair rank << 32 | position) finds its lowest rank and
    its leftmost place together. A merge changes only the pairs on either side of
    the merged part, so only those two are looked up again.

        >>> table = PairTable({**{bytes([b]): b for b in range(256)}, b"aa": 256, b"ab": 257})
        >>> merge_many_chunks([b"aaab", b"ba"], table)
        [(256, 257), (98, 97)]
    """
    no_pair = table.NO_PAIR
    results: list[tuple[int, ...]] = [()] * len(pieces)
    lengths = np.fromiter(map(len, pieces), dtype=np.int64, count=len(pieces))
    alive = np.flatnonzero(lengths)  # (C,)
    counts = lengths[alive]  # (C,)
    data = np.frombuffer(b"".join(pieces), dtype=np.uint8)
    part_ids = table.byte_ranks[data]  # (N,)
    pair_ranks = np.full(data.size, no_pair, dtype=np.int64)  # (N,)
    pair_ranks[:-1] = table.byte_pair_ranks[data[:-1], data[1:]]
    ends = np.cumsum(counts)  # (C,) one past each chunk's last part
    pair_ranks[ends - 1] = no_pair
    while alive.size:
        starts = ends - counts
        best = np.minimum.reduceat((pair_ranks << 32) | np.arange(part_ids.size), starts)
        best_ranks = best >> 32  # (C,)
        merge_offsets = (best & 0xFFFFFFFF) - starts  # (C,) place of the merge in its chunk
        finished = best_ranks == no_pair
        if finished.any():
            done = np.repeat(finished, counts)  # (N,)
            done_ids = part_ids[done].tolist()
            bounds = np.cumsum(counts[finished]).tolist()
            for index, start, end in zip(alive[finished].tolist(), [0] + bounds, bounds):
                results[index] = tuple(done_ids[start:end])
            part_ids, pair_ranks = part_ids[~done], pair_ranks[~done]
            going = ~finished
            alive, counts = alive[going], counts[going]
            best_ranks, merge_offsets = best_ranks[going], merge_offsets[going]
            ends = np.cumsum(counts)
            starts = ends - counts
        merge_at = starts + merge_offsets  # (C,) increasing
        part_ids[merge_at] = best_ranks  # the joined token's id is its rank
        keep = np.ones(part_ids.size, dtype=bool)
        keep[merge_at + 1] = False  # the part swallowed by the merge
        part_ids, pair_ranks = part_ids[keep], pair_ranks[keep]
        counts = counts - 1
        ends = np.cumsum(counts)
        merged = merge_at - np.arange(merge_at.size)  # where the merged parts are now
        has_after = merged + 1 < ends
        after = merged[has_after]
        pair_ranks[merged] = no_pair
        pair_ranks[after] = table.lookup(part_ids[after], part_ids[after + 1])
        before = merged[merged > ends - counts] - 1
        pair_ranks[before] = table.lookup(part_ids[before], part_ids[before + 1])
    return results
