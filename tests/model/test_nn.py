"""tinyllm.nn: registry order and names, state_dict round trips and errors, modes, init, dtype."""
import numpy as np
import pytest

from autograd import Tensor
from autograd.gradcheck import check_backward
from tinyllm import nn
from tinyllm.dropout import DropoutMasks


class Tiny(nn.Module):
    def __init__(self, seed=0, dtype="float32"):
        super().__init__()
        with nn.build(seed, dtype, masks=DropoutMasks(7)):
            self.inp = nn.Linear(4, 6)
            self.norm = nn.LayerNorm(6)
            self.layers = nn.ModuleList([nn.Linear(6, 6, bias=False) for _ in range(2)])
            self.out = nn.RMSNorm(6)
            self.drop = nn.Dropout(0.5)

    def forward(self, x):
        x = self.norm(self.inp(x))
        for layer in self.layers:
            x = x + layer(x)
        return self.drop(self.out(x))


NAMES = ["inp.weight", "inp.bias", "norm.weight", "norm.bias", "layers.0.weight", "layers.1.weight", "out.weight"]


def test_names_follow_definition_order():
    m = Tiny()
    assert [n for n, _ in m.named_parameters()] == NAMES
    assert [n for n, _ in m.named_modules()] == ["", "inp", "norm", "layers", "layers.0", "layers.1", "out", "drop"]
    assert list(m.state_dict()) == NAMES
    assert m.num_parameters() == 4 * 6 + 6 + 6 + 6 + 2 * 36 + 6
    assert all(isinstance(p, nn.Parameter) and p.requires_grad for p in m.parameters())


def test_shared_parameter_listed_once():
    m = Tiny()
    m.layers[1].weight = m.layers[0].weight
    names = [n for n, _ in m.named_parameters()]
    assert "layers.1.weight" not in names and "layers.0.weight" in names
    assert m.num_parameters() == 4 * 6 + 6 + 6 + 6 + 36 + 6


def test_state_dict_is_a_copy_and_round_trips():
    a, b = Tiny(seed=1), Tiny(seed=2)
    sd = a.state_dict()
    sd["inp.weight"][...] = 0
    assert not np.all(a.inp.weight.data == 0)          # a copy, not a view
    b.load_state_dict(a.state_dict())
    for (na, pa), (nb, pb) in zip(a.named_parameters(), b.named_parameters()):
        assert na == nb and np.array_equal(pa.data, pb.data)


def test_load_state_dict_errors_name_the_keys():
    m = Tiny()
    sd = m.state_dict()
    del sd["norm.bias"]
    sd["extra.weight"] = np.zeros(3)
    with pytest.raises(ValueError, match=r"missing keys: norm\.bias.*unexpected keys: extra\.weight"):
        m.load_state_dict(sd)
    missing, unexpected = m.load_state_dict(sd, strict=False)
    assert missing == ["norm.bias"] and unexpected == ["extra.weight"]
    bad = m.state_dict()
    bad["inp.weight"] = np.zeros((4, 6))
    with pytest.raises(ValueError, match=r"shape mismatch for inp\.weight: checkpoint \(4, 6\), model \(6, 4\)"):
        m.load_state_dict(bad, strict=False)


def test_load_state_dict_casts_to_the_parameter_dtype():
    m = Tiny(dtype="float64")
    sd = {k: v.astype(np.float32) for k, v in Tiny(seed=5).state_dict().items()}
    m.load_state_dict(sd)
    assert m.inp.weight.dtype == np.float64
    assert np.array_equal(m.inp.weight.data, sd["inp.weight"].astype(np.float64))


def test_train_eval_recursive_and_dropout():
    m = Tiny()
    x = Tensor(np.ones((3, 4), dtype=np.float32))
    m.eval()
    assert all(not mod.training for _, mod in m.named_modules())
    assert np.array_equal(m(x).data, m(x).data)         # no dropout in eval
    m.train()
    assert all(mod.training for _, mod in m.named_modules())
    y = m(x).data
    assert np.any(y == 0)                                # some units dropped at p = 0.5


