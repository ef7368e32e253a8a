"""The saved-array guard: what a Function saved for backward must be unchanged when backward reads it.

A Function's forward saves arrays on `self` for its backward (`self.x = x`). Many of them are
shared with the rest of the program: an input's data (the caller's tensor, a parameter), the
output (the tensor the caller gets back), a setting (a mask, an index). Change one in place
between the forward and the backward (`y.data *= 0`, an optimizer step between them, an op
whose forward writes into its input) and backward computes a wrong gradient, silently.
PyTorch catches this with a version counter that its own in-place ops bump; our arrays are
plain NumPy and CuPy arrays that any code may write, so the guard compares contents:

    default, NumPy       after forward, a fingerprint of each input, output or setting that the
                         Function saved (itself, a view or a part of it; one fingerprint each,
                         of the whole array): its bytes when it has at most 256 elements; else
                         16 runs of 16 consecutive elements, from its first row to its last
                         element, each run further along the columns (so up to 256 columns
                         are read). Checked again when backward reaches the Function, before
                         its backward runs. So any change to a small array, and to a big one
                         any scaling, shift, overwrite or optimizer step, any change to a whole
                         column (of up to 256) or to more than a few percent of its elements,
                         is caught; a change to a few scattered elements, or to one row of a big
                         array, can slip by. Runs, not scattered elements: a run costs one or
                         two cache misses, where 256 scattered elements cost 256, and reading
                         every row of every saved array would cost a few percent of a training
                         step; this costs about 1% (docs/performance.md). Arrays the Function
                         made itself are not checked: nothing else can reach them.
    debug_backward()     a copy of every saved array, its own ones too, compared exactly before
                         and after the Function's backward (so a backward that changes what it
                         saved is named as well); NumPy and CuPy alike.
    CuPy, default        off: a check would make the host wait for the GPU at every op.
    saved_array_checks(False)   off (autograd/mode.py), for the Functions recorded inside.

A changed array raises BackwardError (cause "saved", or "saved in backward" when the Function's
own backward changed it) naming the Function, which of its inputs, its output or which setting
the array is, the attribute it was saved as, and what to do.

Looked at: arrays saved directly on the Function, in a list or tuple saved on it, and on a
Function saved on it (a fused Function running another's forward). Left out: deeper nesting,
arrays inside other objects (a NamedTuple of tables), Tensors saved whole.
"""
from __future__ import annotations

import functools

import numpy as np

from . import backend
from .errors import BackwardError

OUTPUT = "output"       # the kind of a saved array that is (a view of) the Function's output
RUNS, RUN = 16, 16      # a big array's fingerprint: 16 runs of 16 consecutive elements (a smaller one: all of it)
_CUPY = backend.cupy_loaded()   # CuPy arrays can be saved (in debug mode they are guarded too)


def fingerprint(a) -> bytes:
    """Bytes that change when `a` (a NumPy array) changes in a way the module docstring lists."""
    if a.size <= RUNS * RUN:
        return a.tobytes()
    positions = _sample_positions(a.shape)
    if a.flags.c_contiguous:
        return a.reshape(-1).take(positions).tobytes()
    return a[_unravelled(a.shape)].tobytes()


