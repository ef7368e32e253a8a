"""`tinyllm train`: pretrain a GPT from the command line (flags are the settings' fields: commands/common.py).

Settings resolve in layers: the defaults (tinyllm/settings.py), then a `--config FILE.toml`,
then the flags given on the command line. With `--resume` the first layer is the checkpoint's own
config instead, so `tinyllm train --out DIR --resume` continues with what DIR was started
with, and any flag given changes only that setting (`--max-iters 4000` to train longer).
With `--pipeline-stages` or `--data-parallel` above 1 the run is handed to parallel/; the
pipeline flags are checked by parallel/ (its schedule registry) in every case.

Left out: hyperparameter sweeps, config inheritance between TOML files.
"""
from __future__ import annotations

import sys
from pathlib import Path

try:
    import tomllib                       # Python 3.11+
except ModuleNotFoundError:              # Python 3.10: the same parser, from PyPI (setup.cfg)
    import tomli as tomllib

from tinyllm import checkpoint as ckpt
from tinyllm import rundir
from tinyllm.build import build_run
from tinyllm.commands.common import (UsageError, add_command, add_flags, check_device, given, mpi_launch,
                                     refuse_independent_copies, settings_flags)
from tinyllm.config import MODEL_FIELDS
from tinyllm.data import absolute_paths
from tinyllm.limits import MAX_METADATA_BYTES, check_file_size
from tinyllm.settings import RunSettings
from tinyllm.train import Pretraining

EXAMPLES = """\
tinyllm train --out runs/demo                       # built-in corpus, baby preset, a few minutes on 2 cores
tinyllm train --data input.txt --out runs/shakespeare --max-iters 2000 --eval-iters 200
tinyllm train --data notes/ --data-ext .md,.txt --tokenizer bpe --vocab-size 1024 --out runs/notes
tinyllm train --data stdlib --preset llama-tiny --block-size 128 --out runs/code
tinyllm train --config runs.toml --lr 3e-4          # flags override the TOML file
tinyllm train --out runs/demo --resume --max-iters 1200
mpiexec -n 4 tinyllm train --pipeline-stages 2 --data-parallel 2 --microbatches 8 --schedule 1f1b"""

TRAIN_FLAGS = settings_flags(Pretraining.sections)
_DEFAULTS = RunSettings()


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
    add_flags(parser, TRAIN_FLAGS.values(), shown={name: "the preset's" for name in MODEL_FIELDS},
              helps={"schedule": schedule_help()})
    parser.set_defaults(handler=run)


def read_toml(path: str) -> dict:
    """Settings from a TOML file: flat keys named like the flags (dashes or underscores)."""
    try:
        check_file_size(path, MAX_METADATA_BYTES, "settings file")
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except FileNotFoundError:
        raise UsageError(f"--config {path}: no such file") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise UsageError(f"--config {path}: not valid TOML ({error})") from None
    if isinstance(raw.get("train"), dict):  # allow the settings under a [train] table
        raw = [*((k, v) for k, v in raw.items() if k != "train"), *raw["train"].items()]
    else:
        raw = list(raw.items())
    known = set(TRAIN_FLAGS)
    settings, spelled = {}, {}
    for key, value in raw:
        name = key.replace("-", "_")
        if name not in known or name == "resume":
            raise UsageError(f"--config {path}: unknown setting {key!r}; the keys are the train flags "
                             "without dashes, e.g. max_iters = 2000")
        if name in spelled:   # `max-iters` and `max_iters`, or a key at the top and under [train]
            raise UsageError(f"--config {path}: {name} is set twice ({spelled[name]!r} = {settings[name]!r} and "
                             f"{key!r} = {value!r}); keep one")
        settings[name], spelled[name] = value, key
    return settings


def resolve_config(args) -> RunSettings:
    """The run's settings from the layers: defaults (or the checkpoint's settings), TOML, flags."""
    settings = read_toml(args.config) if args.config else {}
    settings.update(given(args, TRAIN_FLAGS))
    settings = absolute_paths(settings)        # as the settings store them (so comparisons below are fair)
    if args.resume:
        out = settings.get("out", _DEFAULTS.out)
        if not (Path(out) / "last").exists():
            reason = rundir.without_last(out)
            raise UsageError(f"--resume: {out} " + (f"has no checkpoint to resume: {reason}" if reason else
                             f"holds no checkpoint to resume (no {out}/last); start the run without --resume, "
                             "or give the run's --out"))
        state = ckpt.read_state(out, flag="--out")
        if "finetune" in state:
            raise UsageError(f"--out {out}: is a finetuning run (made by `tinyllm finetune`); continue it with "
                             f"tinyllm finetune --out {out} --resume")
        base = absolute_paths(dict(state.get("train_config", {})))
        ckpt.saved_config(RunSettings, {**base, "resume": True}, Path(out) / "last" / ckpt.STATE_FILE)
        kept = [name for name, (section, _) in RunSettings.fields(("data", "model")).items() if section is not None]
        changed = [name for name in kept if name in settings and settings[name] != base.get(name)]
        if changed:
            name = changed[0]
            raise UsageError(f"--{name.replace('_', '-')} {settings[name]!r} differs from the checkpoint's "
                             f"{base.get(name)!r} ({out}/last/state.json); a resumed run keeps its model and data: "
                             "drop the flag, or start a new --out")
        base.update(settings)
        base["resume"] = True
        return RunSettings.from_dict(base)
    return RunSettings.from_dict(settings)


