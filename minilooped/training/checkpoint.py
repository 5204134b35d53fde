"""Checkpoints: everything needed to continue a run exactly, written atomically.

One checkpoint is one folder in the run folder, ``ckpt_<step>/``::

    model.safetensors       the weights (minilooped.io.save_safetensors: the same file
                            format for the NumPy core and the PyTorch mirror)
    optimizer.safetensors   AdamW's moments, keyed "<moment>/<parameter name>"
    state.json              step, train config, model config, data description and the
                            random-number-generator states (batches, loop counts, dropout)

Why a folder renamed into place: the folder is written under a temporary name
(``.tmp-ckpt_<step>-<pid>``) and renamed to ``ckpt_<step>`` only once all three files
are complete and flushed to disk. A rename is atomic, so a folder called ``ckpt_*``
is always complete: a run killed while saving leaves a ``.tmp-*`` folder (ignored and
cleaned up later) and the previous checkpoint untouched. Older checkpoints are deleted
only after the new one exists.

Optimizer states are stored by parameter *name*, not by position, so a checkpoint of
the core resumes in the mirror and the other way round.
"""
from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..io import load_safetensors, save_safetensors

FORMAT = "minilooped.checkpoint/1"
_NAME = re.compile(r"^ckpt_(\d+)$")


class CheckpointError(ValueError):
    """A checkpoint that is missing, unreadable, or made for another model or data."""


@dataclass
class Checkpoint:
    path: Path
    step: int
    weights: dict  # name -> np.ndarray
    optimizer: dict  # {"arrays": {"<moment>/<name>": array}, "scalars": {name: {...}}, "param_groups": [...]}
    state: dict  # the contents of state.json


# ---------------------------------------------------------------------- optimizer state
def flatten_optimizer(state_dict: dict, param_names: list[str]) -> tuple[dict, dict]:
    """A torch-layout optimizer state dict ({"state": {index: {...}}, "param_groups": [...]},
    with NumPy arrays) -> (arrays keyed "<moment>/<name>", JSON metadata)."""
    arrays, scalars = {}, {}
    for index, entry in state_dict["state"].items():
        name = param_names[int(index)]
        for key, value in entry.items():
            if isinstance(value, np.ndarray) and value.ndim > 0:
                arrays[f"{key}/{name}"] = np.ascontiguousarray(value)
            else:
                scalars.setdefault(name, {})[key] = float(value)
    groups = []
    for g in state_dict["param_groups"]:
        g = {k: v for k, v in g.items() if isinstance(v, (int, float, str, bool, list, tuple, type(None)))}
        g["params"] = [param_names[int(i)] for i in g["params"]]
        groups.append(g)
    return arrays, {"scalars": scalars, "param_groups": groups}


def unflatten_optimizer(arrays: dict, meta: dict, param_names: list[str]) -> dict:
    """The inverse of :func:`flatten_optimizer` for a model whose parameters, in optimizer
    order, are ``param_names``."""
    index = {n: i for i, n in enumerate(param_names)}
    state: dict[int, dict] = {}
    for key, value in arrays.items():
        moment, name = key.split("/", 1)
        if name not in index:
            raise CheckpointError(f"the optimizer state has parameter {name!r}, which this model does not have")
        state.setdefault(index[name], {})[moment] = value
    for name, entries in meta.get("scalars", {}).items():
        if name not in index:
            raise CheckpointError(f"the optimizer state has parameter {name!r}, which this model does not have")
        state.setdefault(index[name], {}).update(entries)
    return {"state": state, "param_groups": meta.get("param_groups", [])}


