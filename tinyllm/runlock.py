"""One run per run directory: an advisory lock on DIR/.lock, held for the run's life.

    lock = runlock.acquire("runs/demo")    # RunDirectoryError naming the holder (pid, host) if taken
    ...                                    # train
    lock.release()                         # or let go of the object, or end the process

Why: two runs writing one directory corrupt each other (metrics.jsonl interleaved, the
config.json of one run beside the other's checkpoint, one run's staging files swept away
under the other's feet).

How. `DIR/.lock` is opened (created if needed) and locked with
`fcntl.flock(fd, LOCK_EX | LOCK_NB)` on a descriptor that stays open while the run holds
it; the holder then writes one JSON line into the file, `{"pid", "host", "started",
"command"}`, so that a refused run can say who holds the directory. The lock itself is the
kernel's, not the file's content:

- The kernel drops a flock when the last descriptor of its open file closes: when the run
  releases it, ends, crashes or is killed (SIGKILL included). So a lock never outlives its
  process on this host: the next run gets it at once, finds the dead run's line in the file
  (stale information, not a lock) and writes its own over it, saying so ("taking over the
  lock left by pid N on host H"). Releasing empties the file first, so a line in it normally
  means a run that did not end cleanly (or a copied run directory).
- Linux's NFS client implements flock with byte-range locks that the server keeps, so two
  nodes sharing a run directory are kept apart too. A node that dies holding such a lock
  holds it until the server's lease expires (NFSv4: about 90 s).
- The descriptor is close-on-exec (Python's default), so a program the run starts does not
  inherit the lock; a child made by fork() without exec shares it and keeps the directory
  locked while it lives (the refusal then names the run that forked it).
- In one process the lock is re-entrant: `acquire` of a directory this process already holds
  returns another hold on the same lock, released when the last hold is (a test building two
  trainers on one directory one after the other). It does not keep two threads apart.
- Where flock is not available (it fails with ENOLCK or EOPNOTSUPP: NFS without a lock
  manager), the file's line is the lock, best effort: a live process on this host, or any
  process on another host (which cannot be checked from here), refuses the run (the message
  says to delete DIR/.lock if that run is gone); a dead process on this host is taken over.

A pipeline's rank 0 holds the lock for all its ranks (parallel/runner.py); the other ranks
wait for its verdict and all refuse together.

Left out: waiting for the lock (a second run is refused at once), Windows.
"""
from __future__ import annotations

import errno
import json
import os
import socket
import sys
import time
import weakref
from dataclasses import dataclass
from pathlib import Path

from tinyllm.errors import UserError

LOCK_FILE = ".lock"
NO_FLOCK_ERRNOS = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EINVAL)


class RunDirectoryError(UserError):
    """A run directory that cannot be used: another run holds it, or it is not a writable directory."""


@dataclass
class _Held:
    """This process's lock on one run directory."""

    key: str          # the lock file's real path
    fd: int
    holds: int = 0


_held: dict = {}   # lock file real path -> _Held


class RunLock:
    """One hold on a run directory's lock (see the module docstring)."""

    def __init__(self, held: _Held, path: Path, took_over: dict | None):
        self.path = path                  # DIR/.lock
        self.took_over = took_over        # the stale holder's line this acquire replaced, or None
        held.holds += 1
        self._release = weakref.finalize(self, _drop, held.key)

    def release(self) -> None:
        """Let go of this hold (once; the lock goes when the process's last hold does)."""
        self._release()

    @property
    def held(self) -> bool:
        return self._release.alive

    def takeover_message(self) -> str | None:
        """A line for the log when this acquire replaced a stale holder's line, else None."""
        if not self.took_over:
            return None
        return (f"{self.path.parent}: taking over the lock left by pid {self.took_over.get('pid', '?')} on host "
                f"{self.took_over.get('host', '?')} (that run no longer holds it)")

    def __enter__(self) -> "RunLock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def acquire(run_dir, flag: str = "--out") -> RunLock:
    """Hold `run_dir` for this run (created if needed), or a RunDirectoryError naming `flag`.

    The error says why: another run holds it (its pid, host, start time and command), or the
    path cannot be a run directory (a file, under a file, not writable).
    """
    run_dir = Path(run_dir)
    _usable_directory(run_dir, flag)
    path = run_dir / LOCK_FILE
    key = os.path.realpath(path)
    held = _held.get(key)
    took_over = None
    if held is None:
        fd, took_over = _lock(path, run_dir, flag)
        held = _held[key] = _Held(key, fd)
    return RunLock(held, path, took_over)


def holder_line() -> str:
    """What this process writes into a lock it holds."""
    command = " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])[:300] if sys.argv and sys.argv[0] else "python"
    return json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                       "started": time.strftime("%Y-%m-%d %H:%M:%S"), "command": command}) + "\n"


