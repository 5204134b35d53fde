"""Early-exit training and distillation (models/early_exit.py, training/distill.py).

- the loss, checked against independent computations: "uniform" is the mean of the
  model's own losses cut at every loop count; the distillation term is torch's kl_div;
- core and mirror agree on the loss and every gradient (float64);
- both engines train alike with exit_loss and a teacher, the threads' split too, and a
  resumed run continues exactly (the teacher is read again from its folder);
- bad settings are refused with the reason.
"""
import numpy as np
import pytest
import torch

import minilooped as ml
from minilooped.models import GPT, GPTConfig
from minilooped.models.early_exit import early_exit_loss, exit_weights, loop_logits
from minilooped.torch.models import GPT as TorchGPT
from minilooped.torch.models.early_exit import early_exit_loss as torch_early_exit_loss
from minilooped.training import ConfigError, train
from _train_utils import losses, tiny_config, tiny_data

torch.set_num_threads(1)
TINY = dict(vocab_size=32, n_embd=16, n_head=2, block_size=8, n_layer=3, variant="loop_residual",
            n_prelude=1, n_coda=1, n_loops=3)


def pair():
    torch.manual_seed(0)
    mirror = TorchGPT(GPTConfig(**TINY)).double()
    core = GPT(mirror.config).to("float64")
    core.load_state_dict({k: v.detach().numpy() for k, v in mirror.state_dict().items()})
    return mirror, core


def batch(seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 32, size=(2, 8)), rng.integers(0, 32, size=(2, 8))


def test_exit_weights():
    assert exit_weights("", 3) == [0.0, 0.0, 1.0]
    assert exit_weights("uniform", 4) == [0.25] * 4
    assert exit_weights("aggressive", 3) == pytest.approx([1 / 6, 2 / 6, 3 / 6])
    with pytest.raises(ValueError, match="exit_loss"):
        exit_weights("steep", 3)


def test_loss_against_the_model_cut_at_every_loop():
    _, core = pair()
    x, y = batch()
    with ml.no_grad():
        cut = [core(ml.Tensor(x), ml.Tensor(y), n_loops=k)[1].item() for k in (1, 2, 3)]
        per_loop = loop_logits(core, ml.Tensor(x))
        np.testing.assert_allclose(per_loop[1].numpy(), core(ml.Tensor(x), n_loops=2)[0].numpy(), rtol=1e-12)
        for kind in ("", "uniform", "aggressive"):
            loss = early_exit_loss(core, ml.Tensor(x), ml.Tensor(y), kind).item()
            assert loss == pytest.approx(np.dot(exit_weights(kind, 3), cut), rel=1e-12)


def test_distillation_term_is_the_softened_kl():
    mirror, _ = pair()
    x, y = batch()
    teacher = torch.randn(2, 8, 32, dtype=torch.float64)
    tau, alpha = 2.0, 0.3
    got = torch_early_exit_loss(mirror, torch.from_numpy(x), torch.from_numpy(y), "", teacher, alpha, tau)
    logits = mirror(torch.from_numpy(x))[0]
    ce = torch.nn.functional.cross_entropy(logits.reshape(16, -1), torch.from_numpy(y).reshape(16))
    kl = torch.nn.functional.kl_div(torch.log_softmax(logits / tau, -1), torch.log_softmax(teacher / tau, -1),
                                    reduction="none", log_target=True).sum(-1).mean()
    assert got.item() == pytest.approx(((1 - alpha) * ce + alpha * tau ** 2 * kl).item(), rel=1e-12)


@pytest.mark.parametrize("kind", ["uniform", "aggressive"])
def test_core_and_mirror_agree_on_loss_and_gradients(kind):
    mirror, core = pair()
    x, y = batch()
    teacher = np.random.default_rng(1).normal(size=(2, 8, 32))
    t_loss = torch_early_exit_loss(mirror, torch.from_numpy(x), torch.from_numpy(y), kind,
                                   torch.from_numpy(teacher), 0.5, 2.0)
    t_loss.backward()
    loss = early_exit_loss(core, ml.Tensor(x), ml.Tensor(y), kind, ml.Tensor(teacher), 0.5, 2.0)
    loss.backward()
    assert loss.item() == pytest.approx(t_loss.item(), rel=1e-10)
    grads = dict(mirror.named_parameters())
    for name, p in core.named_parameters():
        g = grads[name].grad.numpy()
        np.testing.assert_allclose(np.asarray(p.grad), g, rtol=1e-8, atol=1e-12 * np.abs(g).max())


# ---------------------------------------------------------------------- training runs
N = 6


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tiny_data(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory, data_dir):
    """A tiny 2-layer GPT-2 trained for 4 steps: the teacher's run folder."""
    out = tmp_path_factory.mktemp("teacher")
    train(tiny_config(data_dir, out, model="shakespeare-gpt2", max_iters=4, eval_interval=4,
                      model_args={"n_embd": 32, "n_head": 2, "n_layer": 2, "block_size": 16}))
    return out


