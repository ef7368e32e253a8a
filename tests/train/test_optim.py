"""AdamW, SGD, schedules and clipping against their defining formulas (float64)."""
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tinyllm.nn import Parameter
from tinyllm.optim import (SGD, AdamW, ConstantSchedule, CosineSchedule, clip_grad_norm, global_grad_norm,
                           make_schedule)


def blocked_small(kernel, outs, ins):
    """autograd.blocked with 5-element blocks, so a (3, 4) parameter is updated in uneven pieces."""
    from autograd.blocked import blocked
    blocked(kernel, outs, ins, block=5)


def params_with_grads(seed=0):
    rng = np.random.default_rng(seed)
    named = [("w", Parameter(rng.standard_normal((3, 4)), dtype="float64")),
             ("b", Parameter(rng.standard_normal(4), dtype="float64"))]
    return named, rng


def set_grads(named, rng):
    for _, p in named:
        p.grad = rng.standard_normal(p.shape)


@pytest.mark.parametrize("blocked", [False, True])
def test_adamw_matches_the_update_rule_and_decays_only_matrices(monkeypatch, blocked):
    from tinyllm import optim
    monkeypatch.setattr(optim, "BLOCKED_MIN_SIZE", 0 if blocked else 1 << 62)
    monkeypatch.setattr(optim, "blocked", lambda kernel, outs, ins: blocked_small(kernel, outs, ins))
    named, rng = params_with_grads()
    lr, b1, b2, eps, wd = 1e-2, 0.9, 0.99, 1e-8, 0.1
    opt = AdamW(named, lr=lr, betas=(b1, b2), eps=eps, weight_decay=wd)
    ref = {n: p.data.copy() for n, p in named}
    m = {n: np.zeros_like(p.data) for n, p in named}
    v = {n: np.zeros_like(p.data) for n, p in named}
    for t in range(1, 6):
        set_grads(named, rng)
        for n, p in named:
            g = p.grad
            if p.data.ndim >= 2:
                ref[n] = ref[n] * (1 - lr * wd)
            m[n] = b1 * m[n] + (1 - b1) * g
            v[n] = b2 * v[n] + (1 - b2) * g * g
            m_hat, v_hat = m[n] / (1 - b1 ** t), v[n] / (1 - b2 ** t)
            ref[n] = ref[n] - lr * m_hat / (np.sqrt(v_hat) + eps)
        opt.step()
    for n, p in named:
        np.testing.assert_allclose(p.data, ref[n], rtol=1e-12, atol=1e-14)


def test_weight_decay_alone_shrinks_matrices_not_vectors():
    named, _ = params_with_grads()
    before = {n: p.data.copy() for n, p in named}
    opt = AdamW(named, lr=0.5, weight_decay=0.2)
    for _, p in named:
        p.grad = np.zeros(p.shape)
    opt.step()
    np.testing.assert_allclose(named[0][1].data, before["w"] * (1 - 0.5 * 0.2), rtol=1e-15)
    np.testing.assert_array_equal(named[1][1].data, before["b"])


def test_sgd_momentum_rule():
    named, rng = params_with_grads(1)
    opt = SGD(named, lr=0.1, momentum=0.9)
    ref = {n: p.data.copy() for n, p in named}
    buf = {n: np.zeros_like(p.data) for n, p in named}
    for _ in range(4):
        set_grads(named, rng)
        for n, p in named:
            buf[n] = 0.9 * buf[n] + p.grad
            ref[n] = ref[n] - 0.1 * buf[n]
        opt.step()
    for n, p in named:
        np.testing.assert_allclose(p.data, ref[n], rtol=1e-13)


def test_optimizer_state_is_keyed_by_name_and_round_trips():
    named, rng = params_with_grads()
    opt = AdamW(named, lr=1e-2, weight_decay=0.1)
    set_grads(named, rng)
    opt.step()
    arrays, meta = {k: v.copy() for k, v in opt.state_arrays().items()}, opt.state_meta()
    assert set(arrays) == {"w.exp_avg", "w.exp_avg_sq", "b.exp_avg", "b.exp_avg_sq"}
    named2 = [(n, Parameter(p.data.copy(), dtype="float64")) for n, p in named]
    opt2 = AdamW(named2, lr=1e-2, weight_decay=0.1)
    opt2.load_state(arrays, meta)
    assert opt2.step_count == 1
    grads = rng.standard_normal((3, 4)), rng.standard_normal(4)
    for pairs in (named, named2):
        for (_, p), g in zip(pairs, grads):
            p.grad = g.copy()
    opt.step()
    opt2.step()
    for (_, p), (_, q) in zip(named, named2):
        np.testing.assert_array_equal(p.data, q.data)
    with pytest.raises(ValueError, match="missing"):
        opt2.load_state({"w.exp_avg": arrays["w.exp_avg"]}, meta)


