"""Checkpoints: save and load a training run's full state atomically, for an exact resume.

A checkpoint is a directory:

    model.safetensors       parameters by name (host arrays; a tied weight stored once)
    optimizer.safetensors   optimizer buffers by parameter name (`<name>.exp_avg`, ...)
    tokenizer.json          the tokenizer the run was trained with
    state.json              format, step, tokens seen, losses, model and train configs,
                            optimizer scalars, RNG and batch-sampler states, and the
                            size and sha256 of every other file

A run directory keeps its checkpoints under `checkpoints/step-NNNNNNN/` and two
symbolic links, `last` and `best` (lowest validation loss), pointing at them:

    runs/demo/last -> checkpoints/step-0000500
    runs/demo/best -> checkpoints/step-0000400

Saving is atomic at the directory level: files are written into a hidden staging
directory and fsynced, the directory is renamed into `checkpoints/`, and only then is
the `last` (and `best`) link replaced by a new link with `os.replace`, a single atomic
rename. A crash anywhere in between leaves the previous checkpoint whole and `last`
pointing at it; stale staging directories are swept on the next save. Checkpoints no
link points to are deleted after the swap.

A pipelined run (parallel/) saves the same directory with its tensors split by stage:

    model-stage0-of-2.safetensors       stage 0's parameters under their global names
    optimizer-stage0-of-2.safetensors   its optimizer buffers (`<name>.exp_avg`, ...)
    model-stage1-of-2.safetensors ...
    state.json                          as above, plus "pipeline": the manifest

The manifest records the stage count, the partition (block ranges) and, per shard, its
files and parameter names; a tied embedding is stored once, in stage 0's shard. Loading
merges the shards into one name -> array dict, so a checkpoint of any layout loads into
one process, and `restrict` hands a pipeline stage of any other layout its share.

Loading never unpickles: tensors come from safetensors, everything else from JSON, so a
checkpoint from someone else cannot run code. Nothing in it is trusted before it is checked,
and every problem is a CheckpointError naming the file (and the key or tensor):

- state.json is at most 64 MiB and is checked by type, key by key (`check_state`: `step` a
  non-negative integer, every `files` record a `size` and a 64-hex-digit `sha256`, ...);
- a name in `files` is a plain file name inside the checkpoint directory (no `/`, no `..`),
  and the file must be a regular file (not a link, a device or a pipe);
- each file's size is compared with its record *before* it is read, and a tensor file
  larger than the memory this process may still use is refused rather than read;
- then the sha256 is compared, so a truncated or corrupted file is reported by name;
- tensors must be floating point (F16, F32, F64) and finite: weights stored as integers or
  booleans, or holding NaN or infinity, are refused naming the tensor.

Left out: the collective save of a pipelined run (parallel/checkpoint.py writes the shards
with `write_staged_file` and `write_checkpoint_files`), partial loads that read only one
stage's files, keeping the last k checkpoints, cloud storage.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from safetensors.numpy import load as safetensors_load

from tinyllm import io
from tinyllm.errors import UserError
from tinyllm.limits import MAX_METADATA_BYTES, available_memory

FORMAT = "tinyllm-checkpoint"
VERSION = 1
STATE_FILE = "state.json"
MODEL_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.safetensors"
TOKENIZER_FILE = "tokenizer.json"
CHECKPOINTS_DIR = "checkpoints"
LINKS = ("last", "best")
PIPELINE_FORMAT = "tinyllm-pipeline-shards"  # the manifest's "format"


class CheckpointError(UserError):
    """A checkpoint that is missing, truncated, corrupted or does not fit (message names the file)."""


# ---- writing ---------------------------------------------------------------------------


def write_staged_file(path: Path, data: bytes) -> dict:
    """Write and fsync `data` as a file of a staging directory; return its record for state.json.

    No temporary file and no rename of its own: the staging directory is published as a
    whole (`publish_checkpoint`), after state.json, which is written last.
    """
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    return {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def shard_files(stage: int, n_stages: int) -> tuple[str, str]:
    """The (model, optimizer) file names of pipeline stage `stage` of `n_stages`."""
    return f"model-stage{stage}-of-{n_stages}.safetensors", f"optimizer-stage{stage}-of-{n_stages}.safetensors"


def new_staging_dir(run_dir) -> Path:
    """A fresh hidden directory under run_dir/checkpoints/ to write a checkpoint into."""
    root = Path(run_dir) / CHECKPOINTS_DIR
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=root))
    os.chmod(staging, io.default_mode(directory=True))
    return staging


def write_checkpoint_files(directory, tensors: dict, state: dict, tokenizer=None, written: dict | None = None) -> None:
    """Write the tensor files (file name -> {name: array}), the tokenizer and state.json into `directory`.

    state.json goes last and records every file's size and sha256: those written here and
    `written` (file name -> record from `write_staged_file`, e.g. other ranks' shards).
    """
    directory = Path(directory)
    records = dict(written or {})
    for filename, arrays in tensors.items():
        records[filename] = write_staged_file(directory / filename, io.tensor_bytes(arrays))
    if tokenizer is not None:
        records[TOKENIZER_FILE] = write_staged_file(directory / TOKENIZER_FILE, tokenizer.to_text().encode("utf-8"))
    state = {"format": FORMAT, "version": VERSION, **state, "files": records}
    write_staged_file(directory / STATE_FILE, io.json_bytes(state))
    io.fsync_directory(directory)


def publish_checkpoint(run_dir, staging: Path, step: int, links=("last",)) -> Path:
    """Move a fully written staging directory into place and point `links` at it atomically."""
    run_dir = Path(run_dir)
    root = run_dir / CHECKPOINTS_DIR
    name = f"step-{step:07d}"
    final = root / name
    suffix = 1
    while final.exists():  # a second save at the same step (e.g. an interrupt right after an eval)
        final = root / f"{name}-{suffix}"
        suffix += 1
    os.replace(staging, final)
    io.fsync_directory(root)
    for link in links:
        _point_link(run_dir / link, Path(CHECKPOINTS_DIR) / final.name)
    io.fsync_directory(run_dir)
    prune_checkpoints(run_dir)
    return final


def _point_link(link: Path, target: Path) -> None:
    """Make `link` a symlink to `target` (relative), replacing any old one in one rename."""
    tmp = link.with_name(f".{link.name}.tmp-{os.getpid()}")
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    os.symlink(target, tmp)
    os.replace(tmp, link)


def prune_checkpoints(run_dir) -> None:
    """Delete checkpoint directories no link points to, and stale staging directories."""
    run_dir = Path(run_dir)
    keep = set()
    for link in LINKS:
        path = run_dir / link
        if path.is_symlink():
            keep.add(os.path.realpath(path))
    root = run_dir / CHECKPOINTS_DIR
    for child in root.iterdir() if root.is_dir() else ():
        if child.is_dir() and os.path.realpath(child) not in keep:
            shutil.rmtree(child, ignore_errors=True)


def save_checkpoint(run_dir, *, model, optimizer=None, tokenizer=None, state: dict, best: bool = False,
                    fail_after_files: bool = False) -> Path:
    """Save model (+ optimizer, tokenizer, `state`) as `<run_dir>/last` (and `best`).

    `state` is JSON-able: step, tokens seen, losses, configs, RNG states. It must hold
    "step". `fail_after_files` is a test hook: raise after the files are written, before
    anything is published, as a crash mid-save would.
    """
    staging = new_staging_dir(run_dir)
    try:
        tensors = {MODEL_FILE: model.state_dict()}
        if optimizer is not None:
            tensors[OPTIMIZER_FILE] = optimizer.state_arrays()
            state = {**state, "optimizer": optimizer.state_meta()}
        write_checkpoint_files(staging, tensors, state, tokenizer)
        if fail_after_files:
            raise OSError("injected failure after writing the checkpoint files (test hook)")
        return publish_checkpoint(run_dir, staging, int(state["step"]), links=("last", "best") if best else ("last",))
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


# ---- reading ---------------------------------------------------------------------------


def resolve_checkpoint_dir(path) -> Path:
    """A checkpoint directory (holding state.json), or a run directory (-> its `last`)."""
    path = Path(path)
    if (path / STATE_FILE).is_file():
        return path
    if (path / "last" / STATE_FILE).is_file():
        return path / "last"
    if not path.exists():
        raise CheckpointError(f"--ckpt {path}: no such directory; give a run directory written by "
                              "`tinyllm train --out DIR` or one of its checkpoints (DIR/last, DIR/best)")
    raise CheckpointError(f"--ckpt {path}: no checkpoint here (no {STATE_FILE}, no last/{STATE_FILE}); "
                          "give a run directory written by `tinyllm train --out DIR` or DIR/last, DIR/best")


@dataclass(frozen=True)
class Checkpoint:
    """A verified checkpoint read into memory (host arrays)."""

    path: Path
    state: dict
    model_state: dict
    optimizer_state: dict | None

    @property
    def step(self) -> int:
        return int(self.state["step"])

    def tokenizer(self):
        from tinyllm.tokenizer import load_tokenizer  # noqa: PLC0415
        file = self.path / TOKENIZER_FILE
        if not file.is_file():
            raise CheckpointError(f"{file}: the checkpoint has no tokenizer file")
        return load_tokenizer(file)


HASH_CHUNK_BYTES = 1 << 20


def _open_regular(path: Path, record: dict):
    """`path` opened for reading after the checks that need no read: a regular file (not a link,
    device or pipe) of exactly the recorded size."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: file missing from the checkpoint") from None
    if not stat.S_ISREG(info.st_mode):
        raise CheckpointError(f"{path}: not a regular file (a link, a device or a pipe); a checkpoint holds "
                              "plain files")
    if info.st_size != record["size"]:
        raise CheckpointError(f"{path}: truncated or altered: {info.st_size} bytes, state.json says {record['size']}")
    return open(path, "rb")


