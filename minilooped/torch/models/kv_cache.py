"""A KV cache for generation: the keys and values of every block application.

PyTorch mirror of the NumPy core's minilooped/models/kv_cache.py, line by line alike.

Without a cache, generate.py runs the whole prefix through every loop again for every
new token. In a causal model a position sees the earlier ones only through the keys and
values of its attention layers, so these are all that needs keeping: with a cache the
model runs on the new positions only, and each attention layer puts its new keys and
values after the ones it kept from earlier calls,

    K = [K_cached; K_new],  V = [V_cached; V_new],  y_new = softmax(q_new K^T / sqrt(hs) + mask) V

A looped model applies a block several times per token (once per loop, with other
inputs each time), so the cache keeps one slot per block *application*: the n-th
attention call of a forward pass uses slot n. Every call applies the blocks in the same
order (same variant, same n_loops), so slot n always holds the same (loop, layer), and
the cached model computes what the uncached one does, for every variant, up to
rounding (Parcae's random h_0 is drawn position by position for this: parcae.py).

mode="last_loop" keeps one slot per layer instead, shared by its applications: each
loop overwrites the new positions' keys and values, so the earlier positions keep only
their last loop's, which every loop of a new token then attends to. This is how the Fully
Looped Transformer's authors generate (arXiv 2605.18797, their code): an approximation,
since in loop k < K the earlier positions' keys should be loop k's, with n_layer slots
instead of n_loops * n_layer. How far it drifts (scripts/kv_cache_drift.py): on a small
fully looped model trained on Shakespeare characters (2 blocks x 4 loops, 0.4M
parameters, float64), 68 of 448 greedy new tokens differ from the exact cache's (2 of 8
rows diverge, after 5 and 9 tokens), the next-token logits by up to 0.44 (they reach 14)
and their argmax in 0.4% of the steps.

The buffers are allocated once per slot, (B, n_head, max_len, hs), and the new keys and
values are written into them: no concatenation per token. ``GPT.forward(idx, cache=c)``
runs idx (B, T) as the positions after the ``c.length`` the cache holds (gpt.py).
"""
import torch

MODES = ("exact", "last_loop")


class KVCache:
    def __init__(self, max_len, mode="exact"):
        if mode not in MODES:
            raise ValueError(f"cache mode={mode!r} is not one of {MODES}.")
        self.max_len = max_len  # positions the buffers hold
        self.mode = mode
        self.length = 0  # positions cached so far
        self.slots = {}  # slot -> (K, V) buffers (B, nh, max_len, hs)
        self.calls = 0  # attention calls in the running forward pass
        self.n_calls = None  # attention calls per forward pass, fixed by the first one

    def begin(self, T):
        """Before a forward pass over T new positions (GPT.forward)."""
        if self.length + T > self.max_len:
            raise ValueError(f"the cache holds {self.length} positions of max_len={self.max_len}; "
                             f"{T} more do not fit. Start a new cache (generate() rebuilds it "
                             "for the last block_size tokens).")
        self.calls = 0

    def end(self, T):
        """After the forward pass: the T new positions are cached."""
        if self.n_calls is None:
            self.n_calls = self.calls
        elif self.calls != self.n_calls:
            raise ValueError(f"this forward pass applied attention {self.calls} times, the one that "
                             f"filled the cache {self.n_calls}: keep n_loops (and every other loop "
                             "argument) the same for the whole generation.")
        self.length += T

    def update(self, layer, k, v):
        """The new positions' k, v (B, nh, T, hs) -> the keys and values of all positions
        (B, nh, S, hs) with S = length + T, and the attention mask of the T queries: None
        when they need none beyond is_causal (S == T) or none at all (T == 1), else the
        causal mask aligned to the last key, (T, S) with True = may attend."""
        slot = layer if self.mode == "last_loop" else self.calls
        self.calls += 1
        B, nh, T, hs = k.shape
        # twin: framework-specific
        if slot not in self.slots:
            self.slots[slot] = tuple(k.new_empty((B, nh, self.max_len, hs)) for _ in "kv")
        K, V = self.slots[slot]
        start, S = self.length, self.length + T
        K[:, :, start:S] = k  # write in place: (B, nh, T, hs)
        V[:, :, start:S] = v
        mask = None
        if 1 < T < S:  # query i is position start + i: it sees keys 0 .. start + i
            mask = torch.ones(T, S, dtype=torch.bool, device=k.device).tril(start)  # (T, S)
        return K[:, :, :S], V[:, :, :S], mask
        # twin: end
