"""The training loop's adapter for the PyTorch mirror (minilooped.torch.models).

Same methods, same order as engine_core.py. What PyTorch adds, each one line or two:
autocast to bfloat16/float16 (with a GradScaler for float16, whose small exponent range
needs loss scaling), torch.compile, fused AdamW, TF32 matmuls, DDP under torchrun, and
scaled_dot_product_attention (the mirror's attention already calls it, which picks a
flash kernel on GPUs).

``raw_model`` is the model before torch.compile and DDP wrap it: weights are saved and
loaded through it, so checkpoint keys never carry the wrappers' ``_orig_mod.`` or
``module.`` prefixes (nanoGPT saves the compiled model's state dict and has to strip
``_orig_mod.`` when it resumes).
"""
from __future__ import annotations

import base64
import contextlib
import math

import numpy as np
import torch

from ..torch.models import GPT
from ..torch.models.early_exit import early_exit_loss
from .distill import check_exit_training, check_teacher, exit_training, teacher_checkpoint

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
_WRAPPER_PREFIXES = ("_orig_mod.", "module.")


@contextlib.contextmanager
def flushed_subnormals(device: str):
    """Flush subnormal floats (below ~1e-38 in float32) to zero while a CPU run trains.

    The gradient reaching a deep loop's first steps can fall there (fully looped, 12 loops),
    where x86 matrix products run ~100x slower, for a contribution to the update that float32
    cannot even represent fully (40 FLT steps at 12 loops: 38.8 s without, 12.6 s with, the
    same losses). The setting is process-wide, so it is undone when training ends: torch's
    default (off), which the caller's own code may rely on."""
    flush = not device.startswith("cuda") and torch.set_flush_denormal(True)
    try:
        yield
    finally:
        if flush:
            torch.set_flush_denormal(False)


