"""Array backends: NumPy on the CPU, CuPy on a CUDA device, behind one `xp` module.

This is the only module in the project that imports CuPy. Everything else asks
`get_array_module(array)` for the module that owns an array and writes its array
code once against that module. Moving data between devices happens explicitly,
here, at the edges; an op never mixes NumPy and CuPy arrays.

Which CuPy: the real one (the `gpu` extra) when it imports; with TINYLLM_FAKE_CUDA=1 the
strict CPU stand-in of autograd/testing/fakecupy.py instead, so device "cuda" exists on any machine
(the test suite runs every device test on it); with TINYLLM_FAKE_CUDA=auto (what the test
suite sets) the real one when it sees a GPU, the stand-in otherwise. `cuda_backend()` says
which one is loaded.

One device per process: `use_device(i)` makes GPU i the current device before any array is
made (parallel/ gives each MPI rank the GPU of its rank within its node).

Host copies are the slow edge on a GPU: `read_scalars(loss, norm)` reads any number of
device scalars with one copy, and a device generator's state is two integers (seed, draws)
so that a resumed run draws the same dropout masks (`new_generator`).

Left out: several devices in one process, streams and memory pools beyond CuPy's defaults.
"""
from __future__ import annotations

import ctypes
import math
import os
import sys
import time

import numpy as np

FAKE_CUDA_ENV = "TINYLLM_FAKE_CUDA"   # "1": the stand-in; "auto": real CuPy if it sees a GPU, else the stand-in


def _real_cupy():
    """(cupy, cupyx) or (None, None) when CuPy is not installed or its CUDA runtime does not load."""
    try:  # CuPy is optional: the `gpu` extra installs it.
        import cupy
        import cupyx
    except Exception:  # ImportError, or a CUDA runtime that fails to load
        return None, None
    return cupy, cupyx


def _sees_a_gpu(cupy) -> bool:
    try:
        return cupy is not None and cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # no driver
        return False


def _load_cupy():
    """(cupy module, cupyx module, which) for this process: see the module docstring."""
    mode = os.environ.get(FAKE_CUDA_ENV, "0").strip().lower()
    if mode in ("1", "true", "yes"):
        from .testing import fakecupy  # noqa: PLC0415 - a test double, only loaded when asked for
        return fakecupy.cupy, fakecupy.cupyx, "stand-in"
    cupy, cupyx = _real_cupy()
    if mode == "auto" and not _sees_a_gpu(cupy):
        from .testing import fakecupy  # noqa: PLC0415
        return fakecupy.cupy, fakecupy.cupyx, "stand-in"
    return cupy, cupyx, ("cupy" if cupy is not None else None)


_cupy, _cupyx, _CUDA_BACKEND = _load_cupy()

DEFAULT_DTYPE = np.float32
DEVICES = ("cpu", "cuda")


def cupy_loaded() -> bool:
    """True when a CuPy module is loaded, real or the stand-in (a device may still be missing)."""
    return _cupy is not None


def cuda_backend() -> str | None:
    """What device "cuda" runs on: "cupy" (real CuPy), "stand-in" (autograd/testing/fakecupy.py) or None."""
    return _CUDA_BACKEND


def cupy_available() -> bool:
    """True when CuPy (or the stand-in) is loaded and sees at least one CUDA device."""
    global _available
    if _available is None:
        _available = _cupy is not None and device_count() > 0
    return _available


_available = None   # cupy_available(), asked once: devices do not come and go within a process


def is_cupy_array(array) -> bool:
    return _cupy is not None and isinstance(array, _cupy.ndarray)


def get_array_module(array):
    """The module (numpy or cupy) that owns `array`."""
    return _cupy if is_cupy_array(array) else np


def device_of(array) -> str:
    return "cuda" if is_cupy_array(array) else "cpu"


def module_for(device: str):
    """The array module for a device name: 'cpu' -> numpy, 'cuda' -> cupy."""
    check_device(device)
    if device == "cuda":
        return _cupy
    return np


def check_device(device: str) -> None:
    if device not in DEVICES:
        raise ValueError(f"unknown device {device!r}: use 'cpu' or 'cuda'")
    if device == "cuda" and not cupy_available():
        raise RuntimeError(
            "device 'cuda' was asked for but CuPy with a CUDA device is not available: "
            "install the gpu extra (pip install 'tinyllm[gpu]') on a machine with an NVIDIA GPU, "
            "or use device 'cpu'")


def to_device(array, device: str):
    """Copy `array` to `device` ('cpu' or 'cuda'); returns it unchanged if already there."""
    check_device(device)
    if device == "cuda":
        return array if is_cupy_array(array) else _cupy.asarray(array)
    return _cupy.asnumpy(array) if is_cupy_array(array) else array


def to_numpy(array) -> np.ndarray:
    """A host (NumPy) view or copy of any array."""
    return _cupy.asnumpy(array) if is_cupy_array(array) else np.asarray(array)


