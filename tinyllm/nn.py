"""tinyllm.nn: modules with named parameters, the building blocks of the model.

    lin = Linear(16, 32, init_rng=np.random.default_rng(0))
    y = lin(x)                                  # x: Tensor (..., 16) -> (..., 32)
    dict(lin.named_parameters())                # {'weight': Parameter (32, 16), 'bias': Parameter (32,)}

A `Module` registers every `Parameter` and sub-`Module` assigned to one of its attributes,
in the order they are assigned, so the dotted names (`blocks.0.attn.c_attn.weight`) and the
order of `parameters()` are the same on every run: optimizers, checkpoints and the
pipeline-parallel code rely on that order.

Initialisation draws from a NumPy Generator passed in (`init_rng`), always on the CPU and
then moved, so the same seed gives the same weights in float32, float64, on CPU or GPU
(float32 weights are the float64 draws rounded). Dropout layers get their masks from the
model's `DropoutMasks`: a pure function of (seed, step, layer, batch row, position) inside a
training step, so any split of the batch draws the same masks (see the class).

One forward per module: `forward` on Tensors, through autograd.functional (F), which is
what training and every full forward pass run. Cached decoding does not call it: it runs the
same layers' autograd Functions on raw arrays (tinyllm/decode.py), and a module it does not
know through this `forward` on constant Tensors, so a new module needs nothing more.

Layers: Linear, Embedding, LayerNorm, RMSNorm, Dropout, and the activations GELU and
SwiGLU (a module each, so a model's activation is a part that can be swapped), ModuleList.

Left out: buffers (nothing here needs persistent non-parameter state), hooks, parameter
groups (the optimizer builds its own), lazy shapes.
"""
from __future__ import annotations

import contextlib
import math
import threading
from collections import OrderedDict

import numpy as np

from autograd import backend, ops
from autograd import functional as F
from autograd.layers.dropout import DropoutKey
from autograd.tensor import Tensor

DTYPES = ("float32", "float64")


def check_dtype(dtype) -> np.dtype:
    """`dtype` as a NumPy float dtype, or a ValueError naming the supported ones."""
    try:
        resolved = np.dtype(dtype)
    except TypeError:
        resolved = None
    if resolved is None or resolved.name not in DTYPES:
        raise ValueError(f"dtype {dtype!r} is not supported: use 'float32' or 'float64'")
    return resolved


class Parameter(Tensor):
    """A Tensor that is a learnable weight of a Module: requires_grad is always on."""

    def __init__(self, data, dtype=None, device: str | None = None, name: str | None = None):
        super().__init__(data, requires_grad=True, dtype=dtype, device=device, name=name)

    def __repr__(self) -> str:
        return f"Parameter(shape={tuple(self.shape)}, dtype={self.dtype}, device={self.device})"


