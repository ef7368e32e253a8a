"""Optimizers, learning-rate schedules and gradient clipping for training a GPT.

    opt = AdamW(model.named_parameters(), lr=1e-3, betas=(0.9, 0.99), weight_decay=0.1)
    opt = AdamW(model.parameters(), lr=1e-3)          # also fine: parameters are named "0", "1", ...
    schedule = CosineSchedule(lr=1e-3, min_lr=1e-4, warmup_iters=100, max_iters=2000)
    norm = clip_grad_norm(params, max_norm=1.0)       # global L2 norm, before clipping
    opt.step(lr=schedule(it)); opt.zero_grad()

    opt = make_optimizer(settings.optim, model.named_parameters())   # a run's: its `OptimSettings`

Everything is keyed by parameter NAME: the optimizer state (`m`, `v` per parameter, one
step counter) is a dict of arrays named `<param>.exp_avg` / `<param>.exp_avg_sq`, so a
pipeline stage that holds a subset of the model's parameters uses the same optimizer
and the same checkpoint code, and a checkpoint's state lines up with the model by name.
Plain parameters (`model.parameters()`, the PyTorch habit) get their positions as names,
so their state only lines up with a run that lists the same parameters in the same order:
pass `named_parameters()` when the state goes into a checkpoint.

Weight decay is decoupled (AdamW, Loshchilov & Hutter) and applied only to parameters
with two or more dimensions (matrices and embeddings), never to norm gains or biases,
as nanoGPT groups them. All updates run in place on state allocated once, through
`xp` (NumPy or CuPy), in a fixed parameter order, so a float64 run is bitwise
repeatable.

`step(lr, spread=None)`: each parameter's update reads only its own gradient and state, so
a strategy that has several threads or processes passes `spread(update, named)`, which
runs `update` on groups of the named parameters at once (tinyllm/threads.py,
tinyllm/processes.py): the numbers are the same as one after the other. The strategy owns
that call (`strategy.step(optimizer, lr)`, tinyllm/trainer.py); the optimizer holds no hook.

Left out: per-group hyperparameters beyond the decay / no-decay split, fused
multi-tensor kernels, AMSGrad, Adafactor, Lion, and learning-rate finders.
"""
from __future__ import annotations

import math
import threading
from dataclasses import dataclass

import numpy as np

from autograd import Tensor
from autograd.backend import get_array_module, read_scalars
from autograd.blocked import blocked
from tinyllm.fields import check, is_number, is_int, one_of, setting

# ---- which parameters decay ----------------------------------------------------------


def decays(param) -> bool:
    """nanoGPT's grouping: matrices and embeddings decay; biases and norm gains do not."""
    return param.data.ndim >= 2


def _named(parameters) -> list:
    """[(name, parameter)] from named_parameters() pairs, a {name: parameter} dict, or plain
    parameters (model.parameters()), which are named by position: "0", "1", ..."""
    if isinstance(parameters, Tensor):
        raise TypeError("the optimizer got a single tensor; pass a list of parameters: [p], "
                        "model.parameters() or model.named_parameters()")
    items = list(parameters.items() if isinstance(parameters, dict) else parameters)
    if not items:
        raise ValueError("the optimizer got no parameters")
    if all(isinstance(item, Tensor) for item in items):
        return [(str(i), p) for i, p in enumerate(items)]
    if not all(isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str)
               and isinstance(item[1], Tensor) for item in items):
        kinds = sorted({type(item).__name__ for item in items})
        raise TypeError(f"the optimizer takes model.named_parameters() ((name, parameter) pairs) or "
                        f"model.parameters() (parameters), not a mix; got items of type {', '.join(kinds)}")
    names = [name for name, _ in items]
    if len(set(names)) != len(names):
        raise ValueError("parameter names must be unique; got duplicates in " + ", ".join(sorted(names)))
    return items


