"""Shared helpers of the tests/test_train_*.py files: a tiny corpus and a tiny config."""
from __future__ import annotations

import numpy as np

from minilooped.data import prepare_text
from minilooped.training import TrainConfig, apply_overrides

WORDS = ("to be or not the question whether tis nobler in mind suffer slings arrows outrageous "
         "fortune take arms against sea of troubles and by opposing end them die sleep no more").split()


def tiny_text(n_words: int = 6000, seed: int = 0) -> str:
    """A deterministic word salad: enough structure for a tiny model to learn quickly."""
    rng = np.random.default_rng(seed)
    words = [WORDS[i] for i in rng.integers(0, len(WORDS), size=n_words)]
    lines = [" ".join(words[i:i + 8]) for i in range(0, n_words, 8)]
    return "\n".join(lines) + "\n"


def tiny_data(folder, tokenizer: str = "char") -> str:
    """Prepare the tiny corpus in ``folder``; returns its path as a string."""
    text = tiny_text()
    cut = int(len(text) * 0.9)
    prepare_text(text[:cut], text[cut:], folder, tokenizer, source="tests")
    return str(folder)


def tiny_config(data_dir, out_dir, **overrides) -> TrainConfig:
    """A model of a few thousand parameters that trains a step in milliseconds."""
    base = TrainConfig(
        name="tiny", model="shakespeare-loop-residual", dataset="tiny", data_dir=str(data_dir),
        out_dir=str(out_dir), model_args={"n_embd": 32, "n_head": 2, "n_loops": 2, "block_size": 16},
        batch_size=4, max_iters=8, learning_rate=3e-3, min_lr=3e-4, warmup_iters=2, eval_interval=4,
        eval_iters=2, log_interval=1, progress=False, seed=7,
    )
    return apply_overrides(base, {k: v if isinstance(v, str) else _text(v) for k, v in overrides.items()})


def _text(v):
    import json

    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, dict):
        return json.dumps(v)
    return str(v)


def losses(run_dir, kind: str = "train", key: str = "loss"):
    from minilooped.training.metrics import read_jsonl

    return [r[key] for r in read_jsonl(f"{run_dir}/metrics.jsonl") if r["kind"] == kind]
