"""LoRA: low-rank adapters on a model's Linear layers (Hu et al. 2021, "LoRA").

A frozen weight W (out, in) gets a trainable low-rank update, so a layer computes

    y = x W^T + b + (x A^T) B^T * (alpha / r)        A: (r, in), B: (out, r)

    config = LoRAConfig(rank=8, alpha=16, targets=("attn", "mlp"))
    apply_lora(model, config)          # wraps the targeted Linears, freezes every other parameter
    ...train: only lora_A / lora_B (and anything you unfreeze yourself) get gradients...
    save_lora(model, "out/adapter")    # adapter.safetensors + adapter_config.json, a few hundred KB
    merge_lora(model)                  # W <- W + scale B A: inference costs nothing extra
    unmerge_lora(model)                # W <- W - scale B A: back to separate adapters

B starts at zero, so an adapted model computes exactly what the base model computes
(bitwise: the adapter adds +0.0) until the first update; A starts small and random
(N(0, 1/in), seeded) so that gradients reach B. The forward is composed from F.linear,
whose hand-derived backward (docs/derivations/matmul.md) gives the adapter's gradients:

    dB = scale * g^T (x A^T)      dA = scale * (g B)^T x      dx += scale * (g B) A

The wrapped layer keeps the base layer's `weight` and `bias` Parameters under the same
names, so `blocks.0.attn.c_attn.weight` is still that, and the adapters appear beside it
as `blocks.0.attn.c_attn.lora_A` / `.lora_B`: a base checkpoint loads into an adapted
model by name, and adapter files are keyed the same way.

Targets name groups of the model's Linear layers (tinyllm.model's names):
`attn` = attn.c_attn and attn.c_proj (q, k, v fused in c_attn, then the output
projection), `mlp` = mlp.c_fc and mlp.c_proj (gelu fc and projection, or SwiGLU's fused
gate|up and down), `head` = the untied lm_head; a leaf name (`c_attn`, `c_fc`, ...) or
a dotted module name picks layers directly.

Left out: dropout on the adapter input, adapters on embeddings, rank-stabilised or
DoRA variants, several adapters on one model at once.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from autograd import backend
from autograd import functional as F
from autograd.tensor import Tensor, no_grad

from . import io, nn
from .errors import UserError

ADAPTER_FILE = "adapter.safetensors"
ADAPTER_CONFIG_FILE = "adapter_config.json"
ADAPTER_FORMAT = "tinyllm-lora"
ADAPTER_VERSION = 1

# group -> the parent module's name and the Linear names under it
TARGET_GROUPS = {
    "attn": ("attn", ("c_attn", "c_proj")),
    "mlp": ("mlp", ("c_fc", "c_proj")),
    "head": ("", ("lm_head",)),
}


class LoRAError(UserError):
    """A LoRA configuration or adapter file that does not fit the model (message says how)."""


@dataclass(frozen=True)
class LoRAConfig:
    """Which Linear layers get adapters and how big they are."""

    rank: int = 8                          # r: the inner size of the low-rank update B A
    alpha: float = 16.0                    # the update is scaled by alpha / r (LoRA paper's choice)
    targets: tuple = ("attn",)             # groups (attn, mlp, head), leaf names or dotted module names
    seed: int = 0                          # draws the A matrices

    def __post_init__(self):
        if isinstance(self.rank, bool) or not isinstance(self.rank, (int, np.integer)) or self.rank <= 0:
            raise LoRAError(f"LoRA rank={self.rank!r} must be a positive integer (4, 8 or 16 are usual)")
        if not (isinstance(self.alpha, (int, float)) and self.alpha > 0):
            raise LoRAError(f"LoRA alpha={self.alpha!r} must be a positive number (often 2 * rank)")
        targets = (self.targets,) if isinstance(self.targets, str) else tuple(self.targets)
        if not targets or not all(isinstance(t, str) and t for t in targets):
            raise LoRAError(f"LoRA targets={self.targets!r} must be a non-empty list of names, e.g. attn,mlp")
        object.__setattr__(self, "targets", targets)

    @property
    def scale(self) -> float:
        return float(self.alpha) / float(self.rank)

    def to_dict(self) -> dict:
        return {"rank": int(self.rank), "alpha": float(self.alpha), "targets": list(self.targets),
                "seed": int(self.seed)}

    @classmethod
    def from_dict(cls, values: dict) -> "LoRAConfig":
        return cls(rank=int(values["rank"]), alpha=float(values["alpha"]), targets=tuple(values["targets"]),
                   seed=int(values.get("seed", 0)))


def parse_targets(text: str) -> tuple:
    """'attn,mlp' -> ('attn', 'mlp'), for the command line."""
    targets = tuple(t.strip() for t in str(text).split(",") if t.strip())
    if not targets:
        raise LoRAError(f"--lora-targets {text!r} names nothing; use e.g. attn,mlp")
    return targets


# ---- the adapted layer ---------------------------------------------------------------------


def lora_linear(x: Tensor, weight: Tensor, bias: Tensor | None, lora_A: Tensor, lora_B: Tensor,
                scale: float, linear=F.linear) -> Tensor:
    """x W^T + b + (x A^T) B^T * scale, composed from F.linear (its backward gives the gradients).

    x: (..., in), W: (out, in), A: (r, in), B: (out, r) -> (..., out)
    linear(x, weight, bias=None): F.linear on Tensors; decoding (tinyllm/decode.py) passes the
    same LinearFunction's forward on raw arrays, so the adapter's formula is written once.
    """
    base = linear(x, weight, bias)                                        # (..., out)
    low = linear(x, lora_A)                                               # (..., in) @ (in, r) -> (..., r)
    return base + linear(low, lora_B) * scale                             # (..., r) @ (r, out) -> (..., out)


class LoRALinear(nn.Module):
    """A Linear layer with a low-rank adapter; shares `weight` and `bias` with the layer it wraps.

    merged=True means B A * scale has been added into `weight` and forward is the plain layer.
    """

    def __init__(self, base: nn.Linear, rank: int, alpha: float, init_rng: np.random.Generator):
        super().__init__()
        if not isinstance(base, nn.Linear):
            raise LoRAError(f"LoRA wraps nn.Linear layers, got {type(base).__name__}")
        self.in_features, self.out_features = base.in_features, base.out_features
        self.weight = base.weight
        self.bias = base.bias
        self.rank, self.alpha = int(rank), float(alpha)
        self.scale = self.alpha / self.rank
        dtype, device = base.weight.dtype, base.weight.device
        a = init_rng.standard_normal((self.rank, self.in_features)) / np.sqrt(self.in_features)
        self.lora_A = nn.Parameter(backend.to_device(a.astype(dtype), device))          # (r, in)
        xp = backend.module_for(device)
        self.lora_B = nn.Parameter(xp.zeros((self.out_features, self.rank), dtype=dtype))  # (out, r)
        self.merged = False

    def forward(self, x: Tensor) -> Tensor:
        if self.merged:
            return F.linear(x, self.weight, self.bias)
        return lora_linear(x, self.weight, self.bias, self.lora_A, self.lora_B, self.scale)

    def array_forward(self, x):
        """On raw arrays (decoding): the same formula with LinearFunction's forward on arrays."""
        bias = None if self.bias is None else self.bias.data
        if self.merged:
            return nn.linear_on_array(x, self.weight.data, bias)
        return lora_linear(x, self.weight.data, bias, self.lora_A.data, self.lora_B.data, self.scale,
                           linear=nn.linear_on_array)

    def delta_weight(self):
        """scale * B A as an xp array (out, in): what merging adds to the weight."""
        return (self.lora_B.data @ self.lora_A.data) * self.scale      # (out, r) @ (r, in)

    def merge(self) -> None:
        if not self.merged:
            self.weight.data += self.delta_weight()
            self.merged = True

    def unmerge(self) -> None:
        if self.merged:
            self.weight.data -= self.delta_weight()
            self.merged = False

    def to_linear(self) -> nn.Linear:
        """A plain nn.Linear holding this layer's weight (merge first to keep the adapter's effect)."""
        linear = nn.Linear.__new__(nn.Linear)
        nn.Module.__init__(linear)
        linear.in_features, linear.out_features = self.in_features, self.out_features
        linear.weight = self.weight
        linear.bias = self.bias
        return linear

    def extra_repr(self) -> str:
        return (f"{self.in_features}, {self.out_features}, bias={self.bias is not None}, rank={self.rank}, "
                f"alpha={self.alpha}, merged={self.merged}")


