"""TrainConfig: every setting of a training run, in one plain dataclass.

A run is described by a config file shipped in the package (``minilooped/configs/<name>.json``)
plus ``--key=value`` overrides from the command line, as nanoGPT's ``configurator.py``
does, but without ``exec``: each value is parsed into the type of its dataclass field,
and an unknown key or a value of the wrong type is refused with a message naming the
close matches::

    python -m minilooped.train                                   # the default config
    python -m minilooped.train shakespeare-gpt2 --max_iters=100  # another shipped config
    python -m minilooped.train my_run.json --backend=torch       # a config file of your own
    python -m minilooped.train --n_loops=8 --model.dropout=0.1   # model fields

The model is a :class:`~minilooped.models.config.GPTConfig` preset (``model``) plus
overrides of its fields (``model_args``). On the command line a GPTConfig field can be
given bare (``--n_loops=8``) or prefixed (``--model.n_loops=8``).
"""
from __future__ import annotations

import dataclasses
import difflib
import json
import os
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from ..models.config import GPTConfig, PRESETS

DEFAULT_CONFIG = "shakespeare-loop-residual"
BACKENDS = ("numpy", "cupy", "torch")
DEVICES = ("cpu", "cuda")
DTYPES = ("float32", "bfloat16", "float16")
TOKENIZERS = ("char", "bpe", "gpt2")
EXIT_LOSSES = ("uniform", "aggressive")  # minilooped.models.early_exit.exit_weights


class ConfigError(ValueError):
    """A config that cannot be used: unknown key, wrong type, impossible combination."""


