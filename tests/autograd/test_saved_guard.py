"""The saved-array guard (autograd/saved.py): an array a Function saved for backward, changed in place
before the backward reaches it, is an error naming the Function, which input, output or setting it is,
and what to do; what the project itself does in place (optimizer steps after backward, gradient
accumulation, graphs never backpropagated, a split backward) keeps working.

Before the guard, each case below backpropagated silently through the changed values: all-zero
gradients for a zeroed softmax output, layer-norm gradient rows that no longer summed to zero.
"""
import numpy as np
import pytest

import autograd
from autograd import BackwardError, Function, Tensor, debug_backward, saved_array_checks
from autograd import functional as F
from autograd.backend import get_array_module, to_numpy
from autograd.tensor import split_backward

RNG = np.random.default_rng(0)


def leaf(*shape, device="cpu"):
    return Tensor(RNG.standard_normal(shape), requires_grad=True, device=device)


def test_a_changed_output_is_named_when_backward_reaches_its_op():
    x = leaf(3, 4)
    y = F.softmax(x)
    y.data *= 0                                   # the example: x.grad used to come back all zeros
    with pytest.raises(BackwardError) as info:
        y.sum().backward()
    error = info.value
    assert (error.function, error.cause) == ("SoftmaxFunction", "saved")
    message = str(error)
    assert message.startswith("SoftmaxFunction: its output (a (3, 4) float64 array), saved for its backward as `.y`, "
                              "was changed in place after the forward pass")
    assert "t.clone()" in message and "after backward()" in message
    assert x.grad is None                         # nothing wrong reached the leaf


def test_debug_mode_catches_it_on_cuda_where_the_default_does_not_look(device):
    x = leaf(3, 4, device=device)
    with debug_backward():                        # around forward and backward: copies taken, compared
        y = F.softmax(x)
        y.data *= 0
        with pytest.raises(BackwardError, match="SoftmaxFunction: its output"):
            y.sum().backward()


@pytest.mark.parametrize("change", ["all", "one row", "one element"])
def test_a_changed_input_is_named(change):
    x = leaf(6, 8)
    y = F.layer_norm(x)
    if change == "all":
        x.data += 1.0
    elif change == "one row":
        x.data[3] *= 2.0
    else:
        x.data[5, 7] = 10.0
    with pytest.raises(BackwardError, match=r"LayerNormFunction: its input 0 \(a \(6, 8\) float64 array\), saved "
                                            r"for its backward as `\.x`") as info:
        y.sum().backward()
    assert info.value.input_index == 0


def test_a_big_array_scaled_or_changed_in_a_column_is_caught_and_debug_mode_sees_any_element():
    """The default reads a big array in a 256-element sample; debug_backward() compares all of it."""
    def run(change, debug=False):
        x = leaf(300, 40)
        with debug_backward() if debug else saved_array_checks(True):
            y = F.layer_norm(x)
            change(x.data)
            y.sum().backward()

    for change in (lambda a: a.__setitem__((slice(None), 29), 0.0), lambda a: a.__imul__(1.5),
                   lambda a: a.__setitem__(a < 0, 0.0)):
        with pytest.raises(BackwardError, match="LayerNormFunction: its input 0"):
            run(change)
    one_row = lambda a: a.__setitem__(17, 0.0)                             # noqa: E731 - what a sample can miss,
    swap_two = lambda a: a.__setitem__((slice(1, 3), 5), a[[2, 1], 5])    # noqa: E731 - and this too
    for change in (one_row, swap_two):
        with pytest.raises(BackwardError, match="LayerNormFunction: its input 0"):
            run(change, debug=True)


def test_a_parameter_stepped_between_forward_and_backward_is_named():
    w = Tensor(RNG.standard_normal((5, 4)), requires_grad=True, name="w")
    x = Tensor(RNG.standard_normal((3, 4)), requires_grad=True)   # x's gradient is what needs w
    loss = F.linear(x, w).sum()
    w.data -= 0.1 * np.ones_like(w.data)          # an optimizer step before backward (a GAN-style mistake)
    with pytest.raises(BackwardError, match=r"LinearFunction: its input 1 'w' \(a \(5, 4\) float64 array\), "
                                            r"saved for its backward as `\.weight`"):
        loss.backward()


def test_what_the_project_does_in_place_keeps_working():
    from tinyllm.model import GPT, GPTConfig
    from tinyllm.optim import AdamW

    model = GPT(GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=2, n_embd=8), seed=0)
    optimizer = AdamW(model.named_parameters(), lr=1e-2)
    ids = np.random.default_rng(1).integers(0, 11, (4, 9))
    _, unused = model(ids[:, :-1], ids[:, 1:])    # a graph never backpropagated: parameters stay usable
    for _ in range(2):                            # gradient accumulation: two forwards, then two backwards
        _, first = model(ids[:2, :-1], ids[:2, 1:])
        _, second = model(ids[2:, :-1], ids[2:, 1:])
        first.backward()
        second.backward()
        optimizer.step()                          # in place, after backward
        optimizer.zero_grad()
    del unused
    _, loss = model(ids[:, :-1], ids[:, 1:])
    loss.backward(retain_graph=True)
    optimizer.step()                              # changes what the retained graph saved ...
    with pytest.raises(BackwardError, match="saved for its backward"):
        loss.backward()                           # ... so backpropagating it again is an error, as in PyTorch


