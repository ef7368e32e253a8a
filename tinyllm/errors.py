"""The one error policy: what a user (or the machine) can fix is one line and exit status 2.

    raise UserError("--lr -1: must be positive (e.g. 1e-3)")     # or any subclass of it
    status, line = describe(error)                              # (2, "--lr -1: ...")

`UserError` is the base of every error that names something the user gave (a flag, a file,
a checkpoint, a run directory) and says how to fix it; each module raises its own subclass
(ConfigError, DataError, CheckpointError, ...). `describe(error)` is the rule both the
command line (tinyllm/cli.py) and the pipeline runner (parallel/runner.py) apply:

- a UserError: its message, status 2;
- an OSError of the machine (a full disk, a read-only directory, a file where a directory
  is needed: ENVIRONMENT_ERRNOS): the file, the system's words and a hint, status 2;
- anything else is a bug in tinyllm: None (the caller says so, status 1).

Left out: error codes for programs to parse (the status and the line are the interface).
"""
from __future__ import annotations

import errno
import os


class UserError(ValueError):
    """Something the user gave is wrong and they can fix it: printed as one line, exit status 2.

    `quiet=True`: exit 2 without printing (e.g. the other copies of a command mpiexec started,
    whose rank 0 prints the line).
    """

    def __init__(self, message: str = "", quiet: bool = False):
        super().__init__(message)
        self.quiet = quiet


# OSErrors that describe the machine, not a bug: a full disk, a path that is not writable or
# not what it should be. Hints say what to do; files are written atomically (tinyllm.io), so
# whatever was there before the failed write is still whole.
ENVIRONMENT_ERRNOS = {
    errno.ENOSPC: "the disk is full: free some space and run the command again (with --resume for a run; "
                  "the previous checkpoint is whole)",
    errno.EDQUOT: "the disk quota is used up: free some space and run the command again",
    errno.EACCES: "permission denied: choose a location you may write (or read), or fix its permissions",
    errno.EPERM: "operation not permitted: choose a location you may write (or read)",
    errno.EROFS: "the file system is read-only: choose a writable location",
    errno.ENOENT: "no such file or directory",
    errno.ENOTDIR: "a file stands where a directory is needed: choose another path",
    errno.EISDIR: "a directory stands where a file is needed: choose another path",
    errno.EEXIST: "a file already exists there: choose another path",
    errno.ENAMETOOLONG: "the name is too long: choose a shorter path",
    errno.ELOOP: "too many symbolic links: check the path",
    errno.EIO: "an input/output error of the device: check the disk",
    errno.EFBIG: "the file is too large for this file system or for the process's file-size limit",
    errno.EMFILE: "too many open files: raise the limit (ulimit -n)",
}


def environment_error(error: OSError) -> str | None:
    """The one line for an OSError the user can fix (ENVIRONMENT_ERRNOS), else None (a bug)."""
    if isinstance(error, FileNotFoundError) and error.errno is None:   # raised by tinyllm with its own message
        return str(error)
    hint = ENVIRONMENT_ERRNOS.get(error.errno)
    if hint is None:
        return None
    where = f"{error.filename}: " if error.filename is not None else ""
    if error.errno == errno.ENOENT:
        return f"{where}{hint}"
    return f"{where}{error.strerror or os.strerror(error.errno)}; {hint}"


def one_line(text: str) -> str:
    """`text` on one line: a message that quotes a file's content may hold line breaks, of any of the
    kinds str.splitlines() knows (newline, return, vertical tab, form feed, \\x1c-\\x1e, \\x85, \\u2028, \\u2029)."""
    return " ".join(text.split()) if len(text.splitlines()) > 1 else text


def describe(error: BaseException) -> tuple | None:
    """(2, the one line) for an error the user can fix (see the module docstring); None for a bug."""
    if isinstance(error, UserError):
        return 2, one_line(str(error))
    if isinstance(error, OSError):
        message = environment_error(error)
        return None if message is None else (2, one_line(message))
    return None


def portable(error: BaseException) -> BaseException:
    """The exception itself when it survives pickling (to be raised in the process a worker
    process answers to), else a RuntimeError with its type and text."""
    import pickle  # noqa: PLC0415
    try:
        pickle.loads(pickle.dumps(error))
        return error
    except Exception:  # noqa: BLE001
        return RuntimeError(f"{type(error).__name__}: {error}")
