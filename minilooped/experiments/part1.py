"""Part I's leaderboard (chapter 4): every model of chapters 2 to 5 scored the same way.

The score is the cross-entropy on the whole validation split of character-level Shakespeare
(the prepared ``val.bin`` of the shipped ``shakespeare-*`` configs), in nats per character;
the book divides it by ln 2 to give bits per character. Each model predicts every
character of the split from what it can see:

- the count models (uniform, unigram, bigram): exact, from the training split's counts with
  add-one smoothing, as chapter 2 computes them; every character but the first;
- chapter 2's MLP: the 8 characters before each one (every character but the first 8);
- the transformers: the split cut into consecutive windows of ``block_size`` characters, each
  character predicted from the characters before it in its window (``val_loss_split``).

The two ``evaluate`` hooks here (:func:`count_baseline`, :func:`mlp_language_model`) are the
runs of the study that do not go through the training loop (minilooped.experiments.study.Run).
"""
from __future__ import annotations

import math

import numpy as np

from .. import nn
from ..data import get_batch
from .measurements import measurement

# chapter 2's MLP language model and its training recipe (Bengio et al., 2003, with LayerNorm
# and GELU): 4000 steps of 256 windows = 1,024,000 predicted characters, the same number as
# 1000 steps of 16 sequences of 64 characters for the transformers
MLP_CONTEXT, MLP_EMBD, MLP_HIDDEN = 8, 32, 512
MLP_RECIPE = dict(batch_size=256, max_iters=4000, warmup_iters=200, learning_rate=1e-2, min_lr=1e-3,
                  weight_decay=0.1, betas=(0.9, 0.95), grad_clip=1.0)


def _shakespeare_chars():
    """(train ids, val ids, vocabulary size) of the prepared character-level Shakespeare."""
    from ..data.prepare import read_meta
    from ..data.batches import TokenDataset
    from ..training import load_config
    from ..training.run_data import ensure_prepared

    data_dir = ensure_prepared(load_config("shakespeare-gpt2"), log=lambda *a: None)
    train = np.asarray(TokenDataset(data_dir / "train.bin").tokens, dtype=np.int64)
    val = np.asarray(TokenDataset(data_dir / "val.bin").tokens, dtype=np.int64)
    return train, val, int(read_meta(data_dir)["vocab_size"])


def count_losses(train: np.ndarray, val: np.ndarray, V: int) -> dict[str, float]:
    """Val cross-entropy (nats per character) of the uniform, unigram and bigram models, the last
    two counted on ``train`` with add-one smoothing; every val character but the first."""
    unigram = np.bincount(train, minlength=V) + 1.0
    unigram /= unigram.sum()
    bigram = np.ones((V, V))
    np.add.at(bigram, (train[:-1], train[1:]), 1.0)  # count the pairs
    bigram /= bigram.sum(axis=1, keepdims=True)  # p(next | prev)
    return {"uniform": math.log(V),
            "unigram": float(-np.log(unigram[val[1:]]).mean()),
            "bigram": float(-np.log(bigram[val[:-1], val[1:]]).mean())}


def count_baseline(kind: str):
    """An ``evaluate`` hook: the exact val loss of the count model ``kind`` (uniform, unigram, bigram)."""
    def evaluate(job):
        loss = count_losses(*_shakespeare_chars())[kind]
        return {"val_loss_split": loss, "predicted_chars": None}
    return evaluate


class MLPLanguageModel(nn.Module):
    """Chapter 2's model: next-character logits from the k previous characters (Bengio et al.,
    2003), embeddings concatenated, one hidden layer with LayerNorm and GELU."""

    def __init__(self, vocab_size, context=MLP_CONTEXT, n_embd=MLP_EMBD, n_hidden=MLP_HIDDEN):
        super().__init__()
        self.wte = nn.Embedding(vocab_size, n_embd)  # E
        self.fc = nn.Linear(context * n_embd, n_hidden)  # W1, b1
        self.ln = nn.LayerNorm(n_hidden)
        self.gelu = nn.GELU()
        self.head = nn.Linear(n_hidden, vocab_size)  # W2, b2

    def forward(self, idx):  # idx: (B, k) integer ids
        B, k = idx.shape
        e = self.wte(idx)  # (B, k, d)
        h = self.fc(e.view(B, k * e.shape[-1]))  # (B, H): concat = reshape
        return self.head(self.gelu(self.ln(h)))  # (B, V) logits


