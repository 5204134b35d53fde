"""The array backend: the one place that chooses NumPy or CuPy.

Every other file of the from-scratch core takes its array module from here, so the
whole engine runs unchanged on a GPU: an array on the GPU is a ``cupy.ndarray``, and
``array_module(a)`` hands back ``cupy`` for it and ``numpy`` otherwise. CuPy is
imported lazily: a machine without a GPU never needs it installed.

A test (tests/test_layering.py) checks that no other core file imports numpy or cupy.
"""
from __future__ import annotations

import contextlib as _contextlib
import os as _os
import threading as _threading

import numpy

# `np` is the host (CPU) array module; exported so that the rest of the core never
# has to import numpy itself.
np = numpy

_cupy = None  # the cupy module once imported, False if it cannot be


class DeviceError(RuntimeError):
    """Raised when CuPy or a GPU is asked for but is not there."""


def _import_cupy():
    global _cupy
    if _cupy is None:
        try:
            import cupy  # noqa: F401  (the one place cupy is imported)

            cupy.cuda.runtime.getDeviceCount()
            _cupy = cupy
        except Exception as exc:  # ImportError, or CUDA runtime errors without a GPU
            _cupy = False
            _cupy_error[0] = f"{type(exc).__name__}: {exc}"
    return _cupy or None


_cupy_error = [""]


def cuda_available() -> bool:
    """True when CuPy imports and sees at least one GPU."""
    return _import_cupy() is not None


def cupy_module():
    """The cupy module, or a DeviceError that says how to get it."""
    cp = _import_cupy()
    if cp is None:
        raise DeviceError(
            "device 'cuda' needs CuPy and an NVIDIA GPU, but CuPy is not usable here "
            f"({_cupy_error[0] or 'not installed'}). Install it with "
            "`pip install -e \".[gpu]\"` (cupy-cuda12x) on a machine with a GPU, "
            "or keep the tensor on device 'cpu'."
        )
    return cp


def array_module(a):
    """numpy or cupy, whichever owns array ``a``."""
    if isinstance(a, numpy.ndarray) or numpy.isscalar(a):
        return numpy
    cp = _cupy or None
    if cp is not None and isinstance(a, cp.ndarray):
        return cp
    return numpy


def device_of(a) -> str:
    """'cpu' for a NumPy array, 'cuda' for a CuPy array."""
    return "cpu" if array_module(a) is numpy else "cuda"


def module_for(device: str):
    """The array module of a device name: 'cpu' -> numpy, 'cuda' -> cupy."""
    device = normalize_device(device)
    return numpy if device == "cpu" else cupy_module()


def normalize_device(device) -> str:
    name = str(device).split(":")[0]
    if name not in ("cpu", "cuda"):
        raise ValueError(f"unknown device {device!r}: use 'cpu' or 'cuda'")
    return name


def to_device(a, device: str):
    """Copy array ``a`` to ``device`` (no copy when it is already there)."""
    device = normalize_device(device)
    if device == device_of(a):
        return a
    if device == "cuda":
        return cupy_module().asarray(a)
    return a.get()  # cupy -> numpy


def to_numpy(a):
    """A NumPy array with the values of ``a`` (copied from the GPU if needed)."""
    return a if array_module(a) is numpy else a.get()


# ---------------------------------------------------------------- random numbers
# One generator per device, seeded together by manual_seed, so that dropout and
# parameter initialisation are reproducible.
_generators: dict[str, object] = {}


def manual_seed(seed: int) -> None:
    _generators.clear()
    _generators["cpu"] = numpy.random.default_rng(seed)
    _generators["_seed"] = seed
    if _cupy:
        _generators["cuda"] = _cupy.random.default_rng(seed)


_thread_generators = _threading.local()  # per-thread overrides (training.threads): device -> generator


def generator(device: str = "cpu"):
    device = normalize_device(device)
    override = getattr(_thread_generators, "by_device", None)
    if override and device in override:
        return override[device]
    if device not in _generators:
        seed = _generators.get("_seed", None)
        if device == "cpu":
            _generators["cpu"] = numpy.random.default_rng(seed)
        else:
            _generators["cuda"] = cupy_module().random.default_rng(seed)
    return _generators[device]


@_contextlib.contextmanager
def thread_generator(gen, device: str = "cpu"):
    """Within the block, ``generator(device)`` returns ``gen`` on this thread (only).

    The threads that split a batch (training.threads) each draw dropout masks from their
    own generator: one shared by all would hand out numbers in whatever order the threads
    happen to ask, and runs would not repeat.
    """
    device = normalize_device(device)
    previous = getattr(_thread_generators, "by_device", None)
    _thread_generators.by_device = {**(previous or {}), device: gen}
    try:
        yield gen
    finally:
        _thread_generators.by_device = previous


