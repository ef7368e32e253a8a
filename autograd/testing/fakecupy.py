"""A strict CPU stand-in for CuPy, so that every CUDA code path runs in the test suite (autograd.testing.fakecupy).

With TINYLLM_FAKE_CUDA=1 autograd/backend.py takes `cupy` and `cupyx` from here (with "auto",
what tests/conftest.py sets, when no real GPU is seen), and device "cuda" exists on any
machine, in subprocesses and mpiexec ranks too. Its arrays wrap a private NumPy array, but
behave like CuPy's wherever a CPU run would hide a GPU bug:

- No implicit conversion: np.asarray(a) raises TypeError, as CuPy's does, and so does any
  NumPy function or ufunc called on one. Real CuPy dispatches some of those to itself
  (np.less(a, 0) works there), but code that works by that accident forgot `xp`: strictness
  is the point. A NumPy scalar left of an operator (np.float32(2) * a) works, as in CuPy.
- No mixing: a NumPy array as an operand or an index raises TypeError (numbers and NumPy
  scalars are fine); so does a list as an index (CuPy would copy it to the device on every
  call), and an array used while another device is current (CuPy needs peer access).
- CuPy's names only, with CuPy's semantics: an allow-list of functions CuPy has; reductions
  give 0-d arrays, never scalars; ufunc methods only where CuPy has them; random Generators
  with no NumPy-style `.bit_generator.state`; no read-only flags; `asnumpy`, `.get()`,
  `.set()`, `cuda.Device(i).use()`, `cuda.runtime.getDeviceCount()`, streams' `synchronize()`,
  `cupyx.scatter_add`, `cupyx.scipy.special.erf`.
- Every copy counted: `copies` counts device-to-host copies (asnumpy, .get(), .item(),
  .tolist(), float()/int()/bool() or printing of an array) and host-to-device ones
  (asarray/array of host data, .set()), with the caller's file:line, for the host-copy
  budget tests (tests/device/test_host_copies.py).

TINYLLM_FAKE_CUDA_DEVICES=N pretends there are N devices (default 1; CUDA_VISIBLE_DEVICES
hides some as the CUDA runtime would); arrays remember the device current when they were
made. `__cuda_array_interface__` gives MPI the host pointer, which a host-memory MPI reads
as a CUDA-aware MPI reads device memory: the direct path, on the CPU.

Left out: whatever the project does not call (a test double, not a second backend; its
speed is NumPy's plus a Python call), memory-pool accounting (0 bytes), streams other than
the current one, kernels (RawKernel, ElementwiseKernel), fusion.
"""
from __future__ import annotations

import math
import operator
import os
import sys
import threading
import types

import numpy as np

_SCALARS = (bool, int, float, complex, np.generic)
_HERE = os.path.abspath(__file__)
_BACKEND = os.path.join(os.path.dirname(os.path.dirname(_HERE)), "backend.py")   # autograd/backend.py


# ---- copies between host and device ---------------------------------------------------------

class CopyCounter:
    """Copies between host and device since the last `reset()`, each with its caller's file:line."""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.to_host = self.to_host_bytes = self.to_device = self.to_device_bytes = 0
        self.synchronizations = 0
        self.sites = []     # "to_host 8 B item at tinyllm/trainer.py:212", in order

    def count(self, direction: str, nbytes: int, what: str) -> None:
        """One copy: direction "to_host" or "to_device"."""
        setattr(self, direction, getattr(self, direction) + 1)
        setattr(self, f"{direction}_bytes", getattr(self, f"{direction}_bytes") + int(nbytes))
        self.sites.append(f"{direction} {int(nbytes)} B {what} at {_caller()}")

    def report(self, direction: str = "to_host") -> str:
        """The sites of one direction's copies, one per line (for an assertion's message)."""
        return "\n".join(s for s in self.sites if s.startswith(direction)) or "(none)"


def _caller() -> str:
    """file:line of the first frame outside this file and backend.py: who asked for the copy."""
    frame = sys._getframe(2)
    while frame is not None and os.path.abspath(frame.f_code.co_filename) in (_HERE, _BACKEND):
        frame = frame.f_back
    if frame is None:
        return "?"
    return f"{os.path.relpath(frame.f_code.co_filename)}:{frame.f_lineno}"


copies = CopyCounter()


