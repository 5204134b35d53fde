"""Continuous depth-wise batching (Relaxed Recursive Transformers, Bae et al., arXiv 2410.20672;
chapter 10).

PyTorch mirror of the NumPy core's minilooped/models/depthwise_batching.py, line by line alike.

With early exits, requests in a batch leave the loop at different depths. Plain batching
wastes the freed rows: a batch runs until its slowest request is done (or every request
runs to the last loop). But in a model whose loop applies the same weights at every
depth, one call of the shared block can serve rows at different depths. The scheduler
keeps a fixed number of slots full:

    while requests remain:
        fill every free slot with a new request:   h = enter(embed(x))   (depth 0)
        one call of the loop on all busy slots:    h = step(h)           (each row one loop deeper)
        every row at its exit depth:               logits = readout(h); the slot is freed

so every call does a full batch of useful work, and the compute is sum_i d_i row-loops
instead of (rows) x (slowest depth). The paper's oracle bound on the speed-up, with the
exit depths known in advance and nothing else costing time, is max depth / mean depth.

A request here is a context of T tokens and its exit depth d: the request needs the
next-token prediction of its last position, read out after d loops (``exit_depths``
finds d from a trained model: the first loop whose last-position prediction meets the
exit rule of adaptive.py, without freezing, since a request is looped as a whole).
Requests are whole sequences, not single decoded tokens: per-token depth-wise batching
needs a KV cache per depth, which this library's generation does not keep.

Which models: the loop must be the same function at every depth (``step(h, ctx, t)``
not depending on t) and carry one state per row: loop_residual, contractive, parcae
(its injected input e travels with the row) and recursive models without relaxation and
with CYCLE sharing. Relaxed recursive models apply a different LoRA at every depth, so
rows at different depths would need different weights in one call (the paper batches
them with a per-row adapter; not built here); SEQUENCE sharing applies other blocks at
other depths; the fully looped model's first loop restarts from the embeddings. Those
are refused with the reason.
"""
import time
from collections import deque

import numpy as np

import torch

from .early_exit import embed, head, loop_logits


def check_depth_shared(model):
    """Refuse the models whose loop is not one shared function of the state (module docstring)."""
    c = model.config
    if c.variant in ("gpt2", "fully_looped"):
        raise ValueError(f"depth-wise batching needs a loop that is the same function at every depth; "
                         f"variant={c.variant!r} " + ("has no loop." if c.variant == "gpt2" else
                                                      "restarts from the embeddings in its first loop."))
    if c.variant == "recursive" and (c.lora_rank or c.sharing != "cycle"):
        raise ValueError("depth-wise batching of a recursive model needs strictly shared loops: lora_rank=0 "
                         f"(got {c.lora_rank}: every depth has its own LoRA) and sharing='cycle' "
                         f"(got {c.sharing!r}).")


def _tensor(a, model):
    return torch.from_numpy(a).to(model.lm_head.weight.device)


def _numpy(t):
    return t.detach().cpu().numpy()


def exit_depths(model, idx, criterion="max_prob", threshold=0.5, max_loops=None):
    """(N,) exit depth of every request of idx (N, T): the first loop t whose last-position
    prediction meets the rule (adaptive.py's criteria), else max_loops."""
    from .adaptive import CRITERIA, halts

    if criterion not in CRITERIA:
        raise ValueError(f"criterion={criterion!r}: use one of {CRITERIA}.")
    was_training = model.training
    model.eval()
    with torch.no_grad():
        per_loop = loop_logits(model, _tensor(idx, model), max_loops)  # [(N, T, vocab)] per loop
    model.train(was_training)
    n = len(per_loop)
    depth = np.full(idx.shape[0], n)
    prev = None
    for t, logits in enumerate(per_loop):
        log_probs = logits[:, -1:].log_softmax(dim=-1)  # the last position: (N, 1, vocab)
        met = halts(criterion, threshold, log_probs, prev)[:, 0] & (depth == n)  # not exited before
        depth[met] = t + 1
        prev = log_probs
    return depth


