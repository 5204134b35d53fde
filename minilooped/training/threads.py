"""Data parallelism on threads: each micro-batch split across the CPU's cores.

PyTorch keeps two cores busy with one thread pool, shared by its matrix products and its
elementwise kernels, each of which splits its rows between the threads. NumPy cannot do
that: BLAS has a thread pool of its own, which NumPy's loops never use, and a Python
thread pool beside it pays tens of microseconds for each hand-over, more than most of our
ops take (appendix A1 measures both). So the core splits the work at the coarsest grain
instead, as ``torch.nn.DataParallel`` does on GPUs and DDP does across processes:

- the micro-batch is cut into N shards along the batch dim, one per thread;
- each thread runs forward and backward of its shard on a replica of the model whose
  parameters are the same arrays (so the optimizer's in-place step updates every replica),
  with BLAS on one thread inside it;
- the replicas' gradients are then added into the model's, always in the same order.

The gradient of the mean loss over the batch is the size-weighted mean of the shards'
gradients, so the step is the same arithmetic up to the order of float additions (as with
DDP, a run with another thread count is not bit-for-bit the same run). NumPy releases
Python's global lock inside every array operation, so the threads compute in parallel;
only the Python between those operations takes turns. Dropout and other random draws come
from one generator per shard, seeded from the core's generator, so runs (and resumed runs)
repeat; gradient recording (no_grad) is a per-thread setting (tensor.py).
"""
from __future__ import annotations

import concurrent.futures
import copy
import os
import threading
import weakref

import numpy as np

import minilooped as ml

def blas_threads() -> int:
    """The number of threads BLAS would use: what OPENBLAS_NUM_THREADS (or the others) set, else the cores."""
    from threadpoolctl import threadpool_info

    counts = [lib["num_threads"] for lib in threadpool_info() if lib.get("user_api") == "blas"]
    return max(counts) if counts else (os.cpu_count() or 1)


def resolve_threads(requested: int, batch_size: int) -> int:
    """Threads for a micro-batch of ``batch_size``: ``requested``, or BLAS's count if 0."""
    if requested < 0:
        raise ValueError(f"threads={requested}: use 0 (as many as BLAS uses), 1 (off) or a positive count")
    n = requested or blas_threads()
    return max(1, min(n, batch_size))


class _OneBlasThread:
    """BLAS on one thread while at least one ThreadedDataParallel is alive, then as before."""

    def __init__(self):
        self._lock, self._users, self._limit = threading.Lock(), 0, None

    def acquire(self) -> None:
        from threadpoolctl import ThreadpoolController

        with self._lock:
            if self._users == 0:
                self._limit = ThreadpoolController().limit(limits=1, user_api="blas")
            self._users += 1

    def release(self) -> None:
        with self._lock:
            self._users -= 1
            if self._users == 0:
                self._limit.restore_original_limits()
                self._limit = None


_ONE_BLAS_THREAD = _OneBlasThread()


def _release(pool) -> None:
    _ONE_BLAS_THREAD.release()
    pool.shutdown(wait=False)


def _own_loss(model, x, y, n_loops):
    return model(x, y, n_loops=n_loops)[1]


class ThreadedDataParallel:
    """Forward and backward of a model with each batch split across ``threads`` threads."""

    def __init__(self, model, threads: int):
        if threads < 2:
            raise ValueError(f"ThreadedDataParallel needs 2 or more threads, got {threads}")
        self.model = model
        self.threads = threads
        # replicas: copies of the modules whose parameters hold the model's own arrays (the
        # memo hands deepcopy each array as its own copy); their Tensors are new, for their .grad
        shared = {id(p.data): p.data for p in model.parameters()}
        self.replicas = [copy.deepcopy(model, memo=dict(shared)) for _ in range(threads - 1)]
        # (model parameter, replica parameter) per replica, in the order named_parameters gives
        self._pairs = [list(zip(model.parameters(), replica.parameters())) for replica in self.replicas]
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=threads,
                                                           thread_name_prefix="minilooped-shard")
        # BLAS on one thread from now on, not only inside the steps: after a call on several
        # threads, OpenBLAS's workers spin for a while (~0.1 s), taking a core from the shards.
        # close() (or, failing that, garbage collection) gives BLAS its threads back.
        _ONE_BLAS_THREAD.acquire()
        self._finalizer = weakref.finalize(self, _release, self._pool)

    def close(self) -> None:
        """Give BLAS its threads back and stop the worker threads."""
        self._finalizer()

    def _run(self, fn, x, y, n_loops, device) -> tuple[float, int]:
        """``fn(model, xs, ys, n, weight)`` on each shard, on its thread; the sum of the results
        and the number of shards. ``n`` is the shard's n_loops (an int, None, or the shard's
        rows of per-sequence counts); ``weight`` is the shard's share of the batch: the batch
        mean weighs each shard's mean by its size."""
        for pairs, replica in zip(self._pairs, self.replicas):
            for p, q in pairs:
                q.data = p.data  # every step: a checkpoint load may have replaced the model's arrays
            replica.train(self.model.training)
        n = len(x)
        bounds = np.linspace(0, n, self.threads + 1).round().astype(int)
        shards = [(lo, hi) for lo, hi in zip(bounds[:-1], bounds[1:]) if hi > lo]
        # one seed per shard from the core's generator, drawn here in a fixed order
        seeds = ml.backend.generator(device).integers(2 ** 63, size=len(shards))
        models = [self.model] + self.replicas

        def task(i):
            lo, hi = shards[i]
            n_shard = n_loops[lo:hi] if np.ndim(n_loops) == 1 else n_loops  # per sequence: its rows
            with ml.backend.thread_generator(np.random.default_rng(int(seeds[i])), device):
                return fn(models[i], ml.Tensor(x[lo:hi]).to(device), ml.Tensor(y[lo:hi]).to(device), n_shard,
                          (hi - lo) / n)
        futures = [self._pool.submit(task, i) for i in range(len(shards))]
        return float(sum(f.result() for f in futures)), len(shards)  # result() re-raises a worker's error

    def forward_backward(self, x, y, n_loops, scale: float, device: str = "cpu", objective=None) -> float:
        """Add the gradient of ``scale * loss(x, y)`` to the model's .grad; returns the loss.
        ``objective(model, x, y, n_loops)`` computes the loss (default: the model's own)."""
        objective = objective or _own_loss

        def shard_step(model, xs, ys, n, weight):
            loss = objective(model, xs, ys, n)
            (loss * (scale * weight)).backward()
            return loss.item() * weight

        loss, used = self._run(shard_step, x, y, n_loops, device)
        for pairs in self._pairs[:used - 1]:                       # in thread order: a fixed sum
            for p, q in pairs:
                if q.grad is None:
                    continue
                if p.grad is None:
                    p.grad = q.grad
                else:
                    p.grad += q.grad
                q.grad = None
        return loss

    def loss(self, x, y, n_loops=None, device: str = "cpu") -> float:
        """The mean loss over the batch (no graph): the shards' losses, weighed by size."""
        def shard_loss(model, xs, ys, n, weight):
            with ml.no_grad():  # grad mode is per thread: each shard switches it off for itself
                return model(xs, ys, n_loops=n)[1].item() * weight

        return self._run(shard_loss, x, y, n_loops, device)[0]