# ---- applying to a model -------------------------------------------------------------------


def _matches(name: str, target: str) -> bool:
    parent_name, _, leaf = name.rpartition(".")
    if target in TARGET_GROUPS:
        group_parent, leaves = TARGET_GROUPS[target]
        parent_leaf = parent_name.rpartition(".")[2]
        return leaf in leaves and parent_leaf == group_parent
    return name == target or leaf == target


def target_names(model: nn.Module, targets) -> list:
    """Dotted names of the Linear layers `targets` pick, in the model's order; an error if a target picks none."""
    linears = [name for name, m in model.named_modules() if isinstance(m, (nn.Linear, LoRALinear)) and name]
    picked = []
    for target in targets:
        hits = [name for name in linears if _matches(name, target)]
        if not hits:
            known = ", ".join(sorted(TARGET_GROUPS)) + "; layers: " + ", ".join(sorted({n.rpartition('.')[2] for n in linears}))
            raise LoRAError(f"LoRA target {target!r} matches no Linear layer of this model; use a group ({known})")
        picked.extend(h for h in hits if h not in picked)
    order = {name: i for i, name in enumerate(linears)}
    return sorted(picked, key=order.__getitem__)


def freeze(model: nn.Module, names=None) -> list:
    """Turn off requires_grad for the named parameters (all when names is None); returns the names."""
    frozen = []
    for name, p in model.named_parameters():
        if names is None or name in names:
            p.requires_grad = False
            p.grad = None
            frozen.append(name)
    return frozen


