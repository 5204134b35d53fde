"""Drawing the next token from logits, on the host: one function for both implementations.

The core's generate.py and the PyTorch mirror's both call ``sample`` with the last
position's logits as a float64 NumPy array, so from the same logits and the same seed
they draw the same tokens. It needs NumPy only, so the mirror can import it without
importing the core.
"""
import numpy as np


def sample(logits, temperature, top_k, rng):
    """Next tokens (B, 1) int64 from last-position logits (B, vocab), a float64 array."""
    if temperature == 0:
        return logits.argmax(axis=-1)[:, None]
    logits = logits / temperature
    if top_k is not None:
        kth = np.sort(logits, axis=-1)[:, -min(top_k, logits.shape[-1])][:, None]  # (B, 1)
        logits = np.where(logits < kth, -np.inf, logits)  # keep the top_k
    probs = np.exp(logits - logits.max(axis=-1, keepdims=True))
    probs = probs / probs.sum(axis=-1, keepdims=True)  # softmax (B, vocab)
    u = rng.random((logits.shape[0], 1))  # one uniform per row
    idx = (probs.cumsum(axis=-1) < u).sum(axis=-1, keepdims=True)  # inverse CDF (B, 1)
    return np.minimum(idx, logits.shape[-1] - 1).astype(np.int64)
