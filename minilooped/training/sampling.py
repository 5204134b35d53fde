"""Generate text from a checkpoint: ``python -m minilooped.sample``.

The checkpoint says which model to build (its GPTConfig) and where its data was
prepared, whose tokenizer encodes the prompt and decodes the samples. Either engine
loads either engine's checkpoint (the weights are one safetensors file); with the same
seed the core and the mirror sample the same tokens (models/generate.py draws on the
host with a NumPy generator).
"""
from __future__ import annotations

import typing
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .checkpoint import load_checkpoint
from .config import ConfigError, _suggest, parse_cli, parse_value

SAMPLE_USAGE = """usage: python -m minilooped.sample [RUN_OR_CHECKPOINT_FOLDER] [--key=value ...]

examples:
  python -m minilooped.sample runs/shakespeare-loop-residual
  python -m minilooped.sample runs/shakespeare-loop-residual --start="ROMEO:" --num_samples=3 --temperature=0.8
  python -m minilooped.sample runs/shakespeare-parcae --n_loops=16      # loop more at test time
  python -m minilooped.sample runs/x --start=FILE:prompt.txt --backend=torch
  python -m minilooped.sample runs/x --no_cache     # recompute the prefix every token (no KV cache)

keys: out_dir (run or ckpt_* folder), start ("\\n"; FILE:path reads a file), num_samples (2),
max_new_tokens (300), temperature (0.8; 0 = greedy), top_k (40; 0 = none), seed (1337),
n_loops (the model's; looped models can run more or fewer loops), backend (numpy|cupy|torch),
device, data_dir (where the run's tokenizer is, if the data folder moved), no_cache (false:
generation keeps a KV cache; the same tokens, faster)
"""


@dataclass
class SampleConfig:
    out_dir: str = "runs/shakespeare-loop-residual"
    start: str = "\n"
    num_samples: int = 2
    max_new_tokens: int = 300
    temperature: float = 0.8
    top_k: int = 40
    seed: int = 1337
    n_loops: int | None = None
    backend: str = "numpy"
    device: str = ""
    data_dir: str = ""
    no_cache: bool = False


def sample_config_from_cli(argv: list[str]) -> SampleConfig:
    folder, overrides = parse_cli(argv, default=None)
    hints = typing.get_type_hints(SampleConfig)
    values = {}
    for key, text in overrides.items():
        if key not in hints:
            raise ConfigError(f"unknown sample key --{key}{_suggest(key, hints)}. Keys: {', '.join(hints)}")
        values[key] = parse_value(key, text, hints[key])
    if folder is not None:
        values["out_dir"] = folder
    return SampleConfig(**values)


def load_model(ckpt, backend: str = "numpy", device: str = ""):
    """The checkpoint's model, built for ``backend`` with its weights, in eval mode."""
    from ..models.config import GPTConfig

    config = GPTConfig.from_dict(ckpt.state["model_config"])
    if backend == "torch":
        import torch
        from ..torch.models import GPT

        model = GPT(config).to(device or "cpu")
        model.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in ckpt.weights.items()})
    elif backend in ("numpy", "cupy"):
        from ..models import GPT

        model = GPT(config)
        model.load_state_dict(ckpt.weights)
        model.to("cuda" if backend == "cupy" else "cpu")
    else:
        raise ConfigError(f"backend={backend!r} is not one of numpy, cupy, torch")
    return model.eval()


def generate_texts(cfg: SampleConfig) -> list[str]:
    from ..data import load_prepared_tokenizer

    ckpt = load_checkpoint(cfg.out_dir)
    data_dir = Path(cfg.data_dir or ckpt.state["data"]["data_dir"])
    if not (data_dir / "meta.json").is_file():
        raise FileNotFoundError(f"the run's data folder {data_dir} (with its tokenizer) is gone: prepare the "
                                "data again or pass --data_dir=<folder with meta.json>")
    tok = load_prepared_tokenizer(data_dir)
    start = cfg.start
    if start.startswith("FILE:"):
        start = Path(start[5:]).read_text(encoding="utf-8")
    ids = tok.encode_ordinary(start)
    if not ids:
        raise ValueError("--start encodes to no tokens: give at least one character")
    model = load_model(ckpt, cfg.backend, cfg.device)
    idx = np.array([ids] * cfg.num_samples, dtype=np.int64)  # (num_samples, T)
    kwargs = {} if cfg.n_loops is None else {"n_loops": cfg.n_loops}
    kwargs["use_cache"] = not cfg.no_cache
    top_k = cfg.top_k or None
    if cfg.backend == "torch":
        import torch

        out = model.generate(torch.from_numpy(idx).to(cfg.device or "cpu"), cfg.max_new_tokens,
                             temperature=cfg.temperature, top_k=top_k, seed=cfg.seed, **kwargs).cpu().numpy()
    else:
        out = model.generate(idx, cfg.max_new_tokens, temperature=cfg.temperature, top_k=top_k,
                             seed=cfg.seed, **kwargs)
        out = out.numpy() if hasattr(out, "numpy") else np.asarray(out)
    return [tok.decode(row.tolist()) for row in out]


def sample_from_cli(argv: list[str]) -> list[str]:
    return generate_texts(sample_config_from_cli(argv))


__all__ = ["SampleConfig", "generate_texts", "load_model", "sample_config_from_cli", "SAMPLE_USAGE"]
