"""Worker processes (tinyllm/processes.py): one process's gradients, the same bits every run, and workers
that stop with the run, whatever way it ends."""
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from tinyllm import checkpoint as ckpt
from tinyllm.errors import describe
from tinyllm.model import GPT, GPTConfig
from tinyllm.optim import AdamW, global_grad_norm
from tinyllm import processes
from tinyllm.processes import DataProcesses, WorkerError, WorkerTraceback, fork_available
from tinyllm.strategy import NextTokenLoss, SingleProcess, compute_gradients
from tinyllm.threads import DataThreads
from tinyllm.build import build_run
from tinyllm.train import Pretraining
from tinyllm.workers import one_machine_strategy, parallelism_warnings, resolve_workers

from .interrupts import ROOT, interrupt_after_step, process_gone  # tests/train/interrupts.py

pytestmark = pytest.mark.skipif(not fork_available(), reason="worker processes need fork (Linux)")

CONFIG = GPTConfig(vocab_size=13, block_size=8, n_layer=2, n_head=2, n_embd=16, dropout=0.0)
TOKENS = NextTokenLoss()


def _batch(rows, seed=0):
    tokens = np.random.default_rng(seed).integers(0, 13, size=(rows, 9))
    return tokens[:, :-1], tokens[:, 1:]


def _strategy(model, processes):
    optimizer = AdamW(list(model.named_parameters()), lr=1e-2, weight_decay=0.1)
    workers = DataProcesses(processes, optimizer)
    return workers, optimizer


@pytest.mark.parametrize("rows, processes", [(6, 2), (7, 3), (2, 4)])
def test_gradients_and_norm_equal_one_process_in_float64(rows, processes):
    batches = [_batch(rows, 0), _batch(rows, 1)]  # two micro-batches: accumulated in each process's slot
    one, split = GPT(CONFIG, seed=3, dtype="float64"), GPT(CONFIG, seed=3, dtype="float64")
    workers, _ = _strategy(split, processes)
    try:
        expected = compute_gradients(one, batches, step=1)
        got = workers.gradients(split, TOKENS, batches, step=1)
        norm = workers.grad_norm(split.parameters())
    finally:
        workers.close()
    assert got == pytest.approx(expected, abs=1e-12)
    assert norm == pytest.approx(global_grad_norm(one.parameters()), abs=1e-12)
    for (name, p), (_, q) in zip(one.named_parameters(), split.named_parameters()):
        np.testing.assert_allclose(q.grad, p.grad, rtol=0, atol=1e-12, err_msg=name)


@pytest.mark.parametrize("release", [False, True], ids=["slots-kept", "slots-released"])
def test_optimizer_steps_equal_threads_bitwise_and_repeat_run_to_run(release, monkeypatch):
    """One micro-batch a step: the slices' gradients are added in slice order and AdamW runs the same
    kernel on each parameter, so two processes give two threads' float32 bits; a second run the same.
    With the gradient slots given back between steps (as a large model's are), the same bits."""
    if release:
        monkeypatch.setattr(processes, "RELEASE_MIN_BYTES", 0)
    def train(make):
        model = GPT(CONFIG, seed=3)
        optimizer = AdamW(list(model.named_parameters()), lr=1e-2, weight_decay=0.1)
        workers = make(optimizer)
        losses = []
        try:
            for step in range(1, 4):
                optimizer.zero_grad()
                losses.append(workers.gradients(model, TOKENS, [_batch(4, step)], step))
                workers.step(optimizer, 1e-2)
                if release and isinstance(workers, DataProcesses):   # the slots went back: no stale views
                    assert all(p.grad is None for p in model.parameters())
                    assert not any(slot.any() for slot in workers.shared.slots[0])
        finally:
            workers.close()
        return losses, {n: p.data.copy() for n, p in model.named_parameters()}, optimizer.state_arrays()

    runs = [train(lambda opt: DataProcesses(2, opt)), train(lambda opt: DataProcesses(2, opt)),
            train(lambda opt: DataThreads(2))]
    for losses, weights, state in runs[1:]:
        assert losses == runs[0][0]
        for name, value in weights.items():
            assert np.array_equal(value, runs[0][1][name]), name
        for key, value in state.items():
            assert np.array_equal(value, runs[0][2][key]), key


