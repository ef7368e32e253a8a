"""`tinyllm eval`: a checkpoint's loss and perplexity on text.

Without --data, on the run's own validation split (the corpus the run was trained on,
encoded with the checkpoint's tokenizer, last val_fraction of the tokens, or its shards
named val: the same tokens the run validated on, tinyllm.data.corpus_tokens). With --data, on all of that text. The text is cut into
consecutive windows of block_size + 1 tokens (overlapping by one, so every token but
the first is predicted exactly once), evaluated in batches; --max-tokens caps the work.

Left out: sliding-window (strided) perplexity, per-document reports.
"""
from __future__ import annotations

import json
import math
import sys

import numpy as np

from autograd import no_grad
from tinyllm.checkpoint import CheckpointError, load_checkpoint
from tinyllm.commands.common import UsageError, add_command, load_model, positive_int
from tinyllm.data import DEFAULT_EXTENSIONS, corpus_tokens, resolve_corpus
from tinyllm.errors import UserError
from tinyllm.finetune import is_finetune_checkpoint, load_finetuned

EXAMPLES = """\
tinyllm eval --ckpt runs/demo
tinyllm eval --ckpt runs/demo/best --data held_out.txt --json
tinyllm eval --ckpt runs/demo --max-tokens 20000"""


def register(subparsers) -> None:
    parser = add_command(subparsers, "eval", "loss and perplexity of a checkpoint",
                         "Evaluate a checkpoint: mean cross-entropy loss (nats per token) and perplexity.",
                         EXAMPLES)
    parser.add_argument("--ckpt", required=True, metavar="DIR", help="run directory (uses DIR/last) or checkpoint")
    parser.add_argument("--data", default=None,
                        help="text file, directory, glob or 'stdlib' (default: the run's validation split)")
    parser.add_argument("--data-ext", default=",".join(DEFAULT_EXTENSIONS), help="extensions read from a directory")
    parser.add_argument("--batch-size", type=positive_int, default=16, help="windows per forward pass")
    parser.add_argument("--max-tokens", type=positive_int, default=None, help="evaluate at most this many tokens")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="where the model runs")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(handler=run)


@no_grad()
def evaluate_tokens(model, tokens: np.ndarray, batch_size: int) -> tuple:
    """(mean loss, number of predicted tokens) over consecutive windows of the model's block size."""
    T = model.config.block_size
    n_windows = (len(tokens) - 1) // T
    if n_windows == 0:
        T = len(tokens) - 1
        n_windows = 1
    starts = np.arange(n_windows) * T
    offsets = np.arange(T + 1)
    total, count = 0.0, 0
    for i in range(0, n_windows, batch_size):
        windows = np.asarray(tokens[starts[i:i + batch_size, None] + offsets], dtype=np.int64)  # (B, T + 1)
        _, loss = model(windows[:, :-1], windows[:, 1:])
        total += float(loss.item()) * windows[:, 1:].size
        count += windows[:, 1:].size
    return total / count, count


def saved_data(checkpoint) -> tuple:
    """(data, data_ext, val_fraction) the run trained on, from its state.json (checked: a file's values)."""
    saved = checkpoint.state.get("train_config", {})
    data, data_ext = saved.get("data"), saved.get("data_ext", DEFAULT_EXTENSIONS)
    val_fraction = saved.get("val_fraction", 0.1)
    if not (data is None or isinstance(data, str)) or not isinstance(data_ext, (str, list, tuple)) \
            or not all(isinstance(e, str) for e in data_ext) or isinstance(val_fraction, bool) \
            or not isinstance(val_fraction, (int, float)) or not 0 < val_fraction < 1:
        raise CheckpointError(f"{checkpoint.path / 'state.json'}: train_config's data, data_ext or val_fraction "
                              f"({data!r}, {data_ext!r}, {val_fraction!r}) is unusable; pass --data to evaluate "
                              "on a text of your choice")
    return data, data_ext, float(val_fraction)


def perplexity(loss: float) -> float:
    """exp(loss); inf past what a float holds (a loss above ~709 nats: a badly broken model), not an OverflowError."""
    try:
        return math.exp(loss)
    except OverflowError:
        return float("inf")


def load_for_eval(args) -> tuple:
    """(model, tokenizer, checkpoint) of --ckpt, read once: a pretrained GPT, or an instruction finetune's
    (its LoRA merged); a classifier has no next-token loss (say so)."""
    checkpoint = load_checkpoint(args.ckpt, with_optimizer=False)
    if not is_finetune_checkpoint(checkpoint):
        return load_model(checkpoint, device=args.device)
    task = checkpoint.state["finetune"]["config"].get("task")
    if task == "classify":
        raise UsageError(f"--ckpt {args.ckpt}: a classifier (finetuned with --task classify) predicts labels, not "
                         "text, so it has no perplexity: its test loss and accuracy are in its run's metrics.jsonl, "
                         f"and `tinyllm classify --ckpt {args.ckpt} TEXT` labels texts")
    if args.data is None:
        raise UsageError(f"--ckpt {args.ckpt}: an instruction finetune has no text split of its own; pass --data "
                         "TEXT to measure its loss on a text")
    finetuned = load_finetuned(checkpoint, device=args.device, merged=True)
    return finetuned.model, finetuned.tokenizer, checkpoint


def run(args, out=None) -> int:
    out = out or sys.stdout
    model, tokenizer, checkpoint = load_for_eval(args)
    data, data_ext, val_fraction = saved_data(checkpoint)
    corpus = resolve_corpus(args.data if args.data is not None else data,
                            args.data_ext if args.data is not None else data_ext)
    split = "all" if args.data is not None else "val"
    try:
        tokens = corpus_tokens(corpus, tokenizer, val_fraction if split == "val" else None)
    except UserError:
        raise
    except ValueError as error:
        raise UsageError(f"--data {corpus.name}: cannot be encoded with the checkpoint's tokenizer ({error})") from None
    if args.max_tokens is not None:
        tokens = tokens[:args.max_tokens + 1]
    if len(tokens) < 2:
        raise UsageError(f"--data {corpus.name}: fewer than 2 tokens to evaluate")
    loss, count = evaluate_tokens(model, tokens, args.batch_size)
    result = {"checkpoint": str(checkpoint.path), "step": checkpoint.step, "data": corpus.name, "split": split,
              "tokens": count, "loss": loss, "perplexity": perplexity(loss), "bits_per_token": loss / math.log(2)}
    if args.json:
        out.write(json.dumps(result) + "\n")
    else:
        out.write(f"{corpus.name} ({split}, {count:,} tokens) at step {checkpoint.step}: loss {loss:.4f}, "
                  f"perplexity {result['perplexity']:.3f}, {loss / math.log(2):.3f} bits/token\n")
    return 0