def test_a_forward_that_writes_into_what_another_op_saved_is_caught_at_that_op():
    class ReluInPlace(Function):
        """Planted bug: forward clamps its input in place."""

        def forward(self, x):
            self.mask = x > 0
            x *= self.mask
            return x

        def backward(self, grad):
            return grad * self.mask

    x = Tensor(np.array([-1.0, 2.0, -3.0]), requires_grad=True)
    y = ReluInPlace.apply(x * 1.0)                # Mul by a constant saves nothing that changes: fine
    z = ReluInPlace.apply(autograd.tanh(x))       # Tanh saved its output, which ReluInPlace then changes
    with pytest.raises(BackwardError, match=r"Tanh: its output .*saved for its backward as `\.out`"):
        (y + z).sum().backward()


def test_a_changed_setting_is_named():
    cond = np.array([True, False, True])
    x = leaf(3)
    y = autograd.where(cond, x, 0.0)
    cond[1] = True
    with pytest.raises(BackwardError, match=r"Where: its setting `cond` \(a \(3,\) bool array\)"):
        y.sum().backward()


def test_an_index_array_changed_after_forward_is_named():
    x = leaf(4, 3)
    rows, targets = np.arange(4), np.array([0, 2, 1, 0])
    picked = x[rows, targets]                     # the composed cross-entropy's pick: GetItem saves its index
    targets[0] = 2
    with pytest.raises(BackwardError, match=r"GetItem: its setting `index\[1\]` \(a \(4,\) int64 array\)"):
        picked.sum().backward()


def test_a_weight_changed_between_the_two_halves_of_a_split_backward_is_named():
    w, x = leaf(4, 5), leaf(3, 5)
    deferred = split_backward(F.linear(x, w).sum(), [w])
    assert x.grad is not None
    w.data[0] = 0.0
    with pytest.raises(BackwardError, match=r"LinearFunction: its input 0 .*`\.x2`|LinearFunction: its input 1"):
        deferred.run()


def test_debug_mode_names_a_backward_that_changes_what_it_saved():
    class ExpHalvesItsOutput(Function):
        """Planted bug: backward scales the output it saved, which the caller holds (the issue's case 3)."""

        def forward(self, x):
            self.y = np.exp(x)
            return self.y

        def backward(self, grad):
            self.y *= 0.5
            return grad * 2 * self.y

    x = leaf(4)
    with debug_backward():
        y = ExpHalvesItsOutput.apply(x)
        with pytest.raises(BackwardError, match=r"ExpHalvesItsOutput\.backward changed its output .* in place, "
                                                r"saved for it as `\.y`") as info:
            y.sum().backward()
    assert info.value.cause == "saved in backward"
    np.testing.assert_allclose(y.data, 0.5 * np.exp(x.data))   # it did change: the error says so instead of hiding it
    assert x.grad is None                                      # and stops before handing the gradient on


def test_the_switch_turns_the_guard_off_and_a_clone_is_the_way_to_change_a_copy():
    x = leaf(2, 3)
    with saved_array_checks(False):
        y = F.softmax(x)
    y.data *= 1.0                                 # unchecked now (no error, even though it would be)
    y.sum().backward()
    x2 = leaf(2, 3)
    y2 = F.softmax(x2)
    copy = y2.clone()                             # in the graph, memory of its own
    copy.data *= 0                                # changes nothing the softmax saved
    (y2 + copy).sum().backward()                  # d/dx sum(softmax) = 0, twice
    np.testing.assert_allclose(x2.grad, 0, atol=1e-12)


def test_the_guard_sees_views_of_an_input():
    x = leaf(2, 3, 4)
    y = F.linear(x, leaf(5, 4))                   # saves x reshaped to (6, 4): a view of x
    x.data[1, 2] = 0.0
    with pytest.raises(BackwardError, match=r"its input 0 \(a \(2, 3, 4\) float64 array\), saved for its "
                                            r"backward as `\.x2`"):
        y.sum().backward()


def test_the_guard_costs_nothing_to_a_graph_that_saves_nothing():
    x = leaf(3)
    y = (x + 1.0) - 2.0                           # Add and Sub save shapes only
    x.data += 5.0                                 # changes no saved array: backward is still right
    y.sum().backward()
    np.testing.assert_array_equal(to_numpy(x.grad), np.ones(3))
    assert get_array_module(x.grad) is np
