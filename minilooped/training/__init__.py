"""Training: the loop, its configs, checkpoints, metrics and MFU (``python -m minilooped.train``).

    from minilooped.training import load_config, apply_overrides, train
    cfg = apply_overrides(load_config("shakespeare-loop-residual"), {"max_iters": "100"})
    result = train(cfg)            # -> TrainResult(run_dir, step, train_loss, val_loss, ...)

Files: config.py (TrainConfig, shipped configs, --key=value overrides), loop.py (the loop),
engine_core.py / engine_torch.py (the two engines), run_data.py (token files and checks),
checkpoint.py (atomic checkpoints), metrics.py (JSONL log), mfu.py (FLOPs and MFU), ddp.py
(torchrun), sampling.py (``python -m minilooped.sample``), evaluation.py (``python -m
minilooped.evaluate``: loss against loop count), results.py (tables and plots), plan.py
(tokens, memory, time and cost of a run) and dry_run.py (``--dry_run=true``).
"""
from .config import (ConfigError, TrainConfig, apply_overrides, available_configs, config_from_cli,
                     load_config)
from .checkpoint import CheckpointError, latest_checkpoint, load_checkpoint
from .loop import TrainingDiverged, TrainResult, train

__all__ = ["TrainConfig", "ConfigError", "load_config", "apply_overrides", "config_from_cli",
           "available_configs", "train", "TrainResult", "TrainingDiverged", "CheckpointError",
           "load_checkpoint", "latest_checkpoint"]