class Optimizer:
    """Base: holds (name, parameter) pairs in a fixed order and a step counter (module docstring)."""

    kind = "optimizer"
    state_buffers: tuple = ()   # names of the {param name: array} dicts that hold the state

    def __init__(self, named_parameters, lr: float):
        self.params = _named(named_parameters)  # [(name, Parameter)] in a fixed order; see _named
        self.lr = float(lr)
        self.step_count = 0
        self._scratch = threading.local()       # .buffer: this thread's scratch (see scratch())

    def zero_grad(self) -> None:
        for _, p in self.params:
            p.grad = None

    def step(self, lr: float | None = None, spread=None) -> None:
        """One update with learning rate `lr` (default: self.lr); skips params without grads.
        spread(update, named): runs update on groups of `named` at once (module docstring)."""
        if lr is not None:
            self.lr = float(lr)
        self.step_count += 1
        todo = [(name, p) for name, p in self.params if p.grad is not None]
        if spread is None:
            self._update_all(todo)
        else:
            spread(self._update_all, todo)

    def scratch(self, p):
        """A scratch array shaped like p.data, this thread's own: one flat buffer per thread, grown to
        the largest parameter the thread updates (a buffer per parameter would add the size of the
        model to the optimizer's memory; threads updating parameters at once each need their own)."""
        buffer = getattr(self._scratch, "buffer", None)
        data = p.data
        if buffer is None or buffer.size < data.size or buffer.dtype != data.dtype or \
                get_array_module(buffer) is not get_array_module(data):
            buffer = get_array_module(data).empty(data.size, dtype=data.dtype)
            self._scratch.buffer = buffer
        return buffer[:data.size].reshape(data.shape)

    def _update_all(self, named: list) -> None:
        for name, p in named:
            self._update(name, p)

    def _update(self, name: str, p) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    # ---- state, keyed by parameter name ----------------------------------------------
    def relocate_state(self, allocate) -> None:
        """Replace every state buffer by allocate(buffer): a copy of it elsewhere (tinyllm/processes.py
        moves the state into memory that worker processes share, so each updates its share in place)."""
        for attr in self.state_buffers:
            buffers = getattr(self, attr)
            for name in buffers:
                buffers[name] = allocate(buffers[name])

    def state_arrays(self) -> dict:
        """name -> array for every buffer (what goes into optimizer.safetensors)."""
        return {}

    def state_meta(self) -> dict:
        """JSON-able scalars: the kind, the step counter, the hyperparameters."""
        return {"kind": self.kind, "step": self.step_count, "lr": self.lr}

    def load_state(self, arrays: dict, meta: dict) -> None:
        """Restore from `state_arrays()` / `state_meta()`; errors name what does not match."""
        if meta.get("kind") != self.kind:
            raise ValueError(f"optimizer state is for {meta.get('kind')!r}, this run uses {self.kind!r}")
        expected = self.state_arrays()
        missing = sorted(set(expected) - set(arrays))
        unexpected = sorted(set(arrays) - set(expected))
        if missing or unexpected:
            raise ValueError(f"optimizer state does not match the parameters: missing {missing[:5]}, "
                             f"unexpected {unexpected[:5]}")
        for key, buf in expected.items():
            src = arrays[key]
            if tuple(src.shape) != tuple(buf.shape):
                raise ValueError(f"optimizer state {key!r} has shape {tuple(src.shape)}, "
                                 f"the parameter needs {tuple(buf.shape)}")
            xp = get_array_module(buf)
            buf[...] = xp.asarray(src, dtype=buf.dtype)
        self.step_count = int(meta["step"])
        self.lr = float(meta.get("lr", self.lr))


BLOCKED_MIN_SIZE = 1 << 20  # AdamW updates parameters this large one cache-sized block at a time


