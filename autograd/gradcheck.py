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
the direction if one was used, and the worst elements: in directional mode they are
found by bisecting the direction (the half whose directional derivative is further off,
again and again: a few dozen evaluations of fn per element, not one per element).

Backward runs under `autograd.debug_backward()`, so a backward that modifies its grad in
place, or returns a gradient of the wrong shape or a lower-precision dtype, fails with
that reason and the Function's name instead of as a numeric mismatch. A forward whose
output has less precision than the check's dtype is reported too (finite differences of
float32 values at eps = 1e-6 are noise). The checker's own frames are hidden from pytest
(`__tracebackhide__`): a failure shows the test's line, not this module.

Integer inputs (ids, targets) pass through as constants; a Tensor given with
requires_grad=False is a constant too. Left out: second derivatives, complex inputs.
"""
from __future__ import annotations

import heapq
from dataclasses import dataclass

import numpy as np

from . import backend
from .tensor import BackwardError, Tensor, debug_backward, no_grad

# dtype -> (eps, atol, rtol): finite differences in float32 are only good to ~1e-3.
TOLERANCES = {
    np.dtype(np.float64): (1e-6, 1e-5, 1e-4),
    np.dtype(np.float32): (1e-3, 1e-2, 1e-2),
}
WORST_SHOWN = 3            # elements located and shown when a directional check fails
LOCATE_BUDGET = 400        # evaluations of fn the bisection may spend finding them


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
    """Check fn's backward against central differences of L(x) = sum(fn(x) * grad_output).

    fn: Tensors -> Tensor. inputs: arrays (floating ones are differentiated, cast to `dtype`;
    integer ones are constants) or Tensors (differentiated if requires_grad). grad_output: an
    array of fn's output shape, or None for a seeded random one.

    Tolerances, by `dtype` (the defaults; eps=, atol=, rtol= override them):

        dtype     eps (step)   atol    rtol
        float64   1e-6         1e-5    1e-4
        float32   1e-3         1e-2    1e-2

    An element (or a direction) passes when |analytic - numeric| <= atol + rtol * |numeric|.
    float64 is the check to trust: the central difference's error is ~eps^2 from truncation
    plus ~1e-16 |L| / eps from rounding, both far below atol. In float32 the rounding term is
    ~1e-7 |L| / eps, hence the looser numbers; an op that only fails in float32 is usually an
    accuracy problem of its own (cancellation, overflow), worth a test at extreme values.

    Full mode compares every element when the differentiated inputs have at most
    `full_limit` elements in all (2 evaluations of fn per element); otherwise directional
    mode compares `n_directions` random directional derivatives (2 evaluations each) and,
    on a failure, locates the worst elements by bisection.

    Returns a GradcheckResult; raises GradcheckError on a failure (unless
    raise_on_failure=False), ValueError on a grad_output of the wrong shape.
    """
    __tracebackhide__ = True
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
    gy = _output_gradient(grad_output, y, dtype, xp, rng)
    if np.issubdtype(y.dtype, np.floating) and np.promote_types(y.dtype, dtype) != y.dtype:
        raise GradcheckError(_report(
            f"fn's output is {y.dtype} but the check runs in {dtype}: the forward loses precision, so finite "
            f"differences measure its rounding; compute in the inputs' dtype (look for an astype or a {y.dtype} "
            "constant in forward)", tensors, diff, gy, []))
    if y.requires_grad:
        try:
            with debug_backward():
                y.backward(gy)
        except BackwardError as error:
            reason = ("backward modified its grad in place" if error.cause == "in-place"
                      else f"backward returned a gradient of the wrong {error.cause}")
            # chained to the write that failed (a line of the user's backward), if any: the message has the rest
            raise GradcheckError(_report(f"{reason}: {error}", tensors, diff, gy, [])) from error.__cause__
    analytic = [tensors[i].grad if tensors[i].grad is not None else xp.zeros(tensors[i].shape, dtype) for i in diff]

    base = [tensors[i].data.copy() for i in diff]

    def loss_at(shifts):
        __tracebackhide__ = True
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


def _output_gradient(grad_output, y, dtype, xp, rng):
    """gy: grad_output checked against y's shape, or a seeded random array of that shape."""
    if grad_output is None:
        return xp.asarray(rng.standard_normal(y.shape)).astype(dtype)
    given = grad_output.data if isinstance(grad_output, Tensor) else grad_output
    shape = tuple(given.shape) if hasattr(given, "shape") else np.shape(given)
    if shape != tuple(y.shape):
        raise ValueError(f"check_backward: grad_output has shape {shape}, but fn's output has shape "
                         f"{tuple(y.shape)}; pass an array of the output's shape, or grad_output=None "
                         "for a random one")
    return xp.asarray(backend.to_numpy(given), dtype=dtype)


def _check_full(loss_at, base, zeros, analytic, eps, atol, rtol, tensors, diff, gy, raise_on_failure):
    __tracebackhide__ = True
    worst = (0.0, None)  # (excess over tolerance, details)
    max_abs = max_rel = 0.0
    for k in range(len(base)):
        numeric = np.zeros(base[k].shape)
        flat = numeric.reshape(-1)
        for j in range(flat.size):
            flat[j] = _partial_derivative(loss_at, zeros, k, j, eps)
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