def run(args) -> int:
    trace = getattr(args, "trace", None)
    if mpi_launch() is not None:   # every rank resolves the flags; the runner has them agree on one error
        return hand_off_to_parallel_runner(lambda: distributed_settings(args), trace)
    config = checked_settings(args)
    if config.pipeline.distributed:   # without mpiexec: the runner says how many ranks to start
        return hand_off_to_parallel_runner(lambda: config, trace)
    trainer = build_run(config, Pretraining())
    result = trainer.run()
    if result.status == "interrupted":
        return result.exit_status  # the shell convention: 130 for SIGINT, 143 for SIGTERM
    last = result.last_eval or {}
    print(f"done: step {result.step}, train loss {last.get('train', float('nan')):.4f}, "
          f"val loss {last.get('val', float('nan')):.4f}; checkpoint {config.out}/last; "
          f"sample with: tinyllm sample --ckpt {config.out}", file=sys.stderr)
    if args.sample_tokens:
        print_sample(trainer, args.sample_tokens, config.seed)
    return 0


def checked_settings(args) -> RunSettings:
    """The run's settings (resolve_config), checked: the device, --sample-tokens, the pipeline flags, --trace."""
    config = resolve_config(args)
    check_device(config.device)
    if args.sample_tokens < 0:
        raise UsageError(f"--sample-tokens {args.sample_tokens}: must be 0 (no sample) or more")
    check_pipeline_flags(config)
    check_trace(getattr(args, "trace", None), config)
    return config


def distributed_settings(args) -> RunSettings:
    """checked_settings under mpiexec, where a run without pipeline or data-parallel flags would be N copies."""
    config = checked_settings(args)
    if not config.pipeline.distributed:
        refuse_independent_copies("train", "pass --pipeline-stages P and --data-parallel D with P x D ranks "
                                  "(docs/pipeline.md), or run it without mpiexec")
    return config


def check_trace(trace: str | None, config: RunSettings) -> None:
    """--trace FILE.json: written by pipeline runs only, into a directory that exists; checked now,
    before anything trains."""
    if trace is None:
        return
    if not config.pipeline.distributed:
        raise UsageError(f"--trace {trace}: traces are written by pipeline runs (--pipeline-stages or "
                         "--data-parallel above 1, under mpiexec); drop --trace for a one-process run")
    from parallel.runner import check_trace_path  # noqa: PLC0415 - a pipeline run needs parallel/ anyway
    check_trace_path(trace)


def print_sample(trainer, max_new_tokens: int, seed: int) -> None:
    """A taste of the trained model on stdout (what `tinyllm sample` prints with the same seed)."""
    from tinyllm.commands.sample import start_ids, stream_sample  # noqa: PLC0415
    print("--- sample ---", file=sys.stderr, flush=True)
    stream_sample(trainer.model, trainer.tokenizer, "", start_ids(trainer.tokenizer, ""), max_new_tokens,
                  temperature=0.8, top_k=200, top_p=None, seed=seed, out=sys.stdout)


def schedule_help() -> str:
    """--schedule's help: the schedules parallel/ has registered (without parallel/, the field's own help)."""
    try:
        from parallel.schedules import SCHEDULES  # noqa: PLC0415
    except ImportError:
        return TRAIN_FLAGS["schedule"].help
    return "pipeline schedule: " + ", ".join(f"{name} ({spec.title})" for name, spec in SCHEDULES.items())


def check_pipeline_flags(config: RunSettings) -> None:
    """The pipeline flags against parallel/'s schedule registry (a schedule, its chunks), in every run."""
    try:
        from parallel.schedules import check_pipeline_settings  # noqa: PLC0415
    except ImportError:
        return   # an installation without parallel/ has no pipeline to configure
    check_pipeline_settings(config.pipeline)


def hand_off_to_parallel_runner(settings, trace: str | None = None) -> int:
    """Pipelined / data-parallel training lives in parallel/ (MPI); this only starts it.
    settings() makes the run's settings on every rank (parallel.runner.agreed_settings)."""
    try:
        import mpi4py  # noqa: F401, PLC0415
    except ImportError:
        raise UsageError("--pipeline-stages / --data-parallel above 1 need MPI: install the mpi extra: "
                         "pip install 'tinyllm[mpi]', then launch with mpiexec -n N tinyllm train ...") from None
    try:
        from parallel.runner import run_pipeline  # noqa: PLC0415
    except ImportError as error:
        raise UsageError(f"pipeline training is not available in this installation ({error})") from None
    return int(run_pipeline(settings, trace=trace) or 0)
