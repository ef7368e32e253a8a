"""What every settings section is made of: a field with its one description, and the checks.

    @dataclass(frozen=True)
    class LoopSettings:
        max_iters: int = setting(1000, "optimizer steps")

        def __post_init__(self):
            check(self, "max_iters", is_positive_int, "must be a positive integer")

A section (tinyllm/settings.py lists them) lives beside the code that reads it and checks
its own values there; `setting(default, help)` gives a field the description that `tinyllm
... --help` shows for its flag (tinyllm/commands/common.py builds the flags from the fields).
A bad value is a ConfigError naming the flag: "--lr -1: must be positive (e.g. 1e-3)".

Left out: checks across sections (the code that combines them makes them, at build time).
"""
from __future__ import annotations

import math
from dataclasses import field

from tinyllm.errors import UserError


class ConfigError(UserError):
    """A setting the user can fix; the message names the flag and the value."""


def setting(default, help: str):  # noqa: A002 - argparse's word for it
    """A settings field with its one description, which `tinyllm ... --help` shows as the flag's help."""
    return field(default=default, metadata={"help": help})


def required(help: str):  # noqa: A002
    """A settings field without a default, with its description."""
    return field(metadata={"help": help})


def flag(name: str) -> str:
    """The command-line flag of a field: max_iters -> --max-iters."""
    return "--" + name.replace("_", "-")


def check(section, name: str, ok, message: str) -> None:
    """A ConfigError "--name value: message" unless ok(value of the field `name`)."""
    value = getattr(section, name)
    if not ok(value):
        raise ConfigError(f"{flag(name)} {value!r}: {message}")


def is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def is_positive_int(v) -> bool:
    return is_int(v) and v > 0


def is_number(v) -> bool:
    """A finite int or float (not a bool)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def one_of(choices) -> tuple:
    """(ok, message) for a field that must be one of `choices`."""
    return (lambda v: v in choices), f"must be one of {', '.join(choices)}"
