"""A run directory's checkpoints: the `last` and `best` links, publishing, pruning, and reading
one checkpoint while a run may be replacing it.

    runs/demo/checkpoints/step-0000500/     one directory per checkpoint (its files: tinyllm/checkpoint.py)
    runs/demo/last -> checkpoints/step-0000500
    runs/demo/best -> checkpoints/step-0000400

Publishing (`publish`): a fully written staging directory (`new_staging_dir`) is renamed into
checkpoints/, then each link is replaced by a new one in one atomic rename (`point_link`), and
the directories are fsynced: a crash anywhere leaves the previous checkpoint whole and `last`
naming it.

Pruning deletes only what this process unlinked: a checkpoint directory under checkpoints/,
named as `publish` names them (step-NNNNNNN), that one of this process's link swaps stopped
naming, once no link names it. Nothing else is ever deleted: not a checkpoint copied in by hand
(even one linked as `last` to resume from), not one left unlinked by a crash between the rename
and the link swap, not one of a run whose `last` was removed (a new run is refused in such a
directory, `check_new_run`, naming what is there). Staging directories left by a crash
(`.staging-*`, never published) are swept.

Readers: a reader resolves a link once (`follow`) and reads only the directory it found, holding
a shared flock on it (`reading`); pruning takes an exclusive flock without waiting and leaves a
directory that a reader holds for a later save. Where flock is not available (NFS without a lock
manager) a directory can be pruned under a reader: the reader finds it gone (`Pruned`) and
resolves again, once (tinyllm.checkpoint.load_checkpoint).

Left out: keeping the last k checkpoints, pruning what an earlier process unlinked but could not
delete (a reader held it when that process ended: it stays, unlinked, until deleted by hand).
"""
from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import tempfile
from pathlib import Path

from tinyllm import io
from tinyllm.runlock import RunDirectoryError

try:
    import fcntl
except ImportError:   # not POSIX: no reader locks; readers retry instead
    fcntl = None

CHECKPOINTS_DIR = "checkpoints"
LINKS = ("last", "best")
STAGING_PREFIX = ".staging-"
SAVED_NAME = re.compile(r"step-\d{7}(-\d+)?")   # what `publish` names a checkpoint

_unlinked: dict = {}   # real path of a run directory -> {real paths of checkpoints this process unlinked}


class Pruned(Exception):
    """The checkpoint directory being read was deleted (pruned by a run saving a newer one)."""


# ---- writing -------------------------------------------------------------------------------


def new_staging_dir(run_dir) -> Path:
    """A fresh hidden directory under run_dir/checkpoints/ to write a checkpoint into."""
    root = Path(run_dir) / CHECKPOINTS_DIR
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=root))
    os.chmod(staging, io.default_mode(directory=True))
    return staging


def publish(run_dir, staging: Path, step: int, links=("last",)) -> Path:
    """Move a fully written staging directory into place, point `links` at it atomically, prune."""
    run_dir = Path(run_dir)
    root = run_dir / CHECKPOINTS_DIR
    name = f"step-{step:07d}"
    final = root / name
    suffix = 1
    while final.exists():  # a second save at the same step (e.g. an interrupt right after an eval)
        final = root / f"{name}-{suffix}"
        suffix += 1
    before = {link: _target(run_dir, link) for link in links}
    os.replace(staging, final)
    io.fsync_directory(root)
    for link in links:
        point_link(run_dir / link, Path(CHECKPOINTS_DIR) / final.name)
    io.fsync_directory(run_dir)
    named = {_target(run_dir, link) for link in LINKS}
    pending = _unlinked.setdefault(os.path.realpath(run_dir), set())
    pending.update(target for target in before.values()
                   if target is not None and target not in named and SAVED_NAME.fullmatch(os.path.basename(target)))
    prune(run_dir)
    return final


def point_link(link: Path, target: Path) -> None:
    """Make `link` a symlink to `target` (relative), replacing any old one in one rename."""
    tmp = link.with_name(f".{link.name}.tmp-{os.getpid()}")
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    os.symlink(target, tmp)
    os.replace(tmp, link)


def _target(run_dir: Path, link: str) -> str | None:
    """The real path of the checkpoint directory `run_dir/link` names, if it is one of run_dir's own."""
    path = run_dir / link
    if not path.is_symlink():
        return None
    target = os.path.realpath(path)
    inside = os.path.dirname(target) == os.path.realpath(run_dir / CHECKPOINTS_DIR)
    return target if inside and os.path.isdir(target) else None


