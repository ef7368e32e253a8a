"""`tinyllm train`: pretrain a GPT from the command line (flags are TrainConfig's fields).

Settings resolve in layers: TrainConfig's defaults, then a `--config FILE.toml`, then the
flags given on the command line. With `--resume` the first layer is the checkpoint's own
config instead, so `tinyllm train --out DIR --resume` continues with what DIR was started
with, and any flag given changes only that setting (`--max-iters 4000` to train longer).
With `--pipeline-stages` or `--data-parallel` above 1 the run is handed to parallel/.

Left out: hyperparameter sweeps, config inheritance between TOML files.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import tomllib
from pathlib import Path

from tinyllm import checkpoint as ckpt
from tinyllm.commands.common import UsageError, add_command
from tinyllm.train import MODEL_FIELDS, NonFiniteLossError, TrainConfig, build_trainer

EXAMPLES = """\
tinyllm train --out runs/demo                       # built-in corpus, baby preset, a few minutes on 2 cores
tinyllm train --data input.txt --out runs/shakespeare --max-iters 2000 --eval-iters 200
tinyllm train --data notes/ --data-ext .md,.txt --tokenizer bpe --vocab-size 1024 --out runs/notes
tinyllm train --data stdlib --preset llama-tiny --block-size 128 --out runs/code
tinyllm train --config runs.toml --lr 3e-4          # flags override the TOML file
tinyllm train --out runs/demo --resume --max-iters 1200
mpiexec -n 4 tinyllm train --pipeline-stages 2 --data-parallel 2 --microbatches 8 --schedule 1f1b"""

_DEFAULTS = TrainConfig()


def _bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"{text!r} is not a boolean (true/false)")


# flag -> (type, help); the TrainConfig field is the flag with dashes as underscores
_FLAGS = {
    "data": (str, "a text file, a directory, a glob, or 'stdlib'; default: the built-in pydoc topics corpus"),
    "data-ext": (str, "extensions read from a --data directory, comma-separated"),
    "tokenizer": (str, "'char', 'bpe' (trained on the corpus) or a tokenizer file"),
    "vocab-size": (int, "BPE vocabulary size (with --tokenizer bpe)"),
    "val-fraction": (float, "the last fraction of the tokens held out for validation"),
    "out": (str, "run directory: config, metrics, data cache, checkpoints"),
    "preset": (str, "model shape to start from; the model flags below override it"),
    "n-layer": (int, "transformer blocks"),
    "n-head": (int, "attention heads"),
    "n-kv-head": (int, "key/value heads (grouped-query attention)"),
    "n-embd": (int, "residual width"),
    "block-size": (int, "context length in tokens"),
    "dropout": (float, "dropout probability"),
    "norm": (str, "layernorm or rmsnorm"),
    "mlp": (str, "gelu or swiglu"),
    "position": (str, "learned or rope"),
    "rope-theta": (float, "RoPE base"),
    "bias": (_bool, "biases in linear layers and norms (true/false)"),
    "tie-embeddings": (_bool, "share the token embedding with the output head (true/false)"),
    "optimizer": (str, "adamw or sgd"),
    "batch-size": (int, "sequences per micro-batch"),
    "grad-accum": (int, "micro-batches per optimizer step"),
    "max-iters": (int, "optimizer steps"),
    "lr": (float, "peak learning rate"),
    "min-lr": (float, "final learning rate of the cosine schedule"),
    "warmup-iters": (int, "linear warmup steps"),
    "lr-schedule": (str, "cosine or constant"),
    "weight-decay": (float, "AdamW decoupled weight decay (matrices and embeddings only)"),
    "beta1": (float, "AdamW beta1"),
    "beta2": (float, "AdamW beta2"),
    "eps": (float, "AdamW epsilon"),
    "momentum": (float, "SGD momentum"),
    "grad-clip": (float, "clip the global gradient norm (0 = off)"),
    "eval-interval": (int, "evaluate and checkpoint every N steps"),
    "eval-iters": (int, "batches per split in each evaluation"),
    "log-interval": (int, "a progress line and metrics record every N steps"),
    "seed": (int, "seed for weights, dropout and batches"),
    "dtype": (str, "float32 or float64"),
    "device": (str, "cpu or cuda (CuPy)"),
    "threads": (int, "threads splitting each batch by rows (0 = OMP_NUM_THREADS if set, else one per core)"),
    "progress": (str, "auto (bar on a terminal), bar, log or none"),
    "pipeline-stages": (int, "pipeline stages (needs mpiexec and the mpi extra)"),
    "microbatches": (int, "micro-batches per step in a pipeline"),
    "schedule": (str, "pipeline schedule: gpipe or 1f1b"),
    "data-parallel": (int, "data-parallel replicas (needs mpiexec and the mpi extra)"),
    "partition": (str, "how blocks are split across pipeline stages"),
}


def register(subparsers) -> None:
    parser = add_command(subparsers, "train", "pretrain a GPT",
                         "Pretrain a GPT on a text corpus: progress on the terminal, metrics in "
                         "DIR/metrics.jsonl, checkpoints in DIR/last and DIR/best.", EXAMPLES)
    parser.add_argument("--config", metavar="FILE.toml", default=None,
                        help="settings file (keys as the flags, with - or _); flags override it")
    parser.add_argument("--resume", action="store_true", default=False,
                        help="continue the run in --out from its last checkpoint")
    parser.add_argument("--sample-tokens", type=int, default=200, metavar="N",
                        help="after training, print a sample of N tokens from the model (0 = none)")
    parser.add_argument("--trace", metavar="FILE.json", default=None,
                        help="pipeline runs: write a Chrome/Perfetto trace of every rank (open in ui.perfetto.dev)")
    for flag, (kind, help_text) in _FLAGS.items():
        field_name = flag.replace("-", "_")
        default = getattr(_DEFAULTS, field_name)
        shown = "the preset's" if field_name in MODEL_FIELDS else repr(default)
        parser.add_argument(f"--{flag}", type=kind, default=argparse.SUPPRESS, metavar=flag.split("-")[-1].upper(),
                            help=f"{help_text} (default: {shown})")
    parser.set_defaults(handler=run)


def read_toml(path: str) -> dict:
    """Settings from a TOML file: flat keys named like the flags (dashes or underscores)."""
    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except FileNotFoundError:
        raise UsageError(f"--config {path}: no such file") from None
    except tomllib.TOMLDecodeError as error:
        raise UsageError(f"--config {path}: not valid TOML ({error})") from None
    if isinstance(raw.get("train"), dict):  # allow the settings under a [train] table
        raw = {**{k: v for k, v in raw.items() if k != "train"}, **raw["train"]}
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    settings = {}
    for key, value in raw.items():
        name = key.replace("-", "_")
        if name not in known or name == "resume":
            raise UsageError(f"--config {path}: unknown setting {key!r}; the keys are the train flags "
                             "without dashes, e.g. max_iters = 2000")
        settings[name] = value
    return settings


def resolve_config(args) -> TrainConfig:
    """TrainConfig from the layers: defaults (or the checkpoint's config), TOML, flags."""
    settings = read_toml(args.config) if args.config else {}
    settings.update({flag.replace("-", "_"): getattr(args, flag.replace("-", "_"))
                     for flag in _FLAGS if hasattr(args, flag.replace("-", "_"))})
    if args.resume:
        out = settings.get("out", _DEFAULTS.out)
        if not (Path(out) / "last").exists():
            raise UsageError(f"--resume: {out} holds no checkpoint to resume (no {out}/last); "
                             "start the run without --resume, or give the run's --out")
        state = ckpt.read_state(out)
        base = dict(state.get("train_config", {}))
        changed = [name for name in MODEL_FIELDS + ("preset", "tokenizer", "vocab_size", "data", "val_fraction")
                   if name in settings and settings[name] != base.get(name)]
        if changed:
            name = changed[0]
            raise UsageError(f"--{name.replace('_', '-')} {settings[name]!r} differs from the checkpoint's "
                             f"{base.get(name)!r} ({out}/last/state.json); a resumed run keeps its model and data: "
                             "drop the flag, or start a new --out")
        base.update(settings)
        base["resume"] = True
        return TrainConfig.from_dict(base)
    return TrainConfig.from_dict(settings)


def run(args) -> int:
    config = resolve_config(args)
    if args.sample_tokens < 0:
        raise UsageError(f"--sample-tokens {args.sample_tokens}: must be 0 (no sample) or more")
    if config.pipeline_stages > 1 or config.data_parallel > 1:
        return hand_off_to_parallel_runner(config, trace=getattr(args, "trace", None))
    trainer = build_trainer(config)
    try:
        result = trainer.run()
    except NonFiniteLossError as error:
        print(f"tinyllm train: error: {error}", file=sys.stderr)
        return 1
    if result.status == "interrupted":
        return 128 + result.stop_signal  # the shell convention: 130 for SIGINT, 143 for SIGTERM
    last = result.last_eval or {}
    print(f"done: step {result.step}, train loss {last.get('train', float('nan')):.4f}, "
          f"val loss {last.get('val', float('nan')):.4f}; checkpoint {config.out}/last; "
          f"sample with: tinyllm sample --ckpt {config.out}", file=sys.stderr)
    if args.sample_tokens:
        print_sample(trainer, args.sample_tokens, config.seed)
    return 0


def print_sample(trainer, max_new_tokens: int, seed: int) -> None:
    """A taste of the trained model on stdout (what `tinyllm sample` prints with the same seed)."""
    from tinyllm.commands.sample import start_ids, stream_sample  # noqa: PLC0415
    print("--- sample ---", file=sys.stderr, flush=True)
    stream_sample(trainer.model, trainer.tokenizer, "", start_ids(trainer.tokenizer, ""), max_new_tokens,
                  temperature=0.8, top_k=200, top_p=None, seed=seed, out=sys.stdout)


def hand_off_to_parallel_runner(config: TrainConfig, trace: str | None = None) -> int:
    """Pipelined / data-parallel training lives in parallel/ (MPI); this only starts it."""
    try:
        import mpi4py  # noqa: F401, PLC0415
    except ImportError:
        raise UsageError("--pipeline-stages / --data-parallel above 1 need MPI: install the mpi extra: "
                         "pip install 'tinyllm[mpi]', then launch with mpiexec -n N tinyllm train ...") from None
    try:
        from parallel.runner import run_pipeline  # noqa: PLC0415
    except ImportError as error:
        raise UsageError(f"pipeline training is not available in this installation ({error})") from None
    return int(run_pipeline(config, trace=trace) or 0)
