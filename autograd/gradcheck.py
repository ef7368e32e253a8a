"""check_backward: compare a backward pass with float64 central differences, loudly.

    from autograd.gradcheck import check_backward
    check_backward(lambda x, w: F.linear(x, w), [x_array, w_array])
    check_backward(fn, inputs, dtype=(np.float64, np.float32))    # float32 too, beside float64

Given `fn` (Tensors -> Tensor) and its inputs, the checker runs backward with an output
gradient `gy` (random unless given) and compares d<fn(x), gy>/dx with central differences

    (L(x + eps e) - L(x - eps e)) / (2 eps),   L(x) = sum(fn(x) * gy)

element by element (the full gradient) when the inputs are small, and along a few random
directions e otherwise (a directional derivative checks every element at once, like
Chainer's checker). An element passes when |analytic - numeric| <= atol + rtol |numeric|.
On failure it raises GradcheckError with the inputs (as they were before fn ran), the output
gradient, both gradients, the direction if one was used, and the worst elements: in
directional mode they are found by bisecting the direction (the half whose directional
derivative is further off, again and again: a few dozen evaluations of fn per element, not
one per element). When the analytic gradient is the numeric one times a constant, the report
says so: "-1 x numeric: a sign error", "all zeros".

Before the numbers, the checker rules out what would make them meaningless, and names it:

- fn is evaluated twice at the inputs: two different outputs are "not deterministic" (an
  unseeded random mask), not a wrong backward;
- the inputs are compared before and after the forward and after the backward: "forward
  changed input 0 in place", "backward changed input 0 in place";
- forward and backward run under `autograd.debug_backward()`, so a backward that modifies its
  grad, returns a gradient of the wrong shape or dtype, or for an input that cannot have one,
  or an array a Function saved that changed before its backward, fails with that reason and
  the Function's name instead of as a numeric mismatch. A forward whose output has less
  precision than the check's dtype is reported too (finite differences of float32 values at
  eps = 1e-6 are noise).

After it: each input, by itself, in another memory layout (`layouts=True`, the default): a
C-contiguous input transposed in memory (or, with one axis, a stride-2 view), an input given
non-contiguous made contiguous; the output and every gradient must not change. With
`dtype=(np.float64, np.float32)` the float32 output and gradients are compared with float64's
(which the finite differences have just checked), and a failure says which dtype failed.

The checker's own frames are hidden from pytest (`__tracebackhide__`): a failure shows the
test's line, not this module. Integer inputs (ids, targets) pass through as constants; a
Tensor given with requires_grad=False is a constant too. Inputs keep the layout they come in
(a transposed, strided or broadcast array stays one). Left out: second derivatives, complex
inputs.
"""
from __future__ import annotations

import dataclasses
import heapq
from dataclasses import dataclass

import numpy as np

from . import backend
from .errors import BackwardError
from .mode import debug_backward, no_grad
from .saved import same_values
from .tensor import Tensor

# dtype -> (eps, atol, rtol): finite differences in float32 are only good to ~1e-3.
TOLERANCES = {
    np.dtype(np.float64): (1e-6, 1e-5, 1e-4),
    np.dtype(np.float32): (1e-3, 1e-2, 1e-2),
}
FLOAT32_VS_FLOAT64 = (1e-4, 1e-3)   # (atol, rtol) of float32 results against float64's, beside it
WORST_SHOWN = 3            # elements located and shown when a directional check fails
LOCATE_BUDGET = 400        # evaluations of fn the bisection may spend finding them


class GradcheckError(AssertionError):
    """The analytic gradient disagrees with the numerical one, or the check could not be trusted; the
    message has the details."""


@dataclass(frozen=True)
class GradcheckResult:
    passed: bool
    mode: str            # "full" or "directional"
    max_abs_err: float
    max_rel_err: float
    n_checked: int       # elements (full) or directions (directional)
    dtype: str = "float64"
    report: str = ""     # why it failed, when it did (raise_on_failure=False)


