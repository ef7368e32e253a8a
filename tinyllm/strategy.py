"""How a training step's work is done: the one-process strategy, and the loss of token batches.

A strategy (the protocol is in tinyllm/trainer.py) computes a step's gradients, their
global norm and evaluation losses, saves checkpoints, and agrees on a stop with the
other processes of the run, if any. Four exist:

    SingleProcess     here: the batches one after the other in this thread
    DataProcesses     tinyllm/processes.py: each batch split by rows across forked worker processes
    DataThreads       tinyllm/threads.py: each batch split by rows across threads
    PipelineStrategy  parallel/strategy.py: pipeline stages x data-parallel replicas over MPI

    loss = compute_gradients(model, [(x, y), (x2, y2)])   # mean loss; grads accumulate in .grad

Each micro-batch loss is scaled by 1 / len(batches) before backward, so the summed
gradient is that of the mean loss: with equal micro-batches, the same as one batch
holding them all. Dropout masks are keyed by the step and each row's place in the step's
whole batch (the micro-batches one after the other: `first_rows`), so every strategy,
however it splits the rows, draws the masks this one does (tinyllm/dropout.py, DropoutMasks).
On a GPU the losses are summed on the device: a step's loss and its gradient norm reach
the host together, in one copy (Trainer.train_step).

Left out: mixed precision and loss scaling, gradient checkpointing.
"""
from __future__ import annotations

import numpy as np

from autograd import no_grad
from tinyllm import checkpoint as ckpt
from tinyllm.dropout import dropout_rows
from tinyllm.optim import global_grad_norm


class NextTokenLoss:
    """The loss of a batch (x, y) of token windows, and its weight in a mean over batches.

    Every row holds T targets, so a batch counts by its rows. Tasks on such batches
    (pretraining) take these two methods from here; so can a test that drives a strategy.
    """

    def loss(self, model, batch):
        x, y = batch                      # (B, T) int64 each
        _, loss = model(x, y)
        return loss

    def weight(self, batch) -> int:
        return len(batch[0])

    def tokens(self, batch) -> int:
        return int(batch[0].size)         # B x T


def compute_gradients(model, batches, loss=NextTokenLoss().loss, step: int | None = None):
    """Forward and backward every micro-batch; return the mean loss (see the module docstring):
    a float on the CPU, a 0-d float64 array on a GPU (nothing is read from the device here).

    loss(model, batch) -> scalar Tensor: the batch's mean loss (default: a GPT's on (x, y)).
    step: the training step, which keys the dropout masks (None: masks from the model's generator).
    """
    scale = 1.0 / len(batches)
    total = 0.0
    for batch, row in zip(batches, first_rows(batches)):
        with dropout_rows(model, step, row):
            value = loss(model, batch)
        (value * scale).backward()
        total = total + value.data.astype(np.float64)
    return total * scale


def batch_rows(batch) -> int:
    """The rows of a batch: a tuple of row-indexed parts (the last one is never a padded structure)."""
    return len(batch[-1])


def first_rows(batches) -> list:
    """Where each micro-batch starts in the step's whole batch (the rows before it): dropout keys rows by it."""
    starts, row = [], 0
    for batch in batches:
        starts.append(row)
        row += batch_rows(batch)
    return starts


class SingleProcess:
    """Everything in this process and thread: the default strategy (see the module docstring)."""

    is_writer = True   # this process prints progress and writes metrics and checkpoints
    ranks = 1          # processes sharing the work of a step

    def gradients(self, model, task, batches, step: int | None = None):
        """Mean loss of the micro-batches (on the device on a GPU); its gradient lands in .grad.
        `step` (1-based) keys the dropout masks."""
        return compute_gradients(model, batches, task.loss, step)

    def batch_loss(self, model, task, batch) -> float:
        """The batch's mean loss, without a graph."""
        with no_grad():
            return float(task.loss(model, batch).item())

    def grad_norm(self, params):
        """The global gradient norm (on the device on a GPU)."""
        return global_grad_norm(params)

    def save(self, run_dir, *, weights, optimizer, tokenizer, state: dict, best: bool) -> str:
        """Write `weights` (anything with state_dict()), the optimizer, tokenizer and state as DIR/last."""
        return str(ckpt.save_checkpoint(run_dir, model=weights, optimizer=optimizer, tokenizer=tokenizer,
                                        state=state, best=best))

    def step(self, optimizer, lr: float) -> None:
        """The optimizer's update, in this thread."""
        optimizer.step(lr)

    def agree_stop(self, signal):
        """The stop this process takes after the step: the signal it saw, if any."""
        return signal

    def num_parameters(self, model) -> int:
        return model.num_parameters()
