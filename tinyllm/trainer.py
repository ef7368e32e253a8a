"""The training loop: `Trainer(model, task, strategy)`, the same loop for every kind of run.

    trainer = Trainer(model, task, strategy, settings=settings, optimizer=optimizer,
                      tokenizer=tokenizer, run_dir="runs/demo")
    result = trainer.run()     # steps, evaluations, checkpoints, until settings.loop.max_iters

A run is assembled in one place, tinyllm/build.py (`build_run`), which makes the Trainer;
`settings` is the run's tinyllm.settings.RunSettings, whose `loop` section (`LoopSettings`,
here) the loop reads, with the optimisation section's schedule and clipping.

What differs between runs is in two objects (their protocols, `Task` and `Strategy`, are below):

    task      what to learn: its batches, its loss, its evaluation, its own checkpoint state.
              tinyllm.train.PretrainingTask; tinyllm.finetune.FinetuneTask (classify, instruct)
    strategy  how a step's work is done and agreed: gradients, their global norm, evaluation
              losses, saving, stopping. tinyllm.strategy.SingleProcess, tinyllm.processes.DataProcesses,
              tinyllm.threads.DataThreads, parallel.strategy.PipelineStrategy

One step, in order (`train_step`, then `run`):

    lr      = schedule(step)
    batches = grad_accum micro-batches from the task
    loss    = strategy.gradients(model, task, batches)   # mean loss; grads in .grad
    norm    = strategy.grad_norm(params)                  # global L2 norm, before clipping
    read loss and norm (on a GPU: the step's one copy to the host, both numbers together)
    stop if loss or norm is not finite (NonFiniteLossError; the weights are untouched)
    clip to grad_clip, strategy.step(optimizer, lr), zero the grads
    stop if the update made a weight NaN or infinite (host weights of one process: checked
    here; elsewhere the next step's loss and the check before saving find it)
    stop    = strategy.agree_stop(signal seen)            # every rank, after the step's collectives
    log; evaluate and checkpoint when due; on a stop, checkpoint and return "interrupted"

An evaluation whose loss is not finite, and weights to save that are not (checked before
anything is published: checkpoint.write_tensor_file), stop the run as a non-finite loss does:
nothing non-finite is ever published as `last` or `best`.

Every decision that involves other ranks (evaluate, save, stop) is taken from values all
ranks share (the step counter, agreed losses, the agreed stop), so a pipeline never sends
one rank into a collective alone.

A checkpoint holds the weights the optimizer trains (all of a pretrained GPT; the adapters
and head of a LoRA finetune), the optimizer state, the task's state (its batch sampler's
generator; finetuning adds its settings) and the dropout scheme (`rng.dropout`: "keyed",
masks a pure function of seed, step, layer, row and position, tinyllm/dropout.py DropoutMasks;
or, for runs begun by older code, the dropout generator's state): a run stopped and
resumed is bitwise the run that was never stopped. SIGINT and SIGTERM finish the step,
save, and return with the signal (commands exit with 128 + it); a second signal aborts.

Output: a yardstick line (this machine's matrix-product rate and the FLOPs of a step), a
tqdm bar on a terminal or a line every `log_interval` steps, a line per evaluation, and
DIR/metrics.jsonl (one JSON object per logged step).

Left out: mixed precision, learning-rate finders, early stopping.
"""
from __future__ import annotations

import contextlib
import json
import math
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from autograd import backend, no_grad
from tinyllm import checkpoint as ckpt
from tinyllm import io
from tinyllm.errors import UserError
from tinyllm.fields import check, is_positive_int, one_of, setting
from tinyllm.optim import clip_grad_norm


@dataclass(frozen=True)
class LoopSettings:
    """How long the loop runs, how big its steps are, and when it evaluates, logs and saves."""

    batch_size: int = setting(12, "sequences per micro-batch")
    grad_accum: int = setting(1, "micro-batches per optimizer step")
    max_iters: int = setting(1000, "optimizer steps")
    eval_interval: int = setting(250, "evaluate and checkpoint every N steps (and at the end)")
    eval_iters: int = setting(20, "batches per split in each evaluation")
    log_interval: int = setting(10, "a progress line and metrics record every N steps")
    progress: str = setting("auto", "auto (bar on a terminal, lines otherwise), bar, log or none")

    def __post_init__(self):
        for name in ("batch_size", "grad_accum", "max_iters", "eval_interval", "eval_iters", "log_interval"):
            check(self, name, is_positive_int, "must be a positive integer")
        check(self, "progress", *one_of(PROGRESS))