class DropoutMasks:
    """Where a model's dropout layers get their masks; one per model, shared by its layers.

    Two schemes (`scheme`):

    "keyed" (every new run): within `with masks.at(step, row):`, which a training strategy
    opens around each forward of a step (tinyllm/strategy.py, threads.py, processes.py,
    parallel/engine.py), a layer's mask is DropoutKey(seed, step, site, row): a pure function
    of the run's seed, the step, the layer's site and each element's batch row and position
    (autograd/layers/dropout.py). One process, threads, worker processes and any pipeline
    layout draw the same masks for the same rows, and a checkpoint needs no generator state.
    Outside any `at()` (a model run by hand), masks come from the seeded generator below.

    "generator" (runs begun before keyed masks, whose checkpoints say so by holding the
    generator's state): every mask is drawn in order from one seeded generator, which a
    checkpoint saves and restores, on the CPU and on a GPU (moving to another device starts
    a fresh generator there from the same seed: NumPy and CuPy draw different numbers). Threads that run the model at once (tinyllm/threads.py)
    each draw from a generator of their own: `spawn(n)` seeds n generators from this one
    (advancing it), and inside `with masks.use(g):` the current thread's layers draw from g.

    Sites: each layer that draws masks takes a number from `new_site()` when it is built, in
    the order the model builds them, so every rank of a pipeline (which builds the whole
    model, then prunes it) numbers the layers alike.
    """

    SCHEMES = ("keyed", "generator")

    def __init__(self, seed: int = 0, device: str = "cpu", scheme: str = "keyed"):
        self.seed = int(seed)
        self.device = device
        self.scheme = check_scheme(scheme)
        self.sites = 0
        self._generator = backend.new_generator(self.seed, device)
        self._local = threading.local()   # .generator: this thread's override; .key: (step, row) inside at()

    def new_site(self) -> int:
        """A number for a new layer that draws masks (0, 1, 2, ... in the order they are built)."""
        self.sites += 1
        return self.sites - 1

    @contextlib.contextmanager
    def at(self, step: int, row: int):
        """Within the block, this thread's masks are those of batch rows row.. of training step `step`."""
        previous = getattr(self._local, "key", None)
        self._local.key = (int(step), int(row))
        try:
            yield self
        finally:
            self._local.key = previous

    def source(self, site: int):
        """What a layer's mask comes from now: a DropoutKey (keyed, inside at()) or a Generator."""
        key = getattr(self._local, "key", None)
        if self.scheme == "keyed" and key is not None:
            return DropoutKey(self.seed, step=key[0], site=site, row=key[1])
        return self.generator

    # ---- drawing the same masks again (activation recomputation, parallel/recompute.py) ----
    def replay_point(self) -> tuple:
        """What a second run of the forward about to run needs to draw the same masks: this
        thread's (step, row) key, and the generator's state when no key is in force."""
        key = getattr(self._local, "key", None)
        keyed = self.scheme == "keyed" and key is not None
        return key, (None if keyed else self.state())

    @contextlib.contextmanager
    def replay(self, point: tuple):
        """Within the block, masks are drawn as they were after `replay_point()`; afterwards as now."""
        key, state = point
        previous_key, now = getattr(self._local, "key", None), (self.state() if state is not None else None)
        self._local.key = key
        if state is not None:
            self.set_state(state)
        try:
            yield self
        finally:
            self._local.key = previous_key
            if now is not None:
                self.set_state(now)

    # ---- the generator (the "generator" scheme, and masks drawn outside a training step) ----
    @property
    def generator(self):
        return getattr(self._local, "generator", None) or self._generator

    def spawn(self, n: int) -> list:
        """n new generators seeded from this one (which advances by one draw)."""
        seeds = self._generator.integers(0, 2**62, size=n)
        return [backend.new_generator(int(s), self.device) for s in seeds]

    @contextlib.contextmanager
    def use(self, generator):
        """Within the block, this thread's dropout layers draw from `generator`."""
        previous = getattr(self._local, "generator", None)
        self._local.generator = generator
        try:
            yield generator
        finally:
            self._local.generator = previous

    def state(self) -> dict:
        """A JSON-serialisable snapshot of the generator, on the CPU or a GPU (backend.generator_state)."""
        return backend.generator_state(self._generator)

    def set_state(self, state: dict) -> None:
        """Continue from `state()`; a ValueError when it is another device's (the masks differ anyway)."""
        backend.set_generator_state(self._generator, state)

    def to(self, device: str) -> "DropoutMasks":
        if device != self.device:
            self.device = device
            self._generator = backend.new_generator(self.seed, device)
        return self


def check_scheme(scheme: str) -> str:
    if scheme not in DropoutMasks.SCHEMES:
        raise ValueError(f"dropout mask scheme {scheme!r}: use one of {', '.join(DropoutMasks.SCHEMES)}")
    return scheme


def dropout_rows(model, step: int | None, row: int):
    """The context in which `model`'s forward draws the dropout masks of batch rows row.. of `step`.

    A no-op for a model without dropout masks, or when step is None (masks from the generator).
    """
    masks = getattr(model, "dropout_masks", None)
    if masks is None or step is None:
        return contextlib.nullcontext()
    return masks.at(step, row)