# ---- devices ----------------------------------------------------------------------------------

class _CurrentDevice(threading.local):
    id = 0        # like CUDA, the current device is per host thread


_current = _CurrentDevice()


def _device_count() -> int:
    n = int(os.environ.get("TINYLLM_FAKE_CUDA_DEVICES", "1"))
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return n
    count = 0
    for entry in visible.split(","):        # the runtime stops at the first invalid entry
        entry = entry.strip()
        if not entry.isdigit() or int(entry) >= n:
            break
        count += 1
    return count


def _check_device_id(device_id: int) -> int:
    device_id = int(device_id)
    if not 0 <= device_id < _device_count():
        raise RuntimeError(f"cudaErrorInvalidDevice: invalid device ordinal {device_id} "
                           f"(the stand-in has {_device_count()} device(s))")
    return device_id


class Device:
    """cupy.cuda.Device: `Device(i).use()`, or `with Device(i):` for a block."""

    def __init__(self, device=None):
        self.id = _current.id if device is None else _check_device_id(device)
        self._previous = []

    def use(self) -> None:
        _current.id = self.id

    def synchronize(self) -> None:
        copies.synchronizations += 1

    def __enter__(self):
        self._previous.append(_current.id)
        _current.id = self.id
        return self

    def __exit__(self, *exc):
        _current.id = self._previous.pop()
        return False

    def __repr__(self) -> str:
        return f"<CUDA Device {self.id}>"


class Stream:
    """cupy.cuda.Stream: the stand-in runs everything at once, so synchronize() only counts."""

    def synchronize(self) -> None:
        copies.synchronizations += 1


Stream.null = Stream()


def _get_device_properties(device_id: int) -> dict:
    _check_device_id(device_id)
    return {"name": b"tinyllm CPU stand-in for CuPy", "totalGlobalMem": 0, "multiProcessorCount": 1,
            "major": 0, "minor": 0}


# cupy.get_default_memory_pool(): the stand-in keeps no account (0 bytes)
_memory_pool = types.SimpleNamespace(used_bytes=lambda: 0, total_bytes=lambda: 0, free_all_blocks=lambda: None)


# ---- the array ---------------------------------------------------------------------------------

def _wrap(a) -> "ndarray":
    """An ndarray around the NumPy array (or scalar) `a`, on the current device; no copy."""
    out = object.__new__(ndarray)
    out._a = a if type(a) is np.ndarray else np.asarray(a)
    out._device_id = _current.id
    return out


def _host(x, role: str = "operand"):
    """x as NumPy sees it inside the stand-in: a stand-in array's data, a scalar as is; a NumPy
    array (or anything else array-like) is an error, as mixing host and device data is."""
    if isinstance(x, ndarray):
        if x._device_id != _current.id:
            raise ValueError(f"the array lives on device {x._device_id} but the current device is "
                             f"{_current.id}: peer access is unavailable in the stand-in; make the "
                             f"arrays on the device you use (cupy.cuda.Device(i).use() first)")
        return x._a
    if isinstance(x, _SCALARS) or x is None:
        return x
    if isinstance(x, np.ndarray):
        raise TypeError(f"a NumPy array {x.shape} as the {role} of a CuPy op: NumPy and CuPy arrays do not mix; "
                        "move it to the device first (xp.asarray(array)) or the device array to the host "
                        "(xp.asnumpy(array))")
    raise TypeError(f"unsupported {role} type {type(x).__name__} for a CuPy op")


def _host_args(value, role: str = "argument"):
    """_host over the arrays inside lists and tuples too (concatenate([a, b]), split points, axes)."""
    if isinstance(value, (list, tuple)):
        return type(value)(_host_args(v, role) for v in value)
    if isinstance(value, (str, slice, type, np.dtype)) or value is Ellipsis:
        return value
    return _host(value, role)


def _host_kwargs(kwargs: dict) -> dict:
    return {key: _host_args(value) for key, value in kwargs.items()}


def _host_index(key):
    """An index for the wrapped array: device arrays, ints, slices, None, Ellipsis; not host arrays or lists."""
    if isinstance(key, tuple):
        return tuple(_host_index(k) for k in key)
    if isinstance(key, list):
        raise TypeError(f"indexing a CuPy array with the list {key[:4]}...: CuPy copies it to the device on "
                        "every call; make it a device array once (xp.asarray(list))")
    if isinstance(key, slice) or key is None or key is Ellipsis:
        return key
    return _host(key, "index")