PROGRESS = ("auto", "bar", "log", "none")


class Task(Protocol):
    """What to learn. A batch is a tuple of arrays (or row-sliceable parts) indexed by row first."""

    def next_batch(self) -> tuple:
        """The next training micro-batch."""

    def tokens(self, batch) -> int:
        """The positions the model runs in the batch, B x T (padding included: it costs the same);
        tokens/s, tokens_seen and the progress bar count these."""

    def loss(self, model, batch):
        """The batch's mean loss, a scalar Tensor with its graph."""

    def weight(self, batch) -> int:
        """How much the batch counts in a mean over batches (its rows, or its counted target tokens)."""

    def evaluate(self, model, batch_loss) -> dict:
        """{"train": mean loss, "val": mean loss, other metrics...}; batch_loss(batch) -> float is the strategy's."""

    def state(self) -> dict:
        """The batch source's state (JSON), saved as the checkpoint's rng.train_sampler."""

    def set_state(self, state: dict) -> None:
        """Continue the batch source from `state()`."""

    def checkpoint_entries(self) -> dict:
        """Other entries of the checkpoint's state.json that describe the task ({} for pretraining)."""


class Strategy(Protocol):
    """How a step's work is done, and agreed between the processes of the run."""

    is_writer: bool   # this process prints and writes metrics
    ranks: int        # processes sharing a step

    def gradients(self, model, task, batches, step: int):
        """Forward and backward of the micro-batches; d(mean loss)/d(param) in .grad; returns the mean
        loss (a number, or a one-element device array: the loop reads it with the norm, in one copy)."""

    def grad_norm(self, params):
        """The global L2 norm of the gradients (over every rank's parameters); a number or a device scalar."""

    def batch_loss(self, model, task, batch) -> float:
        """A batch's mean loss without a graph (the same value on every rank)."""

    def save(self, run_dir, *, weights, optimizer, tokenizer, state: dict, best: bool) -> str | None:
        """Write a checkpoint (collective where several ranks hold the model); returns its path."""

    def step(self, optimizer, lr: float) -> None:
        """The optimizer's update with learning rate `lr` (spread over this strategy's threads or processes)."""

    def agree_stop(self, seen):
        """The signal every rank stops on after this step (`seen` here, or another rank's), or None."""

    def num_parameters(self, model) -> int:
        """The whole model's parameter count (a pipeline stage holds only part of it)."""


# A diverging run overflows in its forward, backward or update; the loop checks the loss, the norm,
# the weights and what it saves right after, and stops with one line naming the step, so NumPy's
# RuntimeWarnings would only say it first, several times. The step and evaluation run under these
# (worker processes and threads too); only NumPy warns, CuPy does not.
DIVERGING = {"over": "ignore", "invalid": "ignore"}


class NonFiniteLossError(UserError):
    """The run diverged: its loss, gradient norm or weights became NaN or infinite; nothing was saved
    from that step, and the message names the last good checkpoint. One line, exit status 2."""


@dataclass
class RunResult:
    status: str                     # "finished" or "interrupted"
    step: int
    train_losses: list = field(default_factory=list)   # the loss of every step this call ran
    last_eval: dict | None = None   # the last evaluation: {"train": loss, "val": loss, other metrics}
    best_val_loss: float | None = None
    run_dir: str | None = None
    stop_signal: int | None = None  # the signal number that interrupted the run

    @property
    def exit_status(self) -> int:
        """0 when finished; 128 + the signal when interrupted (the shell's rule: 130 SIGINT, 143 SIGTERM)."""
        return 128 + self.stop_signal if self.status == "interrupted" else 0


class TrainedWeights:
    """The parameters the optimizer trains, as a checkpoint saves and loads them.

    ckpt.save_checkpoint reads `state_dict()`, ckpt.load_model_state checks the names of
    `named_parameters()` and calls `load_state_dict`; the model's other (frozen) weights are
    left as they are: they come from the base model the run started from.
    """

    def __init__(self, model, named_parameters):
        self.model = model
        self.named = list(named_parameters)

    def named_parameters(self) -> list:
        return self.named

    def state_dict(self) -> dict:
        return {name: p.data.copy() for name, p in self.named}

    def load_state_dict(self, arrays: dict) -> None:
        self.model.load_state_dict(arrays, strict=False)


