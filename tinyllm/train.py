"""Pretraining: the settings of a run (TrainConfig), the pretraining task, and building a run.

    config = TrainConfig(out="runs/demo", max_iters=300)
    result = train(config)            # data -> model -> AdamW -> Trainer(model, task, strategy).run()

`build_trainer(config)` reads (or tokenizes and caches) the corpus, builds the GPT from
the seed and the optimizer, picks the strategy (on a CPU each batch split by rows across
`--workers` forked processes sharing the weights, tinyllm/processes.py, or threads,
tinyllm/threads.py; one process on a GPU), and restores `<out>/last` with `--resume`; the
loop itself is tinyllm/trainer.py. The run's first lines say how the batch is split, and
warn when it will be slower than it should (BLAS threads that cannot be limited, more
workers than cores). parallel/runner.py builds the same
task on every rank of a pipeline.

The pretraining task (`PretrainingTask`): micro-batches of random windows of
`block_size + 1` tokens from the train split (a seeded BatchSampler whose generator state
the checkpoint keeps); evaluation is the mean loss over `eval_iters` batches of each split,
drawn by a generator re-seeded at every evaluation (seed + 1 for train, seed + 2 for val),
so every evaluation sees the same batches and they need no state. A run of 20 steps and a
run of 10 steps + resume + 10 steps give bitwise-equal losses and weights
(tests/train/test_train.py).

Every TrainConfig field carries its description (`setting(default, help)`); the command
line's --help shows it (tinyllm/commands/common.py).

Left out: multi-GPU in one process (parallel/ spreads a model across processes instead).
"""
from __future__ import annotations

import dataclasses
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

from tinyllm import checkpoint as ckpt
from tinyllm import io, runlock
from tinyllm.errors import UserError
from tinyllm.data import (DEFAULT_EXTENSIONS, BatchSampler, check_split_fits, prepare_dataset,
                          resolve_corpus)
from tinyllm.limits import TRAINING_COPIES, check_model_fits, parameter_count
from tinyllm.model import GPT, GPTConfig, unknown_fields
from tinyllm.optim import OPTIMIZERS, SCHEDULES, SGD, AdamW
from tinyllm.strategy import NextTokenLoss, SingleProcess
from tinyllm.processes import DataProcesses, fork_available
from tinyllm.threads import BlasThreads, DataThreads, available_cores, default_threads
from tinyllm.trainer import NonFiniteLossError, RunResult, Trainer

__all__ = ["TrainConfig", "ConfigError", "NonFiniteLossError", "PretrainingTask", "build_trainer", "train",
           "make_optimizer", "make_strategy", "resolve_workers", "describe_workers", "parallelism_warnings",
           "resume_checkpoint", "check_resumable", "estimate_loss", "setting", "required", "load_gpt",
           "saved_model_config", "restore_run", "MODEL_FIELDS"]

PIPELINE_SCHEDULES = ("gpipe", "1f1b", "interleaved", "zb-h1")   # parallel/schedules.py runs them
# TrainConfig fields that shape the model: None means "the preset's value".
MODEL_FIELDS = ("n_layer", "n_head", "n_kv_head", "n_embd", "block_size", "dropout", "norm", "mlp",
                "position", "rope_theta", "bias", "tie_embeddings")


def setting(default, help: str):  # noqa: A002 - argparse's word for it
    """A config field with its one description, which `tinyllm ... --help` shows as the flag's help."""
    return field(default=default, metadata={"help": help})


def required(help: str):  # noqa: A002
    """A config field without a default, with its description."""
    return field(metadata={"help": help})


