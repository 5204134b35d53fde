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
# and GELU; chapter 2 trains it 4000 steps with 200 of warmup)
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


def train_mlp(seed: int, train: np.ndarray, V: int, recipe: dict = MLP_RECIPE, val: np.ndarray | None = None,
              eval_every: int = 250, eval_chars: int = 65_536):
    """Chapter 2's training loop: AdamW on two parameter groups, warmup-cosine, clipping.
    Returns the model and its learning curve: every ``eval_every`` steps the val loss on the
    first ``eval_chars`` characters of ``val`` (none without ``val``)."""
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
    curve = {"step": [], "predicted_chars": [], "val_loss": []}
    for step in range(r["max_iters"] + 1):
        if val is not None and (step % eval_every == 0 or step == r["max_iters"]):
            curve["step"].append(step)
            curve["predicted_chars"].append(step * r["batch_size"])
            curve["val_loss"].append(mlp_val_loss(model, val[:eval_chars + MLP_CONTEXT]))
        if step == r["max_iters"]:
            break
        ml.optim.set_lr(optimizer, ml.optim.warmup_cosine(step, r["learning_rate"], r["min_lr"],
                                                          r["warmup_iters"], r["max_iters"]))
        x, y = get_batch(train, r["batch_size"], MLP_CONTEXT, rng)
        loss = F.cross_entropy(model(x), y[:, -1])  # the target: the character after the window
        optimizer.zero_grad()
        loss.backward()
        ml.optim.clip_grad_norm_(model.parameters(), r["grad_clip"])
        optimizer.step()
    return model, curve


def mlp_language_model(recipe: dict | None = None):
    """An ``evaluate`` hook: train chapter 2's MLP at the job's seed and measure it on the val split."""
    def evaluate(job):
        import time

        r = {**MLP_RECIPE, **(recipe or {})}
        if job.study.is_reduced:
            r.update(max_iters=6, warmup_iters=2, batch_size=8)
        train, val, V = _shakespeare_chars()
        t0 = time.perf_counter()
        if job.study.is_reduced:
            val = val[:2000]
        model, curve = train_mlp(job.seed, train, V, r, val=val, eval_every=max(1, r["max_iters"] // 16))
        seconds = time.perf_counter() - t0
        return {"val_loss_split": mlp_val_loss(model, val), "train_seconds": seconds, "mlp_curve": curve,
                "predicted_chars": r["max_iters"] * r["batch_size"],
                "params": sum(p.numel() for p in model.parameters()), "recipe": {**r, "betas": list(r["betas"])}}
    return evaluate


def _split_token_losses(run, max_chars: int | None = None, batch_size: int = 64) -> np.ndarray:
    """(n, block_size) losses (nats) of every token of the val split cut into consecutive
    windows of block_size tokens, each predicted from the tokens before it in its window.
    Computed once per run (both measurements below read it)."""
    key = ("_split_token_losses", max_chars)
    if key not in run.__dict__:
        val = np.asarray(run.data.val.tokens, dtype=np.int64)
        if max_chars:
            val = val[:max_chars + 1]
        T = run.model_config.block_size
        n = (len(val) - 1) // T
        x, y = val[:n * T].reshape(n, T), val[1:n * T + 1].reshape(n, T)
        run.__dict__[key] = np.concatenate([_token_losses(run, x[i:i + batch_size], y[i:i + batch_size])
                                            for i in range(0, n, batch_size)])
    return run.__dict__[key]


def _token_losses(run, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """-log p(y | x) per token, from the trained model's logits (core or mirror)."""
    model = run.model
    model.eval()
    if run.cfg.backend == "torch":
        import torch

        with torch.no_grad():
            logits = model(torch.as_tensor(x, device=run.engine.device))[0]
            logits = logits.float().cpu().numpy()
    else:
        import minilooped as ml
        from .. import backend

        with ml.no_grad():
            logits = backend.to_numpy(model(x)[0].data)
    z = logits.astype(np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
    return -np.take_along_axis(log_p, y[..., None], axis=-1)[..., 0]


@measurement("val_loss_split")
def val_loss_split(run, max_chars: int | None = None):
    """Val loss (nats per token) over the whole val split (or its first ``max_chars``), cut into
    consecutive windows of block_size tokens, each token predicted from those before it in its
    window: the same characters for every model of a given block size, whatever the seed."""
    return float(_split_token_losses(run, max_chars).mean())


@measurement("val_loss_by_position")
def val_loss_by_position(run, max_chars: int | None = None):
    """The same losses averaged per position in the window (0 = no context, block_size - 1 =
    the longest): how much of its context the model uses."""
    return _split_token_losses(run, max_chars).mean(axis=0).tolist()


__all__ = ["count_losses", "count_baseline", "MLPLanguageModel", "train_mlp", "mlp_val_loss",
           "mlp_language_model", "val_loss_split", "val_loss_by_position", "MLP_RECIPE", "MLP_CONTEXT"]
