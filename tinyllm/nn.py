"""tinyllm.nn: modules with named parameters, the building blocks of the model.

    lin = Linear(16, 32)
    y = lin(x)                                  # x: Tensor (..., 16) -> (..., 32)
    dict(lin.named_parameters())                # {'weight': Parameter (32, 16), 'bias': Parameter (32,)}
    with build(seed=3, dtype="float64"):        # what layers are built with (a GPT opens one)
        lin, norm = Linear(16, 32), LayerNorm(32)

A `Module` registers every `Parameter` and sub-`Module` assigned to one of its attributes,
in the order they are assigned, so the dotted names (`blocks.0.attn.c_attn.weight`) and the
order of `parameters()` are the same on every run: optimizers, checkpoints and the
pipeline-parallel code rely on that order.

Layers are built from their sizes alone; what they are built with -- the initialisation
generator, the dtype, the device and the dropout masks -- is the build context in force
(`with build(seed, dtype, device):`, which GPT(config, seed, dtype, device) opens), applied
once, as each parameter is made: no constructor threads them, and no parameter is made in
one dtype or place and then copied to another. Outside any context a layer is built with a
fresh default one (seed 0, float32, the CPU). Weights are drawn on the CPU in float64 (the
same seed gives the same weights in float32, float64, on CPU or GPU: float32 weights are the
float64 draws rounded), cast and moved right away. Dropout layers take their masks from the
context's `DropoutMasks` (tinyllm/dropout.py): a pure function of (seed, step, layer, batch
row, position) inside a training step, so any split of the batch draws the same masks.

One forward per module: `forward` on Tensors, through autograd.functional (F), which is
what training and every full forward pass run. Cached decoding (tinyllm/decode.py) runs each
module on raw arrays with `run_on_array(module, x)`: a module that has an `array_forward`
beside its `forward` (every layer here) runs its autograd Function's forward on the arrays,
with nothing recorded (`graph_free`): the same Function, without the Tensor bookkeeping that
costs more than the arithmetic at one position; any other module runs its own `forward` on
a constant Tensor. So a new module needs nothing more to decode correctly, and an
`array_forward` that calls its Function to decode fast.

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
from dataclasses import dataclass

import numpy as np

from autograd import backend, ops
from autograd import functional as F
from autograd.layers.activation import GeluErfFunction, GeluTanhFunction
from autograd.layers.embedding import EmbeddingFunction
from autograd.layers.linear import LinearFunction
from autograd.layers.norm import LayerNormFunction, RMSNormFunction
from autograd.layers.swiglu import SwiGLUFunction
from autograd.tensor import Tensor, no_grad

from .dropout import DropoutMasks

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


# ---- modules on raw arrays (decoding) ---------------------------------------------------------

_NOTHING_NEEDED = (False,) * 8   # needs_input_grad of a decoding op: no input wants a gradient


def graph_free(function_class):
    """A new instance of an autograd Function that records nothing for backward, to call its
    forward on raw arrays: `graph_free(LinearFunction).forward(x, W, b)`. This is
    Function.forward_only in two steps, so the arguments reach forward directly: forward_only's
    *args / **kwargs forwarding costs 1-3 us a call, as much as a NumPy op on one row, and a
    cached step of the baby model makes about 35 such calls."""
    fn = function_class()
    fn.needs_input_grad = _NOTHING_NEEDED
    return fn


def linear_on_array(x, weight, bias=None):
    """LinearFunction's forward on raw arrays: x (..., in) or (in,), weight (out, in) -> (..., out)."""
    if bias is None:
        return graph_free(LinearFunction).forward(x, weight)
    return graph_free(LinearFunction).forward(x, weight, bias)


def array_forward_of(module):
    """The module's `array_forward` when the class that defines its `forward` defines it too (a
    subclass that changed forward but not array_forward would decode with the old formula); else
    None (also for a plain function on Tensors, which a model may hold as an activation)."""
    owner = next((c for c in type(module).__mro__ if "forward" in vars(c)), None)
    return module.array_forward if owner is not None and "array_forward" in vars(owner) else None


def run_on_array(module, x):
    """`module` on the raw array x without a graph: its array_forward (see array_forward_of), or its
    own forward on a constant Tensor."""
    array_forward = array_forward_of(module)
    if array_forward is not None:
        return array_forward(x)
    with no_grad():
        return module(Tensor.constant(x)).data


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


# ---- what layers are built with ---------------------------------------------------------------

@dataclass
class Build:
    """The build context: the initialisation generator, the dtype, the device and the dropout masks."""

    rng: np.random.Generator
    dtype: np.dtype
    device: str
    masks: DropoutMasks

    def normal(self, shape: tuple, std: float) -> Parameter:
        """A Parameter drawn from N(0, std^2) on the CPU in float64, cast to the dtype and moved once."""
        if self.device == "meta":
            return self.constant(shape, 0.0)
        values = self.rng.standard_normal(shape) * std
        return Parameter(backend.to_device(values.astype(self.dtype), self.device))

    def constant(self, shape: tuple, value: float) -> Parameter:
        if self.device == "meta":   # shapes only: one element repeated, no memory, nothing drawn
            return Parameter(np.broadcast_to(np.zeros((), dtype=self.dtype), shape))
        return Parameter(backend.module_for(self.device).full(shape, value, dtype=self.dtype))


_context = threading.local()   # .build: the Build in force in this thread


