"""The training loop: one process, or (through parallel/) one pipeline stage.

    config = TrainConfig(out="runs/demo", max_iters=300)
    result = train(config)            # data -> model -> AdamW -> steps, evals, checkpoints

One optimisation step, in order (each piece replaceable, for parallel/):

    batches = grad_accum micro-batches from the seeded train sampler
    loss    = compute_gradients(model, batches)     # mean loss; grads accumulate in .grad
                                                    # (on a CPU, each batch split by rows across
                                                    # --threads threads: tinyllm/threads.py)
    norm    = grad_norm_fn(params)                  # global L2 norm (a pipeline all-reduces)
    clip to grad_clip, optimizer.step(lr = schedule(step)), zero the grads

then, every `log_interval` steps a line (or the tqdm bar) and a metrics.jsonl record, and
every `eval_interval` steps the mean train and val loss over `eval_iters` fixed batches
and a checkpoint (`last`, and `best` when val improved). A non-finite loss or gradient
norm stops the run before the optimizer touches the weights (NonFiniteLossError names
the step and the last good checkpoint, which is left alone). SIGINT and SIGTERM finish
the current step, save `last`, and return with status "interrupted".

Exact resume: the checkpoint holds the weights, the AdamW moments and step counter, the
train sampler's generator state, the dropout generator's state and the step; evaluation
batches come from a generator re-seeded at every evaluation, so they need no state. A
run of 20 steps and a run of 10 steps + resume + 10 steps give bitwise-equal losses and
weights (tests/train/test_train.py).

Left out: mixed precision, learning-rate finders, early stopping, multi-GPU in one
process (parallel/ spreads a model across processes instead).
"""
from __future__ import annotations

import dataclasses
import math
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from autograd import backend, no_grad
from tinyllm import checkpoint as ckpt
from tinyllm import io
from tinyllm.data import (DEFAULT_EXTENSIONS, BatchSampler, check_split_fits, prepare_dataset,
                          resolve_corpus)
from tinyllm.model import GPT, GPTConfig, unknown_fields
from tinyllm.optim import OPTIMIZERS, SCHEDULES, SGD, AdamW, clip_grad_norm, global_grad_norm, make_schedule
from tinyllm.threads import DataThreads, default_threads

# TrainConfig fields that shape the model: None means "the preset's value".
MODEL_FIELDS = ("n_layer", "n_head", "n_kv_head", "n_embd", "block_size", "dropout", "norm", "mlp",
                "position", "rope_theta", "bias", "tie_embeddings")