def _usable_directory(run_dir: Path, flag: str) -> None:
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise RunDirectoryError(f"{flag} {run_dir}: {_what_is_there(run_dir)}, not a directory; "
                                f"choose another {flag}") from None
    except NotADirectoryError:
        raise RunDirectoryError(f"{flag} {run_dir}: a part of the path is a file, not a directory; "
                                f"choose another {flag}") from None
    except OSError as error:
        raise RunDirectoryError(f"{flag} {run_dir}: cannot be created ({error.strerror}); "
                                f"choose a location you may write, e.g. under your home directory") from None
    if not os.access(run_dir, os.W_OK | os.X_OK):
        raise RunDirectoryError(f"{flag} {run_dir}: is not writable; fix its permissions or choose another {flag}")


def _what_is_there(path: Path) -> str:
    """What stands at `path` where a directory should: a file, a link to a missing target, a link loop."""
    if not path.is_symlink():
        return "is a file"
    try:
        os.stat(path)
    except OSError as error:
        if error.errno == errno.ELOOP:
            return f"is a symbolic link that loops ({path} -> {os.readlink(path)} -> ...)"
        return f"is a symbolic link to {os.readlink(path)}, which does not exist"
    return f"is a symbolic link to {os.readlink(path)}, a file"


def _lock(path: Path, run_dir: Path, flag: str) -> tuple:
    """(descriptor holding the lock, the stale holder it replaced or None)."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
    except OSError as error:
        raise RunDirectoryError(f"{flag} {run_dir}: cannot open its lock file {path} ({error.strerror}); "
                                f"fix the directory's permissions or choose another {flag}") from None
    try:
        try:
            import fcntl  # noqa: PLC0415 - POSIX only
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunDirectoryError(_busy(run_dir, flag, _wait_for_holder(fd))) from None
        except OSError as error:
            if error.errno not in NO_FLOCK_ERRNOS:
                raise
            previous = _read_holder(fd)
            if previous and (previous.get("host") != socket.gethostname() or _alive(previous.get("pid"))):
                raise RunDirectoryError(_busy(run_dir, flag, previous) + f" (this file system has no flock: "
                                        f"if that run is gone, delete {path})") from None
        previous = _read_holder(fd)   # we hold it: a line here was left by a run that did not release it
        stale = previous if previous and previous.get("pid") != os.getpid() else None
        os.ftruncate(fd, 0)
        os.pwrite(fd, holder_line().encode("utf-8"), 0)
        os.fsync(fd)
        return fd, stale
    except BaseException:
        os.close(fd)
        raise


def _wait_for_holder(fd: int, timeout: float = 2.0) -> dict | None:
    """The holder's line; a holder that got the lock a moment ago may not have written it yet."""
    deadline = time.monotonic() + timeout
    holder = _read_holder(fd)
    while holder is None and time.monotonic() < deadline:
        time.sleep(0.02)
        holder = _read_holder(fd)
    return holder


def _read_holder(fd: int) -> dict | None:
    """The holder's line in the lock file ({} when unreadable, None when empty)."""
    raw = os.pread(fd, 4096, 0)
    if not raw.strip():
        return None
    try:
        holder = json.loads(raw.decode("utf-8").splitlines()[0])
    except (UnicodeDecodeError, json.JSONDecodeError, IndexError):
        return {}
    return holder if isinstance(holder, dict) else {}


def _alive(pid) -> bool:
    """Whether process `pid` runs on this host (True when it cannot be told)."""
    if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:   # EPERM: it exists, owned by someone else
        return True
    return True


def _busy(run_dir: Path, flag: str, holder: dict | None) -> str:
    if holder:
        who = (f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')}, started {holder.get('started', '?')}: "
               f"{holder.get('command', '?')}")
    else:
        who = "a process that has not written its pid yet"
    return (f"{flag} {run_dir}: in use by another run ({who}); wait for it to end or stop it, "
            f"or choose another {flag}")


def _forget_in_child() -> None:
    """After fork: the child closes its copies of the lock descriptors and holds nothing.

    A forked child (a worker process of tinyllm.processes) shares each descriptor's open file,
    so the flock would outlive the parent's release for as long as the child lives. Closing a
    copy never unlocks the parent's hold (flock belongs to the open file, released with its last
    descriptor), and with nothing in `_held` the child can never empty the parent's file.
    """
    for held in _held.values():
        try:
            os.close(held.fd)
        except OSError:
            pass
    _held.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_in_child)


def _drop(key: str) -> None:
    """One hold fewer; the last one empties the file (no stale line), unlocks and closes it."""
    held = _held.get(key)
    if held is None:
        return
    held.holds -= 1
    if held.holds > 0:
        return
    del _held[key]
    try:
        os.ftruncate(held.fd, 0)
    except OSError:
        pass
    os.close(held.fd)   # closing the last descriptor releases the flock