def _verify_file(path: Path, record: dict) -> None:
    """Size, then sha256 read in chunks: a file checked but not loaded costs no memory."""
    digest = hashlib.sha256()
    with _open_regular(path, record) as f:
        for chunk in iter(lambda: f.read(HASH_CHUNK_BYTES), b""):
            digest.update(chunk)
    if digest.hexdigest() != record["sha256"]:
        raise CheckpointError(f"{path}: corrupted: its sha256 does not match the one in state.json")


def _read_verified(path: Path, record: dict) -> bytes:
    """The bytes of a file to load: size checked before reading (and against the memory left), then sha256."""
    available = available_memory()
    if available is not None and record["size"] > available:
        raise CheckpointError(f"{path}: {record['size']:,} bytes, more than the {available:,} bytes of memory "
                              "available here; load it on a machine with more memory")
    with _open_regular(path, record) as f:
        data = f.read()
    if len(data) != record["size"]:   # it changed while being read
        raise CheckpointError(f"{path}: truncated or altered: {len(data)} bytes, state.json says {record['size']}")
    if hashlib.sha256(data).hexdigest() != record["sha256"]:
        raise CheckpointError(f"{path}: corrupted: its sha256 does not match the one in state.json")
    return data


def read_state(path) -> dict:
    """state.json of the checkpoint at `path` (a checkpoint or run directory), validated (check_state)."""
    file = resolve_checkpoint_dir(path) / STATE_FILE
    try:
        size = os.stat(file).st_size
        if size > MAX_METADATA_BYTES:
            raise CheckpointError(f"{file}: {size:,} bytes, more than a state.json ever holds "
                                  f"({MAX_METADATA_BYTES:,}); the checkpoint is corrupted")
        state = json.loads(file.read_text(encoding="utf-8"))
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


