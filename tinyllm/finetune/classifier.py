"""A GPT with a classification head: (B, T) token ids -> (B, K) class logits.

    model = SequenceClassifier(gpt, num_classes=2, pooling="last")
    logits, loss = model(pad_sequences([[3, 4, 5], [1, 2]], pad_id=0), labels)

The body is the GPT's own pieces (`gpt.embed`, its blocks, `gpt.norm_f`); the hidden states
of each sequence are pooled, the last real token's or the mean over its real tokens, and a
new Linear head maps them to class logits. With causal attention a real token never sees
the padding after it, so the features do not depend on how much padding a batch has.

Left out: multi-label classification, regression heads, class weighting.
"""
from __future__ import annotations

import numpy as np

from autograd import backend
from autograd import functional as F
from autograd.tensor import Tensor
from tinyllm import nn
from tinyllm.model import GPT, GPTConfig
from tinyllm.fields import ConfigError

from .data import PaddedBatch

POOLINGS = ("last", "mean")


def pooling_weights(lengths: np.ndarray, T: int, pooling: str, dtype) -> np.ndarray:
    """(B, 1, T) weights whose product with the hidden states (B, T, C) pools each row.

    last: 1 at position length - 1;  mean: 1 / length over the first `length` positions.
    """
    positions = np.arange(T)[None, :]                                         # (1, T)
    if pooling == "last":
        weights = (positions == (lengths[:, None] - 1)).astype(dtype)         # (B, T) one-hot
    elif pooling == "mean":
        weights = (positions < lengths[:, None]).astype(dtype) / lengths[:, None].astype(dtype)
    else:
        raise ConfigError(f"--pooling {pooling!r}: use one of {', '.join(POOLINGS)}")
    return weights[:, None, :]                                                # (B, 1, T)


class SequenceClassifier(nn.Module):
    """A GPT body with a Linear head on pooled hidden states: (B, T) ids -> (B, K) class logits.

    The GPT's own LM head is not used (its weights stay in the model, unused and frozen,
    so the base checkpoint still loads by name).
    """

    def __init__(self, gpt: GPT, num_classes: int, pooling: str = "last", seed: int = 0):
        super().__init__()
        if pooling not in POOLINGS:
            raise ConfigError(f"--pooling {pooling!r}: use one of {', '.join(POOLINGS)}")
        if num_classes < 2:
            raise ConfigError(f"a classifier needs at least 2 classes, got {num_classes}")
        self.gpt = gpt
        self.pooling = pooling
        self.num_classes = int(num_classes)
        with nn.build(seed, gpt.dtype, gpt.device, masks=gpt.dropout_masks):
            self.classifier = nn.Linear(gpt.config.n_embd, num_classes)

    # what tinyllm.trainer.Trainer reads from its model
    @property
    def config(self) -> GPTConfig:
        return self.gpt.config

    @property
    def dropout_masks(self):
        return self.gpt.dropout_masks

    def features(self, batch: PaddedBatch) -> Tensor:
        """Pooled final hidden states (B, C)."""
        x = self.gpt.embed(batch.ids)                                         # (B, T, C)
        for block in self.gpt.blocks:
            x = block(x)
        x = self.gpt.norm_f(x)                                                # (B, T, C)
        B, T, C = x.shape
        weights = pooling_weights(batch.lengths, T, self.pooling, x.dtype)    # (B, 1, T)
        pooled = Tensor.constant(backend.to_device(weights, x.device)) @ x  # (B, 1, T) @ (B, T, C)
        return pooled.reshape(B, C)

    def forward(self, batch: PaddedBatch, labels=None):
        """(logits (B, K), mean cross-entropy or None)."""
        logits = self.classifier(self.features(batch))                        # (B, K)
        if labels is None:
            return logits, None
        labels = labels.data if isinstance(labels, Tensor) else labels
        return logits, F.cross_entropy(logits, labels)   # host labels: checked there, then moved