@functools.lru_cache(maxsize=256)
def _sample_positions(shape: tuple):
    """The flat positions a fingerprint reads: RUNS runs of RUN consecutive elements, from the first
    row to the last (the last run ends at the last element), each run in the next columns."""
    n = int(np.prod(shape))
    C = shape[-1] if len(shape) > 1 and shape[-1] >= RUN else n        # the length of a row
    rows = n // C
    starts = []
    for r in range(RUNS):
        if rows == 1:
            starts.append(r * (n - RUN) // (RUNS - 1))                   # one row: spread along it
        else:
            column = C - RUN if r == RUNS - 1 else (r * RUN) % (C - RUN + 1)
            starts.append((r * (rows - 1) // (RUNS - 1)) * C + column)
    return (np.asarray(starts)[:, None] + np.arange(RUN)).reshape(-1)


@functools.lru_cache(maxsize=256)
def _unravelled(shape: tuple) -> tuple:
    return np.unravel_index(_sample_positions(shape), shape)


def same_values(a, b) -> bool:
    """Equal element by element (NaN equal to NaN): two arrays of one module and one shape."""
    if a.shape != b.shape:
        return False
    xp = backend.get_array_module(a)
    if a.dtype.kind not in "fc":
        return bool(xp.all(a == b))
    return bool(xp.all((a == b) | ((a != a) & (b != b))))


def _root(a):
    """The array owning a's memory (a itself if it owns it): views of one array share it."""
    base = a.base if type(a) is np.ndarray else getattr(a, "base", None)
    while base is not None and type(base) is type(a):
        a, base = base, getattr(base, "base", None)
    return a


def _is_array(value) -> bool:
    return type(value) is np.ndarray or (_CUPY and backend.is_cupy_array(value))


_ENGINE = frozenset(("inputs", "needs_input_grad", "non_tensor_inputs", "saved_guard"))   # not what forward saved
_PLAIN = frozenset((int, float, bool, str, bytes, type(None), np.dtype, slice, dict))     # never an array or Function


def guard(fn, inputs, out, settings: dict, exact: bool):
    """What Function.apply keeps on `fn` after its forward: (exact, entries), or None if nothing is guarded.

    entries: (kind, name, array, stamp). kind is an input's index, OUTPUT, a setting's keyword,
    or None (the Function's own array: guarded in exact mode only); name is the attribute it
    was saved as. By default there is one entry per input, output or setting that fn saved
    any of (itself, a view, a part), and the array stamped is that input's data (the output,
    the setting) as a whole: one fingerprint of one array, however many views of it were
    saved. When `exact`, one entry per saved array, stamped with a copy of it.
    """
    saved = []                                           # [(attribute name, array)]
    _find(vars(fn), "", saved, nested=True)
    if not saved:
        return None
    owners = {}                                          # id(root array) -> (kind, the array watched)
    for index, tensor in enumerate(inputs):
        owners.setdefault(id(_root(tensor.data)), (index, tensor.data))
    owners.setdefault(id(_root(out)), (OUTPUT, out))
    for key, value in settings.items():
        if _is_array(value):
            owners.setdefault(id(_root(value)), (key, value))
        elif type(value) is tuple or type(value) is list:               # an index: a tuple of arrays
            for j, item in enumerate(value):
                if _is_array(item):
                    owners.setdefault(id(_root(item)), (f"{key}[{j}]", item))
    entries, watched_kinds = [], set()
    for name, array in saved:
        kind, watched = owners.get(id(_root(array)), (None, None))
        if exact:
            entries.append((kind, name, array, array.copy()))
        elif kind is not None and kind not in watched_kinds and type(watched) is np.ndarray:
            watched_kinds.add(kind)
            entries.append((kind, name, watched, fingerprint(watched)))
    return (exact, tuple(entries)) if entries else None


def _find(attributes: dict, prefix: str, found: list, nested: bool) -> None:
    """(name, array) for each array among `attributes`, in a list or tuple there, or on a Function there."""
    ndarray = np.ndarray
    for name, value in attributes.items():
        kind = type(value)
        if kind is ndarray or (_CUPY and backend.is_cupy_array(value)):
            found.append((prefix + name, value))
        elif kind in _PLAIN or name in _ENGINE:
            continue
        elif kind is tuple or kind is list:
            for j, item in enumerate(value):
                if type(item) is ndarray or (_CUPY and backend.is_cupy_array(item)):
                    found.append((f"{prefix}{name}[{j}]", item))
        elif nested and hasattr(value, "needs_input_grad") and hasattr(value, "backward"):   # a Function inside
            _find(vars(value), f"{prefix}{name}.", found, nested=False)


def check(fn, guarded, after_backward: bool = False) -> None:
    """Raise a BackwardError if an array fn saved has changed since guard() stamped it.

    after_backward=True: the check that follows fn's backward (exact mode only), whose message
    blames the backward.
    """
    __tracebackhide__ = True
    exact, entries = guarded
    for kind, name, array, stamp in entries:
        if not (same_values(stamp, array) if exact else stamp == fingerprint(array)):
            raise BackwardError(_message(fn, kind, name, array, after_backward), fn.name,
                                "saved in backward" if after_backward else "saved", kind if isinstance(kind, int) else None)


def _message(fn, kind, name: str, array, after_backward: bool) -> str:
    what = _describe(fn, kind, array)
    if after_backward:
        return (f"{fn.name}.backward changed {what} in place, saved for it as `.{name}`: a backward must not "
                f"write into what forward saved (the caller owns it, and the graph may be backpropagated again "
                f"with retain_graph=True); compute new arrays instead (`x * s`, not `x *= s`)")
    return (f"{fn.name}: {what}, saved for its backward as `.{name}`, was changed in place after the forward "
            f"pass, so backward would compute a wrong gradient from it. Change a copy instead (`t.clone()` "
            f"keeps it in the graph, `t.data.copy()` does not), or change it after backward()")


def _describe(fn, kind, array) -> str:
    shape = f"a {tuple(array.shape)} {array.dtype} array"
    if kind == OUTPUT:
        return f"its output ({shape})"
    if isinstance(kind, int):
        inputs = fn.inputs
        tensor = inputs[kind] if kind < len(inputs) else None
        label = f" '{tensor.name}'" if tensor is not None and tensor.name else ""
        view = "" if tensor is None or array is tensor.data else ", a view of it"
        return f"its input {kind}{label} ({shape}{view})"
    if isinstance(kind, str):
        return f"its setting `{kind}` ({shape})"
    return f"an array it made itself ({shape})"
