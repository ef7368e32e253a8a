"""The engine's per-thread switches: whether ops record the graph, and how hard backward checks.

    with no_grad():              ops record nothing (evaluation, sampling, optimizer steps)
    with enable_grad():          recording back on, inside a no_grad region
    with debug_backward():       backward checks what the default cannot afford (see below)
    with saved_array_checks(False):   no guard on the arrays Functions save (benchmarks, hot loops)

Each switch is a context manager and a decorator, and belongs to the thread that sets it: a
new thread starts recording, without debug checks, with the saved-array guard on. So threads
can build and backpropagate their own graphs over the same parameters at once
(tinyllm/threads.py), and a test's debug region never leaks into another thread.

Left out: process-wide settings (set the switch in each thread or worker that needs it).
"""
from __future__ import annotations

import contextlib
import threading


class _ModeState(threading.local):
    recording = True          # ops record the graph (False inside no_grad)
    debug = False             # backward runs its debug checks (debug_backward)
    check_saved = True        # Functions' saved arrays are guarded (saved_array_checks)


state = _ModeState()   # read by Function.apply and the backward pass on every op


def grad_enabled() -> bool:
    """Whether ops on this thread record the graph (False inside no_grad())."""
    return state.recording


def debug_enabled() -> bool:
    """Whether backward on this thread runs its debug checks (inside debug_backward())."""
    return state.debug


class _Switch(contextlib.ContextDecorator):
    """Set one attribute of `state` for a block, and put the previous value back after it."""
    attribute = ""
    value = True

    def __enter__(self):
        self._previous = getattr(state, self.attribute)
        setattr(state, self.attribute, self.value)
        return self

    def __exit__(self, *exc):
        setattr(state, self.attribute, self._previous)
        return False


class no_grad(_Switch):
    """Context manager and decorator: ops inside record no graph."""
    attribute, value = "recording", False


class enable_grad(_Switch):
    """The opposite of no_grad, for a region inside one."""
    attribute, value = "recording", True


class debug_backward(_Switch):
    """Context manager and decorator: forward and backward inside it check what the default cannot afford.

    - each Function's backward gets a private copy of its `grad`, compared with the original
      afterwards: a backward that writes into its grad is named even on CuPy, which has no
      read-only arrays (on NumPy the grad is read-only anyway);
    - what a Function saves for backward is copied when it is saved (forward inside the block)
      and compared exactly before and after its backward: any change is named, even one the
      default checksum cannot see (a permutation) and on CuPy, where the default does not run;
      and so is a backward that changes what it saved;
    - a backward that returns a gradient for an input that cannot have one (an integer array,
      or a number or array that was not a Tensor) is an error, not ignored.

    Costs a copy and a comparison of every saved array and grad, so it is for tests and
    `check_backward` (which turns it on), not for training.
    """
    attribute, value = "debug", True


class saved_array_checks(_Switch):
    """Context manager and decorator: `saved_array_checks(False)` turns the saved-array guard off
    (autograd/saved.py) for the Functions recorded inside the block; True turns it back on.

    The guard costs about 1% of a training step (docs/performance.md); switch it off to measure
    that, or in a loop you have already checked, never to silence an error it raised.
    """
    attribute = "check_saved"

    def __init__(self, enabled: bool = True):
        self.value = bool(enabled)
