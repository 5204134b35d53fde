"""Graders of chapter 11 (exercises/ch11_capstone.py): memory per GPU, stored block
applications, Parcae's loop counts, loop-aware training FLOPs, the plan of a run.
Oracles: byte counts by hand for one configuration, a brute-force sum and a Monte Carlo
estimate over Parcae's Poisson loop count, FLOPs counted block by block from the
parameter list, the plan's arithmetic redone in the test; and the published parameter
and token counts of nanoGPT's GPT-2 124M."""
import dataclasses
import math

import numpy as np
import pytest
import torch

from minilooped.grading.checks import assert_close, assert_equal, check
from minilooped.models import GPTConfig
from minilooped.torch.models import GPT as TorchGPT
from minilooped.training import ConfigError, load_config
from minilooped.training import plan as plan_module
from minilooped.training.mfu import PEAK_FLOPS, forward_flops_per_token

torch.set_num_threads(1)

SMALL = dict(block_size=64, vocab_size=80, n_embd=128, n_head=4, bias=True)
CONFIGS = {
    "gpt2 x4": GPTConfig(**SMALL, n_layer=4),
    "loop_residual 2x6": GPTConfig(**SMALL, variant="loop_residual", n_layer=2, n_loops=6),
    "loop_residual 1x2": GPTConfig(**SMALL, variant="loop_residual", n_layer=1, n_loops=2),
    "contractive 1x4": GPTConfig(**SMALL, variant="contractive", n_layer=1, n_loops=4),
    "parcae 1+1x4+1": GPTConfig(**SMALL, variant="parcae", n_layer=3, n_prelude=1, n_coda=1, n_loops=4,
                                backprop_loops=2),
    "parcae 1x6": GPTConfig(**SMALL, variant="parcae", n_layer=1, n_loops=6, backprop_loops=3),
}


def _named_numels(config):
    with torch.device("meta"):  # shapes only: no memory, no time
        model = TorchGPT(config)
    return [(n, p.numel()) for n, p in model.named_parameters()]


# ---------------------------------------------------------------- ex11_1 memory per GPU
@pytest.mark.ex11_1
def test_memory_weights_gradients_adamw(impl):
    config = CONFIGS["gpt2 x4"]
    for n in (1, 1000, 124_439_808):
        mem = impl(config, n, 16, "bfloat16")
        check(isinstance(mem, dict), f"return a dict, got {type(mem).__name__}")
        for key, per_param in (("weights", 4), ("gradients", 4), ("adamw", 8)):
            assert_equal(mem.get(key), per_param * n, f"{key} in bytes for N = {n:,} parameters",
                         hint="float32 master weights and gradients; AdamW keeps two float32 moments per weight")


@pytest.mark.ex11_1
def test_memory_activations_by_hand(impl):
    # gpt2-124m at micro-batch 16 in bfloat16, counted by hand: 12 applications x B T C x 34
    # bytes (Korthikanti eq. 2 without the scores) + the logits B T V x (2 + 4 + 4).
    config = GPTConfig.from_preset("gpt2-124m")
    B, T, C, H, V = 16, 1024, 768, 12, 50257
    mem = impl(config, 124_439_808, B, "bfloat16")
    assert_equal(mem["stored_applications"], 12, "stored applications of gpt2-124m")
    assert_close(mem["activations"], 12 * B * T * C * 34 + B * T * V * 10, "activations of gpt2-124m, B = 16, bf16",
                 hint="34 bytes per element of (B, T, C) per application at 16 bits (Korthikanti et al. eq. 2 "
                      "without its 5 H T / C term), and the logits: a bf16 copy, a float32 copy, a float32 "
                      "log-softmax")
    assert_close(mem["attention_scores_if_materialised"], 12 * B * T * C * 5 * H * T / C,
                 "the attention-score bytes left out (flash attention does not store them)")
    assert_close(mem["total"], mem["weights"] + mem["gradients"] + mem["adamw"] + mem["activations"], "total")
    f32 = impl(config, 124_439_808, B, "float32")
    assert_close(f32["activations"], 2 * 12 * B * T * C * 34 + B * T * V * 8, "activations in float32",
                 hint="32-bit activations take twice the bytes; in float32 the logits are one float32 copy "
                      "and the log-softmax")


