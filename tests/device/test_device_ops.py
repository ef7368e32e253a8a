"""Every op and layer against float64 finite differences on every device, the model's gradient
as CuPy computes it, and the strictness of the stand-in that stands for CuPy where there is no GPU.

The op table is `tinyllm gradcheck`'s (tinyllm/commands/gradcheck.py): the same checks, their
inputs and constants (masks, ids, a dropout generator) made on the device.
"""
import argparse
import io

import numpy as np
import pytest

from autograd import Tensor, backend
from autograd import functional as F
from tinyllm.commands import gradcheck

OPS = sorted(gradcheck.op_checks())


@pytest.mark.parametrize("name", OPS)
def test_op_backward_matches_finite_differences(device, name):
    check = gradcheck.op_checks(device)[name]
    row = gradcheck.check_op(check, seed=0, device=device)
    assert row[4], f"{name} on {device}: max abs err {row[2]:.3g}, max rel err {row[3]:.3g} ({row[5]})"


def test_gradcheck_command_runs_on_the_device(device):
    parser = argparse.ArgumentParser(prog="tinyllm")
    gradcheck.register(parser.add_subparsers())
    args = parser.parse_args(["gradcheck", "attention", "embedding", "--model", "--device", device])
    out = io.StringIO()
    assert args.handler(args, out=out) == 0, out.getvalue()
    assert f"float64 on {device}" in out.getvalue()


def test_results_stay_on_the_device_and_equal_the_cpu(device):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 8))
    w, b = rng.standard_normal(8), rng.standard_normal(8)
    on_cpu = F.layer_norm(Tensor(x, requires_grad=True), Tensor(w), Tensor(b))
    xd = Tensor(x, requires_grad=True, device=device)
    on_device = F.layer_norm(xd, Tensor(w, device=device), Tensor(b, device=device))
    assert on_device.device == device
    (on_device * on_device).sum().backward()
    assert xd.grad is not None and backend.device_of(xd.grad) == device
    np.testing.assert_allclose(on_device.numpy(), on_cpu.numpy(), rtol=0, atol=1e-12)


def test_indexing_with_a_list_moves_the_index_once(device):
    x = Tensor(np.arange(12.0).reshape(4, 3), requires_grad=True, device=device)
    picked = x[[0, 2, 0]]                                    # a host list: one explicit move, no implicit ones
    picked.sum().backward()
    np.testing.assert_array_equal(picked.numpy(), np.arange(12.0).reshape(4, 3)[[0, 2, 0]])
    np.testing.assert_array_equal(backend.to_numpy(x.grad)[:, 0], [2, 0, 1, 0])
    assert backend.to_numpy((x < 5.0).data).sum() == 5         # comparisons through the arrays' own operators


def test_the_stand_in_refuses_what_cupy_refuses(stand_in):
    from autograd.testing import fakecupy
    cp = fakecupy.cupy
    a = cp.arange(4.0)
    with pytest.raises(TypeError, match="implicit conversion"):
        np.asarray(a)
    with pytest.raises(TypeError, match="do not mix"):
        a + np.ones(4)
    with pytest.raises(TypeError, match="xp.less"):
        np.less(a, 2.0)                                      # real CuPy would dispatch this one: not here
    with pytest.raises(TypeError, match="list"):
        a[[0, 1]]
    with pytest.raises(NotImplementedError):
        cp.maximum.reduce(a)                                 # CuPy has add.reduce, not maximum.reduce
    assert not hasattr(cp.random.default_rng(0), "bit_generator")
    assert isinstance(a.sum(), cp.ndarray) and a.sum().shape == ()   # reductions give 0-d arrays
    assert isinstance(np.float32(2) * a, cp.ndarray)         # a NumPy scalar on the left is fine, as in CuPy
    view = a[1]
    a[1] = 7.0
    assert float(view) == 7.0                                # a[i] is a 0-d view, as in CuPy
    stand_in.reset()
    float(a[0]), a.get(), cp.asnumpy(a), a.item() if a.size == 1 else None, cp.asarray(np.ones(2))
    assert (stand_in.to_host, stand_in.to_device) == (3, 1), stand_in.sites


def test_the_stand_in_pretends_to_have_devices(stand_in, monkeypatch):
    from autograd.testing import fakecupy
    cp = fakecupy.cupy
    monkeypatch.setenv("TINYLLM_FAKE_CUDA_DEVICES", "3")
    assert cp.cuda.runtime.getDeviceCount() == 3
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,0")
    assert cp.cuda.runtime.getDeviceCount() == 2
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    with cp.cuda.Device(2):
        on_two = cp.zeros(3)
        assert on_two.device.id == 2 and cp.cuda.runtime.getDevice() == 2
    assert cp.cuda.runtime.getDevice() == 0
    with pytest.raises(ValueError, match="device 2"):
        on_two + 1.0                                         # used while device 0 is current
    with pytest.raises(RuntimeError, match="invalid device"):
        cp.cuda.Device(3).use()