@dataclass(frozen=True)
class TrainConfig:
    """Every hyperparameter of a run (nanoGPT's names). Saved whole in the run directory."""

    # data
    data: str | None = setting(None, "a text file, a directory, a glob, 'stdlib', or token shards from `tinyllm "
                                     "tokenizer encode` (default: the built-in pydoc topics corpus)")
    data_ext: str = setting(",".join(DEFAULT_EXTENSIONS), "extensions read from a --data directory, comma-separated")
    tokenizer: str = setting("char", "'char', 'bpe' (trained on the corpus) or a tokenizer file")
    vocab_size: int = setting(512, "BPE vocabulary size (with --tokenizer bpe)")
    val_fraction: float = setting(0.1, "the last fraction of the tokens held out for validation")
    out: str = setting("runs/demo", "run directory: config, metrics, data cache, checkpoints")
    # model: a preset, then any field overridden (None = the preset's value)
    preset: str = setting("baby", "model shape to start from; the model settings below override it")
    n_layer: int | None = setting(None, "transformer blocks")
    n_head: int | None = setting(None, "attention heads")
    n_kv_head: int | None = setting(None, "key/value heads (grouped-query attention)")
    n_embd: int | None = setting(None, "residual width")
    block_size: int | None = setting(None, "context length in tokens")
    dropout: float | None = setting(None, "dropout probability")
    norm: str | None = setting(None, "layernorm or rmsnorm")
    mlp: str | None = setting(None, "gelu or swiglu")
    position: str | None = setting(None, "learned or rope")
    rope_theta: float | None = setting(None, "RoPE base")
    bias: bool | None = setting(None, "biases in linear layers and norms (true/false)")
    tie_embeddings: bool | None = setting(None, "share the token embedding with the output head (true/false)")
    # optimisation
    optimizer: str = setting("adamw", "adamw or sgd")
    batch_size: int = setting(12, "sequences per micro-batch")
    grad_accum: int = setting(1, "micro-batches per optimizer step")
    max_iters: int = setting(1000, "optimizer steps")
    lr: float = setting(1e-3, "peak learning rate")
    min_lr: float = setting(1e-4, "final learning rate of the cosine schedule")
    warmup_iters: int = setting(100, "linear warmup steps")
    lr_schedule: str = setting("cosine", "cosine or constant")
    weight_decay: float = setting(0.1, "AdamW decoupled weight decay (matrices and embeddings only)")
    beta1: float = setting(0.9, "AdamW beta1")
    beta2: float = setting(0.99, "AdamW beta2 (nanoGPT's choice for small char-level models)")
    eps: float = setting(1e-8, "AdamW epsilon")
    momentum: float = setting(0.9, "SGD momentum")
    grad_clip: float = setting(1.0, "clip the global gradient norm to this (0 = off)")
    # evaluation, logging, checkpoints
    eval_interval: int = setting(250, "evaluate and checkpoint every N steps (and at the end)")
    eval_iters: int = setting(20, "batches per split in each evaluation")
    log_interval: int = setting(10, "a progress line and metrics record every N steps")
    seed: int = setting(1337, "seed for weights, dropout masks and batches")
    dtype: str = setting("float32", "float32 or float64")
    device: str = setting("cpu", "cpu or cuda (CuPy)")
    workers: int = setting(0, "processes (or threads) that split each batch by rows, one per core (0 = "
                              "OMP_NUM_THREADS if set, else one per core; 1 = this process alone)")
    parallel: str = setting("processes", "how --workers split each batch: processes (forked workers sharing the "
                                         "weights, Linux; elsewhere threads) or threads")
    threads: int = setting(0, "the flag before --workers: --threads N is --workers N --parallel threads")
    resume: bool = setting(False, "continue the run in --out from its last checkpoint")
    progress: str = setting("auto", "auto (bar on a terminal, lines otherwise), bar, log or none")
    # pipeline and data parallelism (parallel/ runs these; 1 = a single process)
    pipeline_stages: int = setting(1, "pipeline stages (needs mpiexec and the mpi extra)")
    microbatches: int | None = setting(None, "micro-batches per step in a pipeline (default: --grad-accum)")
    schedule: str = setting("1f1b", "pipeline schedule: gpipe, 1f1b, interleaved or zb-h1 (zero-bubble H1)")
    virtual_stages: int | None = setting(None, "model chunks per pipeline stage for --schedule interleaved "
                                               "(default 2)")
    data_parallel: int = setting(1, "data-parallel replicas (needs mpiexec and the mpi extra)")
    partition: str = setting("uniform", "how blocks are split across pipeline stages: uniform, params or time")
    zero: int = setting(0, "1: shard the optimizer state across the --data-parallel replicas (ZeRO-1); 0: off")
    recompute: bool = setting(False, "pipeline stages keep only each block's input and recompute the block "
                                     "in backward (less memory, one more forward)")

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
        for name in ("workers", "threads"):
            _check(self, name, lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0,
                   "must be 0 (one per core) or a positive integer")
        _check(self, "parallel", lambda v: v in PARALLEL, f"must be one of {', '.join(PARALLEL)}")
        _check(self, "threads", lambda v: v == 0 or self.workers in (0, v),
               f"is --workers {self.threads} --parallel threads, but --workers {self.workers} is given too: give one")
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
        _check(self, "schedule", lambda v: v in PIPELINE_SCHEDULES, f"must be one of {', '.join(PIPELINE_SCHEDULES)}")
        _check(self, "virtual_stages", lambda v: v is None or (isinstance(v, int) and not isinstance(v, bool) and v > 0),
               "must be a positive integer")
        _check(self, "virtual_stages", lambda v: v in (None, 1) or self.schedule == "interleaved",
               f"needs --schedule interleaved (the schedule is {self.schedule})")
        _check(self, "zero", lambda v: v in (0, 1), "must be 0 (off) or 1 (optimizer state sharded across replicas)")
        _check(self, "zero", lambda v: v == 0 or self.data_parallel > 1,
               "shards the optimizer state across data-parallel replicas: use it with --data-parallel 2 or more")
        _check(self, "recompute", lambda v: not v or self.pipeline_stages > 1 or self.data_parallel > 1,
               "runs in pipeline stages: use it with --pipeline-stages or --data-parallel above 1 (under mpiexec)")
        _check(self, "preset", lambda v: v in GPTConfig.presets(), f"must be one of {', '.join(GPTConfig.presets())}")
        _check(self, "out", lambda v: isinstance(v, str) and v != "", "must name a directory")
        _check(self, "data", lambda v: v is None or isinstance(v, str) and v != "",
               "must be a text file, a directory, a glob or 'stdlib'")
        _check(self, "data_ext", lambda v: isinstance(v, str), "must be extensions, comma-separated (e.g. .txt,.md)")
        _check(self, "tokenizer", lambda v: isinstance(v, str) and v != "", "must be char, bpe or a tokenizer file")
        _check(self, "partition", lambda v: v in ("uniform", "params", "time"), "must be uniform, params or time")

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
    def pipeline_chunks(self) -> int:
        """Model chunks per pipeline stage: --virtual-stages, 2 by default for interleaved, else 1."""
        return self.virtual_stages or (2 if self.schedule == "interleaved" else 1)

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


