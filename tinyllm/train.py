"""Pretraining: next-token prediction on a corpus, as a recipe for the one assembly line.

    result = train(RunSettings.of(out="runs/demo", max_iters=300))
    trainer = build_run(settings, Pretraining())     # the same, without running it (tinyllm/build.py)

`Pretraining` supplies what a pretraining run differs by (tinyllm/build.py has the rest):
the corpus read (or tokenized and cached) into train and val tokens (tinyllm/data.py), a
GPT built from the seed with the settings' shape (`settings.model`) and the tokenizer's
vocabulary, every parameter training, the task below, and a checkpoint that must have
the same model shape and tokenizer to be resumed. Under mpiexec the same recipe runs on
every rank of a pipeline (parallel/runner.py).

The pretraining task (`PretrainingTask`): micro-batches of random windows of
`block_size + 1` tokens from the train split (a seeded BatchSampler whose generator state
the checkpoint keeps); evaluation is the mean loss over `eval_iters` batches of each split,
drawn by a generator re-seeded at every evaluation (seed + 1 for train, seed + 2 for val),
so every evaluation sees the same batches and they need no state. A run of 20 steps and a
run of 10 steps + resume + 10 steps give bitwise-equal losses and weights
(tests/train/test_train.py).

Left out: curricula, mixtures of corpora with weights.
"""
from __future__ import annotations

from pathlib import Path

from tinyllm import checkpoint as ckpt
from tinyllm.build import run
from tinyllm.data import BatchSampler, check_split_fits, prepare_dataset, resolve_corpus
from tinyllm.limits import TRAINING_COPIES, check_model_fits
from tinyllm.loading import saved_model_config
from tinyllm.model import GPT, GPTConfig
from tinyllm.strategy import NextTokenLoss
from tinyllm.trainer import RunResult

__all__ = ["Pretraining", "PretrainingTask", "train", "estimate_loss", "check_resumable"]


def estimate_loss(batch_loss, tokens, block_size: int, batch_size: int, eval_iters: int, seed: int) -> float:
    """Mean of batch_loss(batch) over `eval_iters` batches drawn by a generator seeded with `seed`."""
    sampler = BatchSampler(tokens, block_size, batch_size, seed)
    total = 0.0
    for _ in range(eval_iters):
        total += batch_loss(sampler.next_batch())
    return total / eval_iters


class PretrainingTask(NextTokenLoss):
    """Next-token prediction on random windows of a corpus (see the module docstring).

    loss(model, batch), weight(batch) and tokens(batch) are NextTokenLoss's: batches are (x, y) windows.
    """

    def __init__(self, train_tokens, val_tokens, block_size: int, batch_size: int, eval_iters: int, seed: int):
        self.train_tokens, self.val_tokens = train_tokens, val_tokens
        self.block_size, self.batch_size, self.eval_iters, self.seed = block_size, batch_size, eval_iters, seed
        self.sampler = BatchSampler(train_tokens, block_size, batch_size, seed)

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


class Pretraining:
    """The pretraining recipe (tinyllm.build.Recipe): see the module docstring."""

    command = "train"
    sections = ("data", "model", "optim", "loop", "workers", "pipeline")

    def prepare(self, settings, run_dir: Path, log, workers: int) -> None:
        data = settings.data
        corpus = resolve_corpus(data.data, data.data_ext)
        self.dataset = prepare_dataset(corpus, data.tokenizer, run_dir, vocab_size=data.vocab_size,
                                       val_fraction=data.val_fraction, log=log, workers=workers,
                                       progress=settings.loop.progress)
        self.tokenizer = self.dataset.tokenizer
        self.model_config = settings.model.config(self.dataset.vocab_size)
        check_split_fits(self.dataset, self.model_config.block_size)
        check_model_fits(GPT.count_parameters(self.model_config), settings.dtype, TRAINING_COPIES,
                         f"--tokenizer {data.tokenizer} and the model flags",
                         "use a smaller model or a tokenizer with fewer ids")

    def build_model(self, settings) -> GPT:
        return GPT(self.model_config, seed=settings.seed, dtype=settings.dtype, device=settings.device)

    def check_resume(self, checkpoint, model) -> None:
        check_resumable(checkpoint, self.model_config, self.tokenizer)

    def trainable(self, model) -> list:
        return list(model.named_parameters())

    def task(self, settings, model) -> PretrainingTask:
        return PretrainingTask(self.dataset.train, self.dataset.val, self.model_config.block_size,
                               settings.loop.batch_size, settings.loop.eval_iters, settings.seed)

    def config_entries(self, settings) -> dict:
        return {"train": settings, "model": self.model_config}

    def describe(self, trainer) -> str:
        c, loop = self.model_config, trainer.loop
        return (f"model: {trainer.strategy.num_parameters(trainer.model):,} parameters ({c.n_layer} layers, "
                f"{c.n_head} heads, {c.n_embd} wide, block {c.block_size}, vocab {c.vocab_size}); "
                f"{loop.batch_size * loop.grad_accum * c.block_size:,} tokens per step")

    def finish(self, trainer, result: RunResult) -> RunResult:
        return result


def train(settings, progress_stream=None, stop_at: int | None = None) -> RunResult:
    """Pretrain as `settings` say, on this machine (tinyllm.build.run with the Pretraining recipe)."""
    return run(settings, Pretraining(), progress_stream=progress_stream, stop_at=stop_at)
