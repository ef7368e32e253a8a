"""Finetuning runs: the classification and instruction tasks on tinyllm's one training loop.

    result = finetune(FinetuneConfig(task="classify", init_from="runs/demo", data="reviews.csv"),
                      RunSettings.of(out="runs/clf", max_iters=200, lr=1e-3, batch_size=16))
    result.test                  # classify: {"loss", "accuracy", "examples"}; instruct: {"loss", "tokens"}

`Finetuning` is the recipe the one assembly line (tinyllm/build.py) builds the run from;
`FinetuneTask` is its Trainer task (tinyllm/trainer.py): batches of examples (ExampleBatches:
seeded shuffles, epoch after epoch) instead of token windows; an evaluation over the val
split (loss, plus accuracy for classify) instead of random windows; and a checkpoint that
records the finetune settings, the data's labels or template, and a hash of the frozen
weights. The step, clipping, optimizer, schedule, progress, metrics.jsonl, signals, exact
resume and the batch split across worker processes or threads (by rows, slices weighted by the targets
they count, so the masked instruction loss stays the exact batch mean) are the Trainer's.

At the end of a run the test split is evaluated, and a LoRA run also writes its adapters
as `DIR/adapter/` (tinyllm.lora.save_lora).

Left out: early stopping, several tasks in one run.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from autograd import backend
from tinyllm import checkpoint as ckpt
from tinyllm.build import run
from tinyllm.fields import ConfigError
from tinyllm.lora import lora_layers, save_lora, trainable_parameters
from tinyllm.trainer import MetricsLog, RunResult

from .config import FinetuneConfig, frozen_fingerprint, prepare_model
from .data import IGNORE_INDEX, ExampleBatches, TaskData, build_task_data
from .loading import keep_base, load_base_model


def eval_chunks(indices, batch_size: int, limit: int | None) -> list:
    """`indices` in order, in batches of batch_size (at most `limit` of them)."""
    indices = np.asarray(indices, dtype=np.int64)
    chunks = [indices[i:i + batch_size] for i in range(0, len(indices), batch_size)]
    return chunks if limit is None else chunks[:limit]


def evaluate_classifier(model, data: TaskData, indices, batch_size: int, max_batches: int | None = None) -> dict:
    """Mean loss and accuracy over `indices` (run it in eval mode, without gradients)."""
    total_loss, correct, count = 0.0, 0, 0
    for chunk in eval_chunks(indices, batch_size, max_batches):
        batch, labels = data.batch(chunk)
        logits, loss = model(batch, labels)
        predicted = backend.to_numpy(logits.data.argmax(axis=-1))
        total_loss += float(loss.item()) * len(chunk)
        correct += int((predicted == labels).sum())
        count += len(chunk)
    if count == 0:
        return {"loss": float("nan"), "accuracy": float("nan"), "examples": 0}
    return {"loss": total_loss / count, "accuracy": correct / count, "examples": count}


def evaluate_instruct(batch_loss, data: TaskData, indices, batch_size: int, max_batches: int | None = None) -> dict:
    """Masked loss per response token over `indices`; batch_loss(batch) -> the batch's mean over its counted tokens."""
    total, tokens = 0.0, 0
    for chunk in eval_chunks(indices, batch_size, max_batches):
        batch = data.batch(chunk)
        n = int((batch[1] != IGNORE_INDEX).sum())
        total += batch_loss(batch) * n
        tokens += n
    return {"loss": total / tokens if tokens else float("nan"), "tokens": tokens}


class FinetuneTask:
    """Classification or instruction finetuning as a Trainer task (see the module docstring)."""

    def __init__(self, config: FinetuneConfig, data: TaskData, batch_size: int, eval_iters: int, seed: int,
                 frozen_sha256: str):
        self.config, self.data = config, data
        self.batch_size, self.eval_iters = batch_size, eval_iters
        self.frozen_sha256 = frozen_sha256
        self.sampler = ExampleBatches(data.batch, data.train, batch_size, seed)

    def next_batch(self) -> tuple:
        return self.sampler.next_batch()

    def loss(self, model, batch):
        _, loss = model(*batch)   # classify: (PaddedBatch, labels); instruct: (inputs, targets)
        return loss

    def weight(self, batch) -> int:
        """classify: the rows; instruct: the response tokens the masked loss averages over."""
        if self.data.task == "classify":
            return len(batch[1])
        return int((batch[1] != IGNORE_INDEX).sum())

    def tokens(self, batch) -> int:
        """The positions the model runs: classify (PaddedBatch, labels); instruct (inputs, targets)."""
        ids = batch[0].ids if self.data.task == "classify" else batch[0]
        return int(ids.size)

    def evaluate_split(self, model, batch_loss, indices, max_batches: int | None = None) -> dict:
        if self.data.task == "classify":
            return evaluate_classifier(model, self.data, indices, self.batch_size, max_batches)
        return evaluate_instruct(batch_loss, self.data, indices, self.batch_size, max_batches)

    def evaluate(self, model, batch_loss) -> dict:
        """Loss (and accuracy) on up to eval_iters batches of the train and val splits (train when val is empty)."""
        val_indices = self.data.val if len(self.data.val) else self.data.train
        train = self.evaluate_split(model, batch_loss, self.data.train, self.eval_iters)
        val = self.evaluate_split(model, batch_loss, val_indices, self.eval_iters)
        metrics = {"train": train["loss"], "val": val["loss"]}
        if self.data.task == "classify":
            metrics.update(train_accuracy=train["accuracy"], val_accuracy=val["accuracy"])
        return metrics

    def test(self, model, batch_loss) -> dict:
        """The whole test split: classify {"loss", "accuracy", "examples"}; instruct {"loss", "tokens"}."""
        return self.evaluate_split(model, batch_loss, self.data.test)

    def state(self) -> dict:
        return self.sampler.state()

    def set_state(self, state: dict) -> None:
        self.sampler.set_state(state)

    def checkpoint_entries(self) -> dict:
        return {"finetune": {"config": self.config.to_dict(), **self.data.metadata(),
                             "frozen_sha256": self.frozen_sha256}}


