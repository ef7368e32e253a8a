"""Host copies are a budget, counted by the CPU stand-in for CuPy (autograd/testing/fakecupy.py).

On a GPU every copy to the host waits for the device to finish its queue. The budgets:

    training step (any grad_accum)   to the host: 1 copy, 16 bytes (loss and gradient norm together);
                                     to the device: 2 copies per micro-batch (its ids and targets)
    forward and backward             to the host: nothing
    KV-cache decoding step           to the host: 1 copy, one token id (8 bytes) per row;
                                     to the device: the new ids, and the draw's uniform numbers

A regression (an .item(), a float() of a device scalar, a NumPy call on device data) fails
here with the file:line of every copy. On real CuPy these tests skip: the stand-in counts.
"""
import numpy as np
import pytest

from tinyllm import GPT, GPTConfig
from tinyllm.generate import generate
from tinyllm.optim import AdamW
from tinyllm.strategy import NextTokenLoss, SingleProcess
from tinyllm.settings import RunSettings
from tinyllm.trainer import Trainer

GPT2_TINY = GPTConfig(vocab_size=17, block_size=16, n_layer=2, n_head=2, n_embd=16, dropout=0.1)
LLAMA_TINY = GPTConfig(vocab_size=17, block_size=16, n_layer=2, n_head=4, n_kv_head=2, n_embd=16, mlp_hidden=24,
                       norm="rmsnorm", mlp="swiglu", position="rope", bias=False, tie_embeddings=False, dropout=0.1)
CONFIGS = pytest.mark.parametrize("config", [GPT2_TINY, LLAMA_TINY], ids=["gpt2", "llama"])


class RandomWindows(NextTokenLoss):
    """Host batches (B, T) of random ids, as the batch sampler hands them out."""

    def __init__(self, config, batch_size=4, seed=0):
        self.config, self.batch_size, self.rng = config, batch_size, np.random.default_rng(seed)

    def next_batch(self):
        x = self.rng.integers(0, self.config.vocab_size, (self.batch_size, self.config.block_size))
        return x, (x + 1) % self.config.vocab_size


def trainer_for(config, grad_accum):
    model = GPT(config, seed=0, device="cuda")
    train_config = RunSettings.of(device="cuda", grad_accum=grad_accum, batch_size=4, max_iters=10, progress="none")
    optimizer = AdamW(list(model.named_parameters()), lr=1e-3, weight_decay=0.1)
    return Trainer(model, RandomWindows(config), SingleProcess(), settings=train_config, optimizer=optimizer)


@CONFIGS
@pytest.mark.parametrize("grad_accum", [1, 3])
def test_a_training_step_reads_one_pair_of_scalars(stand_in, config, grad_accum):
    trainer = trainer_for(config, grad_accum)
    trainer.train_step()                          # the first step allocates the optimizer's view of things
    stand_in.reset()
    for _ in range(2):
        loss, norm, _ = trainer.train_step()
    assert np.isfinite(loss) and np.isfinite(norm)
    assert (stand_in.to_host, stand_in.to_host_bytes) == (2, 32), stand_in.report("to_host")
    assert stand_in.to_device == 2 * 2 * grad_accum, stand_in.report("to_device")


@CONFIGS
def test_forward_and_backward_copy_nothing_to_the_host(stand_in, config):
    model = GPT(config, seed=0, device="cuda")
    x = np.random.default_rng(0).integers(0, config.vocab_size, (3, 8))
    stand_in.reset()
    _, loss = model(x, np.roll(x, 1, axis=1))
    loss.backward()
    assert stand_in.to_host == 0, stand_in.report("to_host")
    assert stand_in.to_device == 2, stand_in.report("to_device")    # the ids and the targets


@CONFIGS
@pytest.mark.parametrize("rows, settings", [(1, dict(temperature=0)),
                                            (3, dict(temperature=0.8, top_k=5, top_p=0.9))], ids=["greedy", "sampled"])
def test_a_decoding_step_copies_one_token_id_per_row(stand_in, config, rows, settings):
    model = GPT(config, seed=0, device="cuda")
    prompt = np.random.default_rng(1).integers(0, config.vocab_size, (rows, 4))
    stand_in.reset()
    generate(model, prompt, max_new_tokens=1, **settings)                  # the prompt's prefill and one draw
    prefill = (stand_in.to_host, stand_in.to_device)
    stand_in.reset()
    steps = 6
    generate(model, prompt, max_new_tokens=1 + steps, **settings)
    assert stand_in.to_host - prefill[0] == steps, stand_in.report("to_host")
    assert stand_in.to_host_bytes == (1 + steps) * rows * 8                # one int64 id per row and step
    draws = 1 if settings["temperature"] else 0
    assert stand_in.to_device - prefill[1] == steps * (1 + draws), stand_in.report("to_device")
