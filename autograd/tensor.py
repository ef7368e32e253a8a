"""Tensor: an xp array with a gradient, and reverse-mode backpropagation over the graph.

A Tensor wraps `data` (a NumPy or CuPy array). When it `requires_grad`, ops record
the Function that produced each result (`grad_fn`), and `backward()` walks that graph
from the output to the leaves in a reverse topological order:

- the order is computed iteratively (an explicit stack, no recursion), so a graph
  tens of thousands of ops deep backpropagates without hitting Python's recursion
  limit; children are visited in input order, so the order, and every floating-point
  sum, is the same on every run;
- each Function's `backward` gets the summed gradient of its output and returns one
  gradient per input; gradients meeting at a tensor are added;
- leaves (tensors made by the user, such as parameters) accumulate into `.grad` with
  `+=`, so gradients of several backward calls add up until zeroed;
- the graph is freed as it is consumed unless `retain_graph=True`: a second backward
  through a freed graph is an error, not silent zeros;
- every gradient a backward returns is checked against its input's shape and dtype, so
  a backward that forgets to unbroadcast, or loses precision, is named where it happens
  (BackwardError: the Function, the input, the likely cause), not three ops later;
- the `grad` a backward receives is read-only (NumPy): a backward that writes into it
  fails at once, naming the Function, instead of corrupting the gradient of another op
  that was handed the same array, or the caller's array. CuPy has no read-only arrays:
  there the caller's array is copied, and `debug_backward()` (which check_backward turns
  on) gives each backward a private copy and compares it afterwards.

`split_backward(output, weights)` backpropagates in two halves (zero-bubble pipelines):
every gradient but the weights' now, the weights' on `.run()`, from the same Functions'
backward called twice through `needs_input_grad`; together bit for bit `backward()`.

`no_grad()` switches recording off (evaluation, sampling, optimizer steps); the switch
is per thread, so threads can record their own graphs at the same time. `grad(output,
inputs)` returns the gradients instead of accumulating them into `.grad`: threads that
backpropagate through graphs sharing leaves (tinyllm/threads.py) use it, so no two of
them ever write the same `.grad`.

Left out: gradients of non-leaf tensors (`retain_grad`), hooks, double backward, in-place
ops on tensors that require grad, sparse and complex tensors.
"""
from __future__ import annotations

import contextlib
import threading

import numpy as np

from . import backend, profiler


class _GradModeState(threading.local):
    """Per thread: whether ops record the graph (a new thread starts with recording on), and
    whether backward runs in debug mode."""
    enabled = True
    debug = False


_GradMode = _GradModeState()


def grad_enabled() -> bool:
    """Whether ops on this thread record the graph (False inside no_grad())."""
    return _GradMode.enabled


class no_grad(contextlib.ContextDecorator):
    """Context manager and decorator: ops inside record no graph."""
    _mode = False

    def __enter__(self):
        self._previous = _GradMode.enabled
        _GradMode.enabled = self._mode
        return self

    def __exit__(self, *exc):
        _GradMode.enabled = self._previous
        return False


class enable_grad(no_grad):
    """The opposite of no_grad, for a region inside one."""
    _mode = True


class debug_backward(contextlib.ContextDecorator):
    """Context manager and decorator: backward inside it checks what the default cannot afford.

    Each Function's backward gets a private copy of its `grad`, compared with the original
    afterwards: a backward that writes into its grad is named even on CuPy, which has no
    read-only arrays (on NumPy the grad is read-only anyway). Costs one copy and one
    comparison per op, so it is for tests and `check_backward` (which turns it on), not for
    training. Per thread, like no_grad.
    """

    def __enter__(self):
        self._previous = _GradMode.debug
        _GradMode.debug = True
        return self

    def __exit__(self, *exc):
        _GradMode.debug = self._previous
        return False


class BackwardError(RuntimeError):
    """A Function's backward broke its contract (autograd/function.py); the message names the
    Function, the input and the likely cause.

    `function`: the Function's name; `input_index`: the input concerned (None when it is about
    all of them); `cause`: "shape", "dtype", "type", "count" or "in-place".
    """

    def __init__(self, message: str, function: str, cause: str, input_index: int | None = None):
        super().__init__(message)
        self.function, self.cause, self.input_index = function, cause, input_index


def _is_float(dtype) -> bool:
    return np.issubdtype(np.dtype(dtype), np.floating)