def _as_result(value, out=None):
    """A NumPy result as CuPy returns it: arrays and scalars as (0-d) device arrays; `out` when given."""
    if isinstance(out, ndarray):
        return out
    if isinstance(value, (np.ndarray, np.generic, bool, int, float)):
        return _wrap(value)                                # CuPy returns arrays where NumPy gives scalars
    if isinstance(value, (list, tuple)):
        return type(value)(_as_result(v) for v in value)
    return value


def _to_host_copy(array: "ndarray", what: str) -> np.ndarray:
    copies.count("to_host", array._a.nbytes, what)
    return array._a.copy()


class _Flags:
    def __init__(self, a: np.ndarray):
        self.c_contiguous, self.f_contiguous, self.owndata = (a.flags.c_contiguous, a.flags.f_contiguous,
                                                              a.flags.owndata)


class _MemoryPointer:
    def __init__(self, array: "ndarray"):
        self.ptr, self.device_id = array._a.ctypes.data, array._device_id


class ndarray:  # noqa: N801 - CuPy's name
    """cupy.ndarray in host memory (module docstring)."""

    __slots__ = ("_a", "_device_id", "__weakref__")
    __array_priority__ = 100
    __hash__ = None

    def __init__(self, shape, dtype=float):
        self._a = np.empty(shape, dtype=dtype)
        self._device_id = _current.id

    # ---- facts (no copy) ---------------------------------------------------------------
    shape = property(lambda self: self._a.shape)
    dtype = property(lambda self: self._a.dtype)
    ndim = property(lambda self: self._a.ndim)
    size = property(lambda self: self._a.size)
    itemsize = property(lambda self: self._a.itemsize)
    nbytes = property(lambda self: self._a.nbytes)
    strides = property(lambda self: self._a.strides)
    flags = property(lambda self: _Flags(self._a))
    data = property(lambda self: _MemoryPointer(self))
    device = property(lambda self: Device(self._device_id))
    T = property(lambda self: _wrap(self._a.T))

    def __len__(self) -> int:
        return len(self._a)

    def __iter__(self):
        if self._a.ndim == 0:
            raise TypeError("iteration over a 0-d array")
        return (self[i] for i in range(len(self._a)))

    # ---- NumPy must not take these implicitly ----------------------------------------------
    def __array__(self, *args, **kwargs):
        raise TypeError("implicit conversion of a CuPy array to a NumPy array is not allowed: "
                        "copy it explicitly with .get() or xp.asnumpy(array) (backend.to_numpy)")

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        if (method == "__call__" and len(inputs) == 2 and inputs[1] is self and not kwargs
                and isinstance(inputs[0], _SCALARS)):
            return _wrap(ufunc(inputs[0], self._a))        # np.float32(2) * a: the scalar's operator
        raise TypeError(f"numpy.{ufunc.__name__} called on a CuPy array: call it through the array's module "
                        f"(xp.{ufunc.__name__}); real CuPy dispatches some of these, which works only by accident")

    def __array_function__(self, func, types_, args, kwargs):
        raise TypeError(f"numpy.{func.__name__} called on a CuPy array: call it through the array's module "
                        f"(xp.{func.__name__}), or copy to the host first (xp.asnumpy)")

    @property
    def __cuda_array_interface__(self) -> dict:
        a = self._a
        return {"shape": a.shape, "typestr": a.dtype.str, "data": (a.ctypes.data, False), "version": 3,
                "strides": None if a.flags.c_contiguous else a.strides, "stream": None}

    # ---- copies to the host (counted) -----------------------------------------------------
    def get(self, stream=None, order="C", out=None, blocking=True) -> np.ndarray:
        host = _to_host_copy(self, "get")
        if out is not None:
            out[...] = host
            return out
        return host

    def set(self, arr, stream=None) -> None:
        if not isinstance(arr, np.ndarray):
            raise TypeError(f"set() takes a numpy.ndarray, got {type(arr).__name__}")
        if arr.shape != self.shape:
            raise ValueError(f"Shape mismatch. Old shape: {self.shape}, new shape: {arr.shape}")
        if arr.dtype != self.dtype:
            raise TypeError(f"{arr.dtype} array cannot be set to {self.dtype} array")
        copies.count("to_device", arr.nbytes, "set")
        self._a[...] = arr

    def item(self):
        if self._a.size != 1:
            raise ValueError("can only convert an array of size 1 to a Python scalar")
        return _to_host_copy(self, "item").item()

    def tolist(self):
        return _to_host_copy(self, "tolist").tolist()

    def __bool__(self) -> bool:
        if self._a.size != 1:
            raise ValueError("The truth value of an array with more than one element is ambiguous.")
        return bool(_to_host_copy(self, "bool()"))

    def __float__(self) -> float:
        return float(_to_host_copy(self, "float()").reshape(()))

    def __int__(self) -> int:
        return int(_to_host_copy(self, "int()").reshape(()))

    def __complex__(self) -> complex:
        return complex(_to_host_copy(self, "complex()").reshape(()))

    def __repr__(self) -> str:
        return repr(_to_host_copy(self, "repr()"))

    def __str__(self) -> str:
        return str(_to_host_copy(self, "str()"))

    def __format__(self, spec: str) -> str:
        host = _to_host_copy(self, "format()")
        return format(host[()] if host.ndim == 0 else host, spec)

    # ---- indexing -----------------------------------------------------------------------------
    def __getitem__(self, key):
        key, a = _host_index(key), _host(self)
        view = a[key]
        if not isinstance(view, np.ndarray):             # CuPy's a[i] is a 0-d view, not a scalar copy
            view = a[(key if isinstance(key, tuple) else (key,)) + (Ellipsis,)]
        return _wrap(view)

    def __setitem__(self, key, value) -> None:
        _host(self)[_host_index(key)] = _host(value, "value")