class ConfigError(UserError):
    """A setting the user can fix; the message names the flag and the value."""


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _check(config, name, ok, message) -> None:
    value = getattr(config, name)
    if not ok(value):
        raise ConfigError(f"--{name.replace('_', '-')} {value!r}: {message}")


def make_optimizer(config: TrainConfig, named_parameters):
    if config.optimizer == "sgd":
        return SGD(named_parameters, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    return AdamW(named_parameters, lr=config.lr, betas=(config.beta1, config.beta2), eps=config.eps,
                 weight_decay=config.weight_decay)


PARALLEL = ("processes", "threads")


def resolve_workers(config: TrainConfig) -> tuple:
    """(how many, "processes" | "threads" | "one") split each batch: --workers (or --threads), else
    OMP_NUM_THREADS or the cores, at most one per row; one on a GPU; threads where fork is missing."""
    if config.device != "cpu":
        return 1, "one"
    count, kind = (config.threads, "threads") if config.threads else (config.workers or default_threads(),
                                                                       config.parallel)
    count = min(count, config.batch_size)
    if count == 1:
        return 1, "one"
    if kind == "processes" and not fork_available():
        kind = "threads"
    return count, kind


def describe_workers(config: TrainConfig) -> str:
    """'2 worker processes', '3 threads' or 'one process', for a run's first lines."""
    count, kind = resolve_workers(config)
    return {"processes": f"{count} worker processes", "threads": f"{count} threads", "one": "one process"}[kind]


def parallelism_warnings(config: TrainConfig) -> list:
    """Lines that say when the run will be slower than it should (a silent slow path otherwise):
    workers BLAS cannot be limited in, more workers than cores, processes unavailable."""
    count, kind = resolve_workers(config)
    lines = []
    if config.parallel == "processes" and not config.threads and kind == "threads":
        lines.append("note: worker processes need fork (Linux); splitting each batch across threads instead")
    if count > 1:
        problem = BlasThreads().problem
        if problem is not None:
            lines.append(f"warning: {problem}, so each of the {count} {kind}' BLAS may run as many threads as "
                         "there are cores and oversubscribe them (up to half speed): install threadpoolctl, "
                         "or use --workers 1")
    cores = available_cores()
    if count > cores:
        lines.append(f"warning: {count} {kind if count > 1 else 'process'} on {cores} core(s): oversubscribed, "
                     f"every step waits for the slowest; use --workers {cores} (or 0: one per core)")
    return lines


def make_strategy(config: TrainConfig, optimizer):
    """The one-machine strategy for resolve_workers(config): DataProcesses or DataThreads (the
    optimizer's updates split across them too), or SingleProcess for one."""
    count, kind = resolve_workers(config)
    if kind == "processes":
        workers = DataProcesses(count, optimizer)
        optimizer.parallel = workers.parallel_step
        return workers
    if kind == "threads":
        workers = DataThreads(count)
        optimizer.parallel = workers.parameter_groups
        return workers
    return SingleProcess()


# ---- the pretraining task ---------------------------------------------------------------------


def estimate_loss(batch_loss, tokens, block_size: int, batch_size: int, eval_iters: int, seed: int) -> float:
    """Mean of batch_loss(batch) over `eval_iters` batches drawn by a generator seeded with `seed`."""
    sampler = BatchSampler(tokens, block_size, batch_size, seed)
    total = 0.0
    for _ in range(eval_iters):
        total += batch_loss(sampler.next_batch())
    return total / eval_iters


class PretrainingTask(NextTokenLoss):
    """Next-token prediction on random windows of a corpus (see the module docstring).

    loss(model, batch) and weight(batch) are NextTokenLoss's: batches are (x, y) windows.
    """

    def __init__(self, train_tokens, val_tokens, block_size: int, batch_size: int, eval_iters: int, seed: int):
        self.train_tokens, self.val_tokens = train_tokens, val_tokens
        self.block_size, self.batch_size, self.eval_iters, self.seed = block_size, batch_size, eval_iters, seed
        self.sampler = BatchSampler(train_tokens, block_size, batch_size, seed)

    @classmethod
    def from_config(cls, config: TrainConfig, dataset, block_size: int) -> "PretrainingTask":
        return cls(dataset.train, dataset.val, block_size, config.batch_size, config.eval_iters, config.seed)

    def next_batch(self) -> tuple:
        return self.sampler.next_batch()   # (x, y): (B, T) int64 each

    def evaluate(self, model, batch_loss) -> dict:
        return {split: estimate_loss(batch_loss, tokens, self.block_size, self.batch_size, self.eval_iters,
                                     self.seed + offset)
                for split, tokens, offset in (("train", self.train_tokens, 1), ("val", self.val_tokens, 2))}

    def state(self) -> dict:
        return self.sampler.state()

    def set_state(self, state: dict) -> None:
        self.sampler.set_state(state)

    def checkpoint_entries(self) -> dict:
        return {}


# ---- building a run from a config -------------------------------------------------------------


def resume_checkpoint(config: TrainConfig):
    """The checkpoint to continue from with --resume; None for a new run. A new run never
    writes over an existing one, and a resumed run must have steps left to take: errors
    naming --out or --max-iters and the way on."""
    run_dir = Path(config.out)
    if config.resume:
        step = ckpt.read_state(run_dir)["step"]
        if config.max_iters <= step:
            raise ConfigError(f"--max-iters {config.max_iters}: the run in {config.out} is already at step {step}; "
                              f"pass a larger --max-iters (e.g. --max-iters {step + config.max_iters}) to train further")
        return ckpt.load_checkpoint(run_dir)
    if (run_dir / "last").exists():
        raise ConfigError(f"--out {config.out}: already holds a run (checkpoint {run_dir / 'last'}); "
                          "pass --resume to continue it, or choose a new --out directory")
    return None


def check_resumable(checkpoint, model_config: GPTConfig, tokenizer) -> None:
    """The checkpoint was made with this model shape and tokenizer, or a CheckpointError naming the difference."""
    saved_config = saved_model_config(checkpoint)
    if saved_config != model_config:
        diffs = [f"{k}: checkpoint {v!r}, now {getattr(model_config, k)!r}"
                 for k, v in saved_config.to_dict().items() if getattr(model_config, k) != v]
        raise ckpt.CheckpointError(f"{checkpoint.path / ckpt.STATE_FILE}: the checkpoint's model differs "
                                   f"from this run's ({'; '.join(diffs)}); resume with the same settings "
                                   "(or the same corpus and tokenizer)")
    if checkpoint.tokenizer().hash() != tokenizer.hash():
        raise ckpt.CheckpointError(f"{checkpoint.path / ckpt.TOKENIZER_FILE}: the tokenizer differs from the "
                                   "one built for this run's corpus; resume with the same --data and --tokenizer")


def hold_run_directory(run_dir, log) -> "runlock.RunLock":
    """This run's hold on `run_dir` (created if needed; tinyllm.runlock), or a RunDirectoryError."""
    lock = runlock.acquire(run_dir)
    if lock.takeover_message():
        log(lock.takeover_message())
    return lock


def restore_run(trainer: Trainer, checkpoint) -> None:
    """`trainer.restore(checkpoint)`; a state.json value of the wrong kind (an RNG state, a counter)
    is a CheckpointError naming the file, not a crash deep in NumPy."""
    try:
        trainer.restore(checkpoint)
    except ckpt.CheckpointError:
        raise
    except (KeyError, TypeError, ValueError, OverflowError) as error:
        raise ckpt.CheckpointError(f"{checkpoint.path / ckpt.STATE_FILE}: cannot be resumed from ({error!r}); "
                                   "the checkpoint is corrupted or was edited") from None


def write_run_config(run_dir: Path, entries: dict) -> None:
    """DIR/config.json: the resolved settings of the run, as used ({"train": ..., "model": ..., ...})."""
    io.write_json(Path(run_dir) / "config.json", {name: value.to_dict() for name, value in entries.items()})


def build_trainer(config: TrainConfig, log=None, progress_stream=None) -> Trainer:
    """Data, tokenizer, model, optimizer, task and strategy for `config` (restored from <out>/last if resuming)."""
    log = log or (lambda message: print(message, file=progress_stream or sys.stderr, flush=True))
    run_dir = Path(config.out)
    run_lock = hold_run_directory(run_dir, log)
    checkpoint = resume_checkpoint(config)
    corpus = resolve_corpus(config.data, config.data_ext)
    dataset = prepare_dataset(corpus, config.tokenizer, run_dir, vocab_size=config.vocab_size,
                              val_fraction=config.val_fraction, log=log, progress=config.progress,
                              workers=config.threads or config.workers or default_threads())
    model_config = config.model_config(dataset.vocab_size)
    check_split_fits(dataset, model_config.block_size)
    if checkpoint is not None:
        check_resumable(checkpoint, model_config, dataset.tokenizer)
    check_model_fits(model_config, config.dtype, TRAINING_COPIES, f"--tokenizer {config.tokenizer} and the model flags",
                     "use a smaller model or a tokenizer with fewer ids")
    model = GPT(model_config, seed=config.seed, dtype=config.dtype, device=config.device)
    optimizer = make_optimizer(config, list(model.named_parameters()))
    strategy = make_strategy(config, optimizer)
    task = PretrainingTask.from_config(config, dataset, model_config.block_size)
    trainer = Trainer(model, task, strategy, config=config, optimizer=optimizer, tokenizer=dataset.tokenizer,
                      run_dir=run_dir, progress_stream=progress_stream, run_lock=run_lock)
    if checkpoint is not None:
        restore_run(trainer, checkpoint)
        log(f"resuming {run_dir} from {checkpoint.path} at step {trainer.step}")
    write_run_config(run_dir, {"train": config, "model": model_config})
    log(f"model: {model.num_parameters():,} parameters ({model_config.n_layer} layers, {model_config.n_head} heads, "
        f"{model_config.n_embd} wide, block {model_config.block_size}, vocab {model_config.vocab_size}); "
        f"{config.tokens_per_step:,} tokens per step; {describe_workers(config)}; run directory {run_dir}")
    for line in parallelism_warnings(config):
        log(line)
    return trainer


def load_gpt(path, device: str = "cpu", dtype: str | None = None) -> tuple:
    """(GPT with the checkpoint's weights, the Checkpoint) from a checkpoint or run directory.

    dtype None: the dtype the run trained in. The one loader of a checkpoint's GPT: `tinyllm
    sample` and `eval` load with it, finetuning loads its base model with it.
    """
    checkpoint = ckpt.load_checkpoint(path, with_optimizer=False)
    model_config = saved_model_config(checkpoint)
    if dtype is None:
        dtype = checkpoint.state.get("train_config", {}).get("dtype", "float32")
        if dtype not in ("float32", "float64"):
            raise ckpt.CheckpointError(f"{checkpoint.path / ckpt.STATE_FILE}: train_config.dtype is {dtype!r}, "
                                       "not float32 or float64; the checkpoint is corrupted or was edited")
    where = checkpoint.path / ckpt.STATE_FILE
    stored = sum(int(array.size) for array in checkpoint.model_state.values())
    if stored != parameter_count(model_config):   # checked before the model is built: a file cannot make it huge
        raise ckpt.CheckpointError(f"{where}: model_config describes {parameter_count(model_config):,} parameters but "
                                   f"the model files hold {stored:,}; the checkpoint is corrupted or was edited")
    check_model_fits(model_config, dtype, copies=1, source=str(where))
    model = GPT(model_config, dtype=dtype, device=device)
    ckpt.load_model_state(model, checkpoint)
    return model, checkpoint


def saved_model_config(checkpoint) -> GPTConfig:
    """The checkpoint's model_config as a GPTConfig, or a CheckpointError naming state.json."""
    try:
        return GPTConfig.from_dict(checkpoint.state["model_config"])
    except (KeyError, TypeError, ValueError) as error:
        raise ckpt.CheckpointError(f"{checkpoint.path / ckpt.STATE_FILE}: model_config is unusable ({error}); "
                                   "the checkpoint is corrupted or was edited") from None


def train(config: TrainConfig, progress_stream=None, stop_at: int | None = None) -> RunResult:
    """Build the run for `config` and train it; see the module docstring."""
    trainer = build_trainer(config, progress_stream=progress_stream)
    return trainer.run(stop_at=stop_at)
