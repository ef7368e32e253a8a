"""One pipeline stage's share of a GPT: the model pruned to a contiguous group of blocks.

Every rank builds the whole GPT from the same seed (so its weights are bitwise those of a
single-process run) and then drops what its stage does not run:

    stage 0:        wte, wpe, blocks[start:stop]
    middle stages:  blocks[start:stop]
    last stage:     blocks[start:stop], norm_f, lm_head (or wte when the head is tied to it)

Parameter names stay the model's dotted names (`blocks.5.attn.c_attn.weight`), because
blocks are deleted from the ModuleList by index without renumbering the rest. So
`model.named_parameters()` on a pruned model lists exactly the stage's parameters under
their global names: the optimizer, its state and the checkpoint shards line up with a
single-process run by name.

Tied embeddings across stages: when the head is tied and there are several stages, the
same weight `wte.weight` lives on stage 0 (as the embedding) and on the last stage (as the
head); `tied_name()` names it so the engine can sum its two gradients.

Dropout: every rank builds the whole model, so each layer has the site number it has in
one process, and the engine keys each microbatch's masks by the step and its rows' place in
the global batch: a pipeline draws one process's masks (tinyllm/nn.py, DropoutMasks).

Left out: KV-cache decoding across stages.
"""
from __future__ import annotations

from autograd import backend
from autograd.tensor import Tensor

from .partition import Partition

TIED_WEIGHT = "wte.weight"


class StageModel:
    """The forward pass of one stage, on a GPT pruned to that stage (see the module docstring)."""

    def __init__(self, model, partition: Partition, stage: int):
        if partition.n_layer != model.config.n_layer:
            raise ValueError(f"the partition covers {partition.n_layer} blocks but the model has "
                             f"n_layer={model.config.n_layer}")
        self.model = model
        self.config = model.config
        self.partition = partition
        self.stage = stage
        self.n_stages = partition.n_stages
        self.is_first = stage == 0
        self.is_last = stage == self.n_stages - 1
        self.block_range = partition.ranges[stage]
        self.blocks = [model.blocks[i] for i in self.block_range]
        self._prune()

    def _prune(self) -> None:
        model = self.model
        for i in range(self.config.n_layer):
            if i not in self.block_range:
                delattr(model.blocks, str(i))
        if not self.is_first:
            if hasattr(model, "wpe"):
                del model.wpe
            if not (self.is_last and self.config.tie_embeddings):
                del model.wte
        if not self.is_last:
            del model.norm_f
            if hasattr(model, "lm_head"):
                del model.lm_head

    def named_parameters(self) -> list:
        return list(self.model.named_parameters())

    def tied_name(self) -> str | None:
        """`wte.weight` when it is shared between stage 0 and a different last stage, else None."""
        if self.config.tie_embeddings and self.n_stages > 1 and (self.is_first or self.is_last):
            return TIED_WEIGHT
        return None

    def counted_in_norm(self, name: str) -> bool:
        """Whether this stage adds `name`'s gradient to the global norm (a tied weight counts once, on stage 0)."""
        return not (self.is_last and not self.is_first and name == self.tied_name())

    def activation_shape(self, micro_batch: int) -> tuple:
        return (micro_batch, self.config.block_size, self.config.n_embd)  # (B, T, C)

    def forward(self, stage_input, targets=None) -> Tensor:
        """Stage 0: token ids (B, T) -> x; others: x (B, T, C) -> x; the last ends with the mean loss."""
        model = self.model
        x = model.embed(stage_input) if self.is_first else stage_input
        for block in self.blocks:
            x = block(x)
        if self.is_last:
            logits = model.head(x)                                            # (B, T, V)
            return model.loss(logits, targets)
        return x


def block_parameter_counts(model) -> tuple[list[int], int, int]:
    """(parameters per block, embeddings' parameters, head's parameters) for `--partition params`."""
    blocks = [sum(int(p.size) for p in block.parameters()) for block in model.blocks]
    first = int(model.wte.weight.size) + (int(model.wpe.weight.size) if hasattr(model, "wpe") else 0)
    head = sum(int(p.size) for p in model.norm_f.parameters())
    head += int(model.lm_head.weight.size) if hasattr(model, "lm_head") else int(model.wte.weight.size)
    return blocks, first, head


def measure_block_times(model, micro_batch: int, repeats: int = 2) -> tuple[list[float], float, float]:
    """(seconds per block, embeddings' seconds, head's seconds) of forward + backward, for `--partition time`.

    Each piece runs on a random input of the training shape; the best of `repeats` counts.
    """
    import time  # noqa: PLC0415

    import numpy as np  # noqa: PLC0415
    config = model.config
    xp = backend.module_for(model.device)
    rng = np.random.default_rng(0)
    shape = (micro_batch, config.block_size, config.n_embd)
    ids = rng.integers(0, config.vocab_size, size=shape[:2])
    x_host = rng.standard_normal(shape).astype(model.dtype)

    def timed(fn) -> float:
        best = float("inf")
        for _ in range(repeats):
            backend.synchronize()
            start = time.perf_counter()
            fn()
            backend.synchronize()
            best = min(best, time.perf_counter() - start)
        return best

    def run_block(block):
        x = Tensor(xp.asarray(x_host), requires_grad=True)
        block(x).sum().backward()

    def run_embed():
        model.embed(ids).sum().backward()

    def run_head():
        x = Tensor(xp.asarray(x_host), requires_grad=True)
        model.loss(model.head(x), ids).backward()

    times = [timed(lambda b=block: run_block(b)) for block in model.blocks]
    first, head = timed(run_embed), timed(run_head)
    model.zero_grad()
    return times, first, head
