"""Early-exit training and distillation settings, shared by both engines (chapter 9).

The loss itself is minilooped/models/early_exit.py (and its mirror); this file checks
that a run can use it and finds the teacher. The teacher is a run folder or checkpoint
folder of this library (its model.safetensors and the model config in its state.json),
typically the GPT-2 a recursive model was made from. It is read again from its folder
every time an engine is built, so a resumed run distils from the same teacher without
the checkpoint storing it.

What the metrics show: the training loss logged is the loss trained (the weighted exit
losses and the distillation term); the evaluations stay the cross-entropy of the last
loop, comparable with runs trained without these options.
"""
from __future__ import annotations

import json
from pathlib import Path

from ..models.config import GPTConfig
from .checkpoint import _NAME, latest_checkpoint
from .config import ConfigError


def exit_training(cfg) -> bool:
    """Whether the run trains through early_exit_loss instead of the model's own loss."""
    return bool(cfg.exit_loss or cfg.distill_from)


def check_exit_training(cfg, model_config) -> None:
    """Refuse models the early-exit loss does not apply to, with the reason."""
    if not exit_training(cfg):
        return
    if model_config.variant == "gpt2":
        raise ConfigError("exit_loss / distill_from train every loop's readout; variant='gpt2' has no loop "
                          "(distil into a looped or recursive model)")
    if model_config.variant == "parcae":
        raise ConfigError("exit_loss / distill_from are not built for variant='parcae': its training draws "
                          "the loop count and truncates backprop, which a loss at every loop would undo")


def teacher_checkpoint(path: str) -> tuple[GPTConfig, dict]:
    """(model config, weights) of the teacher in a checkpoint folder or a run folder's latest one."""
    folder = Path(path)
    if not folder.is_dir():
        raise ConfigError(f"distill_from={path!r} does not exist: give the run folder (or one of its "
                          "ckpt_* folders) of the teacher, e.g. the GPT-2 the recursive model was made from")
    if not _NAME.match(folder.name):
        latest = latest_checkpoint(folder)
        if latest is None:
            raise ConfigError(f"distill_from={path!r} holds no ckpt_* folder: train the teacher first")
        folder = latest
    from ..io import load_safetensors

    state = json.loads((folder / "state.json").read_text(encoding="utf-8"))
    return GPTConfig.from_dict(state["model_config"]), load_safetensors(folder / "model.safetensors")


def check_teacher(teacher_config: GPTConfig, model_config: GPTConfig) -> None:
    if teacher_config.vocab_size != model_config.vocab_size:
        raise ConfigError(f"the teacher's vocab_size={teacher_config.vocab_size} differs from the student's "
                          f"{model_config.vocab_size}: distillation compares their distributions token by token")
    if teacher_config.block_size < model_config.block_size:
        raise ConfigError(f"the teacher's block_size={teacher_config.block_size} is shorter than the student's "
                          f"{model_config.block_size}: it cannot read the student's batches")


__all__ = ["exit_training", "check_exit_training", "teacher_checkpoint", "check_teacher"]
