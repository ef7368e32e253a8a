"""autograd.functional (F): the layers a language model needs, as functions on Tensors.

Most are hand-derived Functions from `autograd.layers` (forward and backward side by
side, with a page each in docs/derivations/). Where a layer has a `fused` flag,
`fused=False` builds the same result from primitives instead: the reference the
hand-derived backward is tested against, and a readable statement of the math.

    F.softmax(x, axis=-1)            F.log_softmax(x, axis=-1)
    F.cross_entropy(logits, targets, ignore_index=-100, reduction="mean")
    F.gelu(x, approximate="tanh")    F.silu(x)    F.relu(x)
    F.dropout(x, p, training=True, generator=None)
    F.embedding(idx, weight)         F.linear(x, weight, bias=None)

Left out: convolutions, pooling, losses other than cross-entropy.
"""
from __future__ import annotations


import numpy as np

from . import backend, ops
from .layers.activation import GELU_A, GELU_K, GeluErf, GeluTanh, Silu
from .layers.cross_entropy import CrossEntropy, check_reduction, check_targets
from .layers.dropout import Dropout
from .layers.embedding import Embedding
from .layers.linear import Linear
from .layers.softmax import LogSoftmax, Softmax
from .tensor import Tensor

relu = ops.relu
sigmoid = ops.sigmoid
tanh = ops.tanh

_default_generators: dict = {}


def manual_seed(seed: int) -> None:
    """Reseed the default generators used by dropout when no generator is passed."""
    _default_generators.clear()
    _default_generators["seed"] = seed


def default_generator(device: str = "cpu"):
    if device not in _default_generators:
        _default_generators[device] = backend.new_generator(_default_generators.get("seed", 0), device)
    return _default_generators[device]


# ---- softmax family --------------------------------------------------------------------

def softmax(x: Tensor, axis: int = -1, fused: bool = True) -> Tensor:
    if fused:
        return Softmax.apply(x, axis=axis)
    e = ops.exp(x - ops.max(x, axis=axis, keepdims=True).detach())  # the max is a constant shift
    return e / ops.sum(e, axis=axis, keepdims=True)


def log_softmax(x: Tensor, axis: int = -1, fused: bool = True) -> Tensor:
    if fused:
        return LogSoftmax.apply(x, axis=axis)
    shifted = x - ops.max(x, axis=axis, keepdims=True).detach()
    return shifted - ops.log(ops.sum(ops.exp(shifted), axis=axis, keepdims=True))


def cross_entropy(logits: Tensor, targets, ignore_index: int = -100, reduction: str = "mean",
                  fused: bool = True) -> Tensor:
    """Mean (or sum, or per-position) negative log-likelihood of integer `targets` under softmax(logits).

    logits: (..., V) floats; targets: (...) ints in [0, V) or ignore_index.
    """
    targets = targets if isinstance(targets, Tensor) else Tensor(targets)
    check_targets(logits.shape, targets.shape)
    check_reduction(reduction)
    if not np.issubdtype(targets.dtype, np.integer):
        raise TypeError(f"cross_entropy: targets must be integers, got dtype {targets.dtype}")
    if fused:
        return CrossEntropy.apply(logits, targets, ignore_index=ignore_index, reduction=reduction)
    xp = logits.xp
    V = logits.shape[-1]
    t = targets.data.reshape(-1)
    valid = t != ignore_index
    logp = log_softmax(logits.reshape(-1, V), axis=-1, fused=False)       # (N, V)
    picked = logp[xp.arange(t.shape[0]), xp.where(valid, t, 0)]           # (N,)
    losses = -ops.where(valid, picked, 0.0)
    if reduction == "none":
        return losses.reshape(targets.shape)
    if reduction == "sum":
        return losses.sum()
    return losses.sum() / max(int(valid.sum()), 1)


# ---- activations -----------------------------------------------------------------------

def gelu(x: Tensor, approximate: str = "tanh", fused: bool = True) -> Tensor:
    """GELU; approximate="tanh" (GPT-2's) or "none" (exact, with erf)."""
    if approximate not in ("tanh", "none"):
        raise ValueError(f"gelu: approximate={approximate!r}; use 'tanh' or 'none'")
    if approximate == "none":
        if fused:
            return GeluErf.apply(x)
        raise ValueError("gelu: the exact (erf) form has no composed path: erf is not a primitive")
    if fused:
        return GeluTanh.apply(x)
    return 0.5 * x * (1 + ops.tanh(GELU_K * (x + GELU_A * x * x * x)))


def silu(x: Tensor, fused: bool = True) -> Tensor:
    if fused:
        return Silu.apply(x)
    return x * ops.sigmoid(x)


# ---- dropout, embedding, linear --------------------------------------------------------

def dropout(x: Tensor, p: float = 0.5, training: bool = True, generator=None) -> Tensor:
    """Inverted dropout; the identity when not training or p == 0."""
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout: p={p} must be in [0, 1)")
    if not training or p == 0.0:
        return x
    gen = generator if generator is not None else default_generator(x.device)
    keep = gen.random(x.shape) >= p
    scaled_mask = keep.astype(x.dtype) * x.dtype.type(1.0 / (1.0 - p))
    return Dropout.apply(x, scaled_mask=scaled_mask)


def embedding(idx, weight: Tensor) -> Tensor:
    """Rows of `weight` (V, C) picked by integer ids `idx` (any shape) -> idx.shape + (C,)."""
    ids = idx.data if isinstance(idx, Tensor) else weight.xp.asarray(idx)
    if not np.issubdtype(ids.dtype, np.integer):
        raise TypeError(f"embedding: ids must be integers, got dtype {ids.dtype}")
    V = weight.shape[0]
    if ids.size and (int(ids.min()) < 0 or int(ids.max()) >= V):
        bad = int(ids.min()) if int(ids.min()) < 0 else int(ids.max())
        raise ValueError(f"embedding: id {bad} is outside the vocabulary [0, {V})")
    return Embedding.apply(weight, Tensor._wrap(ids, False))


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None, fused: bool = True) -> Tensor:
    """x @ weight.T + bias, weight stored (out, in)."""
    if x.shape[-1] != weight.shape[1]:
        raise ValueError(f"linear: input has {x.shape[-1]} features (shape {tuple(x.shape)}) "
                         f"but the weight {tuple(weight.shape)} expects {weight.shape[1]}")
    if fused:
        return Linear.apply(x, weight) if bias is None else Linear.apply(x, weight, bias)
    y = x @ ops.transpose(weight)
    return y if bias is None else y + bias


