"""BackwardError: the engine's one error for a broken contract, found during backpropagation.

Raised where the contract breaks, naming the Function, the input and the likely cause, instead
of a wrong gradient or a failure three ops later. `cause` says which contract:

    "shape", "dtype", "type"   a gradient that does not fit its input (autograd/backward.py)
    "count"                    not one gradient per input
    "in-place"                 a backward that wrote into the grad it was given
    "saved"                    an array a Function saved for backward changed before its backward
                               (autograd/saved.py)
    "saved in backward"        under debug_backward: the Function's own backward changed what it saved
    "no-gradient"              under debug_backward: a gradient for an input that cannot have one
                               (an integer array, or a number or array that was not a Tensor)
"""
from __future__ import annotations


class BackwardError(RuntimeError):
    """A contract of backpropagation was broken; the message names the Function, the input and the cause.

    `function`: the Function's name; `input_index`: the input concerned (None when it is about
    all of them, or about the output or a setting); `cause`: one of the module docstring's.
    """

    def __init__(self, message: str, function: str, cause: str, input_index: int | None = None):
        super().__init__(message)
        self.function, self.cause, self.input_index = function, cause, input_index
