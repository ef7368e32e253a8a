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
rename (tinyllm/rundir.py, which also prunes: only the checkpoints this process's link
swaps unlinked). A crash anywhere in between leaves the previous checkpoint whole and
`last` pointing at it.

Nothing unusable is published: every tensor is checked before it is written
(`write_tensor_file`), and one holding NaN or infinity stops the save before anything is
published (NonFiniteWeightsError; the Trainer reports it as the run's divergence).

A reader never sees a mix of two checkpoints: `load_checkpoint` resolves `last` once, reads
only the directory it found (the tokenizer too), holding it against pruning, and resolves
again, once, if that directory was pruned all the same (rundir.reading).

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

- state.json is at most 64 MiB and is checked by type, key by key (tinyllm/statefile.py,
  `check_state`: `step` a non-negative integer, every `files` record a `size` and a
  64-hex-digit `sha256`, ...);
- a name in `files` is a plain file name inside the checkpoint directory (no `/`, no `..`),
  and the file must be a regular file (not a link, a device or a pipe);
- each file's size is compared with its record *before* it is read, and a tensor file
  larger than the memory this process may still use is refused rather than read;
- then the sha256 is compared, so a truncated or corrupted file is reported by name;
- tensors must be floating point (F16, F32, F64) and finite: weights stored as integers or
  booleans, or holding NaN or infinity, are refused naming the tensor.

Left out: the collective save of a pipelined run (parallel/checkpoint.py writes the shards
with `write_tensor_file` and `write_checkpoint_files`), partial loads that read only one
stage's files, keeping the last k checkpoints, cloud storage.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import stat
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from safetensors.numpy import load as safetensors_load

from autograd.backend import get_array_module, to_numpy
from tinyllm import io, rundir
from tinyllm.errors import UserError
from tinyllm.limits import available_memory
from tinyllm.rundir import CHECKPOINTS_DIR, LINKS, new_staging_dir  # noqa: F401 - part of this module's surface
from tinyllm.statefile import (FORMAT, STATE_FILE, STATE_KEYS, VERSION, CheckpointError,  # noqa: F401 - ditto
                               check_state, plain_file_name, read_state_file, saved_config)

MODEL_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.safetensors"
TOKENIZER_FILE = "tokenizer.json"
PIPELINE_FORMAT = "tinyllm-pipeline-shards"  # the manifest's "format"


class NonFiniteWeightsError(UserError):
    """A tensor about to be saved holds NaN or infinity: nothing was published (`tensor` names it)."""

    def __init__(self, message: str, tensor: str = ""):
        super().__init__(message)
        self.tensor = tensor

    def __reduce__(self):   # rebuilt whole on the other side of a pipe or an MPI message
        return type(self), (str(self), self.tensor)


def first_nonfinite(arrays: dict) -> str | None:
    """The name of the first tensor of `arrays` (in name order) holding NaN or infinity, else None.

    One sum per tensor (a NaN or an infinity anywhere makes it NaN or infinite), confirmed element
    by element only when it is not finite (a sum of large finite values may overflow). Arrays of
    any device: on a GPU it reads one number per tensor.
    """
    with np.errstate(over="ignore", invalid="ignore"):   # inf - inf is what is looked for here
        for name in sorted(arrays):
            array = arrays[name]
            if array.dtype.kind != "f":
                continue
            xp = get_array_module(array)
            if not np.isfinite(float(xp.sum(array))) and not bool(xp.isfinite(array).all()):
                return name
    return None


# ---- writing ---------------------------------------------------------------------------


def write_staged_file(path: Path, data: bytes) -> dict:
    """Write and fsync `data` as a file of a staging directory; return its record for state.json.

    No temporary file and no rename of its own: the staging directory is published as a
    whole (`publish_checkpoint`), after state.json, which is written last. A failed write
    (a full disk) names the file.
    """
    with io.naming_the_file(path):
        with open(path, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    return {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def write_tensor_file(path: Path, arrays: dict) -> dict:
    """Write name -> array (any device) as a safetensors file of a staging directory; its record.

    The one check before anything is published: a tensor holding NaN or infinity raises
    NonFiniteWeightsError naming it, and nothing is written.
    """
    host = {name: to_numpy(array) for name, array in arrays.items()}
    bad = first_nonfinite(host)
    if bad is not None:
        raise NonFiniteWeightsError(f"{Path(path).name}: tensor {bad!r} holds NaN or infinite values; "
                                    "it was not saved", tensor=bad)
    return write_staged_file(path, io.tensor_bytes(host))


def shard_files(stage: int, n_stages: int) -> tuple[str, str]:
    """The (model, optimizer) file names of pipeline stage `stage` of `n_stages`."""
    return f"model-stage{stage}-of-{n_stages}.safetensors", f"optimizer-stage{stage}-of-{n_stages}.safetensors"


def write_checkpoint_files(directory, tensors: dict, state: dict, tokenizer=None, written: dict | None = None) -> None:
    """Write the tensor files (file name -> {name: array}), the tokenizer and state.json into `directory`.

    state.json goes last and records every file's size and sha256: those written here and
    `written` (file name -> record from `write_staged_file`, e.g. other ranks' shards).
    """
    directory = Path(directory)
    records = dict(written or {})
    for filename, arrays in tensors.items():
        records[filename] = write_tensor_file(directory / filename, arrays)
    if tokenizer is not None:
        records[TOKENIZER_FILE] = write_staged_file(directory / TOKENIZER_FILE, tokenizer.to_text().encode("utf-8"))
    state = {"format": FORMAT, "version": VERSION, **state, "files": records}
    write_staged_file(directory / STATE_FILE, io.json_bytes(state))
    io.fsync_directory(directory)


def publish_checkpoint(run_dir, staging: Path, step: int, links=("last",)) -> Path:
    """Move a fully written staging directory into place and point `links` at it atomically
    (then prune what this process unlinked: tinyllm/rundir.py)."""
    return rundir.publish(run_dir, staging, step, links)


def prune_checkpoints(run_dir) -> None:
    """Delete the checkpoints this process unlinked (no link names them, no reader holds them)."""
    rundir.prune(run_dir)


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


def resolve_checkpoint_dir(path, flag: str = "--ckpt") -> Path:
    """The directory of a checkpoint now: `path` itself when it holds state.json, else its run's
    `last`; links followed once (runs/demo/last -> runs/demo/checkpoints/step-0000500), so that
    everything read afterwards comes from that one directory. Errors name `flag`."""
    path = Path(path)
    for candidate in (path, path / "last"):
        if (candidate / STATE_FILE).is_file():
            return rundir.follow(candidate)
    if not path.exists():
        raise CheckpointError(f"{flag} {path}: no such directory; give a run directory written by "
                              "`tinyllm train --out DIR` or one of its checkpoints (DIR/last, DIR/best)")
    reason = rundir.without_last(path)
    if reason is not None:
        raise CheckpointError(f"{flag} {path}: no checkpoint to read: {reason}")
    raise CheckpointError(f"{flag} {path}: no checkpoint here (no {STATE_FILE}, no last/{STATE_FILE}); "
                          "give a run directory written by `tinyllm train --out DIR` or DIR/last, DIR/best")


def _read_once(path, read, flag: str):
    """read(directory) of the checkpoint `path` names, in one directory held against pruning; when a
    run pruned that directory all the same (rundir.Pruned, or a file gone while `path` came to name
    another checkpoint), resolved again, once."""
    for attempt in (1, 2):
        directory = resolve_checkpoint_dir(path, flag)
        try:
            with rundir.reading(directory):
                return read(directory)
        except rundir.Pruned:
            pass
        except (CheckpointError, FileNotFoundError):
            if not _replaced(path, directory, flag):
                raise               # a real problem of a checkpoint that is still the one `path` names
        if attempt == 2:
            raise CheckpointError(f"{flag} {path}: its checkpoint was replaced and deleted while being read, "
                                  "twice (a run is saving faster than it can be read); try again, or read "
                                  "DIR/best")
    raise AssertionError("unreachable")


def _replaced(path, directory: Path, flag: str) -> bool:
    """Whether checkpoint `directory`, read through `path`, is gone or no longer what `path` names."""
    if not (directory / STATE_FILE).is_file():
        return True
    try:
        return resolve_checkpoint_dir(path, flag) != directory
    except CheckpointError:
        return True


@dataclass(frozen=True)
class Checkpoint:
    """A verified checkpoint read into memory (host arrays)."""

    path: Path                        # the checkpoint's own directory (links resolved)
    state: dict
    model_state: dict
    optimizer_state: dict | None
    loaded_tokenizer: object = None   # read with the rest, from the same directory

    @property
    def step(self) -> int:
        return int(self.state["step"])

    def tokenizer(self):
        if self.loaded_tokenizer is None:
            raise CheckpointError(f"{self.path / TOKENIZER_FILE}: the checkpoint has no tokenizer file")
        return self.loaded_tokenizer


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


def read_state(path, flag: str = "--ckpt") -> dict:
    """state.json of the checkpoint at `path` (a checkpoint or run directory), validated (check_state)."""
    return _read_once(path, lambda directory: read_state_file(directory / STATE_FILE), flag)


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
    bad = first_nonfinite(tensors)
    if bad is not None:
        raise CheckpointError(f"{path}: tensor {bad!r} holds NaN or infinite values; this checkpoint cannot "
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


def load_checkpoint(path, with_optimizer: bool = True, flag: str = "--ckpt") -> Checkpoint:
    """Read and verify a checkpoint (sizes, hashes, formats); errors name the file and the problem.

    Everything comes from one directory (`last` resolved once, held against pruning, resolved
    again once if pruned all the same). A checkpoint sharded by pipeline stage comes back merged,
    one name -> array dict for the model and one for the optimizer, as if one process had saved it.
    """
    return _read_once(path, lambda directory: _load(directory, with_optimizer), flag)


def _load(directory: Path, with_optimizer: bool) -> Checkpoint:
    state = read_state_file(directory / STATE_FILE)
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
    tokenizer = None
    if TOKENIZER_FILE in files:
        from tinyllm.tokenizer import load_tokenizer  # noqa: PLC0415 - the tokenizer package sits beside this one
        tokenizer = load_tokenizer(directory / TOKENIZER_FILE)
    return Checkpoint(path=directory, state=state, model_state=model_state, optimizer_state=optimizer_state,
                      loaded_tokenizer=tokenizer)


def copy_checkpoint(source, destination, flag: str = "--ckpt") -> Path:
    """Copy the checkpoint `source` names into `destination` (a new directory): its weights and
    tokenizer, without the optimizer state, their files hard-linked where one file system holds
    both (no space used), copied otherwise, and a state.json listing only them; read from one
    directory held against pruning, published whole by one rename."""
    destination = Path(destination)

    def copy(directory: Path) -> Path:
        state = read_state_file(directory / STATE_FILE)
        _, optimizer_files = tensor_files(directory, state)
        kept = {key: value for key, value in state.items() if key not in ("optimizer", "files")}
        kept["files"] = {name: record for name, record in state["files"].items() if name not in optimizer_files}
        if "pipeline" in state:
            kept["pipeline"] = {**state["pipeline"], "shards": [{k: v for k, v in shard.items() if k != "optimizer"}
                                                                for shard in state["pipeline"]["shards"]]}
        destination.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{destination.name}.tmp-", dir=destination.parent))
        try:
            for name, record in kept["files"].items():
                _link_or_copy(directory / name, staging / name, record)
            write_staged_file(staging / STATE_FILE, io.json_bytes(kept))
            io.fsync_directory(staging)
            os.replace(staging, destination)
            io.fsync_directory(destination.parent)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return destination
    return _read_once(source, copy, flag)


def _link_or_copy(source: Path, target: Path, record: dict) -> None:
    """`target` the same file as `source` (a hard link), or a copy where a link cannot be made."""
    with _open_regular(source, record):   # a plain file of the recorded size, not a link or a device
        pass
    try:
        os.link(source, target)
    except OSError:                       # another file system, or links to others' files not allowed
        with io.naming_the_file(target):
            shutil.copyfile(source, target)
            with open(target, "rb+") as f:
                os.fsync(f.fileno())


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
