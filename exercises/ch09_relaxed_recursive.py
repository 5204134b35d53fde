"""Chapter 9 exercises: Relaxed Recursive Transformers.

    python -m minilooped.grade 9      # grade them all: a score table
    pytest -m ex9_3                   # one exercise, with the full failure report

From a trained GPT-2 to a recursive model: which shared block runs at each depth, how
the shared blocks are initialised from the pretrained layers, the low-rank relaxation
that brings each depth back towards its original layer, what the relaxation costs in
parameters, and what early exits buy when requests are batched depth-wise. Each
exercise is graded on its own; where one needs another's result, call the library's
(``minilooped.models.recursive``), not yours. The docstrings say what goes in and out;
how to compute it is yours to derive (chapter 9).
"""


def block_order(n_unique, n_loops, sharing):
    """Exercise 9.1 -- which shared block each depth applies.

    Inputs: ``n_unique`` = K shared blocks, ``n_loops`` = R loops, ``sharing`` "cycle" or
    "sequence" (chapter 9, section 2). Return a list of K R ints: entry d is the index
    (0 .. K - 1) of the shared block that depth d = 0 .. K R - 1 applies.

    Library: ``minilooped.models.recursive.block_order``.
    """
    raise NotImplementedError("ex9_1: block_order")


def shared_init(layers, n_unique, init, sharing="cycle"):
    """Exercise 9.2 -- the shared blocks' starting values, from the pretrained layers.

    Inputs: ``layers``, a list of N NumPy arrays of one shape: the values of one parameter
    (say ``mlp.c_fc.weight``) in each layer 0 .. N - 1 of the source GPT-2; ``n_unique`` =
    K, a divisor of N; ``init``, "stepwise", "average" or "lower"; ``sharing``, "cycle" or
    "sequence", which decides which depths each shared block serves (exercise 9.1).

    Return a list of K arrays of that shape: block i's starting value under the rule
    ``init`` (chapter 9, section 3). Stepwise picks evenly spaced layers from the first to
    the last (ties between two layers go to the later one); with K = 1 it is layer 0.
    Raise ValueError when K does not divide N or ``init`` is unknown.

    Library: ``minilooped.models.recursive.shared_init``.
    """
    raise NotImplementedError("ex9_2: shared_init")


def svd_lora_init(residual, rank):
    """Exercise 9.3 -- a depth's LoRA, initialised to the best rank-r correction.

    Input: ``residual``, a NumPy array (out, in): what a depth's original weight W_orig
    differs from the shared weight it now uses; ``rank`` = r, an int in [0, min(out, in)].
    Return ``(A, B)`` with A of shape (r, in) and B of shape (out, r) such that B @ A is
    the rank-r matrix closest to ``residual`` in the Frobenius norm, and A has orthonormal
    rows (the paper's convention; it fixes how the scale is split between A and B).
    Raise ValueError for a rank outside that range. How close can a rank-r matrix get, and
    why is yours the closest? The grader checks your error against that bound.

    Library: ``minilooped.models.recursive.svd_lora_init``.
    """
    raise NotImplementedError("ex9_3: svd_lora_init")


def relaxed_param_count(config):
    """Exercise 9.4 -- how many parameters a (relaxed) recursive model has.

    Input: ``config``, a GPTConfig with variant="recursive" (read ``vocab_size``,
    ``block_size``, ``n_embd``, ``n_layer`` = K shared blocks, ``n_loops`` = R, ``bias``,
    ``lora_rank`` = r and ``relax_vectors``). Return an int: every parameter of
    ``GPT(config)`` counted once (the head is tied to the token embedding; the position
    table counts), without building the model. With r > 0 every one of the K R depths
    has its own relaxation: a rank-r LoRA on each of the block's four weight matrices and,
    with ``relax_vectors``, its own delta on each LayerNorm weight and, when ``bias``, on
    each LayerNorm bias and each of the four biases (minilooped/models/recursive.py).

    Library: ``minilooped.models.recursive.relaxed_param_count``.
    """
    raise NotImplementedError("ex9_4: relaxed_param_count")


def expected_speedup(exit_probs, batch_size):
    """Exercise 9.5 -- what depth-wise batching gains under a distribution of exit depths.

    Inputs: ``exit_probs``, a list of R probabilities summing to 1: a request exits after
    loop t with probability exit_probs[t - 1], independently of the others; ``batch_size``
    B >= 1. Three schedules serve many such requests (chapter 9, section 8): every request
    runs all R loops ("max_depth"); groups of B requests run together until the deepest of
    the group exits ("static"); continuous depth-wise batching refills a slot as soon as
    its request exits, so each request costs only its own depth ("continuous").

    Return a dict of floats: "max_depth", "static", "continuous": the expected loops per
    request of each schedule (row-loops / requests, neglecting the last, partly empty
    batches); and the speed-ups when compute is time, "static_vs_max_depth",
    "continuous_vs_max_depth", "continuous_vs_static" (e.g. the first is max_depth's cost
    over static's). Raise ValueError for probabilities that are not a distribution or a
    batch size below 1.

    Library: ``minilooped.models.depthwise_batching.expected_speedup``.
    """
    raise NotImplementedError("ex9_5: expected_speedup")
