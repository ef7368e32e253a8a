"""Loading models for finetuning: the base model (`init_from`), and finetuned checkpoints.

    gpt, tokenizer = load_base_model("runs/demo")          # or a Hugging Face directory
    finetuned = load_finetuned("runs/clf")                 # the base rebuilt, the trained weights loaded
    probs = classify_texts(finetuned, ["what a great film"])   # (N, K)

A finetuning checkpoint holds only the parameters that train (the adapters and head with
LoRA: a small file), where the base came from and a hash of the frozen weights; loading one
rebuilds the model from `init_from` and checks the hash, so a base that changed since is an
error rather than a silently different model.

Left out: merging a finetune into a standalone checkpoint (tinyllm.lora.merge_lora and
GPT.save_pretrained do it by hand).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from safetensors import SafetensorError

from autograd import backend, no_grad
from autograd import functional as F
from tinyllm import checkpoint as ckpt
from tinyllm import nn, pretrained
from tinyllm.limits import MAX_METADATA_BYTES, check_file_size, check_model_fits
from tinyllm.lora import trainable_parameters
from tinyllm.model import GPT
from tinyllm.fields import ConfigError
from tinyllm.loading import load_gpt
from tinyllm.trainer import TrainedWeights

from .config import FinetuneConfig, frozen_fingerprint, prepare_model
from .data import PromptTemplate, encode_record, load_template, pad_sequences


def load_base_model(init_from, dtype="float32", device: str = "cpu", tokenizer_file: str | None = None):
    """(GPT, tokenizer) from a tinyllm checkpoint / run directory or a Hugging Face directory.

    A Hugging Face GPT-2 directory brings its tokenizer as vocab.json + merges.txt (or
    encoder.json + vocab.bpe); otherwise pass `tokenizer_file`.
    """
    from tinyllm.tokenizer import BPETokenizer, load_tokenizer  # noqa: PLC0415
    path = Path(init_from)
    if not path.exists():
        raise ConfigError(f"--init-from {init_from}: no such directory; give a run directory of `tinyllm train`, "
                          "one of its checkpoints, or a Hugging Face model directory (config.json + model.safetensors)")
    tokenizer = load_tokenizer(tokenizer_file) if tokenizer_file else None
    if (path / ckpt.STATE_FILE).is_file() or (path / "last" / ckpt.STATE_FILE).is_file():
        state = ckpt.read_state(path)
        if "finetune" in state:
            raise ConfigError(f"--init-from {init_from}: is a finetuned checkpoint; finetune from its base model "
                              f"({state['finetune'].get('config', {}).get('init_from')}) instead")
        model, checkpoint = load_gpt(path, device, dtype)
        return model, tokenizer if tokenizer is not None else checkpoint.tokenizer()
    if (path / "config.json").is_file():
        model = load_hugging_face(path, dtype, device)
        if tokenizer is None:
            for encoder, merges in (("vocab.json", "merges.txt"), ("encoder.json", "vocab.bpe")):
                if (path / encoder).is_file() and (path / merges).is_file():
                    tokenizer = BPETokenizer.from_gpt2_files(path / encoder, path / merges)
                    break
        if tokenizer is None:
            raise ConfigError(f"--init-from {init_from}: no tokenizer found (vocab.json + merges.txt); pass --tokenizer FILE")
        return model, tokenizer
    raise ConfigError(f"--init-from {init_from}: neither a tinyllm checkpoint (state.json) nor a Hugging Face "
                      "directory (config.json)")


def load_hugging_face(path: Path, dtype: str, device: str) -> GPT:
    """GPT.from_pretrained(path) with its files checked first: config.json a JSON object of sizes
    that make a model this machine can hold, the weights readable and finite. Every problem is a
    ConfigError naming --init-from and the file."""
    config_file = path / pretrained.CONFIG_FILE
    try:
        check_file_size(config_file, MAX_METADATA_BYTES, "Hugging Face config.json")
        hf = json.loads(config_file.read_text(encoding="utf-8"))
        if not isinstance(hf, dict):
            raise TypeError(f"it holds a {type(hf).__name__}, not an object")
        config = pretrained.config_from_hf(hf)
    except KeyError as error:
        raise ConfigError(f"--init-from {path}: {config_file} lacks the field {error.args[0]!r} that model_type "
                          f"{hf.get('model_type')!r} needs") from None
    except (UnicodeDecodeError, json.JSONDecodeError, TypeError, ValueError, RecursionError) as error:
        raise ConfigError(f"--init-from {path}: {config_file} is not a usable Hugging Face config "
                          f"({type(error).__name__}: {error})") from None
    check_model_fits(GPT.count_parameters(config), dtype, copies=1, source=f"--init-from {path} ({config_file})")
    try:
        model = GPT.from_pretrained(path, dtype=dtype, device=device)
    except (KeyError, TypeError, ValueError, AttributeError, SafetensorError) as error:
        raise ConfigError(f"--init-from {path}: cannot be read as a Hugging Face model "
                          f"({type(error).__name__}: {error})") from None
    for name, parameter in model.named_parameters():
        if not bool(backend.module_for(device).isfinite(parameter.data).all()):
            raise ConfigError(f"--init-from {path}: the weights of {name} hold NaN or infinite values")
    return model


@dataclass
class Finetuned:
    """A finetuned model ready for inference, with what it needs to read its inputs."""

    model: nn.Module              # SequenceClassifier (classify) or GPT (instruct)
    tokenizer: object
    config: FinetuneConfig
    label_names: tuple | None
    template: PromptTemplate | None
    pad_id: int
    checkpoint: ckpt.Checkpoint


def is_finetune_checkpoint(path) -> bool:
    try:
        return "finetune" in ckpt.read_state(path)
    except ckpt.CheckpointError:
        return False


def load_finetuned(path, device: str = "cpu", dtype: str | None = None) -> Finetuned:
    """Rebuild a finetuned model from its checkpoint: the base from init_from, then the trained weights."""
    checkpoint = ckpt.load_checkpoint(path, with_optimizer=False)
    saved = checkpoint.state.get("finetune")
    if saved is None:
        raise ckpt.CheckpointError(f"{checkpoint.path / ckpt.STATE_FILE}: not a finetuning checkpoint "
                                   "(made by `tinyllm train`?); `tinyllm finetune` writes these")
    where = checkpoint.path / ckpt.STATE_FILE
    config = ckpt.saved_config(FinetuneConfig, saved["config"], where)
    try:   # what the checkpoint says about the data: a value of the wrong kind names state.json
        train_config = checkpoint.state.get("train_config", {})
        dtype = dtype or train_config.get("dtype", "float32")
        seed = int(train_config.get("seed", 0))
        label_names = tuple(saved["label_names"]) if config.task == "classify" else None
        template = load_template(saved["template"]) if config.task == "instruct" else None
        pad_id = int(saved["pad_id"])
        if dtype not in ("float32", "float64") or (label_names is not None and len(label_names) < 2):
            raise ValueError(f"dtype {dtype!r}, labels {label_names!r}")
    except (KeyError, TypeError, ValueError) as error:
        raise ckpt.CheckpointError(f"{where}: the finetuning entries are unusable ({error!r}); the checkpoint is "
                                   "corrupted or was edited") from None
    gpt, _ = load_base_model(config.init_from, dtype, device, config.tokenizer)
    if not 0 <= pad_id < gpt.config.vocab_size:
        raise ckpt.CheckpointError(f"{where}: pad_id {pad_id} is outside the vocabulary [0, {gpt.config.vocab_size}); "
                                   "the checkpoint is corrupted or was edited")
    model = prepare_model(gpt, config, len(label_names) if label_names else None, seed=seed)
    if frozen_fingerprint(model) != saved.get("frozen_sha256"):
        raise ckpt.CheckpointError(f"{where}: the base model at {config.init_from} is not "
                                   "the one this checkpoint was finetuned from (its frozen weights differ)")
    ckpt.load_model_state(TrainedWeights(model, trainable_parameters(model)), checkpoint)
    model.eval()
    return Finetuned(model, checkpoint.tokenizer(), config, label_names, template, pad_id, checkpoint)


@no_grad()
def classify_texts(finetuned: Finetuned, texts) -> np.ndarray:
    """Class probabilities (N, K) for each text, with the finetuned classifier."""
    if finetuned.config.task != "classify":
        raise ConfigError(f"{finetuned.checkpoint.path}: finetuned for {finetuned.config.task!r}, not classification")
    block_size = finetuned.model.config.block_size
    sequences = []
    for i, text in enumerate(texts, start=1):
        if not text.strip():
            raise ConfigError(f"text {i} is empty; give the text to classify")
        ids = encode_record(finetuned.tokenizer, text, "input", i)[:block_size]
        sequences.append(ids if ids else [finetuned.pad_id])
    logits, _ = finetuned.model(pad_sequences(sequences, finetuned.pad_id))
    probs = F.softmax(logits, axis=-1).data
    return backend.to_numpy(probs).astype(np.float64)
