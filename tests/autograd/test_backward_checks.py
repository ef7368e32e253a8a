"""The engine holds every backward to its contract: each planted bug is named where it happens.

Planted bugs (the ones users hit writing their own ops): a backward that forgets to
unbroadcast, one that returns float32 for float64 inputs, one that writes into its grad,
one that returns a mask without its `* grad`, one that returns a gradient for token ids.
Each must raise a BackwardError naming the Function, the input and the cause, never pass
silently or fail later inside another op. Also: Function.apply wraps arrays and numbers.
"""
import numpy as np
import pytest

import autograd as ag
from autograd import BackwardError, Function, Tensor, debug_backward, unbroadcast
from autograd.backend import get_array_module


class LogAddExp(Function):
    """A correct broadcasting op: log(exp(a) + exp(b))."""

    def forward(self, a, b):
        xp = get_array_module(a)
        self.a, self.b = a, b
        self.out = xp.logaddexp(a, b)
        return self.out

    def backward(self, grad):
        xp = get_array_module(grad)
        da = grad * xp.exp(self.a - self.out)
        db = grad * xp.exp(self.b - self.out)
        return unbroadcast(da, self.a.shape), unbroadcast(db, self.b.shape)


class LogAddExpNoUnbroadcast(LogAddExp):
    """Planted bug: the gradients keep the broadcast shape."""

    def backward(self, grad):
        xp = get_array_module(grad)
        return grad * xp.exp(self.a - self.out), grad * xp.exp(self.b - self.out)


class Softplus(Function):
    def forward(self, x):
        xp = get_array_module(x)
        self.x = x
        return xp.logaddexp(0, x)

    def backward(self, grad):
        xp = get_array_module(grad)
        return grad / (1 + xp.exp(-self.x))


class SoftplusFloat32Grad(Softplus):
    """Planted bug: the gradient comes back in float32 whatever the input's dtype."""

    def backward(self, grad):
        return super().backward(grad).astype(np.float32)


class SoftplusInPlace(Softplus):
    """Planted bug: backward multiplies its grad in place."""

    def backward(self, grad):
        xp = get_array_module(grad)
        grad *= 1 / (1 + xp.exp(-self.x))
        return grad


class SoftplusSneakyInPlace(Softplus):
    """Planted bug that gets past NumPy's read-only flag (as any write would on CuPy)."""

    def backward(self, grad):
        xp = get_array_module(grad)
        grad.setflags(write=True)          # allowed: the read-only view's base is writable
        grad *= 1 / (1 + xp.exp(-self.x))
        return grad


def leaf(*shape, seed=0):
    return Tensor(np.random.default_rng(seed).standard_normal(shape), requires_grad=True)


# ---- shapes ------------------------------------------------------------------------------


def test_missing_unbroadcast_behind_a_non_leaf_names_the_op_input_and_cause():
    a, b = leaf(3, 4), leaf(3, 1, seed=1)
    hidden = b * 1.0          # a non-leaf: Mul's backward would sum the wrong gradient down silently
    y = LogAddExpNoUnbroadcast.apply(a, hidden)
    with pytest.raises(BackwardError, match=r"LogAddExpNoUnbroadcast\.backward returned a gradient of shape "
                                            r"\(3, 4\) for input 1, which has shape \(3, 1\).*missing unbroadcast"):
        y.sum().backward()


def test_missing_unbroadcast_into_a_scalar_leaf_names_the_op():
    a, b = leaf(1), Tensor(np.array(0.5), requires_grad=True)
    with pytest.raises(BackwardError, match=r"LogAddExpNoUnbroadcast.*shape \(1,\) for input 1.*shape \(\)") as info:
        LogAddExpNoUnbroadcast.apply(a, b).sum().backward()
    assert (info.value.function, info.value.cause, info.value.input_index) == ("LogAddExpNoUnbroadcast", "shape", 1)


def test_the_correct_op_passes_and_gradients_match_numpy():
    a, b = leaf(3, 4), leaf(3, 1, seed=1)
    LogAddExp.apply(a, b).sum().backward()
    s = 1 / (1 + np.exp(b.data - a.data))
    np.testing.assert_allclose(a.grad, s)
    np.testing.assert_allclose(b.grad, (1 - s).sum(axis=1, keepdims=True))


def test_shape_hints_for_swapped_and_flattened_gradients():
    class Swapped(LogAddExp):
        def backward(self, grad):
            da, db = super().backward(grad)
            return db, da

    class Flattened(Softplus):
        def backward(self, grad):
            return super().backward(grad).reshape(-1)

    with pytest.raises(BackwardError, match=r"input 0.*wrong order\? Input 1 has that shape"):
        Swapped.apply(leaf(3, 4), leaf(3, 1)).sum().backward()
    with pytest.raises(BackwardError, match=r"Flattened.*shape \(6,\) for input 0.*missing reshape"):
        Flattened.apply(leaf(2, 3)).sum().backward()