class AdamW(Optimizer):
    """Adam with decoupled weight decay (the update torch.optim.AdamW makes).

        p <- p * (1 - lr * wd)                       (only if p.ndim >= 2)
        m <- b1 m + (1 - b1) g ;  v <- b2 v + (1 - b2) g^2
        p <- p - (lr / (1 - b1^t)) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
    """

    kind = "adamw"
    state_buffers = ("exp_avg", "exp_avg_sq")

    def __init__(self, named_parameters, lr: float = 1e-3, betas: tuple = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0):
        super().__init__(named_parameters, lr)
        beta1, beta2 = betas
        for label, value in (("beta1", beta1), ("beta2", beta2)):
            if not 0.0 <= value < 1.0:
                raise ValueError(f"AdamW {label}={value} must be in [0, 1)")
        if eps <= 0:
            raise ValueError(f"AdamW eps={eps} must be positive")
        if weight_decay < 0:
            raise ValueError(f"AdamW weight_decay={weight_decay} must be >= 0")
        self.beta1, self.beta2, self.eps, self.weight_decay = float(beta1), float(beta2), float(eps), float(weight_decay)
        self.exp_avg, self.exp_avg_sq = {}, {}
        for name, p in self.params:
            xp = get_array_module(p.data)
            self.exp_avg[name] = xp.zeros_like(p.data)
            self.exp_avg_sq[name] = xp.zeros_like(p.data)

    def _update(self, name: str, p) -> None:
        t = self.step_count
        lr, b1, b2, eps = self.lr, self.beta1, self.beta2, self.eps
        decay = 1.0 - lr * self.weight_decay if self.weight_decay and decays(p) else None
        sqrt_bc2 = math.sqrt(1.0 - b2 ** t)
        step = lr / (1.0 - b1 ** t)

        def kernel(outs, ins):  # one cache-sized block of every buffer at a time (autograd/blocked.py)
            (w, m, v, buf), (g,) = outs, ins
            xp = get_array_module(w)
            if decay is not None:
                w *= decay                                   # decoupled weight decay
            m *= b1                                          # m <- b1 m + (1 - b1) g
            xp.multiply(g, 1.0 - b1, out=buf)
            m += buf
            v *= b2                                          # v <- b2 v + (1 - b2) g^2
            xp.multiply(g, g, out=buf)
            buf *= 1.0 - b2
            v += buf
            xp.sqrt(v, out=buf)                              # denominator: sqrt(v_hat) + eps
            buf /= sqrt_bc2
            buf += eps
            xp.divide(m, buf, out=buf)                       # step direction: m / denominator
            buf *= step
            w -= buf
        outs = (p.data, self.exp_avg[name], self.exp_avg_sq[name], self.scratch(p))
        if p.size >= BLOCKED_MIN_SIZE and all(a.flags.c_contiguous for a in outs):
            blocked(kernel, outs=outs, ins=(p.grad,))   # one trip to memory per element (docs/performance.md)
        else:
            kernel(outs, (p.grad,))                   # fits the caches already: blocking only adds calls

    def state_arrays(self) -> dict:
        out = {}
        for name, _ in self.params:
            out[f"{name}.exp_avg"] = self.exp_avg[name]
            out[f"{name}.exp_avg_sq"] = self.exp_avg_sq[name]
        return out

    def state_meta(self) -> dict:
        return {**super().state_meta(), "betas": [self.beta1, self.beta2], "eps": self.eps,
                "weight_decay": self.weight_decay}


class SGD(Optimizer):
    """SGD with (heavy-ball) momentum and decoupled weight decay on matrices.

        p <- p * (1 - lr * wd)   (only if p.ndim >= 2);   b <- mu b + g;   p <- p - lr b
    """

    kind = "sgd"
    state_buffers = ("velocity",)

    def __init__(self, named_parameters, lr: float = 1e-2, momentum: float = 0.9, weight_decay: float = 0.0):
        super().__init__(named_parameters, lr)
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"SGD momentum={momentum} must be in [0, 1)")
        if weight_decay < 0:
            raise ValueError(f"SGD weight_decay={weight_decay} must be >= 0")
        self.momentum, self.weight_decay = float(momentum), float(weight_decay)
        self.velocity = {}
        for name, p in self.params:
            xp = get_array_module(p.data)
            self.velocity[name] = xp.zeros_like(p.data)

    def _update(self, name: str, p) -> None:
        xp = get_array_module(p.data)
        b, buf = self.velocity[name], self.scratch(p)
        if self.weight_decay and decays(p):
            p.data *= 1.0 - self.lr * self.weight_decay
        b *= self.momentum
        b += p.grad
        xp.multiply(b, self.lr, out=buf)
        p.data -= buf

    def state_arrays(self) -> dict:
        return {f"{name}.momentum": self.velocity[name] for name, _ in self.params}

    def state_meta(self) -> dict:
        return {**super().state_meta(), "momentum": self.momentum, "weight_decay": self.weight_decay}


OPTIMIZERS = ("adamw", "sgd")

# ---- learning-rate schedules ---------------------------------------------------------


@dataclass(frozen=True)
class CosineSchedule:
    """Linear warmup to `lr`, then cosine decay to `min_lr` at `max_iters` (nanoGPT's).

    Warmup: lr * (it + 1) / (warmup_iters + 1) for it < warmup_iters, so step 0 already
    moves. After `max_iters` the rate stays at `min_lr`.
    """

    lr: float
    min_lr: float
    warmup_iters: int
    max_iters: int

    def __call__(self, it: int) -> float:
        if it < self.warmup_iters:
            return self.lr * (it + 1) / (self.warmup_iters + 1)
        if it >= self.max_iters:
            return self.min_lr
        progress = (it - self.warmup_iters) / max(1, self.max_iters - self.warmup_iters)
        return self.min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (self.lr - self.min_lr)