@pytest.mark.ex11_1
def test_memory_scales_with_stored_applications_and_batch(impl):
    for name, config in CONFIGS.items():
        apps = plan_module.stored_applications(config)
        a = impl(config, 1000, 4, "bfloat16")
        b = impl(config, 1000, 8, "bfloat16")
        assert_equal(a["stored_applications"], apps, f"stored applications of {name}")
        assert_close(b["activations"], 2 * a["activations"], f"{name}: activations at B = 8 against B = 4",
                     hint="every activation tensor has the micro-batch as its first dimension")


# ------------------------------------------------------- ex11_2 stored applications
@pytest.mark.ex11_2
def test_stored_applications_unlooped_and_looped(impl):
    for name, expected in (("gpt2 x4", 4), ("loop_residual 2x6", 12), ("loop_residual 1x2", 2),
                           ("contractive 1x4", 4)):
        assert_equal(impl(CONFIGS[name]), expected, f"stored block applications of {name}",
                     hint="a block applied k times with gradient is stored k times")
    paper = {"gpt2-124m": 12, "loop-residual-81m": 36, "gpt2-45m-lite": 1, "loop-residual-45m": 2,
             "fully-looped-81m": 36}
    for preset, expected in paper.items():
        assert_equal(impl(GPTConfig.from_preset(preset)), expected, f"stored block applications of {preset}")


@pytest.mark.ex11_2
def test_stored_applications_parcae_no_grad_loops(impl):
    # prelude 1 + coda 1 applied once; the recurrent block: only the last backprop_loops loops
    assert_equal(impl(CONFIGS["parcae 1+1x4+1"]), 1 + 1 + 2, "parcae: prelude 1 + recurrent 1 x 4 loops "
                 "(last 2 with gradient) + coda 1", hint="loops run under no_grad store nothing")
    assert_equal(impl(GPTConfig.from_preset("parcae-82m")), 1 + 1 + 4 * 4, "parcae-82m: prelude 1 + 4 recurrent "
                 "x min(8, 4) + coda 1")
    few = dataclasses.replace(CONFIGS["parcae 1x6"], n_loops=2)  # fewer loops than backprop_loops = 3
    assert_equal(impl(few), 2, "parcae, 1 block, 2 loops, backprop_loops 3",
                 hint="with fewer loops than backprop_loops every loop has gradient")


# -------------------------------------------------------- ex11_3 Parcae's loop counts
def _brute_force(mean, b, t_max=400):
    p = [math.exp(-mean + t * math.log(mean) - math.lgamma(t + 1)) for t in range(t_max)]
    grad = math.fsum(pt * min(max(1, t), b) for t, pt in enumerate(p))
    total = math.fsum(pt * max(1, t) for t, pt in enumerate(p))
    return total - grad, grad


@pytest.mark.ex11_3
def test_parcae_counts_of_one_step(impl):
    for loops, b, expected in ((8, 4, (4, 4)), (3, 4, (0, 3)), (4, 4, (0, 4)), (1, 2, (0, 1))):
        got = impl(8.0, b, loops)
        assert_close(np.asarray(got, dtype=float), np.asarray(expected, dtype=float),
                     f"T = {loops} loops, backprop_loops {b}: (no-grad, grad)",
                     hint="the last min(T, backprop_loops) loops get gradients")


@pytest.mark.ex11_3
def test_parcae_expected_counts_exact(impl):
    for mean, b in ((8.0, 4), (4.0, 2), (2.0, 3), (0.5, 1), (6.0, 6), (30.0, 4)):
        got = np.asarray(impl(mean, b), dtype=float)
        assert_close(got, np.asarray(_brute_force(mean, b)), f"expected (no-grad, grad) loops, mean {mean}, "
                     f"backprop_loops {b}", rtol=1e-9, atol=1e-9,
                     hint="E[min(T, b)] and E[T] over T = max(1, Poisson(mean)): T = 0 counts as 1 loop")


