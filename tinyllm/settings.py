"""A run's settings: a few run-wide fields and one section per concern, each checked where it is read.

    settings = RunSettings.of(out="runs/x", data="input.txt", max_iters=500, lr=3e-4)
    settings.optim.lr, settings.loop.max_iters, settings.data.tokenizer, settings.pipeline.schedule
    settings.to_dict()          # flat: {"out": "runs/x", "lr": 0.0003, ...}, as state.json keeps it

    section    class (module)                      what it holds
    data       DataSettings (tinyllm/data.py)       corpus, tokenizer, validation split
    model      ModelSettings (tinyllm/config.py)    preset and the fields overriding it
    optim      OptimSettings (tinyllm/optim.py)     optimizer, learning-rate schedule, clipping
    loop       LoopSettings (tinyllm/trainer.py)    batch and step counts, evaluation, logging
    workers    WorkerSettings (tinyllm/workers.py)  processes or threads splitting each batch
    pipeline   PipelineSettings (here)              pipeline x data parallelism over MPI (parallel/)

Every field has one flat name, which is its flag (`max_iters` is `--max-iters`), its key in
a TOML file and in a checkpoint's state.json; the command line builds its flags from these
fields (tinyllm/commands/common.py), and a command that runs only some sections takes only
their flags (`tinyllm finetune` has no data, model or pipeline flags).

The pipeline section is plain values here; what they may be (a registered schedule, a
layout that fits the model) is known to parallel/, which checks them before a pipelined
run starts and for the command line (parallel/layout.py).

Left out: nested keys in files (the flat names are the interface), sweeps.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from tinyllm.config import ModelSettings
from tinyllm.data import DataSettings
from tinyllm.fields import ConfigError, check, is_int, is_number, is_positive_int, one_of, setting
from tinyllm.optim import OptimSettings
from tinyllm.trainer import LoopSettings
from tinyllm.workers import WorkerSettings


@dataclass(frozen=True)
class PipelineSettings:
    """Pipeline stages x data-parallel replicas over MPI (1 and 1: a run on one machine)."""

    pipeline_stages: int = setting(1, "pipeline stages (needs mpiexec and the mpi extra)")
    microbatches: int | None = setting(None, "micro-batches per step in a pipeline (default: --grad-accum)")
    schedule: str = setting("1f1b", "pipeline schedule (see `tinyllm train --help` for the registered ones)")
    virtual_stages: int | None = setting(None, "model chunks per pipeline stage, for a schedule with chunks "
                                               "(interleaved: 2 by default)")
    data_parallel: int = setting(1, "data-parallel replicas (needs mpiexec and the mpi extra)")
    partition: str = setting("uniform", "how blocks are split across pipeline stages: uniform, params or time")
    zero: int = setting(0, "1: shard the optimizer state across the --data-parallel replicas (ZeRO-1); 0: off")
    recompute: bool = setting(False, "pipeline stages keep only each block's input and recompute the block "
                                     "in backward (less memory, one more forward)")
    comm_timeout: float = setting(300.0, "seconds a pipeline rank waits for another (a message, a collective) "
                                         "before it ends the job with a message naming the wait (0 = no limit)")

    def __post_init__(self):
        for name in ("pipeline_stages", "data_parallel"):
            check(self, name, is_positive_int, "must be a positive integer")
        for name in ("microbatches", "virtual_stages"):
            check(self, name, lambda v: v is None or is_positive_int(v), "must be a positive integer")
        check(self, "schedule", lambda v: isinstance(v, str) and v != "", "must name a pipeline schedule")
        check(self, "partition", *one_of(("uniform", "params", "time")))
        check(self, "zero", lambda v: v in (0, 1), "must be 0 (off) or 1 (optimizer state sharded across replicas)")
        check(self, "zero", lambda v: v == 0 or self.data_parallel > 1,
              "shards the optimizer state across data-parallel replicas: use it with --data-parallel 2 or more")
        check(self, "recompute", lambda v: isinstance(v, bool), "must be true or false")
        check(self, "recompute", lambda v: not v or self.distributed,
              "runs in pipeline stages: use it with --pipeline-stages or --data-parallel above 1 (under mpiexec)")
        check(self, "comm_timeout", lambda v: is_number(v) and v >= 0,
              "must be 0 (no limit) or a number of seconds (e.g. 300)")

    @property
    def distributed(self) -> bool:
        """More than one rank: the run goes to parallel/ (under mpiexec)."""
        return self.pipeline_stages > 1 or self.data_parallel > 1


SECTIONS = {"data": DataSettings, "model": ModelSettings, "optim": OptimSettings, "loop": LoopSettings,
            "workers": WorkerSettings, "pipeline": PipelineSettings}


@dataclass(frozen=True)
class RunSettings:
    """Every setting of a run (see the module docstring). Saved whole in the run directory."""

    out: str = setting("runs/demo", "run directory: config, metrics, data cache, checkpoints")
    seed: int = setting(1337, "seed for weights, dropout masks and batches")
    dtype: str = setting("float32", "float32 or float64")
    device: str = setting("cpu", "cpu or cuda (CuPy)")
    resume: bool = setting(False, "continue the run in --out from its last checkpoint")
    data: DataSettings = field(default_factory=DataSettings)
    model: ModelSettings = field(default_factory=ModelSettings)
    optim: OptimSettings = field(default_factory=OptimSettings)
    loop: LoopSettings = field(default_factory=LoopSettings)
    workers: WorkerSettings = field(default_factory=WorkerSettings)
    pipeline: PipelineSettings = field(default_factory=PipelineSettings)

    def __post_init__(self):
        check(self, "out", lambda v: isinstance(v, str) and v != "", "must name a directory")
        check(self, "seed", lambda v: is_int(v) and v >= 0, "must be a non-negative integer")
        check(self, "dtype", *one_of(("float32", "float64")))
        check(self, "device", *one_of(("cpu", "cuda")))
        check(self, "resume", lambda v: isinstance(v, bool), "must be true or false")

    # ---- flat names --------------------------------------------------------------------------
    @staticmethod
    def fields(sections=None) -> dict:
        """flat name -> (section name or None for a run-wide field, dataclasses.Field), in flag order;
        `sections`: only the run-wide fields and those sections'."""
        run_wide = {f.name: (None, f) for f in dataclasses.fields(RunSettings) if f.name not in SECTIONS}
        chosen = SECTIONS if sections is None else sections
        return {**run_wide, **{f.name: (name, f) for name in chosen for f in dataclasses.fields(SECTIONS[name])}}

    @classmethod
    def from_dict(cls, values: dict) -> "RunSettings":
        """From flat names (a TOML file, a state.json, the flags); a missing one takes its default."""
        known = cls.fields()
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ConfigError(f"unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        grouped = {name: {} for name in SECTIONS}
        run_wide = {}
        for name, value in values.items():
            section = known[name][0]
            (run_wide if section is None else grouped[section])[name] = value
        return cls(**run_wide, **{name: SECTIONS[name](**grouped[name]) for name in SECTIONS})

    @classmethod
    def of(cls, **values) -> "RunSettings":
        """RunSettings.of(out="runs/x", max_iters=500): from_dict with keywords."""
        return cls.from_dict(values)

    def to_dict(self) -> dict:
        """Every field by its flat name."""
        return {name: getattr(self if section is None else getattr(self, section), name)
                for name, (section, _) in self.fields().items()}

    def replace(self, **changes) -> "RunSettings":
        """A copy with the flat-named fields in `changes` set (and checked again)."""
        return RunSettings.from_dict({**self.to_dict(), **changes})
