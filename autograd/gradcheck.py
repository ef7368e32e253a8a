"""check_backward: compare a backward pass with float64 central differences, loudly.

    from autograd.gradcheck import check_backward
    check_backward(lambda x, w: F.linear(x, w), [x_array, w_array])

Given `fn` (Tensors -> Tensor) and its inputs, the checker runs backward with an output
gradient `gy` (random unless given) and compares d<fn(x), gy>/dx with central differences

    (L(x + eps e) - L(x - eps e)) / (2 eps),   L(x) = sum(fn(x) * gy)

element by element (the full gradient) when the inputs are small, and along a few random
directions e otherwise (a directional derivative checks every element at once, like
Chainer's checker). An element passes when |analytic - numeric| <= atol + rtol |numeric|.
On failure it raises GradcheckError with the inputs, the output gradient, both gradients,
the direction if one was used, and the worst element.

Integer inputs (ids, targets) pass through as constants; a Tensor given with
requires_grad=False is a constant too. Left out: second derivatives, complex inputs.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import backend
from .tensor import Tensor, no_grad

# dtype -> (eps, atol, rtol): finite differences in float32 are only good to ~1e-3.
TOLERANCES = {
    np.dtype(np.float64): (1e-6, 1e-5, 1e-4),
    np.dtype(np.float32): (1e-3, 1e-2, 1e-2),
}


class GradcheckError(AssertionError):
    """The analytic gradient disagrees with the numerical one; the message has the details."""


@dataclass(frozen=True)
class GradcheckResult:
    passed: bool
    mode: str            # "full" or "directional"
    max_abs_err: float
    max_rel_err: float
    n_checked: int       # elements (full) or directions (directional)


def _fmt(array) -> str:
    return np.array2string(backend.to_numpy(array), precision=6, threshold=60, edgeitems=3)


def check_backward(fn, inputs, grad_output=None, eps=None, atol=None, rtol=None, dtype=np.float64,
                   full_limit: int = 512, n_directions: int = 3, seed: int = 0,
                   raise_on_failure: bool = True) -> GradcheckResult:
    """Check fn's backward against central differences; see the module docstring."""
    dtype = np.dtype(dtype)
    if dtype not in TOLERANCES:
        raise ValueError(f"check_backward: dtype {dtype} is not supported; use float64 (or float32)")
    d_eps, d_atol, d_rtol = TOLERANCES[dtype]
    eps = d_eps if eps is None else eps
    atol = d_atol if atol is None else atol
    rtol = d_rtol if rtol is None else rtol
    if not isinstance(inputs, (list, tuple)):
        inputs = [inputs]

    tensors, diff = [], []  # the inputs as tensors; indices of the differentiated ones
    for i, value in enumerate(inputs):
        if isinstance(value, Tensor):
            if np.issubdtype(value.dtype, np.floating) and value.requires_grad:
                tensors.append(Tensor(value.data.astype(dtype), requires_grad=True))
                diff.append(i)
            else:
                tensors.append(value.detach())
            continue
        if not hasattr(value, "dtype"):
            value = np.asarray(value)
        if np.issubdtype(value.dtype, np.floating):
            tensors.append(Tensor(value.astype(dtype), requires_grad=True))
            diff.append(i)
        else:
            tensors.append(Tensor(value))
    if not diff:
        raise ValueError("check_backward: no floating-point input to differentiate")
    xp = tensors[diff[0]].xp
    rng = np.random.default_rng(seed)

    y = fn(*tensors)
    if not isinstance(y, Tensor):
        raise TypeError(f"check_backward: fn must return a Tensor, got {type(y).__name__}")
    if grad_output is None:
        gy = xp.asarray(rng.standard_normal(y.shape)).astype(dtype)
    else:
        gy = xp.asarray(backend.to_numpy(grad_output.data if isinstance(grad_output, Tensor) else grad_output),
                        dtype=dtype).reshape(y.shape)
    if y.requires_grad:
        y.backward(gy)
    analytic = [tensors[i].grad if tensors[i].grad is not None else xp.zeros(tensors[i].shape, dtype) for i in diff]

    base = [tensors[i].data.copy() for i in diff]

    def loss_at(shifts):
        with no_grad():
            args = list(tensors)
            for k, i in enumerate(diff):
                args[i] = Tensor(base[k] + shifts[k])
            out = fn(*args)
            return float((out.data.astype(np.float64) * gy).sum())

    total = sum(int(np.prod(b.shape)) for b in base)
    zeros = [xp.zeros_like(b) for b in base]
    if total <= full_limit:
        return _check_full(loss_at, base, zeros, analytic, eps, atol, rtol, tensors, diff, gy, raise_on_failure)
    return _check_directional(loss_at, base, analytic, eps, atol, rtol, tensors, diff, gy, rng, n_directions,
                              raise_on_failure)