@dataclass(frozen=True)
class TrainConfig:
    """Every hyperparameter of a run (nanoGPT's names). Saved whole in the run directory."""

    # data
    data: str | None = None           # file, directory, glob, "stdlib"; None = built-in pydoc topics
    data_ext: str = ",".join(DEFAULT_EXTENSIONS)  # extensions read from a --data directory
    tokenizer: str = "char"           # "char", "bpe" (trained on the corpus) or a tokenizer file
    vocab_size: int = 512             # BPE vocabulary size (tokenizer "bpe" only)
    val_fraction: float = 0.1         # the last fraction of the tokens is validation
    out: str = "runs/demo"            # run directory: config, metrics, data cache, checkpoints
    # model: a preset, then any field overridden (None = the preset's value)
    preset: str = "baby"
    n_layer: int | None = None
    n_head: int | None = None
    n_kv_head: int | None = None
    n_embd: int | None = None
    block_size: int | None = None
    dropout: float | None = None
    norm: str | None = None
    mlp: str | None = None
    position: str | None = None
    rope_theta: float | None = None
    bias: bool | None = None
    tie_embeddings: bool | None = None
    # optimisation
    optimizer: str = "adamw"          # "adamw" or "sgd"
    batch_size: int = 12              # sequences per micro-batch
    grad_accum: int = 1               # micro-batches per optimizer step
    max_iters: int = 1000             # optimizer steps (about 3 minutes on 2 cores with the baby preset)
    lr: float = 1e-3                  # peak learning rate
    min_lr: float = 1e-4              # cosine decays to this
    warmup_iters: int = 100           # linear warmup steps
    lr_schedule: str = "cosine"       # "cosine" or "constant"
    weight_decay: float = 0.1         # decoupled, matrices and embeddings only
    beta1: float = 0.9
    beta2: float = 0.99               # nanoGPT's choice for small char-level models
    eps: float = 1e-8
    momentum: float = 0.9             # SGD only
    grad_clip: float = 1.0            # clip the global gradient norm to this (0 = no clipping)
    # evaluation, logging, checkpoints
    eval_interval: int = 250          # evaluate and checkpoint every N steps (and at the end)
    eval_iters: int = 20              # batches per split in an evaluation
    log_interval: int = 10            # a progress line and metrics.jsonl record every N steps
    seed: int = 1337                  # weights, dropout masks and batches all follow from it
    dtype: str = "float32"            # "float32" or "float64"
    device: str = "cpu"               # "cpu" or "cuda"
    threads: int = 0                  # threads splitting each batch by rows (0 = OMP_NUM_THREADS or the cores)
    resume: bool = False              # continue from <out>/last
    progress: str = "auto"            # "auto" (bar on a terminal, lines otherwise), "bar", "log", "none"
    # pipeline and data parallelism (parallel/ runs these; 1 = a single process)
    pipeline_stages: int = 1
    microbatches: int | None = None   # micro-batches per step in a pipeline (None = grad_accum)
    schedule: str = "1f1b"            # "gpipe" or "1f1b"
    data_parallel: int = 1
    partition: str = "uniform"        # how blocks are split across stages

    def __post_init__(self):
        positive = ("vocab_size", "batch_size", "grad_accum", "max_iters", "eval_interval", "eval_iters",
                    "log_interval", "pipeline_stages", "data_parallel")
        for name in positive:
            _check(self, name, lambda v: isinstance(v, int) and not isinstance(v, bool) and v > 0,
                   "must be a positive integer")
        for name in ("n_layer", "n_head", "n_kv_head", "n_embd", "block_size", "microbatches"):
            _check(self, name, lambda v: v is None or (isinstance(v, int) and not isinstance(v, bool) and v > 0),
                   "must be a positive integer")
        _check(self, "warmup_iters", lambda v: isinstance(v, int) and v >= 0, "must be 0 or more")
        _check(self, "threads", lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0,
               "must be 0 (one per core) or a positive integer")
        _check(self, "seed", lambda v: isinstance(v, int) and v >= 0, "must be a non-negative integer")
        _check(self, "lr", lambda v: _number(v) and v > 0, "must be positive (e.g. 1e-3)")
        _check(self, "min_lr", lambda v: _number(v) and 0 <= v <= self.lr,
               f"must be between 0 and --lr ({self.lr})")
        _check(self, "weight_decay", lambda v: _number(v) and v >= 0, "must be 0 or more (e.g. 0.1)")
        _check(self, "grad_clip", lambda v: _number(v) and v >= 0, "must be 0 (off) or more (e.g. 1.0)")
        for name in ("beta1", "beta2", "momentum"):
            _check(self, name, lambda v: _number(v) and 0 <= v < 1, "must be in [0, 1)")
        _check(self, "eps", lambda v: _number(v) and v > 0, "must be positive (e.g. 1e-8)")
        _check(self, "val_fraction", lambda v: _number(v) and 0 < v < 1, "must be between 0 and 1 (e.g. 0.1)")
        _check(self, "dropout", lambda v: v is None or (_number(v) and 0 <= v < 1), "must be in [0, 1)")
        _check(self, "optimizer", lambda v: v in OPTIMIZERS, f"must be one of {', '.join(OPTIMIZERS)}")
        _check(self, "lr_schedule", lambda v: v in SCHEDULES, f"must be one of {', '.join(SCHEDULES)}")
        _check(self, "dtype", lambda v: v in ("float32", "float64"), "must be float32 or float64")
        _check(self, "device", lambda v: v in ("cpu", "cuda"), "must be cpu or cuda")
        _check(self, "progress", lambda v: v in ("auto", "bar", "log", "none"), "must be auto, bar, log or none")
        _check(self, "schedule", lambda v: v in ("gpipe", "1f1b"), "must be gpipe or 1f1b")
        _check(self, "preset", lambda v: v in GPTConfig.presets(), f"must be one of {', '.join(GPTConfig.presets())}")
        _check(self, "out", lambda v: isinstance(v, str) and v != "", "must name a directory")

    # ---- conversions ---------------------------------------------------------------------
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        unknown = unknown_fields(cls, values)
        if unknown:
            known = sorted(f.name for f in dataclasses.fields(cls))
            raise ConfigError(f"unknown setting(s) {', '.join(unknown)}; known: {', '.join(known)}")
        return cls(**values)

    def replace(self, **changes) -> "TrainConfig":
        return dataclasses.replace(self, **changes)

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.grad_accum * self.model_config(vocab_size=1).block_size

    def model_config(self, vocab_size: int) -> GPTConfig:
        """The preset with every field this config sets (and the tokenizer's vocab size)."""
        overrides = {name: getattr(self, name) for name in MODEL_FIELDS if getattr(self, name) is not None}
        try:
            return GPTConfig.preset(self.preset, vocab_size=vocab_size, **overrides)
        except ValueError as error:
            raise ConfigError(str(error)) from None