def _binary(op, reflected: bool = False):
    def method(self, other):
        if not isinstance(other, (ndarray, np.ndarray) + _SCALARS):
            return NotImplemented                          # e.g. a Tensor: its reflected operator runs
        a, b = _host(self), _host(other)
        return _wrap(op(b, a) if reflected else op(a, b))
    return method


def _inplace(op):
    def method(self, other):
        if not isinstance(other, (ndarray, np.ndarray) + _SCALARS):
            return NotImplemented
        op(_host(self), _host(other))
        return self
    return method


for _name in ("add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "matmul", "and", "or", "xor",
              "lshift", "rshift"):
    _op = getattr(operator, f"__{_name}__")
    setattr(ndarray, f"__{_name}__", _binary(_op))
    setattr(ndarray, f"__r{_name}__", _binary(_op, reflected=True))
    setattr(ndarray, f"__i{_name}__", _inplace(getattr(operator, f"__i{_name}__")))
for _name in ("lt", "le", "gt", "ge", "eq", "ne"):
    setattr(ndarray, f"__{_name}__", _binary(getattr(operator, _name)))
for _name, _op in (("neg", operator.neg), ("pos", operator.pos), ("abs", operator.abs), ("invert", operator.invert)):
    setattr(ndarray, f"__{_name}__", lambda self, _op=_op: _wrap(_op(_host(self))))


def _method(name: str):
    def method(self, *args, **kwargs):
        out = kwargs.get("out")
        result = getattr(_host(self), name)(*_host_args(args), **_host_kwargs(kwargs))
        return _as_result(result, out)
    method.__name__ = name
    return method


# the ndarray methods CuPy has and the project may call; reductions give 0-d arrays
for _name in ("all", "any", "argmax", "argmin", "argsort", "astype", "clip", "conj", "copy", "cumsum", "dot",
              "fill", "flatten", "max", "mean", "min", "nonzero", "prod", "ravel", "repeat", "reshape", "round",
              "sort", "squeeze", "std", "sum", "swapaxes", "take", "transpose", "var", "view"):
    setattr(ndarray, _name, _method(_name))


# ---- ufuncs and functions ---------------------------------------------------------------------