def trainable_parameters(model: nn.Module) -> list:
    """(name, Parameter) pairs that still require gradients, in the model's order."""
    return [(name, p) for name, p in model.named_parameters() if p.requires_grad]


def apply_lora(model: nn.Module, config: LoRAConfig, freeze_base: bool = True) -> list:
    """Wrap the targeted Linear layers of `model` in place; returns their dotted names.

    With freeze_base (the LoRA recipe) every parameter that is not an adapter stops
    requiring gradients; unfreeze a task head afterwards if it should train.
    """
    if lora_layers(model):
        raise LoRAError("the model already has LoRA adapters; merge_lora + remove_lora first, or load into it")
    names = target_names(model, config.targets)
    smallest = min((min(layer.in_features, layer.out_features), name)
                   for name, layer in ((n, model.get_submodule(n)) for n in names))
    if config.rank > smallest[0]:   # B A would have more parameters than the weight it adapts, and no lower rank
        raise LoRAError(f"LoRA rank={config.rank} is larger than {smallest[1]}'s smaller dimension ({smallest[0]}); "
                        f"a low-rank update needs rank <= {smallest[0]} here (4, 8 or 16 are usual)")
    if freeze_base:
        freeze(model)
    init_rng = np.random.default_rng(config.seed)
    for name in names:   # set_submodule keeps each layer's place in the parameter order
        model.set_submodule(name, LoRALinear(model.get_submodule(name), config.rank, config.alpha, init_rng))
    object.__setattr__(model, "lora_config", config)
    return names