def _fmt(array) -> str:
    return np.array2string(backend.to_numpy(array), precision=6, threshold=60, edgeitems=3)


def check_backward(fn, inputs, grad_output=None, eps=None, atol=None, rtol=None, dtype=np.float64,
                   full_limit: int = 512, n_directions: int = 3, seed: int = 0,
                   raise_on_failure: bool = True, layouts: bool = True):
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
    ~1e-7 |L| / eps, hence the looser numbers. So to check float32, ask for it beside float64,
    `dtype=(np.float64, np.float32)`: float64 is checked against finite differences, then the
    float32 output and gradients against float64's, element by element, with atol 1e-4 and
    rtol 1e-3 (FLOAT32_VS_FLOAT64): a backward right in float64 but inaccurate in float32
    (cancellation, overflow) fails there, and the report says "in float32". A single
    dtype=np.float32 runs the finite differences in float32 with the table's tolerances.

    Full mode compares every element when the differentiated inputs have at most
    `full_limit` elements in all (2 evaluations of fn per element); otherwise directional
    mode compares `n_directions` random directional derivatives (2 evaluations each) and,
    on a failure, locates the worst elements by bisection. `layouts=False` skips the
    other-layout runs (the module docstring).

    Returns a GradcheckResult (a tuple of them, one per dtype, when `dtype` is a sequence);
    raises GradcheckError on a failure (unless raise_on_failure=False: then the result says
    passed=False and its `report` why), ValueError on a grad_output of the wrong shape.
    """
    __tracebackhide__ = True
    if isinstance(dtype, (tuple, list)):
        dtypes = [np.dtype(d) for d in dtype]
        if not dtypes or dtypes[0] != np.float64 or len(dtypes) > 2 or any(d not in TOLERANCES for d in dtypes):
            raise ValueError(f"check_backward: dtype {tuple(str(d) for d in dtypes)} is not supported; use one dtype, "
                             "or (np.float64, np.float32): float32 checked beside float64")
    else:
        dtypes = [np.dtype(dtype)]
        if dtypes[0] not in TOLERANCES:
            raise ValueError(f"check_backward: dtype {dtypes[0]} is not supported; use float64 (or float32)")
    if not isinstance(inputs, (list, tuple)):
        inputs = [inputs]
    rng = np.random.default_rng(seed)
    first = _Run(fn, inputs, dtypes[0], grad_output, rng)
    d_eps, d_atol, d_rtol = TOLERANCES[first.dtype]
    eps = d_eps if eps is None else eps
    atol = d_atol if atol is None else atol
    rtol = d_rtol if rtol is None else rtol
    which = None if len(dtypes) == 1 else f"in {first.dtype}"      # said in a failure's first line
    try:
        first.forward_and_backward()
        result = first.against_finite_differences(eps, atol, rtol, full_limit, n_directions, rng, raise_on_failure)
        if result.passed and layouts:
            first.in_other_layouts(atol, rtol)
        if which is not None and not result.passed:
            result = dataclasses.replace(result, report=result.report.replace("failed: ", f"failed {which}: ", 1))
        results = [result]
        if len(dtypes) == 2 and result.passed:
            which = f"in {dtypes[1]} (float64 passes)"
            results.append(first.beside(dtypes[1], *FLOAT32_VS_FLOAT64))
    except GradcheckError as error:
        message = str(error) if which is None else str(error).replace("failed: ", f"failed {which}: ", 1)
        if raise_on_failure:
            if which is None:
                raise
            raise GradcheckError(message) from error.__cause__
        failed = GradcheckResult(False, "full", float("nan"), float("nan"), 0, str(first.dtype), message)
        return failed if len(dtypes) == 1 else (failed,)
    return results[0] if len(dtypes) == 1 else tuple(results)


class _Run:
    """One check: the inputs as tensors of `dtype`, fn's output, its gradients, and the reports."""

    def __init__(self, fn, inputs, dtype, grad_output, rng):
        __tracebackhide__ = True
        self.fn, self.dtype, self.grad_output = fn, np.dtype(dtype), grad_output
        self.tensors, self.diff = [], []   # the inputs as tensors; indices of the differentiated ones
        for i, value in enumerate(inputs):
            if isinstance(value, Tensor):
                if np.issubdtype(value.dtype, np.floating) and value.requires_grad:
                    self.tensors.append(Tensor(_own_copy(value.data, self.dtype), requires_grad=True))
                    self.diff.append(i)
                else:
                    self.tensors.append(value.detach())
                continue
            if not hasattr(value, "dtype"):
                value = np.asarray(value)
            if np.issubdtype(value.dtype, np.floating):
                self.tensors.append(Tensor(_own_copy(value, self.dtype), requires_grad=True))
                self.diff.append(i)
            else:
                self.tensors.append(Tensor(value))
        if not self.diff:
            raise ValueError("check_backward: no floating-point input to differentiate")
        self.xp = self.tensors[self.diff[0]].xp
        self.before = [t.data.copy() for t in self.tensors]     # what the report shows as the inputs
        self.rng = rng
        self.gy = None

    def fail(self, headline, arrays=()):
        __tracebackhide__ = True
        raise GradcheckError(_report(headline, self.tensors, self.before, self.diff, self.gy, list(arrays)))

    def forward_and_backward(self) -> None:
        """The recorded forward (twice: determinism), the backward, and the inputs compared around both."""
        __tracebackhide__ = True
        with debug_backward():
            y = self.fn(*self.tensors)
        if not isinstance(y, Tensor):
            raise TypeError(f"check_backward: fn must return a Tensor, got {type(y).__name__}")
        self.gy = _output_gradient(self.grad_output, y, self.dtype, self.xp, self.rng)
        self.inputs_unchanged("forward")
        if np.issubdtype(y.dtype, np.floating) and np.promote_types(y.dtype, self.dtype) != y.dtype:
            self.fail(f"fn's output is {y.dtype} but the check runs in {self.dtype}: the forward loses precision, "
                      f"so finite differences measure its rounding; compute in the inputs' dtype (look for an astype "
                      f"or a {y.dtype} constant in forward)")
        with debug_backward():
            again = self.fn(*[Tensor(t.data, requires_grad=t.requires_grad) for t in self.tensors])
        if not same_values(y.data, again.data):
            where, a, b = _worst_difference(y.data, again.data)
            self.fail(f"fn is not deterministic: two evaluations at the same inputs differ (element {where}: "
                      f"{a:.10g}, then {b:.10g}), so finite differences cannot check it. Make fn a function of its "
                      f"inputs: seed its randomness inside fn, or pass the random mask as an input")
        self.y = y
        self.analytic = self.backward(y, self.tensors)
        self.inputs_unchanged("backward")

    def backward(self, y, tensors) -> list:
        """The analytic gradients of the differentiated inputs, from y.backward(gy) under debug_backward."""
        __tracebackhide__ = True
        if y.requires_grad:
            try:
                with debug_backward():
                    y.backward(self.gy.astype(y.dtype, copy=False))
            except BackwardError as error:
                changed = (f"input {error.input_index}" if error.input_index is not None else "an array it saved")
                reason = {"in-place": "backward modified its grad in place",
                          "saved": "an array saved for backward changed before backward",
                          "saved in backward": f"backward changed {changed} in place",
                          "no-gradient": "backward returned a gradient for an input that cannot have one"}.get(
                              error.cause, f"backward returned a gradient of the wrong {error.cause}")
                # chained to the write that failed (a line of the user's backward), if any: the message has the rest
                raise GradcheckError(_report(f"{reason}: {error}", self.tensors, self.before, self.diff, self.gy,
                                             [])) from error.__cause__
        return [tensors[i].grad if tensors[i].grad is not None else self.xp.zeros(tensors[i].shape, tensors[i].dtype)
                for i in self.diff]

    def inputs_unchanged(self, stage: str) -> None:
        __tracebackhide__ = True
        for i, (t, before) in enumerate(zip(self.tensors, self.before)):
            if not same_values(before, t.data):
                where, a, b = _worst_difference(before, t.data)
                count = int(backend.to_numpy(~((before == t.data) | ((before != before) & (t.data != t.data)))).sum())
                self.fail(f"{stage} changed input {i} in place ({count} of {t.size} elements differ; element {where}: "
                          f"{a:.10g} before, {b:.10g} after): a {stage} must not write into its inputs, which belong "
                          f"to the caller; compute into a new array", [(f"input {i} after {stage}", t.data)])

    def against_finite_differences(self, eps, atol, rtol, full_limit, n_directions, rng, raise_on_failure):
        __tracebackhide__ = True
        base = [self.before[i] for i in self.diff]
        tensors, diff, gy, fn = self.tensors, self.diff, self.gy, self.fn

        def loss_at(shifts):
            __tracebackhide__ = True
            with no_grad():
                args = [Tensor.constant(b) for b in self.before]
                for k, i in enumerate(diff):
                    args[i] = Tensor.constant(base[k] + shifts[k])
                out = fn(*args)
                return float((out.data.astype(np.float64) * gy).sum())

        total = sum(int(np.prod(b.shape)) for b in base)
        zeros = [self.xp.zeros(b.shape, b.dtype) for b in base]
        report = (tensors, self.before, diff, gy)
        if total <= full_limit:
            return _check_full(loss_at, base, zeros, self.analytic, eps, atol, rtol, report, raise_on_failure)
        return _check_directional(loss_at, base, self.analytic, eps, atol, rtol, report, rng, n_directions,
                                  raise_on_failure)

    def in_other_layouts(self, atol, rtol) -> None:
        """Each input alone in another memory layout: the output and the gradients must not change."""
        __tracebackhide__ = True
        for i, given in enumerate(self.tensors):
            other, layout = _other_layout(given.data)
            if other is None:
                continue
            tensors = [Tensor(t.data, requires_grad=t.requires_grad) for t in self.tensors]   # the same arrays
            tensors[i] = Tensor(other, requires_grad=given.requires_grad)
            with debug_backward():
                y = self.fn(*tensors)
            given = "C-contiguous" if given.data.flags.c_contiguous else "non-contiguous"
            said = f"with input {i} {layout} (given {given}; same values)"
            self.compare("output", self.y.data, y.data, atol, rtol, f"fn's output changes {said}")
            for k, grad in zip(self.diff, self.backward(y, tensors)):
                self.compare(f"gradient of input {k}", self.analytic[self.diff.index(k)], grad, atol, rtol,
                             f"the gradient of input {k} changes {said}: forward or backward depends on the memory "
                             f"layout (a reshape assumed to be a view, a buffer read as flat memory)")

    def compare(self, what, expected, got, atol, rtol, headline) -> None:
        __tracebackhide__ = True
        e = backend.to_numpy(expected).astype(np.float64)
        g = backend.to_numpy(got).astype(np.float64)
        excess = np.abs(g - e) - (atol + rtol * np.abs(e))
        if excess.size and (excess.max() > 0 or np.isnan(excess).any()):
            j = int(np.nanargmax(np.where(np.isnan(excess), np.inf, excess)))
            where = tuple(int(w) for w in np.unravel_index(j, e.shape))
            self.fail(f"{headline}; worst element {where}: {e.reshape(-1)[j]:.10g} expected, {g.reshape(-1)[j]:.10g} "
                      f"got, > atol + rtol*|expected| = {atol + rtol * abs(e.reshape(-1)[j]):.3g}",
                      [(f"expected {what}", e), (f"got {what}", g)])

    def beside(self, dtype, atol, rtol) -> GradcheckResult:
        """The same check in `dtype` (float32): output and gradients against this (float64) run's."""
        __tracebackhide__ = True
        low = _Run(self.fn, [Tensor(b.astype(dtype), requires_grad=t.requires_grad) if i in self.diff else t
                             for i, (b, t) in enumerate(zip(self.before, self.tensors))], dtype, self.gy, self.rng)
        low.forward_and_backward()
        low.compare("output", self.y.data, low.y.data, atol, rtol,
                    f"the {dtype} output differs from float64's (checked by the float64 forward)")
        worst_abs = worst_rel = 0.0
        for k, (high, grad) in enumerate(zip(self.analytic, low.analytic)):
            low.compare(f"gradient of input {self.diff[k]}", high, grad, atol, rtol,
                        f"the {dtype} gradient of input {self.diff[k]} differs from float64's (which finite "
                        f"differences have just checked): the backward loses accuracy in {dtype} (cancellation? "
                        f"overflow? a constant of another dtype?)")
            err = np.abs(backend.to_numpy(grad).astype(np.float64) - backend.to_numpy(high))
            if err.size:
                worst_abs = max(worst_abs, float(err.max()))
                worst_rel = max(worst_rel, float((err / np.maximum(np.abs(backend.to_numpy(high)), atol)).max()))
        return GradcheckResult(True, "float64 reference", worst_abs, worst_rel,
                               sum(int(a.size) for a in low.analytic), str(dtype))