class ConfigError(ValueError):
    """A setting the user can fix; the message names the flag and the value."""


class NonFiniteLossError(RuntimeError):
    """The loss or gradient norm became NaN or infinite; nothing was saved from that step."""


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _check(config, name, ok, message) -> None:
    value = getattr(config, name)
    if not ok(value):
        raise ConfigError(f"--{name.replace('_', '-')} {value!r}: {message}")


# ---- the replaceable pieces of one step ---------------------------------------------------


def compute_gradients(model, batches) -> float:
    """Forward and backward every (x, y) micro-batch; return the mean loss.

    Each micro-batch loss is scaled by 1 / len(batches) before backward, so the summed
    gradient is that of the mean loss: with equal micro-batches, the same as one batch
    holding them all. parallel/ replaces this with a pipeline schedule.
    """
    scale = 1.0 / len(batches)
    total = 0.0
    for x, y in batches:
        _, loss = model(x, y)
        (loss * scale).backward()
        total += float(loss.item())
    return total * scale


def batch_loss(model, x, y) -> float:
    """The model's mean loss on one batch, without a graph."""
    with no_grad():
        _, loss = model(x, y)
    return float(loss.item())


def estimate_loss(model, tokens, block_size: int, batch_size: int, eval_iters: int, seed: int,
                  batch_loss=batch_loss) -> float:
    """Mean loss over `eval_iters` batches drawn by a generator seeded with `seed` (same batches each call)."""
    sampler = BatchSampler(tokens, block_size, batch_size, seed)
    was_training = model.training
    model.eval()
    total = 0.0
    for _ in range(eval_iters):
        x, y = sampler.next_batch()
        total += batch_loss(model, x, y)
    model.train(was_training)
    return total / eval_iters


def flops_per_token(model) -> float:
    """Training FLOPs per token: 6 N (forward + backward through N parameters) + 12 L T C (attention)."""
    c = model.config
    return 6 * model.num_parameters() + 12 * c.n_layer * c.block_size * c.n_embd


