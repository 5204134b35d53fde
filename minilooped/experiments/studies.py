"""The studies of part II, one per chapter (5-10), the capstone's CPU replica (11) and part I's
leaderboard (4): what each trains and measures.

All train character-level Shakespeare models of the course's CPU size (128 wide, 4 heads,
context 64, 16 sequences per step) from the shipped ``shakespeare-*`` configs, so a study
changes only what its chapter is about. Every run is measured with DEFAULT_MEASUREMENTS
(final losses, loss and gradient-norm curves, time, size, FLOPs) plus the study's own.

Budget: each full study is sized for about 2 hours or less on 2 CPU cores with the NumPy
core (``--backend=torch`` takes about half); ``python -m minilooped.experiments --list``
prints each study's estimate, computed from the ms per step measured for these shapes on 2
cores (the table in cost.py's docstring), so it follows the studies as they change.

Besides the default measurements, the studies take the loop diagnostics of the trained
models (``loop_diagnostics``: per-loop hidden-state norms, logit lens, gradient norms,
Jacobian spectral norm, rho(A_bar); minilooped.models.diagnostics), the depth curve
(``val_loss_by_loops``) and, for chapter 10, its saturating fit (``depth_fit``).
"""
from __future__ import annotations

from dataclasses import replace

from .part1 import count_baseline, mlp_language_model
from .study import Run, Study, grid


def _loops(*ks):
    return ("val_loss_by_loops", {"loops": list(ks)})


# ---------------------------------------------------------------------- chapter 4
# Part I's models at one budget: every trained model predicts 307,200 training characters, the
# budget of chapter 4's own run (300 steps of 16 x 64, warmup 20, which the transformers repeat;
# chapter 2's MLP: 1200 steps of 256 windows, its recipe with the warmup at the same 5% of the
# steps), scored on the whole val split (part1.py says how). Sized for a shared 2-core machine:
# about 4 min of one core with --backend=torch (the MLP trains with the NumPy core in any case).
_PART1 = dict(max_iters=300, warmup_iters=20, eval_interval=50, eval_iters=8)
PART1_LEADERBOARD = Study(
    "part1_leaderboard", chapter="4 GPT-2",
    measures=(
        "Part I's models on one scale, the cross-entropy on the whole val split of character-level "
        "Shakespeare: the uniform, unigram and bigram models (exact, add-one smoothing), chapter 2's "
        "MLP (8 characters of context), GPT-2 (shakespeare-gpt2, 4 blocks) and the course's looped "
        "default (shakespeare-loop-residual, 1 block x 4 loops), the trained ones at a matched "
        "budget of 307,200 predicted training characters (chapter 4's 300 steps), 3 seeds; and the "
        "transformers' val loss by position in the context."),
    runs=(
        Run("uniform", evaluate=count_baseline("uniform"), seeds=(0,)),
        Run("unigram", evaluate=count_baseline("unigram"), seeds=(0,)),
        Run("bigram", evaluate=count_baseline("bigram"), seeds=(0,)),
        Run("mlp", evaluate=mlp_language_model({"max_iters": 1200, "warmup_iters": 60})),
        Run("gpt2", "shakespeare-gpt2", _PART1),
        Run("loop_residual", "shakespeare-loop-residual", _PART1),
    ),
    measurements=("val_loss_split", "val_loss_by_position"),
    reduced_measurements={"val_loss_split": {"max_chars": 2048}, "val_loss_by_position": {"max_chars": 2048}},
)

