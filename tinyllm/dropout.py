"""Where a model's dropout masks come from: `DropoutMasks`, one per model, and the masks of a batch's slices.

    masks = DropoutMasks(seed=1337)                 # a GPT makes its own (model.dropout_masks)
    with dropout_rows(model, step=5, row=0):        # a strategy, around each forward of a step
        loss = model(x, y)[1]                       # every Dropout draws DropoutKey(seed, 5, site, row)

Two schemes. "keyed" (every new run): inside a step, a layer's mask is a pure function of
the run's seed, the step, the layer's site and each element's batch row and position
(autograd/layers/dropout.py), so one process, threads, worker processes and any pipeline
layout draw the same masks for the same rows, and a checkpoint needs no generator state.
"generator" (runs begun before keyed masks, whose checkpoints hold the generator's state):
every mask is drawn in order from one seeded generator, which the checkpoint saves and
restores, so those runs resume bit for bit. That older scheme lives here only: strategies
ask `slice_sources` where each slice's masks come from, the checkpoint asks
`checkpoint_state` / `restore`, and recomputation `replay_point` / `replay`.

Left out: dropout in decoding (inference runs in eval mode), per-layer seeds.
"""
from __future__ import annotations

import contextlib
import threading

from autograd import backend
from autograd.layers.dropout import DropoutKey


class DropoutMasks:
    """Where a model's dropout layers get their masks; one per model, shared by its layers.

    Two schemes (`scheme`):

    "keyed" (every new run): within `with masks.at(step, row):`, which a training strategy
    opens around each forward of a step (tinyllm/strategy.py, threads.py, processes.py,
    parallel/engine.py), a layer's mask is DropoutKey(seed, step, site, row): a pure function
    of the run's seed, the step, the layer's site and each element's batch row and position
    (autograd/layers/dropout.py). One process, threads, worker processes and any pipeline
    layout draw the same masks for the same rows, and a checkpoint needs no generator state.
    Outside any `at()` (a model run by hand), masks come from the seeded generator below.

    "generator" (runs begun before keyed masks, whose checkpoints say so by holding the
    generator's state): every mask is drawn in order from one seeded generator, which a
    checkpoint saves and restores, on the CPU and on a GPU (moving to another device starts
    a fresh generator there from the same seed: NumPy and CuPy draw different numbers). Threads that run the model at once (tinyllm/threads.py)
    each draw from a generator of their own: `spawn(n)` seeds n generators from this one
    (advancing it), and inside `with masks.use(g):` the current thread's layers draw from g.

    Sites: each layer that draws masks takes a number from `new_site()` when it is built, in
    the order the model builds them, so every rank of a pipeline (which builds the whole
    model, then prunes it) numbers the layers alike.
    """

    SCHEMES = ("keyed", "generator")

    def __init__(self, seed: int = 0, device: str = "cpu", scheme: str = "keyed"):
        self.seed = int(seed)
        self.device = device
        self.scheme = check_scheme(scheme)
        self.sites = 0
        self._generator = backend.new_generator(self.seed, device)
        self._local = threading.local()   # .generator: this thread's override; .key: (step, row) inside at()

    def new_site(self) -> int:
        """A number for a new layer that draws masks (0, 1, 2, ... in the order they are built)."""
        self.sites += 1
        return self.sites - 1

    @contextlib.contextmanager
    def at(self, step: int, row: int):
        """Within the block, this thread's masks are those of batch rows row.. of training step `step`."""
        previous = getattr(self._local, "key", None)
        self._local.key = (int(step), int(row))
        try:
            yield self
        finally:
            self._local.key = previous

    def source(self, site: int):
        """What a layer's mask comes from now: a DropoutKey (keyed, inside at()) or a Generator."""
        key = getattr(self._local, "key", None)
        if self.scheme == "keyed" and key is not None:
            return DropoutKey(self.seed, step=key[0], site=site, row=key[1])
        return self.generator

    # ---- drawing the same masks again (activation recomputation, parallel/recompute.py) ----
    def replay_point(self) -> tuple:
        """What a second run of the forward about to run needs to draw the same masks: this
        thread's (step, row) key, and the generator's state when no key is in force."""
        key = getattr(self._local, "key", None)
        keyed = self.scheme == "keyed" and key is not None
        return key, (None if keyed else self.state())

    @contextlib.contextmanager
    def replay(self, point: tuple):
        """Within the block, masks are drawn as they were after `replay_point()`; afterwards as now."""
        key, state = point
        previous_key, now = getattr(self._local, "key", None), (self.state() if state is not None else None)
        self._local.key = key
        if state is not None:
            self.set_state(state)
        try:
            yield self
        finally:
            self._local.key = previous_key
            if now is not None:
                self.set_state(now)

    # ---- the generator (the "generator" scheme, and masks drawn outside a training step) ----
    @property
    def generator(self):
        return getattr(self._local, "generator", None) or self._generator

    def spawn(self, n: int) -> list:
        """n new generators seeded from this one (which advances by one draw)."""
        seeds = self._generator.integers(0, 2**62, size=n)
        return [backend.new_generator(int(s), self.device) for s in seeds]

    @contextlib.contextmanager
    def use(self, generator):
        """Within the block, this thread's dropout layers draw from `generator`."""
        previous = getattr(self._local, "generator", None)
        self._local.generator = generator
        try:
            yield generator
        finally:
            self._local.generator = previous

    def state(self) -> dict:
        """A JSON-serialisable snapshot of the generator, on the CPU or a GPU (backend.generator_state)."""
        return backend.generator_state(self._generator)

    def set_state(self, state: dict) -> None:
        """Continue from `state()`; a ValueError when it is another device's (the masks differ anyway)."""
        backend.set_generator_state(self._generator, state)

    def to(self, device: str) -> "DropoutMasks":
        if device != self.device:
            self.device = device
            self._generator = backend.new_generator(self.seed, device)
        return self

    # ---- the checkpoint's rng.dropout ---------------------------------------------------------
    def checkpoint_state(self) -> str | dict:
        """"keyed" (masks keyed by seed and step: no state), or the generator's state for a run
        begun before keyed masks."""
        return "keyed" if self.scheme == "keyed" else self.state()

    def restore(self, saved) -> str | None:
        """Continue a checkpoint's scheme: "keyed", or (older code's checkpoint: its generator's state)
        the generator exactly where it stopped. A generator state saved on another device (a run moved
        between CPU and GPU) cannot continue there: the generator restarts from the seed, and the
        returned note says so (None otherwise)."""
        if saved == "keyed":
            self.scheme = "keyed"
            return None
        self.scheme = "generator"
        if saved is None:
            return None
        try:
            self.set_state(saved)
        except ValueError as error:
            return f"dropout masks restart from the seed ({error})"
        return None


