"""A diverging run publishes nothing unusable and says so in one line.

The promise (docs/usage.md, "What happens when things go wrong"): no checkpoint holding a NaN
or an infinity is ever published as `last` or `best`; the run stops with one line, exit 2,
naming the step and the truly last good checkpoint, with none of NumPy's RuntimeWarnings
before it; metrics.jsonl stays strict JSON. Through the real command line in a subprocess
(its whole stderr, worker processes' included), one process and worker processes alike.
"""
import json
import math

import numpy as np
import pytest

from .bounded import TINY, assert_one_line_error, run_tinyllm
from tinyllm import checkpoint as ckpt
from tinyllm.errors import UserError, describe
from tinyllm.model import GPT, GPTConfig
from tinyllm.optim import AdamW
from tinyllm.strategy import NextTokenLoss, SingleProcess
from tinyllm.settings import RunSettings
from tinyllm.trainer import MetricsLog, NonFiniteLossError, RunLog, Trainer

HUGE_LR = ["--lr", "1e38", "--min-lr", "0", "--warmup-iters", "0"]


def strict_json(line: str):
    """json.loads as jq reads: NaN and Infinity are not JSON."""
    def refuse(constant):
        raise ValueError(f"{constant} is not JSON")
    return json.loads(line, parse_constant=refuse)


def assert_no_numpy_warnings(err: str) -> None:
    assert "RuntimeWarning" not in err and "Warning:" not in err, err


def assert_every_published_checkpoint_loads(run) -> None:
    for link in ("last", "best"):
        if (run / link).is_symlink():
            checkpoint = ckpt.load_checkpoint(run / link)     # raises on a NaN or an infinity
            assert checkpoint.state["val_loss"] is None or math.isfinite(checkpoint.state["val_loss"])
    for line in (run / "metrics.jsonl").read_text().splitlines():
        strict_json(line)


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_run_that_diverges_at_once_publishes_nothing_and_says_so_in_one_line(workers, tmp_path, corpus):
    run = tmp_path / "run"
    code, _, err = run_tinyllm("train", "--data", corpus, "--out", run, *TINY, *HUGE_LR, "--max-iters", "6",
                               "--eval-interval", "1", "--workers", workers)
    assert_one_line_error(code, err, "train", "step 1: the update made the weights of",
                          "NaN or infinite", "Last good checkpoint: none", "--lr")
    assert_no_numpy_warnings(err)
    assert not (run / "last").is_symlink() and not (run / "best").is_symlink()
    assert_every_published_checkpoint_loads(run)


@pytest.mark.parametrize("parallel", ["processes", "threads"])
def test_a_good_run_resumed_with_a_huge_lr_stops_naming_its_last_good_checkpoint(parallel, tmp_path, corpus):
    run = tmp_path / "run"
    code, _, err = run_tinyllm("train", "--data", corpus, "--out", run, *TINY, "--max-iters", "4",
                               "--eval-interval", "2", "--workers", "2", "--parallel", parallel)
    assert code == 0, err
    good = (run / "last").resolve()
    code, _, err = run_tinyllm("train", "--out", run, "--resume", "--max-iters", "9", "--eval-interval", "1",
                               *HUGE_LR, "--progress", "none")
    assert_one_line_error(code, err, "train", f"Last good checkpoint: {good}")
    assert_no_numpy_warnings(err)
    assert (run / "last").resolve() == good and ckpt.load_checkpoint(run).step == 4
    assert_every_published_checkpoint_loads(run)


def tiny_trainer(tmp_path, **settings):
    config = GPTConfig(vocab_size=7, block_size=8, n_layer=1, n_head=2, n_embd=8)
    model = GPT(config, seed=0)
    optimizer = AdamW(list(model.named_parameters()), lr=1e-3)

    class Windows(NextTokenLoss):
        def next_batch(self):
            x = np.random.default_rng(0).integers(0, 7, (2, 8))
            return x, (x + 1) % 7

        def evaluate(self, model, batch_loss):
            return {"train": batch_loss(self.next_batch()), "val": batch_loss(self.next_batch())}

        def state(self):
            return {}

        def set_state(self, state):
            pass

        def checkpoint_entries(self):
            return {}

    train_config = RunSettings.of(max_iters=4, progress="none", **settings)
    return Trainer(model, Windows(), SingleProcess(), settings=train_config, optimizer=optimizer,
                   run_dir=tmp_path / "run")


def test_weights_that_went_bad_are_never_saved_and_the_error_names_the_last_good_one(tmp_path):
    """The check before publishing, on its own: weights made NaN behind the loop's back."""
    trainer = tiny_trainer(tmp_path)
    trainer.train_step()
    good = trainer.save()
    trainer.train_step()
    trainer.model.wte.weight.data[0, 0] = np.inf
    with pytest.raises(NonFiniteLossError, match=r"step 2: the weights to save hold NaN or infinite values "
                                                 r"\(wte\.weight\); nothing was saved\. Last good checkpoint: ") as error:
        trainer.save(best=True)
    assert good in str(error.value)
    assert ckpt.load_checkpoint(tmp_path / "run").step == 1
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == ["step-0000001"]   # no staging left
    assert describe(error.value) == (2, str(error.value)) and isinstance(error.value, UserError)


def test_an_evaluation_that_is_not_finite_stops_the_run_saves_nothing_and_is_never_the_best(tmp_path):
    trainer = tiny_trainer(tmp_path)
    trainer.train_step()
    trainer.evaluate = lambda evaluation=None: {"train": 2.0, "val": float("nan")}
    with pytest.raises(NonFiniteLossError, match=r"step 1: the evaluation's val loss is nan; nothing was saved"):
        trainer.evaluate_and_log(RunLog(trainer), lr=1e-3)
    assert trainer.best_val_loss is None and not (tmp_path / "run" / "last").exists()


def test_metrics_jsonl_is_strict_json(tmp_path):
    log = MetricsLog(tmp_path / "metrics.jsonl").start(None)
    log.write({"step": 3, "val_loss": float("nan"), "train_loss": float("inf"), "lr": 1e-3,
               "more": {"accuracy": float("-inf")}})
    record = strict_json((tmp_path / "metrics.jsonl").read_text())
    assert record == {"step": 3, "val_loss": None, "train_loss": None, "lr": 1e-3, "more": {"accuracy": None}}


def test_a_checkpoint_whose_best_val_loss_is_nan_resumes_with_no_best_yet(tmp_path):
    """Older code recorded a NaN evaluation as the best; a resumed run must be able to beat it."""
    trainer = tiny_trainer(tmp_path)
    trainer.train_step()
    trainer.save()
    state = json.loads((tmp_path / "run" / "last" / "state.json").read_text())
    resumed = tiny_trainer(tmp_path)
    checkpoint = ckpt.load_checkpoint(tmp_path / "run")
    checkpoint.state["best_val_loss"] = float("nan")
    resumed.restore(checkpoint)
    assert resumed.best_val_loss is None and state["step"] == resumed.step == 1