def make_optimizer(config: TrainConfig, named_parameters):
    if config.optimizer == "sgd":
        return SGD(named_parameters, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    return AdamW(named_parameters, lr=config.lr, betas=(config.beta1, config.beta2), eps=config.eps,
                 weight_decay=config.weight_decay)


# ---- output: progress, metrics ------------------------------------------------------------


class MetricsLog:
    """DIR/metrics.jsonl: one JSON object per logged step, flushed as written."""

    def __init__(self, path: Path, resume_step: int | None):
        import json  # noqa: PLC0415
        self._json = json
        self.path = path
        if resume_step is None:
            path.write_text("", encoding="utf-8")
        elif path.is_file():  # drop records past the checkpoint we resume from
            kept = [line for line in path.read_text(encoding="utf-8").splitlines()
                    if line.strip() and json.loads(line).get("step", 0) <= resume_step]
            io.write_bytes(path, "".join(line + "\n" for line in kept).encode("utf-8"))

    def write(self, record: dict) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(self._json.dumps(record) + "\n")


class Progress:
    """A tqdm bar on a terminal, plain log lines otherwise (or nothing)."""

    def __init__(self, mode: str, total: int, initial: int, stream=None):
        self.stream = stream or sys.stderr
        if mode == "auto":
            mode = "bar" if hasattr(self.stream, "isatty") and self.stream.isatty() else "log"
        self.mode = mode
        self.bar = None
        if mode == "bar":
            from tqdm import tqdm  # noqa: PLC0415
            self.bar = tqdm(total=total, initial=initial, desc="train", unit="step", file=self.stream,
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
                         f"eta {_duration(eta_s)}")

    def message(self, text: str) -> None:
        if self.mode == "none":
            return
        if self.bar is not None:
            self.bar.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


# ---- the trainer ----------------------------------------------------------------------------


@dataclass
class RunResult:
    status: str                     # "finished" or "interrupted"
    step: int
    train_losses: list = field(default_factory=list)   # the loss of every step this call ran
    last_eval: dict | None = None   # {"train": ..., "val": ...} of the last evaluation
    best_val_loss: float | None = None
    run_dir: str | None = None
    stop_signal: int | None = None  # the signal number that interrupted the run


class Trainer:
    """Runs optimisation steps on a model; see the module docstring for one step.

    compute_gradients(model, batches) -> mean loss and grad_norm_fn(params) -> float are the
    seams parallel/ replaces; compute_gradients and batch_loss(model, x, y) -> float are the
    ones tinyllm.threads.DataThreads fills. `run_dir=None` trains without writing anything.
    """

    def __init__(self, config: TrainConfig, model, optimizer, train_tokens, val_tokens, *, tokenizer=None,
                 run_dir=None, compute_gradients=compute_gradients, grad_norm_fn=global_grad_norm,
                 batch_loss=batch_loss, progress_stream=None, is_writer: bool = True):
        backend.keep_freed_memory()       # reuse activation memory across steps (no page faults)
        self.config = config
        self.model = model
        self.optimizer = optimizer
        self.params = [p for _, p in optimizer.params]
        self.train_tokens, self.val_tokens = train_tokens, val_tokens
        self.tokenizer = tokenizer
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.compute_gradients = compute_gradients
        self.grad_norm_fn = grad_norm_fn
        self.batch_loss = batch_loss
        self.flops_per_token = flops_per_token(model)
        self.is_writer = is_writer
        self.block_size = model.config.block_size
        self.schedule = make_schedule(config.lr_schedule, config.lr, config.min_lr, config.warmup_iters,
                                      config.max_iters)
        self.sampler = BatchSampler(train_tokens, self.block_size, config.batch_size, config.seed)
        self.step = 0
        self.tokens_seen = 0
        self.elapsed_s = 0.0
        self.best_val_loss = None
        self.last_checkpoint = None
        self._saved_step = None
        self.progress_stream = progress_stream
        self._stop_signal = None

    # ---- state for checkpoints ------------------------------------------------------------
    def checkpoint_state(self, train_loss=None, val_loss=None) -> dict:
        dropout_state = self.model.generator.state() if self.model.generator.device == "cpu" else None
        return {"step": self.step, "tokens_seen": self.tokens_seen, "elapsed_s": self.elapsed_s,
                "best_val_loss": self.best_val_loss, "train_loss": train_loss, "val_loss": val_loss,
                "num_parameters": self.model.num_parameters(),
                "model_config": self.model.config.to_dict(), "train_config": self.config.to_dict(),
                "rng": {"train_sampler": self.sampler.state(), "dropout": dropout_state}}

    def restore(self, checkpoint: "ckpt.Checkpoint") -> None:
        """Continue exactly where `checkpoint` stopped (weights, optimizer, generators, counters)."""
        ckpt.load_model_state(self.model, checkpoint)
        ckpt.load_optimizer_state(self.optimizer, checkpoint)
        state = checkpoint.state
        self.step = int(state["step"])
        self.tokens_seen = int(state["tokens_seen"])
        self.elapsed_s = float(state.get("elapsed_s", 0.0))
        self.best_val_loss = state.get("best_val_loss")
        self.sampler.set_state(state["rng"]["train_sampler"])
        if state["rng"].get("dropout") is not None and self.model.generator.device == "cpu":
            self.model.generator.set_state(state["rng"]["dropout"])
        self.last_checkpoint = str(checkpoint.path.resolve())
        self._saved_step = self.step

    def save(self, best: bool = False, train_loss=None, val_loss=None) -> Path | None:
        if self.run_dir is None or not self.is_writer:
            return None
        if self._saved_step == self.step and not best:  # e.g. an interrupt right after an evaluation's save
            return Path(self.last_checkpoint)
        path = ckpt.save_checkpoint(self.run_dir, model=self.model, optimizer=self.optimizer,
                                    tokenizer=self.tokenizer, state=self.checkpoint_state(train_loss, val_loss),
                                    best=best)
        self.last_checkpoint = str(path)
        self._saved_step = self.step
        return path

    # ---- one step, one evaluation ----------------------------------------------------------
    def train_step(self) -> tuple:
        """One optimizer step; returns (mean loss, grad norm before clipping, lr)."""
        cfg = self.config
        lr = self.schedule(self.step)
        batches = [self.sampler.next_batch() for _ in range(cfg.grad_accum)]
        self.optimizer.zero_grad()
        loss = self.compute_gradients(self.model, batches)
        norm = self.grad_norm_fn(self.params)
        if not (math.isfinite(loss) and math.isfinite(norm)):
            self.optimizer.zero_grad()
            where = self.last_checkpoint or "none (no checkpoint was saved yet)"
            raise NonFiniteLossError(
                f"step {self.step + 1}: the {'loss' if not math.isfinite(loss) else 'gradient norm'} is "
                f"{loss if not math.isfinite(loss) else norm}; the run stopped before updating the weights. "
                f"Last good checkpoint: {where}. Try a lower --lr, a --grad-clip, or --dtype float64")
        clip_grad_norm(self.params, cfg.grad_clip, norm)
        self.optimizer.step(lr)
        self.optimizer.zero_grad()
        self.step += 1
        self.tokens_seen += cfg.batch_size * cfg.grad_accum * self.block_size
        return loss, norm, lr

    def evaluate(self) -> dict:
        cfg = self.config
        return {split: estimate_loss(self.model, tokens, self.block_size, cfg.batch_size, cfg.eval_iters,
                                     seed=cfg.seed + offset, batch_loss=self.batch_loss)
                for split, tokens, offset in (("train", self.train_tokens, 1), ("val", self.val_tokens, 2))}

    # ---- the loop ----------------------------------------------------------------------------
    def run(self, stop_at: int | None = None) -> RunResult:
        """Train to config.max_iters (or stop after step `stop_at`, as an interruption would)."""
        cfg = self.config
        end = cfg.max_iters if stop_at is None else min(stop_at, cfg.max_iters)
        result = RunResult(status="finished", step=self.step, best_val_loss=self.best_val_loss,
                           run_dir=str(self.run_dir) if self.run_dir else None)
        metrics = None
        if self.run_dir is not None and self.is_writer:
            metrics = MetricsLog(self.run_dir / "metrics.jsonl", self.step if cfg.resume or self.step else None)
        progress = Progress(cfg.progress if self.is_writer else "none", cfg.max_iters, self.step,
                            self.progress_stream)
        restore_signals = self._install_signal_handlers()
        ranks = cfg.pipeline_stages * cfg.data_parallel
        gemm = backend.gemm_gflops(cfg.dtype, cfg.device) * ranks
        across = f", {ranks} ranks x this rank's rate" if ranks > 1 else ""
        progress.message(f"yardstick: {cfg.dtype} matrix products run at {gemm:.1f} GFLOP/s here{across}; "
                         f"a step is {self.flops_per_token * cfg.tokens_per_step / 1e9:.2f} GFLOP "
                         "(6 N + 12 L T C per token)")
        self.model.train()
        try:
            if self.step == 0:
                result.last_eval = self._evaluate_and_log(progress, metrics, lr=self.schedule(0), save=False)
            window_start, window_tokens = time.perf_counter(), 0
            while self.step < end:
                t0 = time.perf_counter()
                loss, norm, lr = self.train_step()
                self.elapsed_s += time.perf_counter() - t0
                result.train_losses.append(loss)
                window_tokens += cfg.batch_size * cfg.grad_accum * self.block_size
                log_now = self.step % cfg.log_interval == 0 or self.step == end
                now = time.perf_counter()
                tokens_per_s = window_tokens / max(now - window_start, 1e-9)
                eta = (cfg.max_iters - self.step) * cfg.tokens_per_step / max(tokens_per_s, 1e-9)
                gflops = tokens_per_s * self.flops_per_token / 1e9
                progress.step(self.step, cfg.max_iters, loss, lr, tokens_per_s, eta, log_now,
                              flops=f" | {gflops:.1f} GFLOP/s ({100 * gflops / gemm:.0f}% of GEMM)")
                record = {"step": self.step, "train_loss": loss, "lr": lr, "grad_norm": norm,
                          "tokens_per_s": round(tokens_per_s, 1), "gflop_per_s": round(gflops, 2),
                          "elapsed_s": round(self.elapsed_s, 3), "tokens_seen": self.tokens_seen}
                if self.step % cfg.eval_interval == 0 or self.step == cfg.max_iters:
                    result.last_eval = self._evaluate_and_log(progress, None, lr=lr, save=True, train_loss=loss)
                    record["val_loss"] = result.last_eval["val"]
                    record["eval_train_loss"] = result.last_eval["train"]
                    log_now = True
                if log_now:
                    if metrics is not None:
                        metrics.write(record)
                    window_start, window_tokens = time.perf_counter(), 0
                if self._stop_signal is not None:
                    result.status, result.stop_signal = "interrupted", int(self._stop_signal)
                    saved = self.save(train_loss=loss)
                    progress.message(f"interrupted by {self._stop_signal.name} at step {self.step}: saved {saved}; "
                                     f"continue with: tinyllm train --out {cfg.out} --resume")
                    break
            if result.status == "finished" and self.step == end and end < cfg.max_iters:
                self.save()  # stopped early on request (stop_at): keep the state to resume from
        finally:
            restore_signals()
            progress.close()
        result.step = self.step
        result.best_val_loss = self.best_val_loss
        return result

    def _evaluate_and_log(self, progress, metrics, lr, save: bool, train_loss=None) -> dict:
        losses = self.evaluate()
        improved = self.best_val_loss is None or losses["val"] < self.best_val_loss
        if improved and self.step > 0:
            self.best_val_loss = losses["val"]
        progress.message(f"step {self.step}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f}"
                         + (" (best)" if improved and self.step > 0 else ""))
        if metrics is not None:
            metrics.write({"step": self.step, "train_loss": losses["train"], "val_loss": losses["val"], "lr": lr,
                           "eval_train_loss": losses["train"], "tokens_seen": self.tokens_seen,
                           "elapsed_s": round(self.elapsed_s, 3)})
        if save:
            self.save(best=improved, train_loss=train_loss, val_loss=losses["val"])
        return losses

    def _install_signal_handlers(self):
        """SIGINT/SIGTERM set a flag the loop checks after each step; a second signal aborts."""
        if threading.current_thread() is not threading.main_thread():
            return lambda: None
        previous = {}

        def handler(signum, frame):
            if self._stop_signal is not None:
                raise KeyboardInterrupt
            self._stop_signal = signal.Signals(signum)

        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, handler)

        def restore():
            for sig, old in previous.items():
                signal.signal(sig, old)
        return restore