class ufunc:  # noqa: N801 - CuPy's name
    """A cupy.ufunc: called like NumPy's; its methods only where CuPy has them."""

    _METHODS = {"reduce": ("add", "multiply"), "accumulate": ("add", "multiply"), "reduceat": ("add",),
                "at": ("add", "subtract", "maximum", "minimum")}

    def __init__(self, np_ufunc):
        self._np = np_ufunc
        self.__name__ = self.name = np_ufunc.__name__
        self.nin, self.nout = np_ufunc.nin, np_ufunc.nout

    def __call__(self, *args, **kwargs):
        out = kwargs.get("out")
        return _as_result(self._np(*_host_args(args), **_host_kwargs(kwargs)), out)

    def _method(self, method: str, *args, **kwargs):
        if self.name not in self._METHODS[method]:
            raise NotImplementedError(f"`{self.name}.{method}` is not supported yet (as in CuPy)")
        return _as_result(getattr(self._np, method)(*_host_args(args), **_host_kwargs(kwargs)), kwargs.get("out"))

    def at(self, a, indices, b=None) -> None:
        if self.name not in self._METHODS["at"]:
            raise NotImplementedError(f"`{self.name}.at` is not supported yet (as in CuPy)")
        self._np.at(_host(a), _host_index(indices), _host(b, "value"))

    def outer(self, A, B, **kwargs):
        return _as_result(self._np.outer(_host(A), _host(B), **kwargs))

    def __repr__(self) -> str:
        return f"<ufunc '{self.name}'>"


for _name in ("reduce", "accumulate", "reduceat"):
    setattr(ufunc, _name, lambda self, *args, _name=_name, **kwargs: self._method(_name, *args, **kwargs))


UFUNCS = ("abs", "absolute", "add", "arctan2", "bitwise_and", "bitwise_or", "bitwise_xor", "ceil", "cos", "divide",
          "equal", "exp", "expm1", "floor", "floor_divide", "fmax", "fmin", "greater", "greater_equal", "invert",
          "isfinite", "isinf", "isnan", "less", "less_equal", "log", "log1p", "logaddexp", "logical_and",
          "logical_not", "logical_or", "logical_xor", "maximum", "minimum", "multiply", "negative", "not_equal",
          "power", "reciprocal", "remainder", "right_shift", "rint", "sign", "sin", "sqrt", "square", "subtract",
          "tanh", "true_divide")
FUNCTIONS = ("all", "allclose", "amax", "amin", "any", "arange", "argmax", "argmin", "argsort", "array_equal",
             "array_split", "broadcast_to", "clip", "concatenate", "copyto", "count_nonzero", "cumprod", "cumsum",
             "diff", "dot", "einsum", "empty", "empty_like", "expand_dims", "eye", "flatnonzero", "flip", "full",
             "full_like", "identity", "isclose", "linspace", "matmul", "max", "mean", "min", "moveaxis",
             "nonzero", "ones", "ones_like", "outer", "partition", "prod", "ravel", "repeat", "reshape", "roll",
             "searchsorted", "sort", "split", "squeeze", "stack", "std", "sum", "swapaxes", "take",
             "take_along_axis", "tensordot", "tile", "transpose", "tril", "triu", "unique", "var", "where",
             "zeros", "zeros_like")
PASSED_THROUGH = ("bool_", "can_cast", "complex64", "complex128", "dtype", "e", "finfo", "float16", "float32",
                  "float64", "floating", "iinfo", "inf", "int8", "int16", "int32", "int64", "integer", "intp",
                  "issubdtype", "nan", "newaxis", "number", "pi", "promote_types", "result_type", "uint8",
                  "uint16", "uint32", "uint64")


def _function(name: str):
    np_function = getattr(np, name)

    def function(*args, **kwargs):
        out = kwargs.get("out")
        return _as_result(np_function(*_host_args(args), **_host_kwargs(kwargs)), out)
    function.__name__ = name
    return function


def asarray(a, dtype=None, order=None):
    """Device data as it is (cast when dtype says so); host data copied to the device (counted)."""
    if isinstance(a, ndarray):
        return a if dtype is None or np.dtype(dtype) == a.dtype else a.astype(dtype)
    if isinstance(a, (list, tuple)) and any(isinstance(v, ndarray) for v in a):
        return _wrap(np.array(_host_args(a), dtype=dtype))   # device arrays stacked on the device
    host = np.array(a, dtype=dtype, order=order or "K")
    copies.count("to_device", host.nbytes, "asarray")
    return _wrap(host)


def array(obj, dtype=None, copy=True, order="K"):
    if isinstance(obj, ndarray):
        return obj.astype(dtype or obj.dtype, copy=copy)
    return asarray(obj, dtype=dtype, order=order)