def _partial_derivative(loss_at, zeros, k: int, j: int, eps: float) -> float:
    """dL/dx_k[j] (flat index j of differentiated input k) by central differences."""
    e = zeros[k].copy().reshape(-1)
    e[j] = eps
    shift = list(zeros)
    shift[k] = e.reshape(zeros[k].shape)
    plus = loss_at(shift)
    shift[k] = -shift[k]
    return (plus - loss_at(shift)) / (2 * eps)


def _check_directional(loss_at, base, analytic, eps, atol, rtol, tensors, diff, gy, rng, n_directions,
                       raise_on_failure):
    __tracebackhide__ = True
    xp = backend.get_array_module(base[0])
    max_abs = max_rel = 0.0
    for d in range(n_directions):
        direction = [xp.asarray(rng.standard_normal(b.shape)).astype(b.dtype) for b in base]
        norm = float(np.sqrt(sum(float((v * v).sum()) for v in direction)))
        direction = [v / norm for v in direction]
        a, numeric = _directional(loss_at, analytic, direction, eps)
        err = abs(a - numeric)
        max_abs = max(max_abs, err)
        max_rel = max(max_rel, err / max(abs(numeric), atol))
        if err > atol + rtol * abs(numeric):
            if raise_on_failure:
                worst = _locate_worst(loss_at, base, analytic, direction, eps, diff)
                details = [("direction", v) for v in direction] + [
                    (f"analytic grad of input {i}", g) for i, g in zip(diff, analytic)]
                raise GradcheckError(_report(
                    f"directional derivative {d}: analytic {a:.10g}, numeric {numeric:.10g}, "
                    f"|diff| {err:.3g} > atol + rtol*|numeric| = {atol + rtol * abs(numeric):.3g}\n"
                    "worst elements (located by bisecting the direction):\n" + worst,
                    tensors, diff, gy, details))
            return GradcheckResult(False, "directional", max_abs, max_rel, d + 1)
    return GradcheckResult(True, "directional", max_abs, max_rel, n_directions)


def _directional(loss_at, analytic, direction, eps: float) -> tuple:
    """(analytic, numeric) derivative of L along `direction` (one array per differentiated input)."""
    numeric = (loss_at([eps * v for v in direction]) - loss_at([-eps * v for v in direction])) / (2 * eps)
    a = float(sum(float((g.astype(np.float64) * v).sum()) for g, v in zip(analytic, direction)))
    return a, numeric


def _locate_worst(loss_at, base, analytic, direction, eps, diff) -> str:
    """The elements whose analytic and numeric partial derivatives differ most, as report lines.

    Best-first bisection over the flattened inputs: a block of elements is scored by how far
    the directional derivative along `direction` restricted to the block is off; the worst
    block is halved and its halves scored, until single elements, whose partial derivatives
    are then computed exactly. About 4 log2(n) evaluations of fn per element found.
    """
    __tracebackhide__ = True
    xp = backend.get_array_module(base[0])
    sizes = [int(b.size) for b in base]
    starts = np.cumsum([0] + sizes)
    zeros = [xp.zeros_like(b) for b in base]

    def masked(lo, hi):  # the direction restricted to flat elements [lo, hi) of the concatenated inputs
        parts = []
        for k, v in enumerate(direction):
            a, b = max(lo - starts[k], 0), min(hi - starts[k], sizes[k])
            part = xp.zeros_like(v).reshape(-1)
            if a < b:
                part[a:b] = v.reshape(-1)[a:b]
            parts.append(part.reshape(v.shape))
        return parts

    def score(lo, hi):
        a, numeric = _directional(loss_at, analytic, masked(lo, hi), eps)
        return abs(a - numeric)

    evaluations, found, heap = 0, [], [(-float("inf"), 0, int(starts[-1]))]
    while heap and len(found) < WORST_SHOWN and evaluations < LOCATE_BUDGET:
        _, lo, hi = heapq.heappop(heap)
        if hi - lo == 1:
            k = int(np.searchsorted(starts, lo, side="right") - 1)
            j = lo - int(starts[k])
            numeric = _partial_derivative(loss_at, zeros, k, j, eps)
            a = float(backend.to_numpy(analytic[k]).reshape(-1)[j])
            where = tuple(int(w) for w in np.unravel_index(j, base[k].shape))
            found.append(f"  input {diff[k]} {where}: analytic {a:.10g}, numeric {numeric:.10g}, "
                         f"|diff| {abs(a - numeric):.3g}")
            evaluations += 2
            continue
        mid = (lo + hi) // 2
        for half in ((lo, mid), (mid, hi)):
            heapq.heappush(heap, (-score(*half), *half))
        evaluations += 4
    return "\n".join(found) if found else "  (none located within the evaluation budget)"


def _report(headline, tensors, diff, gy, arrays) -> str:
    lines = ["check_backward failed: " + headline, "inputs:"]
    for i, t in enumerate(tensors):
        tag = "differentiated" if i in diff else "constant"
        lines.append(f"  x{i} ({tag}, shape {tuple(t.shape)}, {t.dtype}) = {_fmt(t.data)}")
    lines.append(f"grad_output (shape {tuple(gy.shape)}) = {_fmt(gy)}")
    for name, array in arrays:
        lines.append(f"{name} = {_fmt(array)}")
    return "\n".join(lines)