@pytest.mark.parametrize("make", [lambda named: AdamW(named, lr=1e-2, weight_decay=0.1),
                                  lambda named: SGD(named, lr=1e-2, momentum=0.9)], ids=["adamw", "sgd"])
def test_relocated_state_keeps_its_values_and_the_updates_write_there(make):
    """relocate_state moves every state buffer (as the worker processes' shared memory does)."""
    named, rng = params_with_grads()
    opt = make(named)
    set_grads(named, rng)
    opt.step()
    before = {k: v.copy() for k, v in opt.state_arrays().items()}
    moved = []
    opt.relocate_state(lambda a: moved.append(a.copy()) or moved[-1])
    assert len(moved) == len(before)
    assert all(any(a is m for m in moved) for a in opt.state_arrays().values())
    for key, value in opt.state_arrays().items():
        np.testing.assert_array_equal(value, before[key])
    opt.step()
    assert not all(np.array_equal(m, before[k]) for m, k in zip(moved, before))   # updated in the new buffers


def test_cosine_schedule_matches_nanogpt():
    s = CosineSchedule(lr=1e-3, min_lr=1e-4, warmup_iters=100, max_iters=2000)
    assert s(0) == pytest.approx(1e-3 / 101)
    assert s(99) == pytest.approx(1e-3 * 100 / 101)
    assert s(100) == pytest.approx(1e-3)
    assert s(1050) == pytest.approx(1e-4 + 0.5 * (1e-3 - 1e-4))
    assert s(2000) == pytest.approx(1e-4) and s(5000) == pytest.approx(1e-4)
    values = [s(i) for i in range(100, 2001)]
    assert all(a >= b for a, b in zip(values, values[1:]))
    assert ConstantSchedule(2e-3, warmup_iters=0)(10) == 2e-3
    with pytest.raises(ValueError, match="unknown lr schedule"):
        make_schedule("linear", 1, 0, 0, 10)


@given(st.floats(0.01, 10.0), st.integers(0, 2 ** 16))
def test_clip_grad_norm_scales_to_max_norm_and_returns_the_norm_before(max_norm, seed):
    named, rng = params_with_grads(seed)
    set_grads(named, rng)
    params = [p for _, p in named]
    norm = math.sqrt(sum(float((p.grad ** 2).sum()) for p in params))
    returned = clip_grad_norm(params, max_norm)
    assert returned == pytest.approx(norm, rel=1e-12)
    assert global_grad_norm(params) == pytest.approx(min(norm, max_norm * norm / (norm + 1e-6)), rel=1e-9)


def test_float64_updates_are_bitwise_repeatable():
    results = []
    for _ in range(2):
        named, rng = params_with_grads(3)
        opt = AdamW(named, lr=1e-2, weight_decay=0.1)
        for _ in range(3):
            set_grads(named, rng)
            clip_grad_norm([p for _, p in named], 1.0)
            opt.step()
        results.append([p.data.copy() for _, p in named])
    for a, b in zip(*results):
        assert np.array_equal(a, b)


def test_bad_hyperparameters_are_named():
    named, _ = params_with_grads()
    with pytest.raises(ValueError, match="beta2=1.5"):
        AdamW(named, betas=(0.9, 1.5))
    with pytest.raises(ValueError, match="momentum"):
        SGD(named, momentum=-0.1)


def test_optimizers_take_model_parameters_as_well_as_named_parameters():
    """The PyTorch habit, AdamW(model.parameters()), gives the same updates; the state is keyed by position."""
    from tinyllm.model import GPT, GPTConfig
    config = GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=2, n_embd=8)
    models = [GPT(config, dtype="float64") for _ in range(2)]
    ids = np.random.default_rng(0).integers(0, 11, (2, 8))
    for kind in (AdamW, SGD):
        named_opt = kind(models[0].named_parameters(), lr=1e-2, weight_decay=0.1)
        plain_opt = kind(models[1].parameters(), lr=1e-2, weight_decay=0.1)
        for model, opt in zip(models, (named_opt, plain_opt)):
            model(ids, ids)[1].backward()
            opt.step()
            opt.zero_grad()
        for (_, p), (_, q) in zip(models[0].named_parameters(), models[1].named_parameters()):
            np.testing.assert_array_equal(p.data, q.data)
        names = [name for name, _ in models[0].named_parameters()]
        suffix = ".exp_avg" if kind is AdamW else ".momentum"
        assert f"{names[0]}{suffix}" in named_opt.state_arrays()          # named: as before
        assert list(plain_opt.state_arrays())[0] == f"0{suffix}"          # plain: by position
        assert len(plain_opt.state_arrays()) == len(named_opt.state_arrays())


def test_optimizer_arguments_that_are_neither_are_named():
    named, _ = params_with_grads()
    with pytest.raises(TypeError, match="single tensor"):
        AdamW(named[0][1])
    with pytest.raises(TypeError, match="not a mix"):
        SGD([named[0], named[1][1]])
    with pytest.raises(ValueError, match="no parameters"):
        AdamW([])
