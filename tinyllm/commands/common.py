"""What the subcommands share: usage errors, help formatting, the flag table, loading a checkpoint's model.

The flags of `tinyllm train` and `tinyllm finetune` are the fields of the run's settings
(tinyllm/settings.py) and of FinetuneConfig: `settings_flags(sections)` reads each field's
name (`max_iters` -> `--max-iters`), type (from its annotation) and help (the description
the field carries, `setting(default, help)`, tinyllm/fields.py), so the dataclass is the
one place a setting is described. A command takes the run-wide fields and the sections its
recipe reads (`Pretraining.sections`: all of them; `Finetuning.sections`: optimisation,
loop and workers), so no command keeps a list of flags by hand.

Left out: anything command-specific (each command module owns its other flags).
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import typing
from dataclasses import dataclass

from tinyllm.checkpoint import CheckpointError
from tinyllm.errors import UserError
from tinyllm.loading import load_gpt
from tinyllm.settings import SECTIONS, RunSettings


class UsageError(UserError):
    """A bad flag value or missing file: printed as one line, exit status 2 (tinyllm.errors)."""


# (size, rank) environment variables of the MPI launchers: MPICH/Intel (hydra), Open MPI, MVAPICH
MPI_LAUNCH_VARIABLES = (("PMI_SIZE", "PMI_RANK"), ("OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK"),
                        ("MV2_COMM_WORLD_SIZE", "MV2_COMM_WORLD_RANK"))


def mpi_launch(environ=None) -> tuple | None:
    """(rank, size) when mpiexec started this process as one of several ranks, else None."""
    environ = os.environ if environ is None else environ
    for size_name, rank_name in MPI_LAUNCH_VARIABLES:
        try:
            size, rank = int(environ.get(size_name, "")), int(environ.get(rank_name, "0"))
        except ValueError:
            continue
        if size > 1:
            return rank, size
    return None


def refuse_independent_copies(command: str, fix: str) -> None:
    """Under `mpiexec -n N` (N > 1) a one-process command would run as N independent copies, each
    writing the same --out: refuse on every rank (rank 0 prints the line, the others exit quietly).

    The run directory's lock would stop all copies but one; refusing says what was meant instead.
    """
    launch = mpi_launch()
    if launch is None:
        return
    rank, size = launch
    raise UsageError(f"mpiexec started {size} copies of `tinyllm {command}` (this is rank {rank}), which "
                     f"would be {size} independent runs writing one --out; {fix}", quiet=rank != 0)


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Keeps the examples' line breaks and shows defaults."""


def add_command(subparsers, name: str, help_text: str, description: str, examples: str):
    """A subparser whose --help ends with `examples` (one command per line), with --debug."""
    parser = subparsers.add_parser(name, help=help_text, description=description,
                                   epilog="examples:\n" + examples.rstrip() + "\n", formatter_class=HelpFormatter)
    parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show the traceback of an error (also: TINYLLM_DEBUG=1)")
    return parser


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{value} must be a positive integer")
    return value


def parse_bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"{text!r} is not a boolean (true/false)")


# ---- the flag table: one flag per config field ---------------------------------------------


@dataclass(frozen=True)
class Flag:
    """A command-line flag for a settings field: `--max-iters N` sets the loop section's max_iters."""

    field: str          # the config field, e.g. "max_iters"
    type: typing.Callable   # str -> value (a comma list stays a str: the command splits it)
    help: str           # the field's description
    default: object     # the field's default (dataclasses.MISSING when it has none)

    @property
    def name(self) -> str:
        return "--" + self.field.replace("_", "-")

    @property
    def metavar(self) -> str:
        return self.field.split("_")[-1].upper()


def field_flag(f: dataclasses.Field, annotation) -> Flag:
    """The Flag of a dataclass field: its type from the annotation (Optional stripped), its help and default."""
    kinds = [k for k in typing.get_args(annotation) or (annotation,) if k is not type(None)]
    kind = parse_bool if kinds[0] is bool else kinds[0] if kinds[0] in (int, float) else str
    return Flag(f.name, kind, f.metadata.get("help", ""), f.default)


def config_flags(config_class, exclude=()) -> dict:
    """field name -> Flag for every field of the dataclass `config_class` (but `exclude`), in field order."""
    hints = typing.get_type_hints(config_class)
    return {f.name: field_flag(f, hints[f.name]) for f in dataclasses.fields(config_class) if f.name not in exclude}


def settings_flags(sections=None) -> dict:
    """field name -> Flag for the run-wide settings and those of `sections` (tinyllm.settings; all by
    default), but `resume`, which is a switch of each command."""
    flags = {}
    for name, (section, f) in RunSettings.fields(sections).items():
        if name != "resume":
            flags[name] = field_flag(f, typing.get_type_hints(RunSettings if section is None else SECTIONS[section])[name])
    return flags


def add_flags(parser, flags, defaults: dict | None = None, shown: dict | None = None,
              helps: dict | None = None) -> None:
    """Add each Flag (value flags left unset unless given, so a config file or checkpoint can fill them).

    The help (`helps` field -> text, else the field's) ends with "(default: X)": X from `shown`
    (field -> text), else `defaults` (field -> value) or the field's default, as repr (a tuple
    as the comma list the flag takes); a default of None is explained by the help itself.
    """
    for flag in flags:
        flag = dataclasses.replace(flag, help=(helps or {}).get(flag.field, flag.help))
        default = (defaults or {}).get(flag.field, flag.default)
        text = (shown or {}).get(flag.field)
        if text is None and default is not None and default is not dataclasses.MISSING:
            text = ",".join(default) if isinstance(default, tuple) else repr(default)
        switch = dict(nargs="?", const=True) if flag.type is parse_bool else {}   # `--recompute` = `--recompute true`
        parser.add_argument(flag.name, type=flag.type, default=argparse.SUPPRESS, metavar=flag.metavar,
                            help=flag.help + (f" (default: {text})" if text else ""), **switch)


def given(args, fields) -> dict:
    """field -> value for the flags of `fields` the user gave (argparse.SUPPRESS leaves the others out)."""
    return {name: getattr(args, name) for name in fields if hasattr(args, name)}


def check_device(device: str, flag: str = "--device") -> None:
    """`--device cuda` needs CuPy and a CUDA device: say so in one line (before any model is built)."""
    if device == "cuda":
        from autograd.backend import cupy_available  # noqa: PLC0415
        if not cupy_available():
            raise UsageError(f"{flag} cuda: CuPy with a CUDA device is not available here (install it on a machine "
                             "with an NVIDIA GPU: pip install 'tinyllm[gpu]'); use --device cpu")


# ---- models ---------------------------------------------------------------------------------


def load_model(ckpt_path, device: str = "cpu", dtype: str | None = None):
    """(model in eval mode, tokenizer, checkpoint) from a checkpoint or run directory."""
    check_device(device)
    model, checkpoint = load_gpt(ckpt_path, device, dtype)
    model.eval()
    tokenizer = checkpoint.tokenizer()
    if tokenizer.vocab_size != model.config.vocab_size:   # `tinyllm train` makes them equal
        raise CheckpointError(f"{checkpoint.path / 'tokenizer.json'}: {tokenizer.vocab_size} ids, but the model has "
                              f"vocab_size {model.config.vocab_size}; the checkpoint is corrupted or was edited")
    return model, tokenizer, checkpoint