class Tensor:
    """An n-dimensional array that can record the ops applied to it, for backpropagation.

    `name=` is a label for drawings of the graph (autograd.to_dot) and nothing else.
    """

    __slots__ = ("data", "grad", "requires_grad", "grad_fn", "_freed", "name", "__weakref__")
    __array_priority__ = 1000  # make `ndarray * Tensor` call Tensor.__rmul__

    def __init__(self, data, requires_grad: bool = False, dtype=None, device: str | None = None, name: str | None = None):
        if isinstance(data, Tensor):
            data = data.data
        if device is not None:
            data = backend.to_device(data, device) if hasattr(data, "shape") else backend.module_for(device).asarray(data)
        xp = backend.get_array_module(data)
        if isinstance(data, xp.ndarray):
            if dtype is not None and data.dtype != np.dtype(dtype):
                data = data.astype(dtype)
        else:  # Python scalars and lists, or NumPy scalars
            was_array_scalar = isinstance(data, np.generic)
            data = xp.asarray(data, dtype=dtype)
            if dtype is None and not was_array_scalar and data.dtype == np.float64:
                data = data.astype(backend.DEFAULT_DTYPE)
        if requires_grad and not _is_float(data.dtype):
            raise TypeError(
                f"only floating-point tensors can require gradients, got dtype {data.dtype}; "
                "convert first, e.g. Tensor(x.astype('float32'), requires_grad=True)")
        self.data = data
        self.grad = None
        self.requires_grad = bool(requires_grad)
        self.grad_fn = None
        self._freed = False
        self.name = name

    @classmethod
    def constant(cls, data) -> "Tensor":
        """A Tensor that needs no gradient around `data`, an xp array used as it is (no copy,
        no dtype or device change, no checks): the fast way to hand an array to an op."""
        t = object.__new__(cls)
        t.data = data
        t.grad = None
        t.requires_grad = False
        t.grad_fn = None
        t._freed = False
        t.name = None
        return t

    # ---- array facts ---------------------------------------------------------------
    @property
    def shape(self) -> tuple:
        return self.data.shape

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def ndim(self) -> int:
        return self.data.ndim

    @property
    def size(self) -> int:
        return self.data.size

    @property
    def device(self) -> str:
        return backend.device_of(self.data)

    @property
    def xp(self):
        return backend.get_array_module(self.data)

    @property
    def is_leaf(self) -> bool:
        return self.grad_fn is None

    def __len__(self) -> int:
        return len(self.data)

    def __repr__(self) -> str:
        grad = ", requires_grad=True" if self.requires_grad else ""
        fn = f", grad_fn={self.grad_fn.name}" if self.grad_fn is not None else ""
        return f"Tensor({backend.to_numpy(self.data)!r}{grad}{fn})"

    # ---- conversions ---------------------------------------------------------------
    def item(self) -> float:
        if self.data.size != 1:
            raise ValueError(f"item() needs a tensor with one element, this one has shape {self.shape}")
        return self.data.reshape(()).item()

    def numpy(self) -> np.ndarray:
        """The values as a NumPy array (copied from the GPU if needed)."""
        return backend.to_numpy(self.data)

    def tolist(self):
        return self.numpy().tolist()

    def detach(self) -> "Tensor":
        """The same values, cut from the graph (shares memory)."""
        return Tensor.constant(self.data)

    def to(self, device: str) -> "Tensor":
        """A copy on `device` ('cpu' or 'cuda'), cut from the graph; self if already there."""
        if device == self.device:
            return self
        moved = Tensor.constant(backend.to_device(self.data, device))
        moved.requires_grad = self.requires_grad and self.is_leaf
        return moved

    @property
    def graph_freed(self) -> bool:
        """True once a backward() without retain_graph=True has freed the graph behind this tensor."""
        return self._freed

    def zero_grad(self) -> None:
        self.grad = None

    # ---- backpropagation -----------------------------------------------------------
    def backward(self, grad=None, retain_graph: bool = False) -> None:
        """Accumulate d(self)/d(leaf) * grad into every leaf's `.grad`.

        `grad` defaults to 1 for a one-element tensor; any other tensor needs it given.
        """
        __tracebackhide__ = True  # pytest shows the caller's line and the failing backward, not the engine
        _backpropagate(self, self._seed_gradient(grad, "backward()"), retain_graph, Tensor._accumulate)

    def _seed_gradient(self, grad, who: str):
        """The gradient backpropagation starts from: `grad` checked, or 1 for a one-element tensor."""
        if not self.requires_grad:
            raise RuntimeError(
                f"{who} on a tensor that does not require grad: no input of the computation "
                "had requires_grad=True, or it was computed under no_grad()")
        if self._freed:
            raise RuntimeError(
                f"{who} through a graph that was already freed by an earlier backward(); "
                "pass retain_graph=True to the first backward() to backpropagate twice")
        xp = self.xp
        if grad is None:
            if self.data.size != 1:
                raise RuntimeError(
                    f"{who} on a tensor of shape {self.shape} needs a gradient of that shape: "
                    "call .sum() or .mean() first, or pass grad=")
            return xp.ones_like(self.data)
        given = grad.data if isinstance(grad, Tensor) else grad
        grad = xp.asarray(given, dtype=self.dtype)
        if grad.shape != self.shape:
            raise ValueError(f"{who}: grad has shape {grad.shape} but the tensor has shape {self.shape}")
        if grad is given and backend.is_cupy_array(grad):
            grad = grad.copy()  # no read-only arrays on CuPy: the caller's array must stay untouched
        return grad

    def _accumulate(self, g) -> None:
        if self.grad is None:
            self.grad = g.astype(self.data.dtype, copy=True)
        else:
            self.grad += g

    def _reverse_topological_order(self) -> list:
        """Nodes that require grad, each after every node that consumes it (outputs first)."""
        order, visited = [], set()
        stack = [(self, False)]
        while stack:
            node, expanded = stack.pop()
            if expanded:
                order.append(node)
                continue
            if id(node) in visited:
                continue
            visited.add(id(node))
            stack.append((node, True))
            if node.grad_fn is not None:
                for inp in reversed(node.grad_fn.inputs):
                    if inp.requires_grad and id(inp) not in visited:
                        stack.append((inp, False))
        order.reverse()
        return order

    def to_dot(self, names=None) -> str:
        """The graph that produced this tensor, as Graphviz DOT text: autograd.to_dot(self, names)."""
        from .graph import to_dot
        return to_dot(self, names=names)

    # ---- operators (defined in autograd.ops, attached in autograd/__init__) --------------
    def __hash__(self):
        return id(self)