def _own_copy(a, dtype):
    """a in `dtype`, in memory of its own but in a's layout: transposed, strided and broadcast arrays stay so."""
    xp = backend.get_array_module(a)
    if a.flags.c_contiguous or a.flags.f_contiguous or a.ndim == 0:
        return a.astype(dtype, copy=True)                       # astype keeps a Fortran order
    if 0 in a.strides:                                          # broadcast: copy what is there, broadcast it again
        index = tuple(slice(0, 1) if stride == 0 and n > 1 else slice(None) for stride, n in zip(a.strides, a.shape))
        return xp.broadcast_to(a[index].astype(dtype, copy=True), a.shape)
    return _strided(a, dtype)


def _strided(a, dtype):
    """A copy of a (ndim >= 1) as a stride-2 view along the last axis: same values, not contiguous."""
    xp = backend.get_array_module(a)
    buffer = xp.empty(a.shape[:-1] + (2 * a.shape[-1],), dtype=dtype)
    view = buffer[..., ::2]
    view[...] = a
    return view


def _other_layout(a):
    """(a copy of `a` in another memory layout, its name), or (None, None) when there is none to try."""
    if a.ndim == 0 or a.size < 2:
        return None, None
    if not a.flags.c_contiguous:
        return backend.get_array_module(a).ascontiguousarray(a), "C-contiguous"
    if sum(n > 1 for n in a.shape) >= 2:
        return a.T.copy().T, "transposed in memory"              # Fortran order: the axes' strides reversed
    return _strided(a, a.dtype), "a stride-2 view"


