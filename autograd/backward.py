"""Backpropagation: walk a graph from an output to its leaves, holding each Function to its contract.

`Tensor.backward()` (autograd/tensor.py) starts here, and so do `grad()` and `split_backward()`:

- the order is computed iteratively (an explicit stack, no recursion), so a graph tens of
  thousands of ops deep backpropagates without hitting Python's recursion limit; children are
  visited in input order, so the order, and every floating-point sum, is the same on every run;
- each Function's `backward` gets the summed gradient of its output and returns one gradient
  per input (a tuple or a list; a bare array for one input); gradients meeting at a tensor are added;
- leaves (tensors made by the user, such as parameters) accumulate into `.grad` with `+=`, so
  gradients of several backward calls add up until zeroed;
- the graph is freed as it is consumed unless `retain_graph=True`: a second backward through a
  freed graph is an error, not silent zeros;
- before a Function's backward runs, the arrays it saved are checked against the stamps taken
  after its forward (autograd/saved.py): an array changed in between is named, not used;
- every gradient a backward returns is checked against its input's shape and dtype, so a
  backward that forgets to unbroadcast, loses precision, or returns a mask without its `* grad`
  is named where it happens (BackwardError: the Function, the input, the likely cause);
- the `grad` a backward receives is read-only (NumPy): a backward that writes into it fails at
  once, naming the Function, instead of corrupting the gradient of another op that was handed
  the same array, or the caller's array. CuPy has no read-only arrays: there the caller's array
  is copied, and `debug_backward()` (which check_backward turns on) gives each backward a
  private copy and compares it afterwards. debug_backward() also compares exact copies of the
  saved arrays after each backward, and rejects a gradient returned for an input that cannot
  have one (an integer array; a number or array that was not a Tensor).

`split_backward(output, weights)` backpropagates in two halves (zero-bubble pipelines): every
gradient but the weights' now, the weights' on `.run()`, from the same Functions' backward
called twice through `needs_input_grad`; together bit for bit `backward()`.

Left out: gradients of non-leaf tensors (`retain_grad`), hooks, double backward.
"""
from __future__ import annotations

import numpy as np

from . import backend, profiler, saved
from .errors import BackwardError
from .function import is_tensor
from .mode import state


def seed_gradient(tensor, grad, who: str):
    """The gradient backpropagation from `tensor` starts with: `grad` checked, or 1 for a one-element tensor."""
    if not tensor.requires_grad:
        raise RuntimeError(
            f"{who} on a tensor that does not require grad: no input of the computation "
            "had requires_grad=True, or it was computed under no_grad()")
    if tensor.graph_freed:
        raise RuntimeError(
            f"{who} through a graph that was already freed by an earlier backward(); "
            "pass retain_graph=True to the first backward() to backpropagate twice")
    xp = tensor.xp
    if grad is None:
        if tensor.data.size != 1:
            raise RuntimeError(
                f"{who} on a tensor of shape {tensor.shape} needs a gradient of that shape: "
                "call .sum() or .mean() first, or pass grad=")
        return xp.ones_like(tensor.data)
    given = grad.data if is_tensor(grad) else grad
    grad = xp.asarray(given, dtype=tensor.dtype)
    if grad.shape != tensor.shape:
        raise ValueError(f"{who}: grad has shape {grad.shape} but the tensor has shape {tensor.shape}")
    if grad is given and backend.is_cupy_array(grad):
        grad = grad.copy()  # no read-only arrays on CuPy: the caller's array must stay untouched
    return grad


def accumulate(leaf, g) -> None:
    """leaf.grad += g (a copy of g, in the leaf's dtype, for the first gradient)."""
    if leaf.grad is None:
        leaf.grad = g.astype(leaf.data.dtype, copy=True)
    else:
        leaf.grad += g


def reverse_topological_order(root) -> list:
    """Tensors that require grad reachable from root, each after every tensor that consumes it (root first)."""
    order, visited = [], set()
    stack = [(root, False)]
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


def backpropagate(root, grad, retain_graph: bool, on_leaf, split: "WeightGradients | None" = None) -> None:
    """Send `grad` from `root` back through its graph; call on_leaf(leaf, gradient) at each leaf.

    With `split`, a Function taking one of split's weights computes only its other inputs'
    gradients here and is queued on `split` to compute the weights' later (split_backward).
    """
    __tracebackhide__ = True  # pytest shows the caller's line and the failing backward, not the engine
    grads = {id(root): grad}  # id(tensor) -> gradient flowing into it
    debug = state.debug
    for node in reverse_topological_order(root):
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
            input_grads = call_backward(fn, g, debug)
        else:
            input_grads = split.input_half(fn, g, deferred, debug)
        input_grads = _one_per_input(fn, input_grads)
        for index, inp in enumerate(inputs):
            ig = input_grads[index]
            if ig is None or index in deferred:
                continue
            if not inp.requires_grad:
                if debug:
                    _check_no_gradient_expected(fn, index, ig)
                continue
            data = inp.data
            try:
                wrong = ig.shape != data.shape or (ig.dtype is not data.dtype and ig.dtype != data.dtype)
            except AttributeError:
                wrong = True
            if wrong:
                ig = checked_gradient(fn, index, ig, g)
            key = id(inp)
            previous = grads.get(key)
            grads[key] = ig if previous is None else previous + ig
        if not retain_graph:
            node.grad_fn = None
            node.graph_freed = True
            if not deferred:
                fn.inputs = ()        # a deferred Function keeps its inputs (the weights) until W


