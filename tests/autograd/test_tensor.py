"""Tensor and backward: order, accumulation, graph freeing, no_grad, errors, DOT export, devices."""
import os
import subprocess
import sys

import numpy as np
import pytest

import autograd as ag
from autograd import Function, Tensor, no_grad
from autograd import functional as F


def test_deep_chain_backpropagates_without_recursion_limit():
    x = Tensor(np.array([1.0]), requires_grad=True)
    y = x
    for _ in range(10_000):
        y = y * 1.0001 + 0.0
    y.sum().backward()
    np.testing.assert_allclose(x.grad, [1.0001 ** 10_000], rtol=1e-9)


def test_gradients_accumulate_across_backward_calls_and_zero():
    x = Tensor(np.array([2.0, 3.0]), requires_grad=True)
    (x * x).sum().backward()
    (x * 3).sum().backward()
    np.testing.assert_array_equal(x.grad, [7.0, 9.0])
    x.zero_grad()
    assert x.grad is None


def test_shared_subexpression_gradient_is_summed():
    x = Tensor(np.array(3.0), requires_grad=True)
    y = x * x
    (y + y * 2).backward()  # d/dx 3x^2 = 6x
    assert x.grad == 18.0


def test_backward_twice_needs_retain_graph():
    x = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    y = (x * x).sum()
    y.backward(retain_graph=True)
    y.backward()
    np.testing.assert_array_equal(x.grad, [4.0, 8.0])
    with pytest.raises(RuntimeError, match="retain_graph=True"):
        y.backward()


def test_backward_on_non_scalar_needs_a_gradient():
    x = Tensor(np.ones((2, 3)), requires_grad=True)
    with pytest.raises(RuntimeError, match=r"shape \(2, 3\) needs a gradient"):
        (x * 2).backward()
    (x * 2).backward(np.ones((2, 3)))
    np.testing.assert_array_equal(x.grad, np.full((2, 3), 2.0))
    with pytest.raises(ValueError, match="grad has shape"):
        (x * 2).backward(np.ones(3))


def test_integer_tensors_cannot_require_grad():
    with pytest.raises(TypeError, match="only floating-point tensors can require gradients"):
        Tensor(np.arange(3), requires_grad=True)


def test_backward_without_grad_requirement_is_an_error():
    with pytest.raises(RuntimeError, match="does not require grad"):
        Tensor(np.ones(2)).sum().backward()


def test_no_grad_records_nothing_and_restores():
    x = Tensor(np.ones(3), requires_grad=True)
    with no_grad():
        y = x * 2
    assert not y.requires_grad and y.is_leaf
    assert (x * 2).requires_grad

    @no_grad()
    def f(t):
        return t * 2
    assert not f(x).requires_grad
    assert (x * 2).requires_grad


def test_backward_order_is_deterministic():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((8, 8)).astype(np.float32)

    def run():
        x = Tensor(w.copy(), requires_grad=True)
        h = x
        for i in range(20):
            h = ag.tanh(h @ x) + h * 0.5 if i % 2 else F.softmax(h, axis=-1) + h
        h.sum().backward()
        return x.grad
    a, b = run(), run()
    assert np.array_equal(a, b)


def test_detach_cuts_the_graph():
    x = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    y = (x * x.detach()).sum()
    y.backward()
    np.testing.assert_array_equal(x.grad, [1.0, 2.0])


def test_item_numpy_shape_facts():
    t = Tensor(np.arange(6.0).reshape(2, 3))
    assert t.shape == (2, 3) and t.ndim == 2 and t.dtype == np.float64 and t.size == 6
    assert Tensor(np.array([4.5])).item() == 4.5
    with pytest.raises(ValueError, match="one element"):
        t.item()
    assert isinstance(t.numpy(), np.ndarray)
    assert t.to("cpu") is t


def test_shape_errors_name_the_op_and_shapes():
    a, b = Tensor(np.ones((2, 3))), Tensor(np.ones((4, 5)))
    with pytest.raises(ValueError, match=r"matmul: inner dimensions differ: \(2, 3\) @ \(4, 5\)"):
        a @ b
    with pytest.raises(ValueError, match=r"Add: shapes \(2, 3\) and \(4, 5\) do not broadcast"):
        a + b
    with pytest.raises(ValueError, match=r"reshape: cannot reshape a tensor of shape \(2, 3\)"):
        a.reshape(4, 2)


def test_broadcast_error_from_binary_op_names_shapes():
    with pytest.raises(ValueError) as info:
        Tensor(np.ones((2, 3))) * Tensor(np.ones((2, 4)))
    assert str(info.value).startswith("Mul: shapes (2, 3) and (2, 4) do not broadcast")


def test_to_dot_lists_ops_and_tensors():
    x = Tensor(np.ones(2), requires_grad=True, name="x")
    y = (ag.exp(x) * 2).sum()
    dot = y.to_dot()
    assert dot.startswith("digraph autograd {")
    for op in ("Exp", "Mul", "Sum"):
        assert op in dot
    assert r'label="x\n(2,) float64"' in dot


def test_user_defined_function_follows_the_contract():
    class Cube(Function):
        def forward(self, x):
            self.x = x
            return x ** 3

        def backward(self, grad):
            return grad * 3 * self.x ** 2

    from autograd.gradcheck import check_backward
    check_backward(lambda t: Cube.apply(t), [np.array([0.5, -1.5, 2.0])])


