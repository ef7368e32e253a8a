"""Keyed dropout through the strategies: one process, micro-batches, threads and worker processes draw
the same masks for the same rows (float64, 1e-12), and a checkpoint holds the scheme, not a generator.
(The pipeline's side is in tests/parallel/test_mpi_pipeline.py.)"""
import numpy as np
import pytest

from tinyllm import checkpoint as ckpt
from tinyllm.model import GPT, GPTConfig
from tinyllm.optim import AdamW
from tinyllm.processes import DataProcesses, fork_available
from tinyllm.strategy import NextTokenLoss, SingleProcess, compute_gradients
from tinyllm.threads import DataThreads
from tinyllm.build import build_run
from tinyllm.train import Pretraining

LEARNED = GPTConfig(vocab_size=13, block_size=8, n_layer=2, n_head=2, n_embd=16, dropout=0.1)
ROPE = GPTConfig(vocab_size=13, block_size=8, n_layer=2, n_head=2, n_kv_head=1, n_embd=16, dropout=0.1,
                 norm="rmsnorm", mlp="swiglu", position="rope", bias=False, tie_embeddings=False)
TOKENS = NextTokenLoss()


def _batch(rows, seed=0):
    tokens = np.random.default_rng(seed).integers(0, 13, size=(rows, 9))
    return tokens[:, :-1], tokens[:, 1:]


def _strategies():
    yield "one process", lambda model: SingleProcess()
    for n in (2, 3):
        yield f"{n} threads", lambda model, n=n: DataThreads(n)
        if fork_available():
            yield f"{n} processes", lambda model, n=n: DataProcesses(n, AdamW(list(model.named_parameters())))


@pytest.mark.parametrize("config", [LEARNED, ROPE], ids=["gpt2", "llama"])
def test_every_split_of_the_batch_draws_the_masks_of_one_process(config):
    x, y = _batch(12)
    reference = GPT(config, seed=3, dtype="float64")
    expected = compute_gradients(reference, [(x, y)], step=5)           # 12 rows, one forward
    without = GPT(config, seed=3, dtype="float64")
    assert abs(compute_gradients(without, [(x, y)], step=6) - expected) > 1e-4   # another step: other masks
    halves = [(x[:6], y[:6]), (x[6:], y[6:])]                            # the same rows as two micro-batches
    for name, make in _strategies():
        model = GPT(config, seed=3, dtype="float64")
        strategy = make(model)
        try:
            got = strategy.gradients(model, TOKENS, halves, step=5)
        finally:
            getattr(strategy, "close", lambda: None)()
        assert got == pytest.approx(expected, abs=1e-12), name
        for (param, p), (_, q) in zip(reference.named_parameters(), model.named_parameters()):
            np.testing.assert_allclose(q.grad, p.grad, rtol=0, atol=1e-12, err_msg=f"{name}: {param}")


def test_a_new_run_checkpoints_the_keyed_scheme_and_resumes_in_it(tmp_path, corpus_file, tiny):
    settings = dict(dropout=0.2, max_iters=6, eval_interval=3, workers=1)
    first = build_run(tiny(corpus_file, tmp_path / "run", **settings), Pretraining(), log=lambda m: None)
    first.run(stop_at=3)
    state = ckpt.read_state(tmp_path / "run")
    assert state["rng"]["dropout"] == "keyed"                              # the seed and step are the key
    resumed = build_run(tiny(corpus_file, tmp_path / "run", resume=True, **settings), Pretraining(), log=lambda m: None)
    assert resumed.model.dropout_masks.scheme == "keyed"
    tail = resumed.run()
    straight = build_run(tiny(corpus_file, tmp_path / "straight", **settings), Pretraining(), log=lambda m: None).run()
    assert tail.train_losses == straight.train_losses[3:]


def test_a_model_run_by_hand_still_draws_fresh_masks_each_call():
    """Outside a training step (no key), masks come from the model's seeded generator."""
    model = GPT(LEARNED, seed=1)
    x, _ = _batch(2)
    assert not np.array_equal(model(x)[0].data, model(x)[0].data)
    again = GPT(LEARNED, seed=1)
    first = again(x)[0].data
    assert np.array_equal(GPT(LEARNED, seed=1)(x)[0].data, first)
    with model.dropout_masks.at(step=4, row=0):
        keyed = model(x)[0].data
        assert np.array_equal(model(x)[0].data, keyed)                     # a key: the same masks