def check_scheme(scheme: str) -> str:
    if scheme not in DropoutMasks.SCHEMES:
        raise ValueError(f"dropout mask scheme {scheme!r}: use one of {', '.join(DropoutMasks.SCHEMES)}")
    return scheme


def dropout_rows(model, step: int | None, row: int):
    """The context in which `model`'s forward draws the dropout masks of batch rows row.. of `step`.

    A no-op for a model without dropout masks, or when step is None (masks from the generator).
    """
    masks = getattr(model, "dropout_masks", None)
    if masks is None or step is None:
        return contextlib.nullcontext()
    return masks.at(step, row)




def slice_sources(model, step: int | None, first_rows: list) -> list:
    """Where each slice of a step's batch draws its masks (a MaskSource per slice; `first_rows`: where
    each slice starts in the step's whole batch): the step and its rows when the masks are keyed; for
    the "generator" scheme of older runs (or no step), a generator per slice spawned from the model's,
    as before keyed masks (so those runs resume exactly)."""
    masks = getattr(model, "dropout_masks", None)
    if masks is None or (masks.scheme == "keyed" and step is not None):
        generators = [None] * len(first_rows)
    else:
        generators = masks.spawn(len(first_rows))
    return [MaskSource(g, step, row) for g, row in zip(generators, first_rows)]


class MaskSource:
    """Where a slice's dropout masks come from: its own generator, or the step and its first row."""

    def __init__(self, generator, step: int | None, row: int):
        self.generator, self.step, self.row = generator, step, row

    def using(self, model):
        if self.generator is not None:
            return model.dropout_masks.use(self.generator)
        return dropout_rows(model, self.step, self.row)