def _worst_difference(a, b) -> tuple:
    """(index, a value, b value) of the element where two same-shaped arrays differ most (NaN counts as most)."""
    a, b = backend.to_numpy(a).astype(np.float64), backend.to_numpy(b).astype(np.float64)
    gap = np.where(np.isnan(a) != np.isnan(b), np.inf, np.abs(np.nan_to_num(a - b)))
    j = int(np.argmax(gap)) if gap.size else 0
    where = tuple(int(w) for w in np.unravel_index(j, a.shape))
    return where, float(a.reshape(-1)[j]) if a.size else float(a), float(b.reshape(-1)[j]) if b.size else float(b)


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


def _check_full(loss_at, base, zeros, analytic, eps, atol, rtol, report, raise_on_failure):
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
    message = ""
    if not passed:
        k, where, a, numeric = worst[1]
        diff = report[2]
        message = _report(
            f"input {diff[k]} (shape {base[k].shape}), worst element {tuple(int(w) for w in where)}: "
            f"analytic {a[where]:.10g}, numeric {numeric[where]:.10g}, |diff| {abs(a[where] - numeric[where]):.3g} "
            f"> atol + rtol*|numeric| = {atol + rtol * abs(numeric[where]):.3g}" + _pattern(a, numeric, atol, rtol),
            *report, [(f"analytic grad of input {diff[k]}", a), (f"numeric grad of input {diff[k]}", numeric)])
        if raise_on_failure:
            raise GradcheckError(message)
    return GradcheckResult(passed, "full", max_abs, max_rel, sum(b.size for b in base), report=message)


