"""Autoregressive sampling.

NumPy core; the PyTorch mirror minilooped/torch/models/generate.py reads line by line alike.

As nanoGPT's GPT.generate: crop the context to block_size, take the last position's
logits, divide by the temperature, keep the top_k, sample, append, repeat. The sampling
itself runs on the host in float64 with a NumPy Generator (``sampler.sample``, one
function for both implementations), so the core and the mirror draw the same tokens from
the same logits and the same seed. temperature=0 picks the argmax (greedy decoding).

With use_cache (the default) the model keeps the keys and values of every block
application in a KVCache (kv_cache.py): the prompt runs once, then each new token runs
alone, through every loop. The result is the same as without the cache (up to rounding).
Past block_size the context is cropped as without the cache, which moves every token to
another position: the cache is then rebuilt for the last block_size tokens, at every new
token (a sliding recompute, exact, and as slow as no cache). cache_mode="last_loop" is
the Fully Looped authors' approximation (kv_cache.py). Parcae's random initial state is
drawn position by position from an h0_seed drawn here (parcae.py), so it is the same
with and without the cache.

``seed`` also seeds the framework's RNG (ml.manual_seed here), and Parcae's h0_seed is
drawn from the same Generator as the tokens, so a seeded generation repeats exactly.
Token ids are NumPy int64 arrays (B, T) on the host, as the core takes them.
"""
import minilooped as ml
from minilooped.backend import np

from .kv_cache import KVCache
from .sampler import sample


def generate(model, idx, max_new_tokens, temperature=1.0, top_k=None, seed=None,
             use_cache=True, cache_mode="exact", **forward_kwargs):
    """idx (B, T) int64 -> (B, T + max_new_tokens), the model in eval mode meanwhile."""
    idx = np.asarray(idx.numpy() if isinstance(idx, ml.Tensor) else idx, dtype=np.int64)
    if temperature < 0:
        raise ValueError(f"temperature={temperature} must be >= 0 (0 = greedy).")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k={top_k} must be >= 1 (or None for no cut).")
    rng = np.random.default_rng(seed)
    if seed is not None:
        ml.manual_seed(seed)
    if model.config.variant == "parcae":  # h_0 drawn per position (parcae.py)
        forward_kwargs.setdefault("h0_seed", int(rng.integers(2**32)))
    block_size = model.config.block_size
    cache = None
    was_training = model.training
    model.eval()
    with ml.no_grad():
        for _ in range(max_new_tokens):
            if cache is not None and cache.length < block_size:  # the new token alone
                logits, _ = model(idx[:, -1:], cache=cache, **forward_kwargs)  # (B, 1, vocab)
            else:  # no cache, the prompt, or a context past block_size: all of it, cropped
                if use_cache:
                    cache = KVCache(min(block_size, idx.shape[1] + max_new_tokens), cache_mode)
                logits, _ = model(idx[:, -block_size:], cache=cache, **forward_kwargs)  # (B, T, vocab)
            logits = logits[:, -1, :].detach().cpu().double().numpy()  # (B, vocab)
            idx_next = sample(logits, temperature, top_k, rng)  # (B, 1)
            idx = np.concatenate((idx, idx_next), axis=1)  # (B, T + 1)
    model.train(was_training)
    return idx