class MaskedTokens(NextTokenLoss):
    """A masked loss weighted by the targets it counts, as instruction tuning's."""

    def weight(self, batch) -> int:
        return int((batch[1] != -100).sum())


def test_a_masked_loss_is_the_exact_batch_mean_and_evaluation_records_no_graph():
    x, y = _batch(6, 0)
    y = y.copy()
    y[:3, 1:] = -100                       # rows counting 1 target and rows counting 8
    one, split = GPT(CONFIG, seed=3, dtype="float64"), GPT(CONFIG, seed=3, dtype="float64")
    workers, _ = _strategy(split, 3)
    masked = MaskedTokens()
    try:
        expected = compute_gradients(one, [(x, y)], masked.loss, step=1)
        assert workers.gradients(split, masked, [(x, y)], step=1) == pytest.approx(expected, abs=1e-12)
        for p in split.parameters():
            p.grad = None
        assert workers.batch_loss(split, masked, (x, y)) == pytest.approx(expected, abs=1e-12)
    finally:
        workers.close()
    assert all(p.grad is None for p in split.parameters())


def test_gradients_add_to_grads_already_there():
    batches = [_batch(4, 0)]
    one, split = GPT(CONFIG, seed=3, dtype="float64"), GPT(CONFIG, seed=3, dtype="float64")
    workers, _ = _strategy(split, 2)
    try:
        compute_gradients(one, batches, step=1)
        compute_gradients(one, batches, step=1)
        workers.gradients(split, TOKENS, batches, step=1)
        workers.gradients(split, TOKENS, batches, step=1)   # the second call adds to the first's .grad
    finally:
        workers.close()
    for p, q in zip(one.parameters(), split.parameters()):
        np.testing.assert_allclose(q.grad, p.grad, rtol=0, atol=1e-12)


def test_an_error_in_a_worker_is_raised_here_with_the_workers_traceback():
    model = GPT(CONFIG, seed=0)
    x, y = _batch(4)
    y = y.copy()
    y[3, 0] = 99  # a target outside the vocabulary, in the last slice (worker 1's)
    workers, _ = _strategy(model, 2)
    try:
        with pytest.raises(ValueError, match="99") as raised:
            workers.gradients(model, TOKENS, [(x, y)], step=1)
        assert isinstance(raised.value.__cause__, WorkerTraceback)
        assert "Traceback" in raised.value.__cause__.text and "_run_jobs" in raised.value.__cause__.text
        assert "(raised in worker process 1)" in getattr(raised.value, "__notes__", ["(raised in worker process 1)"])
        assert workers.gradients(model, TOKENS, [_batch(4)], step=1) > 0   # the workers still serve
    finally:
        workers.close()


def test_a_worker_that_dies_ends_the_step_with_an_error_not_a_hang():
    model = GPT(CONFIG, seed=0)
    workers, _ = _strategy(model, 2)
    try:
        workers.gradients(model, TOKENS, [_batch(4)], step=1)
        process, _ = workers.workers[0]
        os.kill(process.pid, signal.SIGKILL)
        process.join(timeout=5)
        with pytest.raises(WorkerError, match="worker process 1 was killed by SIGKILL .*out-of-memory") as error:
            workers.gradients(model, TOKENS, [_batch(4)], step=2)
        assert describe(error.value)[0] == 2   # a condition of the machine, not a bug: one line, exit 2
    finally:
        workers.close()


def test_close_reaps_the_workers_and_they_ignore_ctrl_c():
    model = GPT(CONFIG, seed=0)
    workers, _ = _strategy(model, 3)
    workers.gradients(model, TOKENS, [_batch(6)], step=1)
    pids = [process.pid for process, _ in workers.workers]
    for pid in pids:
        os.kill(pid, signal.SIGINT)           # as a terminal's Ctrl-C reaches the whole group
        os.kill(pid, signal.SIGTERM)
    assert workers.gradients(model, TOKENS, [_batch(6)], step=2) > 0
    workers.close()
    assert all(process_gone(pid) for pid in pids)
    workers.close()                            # twice is fine


