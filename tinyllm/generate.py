"""Sampling from a GPT: the context window, the KV-cache decoder and the draw.

    out = generate(model, idx, max_new_tokens=100, temperature=0.8, top_k=50, top_p=None, seed=0)
    out = model.generate(...)        # the same

Sampling: greedy (temperature 0), temperature, top-k, top-p (nucleus), from a NumPy
Generator seeded by `seed`, so the same call gives the same tokens. The next-token
distribution is computed in float64 where the model runs: on a GPU the logits never
leave it; the host draws one uniform number per row (the same numbers on every device)
and gets back one token id per row, the decoding step's only copy to the host.

KV cache: every attention layer keeps the keys and values of the positions it has seen
(tinyllm/kvcache.py); a decoding step feeds only the newest token and attends to the cached
keys, so a step costs one position instead of a whole window. The cached steps run
tinyllm/decode.py (the model's layers' Functions on raw arrays; for one row on the CPU, on
vectors) and check each step's new ids only, since the cache is the decoder's own. The
logits are those of a full recompute of the same context (tested at every step, in float64,
to ~1e-10). `use_cache=False` calls the model's own forward: the reference both are
compared with, and what a model whose blocks decode.py cannot feed from a cache gets
anyway (`decode.cacheable`).

The context window past block_size (one rule for both paths, so `use_cache` changes the
speed, never the result). A model sees at most block_size = W positions. Simply keeping
"the last W tokens" (nanoGPT) would need a full recompute at every step once the text is
longer than W: dropping the oldest token changes the hidden states, hence the cached keys
and values, of every later position in every layer above the first (they attended to the
dropped token), for learned and rotary positions alike -- re-encoding RoPE angles cannot
fix that. So when the cache is full we re-encode: the cache is emptied and refilled with
the last `window_keep` tokens (default W // 2) in one forward pass, positions counted from
0 again, and decoding goes on from there. The model therefore conditions on the last
L(n) tokens of a text of n tokens:

    L(n) = n                                           for n <= W
    L(n) = keep + ((n - W - 1) mod (W - keep + 1))     for n > W   (keep, keep+1, ..., W, keep, ...)

`context_length(n, W, keep)` computes it; without the cache each step recomputes exactly
that window. window_keep = W reproduces nanoGPT's "last W tokens" (every step then refills).

Left out: beam search, repetition penalties, per-row prompts of different lengths (the
rows of idx share one length), speculative decoding.
"""
from __future__ import annotations

import numpy as np

from autograd import backend, no_grad
from autograd.layers.softmax import stable_softmax
from autograd.tensor import Tensor

from . import decode
from .config import check_token_ids
from .kvcache import KVCache

__all__ = ["Decoder", "KVCache", "context_length", "default_window_keep", "filter_logits", "generate",
           "next_token_logits", "sample_next"]   # KVCache lives in kvcache.py; importing it from here still works


# ---- the context window ------------------------------------------------------------------------

def default_window_keep(block_size: int) -> int:
    return max(1, block_size // 2)


def context_length(n: int, block_size: int, keep: int) -> int:
    """How many of the last tokens of an n-token text the model conditions on (module docstring)."""
    if n <= block_size:
        return n
    return keep + (n - block_size - 1) % (block_size - keep + 1)


# ---- sampling ------------------------------------------------------------------------------------

def check_sampling_args(max_new_tokens, temperature, top_k, top_p) -> None:
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, (int, np.integer)) or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens={max_new_tokens!r} must be a non-negative integer")
    if not (isinstance(temperature, (int, float)) and temperature >= 0 and np.isfinite(temperature)):
        raise ValueError(f"temperature={temperature!r} must be a finite number >= 0 (0 = greedy)")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 1):
        raise ValueError(f"top_k={top_k!r} must be a positive integer or None (no top-k filter)")
    if top_p is not None and not (isinstance(top_p, (int, float)) and 0 < top_p <= 1):
        raise ValueError(f"top_p={top_p!r} must be in (0, 1] or None (no nucleus filter)")


def filter_logits(logits: np.ndarray, top_k: int | None = None, top_p: float | None = None) -> np.ndarray:
    """Set to -inf every logit outside the top k and outside the nucleus of mass top_p.

    logits: (B, V) float64 (NumPy, or on the device: the result stays there). Top-k keeps every
    token tied with the k-th largest. Top-p keeps the most likely tokens, in order, until their
    probability reaches top_p (at least one).
    """
    xp = backend.get_array_module(logits)
    return _filter_logits_(xp.array(logits, dtype=np.float64), top_k, top_p)


