"""Loading models for finetuning: the base model (`init_from`), and finetuned checkpoints.

    gpt, tokenizer = load_base_model("runs/demo")          # or a Hugging Face directory
    finetuned = load_finetuned("runs/clf")                 # the base rebuilt, the trained weights loaded
    probs = classify_texts(finetuned, ["what a great film"])   # (N, K)

A finetuning checkpoint holds only the parameters that train (the adapters and head with
LoRA: a small file), where the base came from (`init_from`, an absolute path) and a hash of the
frozen weights; loading one rebuilds the model from the base and checks the hash, so a base
that changed since is an error rather than a silently different model.

The base, when it is a tinyllm checkpoint, is kept by content: a finetune copies it into its own
run directory once (`keep_base`: DIR/base, its weights and tokenizer, hard-linked where one file
system holds both, so at no cost in space), and builds on that copy from then on. The base run
may go on training, be pruned or be deleted: `init_from` naming `runs/demo` (its `last`, which
moves) no longer strands the finetune. A Hugging Face directory is read where it is.

Left out: merging a finetune into a standalone checkpoint (tinyllm.lora.merge_lora and
GPT.save_pretrained do it by hand).
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from safetensors import SafetensorError

from autograd import backend, no_grad
from autograd import functional as F
from tinyllm import checkpoint as ckpt
from tinyllm import nn, pretrained
from tinyllm.limits import MAX_METADATA_BYTES, check_file_size, check_model_fits
from tinyllm.lora import merge_lora, trainable_parameters
from tinyllm.model import GPT
from tinyllm.fields import ConfigError
from tinyllm.loading import load_gpt
from tinyllm.trainer import TrainedWeights

from .config import FinetuneConfig, frozen_fingerprint, prepare_model
from .data import PromptTemplate, encode_record, load_template, pad_sequences


BASE_DIR = "base"   # a finetune run's copy of its base checkpoint


def is_checkpoint_dir(path) -> bool:
    """A tinyllm checkpoint directory, or a run directory with a `last` (not a Hugging Face directory)."""
    path = Path(path)
    return (path / ckpt.STATE_FILE).is_file() or (path / "last" / ckpt.STATE_FILE).is_file()


def keep_base(init_from, run_dir, new_run: bool = True) -> Path:
    """Where the finetune in `run_dir` reads its base model from: its copy DIR/base of a tinyllm
    checkpoint (made now when missing; a new run replaces one left by an earlier start that saved
    no checkpoint), or `init_from` itself (a Hugging Face directory, or a path that is not there:
    load_base_model says so)."""
    target = Path(run_dir) / BASE_DIR
    if target.is_dir() and not new_run:
        return target
    if not is_checkpoint_dir(init_from):
        return Path(init_from)
    state = ckpt.read_state(init_from, flag="--init-from")
    refuse_finetuned(init_from, state)
    if target.is_dir():   # a new run: what an earlier start of this --out copied (check_new_run: no checkpoint since)
        old = target.with_name(f".{BASE_DIR}.old-{os.getpid()}")
        os.replace(target, old)
        shutil.rmtree(old, ignore_errors=True)
    return ckpt.copy_checkpoint(init_from, target, flag="--init-from")


def refuse_finetuned(init_from, state: dict) -> None:
    if "finetune" in state:
        raise ConfigError(f"--init-from {init_from}: is a finetuned checkpoint; finetune from its base model "
                          f"({state['finetune'].get('config', {}).get('init_from')}) instead")


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
    if is_checkpoint_dir(path):
        checkpoint = ckpt.load_checkpoint(path, with_optimizer=False, flag="--init-from")   # read once
        refuse_finetuned(init_from, checkpoint.state)
        model, checkpoint = load_gpt(checkpoint, device, dtype)
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
    """Whether `path` (a checkpoint or run directory, or a Checkpoint read) is a finetune's."""
    if isinstance(path, ckpt.Checkpoint):
        return "finetune" in path.state
    try:
        return "finetune" in ckpt.read_state(path)
    except ckpt.CheckpointError:
        return False


def base_of(checkpoint: ckpt.Checkpoint, config: FinetuneConfig) -> Path:
    """Where a finetune checkpoint's base model is: its run's copy (DIR/base), else init_from; a
    CheckpointError naming state.json when neither is there."""
    directory = checkpoint.path
    if directory.parent.name == ckpt.CHECKPOINTS_DIR and (directory.parent.parent / BASE_DIR).is_dir():
        return directory.parent.parent / BASE_DIR
    if Path(config.init_from).exists():
        return Path(config.init_from)
    raise ckpt.CheckpointError(f"{checkpoint.path / ckpt.STATE_FILE}: its base model {config.init_from} is not there, "
                               f"and its run holds no copy of it ({BASE_DIR}/, which finetunes keep since); put the "
                               "base model back there, or resume the finetune with --init-from where it is now")


def load_finetuned(path, device: str = "cpu", dtype: str | None = None, merged: bool = False) -> Finetuned:
    """Rebuild a finetuned model from its checkpoint (a path, or a Checkpoint read): the base model
    (its run's copy, else init_from), then the trained weights. merged: LoRA adapters folded into
    their weights (inference at the plain layers' speed; tinyllm.lora.merge_lora)."""
    checkpoint = path if isinstance(path, ckpt.Checkpoint) else ckpt.load_checkpoint(path, with_optimizer=False)
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
    base = base_of(checkpoint, config)
    gpt, _ = load_base_model(base, dtype, device, config.tokenizer)
    if not 0 <= pad_id < gpt.config.vocab_size:
        raise ckpt.CheckpointError(f"{where}: pad_id {pad_id} is outside the vocabulary [0, {gpt.config.vocab_size}); "
                                   "the checkpoint is corrupted or was edited")
    model = prepare_model(gpt, config, len(label_names) if label_names else None, seed=seed)
    if frozen_fingerprint(model) != saved.get("frozen_sha256"):
        raise ckpt.CheckpointError(f"{where}: the base model at {base} is not "
                                   "the one this checkpoint was finetuned from (its frozen weights differ)")
    ckpt.load_model_state(TrainedWeights(model, trainable_parameters(model)), checkpoint)
    if merged:
        merge_lora(model)
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