def _backpropagate(root: Tensor, grad, retain_graph: bool, on_leaf, split: "WeightGradients | None" = None) -> None:
    """Send `grad` from `root` back through its graph; call on_leaf(leaf, gradient) at each leaf.

    With `split`, a Function taking one of split's weights computes only its other inputs'
    gradients here and is queued on `split` to compute the weights' later (split_backward).
    """
    __tracebackhide__ = True
    grads = {id(root): grad}  # id(tensor) -> gradient flowing into it
    debug = _GradMode.debug
    for node in root._reverse_topological_order():
        g = grads.pop(id(node), None)
        fn = node.grad_fn
        if fn is None:
            if g is not None:
                on_leaf(node, g)
            continue
        if g is None:
            continue
        inputs = fn.inputs
        deferred = split.defer(fn, g) if split is not None else ()  # indices of the weights among inputs
        if not deferred:
            input_grads = _call_backward(fn, g, debug)
        else:
            input_grads = split.input_half(fn, g, deferred, debug)
        if not isinstance(input_grads, tuple):
            input_grads = (input_grads,)
        if len(input_grads) != len(inputs):
            raise BackwardError(f"{fn.name}.backward returned {len(input_grads)} gradients for {len(inputs)} inputs: "
                                "return one per input, in forward's order (None for an input that needs none)",
                                fn.name, "count")
        for index, inp in enumerate(inputs):
            ig = input_grads[index]
            if ig is None or not inp.requires_grad or index in deferred:
                continue
            data = inp.data
            try:
                wrong = ig.shape != data.shape or (ig.dtype is not data.dtype and ig.dtype != data.dtype)
            except AttributeError:
                wrong = True
            if wrong:
                ig = _checked_gradient(fn, index, ig, g)
            key = id(inp)
            previous = grads.get(key)
            grads[key] = ig if previous is None else previous + ig
        if not retain_graph:
            node.grad_fn = None
            node._freed = True
            if not deferred:
                fn.inputs = ()        # a deferred Function keeps its inputs (the weights) until W


def _call_backward(fn, g, debug: bool):
    """fn.backward(g), with g read-only (NumPy) and, in debug mode, a private copy compared afterwards."""
    __tracebackhide__ = True
    original = None
    if debug:
        original, g = g, g.copy()
    if type(g) is np.ndarray:
        g = g.view()                  # a read-only view: the array itself stays writable for its owner
        g.setflags(write=False)       # (half the cost of g.flags.writeable = False)
    try:
        if profiler.active() is None:
            input_grads = fn.backward(g)
        else:
            input_grads = profiler.timed("backward", fn.name, fn.backward, g)
    except ValueError as exc:
        if "read-only" not in str(exc):
            raise
        raise BackwardError(f"{fn.name}.backward wrote into a read-only array, most likely the grad it was "
                            f"given: a backward must not modify grad in place (another op, or the caller, may hold "
                            f"the same array); compute a new array instead: `grad * s`, not `grad *= s`",
                            fn.name, "in-place") from exc
    if original is not None and not _same_values(original, g):
        raise BackwardError(f"{fn.name}.backward modified its grad in place: a backward must not write into grad "
                            f"(another op, or the caller, may hold the same array); compute a new array instead: "
                            f"`grad * s`, not `grad *= s`", fn.name, "in-place")
    return input_grads