def _filter_logits_(z, top_k: int | None, top_p: float | None):
    """filter_logits in place on a float64 xp array z (B, V) the caller owns; returns z."""
    xp = backend.get_array_module(z)
    V = z.shape[-1]
    if top_k is not None and top_k < V:
        kth = xp.partition(z, V - top_k, axis=-1)[:, V - top_k:V - top_k + 1]    # (B, 1)
        xp.copyto(z, -np.inf, where=z < kth)
    if top_p is not None and top_p < 1.0:
        probs = stable_softmax(z)
        stable = {"kind": "stable"} if xp is np else {}                          # CuPy's sorts are stable
        order = xp.argsort(-probs, axis=-1, **stable)                            # (B, V) most likely first
        sorted_probs = xp.take_along_axis(probs, order, axis=-1)
        mass_before = xp.cumsum(sorted_probs, axis=-1) - sorted_probs            # mass of strictly likelier tokens
        keep_sorted = mass_before < top_p
        keep_sorted[:, 0] = True
        keep = xp.zeros_like(keep_sorted)
        keep[xp.arange(z.shape[0])[:, None], order] = keep_sorted                # back to vocabulary order
        z[~keep] = -np.inf
    return z


def sample_next(logits, temperature: float, top_k: int | None, top_p: float | None,
                rng: np.random.Generator):
    """One token id per row of logits (B, V): argmax when temperature is 0, else a draw.

    The ids are an array on the logits' device; the uniform numbers come from `rng` on the
    host (one per row, copied over), so the draw is the same on every device for the same logits.
    """
    xp = backend.get_array_module(logits)
    logits = xp.asarray(logits, dtype=np.float64)
    if temperature == 0:
        return logits.argmax(axis=-1)
    z = _filter_logits_(logits / temperature, top_k, top_p)                     # (B, V), a fresh array
    z -= z.max(axis=-1, keepdims=True)
    weights = xp.exp(z, out=z)                  # softmax without the division: the draw scales u by the total
    # np.add.accumulate: np.cumsum's sums without its Python wrapper (3 us of ~50 a step)
    cdf = np.add.accumulate(weights, axis=-1) if xp is np else xp.cumsum(weights, axis=-1)
    u = xp.asarray(rng.random(weights.shape[0])[:, None]) * cdf[:, -1:]          # (B, 1) in [0, total)
    return (cdf > u).argmax(axis=-1)                                             # first token whose cdf passes u


# ---- decoding --------------------------------------------------------------------------------------

def next_token_logits(model, ids):
    """Logits for the token after ids (B, T), float64 (B, V) on the model's device, from the model's
    own forward: the pieces of GPT.forward, with the head applied to the last position only."""
    x = model.embed(ids)                                                         # (B, T, C)
    for block in model.blocks:
        x = block(x)
    logits = model.head(x[:, -1:, :])                                            # (B, 1, V)
    return logits.data[:, 0].astype(np.float64)


