"""The training loop's adapter for the from-scratch core (NumPy on the CPU, CuPy on a GPU).

An engine owns the model and its optimizer and does the arithmetic of one step; the
loop (loop.py) owns everything else: batches, schedule, logging, checkpoints. The torch
adapter (engine_torch.py) has the same methods in the same order, so the two read side
by side and a run does the same operations in the same order on either.
"""
from __future__ import annotations

import math

import numpy as np

import minilooped as ml
from ..models import GPT
from ..models.early_exit import early_exit_loss
from .distill import check_exit_training, check_teacher, exit_training, teacher_checkpoint
from .threads import ThreadedDataParallel, resolve_threads


class CoreEngine:
    def __init__(self, cfg, model_config, dist):
        self.name = cfg.backend  # "numpy" or "cupy"
        self.device = "cuda" if cfg.backend == "cupy" else "cpu"
        ml.manual_seed(cfg.seed)  # the core's generator: parameter init and dropout
        self.raw_model = self.model = GPT(model_config).to(self.device)
        self.optimizer = ml.optim.AdamW(self.model.optim_groups(cfg.weight_decay), lr=cfg.learning_rate,
                                        betas=(cfg.beta1, cfg.beta2))
        self._loss_sum, self._micro = 0.0, 0
        self.skips_nonfinite_steps = False  # only torch's float16 GradScaler does
        check_exit_training(cfg, model_config)
        self.exit_training, self.exit_cfg = exit_training(cfg), cfg
        self.teacher = self._load_teacher(cfg, model_config)
        # on the CPU, the batch is split across threads (threads.py); CuPy has the GPU's own
        self.threads = resolve_threads(cfg.threads, cfg.batch_size) if self.device == "cpu" else 1
        self.parallel = ThreadedDataParallel(self.model, self.threads) if self.threads > 1 else None

    def _tensor(self, a):
        return ml.Tensor(a).to(self.device)  # (B, T) int64 token ids

    def _load_teacher(self, cfg, model_config):
        """The distillation teacher, read from its folder (distill.py), frozen, in eval mode."""
        if not cfg.distill_from:
            return None
        config, weights = teacher_checkpoint(cfg.distill_from)
        check_teacher(config, model_config)
        teacher = GPT(config).to(self.device)
        teacher.load_state_dict(weights)
        for p in teacher.parameters():
            p.requires_grad = False
        return teacher.eval()

    def _objective(self, model, x, y, n_loops):
        """The loss to train: the model's own, or early exits and distillation (models/early_exit.py)."""
        if not self.exit_training:
            return model(x, y, n_loops=n_loops)[1]
        teacher_logits = None
        if self.teacher is not None:
            with ml.no_grad():
                teacher_logits = self.teacher(x)[0]  # (B, T, vocab)
        c = self.exit_cfg
        return early_exit_loss(model, x, y, c.exit_loss, teacher_logits, c.distill_weight, c.distill_temperature,
                               n_loops)

    # ------------------------------------------------------------------ one step
    def forward_backward(self, x, y, n_loops, scale: float, sync: bool) -> None:
        """Add the gradient of ``scale * loss(x, y)`` to the parameters' .grad."""
        if self.parallel is not None:
            self._loss_sum += self.parallel.forward_backward(x, y, n_loops, scale, self.device, self._objective)
        else:
            loss = self._objective(self.model, self._tensor(x), self._tensor(y), n_loops)
            (loss * scale).backward()
            self._loss_sum += loss.item()
        self._micro += 1

    def close(self) -> None:
        """Release what the engine holds beyond memory: the threads of threads.py, if any."""
        if self.parallel is not None:
            self.parallel.close()

    def collect_loss(self, dist) -> float:
        """The mean loss of this step's micro-batches."""
        loss, self._loss_sum, self._micro = self._loss_sum / self._micro, 0.0, 0
        return loss

    def clip_grad_norm(self, max_norm: float) -> float:
        """Clip the global gradient norm to max_norm (0: no clipping); the norm before."""
        return ml.optim.clip_grad_norm_(self.model.parameters(), max_norm if max_norm > 0 else math.inf)

    def optimizer_step(self, lr: float) -> None:
        ml.optim.set_lr(self.optimizer, lr)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def eval_loss(self, batches, n_loops=None) -> float:
        self.model.eval()
        if self.parallel is not None:
            losses = [self.parallel.loss(x, y, n_loops, self.device) for x, y in batches]
        else:
            with ml.no_grad():
                losses = [self.model(self._tensor(x), self._tensor(y), n_loops=n_loops)[1].item() for x, y in batches]
        self.model.train()
        return float(np.mean(losses))

    # ------------------------------------------------------------------ state
    def named_numels(self) -> list[tuple[str, int]]:
        return [(n, p.numel()) for n, p in self.model.named_parameters()]

    def param_names(self) -> list[str]:
        """Parameter names in the optimizer's order (its state dict's indices)."""
        names = {id(p): n for n, p in self.model.named_parameters()}
        return [names[id(p)] for g in self.optimizer.param_groups for p in g["params"]]

    def weights(self) -> dict:
        return {k: ml.backend.to_numpy(v) for k, v in self.model.state_dict().items()}

    def load_weights(self, state_dict: dict) -> None:
        self.model.load_state_dict(state_dict)

    def optimizer_state(self) -> dict:
        sd = self.optimizer.state_dict()
        return {"state": {i: {k: ml.backend.to_numpy(v) if hasattr(v, "shape") else v for k, v in s.items()}
                          for i, s in sd["state"].items()},
                "param_groups": sd["param_groups"]}

    def load_optimizer_state(self, state: dict) -> None:
        own = self.optimizer.state_dict()
        self.optimizer.load_state_dict({"state": state["state"], "param_groups": own["param_groups"]})

    def engine_state(self) -> dict:
        """The core's random generator (dropout, Parcae's h_0)."""
        try:
            return {"core_rng": ml.backend.generator(self.device).bit_generator.state}
        except AttributeError:  # CuPy's generators do not expose their state
            return {}

    def load_engine_state(self, state: dict) -> None:
        if "core_rng" in state:
            ml.backend.generator(self.device).bit_generator.state = state["core_rng"]

    def device_name(self) -> str:
        if self.device == "cuda":
            cp = ml.backend.cupy_module()
            name = cp.cuda.runtime.getDeviceProperties(cp.cuda.Device().id)["name"]
            return name.decode() if isinstance(name, bytes) else str(name)
        return "cpu"

    def precision(self) -> str:
        return "fp32"
