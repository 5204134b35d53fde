"""Every graded exercise of the course, in one list.

An exercise is a function (or a small class) of ``exercises/chNN_*.py`` that the student
writes. Its reference solution is the library's own function of exactly the same
signature, so the graders can run either: the student's stub (the default) or the
reference, which CI uses to prove every grader passes on a correct solution. The two are
named by strings and imported only when a grader asks for them: the library never
imports ``exercises/``.

    python -m minilooped.grade 1          grade chapter 1 (see minilooped/grade.py)
    pytest tests/graders -m ex1_2         run one exercise's grader

A new chapter's exercises: (1) its line in CHAPTERS and its Exercise entries below;
(2) exercises/chNN_name.py, a stub per exercise with the reference's exact signature, a
docstring "Exercise N.M -- ..." stating the task, and a body raising NotImplementedError
(a class stub subclasses the library's class and overrides the methods to write);
(3) tests/graders/test_chNN.py, tests marked @pytest.mark.exN_M that take the ``impl``
fixture. tests/test_exercises_both_ways.py then checks that every grader passes on the
reference and fails on the stub, and that the signatures agree.
"""
from __future__ import annotations

import importlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path

TARGETS = ("student", "reference")
TARGET_ENV = "MINILOOPED_GRADE_TARGET"

# Chapter number -> (title, stub module). A chapter without exercises yet is absent.
CHAPTERS: dict[int, tuple[str, str]] = {
    1: ("Autograd from scratch", "exercises.ch01_autograd"),
    2: ("Building blocks and training", "exercises.ch02_building_blocks"),
    3: ("Tokens and data", "exercises.ch03_tokens"),
    4: ("GPT-2", "exercises.ch04_gpt2"),
    5: ("Loop-Residual networks", "exercises.ch05_loop_residual"),
    6: ("Why loops break", "exercises.ch06_why_loops_break"),
    7: ("The Fully Looped Transformer", "exercises.ch07_fully_looped"),
    8: ("Contractive depth", "exercises.ch08_contractive"),
    9: ("Relaxed Recursive Transformers", "exercises.ch09_relaxed_recursive"),
    10: ("Test-time compute", "exercises.ch10_test_time"),
    11: ("From one GPU to many", "exercises.ch11_capstone"),
}


@dataclass(frozen=True)
class Exercise:
    """One exercise: ``id`` is also its pytest marker (``pytest -m ex1_2``)."""

    id: str          # "ex{chapter}_{n}"
    title: str
    points: int
    name: str        # the stub's name in the chapter's module, e.g. "unbroadcast"
    reference: str   # "package.module:name" of the library's solution
    method: str = ""  # for a class: the method(s) to write, e.g. "forward"

    @property
    def chapter(self) -> int:
        return int(self.id[2:].split("_")[0])

    @property
    def stub(self) -> str:
        return f"{CHAPTERS[self.chapter][1]}:{self.name}"

    @property
    def stub_file(self) -> str:
        """Where the student writes it, relative to the repository root."""
        return CHAPTERS[self.chapter][1].replace(".", "/") + ".py"

    @property
    def where(self) -> str:
        """"exercises/ch04_gpt2.py::Block.forward": what to fill in."""
        return f"{self.stub_file}::{self.name}" + (f".{self.method}" if self.method else "")


