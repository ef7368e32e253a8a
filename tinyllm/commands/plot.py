"""`tinyllm plot`: the loss curves of a run (DIR/metrics.jsonl) as a PNG, with matplotlib.

Train loss per logged step as a thin line, train and val loss at each evaluation as
markers. matplotlib is the optional `plot` extra.
Left out: comparing several runs in one figure, interactive windows.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from tinyllm.commands.common import UsageError, add_command

EXAMPLES = """\
tinyllm plot runs/demo                     # writes runs/demo/loss.png
tinyllm plot runs/demo --out demo.png"""


def register(subparsers) -> None:
    parser = add_command(subparsers, "plot", "plot a run's loss curves",
                         "Plot train and val loss from DIR/metrics.jsonl into a PNG (needs matplotlib).", EXAMPLES)
    parser.add_argument("run_dir", metavar="DIR", help="run directory written by tinyllm train")
    parser.add_argument("--out", default=None, help="PNG path (default: DIR/loss.png)")
    parser.set_defaults(handler=run)


def read_metrics(run_dir: Path) -> list:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        raise UsageError(f"{path}: no such file; give a run directory written by tinyllm train")
    records = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                raise UsageError(f"{path}, line {number}: not valid JSON") from None
    if not records:
        raise UsageError(f"{path}: has no records yet")
    return records


def run(args) -> int:
    run_dir = Path(args.run_dir)
    records = read_metrics(run_dir)
    try:
        import matplotlib  # noqa: PLC0415
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415
    except ImportError:
        raise UsageError("tinyllm plot needs matplotlib: install the plot extra: pip install 'tinyllm[plot]'") from None
    out = Path(args.out) if args.out else run_dir / "loss.png"
    steps = [r["step"] for r in records if "grad_norm" in r]
    losses = [r["train_loss"] for r in records if "grad_norm" in r]
    evals = [r for r in records if "val_loss" in r]
    fig, ax = plt.subplots(figsize=(8, 5))
    ax.plot(steps, losses, lw=0.8, alpha=0.6, label="train (batch)")
    if evals:
        ax.plot([r["step"] for r in evals], [r.get("eval_train_loss", r["train_loss"]) for r in evals], "o-",
                label="train (eval)")
        ax.plot([r["step"] for r in evals], [r["val_loss"] for r in evals], "s-", label="val")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats/token)")
    ax.set_title(str(run_dir))
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    tmp = out.with_name(f".{out.name}.tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(out)
    print(f"wrote {out}", file=sys.stderr)
    return 0
