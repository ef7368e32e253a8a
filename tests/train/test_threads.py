"""Data-parallel threads (tinyllm/threads.py): the same gradients as one thread, the same numbers every run."""
import threading

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from autograd import Tensor, grad_enabled, no_grad
from tinyllm.model import GPT, GPTConfig
from tinyllm.optim import AdamW
from tinyllm.strategy import NextTokenLoss, SingleProcess, compute_gradients
from tinyllm.threads import DataThreads, default_threads, split_by_size, split_rows
from tinyllm.workers import WorkerSettings, resolve_workers

CONFIG = GPTConfig(vocab_size=13, block_size=8, n_layer=2, n_head=2, n_embd=16, dropout=0.0)
TOKENS = NextTokenLoss()   # the task of (x, y) token batches


def _batch(rows, seed=0):
    tokens = np.random.default_rng(seed).integers(0, 13, size=(rows, 9))
    return tokens[:, :-1], tokens[:, 1:]


@given(st.integers(1, 40), st.integers(1, 9))
def test_split_rows_covers_the_batch_in_contiguous_nearly_equal_slices(rows, parts):
    ranges = split_rows(rows, parts)
    assert len(ranges) == min(rows, parts)
    assert ranges[0][0] == 0 and ranges[-1][1] == rows
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
    sizes = [b - a for a, b in ranges]
    assert min(sizes) >= 1 and max(sizes) - min(sizes) <= 1


@given(st.lists(st.integers(0, 50), min_size=1, max_size=30), st.integers(1, 6))
def test_split_by_size_gives_contiguous_groups_of_about_equal_size(sizes, parts):
    ranges = split_by_size(sizes, parts)
    assert 1 <= len(ranges) <= parts
    assert ranges[0][0] == 0 and ranges[-1][1] == len(sizes)
    assert all(a[1] == b[0] and a[0] < a[1] for a, b in zip(ranges, ranges[1:]))
    totals = [sum(sizes[a:b]) for a, b in ranges]
    assert max(totals) <= sum(sizes) / parts + max(sizes)   # within one item of an even share


@pytest.mark.parametrize("threads", [2, 3])
def test_optimizer_steps_on_threads_equal_one_thread_bitwise(threads):
    models = [GPT(CONFIG, seed=3), GPT(CONFIG, seed=3)]
    optimizers = [AdamW(list(m.named_parameters()), lr=1e-2, weight_decay=0.1) for m in models]
    one, workers = SingleProcess(), DataThreads(threads)
    try:
        for step in range(3):
            x, y = _batch(4, step)
            for m, opt, strategy in zip(models, optimizers, (one, workers)):
                opt.zero_grad()
                compute_gradients(m, [(x, y)])
                strategy.step(opt, 1e-2)
    finally:
        workers.close()
    for (name, p), (_, q) in zip(models[0].named_parameters(), models[1].named_parameters()):
        assert np.array_equal(p.data, q.data), name


@pytest.mark.parametrize("rows, threads", [(6, 2), (7, 3), (5, 4), (2, 5)])
def test_threaded_gradients_equal_one_thread_in_float64(rows, threads):
    batches = [_batch(rows, 0), _batch(rows, 1)]  # two micro-batches: accumulation across calls too
    one, split = GPT(CONFIG, seed=3, dtype="float64"), GPT(CONFIG, seed=3, dtype="float64")
    workers = DataThreads(threads)
    try:
        expected = compute_gradients(one, batches)
        got = workers.gradients(split, TOKENS, batches)
    finally:
        workers.close()
    assert got == pytest.approx(expected, abs=1e-12)
    for (name, p), (_, q) in zip(one.named_parameters(), split.named_parameters()):
        np.testing.assert_allclose(q.grad, p.grad, rtol=0, atol=1e-12, err_msg=name)


class MaskedTokens(NextTokenLoss):
    """A masked loss (targets -100 are ignored), weighted by the targets it counts, as instruction tuning's."""

    def weight(self, batch) -> int:
        return int((batch[1] != -100).sum())


