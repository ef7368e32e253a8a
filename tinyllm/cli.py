"""The `tinyllm` command line: one parser, a subcommand per module.

    tinyllm train --out runs/demo          tinyllm sample --ckpt runs/demo
    tinyllm eval --ckpt runs/demo          tinyllm info --ckpt runs/demo
    tinyllm plot runs/demo                 tinyllm data download tinyshakespeare
    tinyllm tokenizer train|encode ...     tinyllm gradcheck [OPS...]

Each subcommand lives in its own module with `register(subparsers)` (tinyllm/commands/,
tinyllm/tokenizer/cli.py).

The one error rule, applied here and nowhere else:

- an error the user can fix (a bad flag value, a missing or malformed file, an incompatible
  checkpoint, a run directory in use) is one of the known types of `user_errors()`; it
  prints one line, `tinyllm CMD: error: ...`, naming the file or flag, the bad value and
  the fix, and exits with status 2, as argparse does for a malformed flag;
- an error of the machine the user can fix (a full disk, a read-only directory, a file
  where a directory is needed: an OSError with one of ENVIRONMENT_ERRNOS) is one line
  too, naming the file, exit 2;
- anything else is a bug in tinyllm: one line saying so, exit 1;
- `tinyllm --debug CMD ...` (or `TINYLLM_DEBUG=1`) adds the traceback to any of them;
- Ctrl-C exits with 130.

Left out: shell completion, plugins from other packages.
"""
from __future__ import annotations

import argparse
import errno
import importlib
import os
import sys
import traceback

# the modules that register a subcommand, imported when the parser is built
COMMAND_MODULES = (
    "tinyllm.commands.train",
    "tinyllm.commands.sample",
    "tinyllm.commands.evaluate",
    "tinyllm.commands.info",
    "tinyllm.commands.plot",
    "tinyllm.commands.data",
    "tinyllm.commands.finetune",
    "tinyllm.tokenizer.cli",
    "tinyllm.commands.gradcheck",
)

EXAMPLES = """\
examples:
  tinyllm train --out runs/demo            # pretrain on the built-in corpus (a few minutes on 2 cores)
  tinyllm sample --ckpt runs/demo          # then generate text from it
  tinyllm COMMAND --help                   # every command's flags, with examples
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tinyllm", description="A GPT-style language-model engine from first "
                                     "principles: train, sample, evaluate, inspect.", epilog=EXAMPLES,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    parser.add_argument("--debug", action="store_true", default=False,
                        help="show the traceback of an error (also: TINYLLM_DEBUG=1)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def _version() -> str:
    try:
        from importlib.metadata import version  # noqa: PLC0415
        return version("tinyllm")
    except Exception:
        return "(not installed)"


def user_errors() -> tuple:
    """Exception types that mean "the user gave something wrong": one line, exit 2."""
    from tinyllm.checkpoint import CheckpointError  # noqa: PLC0415
    from tinyllm.commands.common import UsageError  # noqa: PLC0415
    from tinyllm.data import DataError  # noqa: PLC0415
    from tinyllm.limits import LimitError  # noqa: PLC0415
    from tinyllm.lora import LoRAError  # noqa: PLC0415
    from tinyllm.pretrained import PretrainedFormatError  # noqa: PLC0415
    from tinyllm.runlock import RunDirectoryError  # noqa: PLC0415
    from tinyllm.tokenizer import ShardError, TextFileError, TokenizerFileError  # noqa: PLC0415
    from tinyllm.tokenizer.cli import TokenizerCommandError  # noqa: PLC0415
    from tinyllm.train import ConfigError  # noqa: PLC0415
    return (UsageError, ConfigError, DataError, CheckpointError, ShardError, TokenizerFileError, TextFileError,
            TokenizerCommandError, LoRAError, PretrainedFormatError, RunDirectoryError, LimitError)


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
    """`text` on one line (a message that quotes a file's content may hold line breaks)."""
    return " ".join(text.split()) if "\n" in text or "\r" in text else text


def debugging(args) -> bool:
    """`--debug` given, or TINYLLM_DEBUG set to anything but 0 / empty."""
    return bool(getattr(args, "debug", False)) or os.environ.get("TINYLLM_DEBUG", "") not in ("", "0")


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    prefix = f"{parser.prog} {args.command}: error:"   # as argparse names it
    try:
        return int(handler(args) or 0)
    except KeyboardInterrupt:
        print("tinyllm: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `tinyllm sample ... | head`: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except user_errors() as error:
        if debugging(args):
            traceback.print_exc()
        if not getattr(error, "quiet", False):   # e.g. the copies of one refused command under mpiexec
            print(f"{prefix} {one_line(str(error))}", file=sys.stderr)
        return 2
    except OSError as error:
        message = environment_error(error)
        if message is None:
            return report_bug(prefix, error, args)
        if debugging(args):
            traceback.print_exc()
        print(f"{prefix} {one_line(message)}", file=sys.stderr)
        return 2
    except Exception as error:  # noqa: BLE001 - a bug: say so in one line, the traceback under --debug
        return report_bug(prefix, error, args)


def report_bug(prefix: str, error: BaseException, args) -> int:
    """An error no user could fix: one line saying so (the traceback with --debug); status 1."""
    if debugging(args):
        traceback.print_exception(type(error), error, error.__traceback__)
    print(f"{prefix} internal error: {type(error).__name__}: {one_line(str(error))}; this is a bug in tinyllm: rerun with "
          "--debug (or TINYLLM_DEBUG=1) for the traceback, and report it", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