def check_finetune_state(checkpoint, config: FinetuneConfig, frozen_sha256: str) -> None:
    """The checkpoint was made by this finetuning setup on this base model, or a CheckpointError."""
    saved = checkpoint.state.get("finetune")
    where = checkpoint.path / ckpt.STATE_FILE
    if saved is None:
        raise ckpt.CheckpointError(f"{where}: not a finetuning checkpoint")
    now = config.to_dict()
    stored = ckpt.saved_config(FinetuneConfig, saved["config"], where).to_dict()   # its paths made absolute
    diffs = [f"{k}: checkpoint {v!r}, now {now.get(k)!r}" for k, v in stored.items()
             if k != "init_from" and now.get(k) != v]
    if diffs:
        raise ckpt.CheckpointError(f"{where}: made with other finetuning settings ({'; '.join(diffs)}); "
                                   "resume with the same flags")
    if saved.get("frozen_sha256") != frozen_sha256:
        raise ckpt.CheckpointError(f"{where}: the frozen base weights differ from those the checkpoint was trained "
                                   f"on (init_from {saved['config'].get('init_from')}); use the same base model")


class Finetuning:
    """The finetuning recipe (tinyllm.build.Recipe): a base model, its task data, LoRA or a head."""

    command = "finetune"
    sections = ("optim", "loop", "workers")   # no data, model or pipeline flags: the base model decides

    def __init__(self, config: FinetuneConfig):
        self.config = config

    def prepare(self, settings, run_dir: Path, log, workers: int) -> None:
        config = self.config
        base = keep_base(config.init_from, run_dir, new_run=not settings.resume)   # DIR/base: kept by content
        self.gpt, self.tokenizer = load_base_model(base, settings.dtype, settings.device, config.tokenizer)
        if self.tokenizer.vocab_size > self.gpt.config.vocab_size:
            raise ConfigError(f"the tokenizer has {self.tokenizer.vocab_size} tokens but the model's vocab_size is "
                              f"{self.gpt.config.vocab_size}; use the tokenizer the model was trained with")
        self.data = build_task_data(config, self.tokenizer, self.gpt.config.block_size, settings.seed)

    def build_model(self, settings):
        num_classes = len(self.data.label_names) if self.config.task == "classify" else None
        model = prepare_model(self.gpt, self.config, num_classes, seed=settings.seed)
        self.frozen_sha256 = frozen_fingerprint(model)
        return model

    def check_resume(self, checkpoint, model) -> None:
        check_finetune_state(checkpoint, self.config, self.frozen_sha256)

    def trainable(self, model) -> list:
        return trainable_parameters(model)

    def task(self, settings, model) -> FinetuneTask:
        loop = settings.loop
        return FinetuneTask(self.config, self.data, loop.batch_size, loop.eval_iters, settings.seed, self.frozen_sha256)

    def config_entries(self, settings) -> dict:
        return {"train": settings, "finetune": self.config, "model": self.gpt.config}

    def describe(self, trainer) -> str:
        config, model, data = self.config, trainer.model, self.data
        n_train = sum(int(p.size) for _, p in trainable_parameters(model))
        lora = f" (LoRA rank {config.lora_rank} on {len(lora_layers(model))} layers)" if config.lora_rank else ""
        return (f"finetune {config.task}: {n_train:,} of {model.num_parameters():,} parameters train{lora}; "
                f"{len(data.train)} train / {len(data.val)} val / {len(data.test)} test examples")

    def finish(self, trainer, run: RunResult) -> "FinetuneResult":
        """At the end of the run: the test split, and with LoRA the adapters as DIR/adapter/."""
        result = FinetuneResult(**vars(run))
        config, settings = self.config, trainer.settings
        if run.status != "finished" or trainer.step < settings.loop.max_iters:
            return result
        if len(self.data.test):
            result.test = trainer.evaluate(trainer.task.test)
            summary = ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in result.test.items())
            if settings.loop.progress != "none":
                print(f"test: {summary}", file=trainer.progress_stream or sys.stderr, flush=True)
            MetricsLog(Path(settings.out) / "metrics.jsonl").write(
                {"step": trainer.step, **{f"test_{k}": v for k, v in result.test.items()}})
        if config.lora_rank:
            save_lora(trainer.model if config.task == "instruct" else trainer.model.gpt,
                      Path(settings.out) / "adapter", extra={"init_from": str(config.init_from), "task": config.task})
        return result


@dataclass
class FinetuneResult(RunResult):
    test: dict | None = None      # classify: {"loss", "accuracy", "examples"}; instruct: {"loss", "tokens"}


def finetune(config: FinetuneConfig, settings, progress_stream=None, stop_at: int | None = None) -> FinetuneResult:
    """Finetune as `config` and `settings` (a tinyllm.settings.RunSettings) say; see the module docstring."""
    settings = settings.replace(data=str(config.data))   # what `tinyllm info` shows as the data
    return run(settings, Finetuning(config), progress_stream=progress_stream, stop_at=stop_at)
