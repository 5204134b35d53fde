"""Chapter 2 exercises: building blocks and training.

    python -m minilooped.grade 2      # grade them all: a score table
    pytest -m ex2_2                   # one exercise, with the full failure report

Exercises 2.1, 2.2 and 2.6 are backward kernels on arrays (``tensor.data``); 2.3 builds
a function from Tensor ops, so autograd derives its backward; 2.4 is an optimiser's
``step``; 2.5 a plain function of numbers. Each is graded on its own. Exercises 2.2, 2.3
and 2.6 ask for a derivation or a design the chapter leaves to you.
"""
from minilooped.optim.adamw import AdamW as _LibraryAdamW


def embedding_backward(g, idx, num_embeddings):
    """Exercise 2.1 -- the gradient of an embedding table.

    The forward pass ``out = weight[idx]`` copies row ``idx[pos]`` of the table
    (num_embeddings, D) to every position ``pos`` of the integer array ``idx``.
    Inputs: ``g`` = dL/d(out), of shape (*idx.shape, D); ``idx``, an integer array of
    any shape, in which an id may occur any number of times (or not at all);
    ``num_embeddings``, the number of rows of the table.
    Return: dL/dweight, of shape (num_embeddings, D) and g's dtype (section 2 derives
    what each row holds). Library: ``minilooped.ops.fused.embedding_backward``.
    """
    raise NotImplementedError("ex2_1: embedding_backward")


def rms_norm_backward(g, xhat, rstd, weight, axes):
    """Exercise 2.2 -- the backward of RMSNorm, derived.

    RMSNorm, the normalisation of the looped models of Part II, is LayerNorm without the
    mean and without the bias. Over the normalised axes ``axes`` (a tuple of the last
    dims' indices, e.g. (2,) for x of shape (B, T, C)) it computes

        rstd = 1 / sqrt(mean(x^2) + eps),   xhat = x * rstd,   y = xhat * weight

    (y = xhat when ``weight`` is None).
    Inputs: ``g`` = dL/dy and ``xhat``, both of x's shape; ``rstd``, of x's shape with
    size 1 along ``axes`` (keepdims); ``weight``, None or an array of the normalised shape
    (x.shape restricted to ``axes``); ``axes``.
    Return: the tuple ``(dx, dweight)``, dx of x's shape, dweight of the normalised shape
    (computed even when ``weight`` is None, as if it were ones).

    Derive dx the way section 3 derives LayerNorm's: one x_i moves every xhat_j of its
    row through rstd. Write the result with ``xhat`` and ``rstd`` only (x itself is not
    saved), then check it against autograd on RMSNorm composed from Tensor ops, in float64.
    Library: ``minilooped.ops.fused.rms_norm_backward``.
    """
    raise NotImplementedError("ex2_2: rms_norm_backward")


def log_softmax(a, dim=-1):
    """Exercise 2.3 -- a log-softmax that cannot overflow, from Tensor ops.

    Input: ``a``, a float Tensor; ``dim``, the axis to normalise over.
    Return: a Tensor of a's shape, log(softmax(a)) along ``dim``, built from Tensor
    operations only, so that autograd derives its backward.

    It must stay finite and accurate for float32 logits as large as 1e4 in magnitude,
    where exp overflows. How to get there is your decision, and so is whether anything
    you introduce for the purpose should carry a gradient: the grader compares values and
    gradients with PyTorch's. Library (a fused op with a hand-written backward):
    ``minilooped.functional.log_softmax``.
    """
    raise NotImplementedError("ex2_3: log_softmax")


class AdamW(_LibraryAdamW):
    """Exercise 2.4 -- AdamW's update (Loshchilov & Hutter), as ``torch.optim.AdamW``.

    The constructor (inherited) stores ``self.param_groups``, a list of dicts with keys
    "params" (a list of Parameters), "lr", "betas" (beta1, beta2), "eps" and
    "weight_decay"; and ``self.state``, a dict keyed by ``id(p)``.
    """

    def step(self):
        """Apply one AdamW update (section 6) to every parameter ``p`` of every group that
        has a gradient (``p.grad`` is an array, or None: then skip p), in place on ``p.data``.

        State per parameter, created at its first update as
        ``self.state[id(p)] = {"step": 0.0, "exp_avg": zeros like p.data, "exp_avg_sq": zeros like p.data}``:
        the step count and the two moments, which the checkpoints read under these keys.
        Use each group's own lr, betas, eps and weight_decay, read at every step: a
        schedule changes lr between steps. The result must match ``torch.optim.AdamW``
        step by step. You may ignore the options "amsgrad" and "maximize" (not graded).
        Library: ``minilooped.optim.AdamW.step`` and its update, ``minilooped.optim.adamw.adamw_update``.
        """
        raise NotImplementedError("ex2_4: AdamW.step")


def warmup_cosine(step, max_lr, min_lr, warmup_steps, max_steps):
    """Exercise 2.5 -- the learning rate at ``step`` of section 7's schedule.

    Inputs: ``step`` (0-based), ``max_lr`` >= ``min_lr``, ``warmup_steps`` >= 0,
    ``max_steps`` (the step at which the decay ends, >= ``warmup_steps``).
    Return: a float, the learning rate of section 7's equation (nanoGPT's get_lr) at
    ``step``, also for a warmup of zero steps and for steps past ``max_steps``.
    Library: ``minilooped.optim.lr_schedule.warmup_cosine``.
    """
    raise NotImplementedError("ex2_5: warmup_cosine")


def gelu_backward(g, x):
    """Exercise 2.6 -- GELU's derivative, in GPT-2's tanh form.

    Forward: ``out = gelu(x)``, the tanh form of section 4 (the library's ``F.gelu``).
    Inputs: ``g`` = dL/d(out) and ``x``, the input of the forward pass, arrays of the same
    shape and dtype.
    Return: dL/dx, an array of that shape and dtype.

    Derive the derivative of the tanh form yourself; float32 inputs must give a float32
    result. Check it against finite differences, or against autograd on the same formula
    written with Tensor ops. Library: ``minilooped.ops.elementwise.gelu_backward``.
    """
    raise NotImplementedError("ex2_6: gelu_backward")
