"""Chapter 11 exercises: the capstone, planning a run on GPUs.

    python -m minilooped.grade 11     # grade them all: a score table
    pytest -m ex11_3                  # one exercise, with the full failure report

Arithmetic on configs: no tensors, no GPU. Each exercise is graded on its own; where one
needs another's result, call the library's (``minilooped.training.plan`` and
``minilooped.training.mfu``), not yours. The docstrings say what to compute and what goes
in and out; how to count it is yours to derive (chapter 11, sections 4-6, and chapter 4's
FLOP count).
"""


def memory_per_gpu(config, n_params, batch_size, dtype):
    """Exercise 11.1 -- the bytes one GPU holds during a DDP training step.

    Inputs: ``config``, a GPTConfig (read ``block_size``, ``n_embd``, ``n_head``,
    ``vocab_size``); ``n_params``, every parameter counted once (an int); ``batch_size``,
    the micro-batch B; ``dtype``, the autocast dtype: "bfloat16", "float16" or "float32".
    The run keeps float32 master weights, float32 gradients and AdamW's two float32
    moments; autocast computes in ``dtype``.

    Return a dict with integer or float byte counts under these keys:

    - "weights", "gradients", "adamw": the three per-parameter stores;
    - "stored_applications": the block applications whose activations are kept (the
      library's ``minilooped.training.plan.stored_applications(config)``);
    - "activations": what the backward pass needs kept, for all those applications, by
      Korthikanti et al. 2022 (arXiv 2205.05198, eq. 2) at 16-bit precision (twice that
      in float32) but WITHOUT the T x T attention-score terms (flash attention never
      stores them), plus the logits of each loss head (``plan.loss_heads(config)``):
      their ``dtype`` copy, the float32 copy the cross-entropy makes and its float32
      log-softmax (in float32 the first two are one and the same);
    - "attention_scores_if_materialised": the score terms left out above;
    - "total": weights + gradients + adamw + activations.

    Library: ``minilooped.training.plan.memory_per_gpu``.
    """
    raise NotImplementedError("ex11_1: memory_per_gpu")


def stored_applications(config):
    """Exercise 11.2 -- how many block applications keep their activations for the backward.

    Input: ``config``, a GPTConfig of any variant ("gpt2", "loop_residual", "contractive",
    "fully_looped", "recursive", "parcae"; read ``variant``, ``n_layer``, ``n_loops``,
    ``n_prelude``, ``n_coda``, ``n_recurrent``, ``backprop_loops``, and how the looped
    group is placed). Return an int: the block applications of one training forward pass
    whose inputs and intermediate tensors autograd must keep. A block applied k times
    with gradient keeps k copies. Parcae runs its first loops under no_grad (chapter 8);
    plan with its mean loop count ``n_loops`` as the step's count.
    ``minilooped.training.mfu.block_uses`` may help.

    Library: ``minilooped.training.plan.stored_applications``.
    """
    raise NotImplementedError("ex11_2: stored_applications")


def parcae_loop_counts(mean, backprop_loops, loops=None):
    """Exercise 11.3 -- how many of Parcae's loops run without and with gradient.

    Parcae draws each step's loop count T ~ max(1, Poisson(mean)) and differentiates only
    the last ``backprop_loops`` of them; the earlier ones run under no_grad.

    Inputs: ``mean`` (> 0, a float), ``backprop_loops`` (an int >= 1), ``loops`` (an int
    >= 1 or None). Return a tuple of two floats (no-grad loops, grad loops):

    - ``loops`` given: that one step's split;
    - ``loops`` None: the EXPECTED numbers over the distribution of T, exact (no sampling;
      an error below 1e-9). Why is plugging T = mean into the first case wrong?

    Library: ``minilooped.training.mfu.parcae_loop_counts``.
    """
    raise NotImplementedError("ex11_3: parcae_loop_counts")


def training_flops_per_token(config, named_numels, n_loops=None):
    """Exercise 11.4 -- training FLOPs per token of a looped model, some loops without gradient.

    Inputs: ``config``, a GPTConfig; ``named_numels``, (parameter name, number of elements)
    of every parameter, tied ones once (``[(n, p.numel()) for n, p in
    model.named_parameters()]``); ``n_loops``: None (the config's loop count; for Parcae
    the expectation over its random T), an int (one step's loop count), or a sequence of
    ints (one per sequence of the batch: return the mean of their counts).

    Return a float: chapter 4's count (PaLM's 2 FLOPs per weight per use forward, 4
    backward, plus the attention's scores and weighted sum over the whole context)
    extended to blocks applied several times, and to loops that run forward only. The
    library's ``mfu.applied_parameters(config, named_numels)`` and
    ``mfu.attention_applications(config)`` split parameters and attentions into "once"
    and "per loop"; ``mfu.parcae_loop_counts`` gives Parcae's split of the loops.
    Graded on "gpt2", "loop_residual", "contractive" and "parcae" (the fully looped
    model's extra loss readouts are not graded).

    Library: ``minilooped.training.mfu.training_flops_per_token``.
    """
    raise NotImplementedError("ex11_4: training_flops_per_token")


def make_plan(cfg, model_config, named_numels, flops_per_token):
    """Exercise 11.5 -- the plan of a run: tokens, step time, wall time and cost.

    Inputs: ``cfg``, a TrainConfig (read ``gpu``, ``n_gpus``, ``plan_mfu``, ``gpu_price``
    (0 = the GPU's price in ``plan.GPUS``), ``batch_size``, ``grad_accum`` (micro-batches
    per step over ALL GPUs), ``max_iters``, ``eval_interval``, ``eval_iters``, ``dtype``,
    ``name``); ``model_config``, its GPTConfig; ``named_numels`` as in exercise 11.4;
    ``flops_per_token``, the training FLOPs per token (``mfu.flops_per_token``).

    Return a ``minilooped.training.plan.Plan`` with every field filled: the tokens of a
    step and of the run, micro-batches per GPU, the parameters, the peak FLOP/s of the
    GPU at the run's precision (``plan.plan_precision(cfg)``, ``mfu.PEAK_FLOPS``), the
    step time and tokens/s of all the GPUs at the assumed MFU, the training hours, and
    the evaluation hours: an evaluation every ``eval_interval`` steps and one at step 0,
    ``eval_iters`` micro-batches of each of the two splits, forward only
    (``mfu.forward_flops_per_token``), on rank 0 alone. ``memory`` is the library's
    ``plan.memory_per_gpu``. Raise ``minilooped.training.ConfigError`` when ``grad_accum``
    cannot be split evenly over the GPUs, or when the GPU has no peak at the precision.

    Library: ``minilooped.training.plan.make_plan``.
    """
    raise NotImplementedError("ex11_5: make_plan")
