"""The `tinyllm` command line: one parser, a subcommand per module.

    tinyllm train --out runs/demo          tinyllm sample --ckpt runs/demo
    tinyllm eval --ckpt runs/demo          tinyllm info --ckpt runs/demo
    tinyllm plot runs/demo                 tinyllm data download tinyshakespeare
    tinyllm tokenizer train|encode ...     tinyllm gradcheck [OPS...]

Each subcommand lives in its own module with `register(subparsers)` (tinyllm/commands/,
tinyllm/tokenizer/cli.py).

The one error rule, applied here and nowhere else:

- an error the user can fix (a bad flag value, a missing or malformed file, an incompatible
  checkpoint, a run directory in use: a `tinyllm.errors.UserError`) prints one line,
  `tinyllm CMD: error: ...`, naming the file or flag, the bad value and the fix, and exits
  with status 2, as argparse does for a malformed flag;
- an error of the machine the user can fix (a full disk, a read-only directory, a file
  where a directory is needed: an OSError of tinyllm.errors.ENVIRONMENT_ERRNOS) is one
  line too, naming the file, exit 2;
- anything else is a bug in tinyllm: one line saying so, exit 1;
- `tinyllm --debug CMD ...` (or `TINYLLM_DEBUG=1`) adds the traceback to any of them;
- Ctrl-C exits with 130.

Left out: shell completion, plugins from other packages.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback

from tinyllm.errors import describe, one_line

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
    except Exception as error:  # noqa: BLE001 - tinyllm.errors decides: the user's to fix, or a bug
        known = describe(error)
        if known is None:
            return report_bug(prefix, error, args)
        if debugging(args):
            traceback.print_exc()
        if not getattr(error, "quiet", False):   # e.g. the copies of one refused command under mpiexec
            print(f"{prefix} {known[1]}", file=sys.stderr)
        return known[0]


def report_bug(prefix: str, error: BaseException, args) -> int:
    """An error no user could fix: one line saying so (the traceback with --debug); status 1."""
    if debugging(args):
        traceback.print_exception(type(error), error, error.__traceback__)
    print(f"{prefix} internal error: {type(error).__name__}: {one_line(str(error))}; this is a bug in tinyllm: rerun with "
          "--debug (or TINYLLM_DEBUG=1) for the traceback, and report it", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