# ---------------------------------------------------------------------- save
def save_checkpoint(run_dir, step: int, weights: dict, optimizer_arrays: dict, optimizer_meta: dict,
                    state: dict, keep: int = 1) -> Path:
    """Write ``run_dir/ckpt_<step>`` atomically, then delete all but the newest ``keep``."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    final = run_dir / f"ckpt_{step:07d}"
    tmp = run_dir / f".tmp-ckpt_{step:07d}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        save_safetensors(weights, tmp / "model.safetensors", metadata={"step": str(step)})
        save_safetensors(optimizer_arrays, tmp / "optimizer.safetensors",
                         metadata={"minilooped.optimizer": json.dumps(optimizer_meta)})
        _write_json(tmp / "state.json", {"format": FORMAT, "step": step, **state})
        _fsync_dir(tmp)
        if final.exists():  # saving the same step again (e.g. after a resume): swap it out
            old = run_dir / f".old-{final.name}-{os.getpid()}"
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)  # the atomic step: from here on the checkpoint exists
        _fsync_dir(run_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for old in list_checkpoints(run_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    for stale in run_dir.glob(".tmp-ckpt_*"):  # left by a run killed while saving
        if stale != tmp:
            shutil.rmtree(stale, ignore_errors=True)
    return final


def _write_json(path: Path, obj: dict) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=1)
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # some systems cannot open folders; the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# ---------------------------------------------------------------------- load
def list_checkpoints(run_dir) -> list[Path]:
    """Complete checkpoints of a run folder, oldest first."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in run_dir.iterdir() if (m := _NAME.match(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found)]


def latest_checkpoint(run_dir) -> Path | None:
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def load_checkpoint(path) -> Checkpoint:
    """Load a checkpoint folder, or the latest checkpoint of a run folder."""
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"no checkpoint at {path}: the folder does not exist (to start a new run "
                              "drop --resume)")
    if not _NAME.match(path.name):
        latest = latest_checkpoint(path)
        if latest is None:
            raise CheckpointError(f"{path} holds no checkpoint (no ckpt_* folder): train first, "
                                  "or drop --resume to start a new run")
        path = latest
    try:
        state = json.loads((path / "state.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {path} has no state.json: it is incomplete") from None
    except json.JSONDecodeError as e:
        raise CheckpointError(f"checkpoint {path}: state.json is corrupt ({e})") from None
    if state.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {path} has format {state.get('format')!r}, expected {FORMAT!r}")
    try:
        weights = load_safetensors(path / "model.safetensors")
        arrays, meta = load_safetensors(path / "optimizer.safetensors", with_metadata=True)
    except (FileNotFoundError, ValueError) as e:
        raise CheckpointError(f"checkpoint {path} cannot be read: {e}") from None
    optimizer = {"arrays": arrays, **json.loads(meta.get("minilooped.optimizer", "{}"))}
    return Checkpoint(path=path, step=int(state["step"]), weights=weights, optimizer=optimizer, state=state)


def check_compatible(ckpt: Checkpoint, model_config: dict, data: dict) -> None:
    """Refuse to resume ``ckpt`` into a run with another model or other data, naming every
    field that differs."""
    diffs = []
    theirs = {k: v for k, v in ckpt.state.get("model_config", {}).items() if k != "name"}
    ours = {k: v for k, v in model_config.items() if k != "name"}
    for k in sorted(set(theirs) | set(ours)):
        if theirs.get(k) != ours.get(k):
            diffs.append(f"model.{k}: checkpoint {theirs.get(k)!r}, this run {ours.get(k)!r}")
    for k in ("tokenizer", "vocab_size"):
        a, b = ckpt.state.get("data", {}).get(k), data.get(k)
        if a != b:
            diffs.append(f"data {k}: checkpoint {a!r}, this run {b!r}")
    if diffs:
        raise CheckpointError(
            f"cannot resume {ckpt.path}: it was saved for another configuration.\n  "
            + "\n  ".join(diffs)
            + "\nResume with the config the checkpoint was made with (it is in its state.json under "
              "'train_config'), or start a new run in another --out_dir."
        )


__all__ = ["Checkpoint", "CheckpointError", "save_checkpoint", "load_checkpoint", "latest_checkpoint",
           "list_checkpoints", "check_compatible", "flatten_optimizer", "unflatten_optimizer"]
