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

Loading never unpickles: tensors come from safetensors, everything else from JSON, so a
checkpoint from someone else cannot run code. Each file's size and sha256 are checked
against state.json first, so a truncated or corrupted file is reported by name.

Left out: sharded checkpoints for pipeline stages (parallel/ writes one per stage with
these same functions plus a manifest), keeping the last k checkpoints, cloud storage.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from safetensors.numpy import load as safetensors_load
from safetensors.numpy import save as safetensors_save

from autograd.backend import to_numpy
from tinyllm.tokenizer.base import atomic_write_bytes, default_mode

FORMAT = "tinyllm-checkpoint"
VERSION = 1
STATE_FILE = "state.json"
MODEL_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.safetensors"
TOKENIZER_FILE = "tokenizer.json"
CHECKPOINTS_DIR = "checkpoints"
LINKS = ("last", "best")


class CheckpointError(ValueError):
    """A checkpoint that is missing, truncated, corrupted or does not fit (message names the file)."""


# ---- atomic files -------------------------------------------------------------------------------


def fsync_directory(path) -> None:
    """Make a rename inside `path` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_bytes_atomic(path, data: bytes) -> None:
    """Temp file beside `path`, fsync, rename over it, fsync the folder: readers see old or new, never half."""
    atomic_write_bytes(path, data)
    fsync_directory(Path(path).parent)


def write_json_atomic(path, obj) -> None:
    write_bytes_atomic(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode("utf-8"))


# ---- writing ---------------------------------------------------------------------------


def tensor_bytes(arrays: dict, metadata: dict | None = None) -> bytes:
    """Serialise name -> array (NumPy or CuPy) as safetensors bytes, in sorted name order."""
    host = {name: np.ascontiguousarray(to_numpy(arrays[name])) for name in sorted(arrays)}
    return safetensors_save(host, metadata=metadata)


def _write_file(path: Path, data: bytes) -> dict:
    """Write and fsync `data`; return the record state.json keeps for it."""
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    return {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def new_staging_dir(run_dir) -> Path:
    """A fresh hidden directory under run_dir/checkpoints/ to write a checkpoint into."""
    root = Path(run_dir) / CHECKPOINTS_DIR
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=root))
    os.chmod(staging, default_mode(directory=True))
    return staging


def write_checkpoint_files(directory, tensors: dict, state: dict, tokenizer=None) -> None:
    """Write the tensor files (file name -> {name: array}), the tokenizer and state.json into `directory`.

    state.json goes last and records every other file's size and sha256.
    """
    directory = Path(directory)
    records = {}
    for filename, arrays in tensors.items():
        records[filename] = _write_file(directory / filename, tensor_bytes(arrays))
    if tokenizer is not None:
        records[TOKENIZER_FILE] = _write_file(directory / TOKENIZER_FILE, tokenizer.to_text().encode("utf-8"))
    state = {"format": FORMAT, "version": VERSION, **state, "files": records}
    _write_file(directory / STATE_FILE, (json.dumps(state, indent=2, sort_keys=True) + "\n").encode("utf-8"))
    fsync_directory(directory)


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
    fsync_directory(root)
    for link in links:
        _point_link(run_dir / link, Path(CHECKPOINTS_DIR) / final.name)
    fsync_directory(run_dir)
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


def _read_verified(path: Path, record: dict) -> bytes:
    if not path.is_file():
        raise CheckpointError(f"{path}: file missing from the checkpoint")
    data = path.read_bytes()
    if len(data) != record["size"]:
        raise CheckpointError(f"{path}: truncated or altered: {len(data)} bytes, state.json says {record['size']}")
    if hashlib.sha256(data).hexdigest() != record["sha256"]:
        raise CheckpointError(f"{path}: corrupted: its sha256 does not match the one in state.json")
    return data


def read_state(path) -> dict:
    """state.json of the checkpoint at `path` (a checkpoint or run directory), validated."""
    file = resolve_checkpoint_dir(path) / STATE_FILE
    try:
        state = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{file}: not valid JSON ({error}); the checkpoint is truncated or corrupted") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{file}: not a tinyllm checkpoint (format {state.get('format') if isinstance(state, dict) else None!r})")
    if state.get("version") != VERSION:
        raise CheckpointError(f"{file}: checkpoint version {state.get('version')} is not supported "
                              f"(this tinyllm reads version {VERSION})")
    for key in ("step", "files"):
        if key not in state:
            raise CheckpointError(f"{file}: missing the {key!r} entry")
    return state


def load_tensors(path: Path, record: dict) -> dict:
    data = _read_verified(path, record)
    try:
        return safetensors_load(data)
    except Exception as error:  # safetensors raises its own error types
        raise CheckpointError(f"{path}: cannot be read as safetensors ({error})") from None


def load_checkpoint(path, with_optimizer: bool = True) -> Checkpoint:
    """Read and verify a checkpoint (sizes, hashes, formats); errors name the file and the problem."""
    directory = resolve_checkpoint_dir(path)
    state = read_state(directory)
    if "pipeline" in state:  # sharded by pipeline stage: parallel/ merges the shards
        from parallel.checkpoint import load_any  # noqa: PLC0415
        return load_any(directory, with_optimizer)
    files = state["files"]
    if MODEL_FILE not in files:
        raise CheckpointError(f"{directory / STATE_FILE}: lists no {MODEL_FILE}")
    for name, record in files.items():  # verify everything up front, even what is not loaded
        if name not in (MODEL_FILE, OPTIMIZER_FILE):
            _read_verified(directory / name, record)
    model_state = load_tensors(directory / MODEL_FILE, files[MODEL_FILE])
    optimizer_state = None
    if with_optimizer and OPTIMIZER_FILE in files:
        optimizer_state = load_tensors(directory / OPTIMIZER_FILE, files[OPTIMIZER_FILE])
    return Checkpoint(path=directory, state=state, model_state=model_state, optimizer_state=optimizer_state)


def load_model_state(model, checkpoint: Checkpoint) -> None:
    """Copy the checkpoint's weights into `model`; a mismatch names the file and the parameters."""
    expected = {name: tuple(p.shape) for name, p in model.named_parameters()}
    got = {name: tuple(a.shape) for name, a in checkpoint.model_state.items()}
    missing = sorted(set(expected) - set(got))
    unexpected = sorted(set(got) - set(expected))
    wrong = sorted(n for n in set(expected) & set(got) if expected[n] != got[n])
    if missing or unexpected or wrong:
        details = []
        if missing:
            details.append(f"missing {', '.join(missing[:4])}{' ...' if len(missing) > 4 else ''}")
        if unexpected:
            details.append(f"unexpected {', '.join(unexpected[:4])}{' ...' if len(unexpected) > 4 else ''}")
        for n in wrong[:4]:
            details.append(f"{n} is {got[n]} in the checkpoint but {expected[n]} in the model")
        raise CheckpointError(f"{checkpoint.path / MODEL_FILE}: does not match the model ({'; '.join(details)}); "
                              "the checkpoint was saved with a different model config")
    model.load_state_dict(checkpoint.model_state)


def load_optimizer_state(optimizer, checkpoint: Checkpoint) -> None:
    if checkpoint.optimizer_state is None or "optimizer" not in checkpoint.state:
        raise CheckpointError(f"{checkpoint.path}: holds no optimizer state, so it cannot be resumed exactly")
    try:
        optimizer.load_state(checkpoint.optimizer_state, checkpoint.state["optimizer"])
    except ValueError as error:
        raise CheckpointError(f"{checkpoint.path / OPTIMIZER_FILE}: {error}") from None
