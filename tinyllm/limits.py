"""Bounds on what a file or a flag may make tinyllm allocate, checked before anything is allocated.

A file someone else wrote decides sizes: a tokenizer file its vocabulary (one line
`50000000 b'zz'` would make a 50-million-row embedding), a checkpoint's state.json the
model's shape, a Hugging Face config.json the same. These bounds turn what would be a
MemoryError or an hour of swapping into one line naming the file and the value:

    MAX_VOCAB                  every token id (a rank, a special token's id) is below 2**24
    MAX_METADATA_BYTES         a JSON metadata file (state.json, config.json, meta.json) is at most 64 MiB
    MAX_TOKENIZER_FILE_BYTES   a tokenizer file is at most 1 GiB
    check_model_fits           a model's weights (times the copies a use needs: 4 to train with AdamW)
                               fit in the memory this process may still use
    check_fits_in_memory       a file read whole (a corpus, finetuning records) fits in it too

    check_model_fits(GPT.count_parameters(config), "float32", copies=1, source="runs/x/last/state.json")

A model's parameter count comes from the model itself, built on the "meta" device (shapes
only, nothing allocated: tinyllm/model.py GPT.count_parameters), not from a table here.

This module imports nothing from tinyllm: the tokenizer, the checkpoint reader and the
commands all use it. Left out: activation memory (it scales with the batch, which the user
chose on the command line) and GPU memory.
"""
from __future__ import annotations

import os
import resource

from tinyllm.errors import UserError

MAX_VOCAB = 2 ** 24                    # token ids are below this (16,777,216): a 16M-row embedding at most
MAX_METADATA_BYTES = 64 << 20          # state.json, config.json, meta.json, adapter configs
MAX_TOKENIZER_FILE_BYTES = 1 << 30     # a tokenizer file (GPT-4's 100k vocabulary is about 2 MB)
TRAINING_COPIES = 4                    # weights, gradients and AdamW's two moments


class LimitError(UserError):
    """A size from a file or flag beyond what tinyllm accepts or this machine can hold (message names it)."""


def check_file_size(path, limit: int, what: str) -> int:
    """`path`'s size in bytes, or a LimitError when it is over `limit` (checked before reading it)."""
    size = os.stat(path).st_size
    if size > limit:
        raise LimitError(f"{path}: {size:,} bytes, more than any {what} has (at most {limit:,}); "
                         "the file is not what it should be")
    return size


def check_fits_in_memory(nbytes: int, factor: int, what: str, fix: str) -> None:
    """A LimitError when reading `nbytes` (taking `factor` times that in memory: text, ids) would not fit
    in available_memory(): `what` names the file or flag, `fix` says what to do."""
    available = available_memory()
    if available is not None and nbytes * factor > available:
        raise LimitError(f"{what}: {nbytes:,} bytes, which needs about {_gib(nbytes * factor)} of memory to read "
                         f"(more than the {_gib(available)} available here); {fix}")




def available_memory() -> int | None:
    """Bytes this process may still allocate: the smaller of the system's available memory and
    what the address-space limit (ulimit -v) leaves; None when neither can be read."""
    bounds = []
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    bounds.append(int(line.split()[1]) * 1024)
                    break
    except (OSError, ValueError):
        pass
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft != resource.RLIM_INFINITY:
        try:
            with open("/proc/self/statm", encoding="ascii") as f:
                used = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError):
            used = 0
        bounds.append(max(0, soft - used))
    return min(bounds) if bounds else None


def check_model_fits(count: int, dtype: str, copies: int, source: str, fix: str = "") -> int:
    """`count` (a model's parameters), or a LimitError when `copies` copies of its weights in `dtype`
    would not fit in available_memory() (source: the file or flag that chose the shape)."""
    itemsize = 8 if str(dtype) == "float64" else 4
    needed = count * itemsize * copies
    available = available_memory()
    if available is not None and needed > available:
        raise LimitError(f"{source}: the model it describes has {count:,} parameters ({_gib(count * itemsize)} in "
                         f"{dtype}; {_gib(needed)} with the {copies} copies this needs), more than the "
                         f"{_gib(available)} of memory available here{'; ' + fix if fix else ''}")
    return count


def _gib(n: int) -> str:
    return f"{n / 2 ** 30:.1f} GiB"