class DepthwiseBatcher:
    """Continuous depth-wise batching over ``slots`` rows (module docstring)."""

    def __init__(self, model, slots):
        check_depth_shared(model)
        if slots < 1:
            raise ValueError(f"slots={slots} must be >= 1")
        self.model, self.slots = model, slots
        self.calls = 0  # calls of the loop's step, in the last run
        self.row_loops = 0  # rows x loops computed, in the last run

    def run(self, idx, depths):
        """Next-token logits (N, vocab) of every request: its last position after depths[i] loops."""
        model, trunk, blocks = self.model, self.model.transformer.trunk, self.model.transformer.h
        N, T = idx.shape
        if len(depths) != N or min(depths) < 1:
            raise ValueError("depths must give every request an exit depth >= 1")
        queue = deque(range(N))
        self.calls, self.row_loops = 0, 0
        request = np.full(self.slots, -1)  # the request in each slot; -1: free
        done = np.zeros(self.slots, dtype=int)  # loops each slot's request has run
        h = ctx = None  # (slots, T, C) NumPy states, and the context rows (Parcae's e)
        out = [None] * N
        self.loops_run = np.zeros(N, dtype=int)
        with torch.no_grad():
            while queue or (request >= 0).any():
                free = np.flatnonzero(request < 0)[:len(queue)]
                if len(free):  # new requests enter at depth 0
                    new = [queue.popleft() for _ in free]
                    h0, c0 = trunk.enter(embed(model, _tensor(idx[new], model)), blocks)
                    if h is None:
                        h = np.zeros((self.slots, *h0.shape[1:]), dtype=_numpy(h0).dtype)
                        ctx = None if c0 is None else np.zeros((self.slots, *c0.shape[1:]), dtype=h.dtype)
                    h[free] = _numpy(h0)
                    if ctx is not None:
                        ctx[free] = _numpy(c0)
                    request[free], done[free] = new, 0
                busy = np.flatnonzero(request >= 0)
                rows = _tensor(h[busy], model)
                rows_ctx = None if ctx is None else _tensor(ctx[busy], model)
                h[busy] = _numpy(trunk.step(rows, rows_ctx, blocks, 0))  # one call, rows at many depths
                done[busy] += 1
                self.calls += 1
                self.row_loops += len(busy)
                exit_ = busy[done[busy] == np.asarray(depths)[request[busy]]]
                if len(exit_):
                    exit_ctx = None if ctx is None else _tensor(ctx[exit_], model)
                    logits = head(model, trunk.readout(_tensor(h[exit_], model), exit_ctx, blocks))  # (E, T, vocab)
                    for s, z in zip(exit_, _numpy(logits[:, -1])):
                        out[request[s]] = z
                        self.loops_run[request[s]] = done[s]
                    request[exit_] = -1
        return np.stack(out)


def continuous_batching(model, idx, depths, slots):
    """All requests through a DepthwiseBatcher of ``slots`` rows: (logits (N, vocab), row-loops)."""
    batcher = DepthwiseBatcher(model, slots)
    return batcher.run(idx, depths), batcher.row_loops


def static_batching(model, idx, depths, batch_size):
    """Plain batching: groups of batch_size requests, each group looped until its slowest
    request's depth; a request reads out at its own depth. Returns (logits (N, vocab), row-loops)."""
    trunk, blocks = model.transformer.trunk, model.transformer.h
    out, row_loops = [None] * len(idx), 0
    with torch.no_grad():
        for lo in range(0, len(idx), batch_size):
            d = np.asarray(depths[lo:lo + batch_size])
            h, ctx = trunk.enter(embed(model, _tensor(idx[lo:lo + batch_size], model)), blocks)
            for t in range(int(d.max())):  # the whole group waits for its slowest request
                h = trunk.step(h, ctx, blocks, t)
                row_loops += len(d)
                exit_ = np.flatnonzero(d == t + 1)
                if len(exit_):  # read out at the requests' own depths
                    logits = _numpy(head(model, trunk.readout(h, ctx, blocks))[:, -1])  # (B, vocab)
                    for i in exit_:
                        out[lo + i] = logits[i]
    return np.stack(out), row_loops


