"""Adaptive exit: each position stops looping when its prediction has settled (chapter 10).

NumPy core; the PyTorch mirror minilooped/torch/models/adaptive.py reads line by line alike.

After every loop t the readout gives each position a next-token distribution
p_t = softmax(lm_head(ln_f(readout(h_t)))), and a position halts when

    "kl"        KL(p_{t-1} || p_t) < threshold     successive loops agree (Huginn's zero-shot
                                                    exit criterion, Geiping et al., arXiv
                                                    2502.05171; default 1e-3 in their code)
    "max_prob"  max_v p_t(v) >= threshold          the model is confident (the confidence rule
                                                    of Relaxed Recursive Transformers' early
                                                    exits, Bae et al., arXiv 2410.20672)

or when it reaches max_loops. "kl" needs two loops to compare, so its earliest exit is
after loop 2 (Huginn compares loop 1 with the uniform distribution, which amounts to the
same thing); "max_prob" can exit after loop 1. A halted position's logits are those of
its exit loop.

What a halted position is afterwards: its state is frozen, h_{t+1} = h_t ("copied
forward", as Huginn carries an exited token's state forward), and it keeps taking part
in attention: the later loops' keys and values of that position are computed from its
frozen state. The other choices are worse: dropping the position from attention changes
what every later position sees (a context that shrinks as tokens exit), and keeping the
keys and values of its exit loop forever mixes depths within one loop. Freezing keeps
each loop a function of states that exist, is what a KV cache of the exit state gives a
decoder, and at a threshold that never triggers is exactly the plain forward.

Implementation: the trunk's step runs on the whole batch and ``where(active, h_new, h)``
keeps the halted positions' states (trunk.py's enter / step / readout, so every looped
variant works alike). The cost: halted positions still go through the step, and every
loop adds a readout through the head to decide. Two savings are real, and exact:

- once every position of the batch has halted, the loop stops;
- with ``gather=True`` the MLP of the loop's last block runs on the active positions
  only (gathered into one short batch, then scattered back): a halted position's output
  of that MLP is thrown away, and nothing later in the loop reads it. The MLP is two
  thirds of a block's weight products (8 C^2 of 12 C^2 per position). Attention is not
  gathered: its keys and values come from every position, frozen ones included. A block
  applied more than once per loop (SEQUENCE sharing), or earlier than last, keeps its
  whole MLP, since later blocks of the loop read its output.

So tokens/s stays well above what the mean loop count promises only when few positions
halt; a decoder that skips halted positions altogether (with a KV cache; or the
depth-wise batching of depthwise_batching.py) turns exits into speed in full.
"""
import time

import numpy as np

import minilooped as ml
import minilooped.nn as nn
import minilooped.functional as F

from .early_exit import check_looped, embed, head

CRITERIA = ("kl", "max_prob")


def _mask(active, like):
    """The (B, T) NumPy boolean ``active`` as a (B, T, 1) tensor on ``like``'s device."""
    return ml.Tensor(active[..., None]).to(like.device)


def _tensor(a, like):
    """A NumPy array as a tensor on the device of ``like`` (a tensor, or a model)."""
    device = like.lm_head.weight.device if isinstance(like, nn.Module) else like.device
    return ml.Tensor(a).to(device)


def last_block(model, t):
    """The block that ends loop t and is applied once in it (its MLP can be gathered), or None."""
    c = model.config
    if c.variant == "fully_looped":
        order = list(range(c.n_layer))
    elif c.variant == "recursive":
        order = model.transformer.trunk.order[t * c.n_layer:(t + 1) * c.n_layer]
    else:
        order = list(range(c.loop_start, c.loop_end))
    return model.transformer.h[order[-1]] if order.count(order[-1]) == 1 else None


class ActiveRowsMLP(nn.Module):
    """A block's MLP computed on the active positions only; zeros at the halted ones, whose
    outputs the loop throws away (module docstring)."""

    def __init__(self, mlp, active):
        super().__init__()
        self.mlp = mlp
        self.active = active  # (B, T) NumPy booleans

    def forward(self, x, relax=None):
        rows = _tensor(x.detach().cpu().numpy()[self.active][None], self.mlp.c_fc.weight)  # (1, N_active, C)
        y = self.mlp(rows, relax=relax).detach().cpu().numpy()[0]  # (N_active, C)
        out = np.zeros(tuple(x.shape), dtype=y.dtype)
        out[self.active] = y  # scattered back: (B, T, C)
        return _tensor(out, self.mlp.c_fc.weight)


def gathered_step(model, h, ctx, t, active):
    """The trunk's step with the last block's MLP on the active positions only."""
    trunk, blocks = model.transformer.trunk, model.transformer.h
    block = last_block(model, t)
    if block is None or active.all():
        return trunk.step(h, ctx, blocks, t)
    mlp = block.mlp
    block.mlp = ActiveRowsMLP(mlp, active)
    try:
        return trunk.step(h, ctx, blocks, t)
    finally:
        block.mlp = mlp


