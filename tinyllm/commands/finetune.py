"""`tinyllm finetune` and `tinyllm classify`, and the prompt side of `tinyllm sample --instruct`.

    tinyllm finetune --task classify --init-from runs/demo --data reviews.csv --out runs/clf
    tinyllm classify --ckpt runs/clf "what a great film"
    tinyllm finetune --task instruct --init-from gpt2/ --data alpaca.json --out runs/chat --lora-rank 8
    tinyllm sample --ckpt runs/chat --instruct --prompt "Name three colours."

The optimisation flags are `tinyllm train`'s (same names, same TrainConfig fields) with
defaults suited to finetuning; the task flags are FinetuneConfig's. With `--resume` the
run continues from DIR/last with the settings it was started with; flags given change
only those settings (e.g. `--max-iters`).

For `tinyllm sample`: `add_sample_flags(parser)` adds --instruct, --input and --template,
and `prepare_sample(args)` returns (model, tokenizer, prompt text): a finetuned
checkpoint is rebuilt on its base model (LoRA adapters merged for speed), and with
--instruct the prompt is formatted with the template the model was finetuned with.

Left out: batch classification of files (use tinyllm.finetune.classify_texts), chat loops.
"""
from __future__ import annotations

import argparse
import json
import sys

from tinyllm import checkpoint as ckpt
from tinyllm.commands.common import UsageError, add_command, load_model
from tinyllm.commands.train import _FLAGS as TRAIN_FLAGS
from tinyllm.finetune import (POOLINGS, TASKS, TEMPLATES, FinetuneConfig, build_finetune, classify_texts,
                              is_finetune_checkpoint, load_finetuned, load_template)
from tinyllm.lora import merge_lora, parse_targets
from tinyllm.train import TrainConfig

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

# the train flags a finetuning run uses (data, model shape and pipeline flags do not apply)
SHARED_TRAIN_FLAGS = ("optimizer", "batch-size", "grad-accum", "max-iters", "lr", "min-lr", "warmup-iters",
                      "lr-schedule", "weight-decay", "beta1", "beta2", "eps", "momentum", "grad-clip",
                      "eval-interval", "eval-iters", "log-interval", "seed", "dtype", "device", "progress")

# finetuning defaults that differ from pretraining's
TRAIN_DEFAULTS = {"max_iters": 300, "lr": 5e-4, "min_lr": 5e-5, "warmup_iters": 20, "batch_size": 8,
                  "eval_interval": 50, "eval_iters": 10, "weight_decay": 0.0}

# flag -> (type, help, default); the FinetuneConfig field is the flag with underscores
TASK_FLAGS = {
    "task": (str, f"what to finetune for: {' or '.join(TASKS)}", None),
    "init-from": (str, "the base model: a `tinyllm train` run or checkpoint directory, or a Hugging Face "
                       "directory (config.json + model.safetensors)", None),
    "data": (str, "classify: .csv/.tsv/.jsonl with text and label; instruct: .json/.jsonl Alpaca records", None),
    "tokenizer": (str, "a tokenizer file (default: the base model's)", None),
    "text-field": (str, "classify: the text column / key", "text"),
    "label-field": (str, "classify: the label column / key", "label"),
    "labels": (str, "classify: the allowed labels in class order, comma-separated (default: sorted labels found)",
               None),
    "pooling": (str, f"classify: features from the {' or '.join(POOLINGS)} hidden state(s)", "last"),
    "val-fraction": (float, "examples held out for validation", 0.1),
    "test-fraction": (float, "examples held out for the final test", 0.1),
    "template": (str, f"instruct: prompt template, {', '.join(TEMPLATES)} or a JSON file with "
                      "with_input and without_input", "alpaca"),
    "freeze": (str, "none, all, all-but-last:N, or parameter-name prefixes such as wte,wpe,blocks.0", "none"),
    "lora-rank": (int, "LoRA adapter rank; 0 = no LoRA (full finetuning of what --freeze leaves)", 0),
    "lora-alpha": (float, "LoRA scale numerator: updates are scaled by alpha / rank", 16.0),
    "lora-targets": (str, "LoRA on which Linear layers: attn, mlp, head, or layer names (comma-separated)", "attn"),
}


def register(subparsers) -> None:
    parser = add_command(subparsers, "finetune", "finetune a pretrained GPT (classify, instruct; LoRA)",
                         "Finetune a pretrained GPT for text classification or instruction following, "
                         "fully, with some layers frozen, or with LoRA adapters. Progress, DIR/metrics.jsonl, "
                         "checkpoints (DIR/last, DIR/best) and --resume work as in `tinyllm train`.",
                         FINETUNE_EXAMPLES)
    parser.add_argument("--out", default=argparse.SUPPRESS, metavar="DIR", help="run directory (required)")
    parser.add_argument("--resume", action="store_true", default=False,
                        help="continue the run in --out from its last checkpoint")
    for flag, (kind, help_text, default) in TASK_FLAGS.items():
        parser.add_argument(f"--{flag}", type=kind, default=argparse.SUPPRESS, metavar=flag.split("-")[-1].upper(),
                            help=f"{help_text}" + (f" (default: {default!r})" if default is not None else ""))
    for flag in SHARED_TRAIN_FLAGS:
        kind, help_text = TRAIN_FLAGS[flag]
        name = flag.replace("-", "_")
        default = TRAIN_DEFAULTS.get(name, getattr(TrainConfig, name, None))
        parser.add_argument(f"--{flag}", type=kind, default=argparse.SUPPRESS, metavar=flag.split("-")[-1].upper(),
                            help=f"{help_text} (default: {default!r})")
    parser.set_defaults(handler=run_finetune)

    classify = add_command(subparsers, "classify", "label texts with a finetuned classifier",
                           "Print the predicted label and the class probabilities of each text, using a "
                           "checkpoint written by `tinyllm finetune --task classify`.", CLASSIFY_EXAMPLES)
    classify.add_argument("--ckpt", required=True, metavar="DIR", help="finetune run directory or checkpoint")
    classify.add_argument("texts", nargs="+", metavar="TEXT", help="texts to classify; '-' reads lines from stdin")
    classify.add_argument("--json", action="store_true", help="one JSON object per text")
    classify.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="where the model runs")
    classify.set_defaults(handler=run_classify)