def _same_values(a, b) -> bool:
    """Equal element by element, NaN equal to NaN."""
    xp = backend.get_array_module(a)
    return bool(xp.all((a == b) | ((a != a) & (b != b))))


def _checked_gradient(fn, index: int, grad, out_grad):
    """The gradient fn.backward returned for input `index`, whose shape or dtype is not the input's.

    A wider float dtype than the input's, when fn's output has it too, is a mixed-dtype op
    (float32 * float64 computes in float64): the gradient is cast to the input's dtype.
    Anything else breaks the contract and raises a BackwardError naming fn, the input and
    the likely cause.
    """
    __tracebackhide__ = True
    inp = fn.inputs[index]
    said = f"{fn.name}.backward returned"
    if not (hasattr(grad, "shape") and hasattr(grad, "dtype")):
        raise BackwardError(f"{said} a {type(grad).__name__} for input {index}, not an array: return an array "
                            f"shaped like the input, {tuple(inp.shape)} (or None)", fn.name, "type", index)
    if grad.shape != inp.shape:
        raise BackwardError(f"{said} a gradient of shape {tuple(grad.shape)} for input {index}, which has shape "
                            f"{tuple(inp.shape)} (the gradient it was given has shape {tuple(out_grad.shape)}): "
                            + _shape_hint(fn, index, tuple(grad.shape)), fn.name, "shape", index)
    widened = np.promote_types(grad.dtype, inp.dtype) == grad.dtype and grad.dtype == out_grad.dtype
    if widened and np.issubdtype(grad.dtype, np.floating):
        return grad.astype(inp.dtype)
    hint = ("precision is lost" if np.promote_types(grad.dtype, inp.dtype) == inp.dtype else "the dtypes differ")
    raise BackwardError(f"{said} a {grad.dtype} gradient for input {index}, a {inp.dtype} tensor ({hint}): "
                        f"return each gradient in its input's dtype; look for a constant or an astype of "
                        f"another dtype in forward or backward", fn.name, "dtype", index)


def _shape_hint(fn, index: int, grad_shape: tuple) -> str:
    """The likely reason a gradient of grad_shape came back for fn's input `index`."""
    shape = tuple(fn.inputs[index].shape)
    try:
        broadcast = np.broadcast_shapes(grad_shape, shape) == grad_shape
    except ValueError:
        broadcast = False
    if broadcast:
        return ("missing unbroadcast? The forward broadcast this input, so its gradient must be summed back "
                "to its shape: return autograd.unbroadcast(grad_x, x_shape), with x_shape saved in forward")
    same = [j for j, t in enumerate(fn.inputs) if j != index and tuple(t.shape) == grad_shape]
    if same:
        return (f"gradients in the wrong order? Input {same[0]} has that shape; return them in the order "
                "forward takes its inputs")
    if int(np.prod(grad_shape)) == int(np.prod(shape)):
        return "missing reshape? The sizes agree: reshape the gradient to the input's shape"
    return "a backward returns one gradient per input, shaped like that input"


def grad(output: Tensor, inputs, grad_output=None, retain_graph: bool = False) -> list:
    """d(output)/d(input), times grad_output, for each tensor in `inputs`, returned as arrays.

    Unlike `output.backward()`, nothing is written to any `.grad`: an input the output does
    not depend on gets None, and leaves not listed are left alone. The list holds fresh arrays
    (never two references to one array, never the caller's grad_output).
    """
    __tracebackhide__ = True
    inputs = list(inputs)
    seed = output._seed_gradient(grad_output, "grad()")
    wanted = {id(t): i for i, t in enumerate(inputs)}
    results = [None] * len(inputs)
    taken = {id(seed)}

    def collect(leaf, g):
        i = wanted.get(id(leaf))
        if i is None:
            return
        read_only = type(g) is np.ndarray and not g.flags.writeable   # a grad passed through unchanged (Add)
        if id(g) in taken or g.dtype != leaf.dtype or read_only:
            g = g.astype(leaf.dtype, copy=True)
        taken.add(id(g))
        results[i] = g

    _backpropagate(output, seed, retain_graph, collect)
    return results