def lora_layers(model: nn.Module) -> list:
    """(dotted name, LoRALinear) for every adapted layer, in the model's order."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, LoRALinear)]


def lora_state_dict(model: nn.Module) -> dict:
    """Adapter name -> a copy of its array (`<layer>.lora_A`, `<layer>.lora_B`)."""
    return {name: p.data.copy() for name, p in model.named_parameters() if name.rpartition(".")[2] in ("lora_A", "lora_B")}


def merge_lora(model: nn.Module) -> None:
    """Fold every adapter into its base weight (W += scale B A); forward then skips the adapters."""
    with no_grad():
        for _, layer in lora_layers(model):
            layer.merge()


def unmerge_lora(model: nn.Module) -> None:
    """Take merged adapters back out of the base weights (W -= scale B A)."""
    with no_grad():
        for _, layer in lora_layers(model):
            layer.unmerge()


def remove_lora(model: nn.Module) -> None:
    """Replace every LoRALinear by a plain Linear (merge first to keep what the adapters learned)."""
    for name, layer in lora_layers(model):
        model.set_submodule(name, layer.to_linear())
    if "lora_config" in model.__dict__:
        object.__delattr__(model, "lora_config")


# ---- files ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class AdapterFile:
    """An adapter read from disk: its config, the layer names and the arrays."""

    config: LoRAConfig
    modules: tuple
    arrays: dict = field(repr=False)
    extra: dict = field(default_factory=dict)


def save_lora(model: nn.Module, directory, extra: dict | None = None) -> Path:
    """Write the adapters as DIR/adapter.safetensors + DIR/adapter_config.json (atomically).

    extra: JSON-able facts to keep beside the config (e.g. the base model it was trained on).
    """
    layers = lora_layers(model)
    config = model.__dict__.get("lora_config")
    if not layers or config is None:
        raise LoRAError("save_lora: the model has no LoRA adapters; call apply_lora(model, config) first")
    if any(layer.merged for _, layer in layers):
        raise LoRAError("save_lora: the adapters are merged into the base weights; call unmerge_lora(model) first")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    io.write_tensors(directory / ADAPTER_FILE, lora_state_dict(model))
    io.write_json(directory / ADAPTER_CONFIG_FILE, {
        "format": ADAPTER_FORMAT, "version": ADAPTER_VERSION, **config.to_dict(),
        "modules": [name for name, _ in layers], "extra": extra or {}})
    return directory


def read_lora(directory) -> AdapterFile:
    """Read an adapter directory written by save_lora; errors name the file."""
    from safetensors.numpy import load_file  # noqa: PLC0415 - only needed here
    directory = Path(directory)
    config_path, tensor_path = directory / ADAPTER_CONFIG_FILE, directory / ADAPTER_FILE
    for path in (config_path, tensor_path):
        if not path.is_file():
            raise LoRAError(f"{path}: missing; an adapter directory holds {ADAPTER_CONFIG_FILE} and {ADAPTER_FILE}")
    try:
        meta = json.loads(config_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise LoRAError(f"{config_path}: not valid JSON ({error})") from None
    if not isinstance(meta, dict) or meta.get("format") != ADAPTER_FORMAT:
        raise LoRAError(f"{config_path}: not a tinyllm LoRA adapter config (format should be {ADAPTER_FORMAT!r})")
    try:
        config = LoRAConfig.from_dict(meta)
        arrays = load_file(str(tensor_path))
    except (KeyError, TypeError) as error:
        raise LoRAError(f"{config_path}: incomplete adapter config ({error})") from None
    except Exception as error:  # safetensors raises its own error types
        raise LoRAError(f"{tensor_path}: cannot be read as safetensors ({error})") from None
    return AdapterFile(config=config, modules=tuple(meta.get("modules", ())), arrays=arrays,
                       extra=meta.get("extra", {}))


def load_lora(model: nn.Module, directory) -> LoRAConfig:
    """Apply the adapter config saved in `directory` to `model` and load its arrays."""
    adapter = read_lora(directory)
    names = apply_lora(model, adapter.config)
    if adapter.modules and list(adapter.modules) != names:
        raise LoRAError(f"{Path(directory) / ADAPTER_CONFIG_FILE}: adapters were trained on {list(adapter.modules)[:4]}..., "
                        f"this model's targets give {names[:4]}...; the base model differs")
    params = dict(model.named_parameters())
    expected = lora_state_dict(model)
    missing = sorted(set(expected) - set(adapter.arrays))
    if missing:
        raise LoRAError(f"{Path(directory) / ADAPTER_FILE}: missing adapters {missing[:4]}")
    for name in expected:
        array = adapter.arrays[name]
        if tuple(array.shape) != tuple(params[name].shape):
            raise LoRAError(f"{Path(directory) / ADAPTER_FILE}: {name} has shape {tuple(array.shape)}, "
                            f"the model needs {tuple(params[name].shape)}")
        params[name].data = backend.to_device(array, params[name].device).astype(params[name].dtype)
    return adapter.config
