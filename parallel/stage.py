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

Interleaved schedules give a rank several chunks (`n_chunks` = v): the partition then has
p * v groups of blocks and rank s keeps groups s, s + p, ... (parallel.partition); stage 0
runs the embeddings before its chunk 0, the last stage the head after its chunk v - 1.
`forward(x, targets, chunk)` runs one chunk.

With `recompute`, each block keeps only its input during the forward and runs again
during its backward (parallel.recompute), so a stage holds one (B, T, C) array per block
and in-flight microbatch instead of every intermediate of every block.

Tied embeddings across stages: when the head is tied and there are several stages, the
same weight `wte.weight` lives on stage 0 (as the embedding) and on the last stage (as the
head); `tied_name()` names it so the engine can sum its two gradients.

Dropout: every rank builds the whole model, so each layer has the site number it has in
one process, and the engine keys each microbatch's masks by the step and its rows' place in
the global batch: a pipeline draws one process's masks (tinyllm/dropout.py, DropoutMasks).

Left out: KV-cache decoding across stages.
"""
from __future__ import annotations

from autograd import backend
from autograd.tensor import Tensor, grad_enabled

from .partition import Partition, virtual_stages_of
from .recompute import recomputed

TIED_WEIGHT = "wte.weight"


class StageModel:
    """The forward pass of one stage, on a GPT pruned to that stage (see the module docstring)."""

    def __init__(self, model, partition: Partition, stage: int, n_chunks: int = 1, recompute: bool = False):
        if partition.n_layer != model.config.n_layer:
            raise ValueError(f"the partition covers {partition.n_layer} blocks but the model has "
                             f"n_layer={model.config.n_layer}")
        if partition.n_stages % n_chunks:
            raise ValueError(f"a partition into {partition.n_stages} groups does not give {n_chunks} chunks per stage")
        self.model = model
        self.config = model.config
        self.partition = partition
        self.stage = stage
        self.n_chunks = n_chunks
        self.n_stages = partition.n_stages // n_chunks
        self.recompute = recompute
        self.is_first = stage == 0
        self.is_last = stage == self.n_stages - 1
        self.virtual_stages = virtual_stages_of(stage, self.n_stages, n_chunks)   # one per chunk, in model order
        self.chunk_ranges = [partition.ranges[v] for v in self.virtual_stages]
        self.chunks = [[model.blocks[i] for i in r] for r in self.chunk_ranges]
        self.blocks = [block for chunk in self.chunks for block in chunk]
        self._prune({i for r in self.chunk_ranges for i in r})

    def _prune(self, kept: set) -> None:
        model = self.model
        for i in range(self.config.n_layer):
            if i not in kept:
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

    def starts_model(self, chunk: int = 0) -> bool:
        """Whether `chunk` is the model's first virtual stage (it embeds token ids)."""
        return self.is_first and chunk == 0

    def ends_model(self, chunk: int = 0) -> bool:
        """Whether `chunk` is the model's last virtual stage (it ends with the loss)."""
        return self.is_last and chunk == self.n_chunks - 1

    def forward(self, stage_input, targets=None, chunk: int = 0) -> Tensor:
        """One chunk: token ids (B, T) -> x on the model's first; x (B, T, C) -> x; the model's last ends
        with the mean loss."""
        model = self.model
        x = model.embed(stage_input) if self.starts_model(chunk) else stage_input
        recompute = self.recompute and grad_enabled()
        dropout = model.dropout_masks if model.training and self.config.dropout > 0 else None
        for block in self.chunks[chunk]:
            x = recomputed(block, x, dropout) if recompute else block(x)
        if self.ends_model(chunk):
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