def flops_per_token(model, num_parameters: int | None = None) -> float:
    """Training FLOPs per token: 6 N (forward + backward through N parameters) + 12 L T C (attention)."""
    c = model.config
    n = model.num_parameters() if num_parameters is None else num_parameters
    return 6 * n + 12 * c.n_layer * c.block_size * c.n_embd


class Trainer:
    """Runs optimisation steps of `task` on `model` with `strategy`; see the module docstring.

    settings: a tinyllm.settings.RunSettings (its loop, the optimisation schedule and clipping,
    dtype and device); saved whole in every checkpoint.
    optimizer: over the parameters that train. `run_dir=None` trains without writing anything.
    run_lock: the run directory's lock (tinyllm.runlock), held as long as the trainer lives.
    """

    def __init__(self, model, task, strategy, *, settings, optimizer, tokenizer=None, run_dir=None,
                 progress_stream=None, run_lock=None):
        backend.keep_freed_memory()       # reuse activation memory across steps (no page faults)
        self.model, self.task, self.strategy = model, task, strategy
        self.settings, self.loop = settings, settings.loop
        self.optimizer = optimizer
        self.params = [p for _, p in optimizer.params]
        self.tokenizer = tokenizer
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.run_lock = run_lock
        self.progress_stream = progress_stream
        self.schedule = settings.optim.schedule(self.loop.max_iters)
        self.flops_per_token = flops_per_token(model, strategy.num_parameters(model))
        self.step = 0
        self.tokens_seen = 0
        self.step_tokens = 0          # the tokens of the last step (task.tokens of its batches)
        self.elapsed_s = 0.0
        self.best_val_loss = None
        self.last_checkpoint = None   # path of the last checkpoint saved or resumed from
        self.saved_step = None        # the step it holds
        self.signal_seen = None       # SIGINT or SIGTERM received by this process during run()

    # ---- the loop ----------------------------------------------------------------------------
    def run(self, stop_at: int | None = None) -> RunResult:
        """Train to loop.max_iters (or stop after step `stop_at`, saving, as an interruption would)."""
        cfg = self.loop
        end = cfg.max_iters if stop_at is None else min(stop_at, cfg.max_iters)
        result = RunResult(status="finished", step=self.step, run_dir=str(self.run_dir) if self.run_dir else None)
        log = RunLog(self)
        self.model.train()
        try:
            with self.catching_signals():
                if self.step == 0:
                    result.last_eval = self.evaluate_and_log(log, lr=self.schedule(0))
                while self.step < end:
                    loss, norm, lr = self.train_step()
                    result.train_losses.append(loss)
                    stop = self.strategy.agree_stop(self.signal_seen)
                    logged = self.step % cfg.log_interval == 0 or self.step == end
                    record = log.step(loss, norm, lr, logged)
                    if self.step % cfg.eval_interval == 0 or self.step == cfg.max_iters:
                        result.last_eval = self.evaluate_and_log(log, lr, train_loss=loss)
                        record.update(val_loss=result.last_eval["val"], eval_train_loss=result.last_eval["train"])
                        logged = True
                    if logged:
                        log.write_step(record)
                    if stop is not None:
                        result.status, result.stop_signal = "interrupted", int(stop)
                        saved = self.save(train_loss=loss)
                        log.message(f"interrupted by {stop.name} at step {self.step}: saved {saved}; "
                                    "continue with the same command and --resume", always=True)
                        break
                if result.status == "finished" and self.step == end < cfg.max_iters:
                    self.save()  # stopped early on request (stop_at): keep the state to resume from
        finally:
            log.close()
        result.step, result.best_val_loss = self.step, self.best_val_loss
        return result

    def train_step(self) -> tuple:
        """One optimizer step; returns (mean loss, grad norm before clipping, lr)."""
        started = time.perf_counter()
        lr = self.schedule(self.step)
        batches = [self.task.next_batch() for _ in range(self.loop.grad_accum)]
        self.optimizer.zero_grad()
        with np.errstate(**DIVERGING):
            loss = self.strategy.gradients(self.model, self.task, batches, self.step + 1)
            norm = self.strategy.grad_norm(self.params)
            loss, norm = backend.read_scalars(loss, norm)   # on a GPU the step's one copy to the host
            if not (math.isfinite(loss) and math.isfinite(norm)):
                self.optimizer.zero_grad()
                what, value = ("loss", loss) if not math.isfinite(loss) else ("gradient norm", norm)
                raise self.diverged(f"step {self.step + 1}: the {what} is {value}; the run stopped before "
                                    "updating the weights")
            clip_grad_norm(self.params, self.settings.optim.grad_clip, norm)
            self.strategy.step(self.optimizer, lr)
        self.optimizer.zero_grad()
        if self.strategy.ranks == 1 and self.params and not backend.is_cupy_array(self.params[0].data):
            bad = ckpt.first_nonfinite({n: p.data for n, p in self.optimizer.params})   # one pass, no copy
            if bad is not None:
                raise self.diverged(f"step {self.step + 1}: the update made the weights of {bad} NaN or infinite "
                                    "(the loss and gradient norm were finite)")
        self.step += 1
        self.step_tokens = sum(self.task.tokens(batch) for batch in batches)
        self.tokens_seen += self.step_tokens
        self.elapsed_s += time.perf_counter() - started
        return loss, norm, lr

    def diverged(self, what: str) -> NonFiniteLossError:
        """The run's divergence error: `what` happened, the last good checkpoint, what to try."""
        return NonFiniteLossError(f"{what}. Last good checkpoint: "
                                  f"{self.last_checkpoint or 'none (no checkpoint was saved yet)'}. "
                                  "Try a lower --lr, a --grad-clip, or --dtype float64")

    # ---- evaluation and checkpoints ----------------------------------------------------------
    def evaluate(self, evaluation=None) -> dict:
        """`evaluation(model, batch_loss)` (default: the task's) in eval mode, without gradients."""
        evaluation = evaluation or self.task.evaluate
        was_training = self.model.training
        self.model.eval()
        try:
            with no_grad(), np.errstate(**DIVERGING):
                return evaluation(self.model, lambda batch: self.strategy.batch_loss(self.model, self.task, batch))
        finally:
            self.model.train(was_training)

    def evaluate_and_log(self, log: "RunLog", lr: float, train_loss=None) -> dict:
        """Evaluate, show and record the metrics; after step 0 also checkpoint (as best when val improved)."""
        metrics = self.evaluate()
        for split in ("train", "val"):
            if self.step > 0 and not math.isfinite(metrics[split]):   # its checkpoint would record it: none is saved
                raise self.diverged(f"step {self.step}: the evaluation's {split} loss is {metrics[split]}; nothing "
                                    "was saved from this step")
        improved = math.isfinite(metrics["val"]) and (self.best_val_loss is None or metrics["val"] < self.best_val_loss)
        if improved and self.step > 0:
            self.best_val_loss = metrics["val"]
        log.message(f"step {self.step}: train loss {metrics['train']:.4f}, val loss {metrics['val']:.4f}"
                    + (" (best)" if improved and self.step > 0 else ""))
        if self.step == 0:
            log.write({"step": 0, "train_loss": metrics["train"], "val_loss": metrics["val"], "lr": lr,
                       "eval_train_loss": metrics["train"], "tokens_seen": self.tokens_seen,
                       "elapsed_s": round(self.elapsed_s, 3)})
        others = {name: value for name, value in metrics.items() if name not in ("train", "val")}
        if others:  # e.g. accuracy: its own line and record
            log.message(f"step {self.step}: " + ", ".join(f"{name.replace('_', ' ')} {value:.4f}"
                                                          for name, value in others.items()))
            log.write({"step": self.step, "val_loss": metrics["val"], "eval_train_loss": metrics["train"], **others})
        if self.step > 0:
            self.save(best=improved, train_loss=train_loss, val_loss=metrics["val"])
        return metrics

    def checkpoint_state(self, train_loss=None, val_loss=None) -> dict:
        return {"step": self.step, "tokens_seen": self.tokens_seen, "elapsed_s": self.elapsed_s,
                "best_val_loss": self.best_val_loss, "train_loss": train_loss, "val_loss": val_loss,
                "num_parameters": self.strategy.num_parameters(self.model),
                "model_config": self.model.config.to_dict(), "train_config": self.settings.to_dict(),
                "rng": {"train_sampler": self.task.state(), "dropout": self.model.dropout_masks.checkpoint_state()},
                **self.task.checkpoint_entries()}

    def save(self, best: bool = False, train_loss=None, val_loss=None) -> str | None:
        """Checkpoint as DIR/last (and DIR/best); a second save of the same step only to mark it best."""
        if self.run_dir is None:
            return None
        if self.saved_step == self.step and not best:  # e.g. an interrupt right after an evaluation's save
            return self.last_checkpoint
        try:
            path = self.strategy.save(self.run_dir, weights=TrainedWeights(self.model, self.optimizer.params),
                                      optimizer=self.optimizer, tokenizer=self.tokenizer,
                                      state=self.checkpoint_state(train_loss, val_loss), best=best)
        except ckpt.NonFiniteWeightsError as error:   # checked before anything was published
            raise self.diverged(f"step {self.step}: the weights to save hold NaN or infinite values "
                                f"({error.tensor}); nothing was saved") from None
        self.last_checkpoint, self.saved_step = path, self.step
        return path

    def restore(self, checkpoint: "ckpt.Checkpoint") -> None:
        """Continue exactly where `checkpoint` stopped (weights, optimizer, generators, counters)."""
        ckpt.load_model_state(TrainedWeights(self.model, self.optimizer.params), checkpoint)
        ckpt.load_optimizer_state(self.optimizer, checkpoint)
        state = checkpoint.state
        self.step = int(state["step"])
        self.tokens_seen = int(state["tokens_seen"])
        self.elapsed_s = float(state.get("elapsed_s", 0.0))
        best = state.get("best_val_loss")   # older code could save NaN here, which no loss would ever beat
        self.best_val_loss = best if best is not None and math.isfinite(best) else None
        self.task.set_state(state["rng"]["train_sampler"])
        note = self.model.dropout_masks.restore(state["rng"].get("dropout"))
        if note and self.strategy.is_writer and self.model.config.dropout > 0:
            print(f"note: {checkpoint.path}: {note}", file=self.progress_stream or sys.stderr, flush=True)
        self.last_checkpoint = str(checkpoint.path.resolve())
        self.saved_step = self.step

    @contextlib.contextmanager
    def catching_signals(self):
        """SIGINT/SIGTERM set `signal_seen`, which the loop acts on after the step; a second one aborts."""
        self.signal_seen = None
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum, frame):
            if self.signal_seen is not None:
                raise KeyboardInterrupt
            self.signal_seen = signal.Signals(signum)

        previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, old in previous.items():
                signal.signal(sig, old)


