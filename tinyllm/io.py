"""Atomic file writes: a file on disk is the old content or the new, never half of either.

    from tinyllm import io
    io.write_bytes("runs/demo/metrics.jsonl", data)
    io.write_json("runs/demo/config.json", {"train": ...})
    io.write_tensors("out/model.safetensors", {"wte.weight": array})
    with io.AtomicFile("shard.bin") as out:             # for a file written piece by piece
        out.file.write(header); out.file.write(ids)
    f.write(io.json_line(record))                       # a JSON Lines record: NaN and infinity as null
    io.absolute_path("input.txt")                       # -> "/home/me/input.txt", what a run stores

Every writer in tinyllm goes through here, and all give the same guarantees:

1. the data goes to a temporary file in the target's own directory (a rename is only
   atomic within one file system);
2. the temporary file is fsynced, so the bytes are on disk before any name points to it;
3. it is renamed over the target with `os.replace`, one atomic step: a reader, or a
   process started after a crash, sees the old file or the new one;
4. the directory is fsynced, so the rename itself survives a power cut;
5. the file gets the permissions a plain open() would give it under the umask (0644
   under umask 022), not the private 0600 that `tempfile.mkstemp` uses.

A failure at any point (an exception, a full disk) removes the temporary file and leaves
the target as it was, and the error names the file (a full disk's OSError comes without a
file name from write(); `naming_the_file` adds it).

Checkpoints write many files into a staging directory that is then renamed as a whole;
those files need no rename of their own (tinyllm/checkpoint.py, `write_staged_file`).

Left out: locking single files (two writers of one path: the last rename wins; a whole run
directory is kept to one run by tinyllm/runlock.py), Windows (directories cannot be opened
to fsync there; that step is skipped).
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile

import numpy as np
from safetensors.numpy import save as safetensors_save

from autograd.backend import to_numpy


def default_mode(directory: bool = False) -> int:
    """The permissions a plain open() (or mkdir()) would give under the current umask."""
    mask = os.umask(0)  # the only way to read the umask is to set it; put it back at once
    os.umask(mask)
    return (0o777 if directory else 0o666) & ~mask


def fsync_directory(path) -> None:
    """Make a rename inside directory `path` durable (a no-op where directories cannot be opened)."""
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


@contextlib.contextmanager
def naming_the_file(path):
    """An OSError raised inside without a file name (write() on a full disk) gets `path` as its
    file name, so that the one-line error (tinyllm.errors) says which file could not be written."""
    try:
        yield
    except OSError as error:
        if error.filename is not None or error.errno is None:
            raise
        raise OSError(error.errno, error.strerror or os.strerror(error.errno), os.fspath(path)) from None


class AtomicFile:
    """A file that appears under `path` whole, or not at all.

    Write to `.file` (a binary file object), then `commit()` (fsync, rename over `path`,
    fsync the directory) or `abort()` (delete the temporary file). As a context manager
    it commits when the block ends normally and aborts when it raises.
    """

    def __init__(self, path):
        self.path = os.fspath(path)
        folder = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(folder, exist_ok=True)
        descriptor, self.temporary_path = tempfile.mkstemp(
            prefix=os.path.basename(self.path) + ".", suffix=".tmp", dir=folder)
        try:
            os.fchmod(descriptor, default_mode())
            self.file = os.fdopen(descriptor, "wb")
        except BaseException:
            os.close(descriptor)
            os.unlink(self.temporary_path)
            raise

    def commit(self) -> None:
        try:
            with naming_the_file(self.path):
                self.file.flush()
                os.fsync(self.file.fileno())
                self.file.close()
                os.replace(self.temporary_path, self.path)
        except BaseException:
            self.abort()
            raise
        fsync_directory(os.path.dirname(os.path.abspath(self.path)))

    def abort(self) -> None:
        self.file.close()
        if os.path.exists(self.temporary_path):
            os.unlink(self.temporary_path)

    def __enter__(self) -> "AtomicFile":
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()


def write_bytes(path, data: bytes) -> None:
    """Write `data` to `path` atomically (see the module docstring for the guarantees)."""
    with AtomicFile(path) as out, naming_the_file(path):
        out.file.write(data)


def json_bytes(obj) -> bytes:
    """`obj` as tinyllm writes JSON files: indented, keys sorted, a final newline, UTF-8."""
    return (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode("utf-8")


def json_line(record: dict) -> str:
    """`record` as one line of a JSON Lines file, strict JSON: a NaN or infinite number is written
    as null (json.dumps would write NaN, which jq and other strict readers reject)."""
    def finite(value):
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if isinstance(value, dict):
            return {key: finite(item) for key, item in value.items()}
        if isinstance(value, (list, tuple)):
            return [finite(item) for item in value]
        return value
    return json.dumps(finite(record), allow_nan=False) + "\n"


def absolute_path(value, names=()):
    """`value` as a run stores a path it was given: absolute (against the current directory), so
    that the run can be used and resumed from any directory. None and the built-in `names` (not
    paths: "stdlib", "char", ...) are kept as they are; a glob stays a glob."""
    if value is None or value in names or not isinstance(value, str) or value == "":
        return value
    return os.path.abspath(value)


def absolute_paths(values: dict, paths: dict) -> dict:
    """`values` (settings by name) with each one named in `paths` (name -> its values that are not
    paths, e.g. "stdlib") made absolute by absolute_path; the others as they are."""
    return {name: absolute_path(value, paths[name]) if name in paths else value for name, value in values.items()}


def write_json(path, obj) -> None:
    """Write `obj` as a JSON file atomically."""
    write_bytes(path, json_bytes(obj))


def tensor_bytes(arrays: dict, metadata: dict | None = None) -> bytes:
    """name -> array (NumPy or CuPy) as the bytes of a safetensors file, in sorted name order.

    metadata: the file's string -> string header entry (Hugging Face expects {"format": "pt"}).
    """
    host = {name: np.ascontiguousarray(to_numpy(arrays[name])) for name in sorted(arrays)}
    return safetensors_save(host, metadata=metadata)


def write_tensors(path, arrays: dict, metadata: dict | None = None) -> None:
    """Write name -> array as a safetensors file atomically."""
    write_bytes(path, tensor_bytes(arrays, metadata))