def test_backward_returning_wrong_count_is_reported():
    class Broken(Function):
        def forward(self, x):
            return x * 1

        def backward(self, grad):
            return grad, grad

    x = Tensor(np.ones(2), requires_grad=True)
    with pytest.raises(RuntimeError, match="returned 2 gradients for 1 inputs"):
        Broken.apply(x).sum().backward()


def test_graph_is_freed_after_backward():
    x = Tensor(np.ones(3), requires_grad=True)
    y = ag.exp(x)
    z = y.sum()
    z.backward()
    assert z.grad_fn is None and y.grad_fn is None


def test_device_round_trip_and_mixing_devices_is_an_error(device):
    x = Tensor(np.arange(4.0), requires_grad=True)
    xc = x.to(device)
    assert xc.device == device and xc.requires_grad
    (xc * xc).sum().backward()
    np.testing.assert_array_equal(ag.backend.to_numpy(xc.grad), 2 * np.arange(4.0))
    assert xc.to("cpu").device == "cpu"
    if device == "cpu":
        return
    with pytest.raises(RuntimeError, match="different devices"):
        Tensor(np.ones(4)) + xc
    with pytest.raises(RuntimeError, match="cannot mix a NumPy array"):
        xc + np.ones(4)


def test_cuda_without_cupy_gives_clear_error(tmp_path):
    """In a process that has no CuPy (TINYLLM_FAKE_CUDA=0 and none installed), asking for 'cuda' says what to install."""
    probe = "import autograd.backend as b; print(b.cuda_backend())"
    env = {**os.environ, "TINYLLM_FAKE_CUDA": "0"}
    kind = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env).stdout.strip()
    if kind != "None":
        pytest.skip(f"CuPy is installed here ({kind}): the error path needs a machine without it")
    code = "import numpy as np; from autograd import Tensor; Tensor(np.ones(2)).to('cuda')"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert proc.returncode != 0 and "install the gpu extra" in proc.stderr


def test_forward_only_equals_apply_without_a_graph():
    from autograd.layers.softmax import SoftmaxFunction
    x = np.random.default_rng(0).standard_normal((3, 5))
    with no_grad():
        expected = SoftmaxFunction.apply(Tensor(x, requires_grad=True), axis=-1).data
    out = SoftmaxFunction.forward_only(x, axis=-1)
    assert isinstance(out, np.ndarray) and np.array_equal(out, expected)


# ---- autograd.grad: gradients returned, not accumulated --------------------------------


def test_grad_returns_what_backward_accumulates_and_writes_no_grad():
    from autograd import grad
    rng = np.random.default_rng(0)
    a = Tensor(rng.standard_normal((3, 4)), requires_grad=True)
    b = Tensor(rng.standard_normal((4,)), requires_grad=True)
    unused = Tensor(rng.standard_normal(2), requires_grad=True)

    def f():
        return ((a * b).tanh() + a).sum()
    ga, gb, gu = grad(f(), [a, b, unused])
    assert a.grad is None and b.grad is None and gu is None
    f().backward()
    np.testing.assert_array_equal(ga, a.grad)
    np.testing.assert_array_equal(gb, b.grad)


def test_grad_scales_by_grad_output_and_never_returns_one_array_twice():
    from autograd import grad
    x = Tensor(np.arange(3.0), requires_grad=True)
    y = Tensor(np.ones(3), requires_grad=True)
    seed = np.full(3, 2.0)
    gx, gy = grad(x + y, [x, y], grad_output=seed)   # Add passes one gradient array to both inputs
    np.testing.assert_array_equal(gx, seed)
    np.testing.assert_array_equal(gy, seed)
    gx += 1
    assert gy[0] == 2.0 and seed[0] == 2.0
    (gx,) = grad(x, [x], grad_output=seed)           # the output is the input itself
    gx += 1
    assert seed[0] == 2.0


def test_grad_errors_like_backward():
    from autograd import grad
    x = Tensor(np.ones(3), requires_grad=True)
    with pytest.raises(RuntimeError, match=r"grad\(\) on a tensor of shape \(3,\)"):
        grad(x * 2, [x])
    with pytest.raises(RuntimeError, match="does not require grad"):
        grad(Tensor(np.ones(1)), [x])


def test_keep_freed_memory_stops_page_faults_for_big_arrays():
    """glibc keeps freed arrays for reuse: a step's worth of big arrays is faulted in once, not every step.

    Without it, freeing 32 MiB of 4 MiB arrays trims the heap and the next round faults all
    8192 pages in again (measured: ~4,000 faults a round)."""
    import os
    import platform
    import resource

    from autograd import backend
    if platform.libc_ver()[0] != "glibc" or "MALLOC_MMAP_THRESHOLD_" in os.environ:
        pytest.skip("mallopt is glibc's; MALLOC_* variables take precedence")
    assert backend.keep_freed_memory() and backend.keep_freed_memory()   # idempotent

    def one_round():
        arrays = [np.ones(1 << 20, dtype=np.float32) for _ in range(8)]  # 32 MiB in 4 MiB arrays
        del arrays
    one_round()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(20):
        one_round()
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    assert faults < 2000, faults                                          # without it: ~80,000