# ---- output: progress, metrics ------------------------------------------------------------


class RunLog:
    """What a run shows and records: progress (on the writing rank) and DIR/metrics.jsonl."""

    def __init__(self, trainer: Trainer):
        settings, loop = trainer.settings, trainer.loop
        self.trainer = trainer
        writer = trainer.strategy.is_writer
        self.metrics = None
        if trainer.run_dir is not None and writer:
            resume_step = trainer.step if settings.resume or trainer.step else None
            self.metrics = MetricsLog(trainer.run_dir / "metrics.jsonl").start(resume_step)
        self.progress = Progress(loop.progress if writer else "none", loop.max_iters, trainer.step,
                                 trainer.progress_stream)
        ranks = trainer.strategy.ranks
        self.gemm = backend.gemm_gflops(settings.dtype, settings.device) * ranks
        across = f", {ranks} ranks x this rank's rate" if ranks > 1 else ""
        self.message(f"yardstick: {settings.dtype} matrix products run at {self.gemm:.1f} GFLOP/s here{across}; "
                     f"a token is {trainer.flops_per_token / 1e6:.2f} MFLOP (6 N + 12 L T C)")
        self.start_window()

    def start_window(self) -> None:
        """Measure the throughput afresh from now (tokens/s and steps/s since the last record)."""
        self.window_start, self.window_tokens, self.window_steps = time.perf_counter(), 0, 0

    def message(self, text: str, always: bool = False) -> None:
        """Show `text` (with --progress none only when `always`: the line that says how the run ended)."""
        self.progress.message(text, always)

    def write(self, record: dict) -> None:
        if self.metrics is not None:
            self.metrics.write(record)

    def step(self, loss: float, norm: float, lr: float, logged: bool) -> dict:
        """Show the step just taken (a log line when `logged`); return its metrics record."""
        trainer, cfg = self.trainer, self.trainer.loop
        self.window_tokens += trainer.step_tokens
        self.window_steps += 1
        seconds = max(time.perf_counter() - self.window_start, 1e-9)
        tokens_per_s = self.window_tokens / seconds
        eta = (cfg.max_iters - trainer.step) * seconds / self.window_steps
        gflops = tokens_per_s * trainer.flops_per_token / 1e9
        self.progress.step(trainer.step, cfg.max_iters, loss, lr, tokens_per_s, eta, logged,
                           flops=f" | {gflops:.1f} GFLOP/s ({100 * gflops / self.gemm:.0f}% of GEMM)")
        return {"step": trainer.step, "train_loss": loss, "lr": lr, "grad_norm": norm,
                "tokens_per_s": round(tokens_per_s, 1), "gflop_per_s": round(gflops, 2),
                "elapsed_s": round(trainer.elapsed_s, 3), "tokens_seen": trainer.tokens_seen}

    def write_step(self, record: dict) -> None:
        """Write a step's record, and start measuring the throughput afresh."""
        self.write(record)
        self.start_window()

    def close(self) -> None:
        self.progress.close()


