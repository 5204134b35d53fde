"""Chapter 2 exercises: building blocks and training.

    python -m minilooped.grade 2      # grade them all: a score table
    pytest -m ex2_2                   # one exercise, with the full failure report

Exercises 2.1 and 2.2 are backward kernels on arrays (``tensor.data``); 2.3 builds a
function from Tensor ops, so autograd derives its backward; 2.4 is an optimiser's
``step``; 2.5 a plain function of numbers. Each is graded on its own.
"""
from minilooped.optim.adamw import AdamW as _LibraryAdamW


def embedding_backward(g, idx, num_embeddings):
    """Exercise 2.1 -- the gradient of an embedding table: a scatter-add.

    The forward pass ``out = weight[idx]`` copies row ``idx[pos]`` of the table
    (num_embeddings, D) to every position ``pos`` of the integer array ``idx``.
    Inputs: ``g`` = dL/d(out), of shape (*idx.shape, D); ``idx``, an integer array of
    any shape; ``num_embeddings``, the number of rows of the table.
    Return: dL/dweight, of shape (num_embeddings, D) and g's dtype, whose row r is the
    sum of g[pos] over all positions with idx[pos] == r (zeros for ids not in idx).

    Careful: an id that occurs twice receives both gradients. ``gw[idx] += g`` keeps
    only one of them (fancy-index assignment does not accumulate); use ``np.add.at``
    (``backend.array_module(g).add.at``) or a loop. Library:
    ``minilooped.ops.fused.embedding_backward``.
    """
    raise NotImplementedError("ex2_1: embedding_backward")


def layer_norm_backward(g, xhat, rstd, weight, axes):
    """Exercise 2.2 -- the fused backward of layer normalisation.

    Forward, over the normalised axes ``axes`` (a tuple of the last dims' indices, e.g.
    (2,) for x of shape (B, T, C)):

        xhat = (x - mean(x)) * rstd,   rstd = 1 / sqrt(var(x) + eps),   y = xhat * weight + bias

    Inputs: ``g`` = dL/dy and ``xhat``, both of x's shape; ``rstd``, of x's shape with
    size 1 along ``axes`` (keepdims); ``weight``, None or an array of the normalised
    shape (x.shape restricted to ``axes``); ``axes``.
    Return the tuple ``(dx, dweight, dbias)``: dx of x's shape, dweight and dbias of the
    normalised shape (compute them even when ``weight`` is None). With
    gxhat = g * weight (or g when weight is None), means over ``axes``:

        dx      = rstd * (gxhat - mean(gxhat) - xhat * mean(gxhat * xhat))
        dweight = sum of g * xhat over the other axes,   dbias = sum of g over the other axes

    Keep the reduced axes in the means (keepdims=True) so they broadcast back.
    Derivation hint: x_i moves the mean and the variance, so every xhat_j of its row;
    chapter 2 derives the two correction terms. Library: ``minilooped.ops.fused.layer_norm_backward``.
    """
    raise NotImplementedError("ex2_2: layer_norm_backward")


def log_softmax(a, dim=-1):
    """Exercise 2.3 -- a log-softmax that never overflows, from Tensor ops.

    Input: ``a``, a float Tensor; ``dim``, the axis to normalise over.
    Return: a Tensor of a's shape,

        log_softmax(a)_i = a_i - log(sum_j exp(a_j))

    Computed as written, exp(1000.0) is inf and the result nan. Since the result does
    not change when the same constant is subtracted from every a_j, subtract the
    maximum m = max_j a_j first: the largest exponent is then exp(0) = 1.

        log_softmax(a)_i = (a_i - m) - log(sum_j exp(a_j - m))

    Use Tensor methods only (``a.max(dim, keepdim=True)``, ``.exp()``, ``.sum(dim,
    keepdim=True)``, ``.log()``, ``-``), so autograd gives you the backward. The maximum
    needs no gradient (the result does not depend on it): ``.detach()`` it.
    Library (a fused op with a hand-written backward): ``minilooped.functional.log_softmax``.
    """
    raise NotImplementedError("ex2_3: log_softmax")


class AdamW(_LibraryAdamW):
    """Exercise 2.4 -- AdamW's update (Loshchilov & Hutter), as ``torch.optim.AdamW``.

    The constructor (inherited) stores ``self.param_groups``, a list of dicts with keys
    "params" (a list of Parameters), "lr", "betas" (beta1, beta2), "eps" and
    "weight_decay"; and ``self.state``, a dict keyed by ``id(p)``.
    """

    def step(self):
        """Update every parameter ``p`` of every group that has a gradient (``p.grad`` is
        an array, or None: then skip p), in place on ``p.data``.

        State per parameter, created at its first update as
        ``self.state[id(p)] = {"step": 0.0, "exp_avg": zeros like p.data, "exp_avg_sq": zeros like p.data}``.
        Then, with g = p.grad, t = the step count after incrementing it, and the
        group's lr, (beta1, beta2), eps and weight_decay wd:

            p <- p * (1 - lr * wd)                       decoupled weight decay, first
            m <- beta1 * m + (1 - beta1) * g             exp_avg, in place
            v <- beta2 * v + (1 - beta2) * g^2           exp_avg_sq, in place
            p <- p - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)

        Read lr from the group at every step: a schedule changes it between steps.
        You may ignore the options "amsgrad" and "maximize" (not graded).
        Library: ``minilooped.optim.AdamW.step`` and its update, ``minilooped.optim.adamw.adamw_update``.
        """
        raise NotImplementedError("ex2_4: AdamW.step")


def warmup_cosine(step, max_lr, min_lr, warmup_steps, max_steps):
    """Exercise 2.5 -- the learning rate at ``step``: linear warmup, then cosine decay.

    Inputs: ``step`` (0-based), ``max_lr`` >= ``min_lr``, ``warmup_steps`` >= 0,
    ``max_steps`` (the step at which the decay ends). Return a float:

        step < warmup_steps:         max_lr * (step + 1) / (warmup_steps + 1)
        step >= max_steps:           min_lr
        otherwise, with r = (step - warmup_steps) / max(1, max_steps - warmup_steps):
                                     min_lr + 0.5 * (1 + cos(pi * r)) * (max_lr - min_lr)

    (nanoGPT's get_lr.) Library: ``minilooped.optim.lr_schedule.warmup_cosine``.
    """
    raise NotImplementedError("ex2_5: warmup_cosine")
