"""The training loop: learning happens, accumulation is exact, resume is bitwise, NaN stops safely."""
import json
import os
import signal

import numpy as np
import pytest

from autograd import backend
from tinyllm import checkpoint as ckpt
from tinyllm.model import GPT, GPTConfig
from tinyllm.optim import AdamW
from tinyllm.strategy import SingleProcess, compute_gradients
from tinyllm.build import build_run
from tinyllm.settings import RunSettings
from tinyllm.train import Pretraining, estimate_loss
from tinyllm.trainer import NonFiniteLossError


def test_loss_falls_on_a_tiny_corpus(tmp_path, corpus_file, tiny):
    trainer = build_run(tiny(corpus_file, tmp_path / "run", max_iters=60, eval_interval=60), Pretraining(), log=lambda m: None)
    before = trainer.evaluate()
    result = trainer.run()
    assert result.status == "finished" and result.step == 60
    assert result.last_eval["val"] < before["val"] - 0.8
    assert result.last_eval["train"] < before["train"] - 0.8


def test_overfitting_one_batch_reaches_near_zero_loss():
    rng = np.random.default_rng(0)
    model = GPT(GPTConfig(vocab_size=16, block_size=16, n_layer=1, n_head=2, n_embd=32), seed=0)
    opt = AdamW(list(model.named_parameters()), lr=1e-2, betas=(0.9, 0.99))
    tokens = rng.integers(0, 16, size=(2, 17))
    x, y = tokens[:, :-1], tokens[:, 1:]
    for _ in range(150):
        loss = compute_gradients(model, [(x, y)])
        opt.step()
        opt.zero_grad()
    assert loss < 0.05


def test_gradient_accumulation_equals_one_big_batch():
    rng = np.random.default_rng(1)
    config = GPTConfig(vocab_size=13, block_size=8, n_layer=2, n_head=2, n_embd=16, dropout=0.0)
    tokens = rng.integers(0, 13, size=(6, 9))
    x, y = tokens[:, :-1], tokens[:, 1:]
    big, accum = GPT(config, seed=3, dtype="float64"), GPT(config, seed=3, dtype="float64")
    big_loss = compute_gradients(big, [(x, y)])
    micro_loss = compute_gradients(accum, [(x[i:i + 2], y[i:i + 2]) for i in range(0, 6, 2)])
    assert micro_loss == pytest.approx(big_loss, abs=1e-12)
    for (name, p), (_, q) in zip(big.named_parameters(), accum.named_parameters()):
        np.testing.assert_allclose(q.grad, p.grad, rtol=0, atol=1e-12, err_msg=name)


def _weights(trainer):
    return {name: backend.to_numpy(p.data).copy() for name, p in trainer.model.named_parameters()}


@pytest.mark.parametrize("dtype, threads, device", [("float64", 1, "cpu"), ("float32", 1, "cpu"), ("float64", 3, "cpu"),
                                                    ("float32", 2, "cpu"), ("float64", 1, "cuda"),
                                                    ("float32", 1, "cuda")], indirect=["device"])
def test_resume_is_bitwise_identical_to_an_uninterrupted_run(tmp_path, corpus_file, tiny, dtype, threads, device):
    """On [cuda] too (real CuPy on a GPU, else the CPU stand-in). Dropout masks are keyed by the seed and
    the step, so the checkpoint holds no generator state, only the scheme's name."""
    settings = dict(dtype=dtype, dropout=0.1, grad_accum=2, max_iters=20, eval_interval=6, threads=threads,
                    device=device)
    straight = build_run(tiny(corpus_file, tmp_path / "a", **settings), Pretraining(), log=lambda m: None)
    full = straight.run()

    first = build_run(tiny(corpus_file, tmp_path / "b", **settings), Pretraining(), log=lambda m: None)
    head = first.run(stop_at=10)
    assert head.step == 10 and ckpt.load_checkpoint(tmp_path / "b").step == 10
    assert ckpt.load_checkpoint(tmp_path / "b").state["rng"]["dropout"] == "keyed"
    resumed = build_run(tiny(corpus_file, tmp_path / "b", resume=True, **settings), Pretraining(), log=lambda m: None)
    assert resumed.step == 10
    tail = resumed.run()

    assert head.train_losses + tail.train_losses == full.train_losses       # exact float equality
    a, b = _weights(straight), _weights(resumed)
    for name in a:
        assert np.array_equal(a[name], b[name]), name
    for key, value in straight.optimizer.state_arrays().items():
        assert np.array_equal(backend.to_numpy(value), backend.to_numpy(resumed.optimizer.state_arrays()[key])), key
    assert full.last_eval == tail.last_eval and straight.tokens_seen == resumed.tokens_seen
    def records(run):  # timings differ between runs; everything else must not
        timings = ("tokens_per_s", "gflop_per_s", "elapsed_s")
        return [{k: v for k, v in json.loads(line).items() if k not in timings}
                for line in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]
    assert records("b") == records("a")


def test_non_finite_loss_stops_before_touching_weights_and_keeps_the_checkpoint(tmp_path, corpus_file, tiny,
                                                                                 monkeypatch):
    trainer = build_run(tiny(corpus_file, tmp_path / "run", eval_interval=5, threads=1), Pretraining(), log=lambda m: None)

    class Poisoned(SingleProcess):
        def gradients(self, model, task, batches, step=0):
            loss = super().gradients(model, task, batches, step)
            return float("nan") if step == 8 else loss
    trainer.strategy = Poisoned()
    with pytest.raises(NonFiniteLossError, match=r"step 8: the loss is nan.*step-0000005"):
        trainer.run()
    assert trainer.step == 7
    saved = ckpt.load_checkpoint(tmp_path / "run")
    assert saved.step == 5
    assert all(np.isfinite(a).all() for a in saved.model_state.values())
    weights = _weights(trainer)
    assert all(np.isfinite(w).all() for w in weights.values())