class TorchEngine:
    def __init__(self, cfg, model_config, dist):
        self.name = "torch"
        self.dist = dist
        self.device = dist.device
        device_type = "cuda" if self.device.startswith("cuda") else "cpu"
        if device_type == "cuda" and not torch.cuda.is_available():
            from .config import ConfigError

            raise ConfigError("device 'cuda' was asked for, but torch sees no GPU (torch.cuda.is_available() is "
                              "False: no NVIDIA GPU, or a CPU-only torch build); use --device=cpu")
        torch.manual_seed(cfg.seed + dist.rank)  # init is overwritten by rank 0's through DDP's broadcast
        torch.backends.cuda.matmul.allow_tf32 = cfg.tf32
        torch.backends.cudnn.allow_tf32 = cfg.tf32
        self.raw_model = GPT(model_config).to(self.device)
        fused = cfg.fused_adamw if cfg.fused_adamw is not None else device_type == "cuda"
        self.optimizer = torch.optim.AdamW(self.raw_model.optim_groups(cfg.weight_decay), lr=cfg.learning_rate,
                                           betas=(cfg.beta1, cfg.beta2), fused=fused)
        self.model = torch.compile(self.raw_model) if cfg.compile else self.raw_model
        if dist.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP

            self.model = DDP(self.model, device_ids=[dist.local_rank] if device_type == "cuda" else None)
        self.autocast = (contextlib.nullcontext() if cfg.dtype == "float32"
                         else torch.autocast(device_type=device_type, dtype=_DTYPES[cfg.dtype]))
        self.scaler = torch.amp.GradScaler(device_type, enabled=cfg.dtype == "float16")
        self.skips_nonfinite_steps = self.scaler.is_enabled()  # the scaler skips inf steps itself
        self._precision = {"bfloat16": "bf16", "float16": "fp16"}.get(cfg.dtype, "tf32" if cfg.tf32 else "fp32")
        self._loss_sum, self._micro = torch.zeros((), device=self.device), 0
        check_exit_training(cfg, model_config)
        self.exit_training, self.exit_cfg = exit_training(cfg), cfg
        if self.exit_training and (cfg.compile or dist.enabled):
            from .config import ConfigError

            raise ConfigError("exit_loss / distill_from call the model's loop step by step, which torch.compile "
                              "and DDP do not wrap: run them with --compile=false on one process")
        self.teacher = self._load_teacher(cfg, model_config)

    def _tensor(self, a):
        return torch.from_numpy(a).to(self.device, non_blocking=True)  # (B, T) int64 token ids

    def _load_teacher(self, cfg, model_config):
        """The distillation teacher, read from its folder (distill.py), frozen, in eval mode."""
        if not cfg.distill_from:
            return None
        config, weights = teacher_checkpoint(cfg.distill_from)
        check_teacher(config, model_config)
        teacher = GPT(config).to(self.device)
        teacher.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in weights.items()})
        for p in teacher.parameters():
            p.requires_grad = False
        return teacher.eval()

    def _objective(self, model, x, y, n_loops):
        """The loss to train: the model's own, or early exits and distillation (models/early_exit.py)."""
        if not self.exit_training:
            return model(x, y, n_loops=n_loops)[1]
        teacher_logits = None
        if self.teacher is not None:
            with torch.no_grad():
                teacher_logits = self.teacher(x)[0]  # (B, T, vocab)
        c = self.exit_cfg
        return early_exit_loss(model, x, y, c.exit_loss, teacher_logits, c.distill_weight, c.distill_temperature,
                               n_loops)

    # ------------------------------------------------------------------ one step
    def forward_backward(self, x, y, n_loops, scale: float, sync: bool) -> None:
        """Add the gradient of ``scale * loss(x, y)`` to the parameters' .grad; with DDP the
        gradients are averaged over processes only when ``sync`` (the last micro-batch)."""
        no_sync = self.model.no_sync() if self.dist.enabled and not sync else contextlib.nullcontext()
        with no_sync:
            with self.autocast:
                loss = self._objective(self.model, self._tensor(x), self._tensor(y), n_loops)
            self.scaler.scale(loss * scale).backward()
        self._loss_sum += loss.detach().float()  # no .item(): the GPU need not wait here
        self._micro += 1

    def close(self) -> None:
        """Nothing to release: torch manages its own threads."""

    def collect_loss(self, dist) -> float:
        """The mean loss of this step's micro-batches, over all processes."""
        from .ddp import all_reduce_mean

        loss = float(self._loss_sum.item()) / self._micro
        self._loss_sum, self._micro = torch.zeros((), device=self.device), 0
        return all_reduce_mean(loss, dist)

    def clip_grad_norm(self, max_norm: float) -> float:
        self.scaler.unscale_(self.optimizer)  # clip the true gradients, not the scaled ones
        norm = torch.nn.utils.clip_grad_norm_(self.raw_model.parameters(), max_norm if max_norm > 0 else math.inf)
        return float(norm)

    def optimizer_step(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)

    @torch.no_grad()
    def eval_loss(self, batches, n_loops=None) -> float:
        self.raw_model.eval()
        losses = []
        for x, y in batches:
            with self.autocast:
                losses.append(self.raw_model(self._tensor(x), self._tensor(y), n_loops=n_loops)[1].float().item())
        self.raw_model.train()
        return float(np.mean(losses))

    # ------------------------------------------------------------------ state
    def named_numels(self) -> list[tuple[str, int]]:
        return [(n, p.numel()) for n, p in self.raw_model.named_parameters()]

    def param_names(self) -> list[str]:
        names = {id(p): n for n, p in self.raw_model.named_parameters()}
        return [names[id(p)] for g in self.optimizer.param_groups for p in g["params"]]

    def weights(self) -> dict:
        return {k: v.detach().cpu().numpy() for k, v in self.raw_model.state_dict().items()}

    def load_weights(self, state_dict: dict) -> None:
        clean = {}
        for k, v in state_dict.items():
            for prefix in _WRAPPER_PREFIXES:  # checkpoints of wrapped models (nanoGPT's, DDP's)
                k = k.removeprefix(prefix)
            clean[k] = torch.from_numpy(np.ascontiguousarray(v))
        self.raw_model.load_state_dict(clean)

    def optimizer_state(self) -> dict:
        sd = self.optimizer.state_dict()
        return {"state": {i: {k: (float(v) if v.ndim == 0 else v.detach().cpu().numpy()) for k, v in s.items()}
                          for i, s in sd["state"].items()},
                "param_groups": sd["param_groups"]}

    def load_optimizer_state(self, state: dict) -> None:
        own = self.optimizer.state_dict()
        tensors = {int(i): {k: (torch.tensor(float(v), dtype=torch.float32) if np.ndim(v) == 0
                                else torch.from_numpy(np.ascontiguousarray(v))) for k, v in s.items()}
                   for i, s in state["state"].items()}
        self.optimizer.load_state_dict({"state": tensors, "param_groups": own["param_groups"]})

    def engine_state(self) -> dict:
        """torch's random generators (dropout, Parcae's h_0) and the GradScaler."""
        state = {"torch_rng": _b64(torch.get_rng_state())}
        if self.device.startswith("cuda"):
            state["torch_cuda_rng"] = _b64(torch.cuda.get_rng_state(self.device))
        if self.scaler.is_enabled():
            state["grad_scaler"] = self.scaler.state_dict()
        return state

    def load_engine_state(self, state: dict) -> None:
        if "torch_rng" in state:
            torch.set_rng_state(_unb64(state["torch_rng"]))
        if "torch_cuda_rng" in state and self.device.startswith("cuda"):
            torch.cuda.set_rng_state(_unb64(state["torch_cuda_rng"]), self.device)
        if "grad_scaler" in state and self.scaler.is_enabled():
            self.scaler.load_state_dict(state["grad_scaler"])

    def device_name(self) -> str:
        if self.device.startswith("cuda"):
            return torch.cuda.get_device_name(self.device)
        return "cpu"

    def precision(self) -> str:
        return self._precision


def _b64(t: torch.Tensor) -> str:
    return base64.b64encode(t.cpu().numpy().tobytes()).decode("ascii")


def _unb64(s: str) -> torch.Tensor:
    return torch.from_numpy(np.frombuffer(base64.b64decode(s), dtype=np.uint8).copy())