class Decoder:
    """Next-token logits for a growing sequence, with or without a KV cache (the same numbers).

        decoder = Decoder(model, batch_size=B)
        logits = decoder.logits(seq, n)     # (B, V) float64 on the model's device: token n given seq[:, :n]

    Calls with n growing by one reuse the cache (one new position per call); any other call,
    and a full cache, refills it from the context window (module docstring). Without the
    cache (use_cache=False, or a model decode.py cannot feed from one) every call recomputes
    the window. `refills` and `steps` count the two kinds of cached calls (for tests and
    measurements).
    """

    def __init__(self, model, batch_size: int, use_cache: bool = True, window_keep: int | None = None,
                 max_length: int | None = None):
        W = model.config.block_size
        keep = default_window_keep(W) if window_keep is None else window_keep
        if isinstance(keep, bool) or not isinstance(keep, (int, np.integer)) or not 1 <= keep <= W:
            raise ValueError(f"window_keep={window_keep!r} must be an integer in [1, block_size={W}]")
        self.model, self.block_size, self.keep = model, W, int(keep)
        use_cache = use_cache and decode.cacheable(model)
        self.cache = KVCache.for_model(model, batch_size, max_length) if use_cache else None
        self.device = model.device
        self.one_row = batch_size == 1 and self.device == "cpu"   # steps through decode.forward_vector
        self.cached_until = 0          # the cache holds the window that ends before token cached_until
        self.refills = self.steps = 0

    def logits(self, seq, n: int):
        L = context_length(n, self.block_size, self.keep)
        window = seq[:, n - L:n]
        if self.cache is None:
            return next_token_logits(self.model, window)                        # the reference: model forward
        if n == self.cached_until + 1 and self.cache.length == L - 1 and self.cache.length > 0:
            self.steps += 1                                                     # one new position:
            self.cached_until = n                                               # the cache is ours, so
            new_ids = window[:, -1:]                                            # only its ids need a check
            V = self.model.config.vocab_size
            if self.one_row:
                token = int(new_ids[0, 0])
                if not 0 <= token < V:
                    check_token_ids(new_ids, V)                                 # the error, with its message
                return decode.forward_vector(self.model, token, self.cache, check=False)[None].astype(np.float64)
            check_token_ids(new_ids, V)
            logits = decode.forward(self.model, backend.to_device(new_ids, self.device), self.cache,
                                    last_only=True, check=False)                # (B, 1, V)
        else:
            self.refills += 1
            self.cache.reset()                                                  # prompt, or window refill
            logits = decode.forward(self.model, window, self.cache, last_only=True)
            self.cached_until = n
        return logits[:, 0].astype(np.float64)


def generate(model, idx, max_new_tokens: int = 100, temperature: float = 0.8, top_k: int | None = 50,
             top_p: float | None = None, seed: int = 0, eos_id: int | None = None, use_cache: bool = True,
             stream=None, window_keep: int | None = None) -> np.ndarray:
    """Continue the token ids idx by up to max_new_tokens sampled tokens.

    idx: ids (T,) or (B, T), T >= 1, as a list, NumPy/CuPy array or Tensor.
    temperature: 0 = greedy (argmax); top_k / top_p: filters (None = off); seed: the draws.
    eos_id: stop once every row has produced it (rows already done are padded with eos_id).
    use_cache: decode with a KV cache (same result, faster). stream: called after each step
    with the new token (an int for 1-D idx, a list of B ints for 2-D idx).
    window_keep: tokens kept when the context passes block_size (module docstring; default W // 2).
    Returns a NumPy int64 array shaped like idx, with the new tokens appended.
    The model runs in eval mode (no dropout) under no_grad, and its mode is restored after.
    """
    check_sampling_args(max_new_tokens, temperature, top_k, top_p)
    idx = idx.data if isinstance(idx, Tensor) else idx
    ids = backend.to_numpy(idx) if hasattr(idx, "shape") else np.asarray(idx)
    one_row = ids.ndim == 1
    seq = ids[None, :] if one_row else ids
    if seq.ndim != 2 or seq.shape[1] == 0 or not np.issubdtype(seq.dtype, np.integer):
        raise ValueError(f"generate: idx must hold at least one integer token id, shaped (T,) or (B, T); got "
                         f"shape {tuple(ids.shape)} dtype {ids.dtype} (start from an end-of-text id if you have no prompt)")
    if eos_id is not None and not 0 <= eos_id < model.config.vocab_size:
        raise ValueError(f"generate: eos_id={eos_id} is outside the vocabulary [0, {model.config.vocab_size})")

    rng = np.random.default_rng(seed)
    B = seq.shape[0]
    out = np.empty((B, seq.shape[1] + max_new_tokens), dtype=np.int64)
    out[:, :seq.shape[1]] = seq
    n = seq.shape[1]
    done = np.zeros(B, dtype=bool)
    was_training = model.training
    model.eval()
    try:
        with no_grad():
            decoder = Decoder(model, B, use_cache, window_keep, max_length=out.shape[1])
            for _ in range(max_new_tokens):
                token = sample_next(decoder.logits(out, n), temperature, top_k, top_p, rng)
                token = backend.to_numpy(token)        # on a GPU the step's one copy to the host: B ids
                if eos_id is not None:
                    token = np.where(done, eos_id, token)
                    done |= token == eos_id
                out[:, n] = token
                n += 1
                if stream is not None:
                    stream(int(token[0]) if one_row else [int(t) for t in token])
                if eos_id is not None and done.all():
                    break
    finally:
        model.train(was_training)
    result = out[:, :n]
    return result[0] if one_row else result