@pytest.mark.ex11_3
def test_parcae_expected_counts_monte_carlo(impl):
    rng = np.random.default_rng(0)
    t = np.maximum(1, rng.poisson(8.0, size=400_000))
    grad = np.minimum(t, 4)
    got = np.asarray(impl(8.0, 4), dtype=float)
    assert_close(got, np.array([(t - grad).mean(), grad.mean()]), "expected loops against 400,000 sampled steps",
                 rtol=0, atol=0.02, hint="averaging min(T, b) is not min(mean, b)")


# ------------------------------------------------------- ex11_4 loop-aware FLOPs
def _block_by_block(config, named, grad_loops, no_grad_loops):
    """FLOPs counted the long way: every block's parameters times its uses, separately with
    and without gradient (6 and 2 per weight), attention per application."""
    H, Q, T = config.n_head, config.n_embd // config.n_head, config.block_size
    blocks, other = {}, 0
    for name, n in named:
        if name.startswith("transformer.wpe"):
            continue
        if name.startswith("transformer.h."):
            i = int(name.split(".")[2])
            blocks[i] = blocks.get(i, 0) + n
        elif name.startswith("transformer.trunk.injection."):
            blocks["inj"] = blocks.get("inj", 0) + n
        else:
            other += n
    flops = 6 * other
    looped = set(range(config.loop_start, config.loop_end)) if config.variant != "gpt2" else set()
    for i, n in blocks.items():
        if i == "inj" or i in looped:
            flops += (6 * n + 12 * H * Q * T * (i != "inj")) * grad_loops
            flops += (2 * n + 4 * H * Q * T * (i != "inj")) * no_grad_loops
        else:
            flops += 6 * n + 12 * H * Q * T
    return flops


@pytest.mark.ex11_4
def test_flops_gpt2_is_chapter_4s_count(impl):
    config = GPTConfig.from_preset("gpt2-124m")
    named = _named_numels(config)
    N = sum(n for name, n in named if not name.startswith("transformer.wpe"))
    assert_equal(N, 123_653_376, "gpt2-124m's parameters without the position embeddings (nanoGPT's count)")
    assert_close(impl(config, named), 6 * N + 12 * 12 * 12 * 64 * 1024, "training FLOPs per token of gpt2-124m",
                 hint="6 N + 12 L H Q T (chapter 4)")


@pytest.mark.ex11_4
def test_flops_looped_counts_every_application(impl):
    for name in ("loop_residual 2x6", "loop_residual 1x2", "contractive 1x4"):
        config = CONFIGS[name]
        named = _named_numels(config)
        assert_close(impl(config, named), _block_by_block(config, named, config.n_loops, 0),
                     f"training FLOPs per token of {name}", hint="a block applied n times costs n times its FLOPs")
        assert_close(impl(config, named, 3), _block_by_block(config, named, 3, 0), f"{name} run at 3 loops")
    for preset in ("loop-residual-45m", "loop-residual-81m"):
        config = GPTConfig.from_preset(preset)
        named = _named_numels(config)
        assert_close(impl(config, named), _block_by_block(config, named, config.n_loops, 0),
                     f"training FLOPs per token of {preset}",
                     hint="the looped blocks cost once per loop; the tied head and embedding only once")


@pytest.mark.ex11_4
def test_flops_parcae_no_grad_loops_cost_a_forward(impl):
    config = CONFIGS["parcae 1+1x4+1"]  # backprop_loops = 2
    named = _named_numels(config)
    for T in (1, 2, 3, 6):
        k = min(T, config.backprop_loops)
        assert_close(impl(config, named, T), _block_by_block(config, named, k, T - k),
                     f"parcae at T = {T} loops, the last {k} with gradient",
                     hint="a loop under no_grad costs its forward pass only: a third of a loop with gradient")
    per_seq = impl(config, named, [1, 3, 6])
    assert_close(per_seq, np.mean([impl(config, named, t) for t in (1, 3, 6)]), "parcae with loops per sequence "
                 "[1, 3, 6]", hint="each sequence's own count: the mean of the three")
    from minilooped.training.mfu import parcae_loop_counts
    no_grad, grad = parcae_loop_counts(config.n_loops, config.backprop_loops)
    assert_close(impl(config, named), _block_by_block(config, named, grad, no_grad),
                 "parcae at its expected loop counts (n_loops None)", hint="FLOPs are linear in the counts: use "
                 "the expected (no-grad, grad) loops, not the mean T")