# ---- building a run from a config -------------------------------------------------------------


def resume_checkpoint(config: TrainConfig):
    """The checkpoint to continue from with --resume; None for a new run. A new run never
    writes over an existing one: that is an error naming --out and the two ways on."""
    run_dir = Path(config.out)
    if config.resume:
        return ckpt.load_checkpoint(run_dir)
    if (run_dir / "last").exists():
        raise ConfigError(f"--out {config.out}: already holds a run (checkpoint {run_dir / 'last'}); "
                          "pass --resume to continue it, or choose a new --out directory")
    return None


def build_trainer(config: TrainConfig, log=None, progress_stream=None) -> Trainer:
    """Data, tokenizer, model and optimizer for `config` (restored from <out>/last if resuming)."""
    log = log or (lambda message: print(message, file=progress_stream or sys.stderr, flush=True))
    run_dir = Path(config.out)
    checkpoint = resume_checkpoint(config)
    run_dir.mkdir(parents=True, exist_ok=True)
    corpus = resolve_corpus(config.data, config.data_ext)
    dataset = prepare_dataset(corpus, config.tokenizer, run_dir, vocab_size=config.vocab_size,
                              val_fraction=config.val_fraction, log=log)
    model_config = config.model_config(dataset.vocab_size)
    check_split_fits(dataset, model_config.block_size)
    if checkpoint is not None:
        saved_config = GPTConfig.from_dict(checkpoint.state["model_config"])
        if saved_config != model_config:
            diffs = [f"{k}: checkpoint {v!r}, now {getattr(model_config, k)!r}"
                     for k, v in saved_config.to_dict().items() if getattr(model_config, k) != v]
            raise ckpt.CheckpointError(f"{checkpoint.path / ckpt.STATE_FILE}: the checkpoint's model differs "
                                       f"from this run's ({'; '.join(diffs)}); resume with the same settings "
                                       "(or the same corpus and tokenizer)")
        saved_tokenizer = checkpoint.tokenizer()
        if saved_tokenizer.hash() != dataset.tokenizer.hash():
            raise ckpt.CheckpointError(f"{checkpoint.path / ckpt.TOKENIZER_FILE}: the tokenizer differs from the "
                                       "one built for this run's corpus; resume with the same --data and --tokenizer")
    model = GPT(model_config, seed=config.seed, dtype=config.dtype, device=config.device)
    optimizer = make_optimizer(config, list(model.named_parameters()))
    threads = resolve_threads(config)
    seams = {}
    if threads > 1:
        workers = DataThreads(threads)
        seams = {"compute_gradients": workers.gradients, "batch_loss": workers.loss}
        optimizer.parallel = workers.parameter_groups
    trainer = Trainer(config, model, optimizer, dataset.train, dataset.val, tokenizer=dataset.tokenizer,
                      run_dir=run_dir, progress_stream=progress_stream, **seams)
    if checkpoint is not None:
        trainer.restore(checkpoint)
        log(f"resuming {run_dir} from {checkpoint.path} at step {trainer.step}")
    io.write_json(run_dir / "config.json", {"train": config.to_dict(), "model": model_config.to_dict()})
    log(f"model: {model.num_parameters():,} parameters ({model_config.n_layer} layers, {model_config.n_head} heads, "
        f"{model_config.n_embd} wide, block {model_config.block_size}, vocab {model_config.vocab_size}); "
        f"{config.tokens_per_step:,} tokens per step; {threads} thread{'s' if threads > 1 else ''}; "
        f"run directory {run_dir}")
    return trainer


def resolve_threads(config: TrainConfig) -> int:
    """How many threads split each batch: --threads, else OMP_NUM_THREADS or the cores; 1 on a GPU."""
    if config.device != "cpu":
        return 1
    return min(config.threads or default_threads(), config.batch_size)


def train(config: TrainConfig, progress_stream=None, stop_at: int | None = None) -> RunResult:
    """Build the run for `config` and train it; see the module docstring."""
    trainer = build_trainer(config, progress_stream=progress_stream)
    return trainer.run(stop_at=stop_at)

