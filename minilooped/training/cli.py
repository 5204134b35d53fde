"""Command lines: ``python -m minilooped.train``, ``python -m minilooped.sample`` and
``python -m minilooped.evaluate``.

Only argument handling lives here: the work is done by loop.py, sampling.py and evaluation.py. Errors a
user can fix (a bad key, missing data, a checkpoint of another model, a diverged run)
are printed as one message without a traceback and exit with status 1 (2 for usage).
"""
from __future__ import annotations

import sys

from .checkpoint import CheckpointError
from .config import ConfigError, available_configs, config_from_cli, describe_fields

TRAIN_USAGE = """usage: python -m minilooped.train [CONFIG] [--key=value ...]

CONFIG is a shipped config name (default: shakespeare-loop-residual) or a path to a .json
file of TrainConfig keys. Every key below can be overridden; GPTConfig fields of the model
(n_layer, n_loops, n_embd, block_size, dropout, ...) are given bare or as --model.<field>.
Booleans: --resume is --resume=true. Under torchrun (DDP) use --backend=torch.

examples:
  python -m minilooped.train
  python -m minilooped.train --backend=torch --max_iters=500
  python -m minilooped.train shakespeare-parcae --n_loops=6
  python -m minilooped.train --resume
  torchrun --standalone --nproc_per_node=8 -m minilooped.train owt-gpt2-124m --backend=torch
  python -m minilooped.train owt-gpt2-124m-1gpu-1h --dry_run=true --gpu=a100-80gb   # the plan, on the CPU

shipped configs: {configs}

keys (default, type, meaning):
{fields}
"""


def _error(e: Exception) -> None:
    """One line on stderr: the message alone (a KeyError's without its quotes)."""
    print(f"error: {e.args[0] if isinstance(e, KeyError) and e.args else e}", file=sys.stderr)


def train_main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in argv):
        print(TRAIN_USAGE.format(configs=", ".join(available_configs()), fields=describe_fields()))
        return 0
    try:
        cfg = config_from_cli(argv)
    except ConfigError as e:
        _error(e)
        return 2
    from ..backend import DeviceError
    from .loop import TrainingDiverged, train

    try:
        train(cfg)
    except (ConfigError, CheckpointError, TrainingDiverged, DeviceError, FileNotFoundError, ValueError,
            KeyError) as e:
        _error(e)
        return 1
    return 0


def sample_main(argv: list[str] | None = None) -> int:
    from .sampling import SAMPLE_USAGE, sample_from_cli

    argv = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in argv):
        print(SAMPLE_USAGE)
        return 0
    try:
        for text in sample_from_cli(argv):
            print(text)
            print("---------------")
    except (ConfigError, CheckpointError, FileNotFoundError, ValueError, KeyError) as e:
        _error(e)
        return 1
    return 0


def evaluate_main(argv: list[str] | None = None) -> int:
    from ..atomic import atomic_write_json
    from ..backend import DeviceError
    from ..provenance import provenance
    from .evaluation import EVALUATE_USAGE, eval_config_from_cli, evaluate_depths, format_report

    argv = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in argv):
        print(EVALUATE_USAGE)
        return 0
    try:
        cfg = eval_config_from_cli(argv)
    except ConfigError as e:
        _error(e)
        return 2
    try:
        result = evaluate_depths(cfg)
    except (ConfigError, CheckpointError, DeviceError, FileNotFoundError, ValueError, KeyError) as e:
        _error(e)
        return 1
    print(format_report(result))
    if cfg.json:
        command = ["python", "-m", "minilooped.evaluate", *argv]
        atomic_write_json(cfg.json, {**result, "provenance": provenance(command)})
        print(f"wrote {cfg.json}")
    return 0