# ------------------------------------------------------------------------ dtypes
float32 = numpy.dtype("float32")
float64 = numpy.dtype("float64")
float16 = numpy.dtype("float16")


def is_float(dtype) -> bool:
    return numpy.dtype(dtype).kind == "f"


def as_dtype(dtype):
    return numpy.dtype(dtype)


# ------------------------------------------------------------- the allocator
# NumPy asks malloc for every temporary it makes. glibc serves a request above its "mmap
# threshold" (128 KB at first) with a fresh mmap and hands it back to the kernel on free;
# the next temporary of that size is a fresh mapping again, and every 4 KB page of it is a
# page fault that the kernel fills with zeros before NumPy overwrites it. A training step
# makes thousands of such temporaries. Raising the threshold (and the trim threshold, which
# returns freed heap memory to the kernel) keeps freed blocks in the heap for the next
# request: the same arithmetic, 10-20% less time per step on small models. PyTorch does
# the same with its own caching allocator.
#
# It changes the whole process's malloc, so importing minilooped does not do it: training
# (minilooped.training.loop.train) and the benchmarks (minilooped.bench) call
# tune_allocator() when they start. Set MINILOOPED_TUNE_MALLOC=0 to leave malloc as is.
MALLOC_MMAP_THRESHOLD = 32 * 2 ** 20   # glibc's maximum on 64-bit: larger blocks still use mmap
MALLOC_TRIM_THRESHOLD = 256 * 2 ** 20  # keep up to this much freed memory at the top of the heap

allocator_tuned = False  # True once tune_allocator() has changed malloc's thresholds


def tune_allocator() -> bool:
    """Tell glibc's malloc to keep freed blocks for reuse (see above); False where not glibc
    or where MINILOOPED_TUNE_MALLOC=0. Process-wide; training and the benchmarks call it."""
    global allocator_tuned
    import ctypes
    import sys

    if _os.environ.get("MINILOOPED_TUNE_MALLOC", "1") == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others: no mallopt
        return False
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # from <malloc.h>
    allocator_tuned = bool(mallopt(M_MMAP_THRESHOLD, MALLOC_MMAP_THRESHOLD)
                           and mallopt(M_TRIM_THRESHOLD, MALLOC_TRIM_THRESHOLD))
    return allocator_tuned


# --------------------------------------------------------------- blocked loops
# An elementwise formula of several steps, written with whole arrays, makes one pass over
# memory per step and allocates one temporary per step. Run block by block on pieces that
# fit in the L2 cache, every step after the first reads from cache. Since NumPy releases
# the GIL inside its loops, the blocks can also run on several threads at once -- but in a
# training step that is slower, not faster: between two matrix products OpenBLAS's worker
# threads spin, waiting for the next one, and a thread of ours competes with them for the
# same cores (appendix A1 measures it). So the blocked loops use one thread unless
# MINILOOPED_NUM_THREADS asks for more, and BLAS keeps the cores.
import concurrent.futures as _futures
import contextvars as _contextvars

BLOCK = 65536  # elements per block: a few float32 arrays of this size fit in L2 together; smaller
               # blocks lose more to the per-call overhead of NumPy than they gain in cache hits

_pool = [None, 0]


def num_threads() -> int:
    """Threads for the blocked loops: MINILOOPED_NUM_THREADS, else 1 (see above)."""
    value = _os.environ.get("MINILOOPED_NUM_THREADS", "")
    return int(value) if value.isdigit() and int(value) > 0 else 1


def for_blocks(fn, n: int, block: int | None = None, xp=numpy) -> None:
    """Call ``fn(lo, hi)`` for consecutive blocks ``[lo, hi)`` that cover ``range(n)``.

    Each thread takes a contiguous run of blocks. On CuPy the whole range is one call:
    the GPU has its own parallelism and no cache to block for.
    """
    block = max(1, int(BLOCK if block is None else block))
    if xp is not numpy or n <= block:
        fn(0, n)
        return
    starts = list(range(0, n, block))
    threads = min(num_threads(), len(starts))

    def run(group):
        for lo in group:
            fn(lo, min(lo + block, n))

    if threads <= 1:
        run(starts)
        return
    if _pool[0] is None or _pool[1] != threads:
        _pool[0] = _futures.ThreadPoolExecutor(max_workers=threads - 1, thread_name_prefix="minilooped")
        _pool[1] = threads
    size = -(-len(starts) // threads)
    groups = [starts[i:i + size] for i in range(0, len(starts), size)]
    # each worker runs in a copy of the caller's context, so that np.errstate (and any
    # other context variable) applies inside the blocks as it does outside
    pending = [_pool[0].submit(_contextvars.copy_context().run, run, g) for g in groups[1:]]
    run(groups[0])
    for f in pending:
        f.result()  # re-raises an exception from a worker thread