def test_dropout_repeatable_through_generator_state():
    with nn.build(3) as made:
        gen, drop = made.masks, nn.Dropout(0.5)
    x = Tensor(np.ones((4, 8)))
    state = gen.state()
    first = drop(x).data
    gen.set_state(state)
    assert np.array_equal(drop(x).data, first)
    with nn.build(masks=DropoutMasks(3)):
        assert np.array_equal(nn.Dropout(0.5)(x).data, first)
    with pytest.raises(ValueError, match="p=1.0"):
        nn.Dropout(1.0)


def test_zero_grad_and_gradients_reach_every_parameter():
    m = Tiny(dtype="float64").eval()
    m(Tensor(np.random.default_rng(0).standard_normal((2, 4)))).sum().backward()
    assert all(p.grad is not None and p.grad.shape == p.shape for p in m.parameters())
    m.zero_grad()
    assert all(p.grad is None for p in m.parameters())


def test_deterministic_init_and_dtypes():
    a, b, c = Tiny(seed=4), Tiny(seed=4), Tiny(seed=5)
    assert all(np.array_equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert not np.array_equal(a.inp.weight.data, c.inp.weight.data)
    d = Tiny(seed=4, dtype="float64")
    assert d.inp.weight.dtype == np.float64 and a.inp.weight.dtype == np.float32
    np.testing.assert_array_equal(d.inp.weight.data.astype(np.float32), a.inp.weight.data)
    assert abs(np.std(nn.Linear(200, 300).weight.data) - 0.02) < 1e-3
    assert np.all(a.inp.bias.data == 0) and np.all(a.norm.weight.data == 1) and np.all(a.out.weight.data == 1)
    a.astype("float64")
    assert all(p.dtype == np.float64 for p in a.parameters())
    with pytest.raises(ValueError, match="'float16' is not supported"):
        a.astype("float16")


def test_layer_errors_name_values():
    with pytest.raises(ValueError, match="in_features=0"):
        nn.Linear(0, 3)
    with pytest.raises(TypeError, match="numpy.random.Generator"):
        with nn.build(rng=0):
            pass
    with pytest.raises(ValueError, match="'float16' is not supported"):
        with nn.build(dtype="float16"):
            pass
    with pytest.raises(ValueError, match="expects 4"):
        nn.Linear(4, 2)(Tensor(np.ones((1, 3), dtype=np.float32)))
    with pytest.raises(TypeError, match="holds Modules"):
        nn.ModuleList([3])


def test_linear_and_norm_gradients():
    rng = np.random.default_rng(0)
    with nn.build(rng=rng, dtype="float64"):
        lin, norm = nn.Linear(3, 2), nn.RMSNorm(2)

    def fn(x, w, b, g):
        lin.weight, lin.bias, norm.weight = w, b, g
        return norm(lin(x))
    params = [lin.weight.data, lin.bias.data + 0.1, norm.weight.data * 1.5]
    assert check_backward(fn, [rng.standard_normal((4, 3))] + params).passed


def test_get_and_set_submodule_keep_the_parameter_order():
    """set_submodule replaces a module in place in the registration order (plain assignment would
    move it to the end), so parameter names and order stay; get_submodule reads dotted names."""
    model = Tiny()
    names = [n for n, _ in model.named_parameters()]
    assert model.get_submodule("") is model and model.get_submodule("norm") is model.norm
    with nn.build(dtype="float64"):
        replacement, inner = nn.LayerNorm(6), nn.Linear(6, 6, bias=False)
    model.set_submodule("norm", replacement)
    assert model.norm is replacement and model.get_submodule("norm") is replacement
    assert [n for n, _ in model.named_parameters()] == names
    model.set_submodule("layers.0", inner)
    assert model.layers[0] is inner and model.get_submodule("layers.0") is inner
    assert [n for n, _ in model.named_parameters()] == names
    with pytest.raises(AttributeError, match="has no submodule 'nope'"):
        model.get_submodule("nope")
    with pytest.raises(AttributeError, match="no submodule 'nope' to replace"):
        model.set_submodule("nope", replacement)
    with pytest.raises(TypeError, match="needs a Module"):
        model.set_submodule("norm", 3)