def _given(args, flags) -> dict:
    """field -> value for the flags the user gave (argparse.SUPPRESS leaves the others out)."""
    return {f.replace("-", "_"): getattr(args, f.replace("-", "_")) for f in flags if hasattr(args, f.replace("-", "_"))}


def resolve_configs(args) -> tuple:
    """(FinetuneConfig, TrainConfig) from defaults (or the checkpoint's settings with --resume) and the flags."""
    task = _given(args, TASK_FLAGS)
    train = _given(args, SHARED_TRAIN_FLAGS)
    if not hasattr(args, "out"):
        raise UsageError("--out DIR is required: the run directory for checkpoints and metrics")
    if args.resume:
        state = ckpt.read_state(args.out)
        saved = state.get("finetune")
        if saved is None:
            raise UsageError(f"--out {args.out}: its checkpoint was not made by `tinyllm finetune`; "
                             "resume it with `tinyllm train --resume`")
        task_settings = dict(saved["config"])
        for name, value in _task_values(task).items():
            if name in ("init_from", "data", "task") or value == task_settings.get(name):
                task_settings[name] = value
            else:
                raise UsageError(f"--{name.replace('_', '-')} {value!r} differs from the checkpoint's "
                                 f"{task_settings.get(name)!r}; a resumed run keeps its task settings")
        train_settings = {k: v for k, v in state.get("train_config", {}).items()}
        train_settings.update(train)
    else:
        missing = [f"--{flag}" for flag in ("task", "init-from", "data") if flag.replace("-", "_") not in task]
        if missing:
            raise UsageError(f"{', '.join(missing)} required (see tinyllm finetune --help)")
        task_settings = _task_values(task)
        train_settings = {**TRAIN_DEFAULTS, **train}
    train_settings.update(out=args.out, resume=bool(args.resume))
    return FinetuneConfig(**task_settings), TrainConfig.from_dict(train_settings)


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
    from tinyllm.finetune import finetune as run  # noqa: PLC0415
    config, train_config = resolve_configs(args)
    result = run(config, train_config)
    if result.status == "interrupted":
        return 130
    return 0


def read_texts(texts) -> list:
    if texts == ["-"]:
        return [line.rstrip("\n") for line in sys.stdin if line.strip()]
    return list(texts)


def run_classify(args, out=None) -> int:
    out = out or sys.stdout
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


# ---- for `tinyllm sample` -----------------------------------------------------------------------


def add_sample_flags(parser) -> None:
    """--instruct, --input and --template for `tinyllm sample`."""
    parser.add_argument("--instruct", action="store_true",
                        help="treat --prompt as an instruction and format it with the prompt template "
                             "(the one the checkpoint was finetuned with, else --template)")
    parser.add_argument("--input", default="", help="with --instruct: the optional input of the instruction")
    parser.add_argument("--template", default=None,
                        help=f"with --instruct: {', '.join(TEMPLATES)} or a JSON file (default: the checkpoint's, "
                             "else alpaca)")


def instruct_prompt(instruction: str, input: str = "", template="alpaca") -> str:  # noqa: A002
    """The prompt text finetuning trained on: template (a name, JSON file or PromptTemplate) filled in."""
    if not isinstance(template, str) and hasattr(template, "format"):
        return template.format(instruction, input)
    return load_template(template).format(instruction, input)


def prepare_sample(args) -> tuple:
    """(model, tokenizer, prompt text) for `tinyllm sample`; see the module docstring."""
    template = None
    if is_finetune_checkpoint(args.ckpt):
        finetuned = load_finetuned(args.ckpt, device=getattr(args, "device", "cpu"))
        if finetuned.config.task != "instruct":
            raise UsageError(f"--ckpt {args.ckpt}: a classifier (finetuned with --task classify) does not generate "
                             "text; use `tinyllm classify`")
        model, tokenizer, template = finetuned.model, finetuned.tokenizer, finetuned.template
        merge_lora(model)
    else:
        model, tokenizer, _ = load_model(args.ckpt, device=getattr(args, "device", "cpu"))
    prompt = args.prompt
    if getattr(args, "instruct", False):
        if not prompt.strip():
            raise UsageError("--instruct needs the instruction as --prompt TEXT")
        if getattr(args, "template", None):
            template = args.template
        prompt = instruct_prompt(prompt, getattr(args, "input", ""), template or "alpaca")
    return model, tokenizer, prompt