FLOAT_KINDS = ("float16", "float32", "float64")


def load_tensors(path: Path, record: dict) -> dict:
    """name -> array of a verified safetensors file; every tensor floating point and finite."""
    data = _read_verified(path, record)
    try:
        tensors = safetensors_load(data)
    except Exception as error:  # safetensors raises its own error types
        raise CheckpointError(f"{path}: cannot be read as safetensors ({error})") from None
    for name, array in tensors.items():
        if array.dtype.name not in FLOAT_KINDS:
            raise CheckpointError(f"{path}: tensor {name!r} is stored as {array.dtype.name}; checkpoint weights are "
                                  f"floating point ({', '.join(FLOAT_KINDS)}): the file was not written by tinyllm")
        if not np.isfinite(array).all():
            raise CheckpointError(f"{path}: tensor {name!r} holds NaN or infinite values; this checkpoint cannot "
                                  "be used (resume from an earlier one)")
    return tensors


def tensor_files(directory: Path, state: dict) -> tuple[list, list]:
    """(model files, optimizer files) of a checkpoint: one of each, or one per pipeline stage."""
    files = state["files"]
    manifest = state.get("pipeline")
    if manifest is None:
        if MODEL_FILE not in files:
            raise CheckpointError(f"{directory / STATE_FILE}: lists no {MODEL_FILE}")
        return [MODEL_FILE], [OPTIMIZER_FILE] if OPTIMIZER_FILE in files else []
    try:
        model_files = [shard["model"] for shard in manifest["shards"]]
        optimizer_files = [shard["optimizer"] for shard in manifest["shards"] if "optimizer" in shard]
    except (KeyError, TypeError) as error:
        raise CheckpointError(f"{directory / STATE_FILE}: the pipeline manifest is malformed ({error!r})") from None
    for name in model_files + optimizer_files:
        if name not in files:
            raise CheckpointError(f"{directory / STATE_FILE}: shard file {name} is not listed")
    return model_files, optimizer_files