def test_a_signal_during_an_evaluation_stops_the_run_after_the_next_agreement(tmp_path, corpus_file, tiny):
    """The stop is decided once per step, by strategy.agree_stop, before evaluating and saving: a
    signal that lands later (here during step 4's evaluation) stops the run after step 5, so no
    rank of a pipeline can enter a checkpoint save the others skip."""
    run = tmp_path / "run"
    trainer = build_run(tiny(corpus_file, run, eval_interval=4, threads=1), Pretraining(), log=lambda m: None)
    events = []

    class Signalling(SingleProcess):
        def batch_loss(self, model, task, batch):
            if trainer.step == 4 and "kill" not in events:
                events.append("kill")
                os.kill(os.getpid(), signal.SIGTERM)
            return super().batch_loss(model, task, batch)

        def agree_stop(self, seen):
            events.append(("agree", trainer.step, seen))
            return seen

        def save(self, run_dir, **kwargs):
            events.append(("save", trainer.step))
            return super().save(run_dir, **kwargs)
    trainer.strategy = Signalling()
    result = trainer.run()
    assert (result.status, result.step, result.stop_signal, result.exit_status) == ("interrupted", 5, 15, 143)
    assert events[events.index("kill"):] == ["kill", ("save", 4), ("agree", 5, signal.SIGTERM), ("save", 5)]
    assert ckpt.load_checkpoint(run).step == 5


def test_eval_uses_the_same_batches_every_time():
    seen = []

    def batch_loss(batch):
        seen.append(batch[0].copy())
        return float(batch[0].sum())
    tokens = np.arange(200) % 7
    first = estimate_loss(batch_loss, tokens, 4, 3, 2, seed=5)
    assert estimate_loss(batch_loss, tokens, 4, 3, 2, seed=5) == first
    assert len(seen) == 4 and all(np.array_equal(a, b) for a, b in zip(seen[:2], seen[2:]))
    assert not np.array_equal(seen[0], seen[1])                 # two different batches per evaluation
    assert estimate_loss(batch_loss, tokens, 4, 3, 2, seed=6) != first


def test_config_errors_name_the_flag():
    from tinyllm.fields import ConfigError
    with pytest.raises(ConfigError, match=r"--lr -0\.1: must be positive"):
        RunSettings.of(lr=-0.1)
    with pytest.raises(ConfigError, match=r"--block-size 0: must be a positive integer"):
        RunSettings.of(block_size=0)
    with pytest.raises(ConfigError, match=r"--min-lr 0\.5: must be between 0 and --lr"):
        RunSettings.of(min_lr=0.5)
    with pytest.raises(ConfigError, match="--preset"):
        RunSettings.of(preset="huge")


def test_achieved_flops_are_reported_against_the_measured_gemm_rate(tmp_path, corpus_file, tiny):
    import io

    from autograd import backend
    from tinyllm.trainer import flops_per_token
    trainer = build_run(tiny(corpus_file, tmp_path / "run", max_iters=4, log_interval=2, eval_interval=4,
                                 progress="log"), Pretraining(), log=lambda m: None)
    c = trainer.model.config
    assert flops_per_token(trainer.model) == 6 * trainer.model.num_parameters() + 12 * c.n_layer * c.block_size * c.n_embd
    trainer.progress_stream = stream = io.StringIO()
    trainer.run()
    text = stream.getvalue()
    assert "yardstick: float32 matrix products run at" in text and "GFLOP/s (" in text and "% of GEMM)" in text
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    logged = [r for r in records if "gflop_per_s" in r]
    assert logged and all(r["gflop_per_s"] == pytest.approx(r["tokens_per_s"] * trainer.flops_per_token / 1e9,
                                                            rel=0.01, abs=0.006)
                          for r in logged)
    assert 0 < backend.gemm_gflops("float64", n=64, repeats=2) < 1e5


def test_progress_bar_and_log_lines_show_step_loss_lr_and_throughput():
    import io

    from tinyllm.trainer import Progress
    stream = io.StringIO()
    bar = Progress("bar", total=10, initial=0, stream=stream)
    bar.step(5, 10, loss=2.5, lr=1e-3, tokens_per_s=1234.0, eta_s=4.0, log_now=True)
    bar.message("step 5: train loss 2.5000, val loss 2.6000")
    bar.close()
    text = stream.getvalue()
    assert "5/10" in text and "val loss 2.6000" in text
    stream = io.StringIO()
    Progress("auto", total=10, initial=0, stream=stream).step(3, 10, 2.5, 1e-3, 1234.0, 75.0, log_now=True)
    assert stream.getvalue() == "step      3/10 | loss 2.5000 | lr 1.00e-03 | 1,234 tok/s | eta 1m15s\n"
    stream = io.StringIO()
    Progress("log", total=10, initial=0, stream=stream).step(3, 10, 2.5, 1e-3, 1234.0, 75.0, log_now=True,
                                                            flops=" | 4.2 GFLOP/s (7% of GEMM)")
    assert "1,234 tok/s | 4.2 GFLOP/s (7% of GEMM) | eta" in stream.getvalue()