def _pattern(analytic, numeric, atol, rtol) -> str:
    """A hint when the analytic gradient is the numeric one times a constant (-1: a sign error), or zero."""
    if not np.any(np.abs(numeric) > atol):
        return ""
    if not np.any(analytic):
        return ("\nthe analytic gradient is all zeros: does backward return None (or zeros) for this input, or "
                "does forward cut it from the graph?")
    scale = float((analytic * numeric).sum() / (numeric * numeric).sum())
    if not np.all(np.abs(analytic - scale * numeric) <= atol + rtol * np.abs(scale * numeric)):
        return ""
    if abs(scale + 1) < 1e-3:
        return "\nanalytic = -numeric at every element: the sign of the gradient is wrong (a sign error in backward)"
    return (f"\nanalytic = {scale:.6g} x numeric at every element: a constant factor is wrong (a missing or "
            f"extra scale, a 2 of a square, a 1/n of a mean)")


def _partial_derivative(loss_at, zeros, k: int, j: int, eps: float) -> float:
    """dL/dx_k[j] (flat index j of differentiated input k) by central differences."""
    e = zeros[k].copy().reshape(-1)
    e[j] = eps
    shift = list(zeros)
    shift[k] = e.reshape(zeros[k].shape)
    plus = loss_at(shift)
    shift[k] = -shift[k]
    return (plus - loss_at(shift)) / (2 * eps)