@dataclass
class TrainConfig:
    # ---------------------------------------------------------------- the model
    model: str = "shakespeare-loop-residual"  # a GPTConfig preset (minilooped.models.config.PRESETS)
    model_args: dict = field(default_factory=dict)  # overrides of the preset's fields, e.g. {"n_loops": 8}
    init_from: str = ""  # optional safetensors weights file to start from (after the seeded init)
    # ---------------------------------------------------------------- early exit and distillation (chapter 9)
    exit_loss: str = ""  # "" (the model's own loss) | uniform | aggressive: a loss at every loop's readout
    distill_from: str = ""  # run or ckpt_* folder of a teacher (the source GPT-2): distil its logits
    distill_weight: float = 0.5  # alpha in (1 - alpha) CE + alpha tau^2 KL(teacher || student)
    distill_temperature: float = 1.0  # tau, the temperature of both softmaxes in the distillation
    # ---------------------------------------------------------------- the data
    dataset: str = "shakespeare"  # "shakespeare" (prepared on first use), "openwebtext", or a label
    tokenizer: str = "char"  # char | bpe | gpt2: used when the data folder is prepared here
    bpe_vocab_size: int = 1024  # vocabulary of a from-scratch bpe tokenizer
    data_dir: str = ""  # prepared folder (train.bin, val.bin, meta.json); "" = the cache folder
    # ---------------------------------------------------------------- the run
    name: str = ""  # the config's name (set from the file name)
    description: str = ""
    out_dir: str = ""  # checkpoints and metrics.jsonl; "" = runs/<name>
    backend: str = "numpy"  # numpy (the core on CPU) | cupy (the core on a GPU) | torch (the mirror)
    device: str = ""  # cpu | cuda; "" = cpu for numpy, cuda for cupy, cuda if available for torch
    seed: int = 1337
    resume: bool = False  # continue from the latest checkpoint in out_dir
    # ---------------------------------------------------------------- optimisation
    batch_size: int = 16  # sequences per micro-batch (per process)
    threads: int = 0  # numpy backend: threads splitting each micro-batch (0 = as many as BLAS has, 1 = off)
    grad_accum: int = 1  # micro-batches per optimizer step, summed over all DDP processes
    max_iters: int = 1000  # optimizer steps
    learning_rate: float = 4e-3  # peak lr, reached at the end of the warmup
    min_lr: float = 4e-4  # lr at the end of the cosine decay
    warmup_iters: int = 50
    lr_decay_iters: int = 0  # the cosine ends here; 0 = max_iters
    weight_decay: float = 0.1  # on 2-D weights only; biases and norm gains are not decayed
    beta1: float = 0.9
    beta2: float = 0.99
    grad_clip: float = 1.0  # max global gradient norm; 0 = no clipping
    # ---------------------------------------------------------------- evaluation, logging, checkpoints
    eval_interval: int = 100  # steps between val-loss estimates (and at the end)
    eval_iters: int = 20  # batches per estimate
    eval_loops: str = ""  # looped models: each eval also logs the val loss at these loop counts, e.g. "1,2,4,8"
    log_interval: int = 1  # steps between train records in metrics.jsonl
    ckpt_interval: int = 0  # steps between checkpoints; 0 = at every evaluation
    keep_checkpoints: int = 1  # complete checkpoints kept (the newest ones)
    progress: bool = True  # the tqdm bar
    # ---------------------------------------------------------------- PyTorch only
    dtype: str = "float32"  # float32 | bfloat16 | float16 (autocast; float16 with a GradScaler)
    compile: bool = False  # torch.compile the model
    fused_adamw: bool | None = None  # None = fused on CUDA
    tf32: bool = True  # TF32 matmuls on Ampere and newer GPUs
    # ---------------------------------------------------------------- the plan (--dry_run, training/plan.py)
    dry_run: bool = False  # 2 CPU steps of the real model on a tiny sample, print the plan, exit (no checkpoint)
    gpu: str = "h100"  # the plan's GPU: h100 | h100-pcie | h200 | a100-80gb | a100-40gb | l4 | rtx4090
    n_gpus: int = 1  # GPUs the plan assumes (torchrun's nodes x nproc_per_node)
    plan_mfu: float = 0.4  # the plan's assumed MFU (bf16 + torch.compile; see training/plan.py)
    gpu_price: float = 0.0  # the plan's $ per GPU-hour; 0 = the assumption in training/plan.py's table

    # ------------------------------------------------------------------ checks
    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        """Check types and values; raise ConfigError saying which field and why."""
        hints = typing.get_type_hints(TrainConfig)
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if not _isinstance(value, hints[f.name]):
                raise ConfigError(f"TrainConfig.{f.name}={value!r} must be {_type_name(hints[f.name])}")
        _choice("backend", self.backend, BACKENDS)
        _choice("dtype", self.dtype, DTYPES)
        _choice("tokenizer", self.tokenizer, TOKENIZERS)
        if self.device:
            _choice("device", self.device, DEVICES)
        from .plan import GPU_NAMES  # pure arithmetic, no torch

        _choice("gpu", self.gpu, GPU_NAMES)
        if self.n_gpus < 1 or not 0 < self.plan_mfu <= 1 or self.gpu_price < 0:
            raise ConfigError(f"n_gpus={self.n_gpus} must be >= 1, plan_mfu={self.plan_mfu} in (0, 1] and "
                              f"gpu_price={self.gpu_price} >= 0")
        if self.backend == "numpy" and self.device == "cuda":
            raise ConfigError("backend='numpy' runs on the CPU; for the core on a GPU use --backend=cupy")
        if self.backend == "cupy" and self.device == "cpu":
            raise ConfigError("backend='cupy' runs on the GPU; for the core on the CPU use --backend=numpy")
        for name in ("batch_size", "grad_accum", "eval_interval", "eval_iters", "log_interval",
                     "keep_checkpoints"):
            if getattr(self, name) < 1:
                raise ConfigError(f"TrainConfig.{name}={getattr(self, name)} must be >= 1")
        for name in ("max_iters", "warmup_iters", "lr_decay_iters", "ckpt_interval", "threads"):
            if getattr(self, name) < 0:
                raise ConfigError(f"TrainConfig.{name}={getattr(self, name)} must be >= 0")
        for name in ("learning_rate", "min_lr", "weight_decay", "grad_clip"):
            if getattr(self, name) < 0:
                raise ConfigError(f"TrainConfig.{name}={getattr(self, name)} must be >= 0")
        if self.exit_loss:
            _choice("exit_loss", self.exit_loss, EXIT_LOSSES)
        if not 0 <= self.distill_weight <= 1:
            raise ConfigError(f"TrainConfig.distill_weight={self.distill_weight} must be in [0, 1]")
        if self.distill_temperature <= 0:
            raise ConfigError(f"TrainConfig.distill_temperature={self.distill_temperature} must be > 0")
        if self.min_lr > self.learning_rate:
            raise ConfigError(f"min_lr={self.min_lr} is above learning_rate={self.learning_rate}: "
                              "the cosine decays from learning_rate down to min_lr; set --min_lr too "
                              f"(e.g. --min_lr={self.learning_rate / 10:g})")
        for name in ("beta1", "beta2"):
            if not 0 <= getattr(self, name) < 1:
                raise ConfigError(f"TrainConfig.{name}={getattr(self, name)} must be in [0, 1)")
        if self.model not in PRESETS:
            raise ConfigError(f"model={self.model!r} is not a GPTConfig preset{_suggest(self.model, PRESETS)}. "
                              f"Presets: {', '.join(sorted(PRESETS))}")
        known = {f.name for f in dataclasses.fields(GPTConfig)}
        bad = [k for k in self.model_args if k not in known]
        if bad:
            raise ConfigError(f"model_args has unknown GPTConfig field(s) {bad}"
                              f"{_suggest(bad[0], known)}. Fields: {', '.join(sorted(known))}")
        if self.eval_loops:
            self.eval_depths()  # parses and checks them
        if self.backend != "torch" and (self.compile or self.dtype != "float32"):
            raise ConfigError(f"compile={self.compile}, dtype={self.dtype!r} are PyTorch options: "
                              "use them with --backend=torch (the core trains in float32)")

    # ------------------------------------------------------------------ derived
    def resolved_device(self) -> str:
        if self.device:
            return self.device
        if self.backend == "cupy":
            return "cuda"
        if self.backend == "torch":
            import torch  # only asked when the torch backend is chosen

            return "cuda" if torch.cuda.is_available() else "cpu"
        return "cpu"

    def model_config(self, vocab_size: int | None = None) -> GPTConfig:
        """The GPTConfig of this run: the preset, its overrides, and the data's vocabulary
        size unless model_args sets one (a larger one, e.g. GPT-2's 50304, pads the head)."""
        args = dict(self.model_args)
        if vocab_size is not None and "vocab_size" not in args:
            args["vocab_size"] = vocab_size
        try:
            return GPTConfig.from_preset(self.model, **args)
        except ValueError as e:
            raise ConfigError(f"the model of config {self.name or '(unnamed)'!r} is invalid: {e}") from None

    def eval_depths(self) -> list[int]:
        """The loop counts of ``eval_loops`` as sorted ints ([] when empty), checked against the model."""
        depths = parse_loop_counts(self.eval_loops, "eval_loops")
        if not depths:
            return []
        model = self.model_config()
        if model.variant == "gpt2":
            raise ConfigError(f"eval_loops={self.eval_loops!r}, but the model is variant='gpt2', which applies "
                              "each block once: only looped models run at other depths. Drop --eval_loops")
        if model.variant == "recursive" and depths[-1] > model.n_loops:
            raise ConfigError(f"eval_loops={self.eval_loops!r} goes past the recursive model's n_loops="
                              f"{model.n_loops} (it can only exit early): use loop counts <= {model.n_loops}")
        return depths

    @property
    def decay_iters(self) -> int:
        return self.lr_decay_iters or self.max_iters

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict, source: str = "config") -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = [k for k in d if k not in known]
        if unknown:
            raise ConfigError(f"{source}: unknown key {unknown[0]!r}{_suggest(unknown[0], known)}")
        return cls(**d)