@pytest.mark.parametrize("threads", [2, 3])
def test_threads_give_the_exact_batch_mean_of_a_masked_loss(threads):
    """Rows with very different numbers of counted targets: slices weighted by their counts give the
    one-thread mean and gradients (weighting by rows would not)."""
    x, y = _batch(6, 0)
    y = y.copy()
    y[:3, 1:] = -100                       # the first three rows count one target each, the others all eight
    one, split = GPT(CONFIG, seed=3, dtype="float64"), GPT(CONFIG, seed=3, dtype="float64")
    masked = MaskedTokens()
    workers = DataThreads(threads)
    try:
        expected = compute_gradients(one, [(x, y)], masked.loss)
        got = workers.gradients(split, masked, [(x, y)])
        assert workers.batch_loss(split, masked, (x, y)) == pytest.approx(expected, abs=1e-12)
        by_rows = workers.batch_loss(split, TOKENS, (x, y))
    finally:
        workers.close()
    assert got == pytest.approx(expected, abs=1e-12)
    assert abs(by_rows - expected) > 1e-3
    for (name, p), (_, q) in zip(one.named_parameters(), split.named_parameters()):
        np.testing.assert_allclose(q.grad, p.grad, rtol=0, atol=1e-12, err_msg=name)


def test_threaded_loss_equals_one_thread_and_records_no_graph():
    model = GPT(CONFIG, seed=3, dtype="float64")
    x, y = _batch(7)
    workers = DataThreads(3)
    try:
        assert workers.batch_loss(model, TOKENS, (x, y)) == pytest.approx(
            SingleProcess().batch_loss(model, TOKENS, (x, y)), abs=1e-12)
    finally:
        workers.close()
    assert all(p.grad is None for p in model.parameters())


def test_threaded_steps_are_bitwise_repeatable_with_dropout():
    config = GPTConfig(vocab_size=13, block_size=8, n_layer=2, n_head=2, n_embd=16, dropout=0.2)
    x, y = _batch(6)
    runs = []
    for _ in range(2):
        model = GPT(config, seed=5)
        workers = DataThreads(2)
        losses = [workers.gradients(model, TOKENS, [(x, y)]) for _ in range(3)]
        workers.close()
        runs.append((losses, [p.grad.copy() for p in model.parameters()]))
    assert runs[0][0] == runs[1][0]
    for a, b in zip(runs[0][1], runs[1][1]):
        assert np.array_equal(a, b)
    assert len(set(runs[0][0])) == 3  # fresh masks every call


def test_each_slice_draws_its_own_dropout_masks():
    """Two slices of identical rows still see different masks (each thread has its own generator)."""
    config = GPTConfig(vocab_size=13, block_size=8, n_layer=1, n_head=2, n_embd=16, dropout=0.5)
    x, y = _batch(1)
    x, y = np.repeat(x, 2, axis=0), np.repeat(y, 2, axis=0)
    model = GPT(config, seed=0)
    seen = []
    real_forward = model.forward

    def spy(idx, targets=None):
        logits, loss = real_forward(idx, targets)
        seen.append(float(loss.item()))
        return logits, loss
    model.forward = spy
    workers = DataThreads(2)
    try:
        workers.gradients(model, TOKENS, [(x, y)])
    finally:
        workers.close()
    assert len(seen) == 2 and seen[0] != seen[1]


def test_an_error_in_a_worker_reaches_the_caller():
    model = GPT(CONFIG, seed=0)
    x, y = _batch(4)
    y = y.copy()
    y[3, 0] = 99  # a target outside the vocabulary, in the last slice (a worker thread's)
    workers = DataThreads(2)
    try:
        with pytest.raises(Exception, match="99"):
            workers.gradients(model, TOKENS, [(x, y)])
    finally:
        workers.close()


def test_grad_mode_is_per_thread():
    seen = {}
    with no_grad():
        t = threading.Thread(target=lambda: seen.setdefault("worker", grad_enabled()))
        t.start()
        t.join()
        seen["main"] = grad_enabled()
    assert seen == {"worker": True, "main": False}
    x = Tensor(np.ones(3), requires_grad=True)
    assert (x * 2).requires_grad


def test_thread_count_comes_from_the_flag_then_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert default_threads() == 3
    assert resolve_workers(WorkerSettings(), 12, "cpu") == (3, "processes")
    assert resolve_workers(WorkerSettings(threads=5), 12, "cpu") == (5, "threads")
    assert resolve_workers(WorkerSettings(threads=5), 2, "cpu") == (2, "threads")  # one row each
    monkeypatch.delenv("OMP_NUM_THREADS")
    monkeypatch.delenv("OPENBLAS_NUM_THREADS", raising=False)
    assert default_threads() >= 1
    with pytest.raises(ValueError, match="threads"):
        WorkerSettings(threads=-1)
    with pytest.raises(ValueError, match="threads"):
        DataThreads(0)
