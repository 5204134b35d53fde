"""The plan (minilooped/training/plan.py): tokens, memory, time and cost, and the budget presets.

Numbers are checked against hand arithmetic on the model's shapes; the budget presets are
checked against the budget their name states (1gpu-1h, 1gpu-night, 8gpu-4h)."""
import math

import pytest

from minilooped.training import ConfigError, apply_overrides, available_configs, load_config
from minilooped.training.mfu import PEAK_FLOPS, device_peak_flops, flops_per_token
from minilooped.training.plan import GPUS, format_plan, loss_heads, make_plan, stored_applications

torch = pytest.importorskip("torch")
from minilooped.torch.models import GPT  # noqa: E402

BUDGET_HOURS = {"1gpu-1h": 1.0, "1gpu-night": 10.0, "8gpu-4h": 4.0}
BUDGET_GPUS = {"1gpu-1h": 1, "1gpu-night": 1, "8gpu-4h": 8}
BUDGET_PRESETS = [n for n in available_configs() if n.startswith("owt-") and n.endswith(tuple(BUDGET_HOURS))]


def plan_of(cfg):
    mc = cfg.model_config(vocab_size=50257)  # GPT-2's tokenizer, as the prepared OpenWebText says
    with torch.device("meta"):  # shapes only, no memory
        model = GPT(mc)
    named = [(n, p.numel()) for n, p in model.named_parameters()]
    return make_plan(cfg, mc, named, flops_per_token(mc, named)), mc, named


def test_gpt2_124m_on_h100_by_hand():
    cfg = load_config("owt-gpt2-124m")
    plan, mc, named = plan_of(cfg)
    n = sum(k for _, k in named)
    assert plan.params == n and abs(n / 1e6 - 124.44) < 0.01  # 123.65M without wpe, + 1024 x 768
    assert plan.tokens_per_step == 12 * 1024 * 40 and plan.total_tokens == 491_520 * 600_000
    F = 6 * (n - 1024 * 768) + 12 * 12 * 12 * 64 * 1024
    assert plan.flops_per_token == F
    assert math.isclose(plan.step_s, 491_520 * F / (989e12 * 0.4))
    assert math.isclose(plan.train_hours, plan.step_s * 600_000 / 3600)
    # evaluation: 601 estimates of 2 x 200 micro-batches of 12 x 1024 tokens, forward only (F / 3)
    assert math.isclose(plan.eval_hours * 3600, 601 * 400 * 12 * 1024 * (F / 3) / (989e12 * 0.4))
    assert math.isclose(plan.cost, plan.wall_hours * 3.00)
    m = plan.memory
    assert m["weights"] == m["gradients"] == 4 * n and m["adamw"] == 8 * n
    B, T, C, V = 12, 1024, 768, 50257
    assert m["activations"] == 12 * B * T * C * 34 + B * T * V * 10  # Korthikanti's 34 sbh, bf16
    assert m["attention_scores_if_materialised"] == 12 * 5 * 12 * B * T * T
    assert plan.fits


def test_float32_doubles_the_activations_and_more_gpus_divide_the_time():
    cfg = load_config("owt-gpt2-124m")
    base, _, _ = plan_of(cfg)
    f32, _, _ = plan_of(apply_overrides(cfg, {"dtype": "float32"}))
    B, T, V = 12, 1024, 50257
    assert f32.memory["activations"] - B * T * V * 8 == 2 * (base.memory["activations"] - B * T * V * 10)
    assert f32.peak_flops == PEAK_FLOPS["H100 SXM"]["tf32"]
    eight, _, _ = plan_of(apply_overrides(cfg, {"n_gpus": "8"}))
    assert math.isclose(eight.train_hours * 8, base.train_hours)
    assert eight.micro_batches_per_gpu == 5 and eight.memory == base.memory  # DDP: a whole copy per GPU
    assert math.isclose(eight.cost - eight.eval_hours * 8 * 3.0, base.cost - base.eval_hours * 3.0)


def test_looped_models_store_what_gets_gradients():
    lr81 = load_config("owt-loop-residual-81m").model_config()
    assert stored_applications(lr81) == 36
    parcae = load_config("owt-parcae-82m").model_config()
    assert stored_applications(parcae) == 1 + 1 + 4 * 4  # loops before the last backprop_loops: no_grad
    fl = load_config("owt-fully-looped-81m").model_config()
    assert loss_heads(fl) == 1 and loss_heads(fl.replace(loss_loops="all")) == 6
    assert loss_heads(fl.replace(loss_loops="last_third")) == 2


def test_every_gpu_has_a_bf16_peak_and_its_name_is_recognised():
    for name, gpu in GPUS.items():
        assert PEAK_FLOPS[gpu.peak_key]["bf16"] > 0 and gpu.memory_gb > 0 and gpu.price > 0, name
    assert device_peak_flops("NVIDIA H200", "bf16") == 989e12
    assert device_peak_flops("NVIDIA GeForce RTX 4090", "bf16") == 165.2e12


def test_too_large_a_micro_batch_is_flagged():
    cfg = apply_overrides(load_config("owt-gpt2-124m"), {"gpu": "l4", "batch_size": "64", "grad_accum": "8"})
    plan, mc, _ = plan_of(cfg)
    assert not plan.fits
    assert "does NOT fit" in format_plan(plan, cfg, mc)


@pytest.mark.parametrize("override,message", [
    ({"gpu": "h1000"}, r"gpu='h1000' is not one of .*did you mean 'h100'"),
    ({"plan_mfu": "1.5"}, r"plan_mfu=1.5 in \(0, 1\]"),
    ({"n_gpus": "0"}, r"n_gpus=0 must be >= 1"),
])
def test_bad_plan_settings_are_refused(override, message):
    with pytest.raises(ConfigError, match=message):
        apply_overrides(load_config("owt-gpt2-124m"), override)


def test_grad_accum_must_split_over_the_gpus():
    with pytest.raises(ConfigError, match=r"grad_accum=40 must be a multiple of n_gpus=3"):
        plan_of(apply_overrides(load_config("owt-gpt2-124m"), {"n_gpus": "3"}))


def test_budget_presets_exist():
    assert len(BUDGET_PRESETS) >= 6
    for budget in BUDGET_HOURS:
        assert f"owt-gpt2-124m-{budget}" in BUDGET_PRESETS


@pytest.mark.parametrize("name", BUDGET_PRESETS)
def test_budget_preset_fits_its_budget(name):
    """Planned on its own GPU at the default MFU, every budget preset ends within its budget
    (and uses most of it), fits the GPU's memory, and says what loss to expect and why."""
    cfg = load_config(name)
    budget = next(b for b in BUDGET_HOURS if name.endswith(b))
    plan, _, _ = plan_of(cfg)
    assert cfg.n_gpus == BUDGET_GPUS[budget]
    assert 0.8 * BUDGET_HOURS[budget] <= plan.wall_hours <= BUDGET_HOURS[budget], plan.wall_hours
    assert plan.fits
    assert "EXPECTED val loss" in cfg.description and "not a result" in cfg.description
    assert "Basis:" in cfg.description and cfg.lr_decay_iters == cfg.max_iters
