"""Is the run directory one directory for every rank? Checked once, before the first step.

    refusal = unshared_refusal(world, "runs/pp")    # collective; None, or the one line to refuse with

Every stage writes its shard of a checkpoint into `--out` and rank 0 publishes the whole, so
`--out` must be one shared filesystem (NFS, Lustre, ...) mounted at the same path on every
node. If it is not, each node silently writes its own half of every checkpoint, and nothing
can resume. So rank 0 writes a small file with a random token there (atomically,
tinyllm.io), every rank looks for it, and the answers are gathered: a rank that cannot read
that token, after up to SETTLE_S seconds (a network filesystem's attribute cache), is named
with its host in the refusal, which the runner turns into one line and exit status 2 on every
rank. Rank 0 removes the file again.

Left out: checking that the filesystem is coherent for the shards' contents (the checkpoint's
sha256 records catch a torn file at load time), free space on each node.
"""
from __future__ import annotations

import secrets
import socket
import time
from pathlib import Path

from tinyllm import io

SETTLE_S = 5.0      # how long a rank that does not see the file yet keeps looking
PROBE_PREFIX = ".tinyllm-shared-"


def unshared_refusal(world, directory) -> str | None:
    """Collective over `world`: None if every rank sees what rank 0 wrote in `directory`, else the line."""
    directory = Path(directory)
    probe, token, error = None, None, None
    if world.Get_rank() == 0:
        token = secrets.token_hex(16)
        probe = directory / f"{PROBE_PREFIX}{token[:8]}"
        try:
            directory.mkdir(parents=True, exist_ok=True)
            io.write_bytes(probe, token.encode())
        except OSError as exc:
            error = f"--out {directory}: rank 0 cannot write there ({exc.strerror or exc})"
    probe, token, error = world.bcast((str(probe) if probe else None, token, error), root=0)
    if error is None:
        seen = sees(Path(probe), token)
    else:
        seen = False
    answers = world.allgather((seen, socket.gethostname()))
    if world.Get_rank() == 0 and probe is not None:
        Path(probe).unlink(missing_ok=True)
    if error is not None:
        return error
    blind = [f"rank {rank} on {host}" for rank, (ok, host) in enumerate(answers) if not ok]
    if not blind:
        return None
    return (f"--out {directory} is not one directory for every rank: {', '.join(blind)} cannot see the file rank 0 "
            f"on {answers[0][1]} wrote there; put --out on a filesystem every node mounts at the same path (NFS, "
            "Lustre, ...): every stage writes its shard of each checkpoint there")


def sees(path: Path, token: str, settle: float = SETTLE_S) -> bool:
    """Whether `path` holds `token`, looking again for up to `settle` seconds."""
    deadline = time.monotonic() + settle
    while True:
        try:
            if path.read_text() == token:
                return True
        except OSError:
            pass
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.25)