def prune(run_dir) -> None:
    """Delete the checkpoints this process unlinked that no link names and no reader holds,
    and stale staging directories (see the module docstring)."""
    run_dir = Path(run_dir)
    root = run_dir / CHECKPOINTS_DIR
    for child in root.iterdir() if root.is_dir() else ():
        if child.name.startswith(STAGING_PREFIX) and child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
    pending = _unlinked.get(os.path.realpath(run_dir), set())
    named = {_target(run_dir, link) for link in LINKS}
    for path in sorted(pending):
        if path in named or not os.path.isdir(path) or _remove_unless_read(path):
            pending.discard(path)


def _remove_unless_read(path: str) -> bool:
    """Delete checkpoint directory `path` unless a reader holds it; whether it is gone."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except FileNotFoundError:
        return True
    try:
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False          # a reader holds it: a later save deletes it
            except OSError:
                pass                  # no flock here: readers retry instead
        shutil.rmtree(path, ignore_errors=True)
        return not os.path.exists(path)
    finally:
        os.close(fd)


# ---- reading -------------------------------------------------------------------------------


def follow(path) -> Path:
    """`path` with its last component's symbolic links followed, each read once: the directory it
    names now (runs/demo/last -> runs/demo/checkpoints/step-0000500)."""
    path = Path(path)
    for _ in range(40):
        if not path.is_symlink():
            return path
        target = Path(os.readlink(path))
        path = target if target.is_absolute() else path.parent / target
    raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), str(path))


@contextlib.contextmanager
def reading(directory):
    """Hold checkpoint `directory` against pruning while reading it (a shared flock); Pruned if it
    is gone or being deleted. Best effort where flock is missing (see the module docstring)."""
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except FileNotFoundError:
        raise Pruned(str(directory)) from None
    try:
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                raise Pruned(str(directory)) from None    # a run is deleting it right now
            except OSError:
                pass
        if os.fstat(fd).st_nlink == 0:                    # deleted between the resolve and the lock
            raise Pruned(str(directory))
        yield
    finally:
        os.close(fd)


# ---- what a run directory holds --------------------------------------------------------------


def checkpoint_names(run_dir) -> list:
    """The checkpoint directories under run_dir/checkpoints/, oldest step first (no staging)."""
    root = Path(run_dir) / CHECKPOINTS_DIR
    try:
        return sorted(child.name for child in root.iterdir() if child.is_dir() and not child.name.startswith("."))
    except (FileNotFoundError, NotADirectoryError):
        return []


def without_last(run_dir) -> str | None:
    """What a run left in `run_dir` when its `last` is missing or dangling (its checkpoints and links)
    and how to go on, or None when it holds no trace of a run."""
    run_dir = Path(run_dir)
    names = checkpoint_names(run_dir)
    links = [link for link in LINKS if (run_dir / link).is_symlink()]
    if not names and not links:
        return None
    last = run_dir / "last"
    state = f"its `last` names {os.readlink(last)}, which is gone" if last.is_symlink() else "it has no `last` link"
    if not names:
        return (f"{state}, and it holds no checkpoint (only the link(s) {', '.join(links)}); "
                f"delete {' and '.join(str(run_dir / link) for link in links)} to start a new run there")
    held = ", ".join(names[-3:]) + (f" and {len(names) - 3} older" if len(names) > 3 else "")
    return (f"{state}, but it holds checkpoints ({CHECKPOINTS_DIR}/ {held}); to continue from one: "
            f"ln -sfn {CHECKPOINTS_DIR}/{names[-1]} {last}, then --resume")


def check_new_run(run_dir, flag: str = "--out") -> None:
    """A RunDirectoryError unless `run_dir` is free for a new run: it holds no run (a `last` that
    loads) and no checkpoints or links of one whose `last` is gone (a new run would overwrite its
    metrics and, with them, lose track of its checkpoints)."""
    run_dir = Path(run_dir)
    if (run_dir / "last").is_symlink() and (run_dir / "last").exists():
        raise RunDirectoryError(f"{flag} {run_dir}: already holds a run (checkpoint {run_dir / 'last'}); "
                                f"pass --resume to continue it, or choose a new {flag} directory")
    reason = without_last(run_dir)
    if reason is not None:
        raise RunDirectoryError(f"{flag} {run_dir}: a run was here: {reason}; or choose a new {flag} directory")