def mlp_val_loss(model, val: np.ndarray, context: int = MLP_CONTEXT, chunk: int = 8192) -> float:
    """Mean cross-entropy of ``model`` on every val character that has ``context`` before it."""
    import minilooped as ml
    import minilooped.functional as F

    windows = np.lib.stride_tricks.sliding_window_view(val, context + 1)  # (N - k, k + 1)
    total = 0.0
    with ml.no_grad():
        for i in range(0, len(windows), chunk):
            w = np.ascontiguousarray(windows[i:i + chunk])
            total += F.cross_entropy(model(w[:, :-1]), w[:, -1]).item() * len(w)
    return total / len(windows)


def train_mlp(seed: int, train: np.ndarray, V: int, recipe: dict = MLP_RECIPE, log_every: int = 0):
    """Chapter 2's training loop: AdamW on two parameter groups, warmup-cosine, clipping."""
    import minilooped as ml
    import minilooped.functional as F

    r = recipe
    ml.manual_seed(seed)
    model = MLPLanguageModel(V)
    params = dict(model.named_parameters())
    optimizer = ml.optim.AdamW([{"params": [p for p in params.values() if p.ndim >= 2],
                                 "weight_decay": r["weight_decay"]},
                                {"params": [p for p in params.values() if p.ndim < 2], "weight_decay": 0.0}],
                               lr=r["learning_rate"], betas=r["betas"])
    rng = np.random.default_rng([seed, 1337])
    for step in range(r["max_iters"]):
        lr = ml.optim.warmup_cosine(step, r["learning_rate"], r["min_lr"], r["warmup_iters"], r["max_iters"])
        ml.optim.set_lr(optimizer, lr)
        x, y = get_batch(train, r["batch_size"], MLP_CONTEXT, rng)
        loss = F.cross_entropy(model(x), y[:, -1])
        optimizer.zero_grad()
        loss.backward()
        ml.optim.clip_grad_norm_(model.parameters(), r["grad_clip"])
        optimizer.step()
        if log_every and step % log_every == 0:
            print(f"mlp seed {seed} step {step}: loss {loss.item():.3f}", flush=True)
    return model


def mlp_language_model(recipe: dict | None = None):
    """An ``evaluate`` hook: train chapter 2's MLP at the job's seed and measure it on the val split."""
    def evaluate(job):
        import time

        r = {**MLP_RECIPE, **(recipe or {})}
        if job.study.is_reduced:
            r.update(max_iters=6, warmup_iters=2, batch_size=8)
        train, val, V = _shakespeare_chars()
        t0 = time.perf_counter()
        model = train_mlp(job.seed, train, V, r)
        seconds = time.perf_counter() - t0
        if job.study.is_reduced:
            val = val[:2000]
        return {"val_loss_split": mlp_val_loss(model, val), "train_seconds": seconds,
                "predicted_chars": r["max_iters"] * r["batch_size"],
                "params": sum(p.numel() for p in model.parameters()), "recipe": {**r, "betas": list(r["betas"])}}
    return evaluate


@measurement("val_loss_split")
def val_loss_split(run, batch_size: int = 64, max_chars: int | None = None):
    """Val loss (nats per token) over the whole val split (or its first ``max_chars``), cut into
    consecutive windows of block_size tokens, each token predicted from those before it in its
    window; the same characters for every model of a given block size and seed-independent."""
    val = np.asarray(run.data.val.tokens, dtype=np.int64)
    if max_chars:
        val = val[:max_chars + 1]
    T = run.model_config.block_size
    n = (len(val) - 1) // T
    x = val[:n * T].reshape(n, T)
    y = val[1:n * T + 1].reshape(n, T)
    batches = [(x[i:i + batch_size], y[i:i + batch_size]) for i in range(0, n, batch_size)]
    sizes = np.array([len(b[0]) for b in batches], dtype=np.float64)
    losses = np.array([run.engine.eval_loss([b]) for b in batches])
    return float((losses * sizes).sum() / sizes.sum())


__all__ = ["count_losses", "count_baseline", "MLPLanguageModel", "train_mlp", "mlp_val_loss",
           "mlp_language_model", "val_loss_split", "MLP_RECIPE", "MLP_CONTEXT"]