# ---------------------------------------------------------------------- config files
def config_dir() -> Path:
    """The folder of shipped configs, minilooped/configs/."""
    return Path(str(resources.files("minilooped") / "configs"))


def available_configs() -> list[str]:
    return sorted(p.stem for p in config_dir().glob("*.json"))


def load_config(name_or_path: str = DEFAULT_CONFIG) -> TrainConfig:
    """A shipped config by name (``shakespeare-loop-residual``) or a .json file by path."""
    path = Path(name_or_path)
    if path.suffix == ".json" or os.sep in name_or_path:
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
    else:
        path = config_dir() / f"{name_or_path}.json"
        if not path.is_file():
            names = available_configs()
            raise ConfigError(f"no shipped config named {name_or_path!r}{_suggest(name_or_path, names)}. "
                              f"Shipped configs: {', '.join(names)}; or pass a path to a .json file")
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ConfigError(f"config file {path} is not valid JSON: {e}") from None
    if not isinstance(d, dict):
        raise ConfigError(f"config file {path} must hold one JSON object of TrainConfig keys")
    d.setdefault("name", path.stem)
    return TrainConfig.from_dict(d, source=str(path))


def apply_overrides(cfg: TrainConfig, overrides: dict[str, str]) -> TrainConfig:
    """A copy of ``cfg`` with ``{"key": "text value"}`` overrides parsed into each field's type.

    A key is a TrainConfig field, ``model.<GPTConfig field>``, or a bare GPTConfig field
    that is not also a TrainConfig field."""
    d = cfg.to_dict()
    d["model_args"] = dict(d["model_args"])
    train_hints = typing.get_type_hints(TrainConfig)
    model_hints = typing.get_type_hints(GPTConfig)
    model_hints.pop("name", None)
    for key, text in overrides.items():
        if key.startswith("model.") or (key not in train_hints and key in model_hints):
            mkey = key.removeprefix("model.")
            if mkey not in model_hints:
                raise ConfigError(f"unknown model key --{key}{_suggest(mkey, model_hints)}")
            d["model_args"][mkey] = parse_value(key, text, model_hints[mkey])
        elif key in train_hints:
            d[key] = parse_value(key, text, train_hints[key])
        else:
            raise ConfigError(f"unknown config key --{key}{_suggest(key, list(train_hints) + list(model_hints))}. "
                              "Run `python -m minilooped.train --help` for the list")
    return TrainConfig.from_dict(d)


