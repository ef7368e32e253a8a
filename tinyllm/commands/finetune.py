"""`tinyllm finetune` and `tinyllm classify`.

    tinyllm finetune --task classify --init-from runs/demo --data reviews.csv --out runs/clf
    tinyllm classify --ckpt runs/clf "what a great film"
    tinyllm finetune --task instruct --init-from gpt2/ --data alpaca.json --out runs/chat --lora-rank 8
    tinyllm sample --ckpt runs/chat --instruct --prompt "Name three colours."

The run-wide, optimisation, loop and worker flags are `tinyllm train`'s (the settings
sections the Finetuning recipe reads: commands/common.py settings_flags) with defaults
suited to finetuning; the task flags are FinetuneConfig's fields. With `--resume` the run continues from DIR/last with the settings
it was started with; flags given change only those settings (e.g. `--max-iters`).
Interrupted by SIGINT or SIGTERM, it saves DIR/last and exits with 128 + the signal (130,
143), as `tinyllm train` does. `tinyllm sample --instruct` (commands/sample.py) prompts an
instruction-finetuned checkpoint.

Left out: batch classification of files (use tinyllm.finetune.classify_texts), chat loops.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from tinyllm import checkpoint as ckpt
from tinyllm.commands.common import (UsageError, add_command, add_flags, check_device, config_flags, given,
                                     refuse_independent_copies, settings_flags)
from tinyllm.finetune import FinetuneConfig, Finetuning, classify_texts, finetune, load_finetuned, load_template
from tinyllm.finetune.loading import BASE_DIR
from tinyllm.lora import parse_targets
from tinyllm.settings import RunSettings

FINETUNE_EXAMPLES = """\
tinyllm finetune --task classify --init-from runs/demo --data reviews.csv --out runs/clf
tinyllm finetune --task classify --init-from runs/demo --data spam.tsv --pooling mean --freeze all-but-last:1 --out runs/spam
tinyllm finetune --task classify --init-from gpt2/ --data reviews.jsonl --lora-rank 8 --lora-targets attn,mlp --out runs/clf-lora
tinyllm finetune --task instruct --init-from gpt2/ --data alpaca.json --lora-rank 8 --lora-alpha 16 --out runs/chat
tinyllm finetune --out runs/chat --resume --max-iters 600"""

CLASSIFY_EXAMPLES = """\
tinyllm classify --ckpt runs/clf "what a great film"
tinyllm classify --ckpt runs/clf --json "first text" "second text"
cat texts.txt | tinyllm classify --ckpt runs/clf -"""

# the settings a finetuning run reads: run-wide, optimisation, loop, workers (no data, model or pipeline flags)
RUN_FLAGS = settings_flags(Finetuning.sections)

# finetuning defaults that differ from pretraining's
TRAIN_DEFAULTS = {"max_iters": 300, "lr": 5e-4, "min_lr": 5e-5, "warmup_iters": 20, "batch_size": 8,
                  "eval_interval": 50, "eval_iters": 10, "weight_decay": 0.0}

TASK_FLAGS = config_flags(FinetuneConfig)


def register(subparsers) -> None:
    parser = add_command(subparsers, "finetune", "finetune a pretrained GPT (classify, instruct; LoRA)",
                         "Finetune a pretrained GPT for text classification or instruction following, "
                         "fully, with some layers frozen, or with LoRA adapters. Progress, DIR/metrics.jsonl, "
                         "checkpoints (DIR/last, DIR/best) and --resume work as in `tinyllm train`.",
                         FINETUNE_EXAMPLES)
    parser.add_argument("--resume", action="store_true", default=False,
                        help="continue the run in --out from its last checkpoint")
    add_flags(parser, TASK_FLAGS.values())
    add_flags(parser, RUN_FLAGS.values(), defaults={**TRAIN_DEFAULTS, "out": None},
              helps={"out": "run directory: config, metrics, checkpoints (required)"})
    parser.set_defaults(handler=run_finetune)

    classify = add_command(subparsers, "classify", "label texts with a finetuned classifier",
                           "Print the predicted label and the class probabilities of each text, using a "
                           "checkpoint written by `tinyllm finetune --task classify`.", CLASSIFY_EXAMPLES)
    classify.add_argument("--ckpt", required=True, metavar="DIR", help="finetune run directory or checkpoint")
    classify.add_argument("texts", nargs="+", metavar="TEXT", help="texts to classify; '-' reads lines from stdin")
    classify.add_argument("--json", action="store_true", help="one JSON object per text")
    classify.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="where the model runs")
    classify.set_defaults(handler=run_classify)


def resolve_configs(args) -> tuple:
    """(FinetuneConfig, RunSettings) from defaults (or the checkpoint's settings with --resume) and the flags."""
    task = given(args, TASK_FLAGS)
    train = given(args, RUN_FLAGS)
    if not hasattr(args, "out"):
        raise UsageError("--out DIR is required: the run directory for checkpoints and metrics")
    if args.resume:
        state = ckpt.read_state(args.out, flag="--out")
        saved = state.get("finetune")
        if saved is None:
            raise UsageError(f"--out {args.out}: its checkpoint was not made by `tinyllm finetune`; "
                             "resume it with `tinyllm train --resume`")
        where = Path(args.out) / "last" / ckpt.STATE_FILE
        task_settings = ckpt.saved_config(FinetuneConfig, dict(saved["config"]), where).to_dict()
        ckpt.saved_config(RunSettings, {**state.get("train_config", {}), "out": args.out, "resume": True}, where)
        for name, value in FinetuneConfig.absolute_paths(_task_values(task)).items():
            if value == task_settings.get(name) or (name == "init_from" and not _base_still_there(args.out,
                                                                                                 task_settings)):
                task_settings[name] = value   # the same, or a base model that moved: pointed at anew
            else:
                kept = "its task settings"
                if name == "init_from" and (Path(args.out) / BASE_DIR).is_dir():
                    kept = f"its base model (a copy is in {Path(args.out) / BASE_DIR})"
                raise UsageError(f"--{name.replace('_', '-')} {value!r} differs from the checkpoint's "
                                 f"{task_settings.get(name)!r}; a resumed run keeps {kept}: drop the flag, "
                                 "or finetune into a new --out")
        train_settings = {k: v for k, v in state.get("train_config", {}).items()}
        train_settings.update(train)
    else:
        missing = [f"--{flag}" for flag in ("task", "init-from", "data") if flag.replace("-", "_") not in task]
        if missing:
            raise UsageError(f"{', '.join(missing)} required (see tinyllm finetune --help)")
        task_settings = _task_values(task)
        train_settings = {**TRAIN_DEFAULTS, **train}
    train_settings.update(out=args.out, resume=bool(args.resume))
    return FinetuneConfig.from_dict(task_settings), RunSettings.from_dict(train_settings)


def _base_still_there(out, saved: dict) -> bool:
    """Whether the run's base model is still where it was (its copy in DIR/base, or init_from): a
    resumed run may be pointed at a base that moved (its frozen weights are checked), and only then."""
    return (Path(out) / BASE_DIR).is_dir() or Path(saved["init_from"]).exists()


def _task_values(given: dict) -> dict:
    values = dict(given)
    if values.get("labels") is not None:
        values["labels"] = [label.strip() for label in values["labels"].split(",") if label.strip()]
    if "lora_targets" in values:
        values["lora_targets"] = list(parse_targets(values["lora_targets"]))
    if "template" in values:
        load_template(values["template"])  # check it now, with the flag's name in the error
    return values


def run_finetune(args) -> int:
    refuse_independent_copies("finetune", "finetuning runs in one process (--threads N uses the cores): "
                              "run it without mpiexec")
    config, train_config = resolve_configs(args)
    check_device(train_config.device)
    result = finetune(config, train_config)
    return result.exit_status  # 0, or 128 + the signal that interrupted it (130 SIGINT, 143 SIGTERM)


def read_texts(texts) -> list:
    if texts == ["-"]:
        return [line.rstrip("\n") for line in sys.stdin if line.strip()]
    return list(texts)


def run_classify(args, out=None) -> int:
    out = out or sys.stdout
    check_device(args.device)
    finetuned = load_finetuned(args.ckpt, device=args.device)
    if finetuned.config.task != "classify":
        raise UsageError(f"--ckpt {args.ckpt}: finetuned for {finetuned.config.task!r}; `tinyllm classify` "
                         "needs a checkpoint of `tinyllm finetune --task classify`")
    texts = read_texts(args.texts)
    if not texts:
        raise UsageError("no text to classify: give TEXT arguments, or lines on stdin with '-'")
    probabilities = classify_texts(finetuned, texts)
    for text, probs in zip(texts, probabilities):
        label = finetuned.label_names[int(probs.argmax())]
        if args.json:
            out.write(json.dumps({"text": text, "label": label,
                                  "probabilities": {n: float(p) for n, p in zip(finetuned.label_names, probs)}}) + "\n")
        else:
            shown = "  ".join(f"{name} {p:.4f}" for name, p in zip(finetuned.label_names, probs))
            out.write(f"{label}\t{shown}\n")
    out.flush()
    return 0
