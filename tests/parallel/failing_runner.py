"""The pipeline runner with one failure injected: a launcher for the failure tests, not part of tinyllm.

    mpiexec -n 2 python tests/parallel/failing_runner.py SETTINGS.json --fail 1:2:SIGTERM:eval [--result R.json]

`--fail WHO:STEP[:SIGNAL[:POINT]]` makes `WHO` (a stage number, or "rR" for world rank R
alone) raise (or, with a SIGNAL such as SIGTERM, send itself that signal; with ENOSPC, find
the disk full from then on: every checkpoint file it writes fails as a full disk fails) once,
at POINT of that step: "gradients" (before the schedule; the default), "norm" (before the norm's
all-reduce), "agreed" (just after the stop was agreed: between the step and its
evaluation), "eval" (the first evaluation batch), "save" (before the collective save),
"saved" (after it). Step 0's points are the evaluation before the first step.

It is the runner's own `main` with a PipelineLayout whose strategy is wrapped by `FailAt`:
what the production code runs, with the failure around it.
"""
import errno
import os
import signal
import sys
import time

from parallel.runner import PipelineLayout, main
from tinyllm import checkpoint as ckpt


def disk_full(path, arrays, *args, **kwargs):
    """tinyllm.checkpoint.write_tensor_file on a full disk."""
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))


class FailAt:
    """A pipeline strategy that fails once at (who, step, point); see the module docstring."""

    def __init__(self, strategy, spec):
        self.strategy = strategy
        self.spec = spec
        self.at_step = 0   # the step whose work, evaluation and save are under way

    def __getattr__(self, name):
        return getattr(self.strategy, name)

    def inject(self, point: str) -> None:
        if self.spec is None:
            return
        who, step, sig, at = self.spec
        grid = self.strategy.grid
        me = f"r{grid.rank}" if isinstance(who, str) else grid.stage
        if (who, step, at) != (me, self.at_step, point):
            return
        self.spec = None
        if sig == "ENOSPC":
            ckpt.write_tensor_file = disk_full
        elif sig is not None:   # as a scheduler stopping this rank alone would; the line times it for the tests
            print(f"failing_runner: rank {grid.rank} sends itself {sig.name} at step {step} ({point}) "
                  f"at {time.time():.3f}", file=sys.stderr, flush=True)
            os.kill(os.getpid(), sig)
        else:
            raise RuntimeError(f"injected failure on stage {grid.stage} at step {step}")

    def gradients(self, model, task, batches, step):
        self.at_step = step
        self.inject("gradients")
        return self.strategy.gradients(model, task, batches, step)

    def grad_norm(self, params):
        self.inject("norm")
        return self.strategy.grad_norm(params)

    def agree_stop(self, seen):
        stop = self.strategy.agree_stop(seen)
        self.inject("agreed")
        return stop

    def batch_loss(self, model, task, batch):
        self.inject("eval")
        return self.strategy.batch_loss(model, task, batch)

    def save(self, run_dir, **kwargs):
        self.inject("save")
        path = self.strategy.save(run_dir, **kwargs)
        self.inject("saved")
        return path


class FailingLayout(PipelineLayout):
    def __init__(self, spec):
        super().__init__()
        self.spec = spec

    def strategy(self, settings, model, optimizer):
        return FailAt(super().strategy(settings, model, optimizer), self.spec)


def parse_fail(spec: str):
    """"WHO:STEP[:SIGNAL[:POINT]]" -> (stage number or "rR", step, signal or None, point)."""
    who, step, *rest = spec.split(":")
    sig = (rest[0] if rest[0] == "ENOSPC" else signal.Signals[rest[0]]) if rest and rest[0] else None
    return (who if who.startswith("r") else int(who)), int(step), sig, (rest[1] if len(rest) > 1 else "gradients")


if __name__ == "__main__":
    argv = sys.argv[1:]
    at = argv.index("--fail")
    spec = parse_fail(argv[at + 1])
    sys.exit(main(argv[:at] + argv[at + 2:], layout=FailingLayout(spec)))
