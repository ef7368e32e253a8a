"""What to finetune and which weights train: FinetuneConfig, freezing, LoRA, the model to train.

    config = FinetuneConfig(task="classify", init_from="runs/demo", data="reviews.csv", lora_rank=8)
    model = prepare_model(gpt, config, num_classes=2, seed=0)     # frozen, adapted, with its head

Freezing (`freeze`): "none", "all" (only the new head, or the adapters, train),
"all-but-last:N" (embeddings and all blocks but the last N frozen), or comma-separated
parameter-name prefixes ("wte,wpe,blocks.0"). LoRA (`lora_rank` > 0, see tinyllm.lora)
freezes the whole base model and trains adapters (and the classification head).
A frozen parameter has requires_grad False: the optimizer is given only the others.

Every FinetuneConfig field carries its description, which `tinyllm finetune --help` shows.

Left out: freezing by regular expression, unfreezing during a run.
"""
from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass

import numpy as np

from autograd import backend
from tinyllm import io, nn
from tinyllm.lora import LoRAConfig, LoRAError, apply_lora, freeze, trainable_parameters
from tinyllm.model import GPT, unknown_fields
from tinyllm.fields import ConfigError, required, setting

from .classifier import POOLINGS, SequenceClassifier
from .data import TEMPLATES

TASKS = ("classify", "instruct")
PATH_SETTINGS = {"init_from": (), "data": (), "tokenizer": (), "template": tuple(TEMPLATES)}  # with non-path values


@dataclass(frozen=True)
class FinetuneConfig:
    """What to finetune on and how; the optimisation settings are a tinyllm.settings.RunSettings."""

    task: str = required(f"what to finetune for: {' or '.join(TASKS)}")
    init_from: str = required("the base model: a `tinyllm train` run or checkpoint directory, or a Hugging Face "
                              "directory (config.json + model.safetensors)")
    data: str = required("classify: .csv/.tsv/.jsonl with text and label; instruct: .json/.jsonl Alpaca records")
    tokenizer: str | None = setting(None, "a tokenizer file (default: the base model's)")
    # classification
    text_field: str = setting("text", "classify: the text column / key")
    label_field: str = setting("label", "classify: the label column / key")
    labels: tuple | None = setting(None, "classify: the allowed labels in class order, comma-separated "
                                         "(default: the sorted labels found)")
    pooling: str = setting("last", f"classify: features from the {' or '.join(POOLINGS)} hidden state(s) "
                                   "(last real token, or mean over the real tokens)")
    val_fraction: float = setting(0.1, "examples held out for validation")
    test_fraction: float = setting(0.1, "examples held out for the final test")
    # instruction following
    template: str = setting("alpaca", f"instruct: prompt template, {', '.join(TEMPLATES)} or a JSON file with "
                                      "with_input and without_input")
    # which weights train
    freeze: str = setting("none", "none, all, all-but-last:N, or parameter-name prefixes such as wte,wpe,blocks.0")
    lora_rank: int = setting(0, "LoRA adapter rank; 0 = no LoRA (full finetuning of what --freeze leaves)")
    lora_alpha: float = setting(16.0, "LoRA scale numerator: updates are scaled by alpha / rank")
    lora_targets: tuple = setting(("attn",), "LoRA on which Linear layers: attn, mlp, head, or layer names "
                                             "(comma-separated)")

    def __post_init__(self):
        if self.task not in TASKS:
            raise ConfigError(f"--task {self.task!r}: use one of {', '.join(TASKS)}")
        if self.pooling not in POOLINGS:
            raise ConfigError(f"--pooling {self.pooling!r}: use one of {', '.join(POOLINGS)}")
        if isinstance(self.lora_rank, bool) or not isinstance(self.lora_rank, int) or self.lora_rank < 0:
            raise ConfigError(f"--lora-rank {self.lora_rank!r}: must be 0 (no LoRA) or a positive integer")
        if not (isinstance(self.lora_alpha, (int, float)) and self.lora_alpha > 0):
            raise ConfigError(f"--lora-alpha {self.lora_alpha!r}: must be positive (often 2 x rank)")
        if self.lora_rank and self.freeze not in ("none", "all"):
            raise ConfigError(f"--freeze {self.freeze!r} with --lora-rank: LoRA freezes the whole base model; "
                              "drop --freeze")
        for name in ("init_from", "data", "text_field", "label_field", "template", "freeze", "tokenizer"):
            value = getattr(self, name)
            if not isinstance(value, str) and not (name == "tokenizer" and value is None):
                raise ConfigError(f"--{name.replace('_', '-')} {value!r}: must be text (a path or a name)")
        for name in ("val_fraction", "test_fraction"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"--{name.replace('_', '-')} {value!r}: must be a number in [0, 1)")
        for name in ("labels", "lora_targets"):
            value = getattr(self, name)
            if value is None and name == "labels":
                continue
            if isinstance(value, str) or not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
                raise ConfigError(f"--{name.replace('_', '-')} {value!r}: must be a comma-separated list of names")
            object.__setattr__(self, name, tuple(value))
        for name, value in self.absolute_paths({name: getattr(self, name) for name in PATH_SETTINGS}).items():
            object.__setattr__(self, name, value)   # stored as used: the run works from any directory

    @classmethod
    def absolute_paths(cls, settings: dict) -> dict:
        """`settings` with every path (PATH_SETTINGS) made absolute, as a FinetuneConfig stores it."""
        return io.absolute_paths(settings, PATH_SETTINGS)

    @property
    def lora(self) -> LoRAConfig | None:
        if not self.lora_rank:
            return None
        return LoRAConfig(rank=self.lora_rank, alpha=self.lora_alpha, targets=self.lora_targets)

    def to_dict(self) -> dict:
        values = dataclasses.asdict(self)
        values["labels"] = list(self.labels) if self.labels is not None else None
        values["lora_targets"] = list(self.lora_targets)
        return values

    @classmethod
    def from_dict(cls, values: dict) -> "FinetuneConfig":
        unknown = unknown_fields(cls, values)
        if unknown:
            raise ConfigError(f"unknown finetune setting(s) {', '.join(unknown)}")
        return cls(**values)