@dataclass(frozen=True)
class ConstantSchedule:
    """Linear warmup (as CosineSchedule), then a constant `lr`."""

    lr: float
    warmup_iters: int = 0

    def __call__(self, it: int) -> float:
        if it < self.warmup_iters:
            return self.lr * (it + 1) / (self.warmup_iters + 1)
        return self.lr


SCHEDULES = ("cosine", "constant")


def make_schedule(kind: str, lr: float, min_lr: float, warmup_iters: int, max_iters: int):
    if kind == "cosine":
        return CosineSchedule(lr, min_lr, warmup_iters, max_iters)
    if kind == "constant":
        return ConstantSchedule(lr, warmup_iters)
    raise ValueError(f"unknown lr schedule {kind!r}: use one of {', '.join(SCHEDULES)}")


# ---- the optimisation section of a run's settings ----------------------------------------


@dataclass(frozen=True)
class OptimSettings:
    """The optimizer, its learning-rate schedule and clipping (`--lr` ...), checked here."""

    optimizer: str = setting("adamw", "adamw or sgd")
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

    def __post_init__(self):
        check(self, "optimizer", *one_of(OPTIMIZERS))
        check(self, "lr_schedule", *one_of(SCHEDULES))
        check(self, "lr", lambda v: is_number(v) and v > 0, "must be positive (e.g. 1e-3)")
        check(self, "min_lr", lambda v: is_number(v) and 0 <= v <= self.lr, f"must be between 0 and --lr ({self.lr})")
        check(self, "warmup_iters", lambda v: is_int(v) and v >= 0, "must be 0 or more")
        check(self, "weight_decay", lambda v: is_number(v) and v >= 0, "must be 0 or more (e.g. 0.1)")
        check(self, "grad_clip", lambda v: is_number(v) and v >= 0, "must be 0 (off) or more (e.g. 1.0)")
        for name in ("beta1", "beta2", "momentum"):
            check(self, name, lambda v: is_number(v) and 0 <= v < 1, "must be in [0, 1)")
        check(self, "eps", lambda v: is_number(v) and v > 0, "must be positive (e.g. 1e-8)")

    def schedule(self, max_iters: int):
        """The learning rate of each step (warmup, then cosine or constant) of a run of max_iters steps."""
        return make_schedule(self.lr_schedule, self.lr, self.min_lr, self.warmup_iters, max_iters)


def make_optimizer(settings: OptimSettings, named_parameters) -> Optimizer:
    """The optimizer `settings` names, over `named_parameters` (the ones that train)."""
    if settings.optimizer == "sgd":
        return SGD(named_parameters, lr=settings.lr, momentum=settings.momentum, weight_decay=settings.weight_decay)
    return AdamW(named_parameters, lr=settings.lr, betas=(settings.beta1, settings.beta2), eps=settings.eps,
                 weight_decay=settings.weight_decay)


# ---- gradient norm and clipping ------------------------------------------------------


def grad_square_sum(params):
    """Sum of squares of every gradient, in parameter order (a pipeline sums these across stages).

    A float on the CPU; on a GPU a 0-d float64 device array, summed there: reading each
    parameter's share would stop the GPU once per parameter (backend.read_scalars reads it).
    """
    total = 0.0
    for p in params:
        if p.grad is not None:
            flat = p.grad.reshape(-1)
            total = total + get_array_module(flat).dot(flat, flat).astype(np.float64)
    return total


def global_grad_norm(params):
    """The L2 norm of all gradients taken together, as one vector (a 0-d device array on a GPU)."""
    total = grad_square_sum(params)
    return get_array_module(total).sqrt(total)


def scale_grads(params, factor: float) -> None:
    for p in params:
        if p.grad is not None:
            p.grad *= factor


def clip_grad_norm(params, max_norm: float, norm: float | None = None) -> float:
    """Scale gradients so their global norm is at most `max_norm`; returns the norm before.

    Pass `norm` (a float) when it was computed elsewhere (a pipeline all-reduces it across
    stages; the Trainer reads it with the loss, in one copy from the GPU).
    As torch.nn.utils.clip_grad_norm_: scale by max_norm / (norm + 1e-6) when below 1.
    A `max_norm` of 0 (or less) only measures.
    """
    params = list(params)
    if norm is None:
        norm = read_scalars(global_grad_norm(params))[0]
    if max_norm > 0 and math.isfinite(norm):
        coef = max_norm / (norm + 1e-6)
        if coef < 1.0:
            scale_grads(params, coef)
    return norm