def ascontiguousarray(a, dtype=None):
    return _wrap(np.ascontiguousarray(_host(asarray(a)), dtype=dtype))


def asnumpy(a, stream=None, order="C", out=None) -> np.ndarray:
    if isinstance(a, ndarray):
        host = _to_host_copy(a, "asnumpy")
        if out is not None:
            out[...] = host
            return out
        return host
    return np.asarray(a, order=order)


def get_array_module(*args):
    return cupy if any(isinstance(a, ndarray) for a in args) else np


# ---- random --------------------------------------------------------------------------------

class BitGenerator:
    """cupy.random's bit generators: seeded through numpy.random.SeedSequence, as CuPy's are.
    The numbers come from NumPy's Philox on the host; they are not the numbers real CuPy draws."""

    def __init__(self, seed=None, *, size=-1):
        seed_seq = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
        self._numpy = np.random.Generator(np.random.Philox(seed_seq))


XORWOW = MRG32k3a = Philox4x3210 = BitGenerator   # one family here: the names are CuPy's


class Generator:
    """cupy.random.Generator: draws device arrays; its state is on the device, with no NumPy-style
    `bit_generator.state` to read or write."""

    def __init__(self, bit_generator: BitGenerator):
        self._numpy = bit_generator._numpy

    def random(self, size=None, dtype=np.float64, out=None):
        return _as_result(self._numpy.random(size, dtype=dtype), out)

    def standard_normal(self, size=None, dtype=np.float64, out=None):
        return _as_result(self._numpy.standard_normal(size, dtype=dtype), out)

    def uniform(self, low=0.0, high=1.0, size=None, dtype=np.float64):
        return _wrap(self._numpy.uniform(low, high, size).astype(dtype))

    def integers(self, low, high=None, size=None, dtype=np.int64, endpoint=False):
        return _wrap(self._numpy.integers(low, high, size, dtype=dtype, endpoint=endpoint))


def default_rng(seed=None) -> Generator:
    return Generator(XORWOW(seed))


# ---- the namespaces -------------------------------------------------------------------------

def _namespace(name: str, doc: str, **members) -> types.ModuleType:
    module = types.ModuleType(name, doc)
    for key, value in members.items():
        setattr(module, key, value)
    return module


cupy = _namespace(
    "cupy", "The CPU stand-in for CuPy (autograd/testing/fakecupy.py): CuPy's names only.",
    ndarray=ndarray, ufunc=ufunc, asarray=asarray, array=array, ascontiguousarray=ascontiguousarray,
    asnumpy=asnumpy, get_array_module=get_array_module, get_default_memory_pool=lambda: _memory_pool,
    **{name: ufunc(getattr(np, name)) for name in UFUNCS},
    **{name: _function(name) for name in FUNCTIONS},
    **{name: getattr(np, name) for name in PASSED_THROUGH})
cupy.cuda = _namespace(
    "cupy.cuda", "Devices and streams of the stand-in.",
    Device=Device, Stream=Stream, get_current_stream=lambda: Stream.null, get_device_id=lambda: _current.id,
    runtime=_namespace("cupy.cuda.runtime", "The CUDA runtime calls the project makes.",
                       getDeviceCount=_device_count, getDevice=lambda: _current.id,
                       setDevice=lambda i: Device(i).use(), getDeviceProperties=_get_device_properties,
                       memGetInfo=lambda: (0, 0)))
cupy.random = _namespace(
    "cupy.random", "Random Generators of the stand-in.",
    default_rng=default_rng, Generator=Generator, BitGenerator=BitGenerator, XORWOW=XORWOW,
    MRG32k3a=MRG32k3a, Philox4x3210=Philox4x3210)


def _scatter_add(a: ndarray, slices, value) -> None:
    """cupyx.scatter_add: a[slices] += value, repeated indices accumulating."""
    np.add.at(_host(a), _host_index(slices), _host(value, "value"))


_erf_scalar = np.frompyfunc(math.erf, 1, 1)


def _erf(x: ndarray) -> ndarray:
    return _wrap(_erf_scalar(_host(x)).astype(x.dtype))


cupyx = _namespace(
    "cupyx", "cupyx of the stand-in.", scatter_add=_scatter_add,
    scipy=_namespace("cupyx.scipy", "", special=_namespace("cupyx.scipy.special", "", erf=_erf)))