# ------------------------------------------------------------------ ex11_5 the plan
def _setup(name, **changes):
    cfg = dataclasses.replace(load_config(name), **changes)
    mc = cfg.model_config()
    named = _named_numels(mc)
    from minilooped.training.mfu import flops_per_token
    return cfg, mc, named, flops_per_token(mc, named)


@pytest.mark.ex11_5
def test_plan_tokens_and_steps(impl):
    cfg, mc, named, F = _setup("owt-gpt2-124m")
    p = impl(cfg, mc, named, F)
    check(isinstance(p, plan_module.Plan), f"return a minilooped.training.plan.Plan, got {type(p).__name__}")
    B, T, A = cfg.batch_size, mc.block_size, cfg.grad_accum
    assert_equal(p.tokens_per_step, B * T * A, "tokens per step", hint="micro-batch x context x micro-batches")
    assert_equal(p.steps, cfg.max_iters, "steps")
    assert_equal(p.total_tokens, B * T * A * cfg.max_iters, "total tokens")
    assert_equal(p.params, sum(n for _, n in named), "params (every parameter once)")
    cfg8, *_ = _setup("owt-gpt2-124m", n_gpus=8)
    assert_equal(impl(cfg8, mc, named, F).micro_batches_per_gpu, A // 8, "micro-batches per GPU on 8 GPUs",
                 hint="grad_accum counts micro-batches over all GPUs")


@pytest.mark.ex11_5
def test_plan_time_and_cost(impl):
    for name, changes in (("owt-loop-residual-81m-1gpu-1h", {}), ("owt-gpt2-124m-8gpu-4h", {}),
                          ("owt-gpt2-124m", dict(gpu="a100-40gb", n_gpus=4, plan_mfu=0.3, gpu_price=1.0))):
        cfg, mc, named, F = _setup(name, **changes)
        p = impl(cfg, mc, named, F)
        peak = PEAK_FLOPS[plan_module.GPUS[cfg.gpu].peak_key][plan_module.plan_precision(cfg)]
        assert_close(p.peak_flops, peak, f"{name}: peak FLOP/s")
        tokens = cfg.batch_size * mc.block_size * cfg.grad_accum
        step = tokens * F / (cfg.n_gpus * peak * cfg.plan_mfu)
        assert_close(p.step_s, step, f"{name}: step time (s) on {cfg.n_gpus} x {cfg.gpu} at MFU {cfg.plan_mfu}",
                     hint="the step's FLOPs over the FLOP/s that all GPUs achieve at the assumed MFU")
        assert_close(p.tokens_per_s, tokens / step, f"{name}: tokens/s, all GPUs")
        assert_close(p.train_hours, step * cfg.max_iters / 3600, f"{name}: training hours")
        evals = (cfg.max_iters // cfg.eval_interval + 1) * 2 * cfg.eval_iters * cfg.batch_size * mc.block_size
        eval_h = evals * forward_flops_per_token(mc, named) / (peak * cfg.plan_mfu) / 3600
        assert_close(p.eval_hours, eval_h, f"{name}: evaluation hours",
                     hint="evaluations at step 0 and every eval_interval steps, both splits, forward only, one GPU")
        price = cfg.gpu_price or plan_module.GPUS[cfg.gpu].price
        assert_close(p.cost, (step * cfg.max_iters / 3600 + eval_h) * cfg.n_gpus * price, f"{name}: cost ($)",
                     hint="every GPU is paid for the whole wall time, evaluations included")
        assert_close(p.memory["total"], plan_module.memory_per_gpu(mc, p.params, cfg.batch_size, cfg.dtype)["total"],
                     f"{name}: memory per GPU")


@pytest.mark.ex11_5
def test_plan_refuses_uneven_split(impl):
    cfg, mc, named, F = _setup("owt-gpt2-124m", n_gpus=3)  # grad_accum 32 over 3 GPUs
    with pytest.raises(ConfigError):
        impl(cfg, mc, named, F)