# ---------------------------------------------------------------------- chapter 5
_LOOP_RESIDUAL = {
    "lite": {"config": "shakespeare-gpt2-lite"},  # 1 block, applied once
    "loop_1x2": {"n_layer": 1, "n_loops": 2},  # the same parameters, applied twice
    "gpt2_2": {"config": "shakespeare-gpt2", "n_layer": 2},  # the FLOPs of loop_1x2, 2x the blocks
    "loop_1x4": {"n_layer": 1, "n_loops": 4},  # the course's default model
    "loop_2x2": {"n_layer": 2, "n_loops": 2},  # k = 2 blocks looped n = 2 times
    "gpt2_4": {"config": "shakespeare-gpt2"},  # 2k = 4 unique blocks: the FLOPs of the two above
}
LOOP_RESIDUAL = Study(
    "loop_residual", chapter="5 Loop-Residual",
    measures=(
        "Loop-Residual (arXiv 2409.14199) at CPU scale: one block against the same block looped "
        "twice at equal parameters (lite vs loop_1x2); 2k unique blocks against k blocks looped n "
        "times (gpt2_4 vs loop_2x2 vs loop_1x4, and gpt2_2 vs loop_1x2), which are also the "
        "comparisons at equal FLOPs per token; and each looped model's val loss when run for "
        "1 to 8 loops at inference (the per-loop view of a trained model). 3 seeds at the shipped "
        "rate 4e-3, 800 steps; every model also at 2e-3 and 8e-3 (one seed)."),
    # 3 seeds at the shipped rate (4e-3); the sweep (half and twice it, one seed) compares each
    # model at its own best rate as well as at the shared one
    runs=(grid(_LOOP_RESIDUAL, max_iters=800)
          + grid(_LOOP_RESIDUAL, lrs=(2e-3, 8e-3), lr_seeds=(0,), max_iters=800)),
    measurements=(_loops(1, 2, 3, 4, 6, 8), ("loop_diagnostics", {"jacobian": False})),
)

# ---------------------------------------------------------------------- chapter 6
_STABILITY = {f"loops{n}": {"n_layer": 1, "n_loops": n} for n in (2, 4, 8, 12)}
LOOP_STABILITY = Study(
    "loop_stability", chapter="6 Why loops break",
    measures=(
        "Plain looping (loop_residual, 1 block) from 2 to 12 loops, each at three learning rates "
        "(1e-3, 3e-3, 1e-2; the shipped 4e-3 lies between; 3 seeds at 3e-3, one at the others), "
        "400 steps: final loss, the gradient norm of every "
        "step (oscillation and spikes; train_curve), which runs diverge, each depth at its own best "
        "rate and across the sweep, and val loss at test-time depths up to 32 loops, beyond the "
        "trained one. Gradient clipping stays at the course's 1.0: the norm is logged before it."),
    # eval_loops: the depth curve at every evaluation (loss_curve's val_loss_loops), to see it form
    # three seeds at the middle rate, one at the sweep's ends (which runs diverge needs no spread)
    runs=(grid(_STABILITY, lrs=(3e-3,), lr_seeds=(0, 1, 2), max_iters=400, eval_loops="1,2,4,8,12,16")
          + grid(_STABILITY, lrs=(1e-3, 1e-2), lr_seeds=(0,), max_iters=400, eval_loops="1,2,4,8,12,16")),
    measurements=(_loops(1, 2, 4, 8, 12, 16, 24, 32), "loop_diagnostics"),
)