def exit_run(data_dir, out, teacher_dir, **kw):
    return tiny_config(data_dir, out, exit_loss="aggressive", distill_from=str(teacher_dir), distill_weight=0.5,
                       distill_temperature=2.0, lr_decay_iters=N, eval_interval=N // 2, **kw)


def test_engines_train_alike(tmp_path, data_dir, teacher_dir):
    from minilooped.io import save_safetensors

    cfg = exit_run(data_dir, tmp_path / "x", teacher_dir)
    torch.manual_seed(0)
    save_safetensors(TorchGPT(cfg.model_config(vocab_size=_vocab(data_dir))), tmp_path / "init.safetensors")
    curves = {}
    for backend in ("numpy", "torch"):
        train(exit_run(data_dir, tmp_path / backend, teacher_dir, backend=backend, max_iters=N, threads=1,
                       init_from=str(tmp_path / "init.safetensors")))
        curves[backend] = np.array(losses(tmp_path / backend))
    assert len(curves["numpy"]) == N
    np.testing.assert_allclose(curves["numpy"], curves["torch"], atol=1e-4)


@pytest.mark.parametrize("threads", [1, 2])
def test_resume_continues_exactly(tmp_path, data_dir, teacher_dir, threads):
    full = exit_run(data_dir, tmp_path / "full", teacher_dir, max_iters=N, threads=threads)
    train(full)
    train(exit_run(data_dir, tmp_path / "resumed", teacher_dir, max_iters=N // 2, threads=threads))
    train(exit_run(data_dir, tmp_path / "resumed", teacher_dir, max_iters=N, threads=threads, resume=True))
    assert losses(tmp_path / "full") == losses(tmp_path / "resumed")


def test_bad_settings_are_refused(tmp_path, data_dir, teacher_dir):
    with pytest.raises(ConfigError, match="exit_loss"):
        tiny_config(data_dir, tmp_path, exit_loss="steep")
    with pytest.raises(ConfigError, match="distill_weight"):
        tiny_config(data_dir, tmp_path, distill_weight=1.5)
    with pytest.raises(ConfigError, match="distill_temperature"):
        tiny_config(data_dir, tmp_path, distill_temperature=0)
    with pytest.raises(ConfigError, match="does not exist"):
        train(tiny_config(data_dir, tmp_path / "a", distill_from=str(tmp_path / "nowhere")))
    with pytest.raises(ConfigError, match="no loop"):
        train(tiny_config(data_dir, tmp_path / "b", model="shakespeare-gpt2", exit_loss="uniform",
                          model_args={"n_embd": 32, "n_head": 2, "n_layer": 2, "block_size": 16}))
    with pytest.raises(ConfigError, match="parcae"):
        train(tiny_config(data_dir, tmp_path / "c", model="shakespeare-parcae", exit_loss="uniform",
                          model_args={"n_embd": 32, "n_head": 2, "block_size": 16}))
    with pytest.raises(ConfigError, match="block_size"):
        train(tiny_config(data_dir, tmp_path / "d", distill_from=str(teacher_dir),
                          model_args={"n_embd": 32, "n_head": 2, "n_loops": 2, "block_size": 32}))


def _vocab(data_dir):
    import json
    from pathlib import Path

    return json.loads((Path(data_dir) / "meta.json").read_text())["vocab_size"]


def test_uptraining_a_recursive_model_from_its_teacher(tmp_path, data_dir, teacher_dir):
    """The chapter's workflow: a recursive model made from the teacher by from_gpt2 (full-rank
    LoRA: it starts as the teacher itself), uptrained with early exits and distillation."""
    from minilooped.io import save_safetensors
    from minilooped.models import from_gpt2
    from minilooped.training import load_checkpoint

    ckpt = load_checkpoint(teacher_dir)
    teacher = GPT(GPTConfig.from_dict(ckpt.state["model_config"]))
    teacher.load_state_dict(ckpt.weights)
    student = from_gpt2(teacher, 1, lora_rank=32)  # 1 shared block looped twice, LoRA of full rank
    save_safetensors(student, tmp_path / "student.safetensors")
    keys = ("variant", "n_layer", "n_loops", "lora_rank", "sharing", "init", "n_embd", "n_head", "block_size")
    cfg = tiny_config(data_dir, tmp_path / "run", model="shakespeare-gpt2", max_iters=2, eval_interval=2,
                      model_args={k: getattr(student.config, k) for k in keys},
                      init_from=str(tmp_path / "student.safetensors"), exit_loss="uniform",
                      distill_from=str(teacher_dir))
    train(cfg)
    first_eval = losses(tmp_path / "run", "eval", "val_loss")[0]
    assert first_eval == pytest.approx(losses(teacher_dir, "eval", "val_loss")[-1], rel=1e-5)
    assert len(losses(tmp_path / "run")) == 2