def load_checkpoint(path, with_optimizer: bool = True) -> Checkpoint:
    """Read and verify a checkpoint (sizes, hashes, formats); errors name the file and the problem.

    A checkpoint sharded by pipeline stage comes back merged, one name -> array dict for the
    model and one for the optimizer, exactly as if one process had saved it.
    """
    directory = resolve_checkpoint_dir(path)
    state = read_state(directory)
    files = state["files"]
    model_files, optimizer_files = tensor_files(directory, state)
    for name, record in files.items():  # verify everything up front, even what is not loaded
        if name not in model_files and name not in optimizer_files:
            _verify_file(directory / name, record)
    model_state = {}
    for name in model_files:
        model_state.update(load_tensors(directory / name, files[name]))
    optimizer_state = None
    if with_optimizer and optimizer_files:
        optimizer_state = {}
        for name in optimizer_files:
            optimizer_state.update(load_tensors(directory / name, files[name]))
    return Checkpoint(path=directory, state=state, model_state=model_state, optimizer_state=optimizer_state)


def optimizer_arrays_for(arrays: dict, names) -> dict:
    """The optimizer buffers among `arrays` (`<param>.exp_avg`, ...) that belong to the parameters `names`."""
    names = set(names)
    return {key: array for key, array in arrays.items() if key.rsplit(".", 1)[0] in names}


def restrict(checkpoint: Checkpoint, names) -> Checkpoint:
    """The same checkpoint with only the parameters `names` and their optimizer buffers
    (what one pipeline stage loads, from a checkpoint of any layout)."""
    names = set(names)
    missing = sorted(names - set(checkpoint.model_state))
    if missing:
        raise CheckpointError(f"{checkpoint.path}: has no {', '.join(missing[:4])}; it was saved from "
                              "a different model config")
    model_state = {n: a for n, a in checkpoint.model_state.items() if n in names}
    optimizer_state = None
    if checkpoint.optimizer_state is not None:
        optimizer_state = optimizer_arrays_for(checkpoint.optimizer_state, names)
    return replace(checkpoint, model_state=model_state, optimizer_state=optimizer_state)


def load_model_state(model, checkpoint: Checkpoint) -> None:
    """Copy the checkpoint's weights into `model`; a mismatch names the file and the parameters."""
    where = checkpoint.path / MODEL_FILE if MODEL_FILE in checkpoint.state["files"] else checkpoint.path
    try:
        model.load_state_dict(checkpoint.model_state)
    except ValueError as error:  # Module.load_state_dict names the missing, unexpected and mis-shaped ones
        raise CheckpointError(f"{where}: {error}; the checkpoint was saved with a different model config") from None


def load_optimizer_state(optimizer, checkpoint: Checkpoint) -> None:
    if checkpoint.optimizer_state is None or "optimizer" not in checkpoint.state:
        raise CheckpointError(f"{checkpoint.path}: holds no optimizer state, so it cannot be resumed exactly")
    try:
        optimizer.load_state(checkpoint.optimizer_state, checkpoint.state["optimizer"])
    except (KeyError, TypeError, ValueError) as error:   # the scalars come from state.json
        raise CheckpointError(f"{checkpoint.path / OPTIMIZER_FILE}: the optimizer state is unusable "
                              f"({error!r}); the checkpoint is corrupted or was edited") from None