# ---------------------------------------------------------------------- chapter 7
# 2 blocks (so that injecting at the first block only, LT_ia, differs from every block, FLT),
# 64 wide so that 12 loops of 2 blocks fit the budget.
# Cost warning (measured 2026-12-06, NumPy core, at initialisation): with attention injection
# the gradient reaching the early loops is ~1e-36 at K = 12, below float32's smallest normal
# number, and matrix products on such subnormal numbers are ~1000x slower on x86 CPUs: an FLT
# step takes ~1.3x the default model's at K = 6 but ~6x at K = 9 and ~15-18x at K = 12 (the
# forward pass stays linear in K). The torch backend flushes subnormals to zero while it trains
# (training/engine_torch.py: flushed_subnormals): measured 40 FLT K = 12 steps, 64 wide,
# 1 thread, 39 s without and 13 s with, identical losses. So this study is run with --backend=torch; with the NumPy core
# the estimate below is low for FLT_K9 and FLT_K12.
_FL = dict(config="shakespeare-fully-looped", n_layer=2, n_embd=64, n_head=4)
_FL_VARIANTS = {
    "LT": {"injection": "none"},  # plain re-feed x <- h^{k-1}
    "LT_i": {"injection": "additive"},  # x = n(E + h^{k-1})
    "LT_ia": {"injection": "attention_first"},  # query injection at layer 0 only
    "FLT_res": {"injection": "residual"},  # the restart without query injection (models/fully_looped.py)
    "FLT": {"injection": "attention"},  # the paper: restart + query injection at every layer
}
FULLY_LOOPED = Study(
    "fully_looped", chapter="7 Fully Looped Transformer",
    measures=(
        "The Fully Looped Transformer (arXiv 2605.18797) against its baselines LT, LT_i, LT_ia and "
        "FLT_res, each at 6, 9 and 12 loops of 2 blocks (64 wide), 2 seeds at the shipped rate, 300 "
        "steps: final loss, gradient-norm curves, val loss at other loop counts; plus a learning-rate "
        "sweep (2e-3 and 8e-3 besides 4e-3) of LT and FLT at 12 loops, one seed."),
    # 2 seeds (the third did not fit one session's 2 cores); the sweep at 12 loops for the plain
    # re-feed and the paper's model only
    runs=(
        tuple(replace(r, seeds=(0, 1)) for r in grid(
            {f"{v}_K{k}": {**_FL, **inj, "n_loops": k} for v, inj in _FL_VARIANTS.items() for k in (6, 9, 12)},
            max_iters=300))
        + grid({f"{v}_K12": {**_FL, **_FL_VARIANTS[v], "n_loops": 12} for v in ("LT", "FLT")},
               lrs=(2e-3, 8e-3), lr_seeds=(0,), max_iters=300)),
    measurements=(_loops(2, 4, 6, 9, 12, 16, 24), "loop_diagnostics"),
    reduced_runs=tuple(f"{v}_K{k}" for v in _FL_VARIANTS for k in (6, 9, 12)),  # the sweep only changes lr
)

# ---------------------------------------------------------------------- chapter 8
CONTRACTIVE = Study(
    "contractive", chapter="8 Contractive depth",
    measures=(
        "SCORE (arXiv 2603.10544): 1 block, 4 loops, the Euler step dt in {1/4, 1/2, 1} for both "
        "readings of F (the whole block, or its residual branch); Parcae (arXiv 2604.12946) at the "
        "shipped budget (prelude 1 + recurrent 1 + coda 1, 4 loops on average) with diagonal, additive "
        "and linear injections and with loop counts sampled per sequence or per batch: loss, "
        "rho(A_bar) after training, gradient-norm curves, and val loss from 1 to 32 loops; 500 steps."),
    runs=(
        grid({f"score_{f}_dt{dt:g}": {"config": "shakespeare-contractive", "dt": dt, "score_f": f}
              for f in ("block", "branch") for dt in (0.25, 0.5, 1.0)}, max_iters=500)
        + grid({
            "parcae_diagonal": {},  # the shipped model: diagonal injection, a loop count per sequence
            "parcae_add": {"parcae_injection": "add"},  # h + e: A_bar = I, rho = 1
            "parcae_linear": {"parcae_injection": "linear"},  # a learned adapter on [h; e]: rho unconstrained
            "parcae_per_batch": {"loop_sampling": "batch"},  # one loop count per batch
        }, config="shakespeare-parcae", max_iters=500)),
    measurements=(_loops(1, 2, 4, 8, 16, 32), "parcae_rho", "loop_diagnostics"),
)

# ---------------------------------------------------------------------- chapter 9


def converted_from(source: str, teacher: bool = False):
    """A ``prepare`` hook: run ``source`` (a gpt2 model, same seed) converted by
    minilooped.models.from_gpt2 as this run's model_args say (n_layer unique blocks, sharing,
    init, lora_rank) becomes this run's starting weights (init_from); with ``teacher`` the
    source is also the model it distils from (distill_from)."""
    def prepare(job):
        path = job.run_dir / "converted.safetensors"
        if not path.is_file():
            from ..io import save_safetensors
            from ..models import GPT, GPTConfig, from_gpt2
            from ..training import load_checkpoint

            ckpt = load_checkpoint(job.run_dir_of(source))
            model = GPT(GPTConfig.from_dict(ckpt.state["model_config"]))
            model.load_state_dict(ckpt.weights)
            a = job.cfg.model_args
            recursive = from_gpt2(model, a["n_layer"], sharing=a.get("sharing", "cycle"),
                                  init=a.get("init", "stepwise"), lora_rank=a.get("lora_rank", 0))
            save_safetensors(recursive, path)
        return {"init_from": str(path), **({"distill_from": str(job.run_dir_of(source))} if teacher else {})}
    return prepare