def halts(criterion, threshold, log_probs, prev_log_probs):
    """(B, T) NumPy booleans: which positions meet the criterion after this loop."""
    if criterion == "max_prob":
        score = log_probs.amax(dim=-1).exp()  # max_v p_t(v): (B, T)
        return score.detach().cpu().numpy() >= threshold
    if prev_log_probs is None:  # KL needs the previous loop's prediction
        return np.zeros(log_probs.shape[:2], dtype=bool)
    kl = (prev_log_probs.exp() * (prev_log_probs - log_probs)).sum(dim=-1)  # KL(p_{t-1} || p_t): (B, T)
    return kl.detach().cpu().numpy() < threshold


def adaptive_forward(model, idx, criterion="kl", threshold=1e-3, max_loops=None, gather=False):
    """idx (B, T) -> (logits (B, T, vocab) at each position's exit, loops used (B, T) NumPy ints).
    gather=True computes the loop's last MLP on the active positions only (same result)."""
    check_looped(model, "adaptive_forward")
    if criterion not in CRITERIA:
        raise ValueError(f"criterion={criterion!r}: use one of {CRITERIA}.")
    trunk, blocks = model.transformer.trunk, model.transformer.h
    n = trunk.loop_count(max_loops)
    if model.config.variant == "recursive" and n > model.config.n_loops:
        raise ValueError(f"max_loops={n} is past the recursive model's n_loops={model.config.n_loops}.")
    B, T = idx.shape
    with ml.no_grad():
        h, ctx = trunk.enter(embed(model, idx), blocks)
        active = np.ones((B, T), dtype=bool)  # positions still looping
        loops = np.zeros((B, T), dtype=np.int64)
        out, prev = None, None
        for t in range(n):
            if gather and t > 0:
                new = gathered_step(model, h, ctx, t, active)  # (B, T, C); halted rows: thrown away
            else:
                new = trunk.step(h, ctx, blocks, t)  # h_{t+1} for every position: (B, T, C)
            h = new if t == 0 else ml.where(_mask(active, new), new, h)  # halted ones stay frozen
            loops += active
            logits = head(model, trunk.readout(h, ctx, blocks))  # (B, T, vocab)
            log_probs = F.log_softmax(logits, dim=-1)  # (B, T, vocab)
            halt = active & (halts(criterion, threshold, log_probs, prev) | (t == n - 1))
            out = logits if out is None else ml.where(_mask(halt, logits), logits, out)  # logits at exit
            active &= ~halt
            prev = log_probs
            if not active.any():
                break  # the whole batch has halted: the remaining loops cost nothing
    return out, loops


def exit_frontier(model, batches, criterion="kl", thresholds=(1e-3,), max_loops=None, gather=True, repeat=1):
    """Loops against loss: for every threshold the mean loops per token, the mean cross-entropy
    of the adaptive logits and the tokens/s measured; and the fixed depths 1 .. max_loops.

    ``batches`` is a list of (x, y) NumPy arrays (B, T) of token ids. Returns a JSON-friendly
    dict. tokens/s is this implementation's, with the last MLP gathered unless gather=False
    (module docstring: the rest of a halted position's loop is computed and thrown away);
    mean_loops is the compute a decoder that skips halted positions would spend. Each point
    is timed ``repeat`` times and the fastest counts (on a shared machine the slower runs
    measure the neighbours), in wall-clock and in this process's CPU seconds (which other
    processes disturb less)."""
    check_looped(model, "exit_frontier")
    n = model.transformer.trunk.loop_count(max_loops)
    was_training = model.training
    model.eval()
    tokens = sum(x.size for x, _ in batches)

    def measure(run):
        best, best_cpu = float("inf"), float("inf")
        for _ in range(repeat):
            loss, loops, seconds, cpu = 0.0, None, 0.0, 0.0
            for x, y in batches:
                idx, targets = _tensor(x, model), _tensor(y, model)
                t0, c0 = time.perf_counter(), time.process_time()
                logits, used = run(idx)
                seconds += time.perf_counter() - t0
                cpu += time.process_time() - c0
                with ml.no_grad():
                    ce = F.cross_entropy(logits.reshape(x.size, -1), targets.reshape(x.size))
                loss += ce.item() * x.size
                loops = used.ravel() if loops is None else np.concatenate([loops, used.ravel()])
            best, best_cpu = min(best, seconds), min(best_cpu, cpu)
        return loss / tokens, loops, {"tokens_per_s": tokens / best, "tokens_per_cpu_s": tokens / best_cpu}

    adaptive = []
    for threshold in thresholds:
        loss, loops, speed = measure(lambda idx: adaptive_forward(model, idx, criterion, threshold, n, gather))
        adaptive.append({"threshold": float(threshold), "mean_loops": float(loops.mean()), "val_loss": loss, **speed,
                         "loops_histogram": np.bincount(loops, minlength=n + 1)[1:].tolist()})
    fixed = []
    for k in range(1, n + 1):
        def run(idx, k=k):
            with ml.no_grad():
                logits, _ = model(idx, n_loops=k)
            return logits, np.full(tuple(idx.shape), k)
        loss, _, speed = measure(run)
        fixed.append({"loops": k, "val_loss": loss, **speed})
    model.train(was_training)
    return {"criterion": criterion, "max_loops": n, "tokens": int(tokens), "gather": gather, "repeat": int(repeat),
            "adaptive": adaptive, "fixed": fixed}
