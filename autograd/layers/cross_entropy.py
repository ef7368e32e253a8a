"""Cross-entropy of logits against integer targets, softmax and negative log-likelihood fused.

    loss_n = logsumexp(x_n) - x_n[t_n]           for rows whose target is not ignore_index
    dx_n   = (softmax(x_n) - onehot(t_n)) * dl_n  (docs/derivations/cross_entropy.md)

dl_n = dL/dloss_n, what reaches row n's loss from the upstream gradient g: g's n-th entry
("none"), g ("sum"), g / n_valid ("mean": the loss is averaged over the rows that are not
ignored), 0 for an ignored row. A batch in which every row is ignored has loss 0 and zero gradient
(a deliberate choice: no signal rather than NaN). The fused form never builds the
one-hot matrix and never takes log of a probability, so it is exact at extreme logits.
n_valid stays an array on the device (reading it would stop the GPU every step); the
targets' range is checked at the boundary, `check_target_range` (F.cross_entropy).

Left out: label smoothing, class weights, probabilistic (soft) targets.
"""
from __future__ import annotations


from ..backend import get_array_module, read_scalars
from ..function import Function

REDUCTIONS = ("mean", "sum", "none")


class CrossEntropyFunction(Function):
    def forward(self, logits, targets, ignore_index=-100, reduction="mean"):
        xp = get_array_module(logits)
        V = logits.shape[-1]
        x = logits.reshape(-1, V)                                   # (N, V)
        t = targets.reshape(-1)                                     # (N,)
        valid = t != ignore_index
        safe_t = xp.where(valid, t, 0)
        rows = xp.arange(x.shape[0])
        # One pass of exp serves both the loss and the saved softmax:
        # e = exp(x - m), loss = m + log(sum e) - x[t], probs = e / sum e.
        m = x.max(axis=-1, keepdims=True)                           # (N, 1)
        probs = x - m                                               # (N, V), owned buffer
        xp.exp(probs, out=probs)
        total = probs.sum(axis=-1, keepdims=True)                   # (N, 1)
        lse = (m + xp.log(total))[:, 0]                             # (N,) logsumexp, exact at extreme logits
        probs /= total                                              # softmax
        losses = (lse - x[rows, safe_t]) * valid                    # (N,)
        self.probs, self.safe_t, self.valid, self.rows = probs, safe_t, valid, rows
        self.in_shape, self.reduction, self.out_shape = logits.shape, reduction, targets.shape
        if reduction == "none":
            return losses.reshape(targets.shape)
        if reduction == "sum":
            return losses.sum()
        self.count = valid_count(valid, losses.dtype)               # max(n_valid, 1), a 0-d array
        return losses.sum() / self.count

    def backward(self, grad):
        xp = get_array_module(grad)
        if self.reduction == "none":                                # dl: dL/dloss_n, (N,)
            dl = grad.reshape(-1) * self.valid
        elif self.reduction == "sum":
            dl = xp.broadcast_to(grad, self.valid.shape) * self.valid
        else:
            dl = xp.broadcast_to(grad / self.count, self.valid.shape) * self.valid
        dx = self.probs * dl[:, None]                               # term 1: softmax * dl_n
        dx[self.rows, self.safe_t] -= dl                            # term 2: - onehot * dl_n
        return dx.reshape(self.in_shape), None


def check_targets(logits_shape, targets_shape):
    if tuple(targets_shape) != tuple(logits_shape[:-1]):
        raise ValueError(f"cross_entropy: logits {tuple(logits_shape)} need targets of shape "
                         f"{tuple(logits_shape[:-1])}, got {tuple(targets_shape)}")


def valid_count(valid, dtype):
    """max(number of True in `valid`, 1) as a 0-d array of `dtype`, on valid's device (no copy to the host)."""
    xp = get_array_module(valid)
    return xp.maximum(valid.sum(), 1).astype(dtype)


def check_target_range(targets, V: int, ignore_index: int) -> None:
    """A ValueError naming a target outside [0, V) that is not ignore_index; free on host
    targets, one copy of two numbers on device ones."""
    if not targets.size:
        return
    xp = get_array_module(targets)
    safe = xp.where(targets != ignore_index, targets, 0)
    low, high = (int(v) for v in read_scalars(safe.min(), safe.max()))
    if low < 0 or high >= V:
        raise ValueError(f"cross_entropy: target {low if low < 0 else high} is outside the {V} classes [0, {V}); "
                         f"use ignore_index={ignore_index} for positions without a target")


def check_reduction(reduction):
    if reduction not in REDUCTIONS:
        raise ValueError(f"cross_entropy: reduction {reduction!r} is not one of {REDUCTIONS}")