def _recursive_runs(source: str, uptrain: dict) -> tuple[Run, ...]:
    runs = []
    for K, inits in ((2, ("stepwise", "average", "lower")), (1, ("stepwise", "average"))):
        for init in inits:  # with K = 1, "lower" is "stepwise" (layer 0)
            for rank in (0, 8, 32):
                over = {"variant": "recursive", "n_layer": K, "n_loops": 4 // K, "init": init, "lora_rank": rank,
                        **uptrain}
                runs.append(Run(f"K{K}_{init}_r{rank}", "shakespeare-gpt2", over, prepare=converted_from(source),
                                needs=(source,)))
    return tuple(runs)


def _distilled_runs(source: str, uptrain: dict) -> tuple[Run, ...]:
    """With and without distillation: K2_stepwise_r8 again with the source as teacher; and the
    strictly shared K = 1 model (the one depth-wise batching can serve) trained for early
    exits, a loss at every loop's readout, the later ones weighing more, plus the teacher."""
    base = {"variant": "recursive", "init": "stepwise", **uptrain}
    return (
        Run("K2_stepwise_r8_kd", "shakespeare-gpt2", {**base, "n_layer": 2, "n_loops": 2, "lora_rank": 8},
            prepare=converted_from(source, teacher=True), needs=(source,)),
        Run("K1_stepwise_r0_exit_kd", "shakespeare-gpt2", {**base, "n_layer": 1, "n_loops": 4, "lora_rank": 0,
                                                            "exit_loss": "aggressive"},
            prepare=converted_from(source, teacher=True), needs=(source,)),
    )


_UPTRAIN = dict(max_iters=250, learning_rate=1e-3, min_lr=1e-4, warmup_iters=20)
RECURSIVE = Study(
    "recursive", chapter="9 Relaxed Recursive Transformers",
    measures=(
        "Relaxed Recursive Transformers (arXiv 2410.20672): the course's 4-block GPT (1200 steps) "
        "converted into K = 2 shared blocks looped twice (init stepwise, average, lower) and K = 1 "
        "block looped 4 times (stepwise, average), strictly shared (LoRA rank 0) or relaxed (rank 8, "
        "32), then uptrained 250 steps at lr 1e-3: parameters against loss, the loss right after "
        "conversion (the first point of loss_curve) and after uptraining, val loss at each early "
        "exit, against the source and a recursive model of the same shape trained from scratch; "
        "and two uptrainings distilled from the source (alpha 0.5, tau 1): K2_stepwise_r8 again, and "
        "K1_stepwise_r0 with early-exit losses at every loop (weights growing with the loop)."),
    runs=(
        Run("gpt2_source", "shakespeare-gpt2", {"max_iters": 1200}),
        *_recursive_runs("gpt2_source", _UPTRAIN),
        Run("K2_scratch", "shakespeare-gpt2", {"variant": "recursive", "n_layer": 2, "n_loops": 2,
                                               "max_iters": 1200}),
        # added after the runs above had been made (2026-12-06), run from the same source checkpoints
        *_distilled_runs("gpt2_source", _UPTRAIN),
    ),
    measurements=(_loops(1, 2, 3, 4),),
    reduced_overrides={"warmup_iters": 2, "learning_rate": 1e-3, "min_lr": 1e-4},
)

