"""split_backward: the input half now, the weight half later, together exactly backward() (float64, bit for bit)."""
import numpy as np
import pytest

from autograd import Function, Tensor
from autograd import functional as F
from autograd.tensor import split_backward
from tinyllm import lora
from tinyllm.model import GPT, GPTConfig

RNG = np.random.default_rng(0)


def weights_and_input_grads(build, split: bool, microbatches: int = 1):
    """Build (output, weights, stage input) `microbatches` times; backpropagate whole or split (all B, then all W)."""
    deferred, inputs = [], []
    for mb in range(microbatches):
        out, weights, x = build(mb)
        inputs.append(x)
        seed = np.random.default_rng(mb).standard_normal(out.shape)
        if split:
            deferred.append(split_backward(out, weights, seed))
            assert all(w.grad is None for w in weights)   # B leaves the weights alone
        else:
            out.backward(seed)
    for work in deferred:
        work.run()
    return [None if w.grad is None else w.grad.copy() for w in weights], [x.grad for x in inputs if x is not None]


def assert_split_equals_whole(make, microbatches: int = 1):
    """`make()` -> build(mb) over fresh but identical weights, called once for each way."""
    whole_w, whole_x = weights_and_input_grads(make(), split=False, microbatches=microbatches)
    split_w, split_x = weights_and_input_grads(make(), split=True, microbatches=microbatches)
    assert any(g is not None for g in whole_w)
    for a, b in zip(whole_w, split_w):
        assert (a is None) == (b is None)
        if a is not None:
            np.testing.assert_array_equal(a, b)      # bit for bit
    for a, b in zip(whole_x, split_x):
        np.testing.assert_array_equal(a, b)


def leaf(*shape):
    return Tensor(RNG.standard_normal(shape), requires_grad=True)


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("x_shape", [(5,), (3, 5), (2, 3, 5)])
def test_linear(bias, x_shape):
    w, b, x = leaf(4, 5), leaf(4) if bias else None, leaf(*x_shape)

    def make():
        ws = [Tensor(w.data.copy(), requires_grad=True)] + ([Tensor(b.data.copy(), requires_grad=True)] if bias else [])
        return lambda mb: (F.linear(Tensor(x.data, requires_grad=True) if mb == 0 else
                                    Tensor(x.data * 2, requires_grad=True), *ws), ws, None)
    assert_split_equals_whole(make, microbatches=2)


@pytest.mark.parametrize("norm,weight,bias", [("layer", True, True), ("layer", True, False), ("layer", False, True),
                                              ("rms", True, False)])
def test_norms(norm, weight, bias):
    w0, b0, x0 = RNG.standard_normal(6), RNG.standard_normal(6), RNG.standard_normal((2, 3, 6))

    def make():
        w = Tensor(w0.copy(), requires_grad=True) if weight else None
        b = Tensor(b0.copy(), requires_grad=True) if bias else None
        ws = [t for t in (w, b) if t is not None]

        def build(mb):
            x = Tensor(x0 + mb, requires_grad=True)
            return (F.layer_norm(x, w, b) if norm == "layer" else F.rms_norm(x, w)), ws, x
        return build
    assert_split_equals_whole(make, microbatches=2)


def test_embedding_and_a_sliced_weight():
    """Embedding (no other input wants a gradient, so B skips it) and a weight reaching Add through a slice."""
    wte0, wpe0 = RNG.standard_normal((7, 4)), RNG.standard_normal((5, 4))
    ids = np.array([[1, 2, 2, 5], [0, 1, 2, 3]])

    def make():
        wte, wpe = Tensor(wte0.copy(), requires_grad=True), Tensor(wpe0.copy(), requires_grad=True)
        return lambda mb: (F.embedding(ids + mb % 2, wte) + wpe[:4], [wte, wpe], None)
    assert_split_equals_whole(make, microbatches=2)


CONFIGS = {
    "gpt2-tied": dict(),
    "untied-bias": dict(tie_embeddings=False, bias=True),
    "llama": dict(norm="rmsnorm", mlp="swiglu", position="rope", n_kv_head=1, tie_embeddings=False),
}


@pytest.mark.parametrize("name", CONFIGS)
def test_a_gpt_and_a_block_with_its_input(name):
    config = GPTConfig(vocab_size=13, block_size=6, n_layer=2, n_head=2, n_embd=8, dropout=0.0, **CONFIGS[name])
    ids = np.random.default_rng(1).integers(0, 13, size=(3, 6))

    def make_model():
        model = GPT(config, seed=0, dtype="float64")
        return lambda mb: (model(ids, (ids + mb) % 13)[1], model.parameters(), None)

    def make_block():   # a middle pipeline stage: its input is a leaf whose gradient B must give
        model = GPT(config, seed=0, dtype="float64")
        x0 = np.random.default_rng(2).standard_normal((3, 6, 8))
        return lambda mb: ((lambda x: (model.blocks[1](model.blocks[0](x)), model.blocks.parameters(), x))(
            Tensor(x0 * (mb + 1), requires_grad=True)))
    assert_split_equals_whole(make_model, microbatches=2)
    assert_split_equals_whole(make_block, microbatches=2)


def test_lora_adapters_are_the_weights():
    config = GPTConfig(vocab_size=13, block_size=6, n_layer=1, n_head=2, n_embd=8, dropout=0.0)
    ids = np.random.default_rng(1).integers(0, 13, size=(2, 6))

    def make():
        model = GPT(config, seed=0, dtype="float64")
        lora.apply_lora(model, lora.LoRAConfig(rank=2, targets=("attn", "mlp")))
        for _, layer in lora.lora_layers(model):   # B starts at zero: make A's gradient non-zero too
            layer.lora_B.data[...] = np.random.default_rng(3).standard_normal(layer.lora_B.shape)
        trainable = [p for _, p in lora.trainable_parameters(model)]
        return lambda mb: (model(ids, (ids + mb) % 13)[1], trainable, None)
    assert_split_equals_whole(make, microbatches=2)


def test_the_input_half_leaves_work_for_the_weight_half():
    w, x = leaf(3, 4), leaf(2, 4)
    y = F.linear(x, w)
    deferred = split_backward(y.sum(), [w])
    assert x.grad is not None and w.grad is None and len(deferred) == 1
    deferred.run()
    np.testing.assert_allclose(w.grad, np.ones((2, 3)).T @ x.data)
    with pytest.raises(RuntimeError, match="already called"):
        deferred.run()
    with pytest.raises(ValueError, match="weights must be leaf tensors"):
        split_backward(F.linear(x, w).sum(), [w * 2])


class IgnoresNeeds(Function):
    """A Function that computes every gradient whatever needs_input_grad says."""

    def forward(self, x, w):
        self.x, self.w = x, w
        return x * w

    def backward(self, grad):
        return grad * self.w, grad * self.x


def test_a_function_ignoring_needs_input_grad_is_not_counted_twice():
    w0, x0 = RNG.standard_normal(4), RNG.standard_normal(4)

    def make():
        w = Tensor(w0.copy(), requires_grad=True)
        return lambda mb: ((lambda x: (IgnoresNeeds.apply(x, w), [w], x))(Tensor(x0 + mb, requires_grad=True)))
    assert_split_equals_whole(make, microbatches=2)
