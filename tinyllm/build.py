"""The one assembly line: every run's Trainer is built here, by `build_run(settings, recipe, layout)`.

    trainer = build_run(settings, Pretraining())                     # tinyllm train (tinyllm/train.py)
    trainer = build_run(settings, Finetuning(task_settings))         # tinyllm finetune (tinyllm/finetune/)
    trainer = build_run(settings, Pretraining(), PipelineLayout())   # under mpiexec (parallel/runner.py)
    result = run(settings, recipe)                                   # build, train, then recipe.finish

Two things differ between runs, each an object with a few methods:

    recipe   WHAT the run learns (the `Recipe` protocol below): its data and tokenizer, its
             model (pretraining builds a GPT from the seed; finetuning loads a base model and
             adds LoRA adapters or a classifier head), the parameters that train, its task,
             what a checkpoint must match to be resumed, and what comes after the loop.
    layout   WHERE the work runs (the `Layout` protocol): OneMachine, here (one process,
             threads or forked worker processes splitting each batch: tinyllm/workers.py),
             or parallel.runner.PipelineLayout (stages x replicas over MPI: it holds the run
             directory for every rank, prepares the data on rank 0 first, prunes the model
             to this rank's stage, may shard the optimizer state, and restores only the
             stage's share of a checkpoint).

The line, in order, and who supplies each step:

    1. this process's place and the run directory's lock                layout.open
    2. the checkpoint to resume from, or the refusal to overwrite a run  resume_checkpoint
    3. data, tokenizer, the model's config and its memory check         recipe.prepare (layout.first)
    4. the model, and the checkpoint checked against it                 recipe.build_model, recipe.check_resume
    5. the part of the model this process trains                        layout.place
    6. the optimizer over the parameters that train                     recipe.trainable, layout.optimizer
    7. the strategy (it owns the optimizer's update)                     layout.strategy
    8. the task                                                          recipe.task
    9. Trainer(model, task, strategy): made here and nowhere else
    10. the checkpoint restored (this process's share of it)            layout.restrict
    11. DIR/config.json and the run's first lines (the writer only)    recipe.describe, layout.describe

Left out: several tasks in one run, hyperparameter searches.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Protocol

from tinyllm import checkpoint as ckpt
from tinyllm import io, rundir, runlock
from tinyllm.fields import ConfigError
from tinyllm.optim import make_optimizer
from tinyllm.threads import default_threads
from tinyllm.trainer import RunResult, Trainer
from tinyllm.workers import describe_workers, one_machine_strategy, parallelism_warnings


class Recipe(Protocol):
    """What a kind of run learns; tinyllm.train.Pretraining and tinyllm.finetune.Finetuning are two."""

    command: str        # the command that runs it ("train", "finetune"), for messages
    sections: tuple     # the settings sections it reads (tinyllm.settings): its command's flags
    tokenizer: object   # set by prepare(): the run's tokenizer, saved in every checkpoint

    def prepare(self, settings, run_dir: Path, log, workers: int) -> None:
        """Read (or make) the data and the tokenizer, and check the model will fit; keeps them on self.
        workers: processes that may tokenize a corpus (the layout's data_workers)."""

    def build_model(self, settings):
        """The whole model, on settings.device, in settings.dtype."""

    def check_resume(self, checkpoint, model) -> None:
        """A CheckpointError when `checkpoint` was not made by this kind of run with these settings."""

    def trainable(self, model) -> list:
        """[(name, parameter)] of `model` that the optimizer trains."""

    def task(self, settings, model):
        """The trainer.Task: batches, loss, evaluation, its own checkpoint state."""

    def config_entries(self, settings) -> dict:
        """{"train": settings, "model": GPTConfig, ...}: what DIR/config.json records (each has to_dict)."""

    def describe(self, trainer) -> str:
        """The run's first line about itself (its model, parameters, data)."""

    def finish(self, trainer, result: RunResult) -> RunResult:
        """After the loop: what the run does with its trained model (e.g. a test split), then the result."""


class Layout(Protocol):
    """Where a run's work goes: OneMachine here, or parallel.runner.PipelineLayout."""

    is_writer: bool   # this process writes config.json and prints the run's lines

    def open(self, settings, run_dir: Path, log):
        """Take this process's place (in a pipeline: the grid, a GPU) and the run directory's lock."""

    def first(self, prepare) -> None:
        """Run prepare() here (in a pipeline: on rank 0 first, then on the others, which read its cache)."""

    def data_workers(self, settings) -> int:
        """Processes that may tokenize a corpus in this process."""

    def place(self, model, settings, log):
        """The part of `model` this process trains (all of it on one machine)."""

    def optimizer(self, settings, named):
        """The optimizer over `named`."""

    def strategy(self, settings, model, optimizer):
        """The trainer.Strategy."""

    def restrict(self, checkpoint, names):
        """The part of `checkpoint` this process restores (the parameters `names`)."""

    def describe(self, settings) -> list:
        """The layout's part of the run's first line (how the work is spread), then any warnings."""

    def finish(self, trainer, result: RunResult) -> None:
        """After the loop and the recipe's finish (e.g. the pipeline's trace)."""


class OneMachine:
    """This machine: one process, or processes or threads splitting each batch (tinyllm/workers.py)."""

    is_writer = True

    def open(self, settings, run_dir: Path, log):
        lock = runlock.acquire(run_dir)
        if lock.takeover_message():
            log(lock.takeover_message())
        return lock

    def first(self, prepare) -> None:
        prepare()

    def data_workers(self, settings) -> int:
        """--workers (or --threads), else one per core: tokenizing a corpus is split as a batch is."""
        return settings.workers.threads or settings.workers.workers or default_threads()

    def place(self, model, settings, log):
        return model

    def optimizer(self, settings, named):
        return make_optimizer(settings.optim, named)

    def strategy(self, settings, model, optimizer):
        return one_machine_strategy(settings.workers, settings.loop.batch_size, settings.device, optimizer)

    def restrict(self, checkpoint, names):
        return checkpoint

    def describe(self, settings) -> list:
        workers = settings.workers, settings.loop.batch_size, settings.device
        return [describe_workers(*workers), *parallelism_warnings(*workers)]

    def finish(self, trainer, result: RunResult) -> None:
        pass


def build_run(settings, recipe: Recipe, layout: Layout | None = None, log=None, progress_stream=None) -> Trainer:
    """The Trainer of `settings` for `recipe` on `layout` (default OneMachine); see the module docstring.
    With settings.resume it continues from DIR/last; otherwise DIR must not hold a run yet."""
    layout = layout or OneMachine()
    say = log or (lambda message: print(message, file=progress_stream or sys.stderr, flush=True))
    run_dir = Path(settings.out)
    lock = layout.open(settings, run_dir, say)
    log = say if layout.is_writer else (lambda message: None)
    checkpoint = resume_checkpoint(settings)
    layout.first(lambda: recipe.prepare(settings, run_dir, log, layout.data_workers(settings)))
    model = recipe.build_model(settings)
    if checkpoint is not None:
        recipe.check_resume(checkpoint, model)
    model = layout.place(model, settings, log)
    named = recipe.trainable(model)
    optimizer = layout.optimizer(settings, named)
    strategy = layout.strategy(settings, model, optimizer)
    trainer = Trainer(model, recipe.task(settings, model), strategy, settings=settings, optimizer=optimizer,
                      tokenizer=recipe.tokenizer, run_dir=run_dir, progress_stream=progress_stream, run_lock=lock)
    if checkpoint is not None:
        restore_run(trainer, layout.restrict(checkpoint, [name for name, _ in named]))
        log(f"resuming {run_dir} from {checkpoint.path} at step {trainer.step}")
    if layout.is_writer:
        write_run_config(run_dir, recipe.config_entries(settings))
    spread, *warnings = layout.describe(settings)
    for line in [f"{recipe.describe(trainer)}; {spread}; run directory {run_dir}", *warnings]:
        log(line)
    return trainer


def run(settings, recipe: Recipe, layout: Layout | None = None, progress_stream=None,
        stop_at: int | None = None) -> RunResult:
    """Build the run, train it (to settings.loop.max_iters, or `stop_at`), then the recipe's and layout's finish."""
    layout = layout or OneMachine()
    trainer = build_run(settings, recipe, layout, progress_stream=progress_stream)
    result = recipe.finish(trainer, trainer.run(stop_at=stop_at))
    layout.finish(trainer, result)
    return result


def resume_checkpoint(settings):
    """The checkpoint to continue from with --resume; None for a new run. A new run never
    writes over an existing one, and a resumed run must have steps left to take: errors
    naming --out or --max-iters and the way on."""
    run_dir, max_iters = Path(settings.out), settings.loop.max_iters
    if settings.resume:
        step = ckpt.read_state(run_dir, flag="--out")["step"]
        if max_iters <= step:
            raise ConfigError(f"--max-iters {max_iters}: the run in {settings.out} is already at step {step}; "
                              f"pass a larger --max-iters (e.g. --max-iters {step + max_iters}) to train further")
        return ckpt.load_checkpoint(run_dir, flag="--out")
    rundir.check_new_run(run_dir)   # nor in a directory whose `last` is gone but whose checkpoints are not
    return None


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
