"""A checkpoint's state.json: what it may hold, checked key by key before anything else is read.

    state = read_state_file(Path("runs/demo/checkpoints/step-0000500/state.json"))   # or a CheckpointError
    check_state(state, file)              # the same checks on a dict already read
    saved_config(RunSettings, state["train_config"], file)   # settings from the file, its errors its own

state.json is at most 64 MiB (MAX_METADATA_BYTES) and valid JSON; then `check_state` checks it
by type, key by key (STATE_KEYS: `step` a non-negative integer, every `files` record a `size`
and a 64-hex-digit `sha256`, a name in `files` a plain file name inside the checkpoint
directory, the pipeline manifest's shards, ...): a value of the wrong kind is named with its
key, never met later as a crash deep in NumPy. tinyllm/checkpoint.py reads and writes the rest.

Left out: schema versions beyond VERSION (an older or newer format is refused, named).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from tinyllm.errors import UserError
from tinyllm.limits import MAX_METADATA_BYTES

FORMAT = "tinyllm-checkpoint"
VERSION = 1
STATE_FILE = "state.json"


class CheckpointError(UserError):
    """A checkpoint that is missing, truncated, corrupted or does not fit (message names the file)."""


def read_state_file(file: Path) -> dict:
    """state.json at `file`, read and checked (check_state); FileNotFoundError when it is gone (a
    checkpoint pruned under its reader: tinyllm/checkpoint.py resolves `last` again)."""
    try:
        size = os.stat(file).st_size
        if size > MAX_METADATA_BYTES:
            raise CheckpointError(f"{file}: {size:,} bytes, more than a state.json ever holds "
                                  f"({MAX_METADATA_BYTES:,}); the checkpoint is corrupted")
        state = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
        raise CheckpointError(f"{file}: not valid JSON ({error}); the checkpoint is truncated or corrupted") from None
    check_state(state, file)
    return state


# ---- what state.json may hold ----------------------------------------------------------------


def _integer(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _natural(v) -> bool:
    return _integer(v) and v >= 0


def _optional(check):
    return lambda v: v is None or check(v)


def _sha256(v) -> bool:
    return isinstance(v, str) and len(v) == 64 and all(c in "0123456789abcdef" for c in v)


def plain_file_name(name) -> bool:
    """A name of a file directly inside the checkpoint directory: no separators, not . or .., no NUL."""
    return (isinstance(name, str) and name not in ("", ".", "..") and "/" not in name and "\\" not in name
            and "\0" not in name and len(name) <= 255)


# key -> (check, what it must be); keys a checkpoint may lack are optional
STATE_KEYS = {
    "step": (_natural, "a non-negative integer"),
    "files": (lambda v: isinstance(v, dict) and bool(v), "an object of file records"),
    "tokens_seen": (_natural, "a non-negative integer"),
    "elapsed_s": (lambda v: _number(v) and v >= 0, "a non-negative number"),
    "best_val_loss": (_optional(_number), "a number or null"),
    "train_loss": (_optional(_number), "a number or null"),
    "val_loss": (_optional(_number), "a number or null"),
    "num_parameters": (_optional(_natural), "a non-negative integer or null"),
    "model_config": (lambda v: isinstance(v, dict), "an object"),
    "train_config": (lambda v: isinstance(v, dict), "an object"),
    "optimizer": (lambda v: isinstance(v, dict), "an object"),
    "rng": (lambda v: isinstance(v, dict) and isinstance(v.get("train_sampler"), dict)
            and (v.get("dropout") in (None, "keyed") or isinstance(v.get("dropout"), dict)),
            'an object with train_sampler (an object) and dropout ("keyed", an object or null)'),
    "pipeline": (lambda v: isinstance(v, dict), "an object (the pipeline manifest)"),
    "finetune": (lambda v: isinstance(v, dict) and isinstance(v.get("config"), dict)
                 and isinstance(v.get("frozen_sha256", ""), str) and _integer(v.get("pad_id", 0)),
                 "an object with config (an object), frozen_sha256 and pad_id"),
}
REQUIRED_KEYS = ("step", "files")


def check_state(state, file) -> None:
    """A CheckpointError naming `file` and the key unless `state` has the types a checkpoint writes."""
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{file}: not a tinyllm checkpoint "
                              f"(format {state.get('format') if isinstance(state, dict) else None!r})")
    if state.get("version") != VERSION:
        raise CheckpointError(f"{file}: checkpoint version {state.get('version')!r} is not supported "
                              f"(this tinyllm reads version {VERSION})")
    for key in REQUIRED_KEYS:
        if key not in state:
            raise CheckpointError(f"{file}: missing the {key!r} entry")
    for key, (check, what) in STATE_KEYS.items():
        if key in state and not check(state[key]):
            raise CheckpointError(f"{file}: {key!r} is {_shown(state[key])}, not {what}; the checkpoint is "
                                  "corrupted or was edited")
    for name, record in state["files"].items():
        if not plain_file_name(name):
            raise CheckpointError(f"{file}: file name {_shown(name)} is not a plain file name inside the checkpoint "
                                  "directory; the checkpoint is corrupted or was crafted")
        if not (isinstance(record, dict) and _natural(record.get("size")) and _sha256(record.get("sha256"))):
            raise CheckpointError(f"{file}: the record of {name} is {_shown(record)}, not "
                                  '{"size": bytes, "sha256": 64 hex digits}; the checkpoint is corrupted or was edited')
    if "pipeline" in state:
        _check_manifest(state["pipeline"], file)
    label_names = state.get("finetune", {}).get("label_names")
    if label_names is not None and not (isinstance(label_names, list) and all(isinstance(n, str) for n in label_names)):
        raise CheckpointError(f"{file}: finetune.label_names is {_shown(label_names)}, not a list of strings")


def _check_manifest(manifest: dict, file) -> None:
    shards = manifest.get("shards")
    ok = _integer(manifest.get("n_stages")) and isinstance(shards, list) and len(shards) == manifest["n_stages"] > 0
    for shard in shards if ok else ():
        ok = ok and isinstance(shard, dict) and isinstance(shard.get("model"), str) \
            and isinstance(shard.get("optimizer", ""), str) and isinstance(shard.get("parameters", []), list) \
            and all(isinstance(n, str) for n in shard.get("parameters", []))
    if not ok:
        raise CheckpointError(f"{file}: the pipeline manifest is malformed ({_shown(manifest)}); the checkpoint is "
                              "corrupted or was edited")


def saved_config(config_class, values: dict, where):
    """config_class.from_dict(values) for settings read from a checkpoint (`where`: its state.json):
    a value of the wrong kind is the file's fault, a CheckpointError naming it, not a flag's."""
    try:
        return config_class.from_dict(values)
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"{where}: the saved settings are unusable ({error}); the checkpoint is "
                              "corrupted or was edited") from None


def _shown(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