def test_workers_die_with_the_main_process(tmp_path):
    """A main process that ends without closing the strategy (os._exit: no cleanup at all) leaves no worker."""
    script = textwrap.dedent(f"""
        import os, sys
        sys.path.insert(0, {str(ROOT)!r})
        import numpy as np
        from tinyllm.model import GPT, GPTConfig
        from tinyllm.optim import AdamW
        from tinyllm.processes import DataProcesses
        from tinyllm.strategy import NextTokenLoss
        model = GPT(GPTConfig(vocab_size=13, block_size=8, n_layer=1, n_head=2, n_embd=16), seed=0)
        opt = AdamW(list(model.named_parameters()), lr=1e-3)
        workers = DataProcesses(3, opt)
        tokens = np.random.default_rng(0).integers(0, 13, size=(6, 9))
        workers.gradients(model, NextTokenLoss(), [(tokens[:, :-1], tokens[:, 1:])], step=1)
        print(" ".join(str(p.pid) for p, _ in workers.workers), flush=True)
        os._exit(0)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    pids = [int(pid) for pid in out.stdout.split()]
    assert len(pids) == 2 and all(process_gone(pid) for pid in pids)


def test_ctrl_c_on_the_process_group_saves_exits_130_and_leaves_no_worker(tmp_path, corpus_file):
    run = tmp_path / "run"
    argv = ["train", "--data", corpus_file, "--out", run, "--n-layer", "1", "--n-head", "2", "--n-embd", "32",
            "--block-size", "16", "--batch-size", "4", "--eval-iters", "1", "--warmup-iters", "2",
            "--sample-tokens", "0", "--workers", "2", "--parallel", "processes"]
    workers = []
    status, rest = interrupt_after_step(argv, 3, sig=signal.SIGINT, group=True, seen=workers)
    assert status == 128 + signal.SIGINT
    assert "interrupted by SIGINT" in rest and "Traceback" not in rest
    assert len(workers) == 1 and process_gone(workers[0])
    assert ckpt.load_checkpoint(run).step >= 3


@pytest.mark.parametrize("dropout", [0.0, 0.1])
def test_a_run_on_processes_resumes_bitwise_and_matches_threads(tmp_path, corpus_file, tiny, dropout):
    """Processes: stop at step 5, resume, finish = the uninterrupted run, bit for bit (weights, AdamW
    moments, shared with the workers); and equal to a one-process run to float64 rounding."""
    settings = dict(dtype="float64", dropout=dropout, grad_accum=2, max_iters=10, eval_interval=4, workers=2)
    straight = build_run(tiny(corpus_file, tmp_path / "a", **settings), Pretraining(), log=lambda m: None)
    assert isinstance(straight.strategy, DataProcesses)
    full = straight.run()
    first = build_run(tiny(corpus_file, tmp_path / "b", **settings), Pretraining(), log=lambda m: None)
    head = first.run(stop_at=5)
    resumed = build_run(tiny(corpus_file, tmp_path / "b", resume=True, **settings), Pretraining(), log=lambda m: None)
    tail = resumed.run()
    assert head.train_losses + tail.train_losses == full.train_losses
    saved_a, saved_b = ckpt.load_checkpoint(tmp_path / "a"), ckpt.load_checkpoint(tmp_path / "b")
    for name, value in saved_a.model_state.items():
        assert np.array_equal(value, saved_b.model_state[name]), name
    for key, value in saved_a.optimizer_state.items():
        assert np.array_equal(value, saved_b.optimizer_state[key]), key
    one = build_run(tiny(corpus_file, tmp_path / "c", **{**settings, "workers": 1}), Pretraining(), log=lambda m: None)
    np.testing.assert_allclose(one.run().train_losses, full.train_losses, rtol=1e-12)
    for trainer in (straight, first, resumed):
        trainer.strategy.close()


def test_the_flags_pick_the_strategy_and_say_so(tmp_path, monkeypatch):
    from tinyllm.settings import RunSettings
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("OPENBLAS_NUM_THREADS", raising=False)
    base = dict(out=str(tmp_path), batch_size=12)
    model = GPT(CONFIG, seed=0)
    optimizer = AdamW(list(model.named_parameters()))

    def workers(**settings):   # (the workers section, the batch size, the device), as a run reads them
        settings = RunSettings.of(**base, **settings)
        return settings.workers, settings.loop.batch_size, settings.device
    assert resolve_workers(*workers(workers=2)) == (2, "processes")
    assert resolve_workers(*workers(workers=2, parallel="threads")) == (2, "threads")
    assert resolve_workers(*workers(threads=3)) == (3, "threads")        # the earlier flag
    assert resolve_workers(*workers(workers=1)) == (1, "one")
    assert resolve_workers(*workers(workers=4, device="cuda")) == (1, "one")
    assert isinstance(one_machine_strategy(*workers(workers=2), optimizer), DataProcesses)
    assert isinstance(one_machine_strategy(*workers(workers=1), optimizer), SingleProcess)
    with pytest.raises(ValueError, match="--threads"):
        RunSettings.of(**base, threads=2, workers=3)
    with pytest.raises(ValueError, match="--parallel"):
        RunSettings.of(**base, parallel="mpi")
    cores = len(os.sched_getaffinity(0))
    lines = parallelism_warnings(*workers(workers=cores + 1))
    assert any(f"on {cores} core(s): oversubscribed" in line for line in lines)
    assert parallelism_warnings(*workers(workers=1)) == []


def test_a_blas_that_cannot_be_limited_is_said_on_the_first_lines(tmp_path, monkeypatch):
    from tinyllm import threads
    from tinyllm.settings import RunSettings

    class Unlimited(threads.BlasThreads):
        def __init__(self):
            super().__init__()
            self.problem = "threadpoolctl finds no BLAS library it can limit in this process"
    monkeypatch.setattr("tinyllm.workers.BlasThreads", Unlimited)
    settings = RunSettings.of(out=str(tmp_path), batch_size=12, workers=2)
    lines = parallelism_warnings(settings.workers, settings.loop.batch_size, settings.device)
    assert any(line.startswith("warning: threadpoolctl finds no BLAS library") and "--workers 1" in line
               for line in lines)


def test_parameters_live_in_shared_memory_after_the_first_step():
    model = GPT(CONFIG, seed=0)
    workers, optimizer = _strategy(model, 2)
    try:
        before = {n: p.data.copy() for n, p in model.named_parameters()}
        workers.gradients(model, TOKENS, [_batch(4)], step=1)
        workers.step(optimizer, 1e-3)
        assert all(p.data.base is not None for p in model.parameters())   # views of the shared mapping
        assert all(a.base is not None for a in optimizer.state_arrays().values())   # the AdamW moments too
        changed = [n for n, p in model.named_parameters() if not np.array_equal(p.data, before[n])]
        assert len(changed) == len(before)  # the workers' share too: every parameter moved
        model.load_state_dict(before)       # replaced arrays go back into the mapping at the next step
        workers.gradients(model, TOKENS, [_batch(4)], step=2)
        assert all(p.data.base is not None for p in model.parameters())
    finally:
        workers.close()


def test_a_run_that_never_closes_its_workers_still_exits(tmp_path):
    """multiprocessing's exit hook SIGTERMs daemonic children (workers ignore it) and joins them:
    the workers must be stopped first, even when an earlier weakref.finalize (the run lock's)
    registered its exit hook before multiprocessing did (a `tinyllm train` SIGTERMed during
    evaluation hung here)."""
    script = textwrap.dedent("""
        import weakref
        import numpy as np
        class Holder: pass
        holder = Holder(); weakref.finalize(holder, lambda: None)
        from tinyllm.model import GPT, GPTConfig
        from tinyllm.optim import AdamW
        from tinyllm.processes import DataProcesses
        from tinyllm.strategy import NextTokenLoss
        model = GPT(GPTConfig(vocab_size=13, block_size=8, n_layer=1, n_head=2, n_embd=16), seed=0)
        optimizer = AdamW(list(model.named_parameters()), lr=1e-2)
        workers = DataProcesses(2, optimizer)
        tokens = np.random.default_rng(0).integers(0, 13, size=(4, 9))
        workers.gradients(model, NextTokenLoss(), [(tokens[:, :-1], tokens[:, 1:])], step=1)
        workers.step(optimizer, 1e-2)
        print("stepped", flush=True)
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout == "stepped\n", proc.stderr