# ---------------------------------------------------------------------- chapter 10
TEST_TIME = Study(
    "test_time", chapter="10 Test-time compute",
    measures=(
        "Loss against loops at inference, 1 to 32, for every looped variant trained at 4 loops "
        "(Loop-Residual, Fully Looped with 1 block, SCORE, Parcae): the depth curves that the "
        "saturating fit L(T) = L_inf + A exp(-T/tau) summarises; and the looped model against "
        "larger unlooped ones at equal FLOPs (gpt2_4: 4 blocks, the FLOPs of 4 loops; gpt2_8: the "
        "FLOPs of the looped model run at 8 loops)."),
    runs=grid({
        "loop_residual": {"n_layer": 1, "n_loops": 4},
        "fully_looped": {"config": "shakespeare-fully-looped", "n_layer": 1, "n_loops": 4},
        "contractive": {"config": "shakespeare-contractive"},
        "parcae": {"config": "shakespeare-parcae"},
        "gpt2_4": {"config": "shakespeare-gpt2"},
        "gpt2_8": {"config": "shakespeare-gpt2", "n_layer": 8},
    }, max_iters=600),
    measurements=(("depth_fit", {"loops": [1, 2, 3, 4, 6, 8, 12, 16, 24, 32]}),),
)

# ---------------------------------------------------------------------- chapter 11
# The capstone's CPU replica: the Loop-Residual paper's four models scaled down (PRESETS
# cpu-*: block counts / 3, loop counts kept), trained by the shipped capstone-cpu-* configs,
# which `python -m minilooped.train` runs like the OWT presets. depth_fit on every run: the
# unlooped models give one depth (the fit says why it is absent), the looped ones their curve.
# Cost: estimated ~27 min with the NumPy core, ~14 with --backend=torch; the committed run
# (--backend=torch, 2026-12-06, 2 cores shared with other jobs) took 33 min.
CAPSTONE_CPU = Study(
    "capstone_cpu", chapter="11 Capstone",
    measures=(
        "The CPU replica of the capstone: the Loop-Residual paper's (arXiv 2409.14199) four models "
        "at the course's CPU size on Shakespeare characters, 3 seeds, 1500 steps each: GPT-2 124M "
        "(4 blocks) against Loop-Residual 81M (2 blocks x 6 loops), GPT-2 45M Lite (1 block) against "
        "Loop-Residual 45M (1 block x 2 loops); final losses, and each looped model's val loss at "
        "1 to 12 loops with the saturating fit L(T) = L_inf + A exp(-T/tau)."),
    runs=grid({
        "gpt2_124m": {"config": "capstone-cpu-gpt2-124m"},
        "loop_residual_81m": {"config": "capstone-cpu-loop-residual-81m"},
        "gpt2_45m_lite": {"config": "capstone-cpu-gpt2-45m-lite"},
        "loop_residual_45m": {"config": "capstone-cpu-loop-residual-45m"},
    }, max_iters=1500),
    measurements=(("depth_fit", {"loops": [1, 2, 3, 4, 6, 8, 12]}),),
    reduced_measurements={"depth_fit": {"loops": [1, 2]}},
)

STUDIES: dict[str, Study] = {s.name: s for s in (PART1_LEADERBOARD, LOOP_RESIDUAL, LOOP_STABILITY, FULLY_LOOPED, CONTRACTIVE,
                                                  RECURSIVE, TEST_TIME, CAPSTONE_CPU)}


def get_study(name: str) -> Study:
    """The study ``name``; a clear error with close matches otherwise."""
    if name not in STUDIES:
        import difflib

        close = difflib.get_close_matches(name, list(STUDIES), n=3, cutoff=0.5)
        hint = f" (did you mean {' or '.join(map(repr, close))}?)" if close else ""
        raise KeyError(f"no study named {name!r}{hint}. Studies: {', '.join(STUDIES)} "
                       "(python -m minilooped.experiments --list)")
    return STUDIES[name]


__all__ = ["STUDIES", "get_study", "converted_from", "PART1_LEADERBOARD", "LOOP_RESIDUAL", "LOOP_STABILITY", "FULLY_LOOPED",
           "CONTRACTIVE", "RECURSIVE", "TEST_TIME", "CAPSTONE_CPU"]