class WeightGradients:
    """The weight half of a split backward: each Function taking a weight, in the order the
    backward reached it, with its output's gradient (what W costs in memory); `run()` it."""

    def __init__(self, weights, retain_graph: bool):
        self.weight_ids = set()
        for w in weights:
            if not isinstance(w, Tensor) or not w.is_leaf:
                raise ValueError("split_backward: weights must be leaf tensors (parameters), got "
                                 + (f"a {type(w).__name__}" if not isinstance(w, Tensor) else f"a result of {w.grad_fn.name}"))
            self.weight_ids.add(id(w))
        self.retain_graph = retain_graph
        self.work = []          # [(Function, gradient of its output, indices of its weight inputs)]
        self.done = False

    def __len__(self) -> int:
        return len(self.work)

    def defer(self, fn, g) -> tuple:
        """Indices of fn's inputs that are weights wanting a gradient (fn is queued for W), or ()."""
        needs = fn.needs_input_grad
        weights = tuple(i for i, inp in enumerate(fn.inputs) if needs[i] and id(inp) in self.weight_ids)
        if weights:
            self.work.append((fn, g, weights))
        return weights

    def input_half(self, fn, g, weights: tuple, debug: bool):
        """B: fn's backward with its weights masked out of needs_input_grad (skipped when nothing else needs one)."""
        __tracebackhide__ = True
        needs = fn.needs_input_grad
        others = tuple(n and i not in weights for i, n in enumerate(needs))
        if True not in others:
            return (None,) * len(needs)
        fn.needs_input_grad = others
        try:
            return _call_backward(fn, g, debug)
        finally:
            fn.needs_input_grad = needs

    def run(self) -> None:
        """W: each queued backward for its weights only; a weight's parts (a tied embedding has two)
        are added in backward()'s order and accumulated into `.grad` once, so bit for bit backward()'s."""
        __tracebackhide__ = True
        if self.done:
            raise RuntimeError("WeightGradients.run() was already called: each split backward's weight half runs once")
        self.done = True
        debug = _GradMode.debug
        sums = {}  # id(weight) -> [weight, summed gradient], in the order the weights are reached
        for fn, g, weights in self.work:
            needs = fn.needs_input_grad
            fn.needs_input_grad = tuple(i in weights for i in range(len(needs)))
            try:
                input_grads = _call_backward(fn, g, debug)
            finally:
                fn.needs_input_grad = needs
            if not isinstance(input_grads, tuple):
                input_grads = (input_grads,)
            if len(input_grads) != len(fn.inputs):
                raise BackwardError(f"{fn.name}.backward returned {len(input_grads)} gradients for {len(fn.inputs)} "
                                    "inputs: return one per input, in forward's order", fn.name, "count")
            for index in weights:
                ig = input_grads[index]
                if ig is None:
                    continue
                weight = fn.inputs[index]
                if ig.shape != weight.shape or ig.dtype != weight.dtype:
                    ig = _checked_gradient(fn, index, ig, g)
                entry = sums.get(id(weight))
                if entry is None:
                    sums[id(weight)] = [weight, ig]
                else:
                    entry[1] = entry[1] + ig
            if not self.retain_graph:
                fn.inputs = ()
        self.work = []
        for weight, g in sums.values():
            weight._accumulate(g)


def split_backward(output: Tensor, weights, grad=None, retain_graph: bool = False) -> WeightGradients:
    """`output.backward(grad)` in two halves: every gradient but the weights' now, theirs on `.run()`.

        deferred = split_backward(loss, model.parameters())   # B: inputs' and activations' gradients
        send(x.grad)                                          # e.g. upstream, at once
        deferred.run()                                        # W: the parameters' .grad, later

    `weights`: leaf tensors (parameters). Functions taking one of them as an input are called
    here with it masked out of `needs_input_grad` and queued; `run()` calls them again for the
    weights only. Other leaves (a stage's input) get their `.grad` now. B then W accumulates
    exactly what backward() does, bit for bit, for Functions that honour `needs_input_grad`
    (those that do not are only slower: a gradient for a masked input is ignored). Only
    direct inputs are split: a weight reaching its consumer through another op (`w.T @ x`)
    has that consumer's work done in B, and only the cheap op between deferred.

    The graph is freed as B consumes it, except what the queued Functions saved for W.
    """
    __tracebackhide__ = True
    split = WeightGradients(weights, retain_graph)
    _backpropagate(output, output._seed_gradient(grad, "split_backward()"), retain_graph, Tensor._accumulate, split)
    return split


def as_tensor(value, like: Tensor | None = None) -> Tensor:
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