def throughput(model, idx, depths, slots, repeat=1):
    """Requests/s and tokens/s of continuous depth-wise batching against plain batching (each
    group waiting for its slowest request, and every request at max depth), with the
    compute each spends (row-loops) and the oracle bound max depth / mean depth. Each
    schedule runs ``repeat`` times, interleaved with the others; the fastest run counts
    (on a shared machine the slower runs measure the neighbours), in wall-clock seconds and
    in this process's CPU seconds (which other processes disturb less; with one BLAS thread
    it is the work done)."""
    check_depth_shared(model)
    was_training = model.training
    model.eval()
    N, T = idx.shape
    n_max = int(model.config.n_loops)
    full = np.full(N, n_max)
    schedules = {
        "max_depth": lambda: static_batching(model, idx, full, slots)[1],
        "static": lambda: static_batching(model, idx, depths, slots)[1],
        "continuous": lambda: continuous_batching(model, idx, depths, slots)[1],
    }
    seconds = {name: float("inf") for name in schedules}  # wall clock
    cpu = {name: float("inf") for name in schedules}  # this process's CPU time: what neighbours disturb least
    row_loops = {}
    for _ in range(repeat):
        for name, fn in schedules.items():
            t0, c0 = time.perf_counter(), time.process_time()
            row_loops[name] = int(fn())
            seconds[name] = min(seconds[name], time.perf_counter() - t0)
            cpu[name] = min(cpu[name], time.process_time() - c0)
    model.train(was_training)
    results = {name: {"seconds": s, "cpu_seconds": cpu[name], "requests_per_s": N / s, "tokens_per_s": N * T / s,
                      "tokens_per_cpu_s": N * T / cpu[name], "row_loops": row_loops[name],
                      "speedup_vs_max_depth": seconds["max_depth"] / s,
                      "cpu_speedup_vs_max_depth": cpu["max_depth"] / cpu[name]} for name, s in seconds.items()}
    return {"requests": int(N), "tokens_per_request": int(T), "slots": int(slots), "max_loops": n_max,
            "repeat": int(repeat), "mean_depth": float(np.mean(depths)),
            "depth_histogram": np.bincount(depths, minlength=n_max + 1)[1:].tolist(),
            "oracle_speedup": n_max / float(np.mean(depths)), **results}


def expected_speedup(exit_probs, batch_size):
    """What the three schedules of ``throughput`` cost per request, in row-loops, when every
    request's exit depth d is drawn independently with P(d = t) = exit_probs[t - 1], t = 1 .. R,
    and the speed-ups that promises where compute is time (many requests; the last,
    partly empty calls neglected):

        max_depth   every request runs all R loops                 R
        static      a group of batch_size waits for its slowest    E[max of batch_size depths]
        continuous  each request runs its own depth                E[d]
    """
    p = np.asarray(exit_probs, dtype=float)
    if p.ndim != 1 or len(p) == 0 or (p < 0).any() or not np.isclose(p.sum(), 1.0):
        raise ValueError("exit_probs must be the probabilities of exiting after loop 1 .. R: "
                         "a non-empty 1-D list of non-negative numbers summing to 1")
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be >= 1")
    R = len(p)
    mean = float(np.arange(1, R + 1) @ p)  # E[d]
    below = np.minimum(np.concatenate(([0.0], np.cumsum(p)[:-1])), 1.0)  # P(d < t), t = 1 .. R
    group = float(np.sum(1.0 - below ** batch_size))  # E[max] = sum_t P(max >= t)
    return {"max_depth": float(R), "static": group, "continuous": mean,
            "static_vs_max_depth": R / group, "continuous_vs_max_depth": R / mean,
            "continuous_vs_static": group / mean}
