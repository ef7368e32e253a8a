"""Function: one differentiable op, with its forward and backward side by side.

A Function subclass writes

    forward(self, *arrays, **params) -> array      # computes on raw xp arrays
    backward(self, grad) -> grad or tuple of grads  # one per input, None where not needed

and saves on `self`, by name, only what backward needs. `Function.apply(*tensors,
**params)` runs forward and, when gradients are being recorded, links the output
tensor to the Function so `Tensor.backward` can call `backward` later.

Contract for forward and backward (users writing their own ops follow it too):
- forward never writes into its input arrays: they belong to the caller, and another op
  may have saved them;
- backward returns one gradient per tensor input (a tuple or a list; a bare array for
  one input), shaped like that input (use `unbroadcast` after a broadcasting forward) and
  of its floating dtype, or None for inputs that need none;
- `self.needs_input_grad[i]` says whether input i wants a gradient: skip the work
  when it does not;
- backward never modifies `grad` in place (the engine may hand the same array to several
  ops), nor what forward saved (the graph may be backpropagated again).
The engine enforces it: after each backward it checks every gradient's shape and dtype
against its input's and raises a BackwardError naming the Function, the input and the
likely cause ("missing unbroadcast?", "a forgotten `* grad`?"); the grad a backward
receives is a read-only array on NumPy (on CuPy, `autograd.debug_backward()` catches
writes); before each backward it checks that what forward saved is unchanged
(autograd/saved.py). Together they cost a few microseconds per op, under 1% of a training
step of the baby model (docs/performance.md), so they stay on. `debug_backward()` checks
more (saved arrays exactly, gradients for inputs that cannot have one), and
`autograd.gradcheck.check_backward` more again (forwards that write into their inputs,
non-determinism, memory layouts, float32).

`apply` takes Tensors, and wraps NumPy (or CuPy) arrays and Python numbers as constants
(numbers take the dtype of the first Tensor argument); settings that are not arrays
(an axis, an eps) go by keyword and reach forward as keywords. After forward, `apply`
stamps what forward saved (autograd/saved.py), so that backward can tell whether any of
it changed in between.

apply returns `autograd.Tensor`s. tensor.py defines Tensor with its operators, which call
the primitive ops, which are Functions: so this module cannot import tensor.py, and
tensor.py hands the class over once, right after defining it (`use_tensor_class`).

Left out: multiple outputs per Function (split is several slices), double backward
(backward runs on raw arrays, so gradients of gradients are not recorded).
"""
from __future__ import annotations

import numpy as np

from . import backend, profiler, saved
from .mode import state

_NOTHING_NEEDED = tuple((False,) * n for n in range(16))  # needs_input_grad when nothing is recorded
Tensor = None          # autograd.Tensor, once tensor.py has defined it (use_tensor_class)


def use_tensor_class(cls) -> None:
    """Make `cls` (autograd.Tensor) what apply returns; tensor.py calls this once, after defining it."""
    global Tensor
    Tensor = cls


def is_tensor(value) -> bool:
    """isinstance(value, autograd.Tensor)."""
    return isinstance(value, Tensor)


def as_tensor(value, like=None):
    """`value` as a Tensor; Python scalars take `like`'s dtype and device (no silent upcast)."""
    if isinstance(value, Tensor):
        return value
    if like is not None:
        xp = like.xp
        if isinstance(value, (int, float, bool)) or isinstance(value, np.generic):
            return Tensor.constant(backend.scalar_array(xp, value, like.dtype))
        if isinstance(value, np.ndarray) and xp is not np:
            raise RuntimeError(
                f"cannot mix a NumPy array {value.shape} with a tensor on {like.device}; "
                "move it first: Tensor(array).to('cuda')")
    return Tensor(value)