EXERCISES: list[Exercise] = [
    # Chapter 1: autograd from scratch
    Exercise("ex1_1", "tanh's backward from its output", 1,
             "tanh_backward", "minilooped.ops.elementwise:tanh_backward"),
    Exercise("ex1_2", "Unbroadcasting a gradient", 2,
             "unbroadcast", "minilooped.ops._util:unbroadcast"),
    Exercise("ex1_3", "Backward of a batched matmul", 2,
             "matmul_backward", "minilooped.ops.linalg:matmul_backward"),
    Exercise("ex1_4", "Topological order of a deep graph", 3,
             "topological_order", "minilooped.tensor:topological_order"),
    Exercise("ex1_5", "Softmax backward without the Jacobian", 2,
             "softmax_backward", "minilooped.ops.fused:softmax_backward"),
    # Chapter 2: building blocks and training
    Exercise("ex2_1", "Embedding backward: scatter-add", 1,
             "embedding_backward", "minilooped.ops.fused:embedding_backward"),
    Exercise("ex2_2", "RMSNorm's backward, derived", 3,
             "rms_norm_backward", "minilooped.ops.fused:rms_norm_backward"),
    Exercise("ex2_3", "A log-softmax that cannot overflow", 2,
             "log_softmax", "minilooped.ops.fused:log_softmax"),
    Exercise("ex2_4", "AdamW's update", 3,
             "AdamW", "minilooped.optim.adamw:AdamW", "step"),
    Exercise("ex2_5", "Warmup + cosine learning-rate schedule", 1,
             "warmup_cosine", "minilooped.optim.lr_schedule:warmup_cosine"),
    Exercise("ex2_6", "GELU's derivative", 2,
             "gelu_backward", "minilooped.ops.elementwise:gelu_backward"),
    # Chapter 3: tokens and data
    Exercise("ex3_1", "BPE: count adjacent pairs", 1,
             "get_stats", "minilooped.data.tokenizers.bpe:get_stats"),
    Exercise("ex3_2", "BPE: one merge step", 2,
             "merge", "minilooped.data.tokenizers.bpe:merge"),
    Exercise("ex3_3", "BPE: encode by replaying the merges", 2,
             "BPETokenizer", "minilooped.data.tokenizers.bpe:BPETokenizer", "_encode_chunk"),
    Exercise("ex3_4", "A character tokenizer", 1,
             "CharTokenizer", "minilooped.data.tokenizers.char:CharTokenizer"),
    Exercise("ex3_5", "Random training windows from a memmap", 2,
             "get_batch", "minilooped.data.batches:get_batch"),
    Exercise("ex3_6", "The integer type of a token file", 1,
             "token_dtype", "minilooped.data.prepare:token_dtype"),
    # Chapter 4: GPT-2
    Exercise("ex4_1", "Causal scaled dot-product attention", 3,
             "scaled_dot_product_attention", "minilooped.ops.fused:scaled_dot_product_attention"),
    Exercise("ex4_2", "Multi-head causal self-attention", 3,
             "CausalSelfAttention", "minilooped.models.attention:CausalSelfAttention", "forward"),
    Exercise("ex4_3", "The transformer block", 2,
             "Block", "minilooped.models.block:Block", "forward"),
    Exercise("ex4_4", "Training FLOPs per token", 2,
             "flops_per_token", "minilooped.training.mfu:flops_per_token"),
    # Chapter 5: Loop-Residual networks
    Exercise("ex5_1", "The Loop-Residual step", 1,
             "LoopResidual", "minilooped.models.loop_residual:LoopResidual", "step"),
    Exercise("ex5_2", "Forward FLOPs per token at n loops", 2,
             "forward_flops_per_token", "minilooped.training.mfu:forward_flops_per_token"),
    Exercise("ex5_3", "A shared weight's gradient, loop by loop", 3,
             "grad_by_loop", "minilooped.models.diagnostics:grad_by_loop"),
    Exercise("ex5_4", "The per-loop logit lens", 3,
             "logit_lens", "minilooped.models.diagnostics:logit_lens"),
    # Chapter 6: why loops break
    Exercise("ex6_1", "The fixed point of the linear loop", 2,
             "linear_fixed_point", "minilooped.models.stability:linear_fixed_point"),
    Exercise("ex6_2", "The stable region of the linear loop", 3,
             "stable_scale", "minilooped.models.stability:stable_scale"),
    Exercise("ex6_3", "A norm-growth bound for the residual loop", 3,
             "residual_norm_bound", "minilooped.models.stability:residual_norm_bound"),
    Exercise("ex6_4", "The largest gain by power iteration", 3,
             "power_iteration", "minilooped.models.diagnostics:power_iteration"),
    # Chapter 7: the Fully Looped Transformer
    Exercise("ex7_1", "Parameter-free RMSNorm's gradient", 3,
             "parameter_free_rms_norm_backward", "minilooped.ops.fused:parameter_free_rms_norm_backward"),
    Exercise("ex7_2", "Attention injection", 3,
             "CausalSelfAttention", "minilooped.models.attention:CausalSelfAttention", "forward"),
    Exercise("ex7_3", "How fast the gradient fades over loops", 2,
             "gradient_shrink_per_loop", "minilooped.models.diagnostics:gradient_shrink_per_loop"),
    Exercise("ex7_4", "Subnormal numbers in an array", 1,
             "subnormal_fraction", "minilooped.models.diagnostics:subnormal_fraction"),
    # Chapter 8: contractive depth
    Exercise("ex8_1", "SCORE's Euler step, both readings of F", 2,
             "Contractive", "minilooped.models.contractive:Contractive", "step"),
    Exercise("ex8_2", "Parcae's zero-order-hold injection", 3,
             "DiagonalInjection", "minilooped.models.parcae:DiagonalInjection", "A_bar"),
    Exercise("ex8_3", "The step sizes that provably contract", 2,
             "max_contractive_dt", "minilooped.models.contraction:max_contractive_dt"),
    Exercise("ex8_4", "Banach's loop count", 2,
             "iterations_for_tolerance", "minilooped.models.contraction:iterations_for_tolerance"),
    Exercise("ex8_5", "A fixed point by iteration", 2,
             "fixed_point", "minilooped.models.contraction:fixed_point"),
    # Chapter 9: Relaxed Recursive Transformers
    Exercise("ex9_1", "Which shared block at each depth", 1,
             "block_order", "minilooped.models.recursive:block_order"),
    Exercise("ex9_2", "Stepwise, Average and Lower initialisation", 2,
             "shared_init", "minilooped.models.recursive:shared_init"),
    Exercise("ex9_3", "LoRA from the SVD of the residual", 3,
             "svd_lora_init", "minilooped.models.recursive:svd_lora_init"),
    Exercise("ex9_4", "Parameters of a relaxed recursive model", 2,
             "relaxed_param_count", "minilooped.models.recursive:relaxed_param_count"),
    Exercise("ex9_5", "Throughput of depth-wise batching under an exit distribution", 3,
             "expected_speedup", "minilooped.models.depthwise_batching:expected_speedup"),
    # Chapter 10: test-time compute
    Exercise("ex10_1", "The saturating depth curve, or why no fit", 3,
             "fit_depth_curve", "minilooped.training.evaluation:fit_depth_curve"),
    Exercise("ex10_2", "Loops to come within eps of L_inf", 2,
             "loops_to_saturate", "minilooped.training.evaluation:loops_to_saturate"),
    Exercise("ex10_3", "Adaptive exit: which positions halt", 2,
             "halts", "minilooped.models.adaptive:halts"),
    Exercise("ex10_4", "Loop count at equal FLOPs", 2,
             "equal_flops_loops", "minilooped.training.mfu:equal_flops_loops"),
    # Chapter 11: the capstone, from one GPU to many
    Exercise("ex11_1", "Memory per GPU of a DDP step", 2,
             "memory_per_gpu", "minilooped.training.plan:memory_per_gpu"),
    Exercise("ex11_2", "Which block applications keep activations", 2,
             "stored_applications", "minilooped.training.plan:stored_applications"),
    Exercise("ex11_3", "Parcae's expected no-grad and grad loops", 3,
             "parcae_loop_counts", "minilooped.training.mfu:parcae_loop_counts"),
    Exercise("ex11_4", "Training FLOPs per token with no-grad loops", 3,
             "training_flops_per_token", "minilooped.training.mfu:training_flops_per_token"),
    Exercise("ex11_5", "The plan: step time, wall time and cost", 3,
             "make_plan", "minilooped.training.plan:make_plan"),
]