def _check_directional(loss_at, base, analytic, eps, atol, rtol, report, rng, n_directions, raise_on_failure):
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
            diff = report[2]
            sign = ("\nanalytic is close to -numeric along this direction: a sign error in backward?"
                    if abs(a + numeric) <= atol + rtol * abs(numeric) else "")
            headline = (f"directional derivative {d}: analytic {a:.10g}, numeric {numeric:.10g}, "
                        f"|diff| {err:.3g} > atol + rtol*|numeric| = {atol + rtol * abs(numeric):.3g}{sign}")
            details = [("direction", v) for v in direction] + [
                (f"analytic grad of input {i}", g) for i, g in zip(diff, analytic)]
            if raise_on_failure:
                worst = _locate_worst(loss_at, base, analytic, direction, eps, diff)
                raise GradcheckError(_report(headline + "\nworst elements (located by bisecting the direction):\n"
                                             + worst, *report, details))
            return GradcheckResult(False, "directional", max_abs, max_rel, d + 1, report=_report(headline, *report,
                                                                                                 details))
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


def _report(headline, tensors, before, diff, gy, arrays) -> str:
    """The failure message: the headline, the inputs as they were before fn ran, gy, and `arrays`."""
    lines = ["check_backward failed: " + headline, "inputs:"]
    for i, (t, data) in enumerate(zip(tensors, before)):
        tag = "differentiated" if i in diff else "constant"
        lines.append(f"  x{i} ({tag}, shape {tuple(t.shape)}, {t.dtype}) = {_fmt(data)}")
    if gy is not None:
        lines.append(f"grad_output (shape {tuple(gy.shape)}) = {_fmt(gy)}")
    for name, array in arrays:
        lines.append(f"{name} = {_fmt(array)}")
    return "\n".join(lines)
