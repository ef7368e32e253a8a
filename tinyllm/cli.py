"""The `tinyllm` command line: one parser, a subcommand per module.

    tinyllm train --out runs/demo          tinyllm sample --ckpt runs/demo
    tinyllm eval --ckpt runs/demo          tinyllm info --ckpt runs/demo
    tinyllm plot runs/demo                 tinyllm data download tinyshakespeare
    tinyllm tokenizer train|encode ...     tinyllm gradcheck [OPS...]

Each subcommand lives in its own module with `register(subparsers)` (tinyllm/commands/,
tinyllm/tokenizer/cli.py). Errors the user can fix (a bad flag value, a missing
file, an incompatible checkpoint) print one line, `tinyllm CMD: error: ...`, and exit
with status 2, as argparse does for a malformed flag; Ctrl-C exits with 130.

Left out: shell completion, plugins from other packages.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys

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
    from tinyllm.tokenizer import ShardError, TokenizerFileError  # noqa: PLC0415
    from tinyllm.train import ConfigError  # noqa: PLC0415
    return (UsageError, ConfigError, DataError, CheckpointError, FileNotFoundError, ShardError, TokenizerFileError)


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    try:
        return int(handler(args) or 0)
    except user_errors() as error:
        message = str(error) if not isinstance(error, FileNotFoundError) or not error.filename else \
            f"{error.filename}: no such file"
        print(f"{parser.prog} {args.command}: error: {message}", file=sys.stderr)  # as argparse names it
        return 2
    except KeyboardInterrupt:
        print("tinyllm: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `tinyllm sample ... | head`: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