class MetricsLog:
    """DIR/metrics.jsonl: one JSON object per logged step, appended and flushed as written."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def start(self, resume_step: int | None) -> "MetricsLog":
        """A new run empties the file; a resumed one drops the records past the step it resumes from."""
        if resume_step is None:
            self.path.write_text("", encoding="utf-8")
        elif self.path.is_file():   # a line torn by a crash mid-append (not a JSON object) is dropped too
            kept = [line for line in self.path.read_text(encoding="utf-8", errors="replace").splitlines()
                    if _step_of(line) is not None and _step_of(line) <= resume_step]
            io.write_bytes(self.path, "".join(line + "\n" for line in kept).encode("utf-8"))
        return self

    def write(self, record: dict) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(io.json_line(record))


def _step_of(line: str):
    """The "step" of a metrics.jsonl line, or None for a line that is not a JSON object with one."""
    try:
        record = json.loads(line)
    except ValueError:
        return None
    step = record.get("step", 0) if isinstance(record, dict) else None
    return step if isinstance(step, (int, float)) and not isinstance(step, bool) else None


class Progress:
    """A tqdm bar on a terminal, plain log lines otherwise (or nothing)."""

    def __init__(self, mode: str, total: int, initial: int, stream=None):
        self.stream = stream or sys.stderr
        if mode == "auto":
            mode = "bar" if hasattr(self.stream, "isatty") and self.stream.isatty() else "log"
        self.mode = mode
        self.bar = None
        if mode == "bar":
            self.bar = quiet_bar()(total=total, initial=initial, desc="train", unit="step", file=self.stream,
                                   dynamic_ncols=True)

    def step(self, step: int, total: int, loss: float, lr: float, tokens_per_s: float, eta_s: float,
             log_now: bool, flops: str = "") -> None:
        if self.bar is not None:
            self.bar.update(step - self.bar.n)
            if log_now:
                self.bar.set_postfix_str(f"loss {loss:.4f} | lr {lr:.2e} | {tokens_per_s:,.0f} tok/s{flops}",
                                         refresh=False)
        elif self.mode == "log" and log_now:
            self.message(f"step {step:>6}/{total} | loss {loss:.4f} | lr {lr:.2e} | {tokens_per_s:,.0f} tok/s{flops} | "
                         f"eta {duration(eta_s)}")

    def message(self, text: str, always: bool = False) -> None:
        if self.mode == "none" and not always:
            return
        if self.bar is not None:
            self.bar.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def quiet_bar():
    """tqdm's bar class without its monitor thread (a thread that would make the worker processes'
    fork a fork of a multi-threaded process: tinyllm/processes.py)."""
    from tqdm import tqdm  # noqa: PLC0415

    class Bar(tqdm):
        monitor_interval = 0
    return Bar


def duration(seconds: float) -> str:
    """'1m15s', '2h03m00s'."""
    seconds = max(0, int(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"
