"""Helpers the subcommands share: usage errors, help formatting, loading a checkpoint's model.

Left out: anything command-specific (each command module owns its flags).
"""
from __future__ import annotations

import argparse

from tinyllm import checkpoint as ckpt


class UsageError(ValueError):
    """A bad flag value or missing file: printed as one line, exit status 2."""


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Keeps the examples' line breaks and shows defaults."""


def add_command(subparsers, name: str, help_text: str, description: str, examples: str):
    """A subparser whose --help ends with `examples` (one command per line)."""
    return subparsers.add_parser(name, help=help_text, description=description,
                                 epilog="examples:\n" + examples.rstrip() + "\n", formatter_class=HelpFormatter)


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{value} must be a positive integer")
    return value


def load_model(ckpt_path, device: str = "cpu", dtype: str | None = None):
    """(model, tokenizer, checkpoint) from a checkpoint or run directory, weights loaded."""
    from tinyllm.model import GPT, GPTConfig  # noqa: PLC0415

    checkpoint = ckpt.load_checkpoint(ckpt_path, with_optimizer=False)
    try:
        config = GPTConfig.from_dict(checkpoint.state["model_config"])
    except (KeyError, TypeError, ValueError) as error:
        raise ckpt.CheckpointError(f"{checkpoint.path / ckpt.STATE_FILE}: model_config is unusable ({error})") from None
    if dtype is None:
        dtype = checkpoint.state.get("train_config", {}).get("dtype", "float32")
    model = GPT(config, dtype=dtype, device=device)
    ckpt.load_model_state(model, checkpoint)
    model.eval()
    return model, checkpoint.tokenizer(), checkpoint
