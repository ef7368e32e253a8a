"""`tinyllm info`: what a checkpoint holds (config, parameter count, step, tokens seen, losses).

Reads state.json and verifies the files' sizes and hashes; loads no model.
Left out: per-layer parameter breakdowns.
"""
from __future__ import annotations

import json
import sys

from tinyllm import checkpoint as ckpt
from tinyllm.commands.common import add_command

EXAMPLES = """\
tinyllm info --ckpt runs/demo
tinyllm info --ckpt runs/demo/best --json"""


def register(subparsers) -> None:
    parser = add_command(subparsers, "info", "describe a checkpoint",
                         "Print a checkpoint's model config, parameter count, step, tokens seen and losses.",
                         EXAMPLES)
    parser.add_argument("--ckpt", required=True, metavar="DIR", help="run directory (uses DIR/last) or checkpoint")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    parser.set_defaults(handler=run)


def summary(path) -> dict:
    checkpoint = ckpt.load_checkpoint(path, with_optimizer=False)  # verifies every file
    state = checkpoint.state
    train_config = state.get("train_config", {})
    return {"checkpoint": str(checkpoint.path.resolve()), "step": state["step"],
            "tokens_seen": state.get("tokens_seen"), "num_parameters": state.get("num_parameters"),
            "train_loss": state.get("train_loss"), "val_loss": state.get("val_loss"),
            "best_val_loss": state.get("best_val_loss"), "elapsed_s": state.get("elapsed_s"),
            "max_iters": train_config.get("max_iters"), "data": train_config.get("data") or "builtin",
            "tokenizer": train_config.get("tokenizer"), "dtype": train_config.get("dtype"),
            "model_config": state.get("model_config"),
            "files": {name: record["size"] for name, record in state["files"].items()}}


def run(args, out=None) -> int:
    out = out or sys.stdout
    info = summary(args.ckpt)
    if args.json:
        out.write(json.dumps(info, indent=2) + "\n")
        return 0

    def fmt(value, spec=",") -> str:   # values a hand-edited state.json may hold of any type: shown as they are
        if value is None:
            return "-"
        return format(value, spec) if isinstance(value, (int, float)) and not isinstance(value, bool) else repr(value)

    lines = [f"checkpoint     {info['checkpoint']}",
             f"step           {info['step']:,} of {fmt(info['max_iters'])}",
             f"tokens seen    {fmt(info['tokens_seen'])}",
             f"parameters     {fmt(info['num_parameters'])}",
             f"train loss     {fmt(info['train_loss'], '.4f')}",
             f"val loss       {fmt(info['val_loss'], '.4f')}   (best {fmt(info['best_val_loss'], '.4f')})",
             f"trained for    {fmt(info['elapsed_s'], '.1f')} s",
             f"data           {info['data']}   tokenizer {info['tokenizer']}   dtype {info['dtype']}",
             "model config"]
    lines += [f"  {key:<15}{value}" for key, value in (info["model_config"] or {}).items()]
    lines.append("files")
    lines += [f"  {name:<22}{size:>12,} bytes" for name, size in info["files"].items()]
    out.write("\n".join(lines) + "\n")
    return 0