def parse_value(key: str, text, tp):
    """``text`` (a command-line string) as type ``tp`` (int, float, bool, str, dict, X | None)."""
    if not isinstance(text, str):  # already typed (from Python)
        if _isinstance(text, tp):
            return text
        raise ConfigError(f"--{key}={text!r} must be {_type_name(tp)}")
    args = typing.get_args(tp)
    if _is_optional(tp):
        if text.lower() in ("none", "null", ""):
            return None
        tp = next(a for a in args if a is not type(None))
    try:
        if tp is bool:
            low = text.lower()
            if low in ("true", "1", "yes", "on"):
                return True
            if low in ("false", "0", "no", "off"):
                return False
            raise ValueError
        if tp is int:
            return int(text)
        if tp is float:
            return float(text)
        if tp is str:
            return text
        if tp is dict:
            v = json.loads(text)
            if not isinstance(v, dict):
                raise ValueError
            return v
    except ValueError:
        raise ConfigError(f"--{key}={text!r} is not {_type_name(tp)}") from None
    raise ConfigError(f"--{key}: fields of type {tp} cannot be set from the command line")


def parse_cli(argv: list[str], default: str | None = DEFAULT_CONFIG) -> tuple[str | None, dict[str, str]]:
    """Split argv into (config name or ``default``, {key: value}). Settings are ``--key=value``;
    a bare ``--flag`` means ``--flag=true``; the one word without ``--`` names the config."""
    name, overrides = None, {}
    for arg in argv:
        if arg.startswith("--"):
            key, sep, value = arg[2:].partition("=")
            key = key.replace("-", "_")
            value = value if sep else "true"
            if key == "config":
                name = value
            else:
                overrides[key] = value
        elif name is None:
            name = arg
        else:
            raise ConfigError(f"unexpected argument {arg!r}: give settings as --key=value")
    return name or default, overrides


def parse_loop_counts(text: str, key: str = "n_loops") -> list[int]:
    """``"1,2,4,8"`` -> [1, 2, 4, 8]: comma-separated loop counts >= 1, sorted, each once."""
    depths = []
    for part in text.split(",") if text.strip() else []:
        try:
            n = int(part.strip())
        except ValueError:
            raise ConfigError(f"--{key}={text!r} is not a list of loop counts: give comma-separated "
                              f"positive integers, e.g. --{key}=1,2,4,8") from None
        if n < 1:
            raise ConfigError(f"--{key}={text!r} holds the loop count {n}: every loop count must be >= 1")
        depths.append(n)
    return sorted(set(depths))


def config_from_cli(argv: list[str]) -> TrainConfig:
    name, overrides = parse_cli(argv)
    return apply_overrides(load_config(name), overrides)


def describe_fields() -> str:
    """One line per TrainConfig field: name, type, default and its comment."""
    import inspect
    import re

    src = inspect.getsource(TrainConfig)
    comments = dict(re.findall(r"^\s+(\w+):[^#\n]*#\s*(.*)$", src, flags=re.M))
    hints = typing.get_type_hints(TrainConfig)
    lines = []
    for f in dataclasses.fields(TrainConfig):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        lines.append(f"  --{f.name}={json.dumps(default)}  ({_type_name(hints[f.name])})  {comments.get(f.name, '')}")
    return "\n".join(lines)


# ---------------------------------------------------------------------- helpers
def _is_optional(tp) -> bool:
    return typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in typing.get_args(tp)


def _isinstance(value, tp) -> bool:
    if _is_optional(tp):
        return value is None or any(_isinstance(value, a) for a in typing.get_args(tp) if a is not type(None))
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, tp)


def _type_name(tp) -> str:
    if _is_optional(tp):
        inner = [a for a in typing.get_args(tp) if a is not type(None)][0]
        return f"{_type_name(inner)} or none"
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string",
            dict: "a JSON object"}.get(tp, str(tp))


def _choice(name, value, choices):
    if value not in choices:
        raise ConfigError(f"TrainConfig.{name}={value!r} is not one of {', '.join(choices)}"
                          f"{_suggest(str(value), choices)}")


def _suggest(word: str, candidates) -> str:
    close = difflib.get_close_matches(word, list(candidates), n=3, cutoff=0.6)
    return f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""


__all__ = ["TrainConfig", "ConfigError", "load_config", "apply_overrides", "parse_cli", "parse_loop_counts",
           "config_from_cli", "available_configs", "config_dir", "DEFAULT_CONFIG"]