@contextlib.contextmanager
def build(seed: int = 0, dtype="float32", device: str = "cpu", rng: np.random.Generator | None = None,
          masks: DropoutMasks | None = None):
    """Within the block, layers are built with this generator (default: seeded with `seed`), dtype,
    device and dropout masks (default: DropoutMasks(seed, device)); yields the Build.

    device "meta": shapes only (PyTorch's word for it): every parameter is one zero repeated
    (a read-only broadcast view), nothing is drawn or allocated, so a model of any size can be
    built to count or name its parameters (GPT.count_parameters).
    """
    if rng is not None and not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator (np.random.default_rng(seed)), "
                        f"got {type(rng).__name__}")
    if device != "meta":
        backend.check_device(device)
    made = Build(np.random.default_rng(seed) if rng is None else rng, check_dtype(dtype), device,
                 DropoutMasks(seed, "cpu" if device == "meta" else device) if masks is None else masks)
    previous = getattr(_context, "build", None)
    _context.build = made
    try:
        yield made
    finally:
        _context.build = previous


def current_build() -> Build:
    """The Build in force, or a fresh default one (seed 0, float32, CPU) outside any `build` block."""
    made = getattr(_context, "build", None)
    if made is None:
        made = Build(np.random.default_rng(0), np.dtype("float32"), "cpu", DropoutMasks(0))
    return made


def _check_size(layer: str, **sizes) -> None:
    for name, size in sizes.items():
        if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size <= 0:
            raise ValueError(f"{layer}: {name}={size!r} must be a positive integer")


class Linear(Module):
    """y = x W^T + b with W of shape (out_features, in_features), as PyTorch stores it.

    Initialised W ~ N(0, std^2) (std 0.02, GPT-2's choice, unless given), b = 0.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, std: float = 0.02):
        super().__init__()
        _check_size("Linear", in_features=in_features, out_features=out_features)
        made = current_build()
        self.in_features, self.out_features = int(in_features), int(out_features)
        self.weight = made.normal((out_features, in_features), std)
        self.bias = made.constant((out_features,), 0.0) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight, self.bias)

    def array_forward(self, x):
        return linear_on_array(x, self.weight.data, None if self.bias is None else self.bias.data)

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, bias={self.bias is not None}"


class Embedding(Module):
    """Rows of a (num_embeddings, dim) table picked by integer ids; initialised N(0, std^2)."""

    def __init__(self, num_embeddings: int, embedding_dim: int, std: float = 0.02):
        super().__init__()
        _check_size("Embedding", num_embeddings=num_embeddings, embedding_dim=embedding_dim)
        self.num_embeddings, self.embedding_dim = int(num_embeddings), int(embedding_dim)
        self.weight = current_build().normal((num_embeddings, embedding_dim), std)

    def forward(self, idx, check_ids: bool = True) -> Tensor:
        """check_ids=False: the caller checked the ids are in range (F.embedding)."""
        return F.embedding(idx, self.weight, check_ids=check_ids)

    def array_forward(self, ids):
        return graph_free(EmbeddingFunction).forward(self.weight.data, ids)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}"


class LayerNorm(Module):
    """Layer normalisation over the last axis; weight 1, bias 0 (no bias when bias=False)."""

    def __init__(self, dim: int, eps: float = 1e-5, bias: bool = True):
        super().__init__()
        _check_size("LayerNorm", dim=dim)
        made = current_build()
        self.dim, self.eps = int(dim), float(eps)
        self.weight = made.constant((dim,), 1.0)
        self.bias = made.constant((dim,), 0.0) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        return F.layer_norm(x, self.weight, self.bias, eps=self.eps)

    def array_forward(self, x):
        if self.bias is None:
            return graph_free(LayerNormFunction).forward(x, self.weight.data, eps=self.eps, has_weight=True)
        return graph_free(LayerNormFunction).forward(x, self.weight.data, self.bias.data, eps=self.eps,
                                                     has_weight=True, has_bias=True)

    def extra_repr(self) -> str:
        return f"{self.dim}, eps={self.eps}, bias={self.bias is not None}"


class RMSNorm(Module):
    """Root-mean-square normalisation over the last axis (no centring, no bias); weight 1."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        _check_size("RMSNorm", dim=dim)
        self.dim, self.eps = int(dim), float(eps)
        self.weight = current_build().constant((dim,), 1.0)

    def forward(self, x: Tensor) -> Tensor:
        return F.rms_norm(x, self.weight, eps=self.eps)

    def array_forward(self, x):
        return graph_free(RMSNormFunction).forward(x, self.weight.data, eps=self.eps, has_weight=True)

    def extra_repr(self) -> str:
        return f"{self.dim}, eps={self.eps}"


class Dropout(Module):
    """Inverted dropout with probability p while training; the identity in eval mode.

    Masks come from the build context's DropoutMasks (the model's), under a site of this layer's
    own, so runs repeat exactly and any split of a batch draws the same masks.
    """

    def __init__(self, p: float = 0.0):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"Dropout: p={p} must be in [0, 1)")
        self.p = float(p)
        self.masks = current_build().masks
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

    def array_forward(self, x):
        return graph_free(GeluTanhFunction if self.approximate == "tanh" else GeluErfFunction).forward(x)

    def extra_repr(self) -> str:
        return f"approximate={self.approximate!r}"


class SwiGLU(Module):
    """The gate of a SwiGLU MLP: x (..., 2H) holds [gate | up] along its last axis -> silu(gate) * up (..., H).

    The MLP computes gate and up with one projection (rows [gate | up]); this splits and gates them.
    """

    def forward(self, x: Tensor) -> Tensor:
        gate, up = ops.split(x, 2, axis=-1)                           # (..., H) each
        return F.swiglu(gate, up)

    def array_forward(self, x):
        H = x.shape[-1] // 2
        return graph_free(SwiGLUFunction).forward(x[..., :H], x[..., H:])   # x = [gate | up]


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
        """The module at `index`, or a list of them for a slice (as a list's [])."""
        return list(self._modules.values())[index]

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