def test_a_number_instead_of_an_array_and_a_wrong_count_are_named():
    class ReturnsFloat(Softplus):
        def backward(self, grad):
            return 1.0

    class ReturnsTwo(Softplus):
        def backward(self, grad):
            return grad, grad

    with pytest.raises(BackwardError, match=r"ReturnsFloat\.backward returned a float for input 0, not an array"):
        ReturnsFloat.apply(leaf(2)).sum().backward()
    with pytest.raises(BackwardError, match=r"ReturnsTwo\.backward returned 2 gradients for 1 inputs"):
        ReturnsTwo.apply(leaf(2)).sum().backward()


def test_a_list_of_gradients_is_read_as_one_per_input_like_a_tuple():
    class ListLogAddExp(LogAddExp):
        def backward(self, grad):
            return list(super().backward(grad))           # once: "returned 1 gradients for 2 inputs"

    a, b = leaf(3, 4), leaf(3, 1, seed=1)
    ListLogAddExp.apply(a, b).sum().backward()
    s = 1 / (1 + np.exp(b.data - a.data))
    np.testing.assert_allclose(a.grad, s)
    np.testing.assert_allclose(b.grad, (1 - s).sum(axis=1, keepdims=True))


# ---- dtypes ------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [bool, np.int64])
def test_a_bool_or_integer_gradient_is_named_with_the_forgotten_grad_hint(dtype):
    class ReluForgotGrad(Function):
        """Planted bug: backward returns the mask itself, not grad * mask."""

        def forward(self, x):
            self.mask = x > 0
            return x * self.mask

        def backward(self, grad):
            return self.mask.astype(dtype)

    kind = "bool" if dtype is bool else r"integer \(int64\)"
    with pytest.raises(BackwardError, match=rf"ReluForgotGrad\.backward returned a {kind} gradient for input 0, a "
                                            rf"float64 tensor: .*forgotten `\* grad`") as info:
        ReluForgotGrad.apply(leaf(4)).sum().backward()      # once: "(precision is lost)"
    assert info.value.cause == "dtype"


def test_float32_gradient_for_a_float64_input_is_named():
    x = leaf(5)
    with pytest.raises(BackwardError, match=r"SoftplusFloat32Grad\.backward returned a float32 gradient for "
                                            r"input 0, a float64 tensor \(precision is lost\)") as info:
        (SoftplusFloat32Grad.apply(x) * 2.0).sum().backward()
    assert info.value.cause == "dtype"


def test_mixed_dtype_ops_hand_each_input_its_own_dtype():
    """float32 * float64 computes in float64; the float32 side gets a float32 gradient, no error."""
    small = Tensor(np.array([1.0, 2.0], dtype=np.float32), requires_grad=True)
    wide = Tensor(np.array([3.0, 4.0]), requires_grad=True)
    y = ag.exp(small) * wide
    assert y.dtype == np.float64
    y.sum().backward()
    assert small.grad.dtype == np.float32 and wide.grad.dtype == np.float64
    np.testing.assert_allclose(small.grad, np.exp([1.0, 2.0]) * [3.0, 4.0], rtol=1e-6)


# ---- in-place writes into grad -------------------------------------------------------------


def test_backward_writing_into_its_grad_is_named_and_the_callers_array_is_untouched():
    x = leaf(4)
    gy = np.full(4, 2.0)
    with pytest.raises(BackwardError, match=r"SoftplusInPlace\.backward wrote into a read-only array.*in place") as info:
        SoftplusInPlace.apply(x).backward(gy)
    assert info.value.cause == "in-place"
    np.testing.assert_array_equal(gy, np.full(4, 2.0))
    assert gy.flags.writeable               # the caller's array itself is left writable


def test_in_place_write_cannot_corrupt_a_shared_gradient():
    """Add hands one gradient array to both softplus nodes: the first must not change it for the second."""
    x, w = leaf(3), leaf(3, seed=1)
    with pytest.raises(BackwardError, match="SoftplusInPlace"):
        ((SoftplusInPlace.apply(x) + SoftplusInPlace.apply(x)) * w).sum().backward()
    x.zero_grad()
    ((Softplus.apply(x) + Softplus.apply(x)) * w).sum().backward()
    np.testing.assert_allclose(x.grad, 2 * w.data / (1 + np.exp(-x.data)))