def _one_per_input(fn, input_grads) -> tuple:
    """What fn.backward returned, as a tuple of one gradient per input (a list is a sequence too)."""
    __tracebackhide__ = True
    if type(input_grads) is not tuple:
        input_grads = tuple(input_grads) if type(input_grads) is list else (input_grads,)
    if len(input_grads) != len(fn.inputs):
        raise BackwardError(f"{fn.name}.backward returned {len(input_grads)} gradients for {len(fn.inputs)} inputs: "
                            "return one per input, in forward's order (None for an input that needs none)",
                            fn.name, "count")
    return input_grads


def call_backward(fn, g, debug: bool):
    """fn.backward(g): its saved arrays checked first, g read-only (NumPy), and in debug mode a
    private copy of g compared afterwards, as are the saved arrays."""
    __tracebackhide__ = True
    guarded = fn.saved_guard
    if guarded is not None:
        saved.check(fn, guarded)
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
    if original is not None and not saved.same_values(original, g):
        raise BackwardError(f"{fn.name}.backward modified its grad in place: a backward must not write into grad "
                            f"(another op, or the caller, may hold the same array); compute a new array instead: "
                            f"`grad * s`, not `grad *= s`", fn.name, "in-place")
    if guarded is not None and guarded[0]:
        saved.check(fn, guarded, after_backward=True)
    return input_grads


def _check_no_gradient_expected(fn, index: int, grad) -> None:
    """debug_backward: a gradient for input `index`, which does not require one, must not be one it cannot have."""
    __tracebackhide__ = True
    inp = fn.inputs[index]
    if not np.issubdtype(inp.dtype, np.floating):
        why = f"a {inp.dtype} array (integers and booleans have no gradient)"
    elif index in fn.non_tensor_inputs:
        why = "not a Tensor (a number or an array given to apply, used as a constant)"
    else:
        return                                           # a float constant: its gradient is unused, not wrong
    got = f"a {type(grad).__name__}" if not hasattr(grad, "dtype") else f"a {grad.dtype} array"
    raise BackwardError(f"{fn.name}.backward returned {got} for input {index}, which cannot have a gradient: it is "
                        f"{why}. Return None for it (self.needs_input_grad[{index}] is False)",
                        fn.name, "no-gradient", index)


def checked_gradient(fn, index: int, grad, out_grad):
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
    if grad.dtype.kind in "biu":
        kind = "bool" if grad.dtype.kind == "b" else f"integer ({grad.dtype})"
        raise BackwardError(f"{said} a {kind} gradient for input {index}, a {inp.dtype} tensor: gradients are "
                            f"floating-point. A mask or an index returned as the gradient usually means a "
                            f"forgotten `* grad`: return `grad * mask`, not `mask`", fn.name, "dtype", index)
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


def grad(output, inputs, grad_output=None, retain_graph: bool = False) -> list:
    """d(output)/d(input), times grad_output, for each tensor in `inputs`, returned as arrays.

    Unlike `output.backward()`, nothing is written to any `.grad`: an input the output does
    not depend on gets None, and leaves not listed are left alone. The list holds fresh arrays
    (never two references to one array, never the caller's grad_output).
    """
    __tracebackhide__ = True
    inputs = list(inputs)
    seed = seed_gradient(output, grad_output, "grad()")
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

    backpropagate(output, seed, retain_graph, collect)
    return results


class WeightGradients:
    """The weight half of a split backward: each Function taking a weight, in the order the
    backward reached it, with its output's gradient (what W costs in memory); `run()` it."""

    def __init__(self, weights, retain_graph: bool):
        self.weight_ids = set()
        for w in weights:
            if not is_tensor(w) or not w.is_leaf:
                raise ValueError("split_backward: weights must be leaf tensors (parameters), got "
                                 + (f"a {type(w).__name__}" if not is_tensor(w) else f"a result of {w.grad_fn.name}"))
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
            return call_backward(fn, g, debug)
        finally:
            fn.needs_input_grad = needs

    def run(self) -> None:
        """W: each queued backward for its weights only; a weight's parts (a tied embedding has two)
        are added in backward()'s order and accumulated into `.grad` once, so bit for bit backward()'s."""
        __tracebackhide__ = True
        if self.done:
            raise RuntimeError("WeightGradients.run() was already called: each split backward's weight half runs once")
        self.done = True
        debug = state.debug
        sums = {}  # id(weight) -> [weight, summed gradient], in the order the weights are reached
        for fn, g, weights in self.work:
            needs = fn.needs_input_grad
            fn.needs_input_grad = tuple(i in weights for i in range(len(needs)))
            try:
                input_grads = _one_per_input(fn, call_backward(fn, g, debug))
            finally:
                fn.needs_input_grad = needs
            for index in weights:
                ig = input_grads[index]
                if ig is None:
                    continue
                weight = fn.inputs[index]
                if ig.shape != weight.shape or ig.dtype != weight.dtype:
                    ig = checked_gradient(fn, index, ig, g)
                entry = sums.get(id(weight))
                if entry is None:
                    sums[id(weight)] = [weight, ig]
                else:
                    entry[1] = entry[1] + ig
            if not self.retain_graph:
                fn.inputs = ()
        self.work = []
        for weight, g in sums.values():
            accumulate(weight, g)


def split_backward(output, weights, grad=None, retain_graph: bool = False) -> WeightGradients:
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

    The graph is freed as B consumes it, except what the queued Functions saved for W, which
    the saved-array guard checks again when W runs: change no weight between B and W.
    """
    __tracebackhide__ = True
    split = WeightGradients(weights, retain_graph)
    backpropagate(output, seed_gradient(output, grad, "split_backward()"), retain_graph, accumulate, split)
    return split