class Function:
    """Base class of every differentiable op; see the module docstring for the contract."""

    needs_input_grad: tuple = ()
    inputs: tuple = ()
    non_tensor_inputs: tuple = ()     # indices of the inputs apply wrapped (numbers, arrays): set by apply
    saved_guard = None                # the stamps of what forward saved (autograd/saved.py): set by apply

    def forward(self, *arrays, **params):  # pragma: no cover - abstract
        raise NotImplementedError

    def backward(self, grad):  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def name(self) -> str:
        return type(self).__name__

    @classmethod
    def apply(cls, *inputs: Tensor, **params) -> Tensor:
        fn = cls()
        try:
            needs = tuple([t.requires_grad for t in inputs])
        except AttributeError:            # an array or a number among the inputs
            fn.non_tensor_inputs = tuple(i for i, t in enumerate(inputs) if not is_tensor(t))
            inputs = _as_input_tensors(cls.__name__, inputs)
            needs = tuple([t.requires_grad for t in inputs])
        if backend.cupy_loaded() and len(inputs) > 1:
            _check_same_device(cls.__name__, inputs)
        track = True in needs and state.recording
        fn.needs_input_grad = needs if track else _nothing_needed(len(needs))
        try:
            if profiler.active() is None:
                out = fn.forward(*[t.data for t in inputs], **params)
            else:
                out = profiler.timed("forward", cls.__name__, fn.forward, *[t.data for t in inputs], **params)
        except ValueError as exc:
            if "could not be broadcast" not in str(exc):
                raise
            shapes = " and ".join(str(tuple(t.shape)) for t in inputs)
            raise ValueError(f"{cls.__name__}: shapes {shapes} do not broadcast together "
                             "(trailing dimensions must match or be 1)") from None
        if type(out) is not np.ndarray and not backend.is_cupy_array(out):
            out = np.asarray(out)  # NumPy reductions return scalars, not 0-d arrays
        result = Tensor.constant(out)
        if track:
            if state.check_saved or state.debug:
                fn.saved_guard = saved.guard(fn, inputs, out, params, exact=state.debug)
            fn.inputs = inputs
            result.requires_grad = True
            result.grad_fn = fn
        return result

    @classmethod
    def forward_only(cls, *arrays, **params):
        """forward on raw xp arrays with nothing recorded: what `apply` under no_grad computes,
        without wrapping Tensors. For inference loops where per-op bookkeeping is the cost
        (KV-cache decoding, one token at a time)."""
        fn = cls()
        fn.needs_input_grad = _nothing_needed(len(arrays))
        return fn.forward(*arrays, **params)


def _as_input_tensors(op: str, inputs: tuple) -> tuple:
    """inputs with xp arrays and Python or NumPy numbers wrapped as constants; anything else is an error."""
    like = next((t for t in inputs if is_tensor(t)), None)
    wrapped = []
    for i, value in enumerate(inputs):
        if is_tensor(value):
            wrapped.append(value)
        elif isinstance(value, (np.ndarray, np.generic, bool, int, float)) or backend.is_cupy_array(value):
            wrapped.append(as_tensor(value, like=like))
        else:
            raise TypeError(
                f"{op}.apply: argument {i} is a {type(value).__name__}, not a Tensor, an array or a number; "
                f"wrap it as Tensor(...), or pass a setting that is not an array by keyword "
                f"({op}.apply(x, axis=-1) hands axis=-1 to forward)")
    return tuple(wrapped)


def _nothing_needed(n: int) -> tuple:
    return _NOTHING_NEEDED[n] if n < len(_NOTHING_NEEDED) else (False,) * n


def unbroadcast(grad, shape):
    """Sum `grad` down to `shape`, undoing NumPy broadcasting (the adjoint of broadcast_to).

    Example: shape (3, 1) broadcast to (2, 3, 4): sum over axis 0, then over axis 2 keeping it.
    """
    if grad.shape == tuple(shape):
        return grad
    extra = grad.ndim - len(shape)
    if extra:
        grad = grad.sum(axis=tuple(range(extra)))
    kept = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    if kept:
        grad = grad.sum(axis=kept, keepdims=True)
    return grad


def _check_same_device(op: str, inputs) -> None:
    devices = {backend.device_of(t.data) for t in inputs}
    if len(devices) > 1:
        described = ", ".join(f"{backend.device_of(t.data)} {tuple(t.shape)}" for t in inputs)
        raise RuntimeError(
            f"{op}: inputs live on different devices ({described}); "
            "move them to one device first with tensor.to('cpu') or tensor.to('cuda')")