class Module:
    """Base class: attribute-registered parameters and submodules, in definition order."""

    def __init__(self):
        object.__setattr__(self, "_parameters", OrderedDict())  # name -> Parameter or None
        object.__setattr__(self, "_modules", OrderedDict())     # name -> Module
        object.__setattr__(self, "training", True)

    def __setattr__(self, name: str, value) -> None:
        if "_parameters" not in self.__dict__:
            raise RuntimeError(f"{type(self).__name__}: call super().__init__() before assigning {name!r}")
        self._parameters.pop(name, None)
        self._modules.pop(name, None)
        if isinstance(value, Parameter):
            self._parameters[name] = value
        elif isinstance(value, Module):
            self._modules[name] = value
        object.__setattr__(self, name, value)

    def __delattr__(self, name: str) -> None:
        self._parameters.pop(name, None)
        self._modules.pop(name, None)
        object.__delattr__(self, name)

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    def forward(self, *args, **kwargs):  # pragma: no cover - abstract
        raise NotImplementedError(f"{type(self).__name__} does not define forward()")

    # ---- traversal ---------------------------------------------------------------------
    def named_modules(self, prefix: str = ""):
        """(dotted name, module) for this module (name '') and every submodule, depth first."""
        yield prefix, self
        for name, child in self._modules.items():
            yield from child.named_modules(f"{prefix}.{name}" if prefix else name)

    def children(self):
        return iter(self._modules.values())

    def get_submodule(self, target: str) -> "Module":
        """The submodule at the dotted name `target` ('' is this module): get_submodule("blocks.0.attn")."""
        module = self
        for name in target.split(".") if target else ():
            child = module._modules.get(name)
            if child is None:
                raise AttributeError(f"{type(self).__name__} has no submodule {target!r}: "
                                     f"{type(module).__name__} has no child {name!r}")
            module = child
        return module

    def set_submodule(self, target: str, module: "Module") -> None:
        """Put `module` where the submodule `target` (a dotted name) is, in the same place of the
        registration order, so named_parameters() keeps its order (optimizers and checkpoints follow it)."""
        if not isinstance(module, Module):
            raise TypeError(f"set_submodule({target!r}, ...) needs a Module, got {type(module).__name__}")
        parent_name, _, leaf = target.rpartition(".")
        parent = self.get_submodule(parent_name)
        if leaf not in parent._modules:
            raise AttributeError(f"{type(self).__name__} has no submodule {target!r} to replace")
        parent._modules[leaf] = module
        object.__setattr__(parent, leaf, module)

    def named_parameters(self, prefix: str = ""):
        """(dotted name, Parameter) in definition order; a Parameter shared by two modules
        (tied embeddings) is listed once, under its first name."""
        seen = set()
        for module_name, module in self.named_modules(prefix):
            for name, param in module._parameters.items():
                if id(param) in seen:
                    continue
                seen.add(id(param))
                yield (f"{module_name}.{name}" if module_name else name), param

    def parameters(self) -> list:
        return [p for _, p in self.named_parameters()]

    def num_parameters(self) -> int:
        """The number of learnable scalars (a shared Parameter counts once)."""
        return sum(int(p.size) for p in self.parameters())

    # ---- modes and gradients -----------------------------------------------------------
    def train(self, mode: bool = True) -> "Module":
        for _, module in self.named_modules():
            object.__setattr__(module, "training", bool(mode))
        return self

    def eval(self) -> "Module":
        return self.train(False)

    def zero_grad(self) -> None:
        for p in self.parameters():
            p.grad = None

    # ---- state -------------------------------------------------------------------------
    def state_dict(self) -> "OrderedDict[str, object]":
        """name -> a copy of the parameter's array (NumPy or CuPy, as the model lives)."""
        return OrderedDict((name, p.data.copy()) for name, p in self.named_parameters())

    def load_state_dict(self, state_dict, strict: bool = True) -> tuple:
        """Copy arrays into the parameters of the same names (cast to their dtype and device).

        Shape mismatches are always an error; with strict=True, missing and unexpected names
        are errors too. Returns (missing, unexpected) name lists. The one ValueError names
        the first few of each kind and counts the rest, so it stays one readable line.
        """
        params = dict(self.named_parameters())
        missing = [name for name in params if name not in state_dict]
        unexpected = [name for name in state_dict if name not in params]
        def shape(value) -> tuple:  # of a NumPy or CuPy array, a Tensor, or a nested list
            return tuple(value.shape) if hasattr(value, "shape") else np.shape(value)

        mismatched = [f"{name}: checkpoint {shape(state_dict[name])}, model {tuple(param.shape)}"
                      for name, param in params.items()
                      if name in state_dict and shape(state_dict[name]) != tuple(param.shape)]

        def more(items: list) -> str:  # the count past the first four named
            return f" and {len(items) - 4} more" if len(items) > 4 else ""

        problems = []
        if strict and missing:
            problems.append(f"missing keys: {', '.join(missing[:4])}{more(missing)}")
        if strict and unexpected:
            problems.append(f"unexpected keys: {', '.join(unexpected[:4])}{more(unexpected)}")
        if mismatched:
            problems.append("; ".join(f"shape mismatch for {m}" for m in mismatched[:4]) + more(mismatched))
        if problems:
            raise ValueError(f"load_state_dict into {type(self).__name__} failed: " + "; ".join(problems))
        for name, param in params.items():
            if name in state_dict:
                value = state_dict[name]
                value = value.data if isinstance(value, Tensor) else value
                array = backend.to_numpy(value) if param.device == "cpu" else backend.to_device(value, "cuda")
                param.data = array.astype(param.dtype, copy=True)
                param.grad = None
        return missing, unexpected

    # ---- device and dtype --------------------------------------------------------------
    def to(self, device: str) -> "Module":
        """Move every parameter to `device` ('cpu' or 'cuda') in place; gradients are dropped."""
        backend.check_device(device)
        for p in self.parameters():
            p.data = backend.to_device(p.data, device)
            p.grad = None
        return self

    def astype(self, dtype) -> "Module":
        """Convert every parameter to `dtype` ('float32' or 'float64') in place; gradients are dropped."""
        dtype = check_dtype(dtype)
        for p in self.parameters():
            p.data = p.data.astype(dtype)
            p.grad = None
        return self

    @property
    def dtype(self):
        """The first parameter's dtype (None without parameters); found without listing them all."""
        first = next(self.named_parameters(), None)
        return None if first is None else first[1].dtype

    @property
    def device(self) -> str:
        """The first parameter's device ('cpu' without parameters)."""
        first = next(self.named_parameters(), None)
        return "cpu" if first is None else first[1].device

    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__}({self.extra_repr()}"]
        for name, child in self._modules.items():
            child_lines = repr(child).splitlines()
            lines.append(f"  ({name}): " + child_lines[0])
            lines.extend("  " + line for line in child_lines[1:])
        return lines[0] + ")" if len(lines) == 1 else "\n".join(lines) + "\n)"


def _normal(init_rng: np.random.Generator, shape: tuple, std: float, dtype, device: str) -> Parameter:
    """A Parameter drawn from N(0, std^2) on the CPU (float64), then cast and moved."""
    if not isinstance(init_rng, np.random.Generator):
        raise TypeError(f"init_rng must be a numpy.random.Generator (np.random.default_rng(seed)), "
                        f"got {type(init_rng).__name__}")
    values = init_rng.standard_normal(shape) * std
    return Parameter(backend.to_device(values.astype(check_dtype(dtype)), device))


def _constant(shape: tuple, value: float, dtype, device: str) -> Parameter:
    return Parameter(backend.module_for(device).full(shape, value, dtype=check_dtype(dtype)))


def _check_size(layer: str, **sizes) -> None:
    for name, size in sizes.items():
        if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size <= 0:
            raise ValueError(f"{layer}: {name}={size!r} must be a positive integer")


class Linear(Module):
    """y = x W^T + b with W of shape (out_features, in_features), as PyTorch stores it.

    Initialised W ~ N(0, std^2) (std 0.02, GPT-2's choice, unless given), b = 0.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *,
                 init_rng: np.random.Generator | None = None, std: float = 0.02,
                 dtype="float32", device: str = "cpu"):
        super().__init__()
        _check_size("Linear", in_features=in_features, out_features=out_features)
        init_rng = np.random.default_rng(0) if init_rng is None else init_rng
        self.in_features, self.out_features = int(in_features), int(out_features)
        self.weight = _normal(init_rng, (out_features, in_features), std, dtype, device)
        self.bias = _constant((out_features,), 0.0, dtype, device) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, bias={self.bias is not None}"


class Embedding(Module):
    """Rows of a (num_embeddings, dim) table picked by integer ids; initialised N(0, std^2)."""

    def __init__(self, num_embeddings: int, embedding_dim: int, *, init_rng: np.random.Generator | None = None,
                 std: float = 0.02, dtype="float32", device: str = "cpu"):
        super().__init__()
        _check_size("Embedding", num_embeddings=num_embeddings, embedding_dim=embedding_dim)
        init_rng = np.random.default_rng(0) if init_rng is None else init_rng
        self.num_embeddings, self.embedding_dim = int(num_embeddings), int(embedding_dim)
        self.weight = _normal(init_rng, (num_embeddings, embedding_dim), std, dtype, device)

    def forward(self, idx, check_ids: bool = True) -> Tensor:
        """check_ids=False: the caller checked the ids are in range (F.embedding)."""
        return F.embedding(idx, self.weight, check_ids=check_ids)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}"


class LayerNorm(Module):
    """Layer normalisation over the last axis; weight 1, bias 0 (no bias when bias=False)."""

    def __init__(self, dim: int, eps: float = 1e-5, bias: bool = True, *, dtype="float32", device: str = "cpu"):
        super().__init__()
        _check_size("LayerNorm", dim=dim)
        self.dim, self.eps = int(dim), float(eps)
        self.weight = _constant((dim,), 1.0, dtype, device)
        self.bias = _constant((dim,), 0.0, dtype, device) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        return F.layer_norm(x, self.weight, self.bias, eps=self.eps)

    def extra_repr(self) -> str:
        return f"{self.dim}, eps={self.eps}, bias={self.bias is not None}"


class RMSNorm(Module):
    """Root-mean-square normalisation over the last axis (no centring, no bias); weight 1."""

    def __init__(self, dim: int, eps: float = 1e-6, *, dtype="float32", device: str = "cpu"):
        super().__init__()
        _check_size("RMSNorm", dim=dim)
        self.dim, self.eps = int(dim), float(eps)
        self.weight = _constant((dim,), 1.0, dtype, device)

    def forward(self, x: Tensor) -> Tensor:
        return F.rms_norm(x, self.weight, eps=self.eps)

    def extra_repr(self) -> str:
        return f"{self.dim}, eps={self.eps}"


class Dropout(Module):
    """Inverted dropout with probability p while training; the identity in eval mode.

    Masks come from `masks` (the DropoutMasks the model owns), under a site of this layer's
    own, so runs repeat exactly and any split of a batch draws the same masks.
    """

    def __init__(self, p: float = 0.0, masks: DropoutMasks | None = None):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"Dropout: p={p} must be in [0, 1)")
        self.p = float(p)
        self.masks = masks if masks is not None else DropoutMasks(0)
        self.site = self.masks.new_site()

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        return F.dropout(x, self.p, training=True, generator=self.masks.source(self.site))

    def extra_repr(self) -> str:
        return f"p={self.p}"


class GELU(Module):
    """gelu(x), the tanh approximation (GPT-2's, approximate="tanh") or the exact erf form ("none")."""

    def __init__(self, approximate: str = "tanh"):
        super().__init__()
        if approximate not in ("tanh", "none"):
            raise ValueError(f"GELU: approximate={approximate!r}; use 'tanh' or 'none'")
        self.approximate = approximate

    def forward(self, x: Tensor) -> Tensor:
        return F.gelu(x, approximate=self.approximate)

    def extra_repr(self) -> str:
        return f"approximate={self.approximate!r}"


class SwiGLU(Module):
    """The gate of a SwiGLU MLP: x (..., 2H) holds [gate | up] along its last axis -> silu(gate) * up (..., H).

    The MLP computes gate and up with one projection (rows [gate | up]); this splits and gates them.
    """

    def forward(self, x: Tensor) -> Tensor:
        gate, up = ops.split(x, 2, axis=-1)                           # (..., H) each
        return F.swiglu(gate, up)


class ModuleList(Module):
    """A list of modules registered under their indices: `blocks.0`, `blocks.1`, ..."""

    def __init__(self, modules=()):
        super().__init__()
        for module in modules:
            self.append(module)

    def append(self, module: Module) -> "ModuleList":
        if not isinstance(module, Module):
            raise TypeError(f"ModuleList holds Modules, got {type(module).__name__}")
        setattr(self, str(len(self._modules)), module)
        return self

    def __getitem__(self, index):
        modules = list(self._modules.values())
        if isinstance(index, slice):
            return modules[index]
        return modules[index]

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())


def residual_std(n_layer: int, std: float = 0.02) -> float:
    """GPT-2's std for projections into the residual stream: std / sqrt(2 n_layer).

    Each block adds two such projections to the residual stream, so the variance of the
    stream grows like 2 n_layer; scaling their weights keeps it near the input's.
    """
    return std / math.sqrt(2 * n_layer)