def frozen_names(model: GPT, spec: str) -> list:
    """Names of the GPT's parameters that `spec` freezes (see the module docstring)."""
    names = [name for name, _ in model.named_parameters()]
    spec = (spec or "none").strip()
    if spec == "none":
        return []
    if spec == "all":
        return names
    if spec.startswith("all-but-last:"):
        try:
            keep = int(spec.partition(":")[2])
        except ValueError:
            keep = -1
        n_layer = model.config.n_layer
        if not 0 <= keep <= n_layer:
            raise ConfigError(f"--freeze {spec!r}: N must be an integer from 0 to n_layer={n_layer}")
        trained_blocks = {f"blocks.{i}." for i in range(n_layer - keep, n_layer)}
        trained_tail = ("norm_f.", "lm_head.")
        return [n for n in names if not n.startswith(tuple(trained_blocks) + trained_tail)]
    picked = []
    for prefix in (p.strip() for p in spec.split(",") if p.strip()):
        hits = [n for n in names if n == prefix or n.startswith(prefix + ".")]
        if not hits:
            raise ConfigError(f"--freeze {spec!r}: {prefix!r} names no parameter; use none, all, all-but-last:N "
                              "or name prefixes such as wte,wpe,blocks.0")
        picked.extend(h for h in hits if h not in picked)
    return picked


def prepare_model(gpt: GPT, config: FinetuneConfig, num_classes: int | None = None, seed: int = 0):
    """Freeze, add LoRA adapters and (for classify) the head, in that order: the trainable
    parameters and their initial values follow from the config and seed alone."""
    lora = config.lora
    if lora is not None:
        try:
            apply_lora(gpt, dataclasses.replace(lora, seed=seed))
        except LoRAError as error:
            raise ConfigError(f"--lora-rank {config.lora_rank} --lora-targets {','.join(config.lora_targets)}: "
                              f"{error}") from None
    else:
        freeze(gpt, set(frozen_names(gpt, config.freeze)))
    model = gpt if config.task == "instruct" else SequenceClassifier(gpt, num_classes, config.pooling, seed=seed)
    if not trainable_parameters(model):
        raise ConfigError(f"--freeze {config.freeze!r} leaves nothing to train; freeze less (or use --lora-rank)")
    return model


def frozen_fingerprint(model: nn.Module) -> str:
    """sha256 over the names, shapes, dtypes and bytes of every frozen parameter."""
    digest = hashlib.sha256()
    for name, p in model.named_parameters():
        if not p.requires_grad:
            digest.update(f"{name}{tuple(p.shape)}{p.dtype}".encode())
            digest.update(np.ascontiguousarray(backend.to_numpy(p.data)).data)
    return digest.hexdigest()