def scatter_add(target, indices, values) -> None:
    """target[indices] += values, accumulating repeated indices (np.add.at / cupyx.scatter_add)."""
    if is_cupy_array(target):
        _cupyx.scatter_add(target, indices, values)
    else:
        np.add.at(target, indices, values)


def scatter_add_rows(target, ids, rows) -> None:
    """target[ids[n]] += rows[n] for every n, repeated ids accumulating: (V, C), (N,), (N, C).

    On the CPU, np.add.at walks the rows one at a time; sorting the ids and summing runs of
    equal ids with np.add.reduceat is several times faster (docs/performance.md). The sums
    are taken in a fixed order (a stable sort), so the result is the same on every run.
    """
    if is_cupy_array(target):
        _cupyx.scatter_add(target, ids, rows)
        return
    if ids.size == 0:
        return
    order = np.argsort(ids, kind="stable")
    sorted_ids = ids[order]
    starts = np.flatnonzero(np.concatenate(([True], sorted_ids[1:] != sorted_ids[:-1])))
    target[sorted_ids[starts]] += np.add.reduceat(rows[order], starts, axis=0)


def erf(x):
    """The error function, elementwise, to full double precision.

    NumPy has no erf: on the CPU we map `math.erf` over the array (exact, slower than a
    ufunc); on a GPU we use cupyx.scipy.special.erf.
    """
    if is_cupy_array(x):
        if _CUDA_BACKEND == "cupy":
            import cupyx.scipy.special  # noqa: F401, PLC0415 - loads the submodule, only on a GPU
        return _cupyx.scipy.special.erf(x)
    return np.asarray(_np_erf(x), dtype=x.dtype)


def _np_erf_scalar(v):
    return math.erf(v)


_np_erf = np.frompyfunc(_np_erf_scalar, 1, 1)


def synchronize(array=None) -> None:
    """Wait for queued GPU work (before handing a CuPy buffer to MPI or reading a clock)."""
    if _cupy is not None and (array is None or is_cupy_array(array)):
        _cupy.cuda.get_current_stream().synchronize()


def scalar_array(xp, value, dtype):
    """A 0-d array of `value` in xp's memory: a CuPy one is filled on the device, since
    cupy.asarray of a number copies it from the host (once per op that takes a number)."""
    return np.asarray(value, dtype=dtype) if xp is np else xp.full((), value, dtype=dtype)


def read_scalars(*values) -> list:
    """Python floats of `values` (numbers, NumPy scalars or one-element device arrays), read
    with at most one device-to-host copy: the device ones are gathered into one array first.

    The one sync point of a training step: its loss and gradient norm stay on the device
    until the loop needs them both (the non-finite check, the log), then come over together.
    """
    on_device = [v.reshape(()).astype(np.float64) for v in values if is_cupy_array(v)]
    if not on_device:
        return [float(v) for v in values]
    host = iter(_cupy.asnumpy(_cupy.stack(on_device)).tolist())
    return [next(host) if is_cupy_array(v) else float(v) for v in values]


# ---- devices --------------------------------------------------------------------------------

def device_count() -> int:
    """CUDA devices this process sees (CUDA_VISIBLE_DEVICES applies); 0 without CuPy or a driver."""
    try:
        return int(_cupy.cuda.runtime.getDeviceCount()) if _cupy is not None else 0
    except Exception:  # no driver, no device
        return 0


def use_device(index: int) -> None:
    """Make CUDA device `index` (0 .. device_count() - 1) current for this process: every array
    made afterwards lives there. Call it before building the model."""
    check_device("cuda")
    count = device_count()
    if not 0 <= index < count:
        raise ValueError(f"CUDA device {index} does not exist: this process sees {count} "
                         "(CUDA_VISIBLE_DEVICES may hide some)")
    _cupy.cuda.Device(index).use()


def current_device() -> int:
    """The CUDA device this process's arrays go to."""
    check_device("cuda")
    return int(_cupy.cuda.runtime.getDevice())


def device_name(index: int | None = None) -> str:
    """The name of CUDA device `index` (default: the current one), e.g. 'NVIDIA H100 80GB HBM3'."""
    index = current_device() if index is None else index
    name = _cupy.cuda.runtime.getDeviceProperties(index)["name"]
    return name.decode() if isinstance(name, bytes) else str(name)


def cuda_versions() -> dict:
    """CuPy's version and the CUDA runtime and driver it runs on ({} without CuPy), for reports."""
    if _CUDA_BACKEND != "cupy":
        return {"cupy": _CUDA_BACKEND} if _CUDA_BACKEND else {}
    runtime = _cupy.cuda.runtime
    return {"cupy": _cupy.__version__, "cuda_runtime": runtime.runtimeGetVersion(),
            "cuda_driver": runtime.driverGetVersion()}


def device_memory() -> dict:
    """CuPy's memory pool on the current device: bytes in use by arrays, and held by the pool
    (it keeps freed blocks, so its total is the high-water mark of a run: its peak). The stand-in
    keeps no account (0, 0)."""
    check_device("cuda")
    pool = _cupy.get_default_memory_pool()
    return {"used_bytes": int(pool.used_bytes()), "pool_bytes": int(pool.total_bytes())}