BY_ID = {ex.id: ex for ex in EXERCISES}


def get(exercise_id: str) -> Exercise:
    try:
        return BY_ID[exercise_id]
    except KeyError:
        raise KeyError(f"no exercise {exercise_id!r}; the exercises are {', '.join(BY_ID)}") from None


def chapter_exercises(chapter: int) -> list[Exercise]:
    return [ex for ex in EXERCISES if ex.chapter == chapter]


def repo_root() -> Path:
    """The clone that holds ``exercises/``: the one this package lives in (an editable
    install, ``make install``), else the current directory."""
    here = Path(__file__).resolve().parents[2]
    return here if (here / "exercises").is_dir() else Path.cwd()


def current_target() -> str:
    target = os.environ.get(TARGET_ENV, "student")
    if target not in TARGETS:
        raise ValueError(f"{TARGET_ENV}={target!r}: must be one of {', '.join(TARGETS)}")
    return target


class ExerciseImportError(ImportError):
    """The student's module could not be imported (a syntax error, a bad import ...)."""


def _resolve(spec: str):
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


def load(exercise: Exercise, target: str | None = None):
    """The function or class under test: the student's stub or the library's reference."""
    target = target or current_target()
    if target == "reference":
        return _resolve(exercise.reference)
    root = str(repo_root())
    if root not in sys.path:
        sys.path.insert(0, root)
    try:
        return _resolve(exercise.stub)
    except Exception as e:  # SyntaxError, NameError ... in the student's file
        raise ExerciseImportError(
            f"could not load {exercise.where}: {type(e).__name__}: {e}"
        ) from e