def _check_full(loss_at, base, zeros, analytic, eps, atol, rtol, tensors, diff, gy, raise_on_failure):
    worst = (0.0, None)  # (excess over tolerance, details)
    max_abs = max_rel = 0.0
    for k in range(len(base)):
        numeric = np.zeros(base[k].shape)
        flat = numeric.reshape(-1)
        for j in range(flat.size):
            shift = list(zeros)
            e = zeros[k].copy().reshape(-1)
            e[j] = eps
            shift[k] = e.reshape(base[k].shape)
            plus = loss_at(shift)
            shift[k] = -shift[k]
            minus = loss_at(shift)
            flat[j] = (plus - minus) / (2 * eps)
        a = backend.to_numpy(analytic[k]).astype(np.float64)
        err = np.abs(a - numeric)
        rel = err / np.maximum(np.abs(numeric), atol)
        if err.size:
            max_abs = max(max_abs, float(err.max()))
            max_rel = max(max_rel, float(rel.max()))
            excess = err - (atol + rtol * np.abs(numeric))
            j = int(np.argmax(excess))
            if excess.reshape(-1)[j] > worst[0]:
                worst = (float(excess.reshape(-1)[j]), (k, np.unravel_index(j, numeric.shape), a, numeric))
    passed = worst[1] is None
    if not passed and raise_on_failure:
        k, where, a, numeric = worst[1]
        raise GradcheckError(_report(
            f"input {diff[k]} (shape {base[k].shape}), worst element {tuple(int(w) for w in where)}: "
            f"analytic {a[where]:.10g}, numeric {numeric[where]:.10g}, |diff| {abs(a[where] - numeric[where]):.3g} "
            f"> atol + rtol*|numeric| = {atol + rtol * abs(numeric[where]):.3g}",
            tensors, diff, gy, [(f"analytic grad of input {diff[k]}", a), (f"numeric grad of input {diff[k]}", numeric)]))
    return GradcheckResult(passed, "full", max_abs, max_rel, sum(b.size for b in base))


def _check_directional(loss_at, base, analytic, eps, atol, rtol, tensors, diff, gy, rng, n_directions,
                       raise_on_failure):
    xp = backend.get_array_module(base[0])
    max_abs = max_rel = 0.0
    for d in range(n_directions):
        direction = [xp.asarray(rng.standard_normal(b.shape)).astype(b.dtype) for b in base]
        norm = float(np.sqrt(sum(float((v * v).sum()) for v in direction)))
        direction = [v / norm for v in direction]
        numeric = (loss_at([eps * v for v in direction]) - loss_at([-eps * v for v in direction])) / (2 * eps)
        a = float(sum(float((g.astype(np.float64) * v).sum()) for g, v in zip(analytic, direction)))
        err = abs(a - numeric)
        max_abs = max(max_abs, err)
        max_rel = max(max_rel, err / max(abs(numeric), atol))
        if err > atol + rtol * abs(numeric):
            if raise_on_failure:
                details = [("direction", v) for v in direction] + [
                    (f"analytic grad of input {i}", g) for i, g in zip(diff, analytic)]
                raise GradcheckError(_report(
                    f"directional derivative {d}: analytic {a:.10g}, numeric {numeric:.10g}, "
                    f"|diff| {err:.3g} > atol + rtol*|numeric| = {atol + rtol * abs(numeric):.3g}",
                    tensors, diff, gy, details))
            return GradcheckResult(False, "directional", max_abs, max_rel, d + 1)
    return GradcheckResult(True, "directional", max_abs, max_rel, n_directions)


def _report(headline, tensors, diff, gy, arrays) -> str:
    lines = ["check_backward failed: " + headline, "inputs:"]
    for i, t in enumerate(tensors):
        tag = "differentiated" if i in diff else "constant"
        lines.append(f"  x{i} ({tag}, shape {tuple(t.shape)}, {t.dtype}) = {_fmt(t.data)}")
    lines.append(f"grad_output (shape {tuple(gy.shape)}) = {_fmt(gy)}")
    for name, array in arrays:
        lines.append(f"{name} = {_fmt(array)}")
    return "\n".join(lines)