# ---- random generators ------------------------------------------------------------------------

class DeviceGenerator:
    """A CuPy random generator whose whole state is (seed, draws): each draw comes from a fresh
    counter-based Philox bit generator keyed by (seed, number of earlier draws).

    CuPy's generators keep their state in device memory with no way to save it, so a resumed
    run could not draw the dropout masks it would have drawn; this one restarts exactly from
    `state()`. A fresh bit generator per draw costs an allocation from CuPy's pool and one
    initialisation kernel; Philox is the bit generator whose initialisation has no skip-ahead
    (XORWOW's has), so that kernel should be small next to the draw (to be measured on a GPU;
    dropout masks keyed by position, computed in xp, would remove generator state altogether).
    """

    KIND = "tinyllm-device-philox"

    def __init__(self, seed: int):
        self.seed = int(seed)
        self.draws = 0

    def _next(self):
        bits = _cupy.random.Philox4x3210(np.random.SeedSequence([self.seed, self.draws]))
        self.draws += 1
        return _cupy.random.Generator(bits)

    def random(self, size=None, dtype=np.float64):
        return self._next().random(size, dtype=dtype)

    def standard_normal(self, size=None, dtype=np.float64):
        return self._next().standard_normal(size, dtype=dtype)

    def integers(self, low, high=None, size=None, dtype=np.int64):
        return self._next().integers(low, high, size, dtype=dtype)


def new_generator(seed: int | None, device: str = "cpu"):
    """A random generator on `device`, seeded: the same seed gives the same numbers.

    CPU: a NumPy Generator (PCG64). CUDA: a DeviceGenerator (its state is two integers).
    """
    if device == "cuda":
        check_device(device)
        return DeviceGenerator(np.random.SeedSequence().entropy if seed is None else seed)
    return np.random.default_rng(seed)


def generator_state(gen) -> dict:
    """A JSON-serialisable snapshot of a generator from new_generator (for exact resume)."""
    if isinstance(gen, DeviceGenerator):
        return {"bit_generator": DeviceGenerator.KIND, "seed": gen.seed, "draws": gen.draws}
    return gen.bit_generator.state


def set_generator_state(gen, state: dict) -> None:
    """Continue `gen` from `generator_state(...)` of a generator of the same kind (a ValueError
    names the two kinds otherwise: a CPU generator's state cannot continue a device one)."""
    kind = state.get("bit_generator") if isinstance(state, dict) else None
    if isinstance(gen, DeviceGenerator):
        if kind != DeviceGenerator.KIND:
            raise ValueError(f"a {kind!r} generator state cannot restore a CUDA generator ({DeviceGenerator.KIND})")
        gen.seed, gen.draws = int(state["seed"]), int(state["draws"])
        return
    if kind == DeviceGenerator.KIND:
        raise ValueError(f"a CUDA generator state ({kind}) cannot restore a NumPy generator "
                         f"({gen.bit_generator.state['bit_generator']})")
    gen.bit_generator.state = state


# ---- host memory ------------------------------------------------------------------------------

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3   # glibc mallopt parameters (malloc.h)
_kept_freed_memory = None


def keep_freed_memory() -> bool:
    """Ask glibc's malloc to keep freed memory for reuse; True when it took effect.

    By default glibc gives every array above 128 KiB its own mmap and returns it with
    munmap when freed, and trims the heap as soon as its top is free: a training step
    that allocates and frees the same activations every step then page-faults each of
    them in again, thousands of faults a step, serialised on the kernel's memory lock
    when several threads allocate. With arrays up to 32 MiB served from the heap and no
    trimming below 1 GiB of free top, the memory is reused from step to step instead
    (what a framework's caching allocator does). Process-wide and idempotent; does
    nothing off glibc, or when MALLOC_MMAP_THRESHOLD_ / MALLOC_TRIM_THRESHOLD_ are set.
    """
    global _kept_freed_memory
    if _kept_freed_memory is not None:
        return _kept_freed_memory
    _kept_freed_memory = False
    if not sys.platform.startswith("linux") or any(
            var in os.environ for var in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # not glibc (musl, ...)
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    _kept_freed_memory = bool(mallopt(_M_MMAP_THRESHOLD, 32 << 20) and mallopt(_M_TRIM_THRESHOLD, 1 << 30))
    return _kept_freed_memory


def gemm_gflops(dtype="float32", device: str = "cpu", n: int = 512, repeats: int = 5) -> float:
    """This machine's measured (n x n) @ (n x n) matrix-product rate in GFLOP/s, in `dtype` on `device`.

    The yardstick for a training run's achieved FLOP/s. Uses BLAS as configured (its thread
    count); the first products are left out (OpenBLAS starts slow, see docs/performance.md).
    """
    xp = module_for(device)
    a = xp.asarray(np.random.default_rng(0).standard_normal((n, n)), dtype=dtype)
    b = a.T.copy()
    for _ in range(2):
        a @ b
    synchronize(a)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    synchronize(a)
    return 2.0 * n ** 3 * repeats / (time.perf_counter() - start) / 1e9