def test_debug_backward_catches_writes_that_get_past_read_only_arrays():
    """What CuPy needs (no read-only arrays): a private copy compared after each backward."""
    x = leaf(4)
    gy = np.ones(4)
    SoftplusSneakyInPlace.apply(x).backward(gy.copy())          # not caught by default (documented)
    with debug_backward():
        with pytest.raises(BackwardError, match=r"SoftplusSneakyInPlace\.backward modified its grad in place"):
            SoftplusSneakyInPlace.apply(x).backward(gy)
    np.testing.assert_array_equal(gy, np.ones(4))


def test_built_in_ops_and_layers_never_write_into_their_grad():
    """Every fused layer of a model step runs with read-only grads and under debug_backward
    (GPT-2 and Llama shapes; T = 64 takes the block-causal attention path)."""
    from tinyllm.model import GPT, GPTConfig
    for mlp, T in (("gelu", 8), ("swiglu", 64)):
        norm = "layernorm" if mlp == "gelu" else "rmsnorm"
        config = GPTConfig(vocab_size=11, block_size=T, n_layer=1, n_head=2, n_embd=8, mlp=mlp, norm=norm,
                           dropout=0.1)
        model = GPT(config, dtype="float64")
        ids = np.random.default_rng(0).integers(0, 11, (2, T))
        with debug_backward():
            _, loss = model(ids, ids)
            loss.backward()
        assert all(p.grad is not None for p in model.parameters())


def test_grad_returns_writable_arrays_even_for_gradients_passed_through():
    x = Tensor(np.ones(3), requires_grad=True)
    (gx,) = ag.grad((x + 1.0).reshape(3, 1).reshape(3), [x], grad_output=np.ones(3))
    gx += 1                                   # read-only views inside the engine, a fresh array out
    np.testing.assert_array_equal(gx, [2.0, 2.0, 2.0])


# ---- gradients for inputs that cannot have one ------------------------------------------------


class Lookup(Function):
    """rows of w picked by ids; planted bug: a gradient for the ids too (a copy of grad's first column)."""

    def forward(self, w, ids):
        self.ids, self.w_shape = ids, w.shape
        return w[ids]

    def backward(self, grad):
        dw = np.zeros(self.w_shape)
        np.add.at(dw, self.ids, grad)
        return dw, self.wrong_ids_gradient(grad)

    def wrong_ids_gradient(self, grad):
        return grad[:, 0].copy()


def test_debug_backward_names_a_gradient_for_integer_ids():
    w, ids = leaf(5, 3), Tensor(np.array([0, 3, 3]))
    Lookup.apply(w, ids).sum().backward()                   # ignored by default, as it always was
    with debug_backward():
        with pytest.raises(BackwardError, match=r"Lookup\.backward returned a float64 array for input 1, which cannot "
                                                r"have a gradient: it is a int64 array .*Return None for it") as info:
            Lookup.apply(w, ids).sum().backward()
    assert (info.value.cause, info.value.input_index) == ("no-gradient", 1)


def test_debug_backward_names_any_gradient_for_ids_or_a_constant_that_was_not_a_tensor():
    class StringForIds(Lookup):
        def wrong_ids_gradient(self, grad):
            return "oops"

    class GradForConstant(LogAddExp):
        pass

    with debug_backward():
        with pytest.raises(BackwardError, match=r"StringForIds\.backward returned a str for input 1, which cannot"):
            StringForIds.apply(leaf(5, 3), np.array([0, 1])).sum().backward()
        with pytest.raises(BackwardError, match=r"GradForConstant\.backward returned a float64 array for input 1, "
                                                r"which cannot have a gradient: it is not a Tensor"):
            GradForConstant.apply(leaf(3), np.zeros(3)).sum().backward()
        GradForConstant.apply(leaf(3), Tensor(np.zeros(3))).sum().backward()   # a float Tensor constant: unused


# ---- Function.apply on arrays and numbers ------------------------------------------------------


def test_apply_wraps_arrays_and_numbers_as_constants():
    out = Softplus.apply(np.array([0.0, 1.0]))
    assert isinstance(out, Tensor) and not out.requires_grad
    np.testing.assert_allclose(out.data, np.log1p(np.exp([0.0, 1.0])))
    x = Tensor(np.array([1.0, 2.0], dtype=np.float32), requires_grad=True)
    y = LogAddExp.apply(x, 0.0)                         # the number takes x's dtype: no upcast
    assert y.dtype == np.float32
    y.sum().backward()
    np.testing.assert_allclose(x.grad, 1 / (1 + np.exp(-x.data)), rtol=1e-6)
    z = LogAddExp.apply(np.zeros(2), x)                 # an array in first place
    assert z.requires_grad


def test_apply_names_an_argument_it_cannot_wrap():
    with pytest.raises(TypeError, match=r"Softplus\.apply: argument 0 is a list, not a Tensor, an array or a "
                                        r"number.*by keyword"):
        Softplus.apply([1.0, 2.0])
