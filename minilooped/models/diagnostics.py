"""The looped-model lab: what happens inside the loop, measured loop by loop.

NumPy core; the PyTorch mirror minilooped/torch/models/diagnostics.py reads line by line alike.

Every function takes a model and a batch, runs the model's own forward (enter, the
steps, readout: trunk.py) while watching each loop, and returns NumPy float64 arrays
indexed [loop] or [loop, layer]:

    hidden_norms(model, idx)                   rms[t], rel_update[t], rms_layer[t, l]
    logit_lens(model, idx, targets)            loss[t], kl[t]
    grad_norms(model, idx, targets)            state[t], layer[t, l], block[i], total
    grad_by_loop(model, idx, targets)          {name: share[t]}, a shared weight's gradient by loop
    jacobian_spectral_norm(model, idx, loop)   sigma_max of d step_t / d h at h_t
    power_iteration(jvp, vjp, shape, ...)      sigma_max of any J from J v and J^T u
    spectral_radius(model)                     rho(A_bar), Parcae's injection
    loop_table(model, idx, targets)            all of it, one dict of arrays

and two that read their results (NumPy arrays in, numbers out):

    gradient_shrink_per_loop(grad_state)       geometric ratio grad_state[t+1] / grad_state[t]
    subnormal_fraction(a, dtype)               share of entries below dtype's smallest normal

Notation. Loop t = 0 .. n-1 is the map h_{t+1} = step_t(h_t) (``trunk.step``), and entry
t of every array describes loop t, i.e. the state h_{t+1} it produced. h_0 is the state
the trunk's ``enter`` returns: the prelude's output (loop_residual, contractive), Parcae's
drawn h_0, the embeddings for gpt2, and none for the fully looped model (its first loop
starts from n(E)). Layer l of loop t is the l-th block called inside step_t, and
x_{t,l} its output, the residual stream after that block. gpt2 counts each block as a
loop of one layer (gpt.py, Stack), so its "loops" are its layers.

How the loop is watched: the model's own forward runs while ``trunk.step`` is replaced,
on that instance and for that call only, by a wrapper that records h_t, the context and
h_{t+1}, and hands step a stand-in for ``transformer.h`` that records every block's
output. The model code is untouched, and the loss is the model's own (the fully looped
model's loss_loops, Parcae's h_0 and loop count included).

How to read them (chapter 6, Why loops break):

- rms[t] = sqrt(mean(h_{t+1}^2)), the scale of the residual stream. Growing loop after
  loop is the "residual explosion" of arXiv 2605.18797; the fully looped model's state is
  normalised (rms ~ 1 by construction) and Parcae's A_bar < 1 keeps it bounded.
- rel_update[t] = ||h_{t+1} - h_t|| / ||h_{t+1}||, the distance to a fixed point. Falling
  to 0: the loop converges to h* = step(h*), more loops change nothing and test-time
  looping saturates (arXiv 2604.12946). Near 1: every loop rewrites the state.
  Alternating: a cycle, not a fixed point.
- lens loss[t] and kl[t] = KL(p_t || p_n): what the model would predict if it stopped after
  loop t, read out through its own readout, ln_f and head. Loss falling with t: later
  loops help. kl[t] near 0: exiting after loop t loses nothing (early exit, chapters 9, 10).
- grad state[t] = ||dL/dh_{t+1}||, layer[t, l] = ||dL/dx_{t,l}||: how much gradient reaches
  each loop. Shrinking towards t = 0: early loops barely learn; growing: exploding;
  rising and falling from loop to loop: the gradient oscillation of arXiv 2605.18797.
- sigma_t = ||J_t||_2 with J_t = d step_t / d h at h_t, the loop's local gain. sigma_t < 1:
  the loop is locally a contraction (a small perturbation of h_t shrinks, the fixed
  point attracts). sigma_t > 1: perturbations, and the gradients that flow back through
  J_t^T, can grow by up to sigma_t per loop; the product of the sigma_t bounds the gain
  of the whole loop.
- rho(A_bar), Parcae's linear part: the linearised recurrence h <- A_bar h + B_bar e is
  stable iff rho < 1. Additive injection has A_bar = I (rho = 1, marginal); a learned
  linear adapter can exceed 1 (arXiv 2604.12946).

Every function leaves the model as it was: the train/eval mode of every module, every
parameter's .grad and requires_grad, and the random generator (Parcae draws h_0 from
it). Measurements run in eval mode: dropout off and, for Parcae, gradients through every
loop (training truncates them to the last backprop_loops). Parcae's random h_0 is drawn
once per call (``h0=`` sets it), and ``loop_table`` runs every measurement from one draw.
"""
import copy
import inspect
from contextlib import contextmanager
from types import SimpleNamespace

import numpy as np

import minilooped as ml
from minilooped import backend, no_grad, enable_grad

# twin: framework-specific
# Central differences: truncation error ~ FD_EPS^2, rounding ~ machine eps / FD_EPS; the
# cube root of float64's epsilon (6e-6) balances the two (core only: no forward mode).
FD_EPS = float(np.finfo(np.float64).eps) ** (1 / 3)
# twin: end


# ---------------------------------------------------------------- watching the loop
class _Blocks:
    """Stands in for ``transformer.h`` inside one loop: each block called through it
    appends its output x_{t,l} to ``outputs``, in call order (layer l = call l)."""

    def __init__(self, blocks, outputs):
        self.blocks = blocks
        self.outputs = outputs

    def __len__(self):
        return len(self.blocks)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return _Blocks(self.blocks[i], self.outputs)
        return _Block(self.blocks[i], self.outputs)

    def __iter__(self):
        return (self[i] for i in range(len(self)))


class _Block:
    """One block, called as usual; its output is recorded."""

    def __init__(self, block, outputs):
        self.block = block
        self.outputs = outputs

    def __call__(self, *args, **kwargs):
        out = self.block(*args, **kwargs)  # (B, T, C)
        self.outputs.append(out)
        return out

    def __getattr__(self, name):
        return getattr(self.block, name)


@contextmanager
def _watching(trunk):
    """While active, every ``trunk.step(h, ctx, blocks, t)`` that the model's forward makes
    is recorded: run.states = [h_0, h_1, ..., h_n], run.ctx, run.layers[t] = [x_{t,l}]."""
    run = SimpleNamespace(states=[], ctx=None, layers=[])
    step = trunk.step  # the trunk's own method

    def watched_step(h, ctx, blocks, t):
        if not run.states:
            run.states.append(h)  # h_0 (None for the fully looped model)
        run.ctx = ctx
        run.layers.append([])
        h = step(h, ctx, _Blocks(blocks, run.layers[-1]), t)  # (B, T, C)
        run.states.append(h)
        return h

    trunk.step = watched_step  # an instance attribute hides the class's method
    try:
        yield run
    finally:
        del trunk.step


def _forward(model, idx, targets=None, n_loops=None, h0=None):
    """The model's own forward, watched: run.states, run.ctx, run.layers, run.logits, run.loss."""
    kwargs = {} if h0 is None else {"h0": h0}
    with _watching(model.transformer.trunk) as run:
        run.logits, run.loss = model(idx, targets, n_loops=n_loops, **kwargs)
    if len(run.states) < 2:
        raise RuntimeError(f"variant={model.config.variant!r}: the model's forward never called "
                           "trunk.step, so there is no loop to measure.")
    return run


@contextmanager
def _kept(model):
    """Measure in eval mode, with the gradients put aside; then put back every module's
    mode, every parameter's .grad and requires_grad, and the random generator's state."""
    modes = [(m, m.training) for m in model.modules()]
    params = [(p, p.grad, p.requires_grad) for p in model.parameters()]
    rng = _rng_state(model)
    model.eval()
    for p, _, _ in params:
        p.grad = None
    try:
        yield
    finally:
        for m, training in modes:  # parents come first, so a child's own mode wins
            m.train(training)
        for p, grad, requires_grad in params:
            p.grad = grad
            p.requires_grad_(requires_grad)
        _set_rng_state(model, rng)


# ---------------------------------------------------------------- inputs and outputs
# twin: framework-specific
def _tokens(model, a):
    """Token ids (B, T) as the model takes them: a NumPy integer array."""
    a = a.numpy() if isinstance(a, ml.Tensor) else np.asarray(a)
    if a.ndim != 2:
        raise ValueError(f"token ids must be a (B, T) array, got shape {tuple(a.shape)}.")
    return a
# twin: end


def _batch(model, idx, targets):
    """(idx, targets) checked: targets has idx's shape."""
    idx, targets = _tokens(model, idx), _tokens(model, targets)
    if tuple(targets.shape) != tuple(idx.shape):
        raise ValueError(f"targets has shape {tuple(targets.shape)} but idx has shape "
                         f"{tuple(idx.shape)}: pass one target id per input position (-1 to skip one).")
    return idx, targets


# twin: framework-specific
def _numpy(t):
    """A float64 NumPy copy of a tensor, a backend array (a .grad) or an array."""
    data = t.data if isinstance(t, ml.Tensor) else t
    return np.array(backend.to_numpy(data), dtype=np.float64)


def _like(ref, a):
    """The NumPy array a as a tensor of ref's dtype and device."""
    return ml.Tensor(backend.to_device(np.asarray(a, dtype=ref.dtype), ref.device))


def _rng_state(model):
    return backend.generator("cpu").bit_generator.state  # h_0 is drawn here (nn.init.trunc_normal_)


def _set_rng_state(model, state):
    backend.generator("cpu").bit_generator.state = state
# twin: end


def _initial_state(model, idx, h0=None):
    """h_0 for trunks whose enter takes one (Parcae): h0 as given, or one draw; else None."""
    trunk, tr = model.transformer.trunk, model.transformer
    if "h0" not in inspect.signature(trunk.enter).parameters:
        if h0 is not None:
            raise ValueError(f"h0= given, but variant={model.config.variant!r} has no initial "
                             "state to set (its trunk.enter takes no h0); leave h0=None.")
        return None
    shape = (*idx.shape, model.config.n_embd)
    if h0 is not None:
        if tuple(h0.shape) != shape:
            raise ValueError(f"h0 has shape {tuple(h0.shape)}; it must be (B, T, n_embd) = {shape}.")
        return _like(model.lm_head.weight, _numpy(h0))
    with no_grad():
        x = tr.drop(tr.wte(idx) + tr.wpe.weight[:idx.shape[1]])  # (B, T, C)
        return trunk.enter(x, tr.h)[0]  # the h_0 the forward would draw


def _ragged(rows):
    """A list of lists of numbers as a (rows, longest) array, NaN where a row is short."""
    out = np.full((len(rows), max(len(r) for r in rows)), np.nan)
    for i, r in enumerate(rows):
        out[i, :len(r)] = r
    return out


def _norm(a):
    return float(np.sqrt(np.sum(a * a)))


def _log_softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


# ---------------------------------------------------------------- the diagnostics
def hidden_norms(model, idx, n_loops=None, h0=None):
    """The hidden state's scale and its distance to a fixed point, loop by loop.

        rms[t]          = sqrt(mean(h_{t+1}^2))                   over the whole (B, T, C) state
        rel_update[t]   = ||h_{t+1} - h_t|| / ||h_{t+1}||          (Frobenius norms over the batch)
        rms_layer[t, l] = sqrt(mean(x_{t,l}^2))                   block l's output in loop t

    rel_update[0] compares h_1 with the trunk's h_0 (prelude output, Parcae's h_0, the
    embeddings for gpt2); it is NaN for the fully looped model, which has no h_0.
    Returns {"rms": (n,), "rel_update": (n,), "rms_layer": (n, L)}.
    """
    idx = _tokens(model, idx)
    with _kept(model), no_grad():
        run = _forward(model, idx, n_loops=n_loops, h0=_initial_state(model, idx, h0))
        states = [None if h is None else _numpy(h) for h in run.states]  # h_0 .. h_n
        layers = [[_numpy(x) for x in xs] for xs in run.layers]
    rms = [np.sqrt(np.mean(h * h)) for h in states[1:]]
    rel = [np.nan if a is None else _norm(b - a) / _norm(b) for a, b in zip(states, states[1:])]
    rms_layer = _ragged([[np.sqrt(np.mean(x * x)) for x in xs] for xs in layers])
    return {"rms": np.array(rms), "rel_update": np.array(rel), "rms_layer": rms_layer}


def logit_lens(model, idx, targets, n_loops=None, h0=None):
    """The prediction read out after every loop, through the variant's own readout.

        z_t     = lm_head(ln_f(readout(h_{t+1}, ctx)))           (B, T, vocab); z_{n-1} = logits
        loss[t] = mean over positions with target != -1 of -log softmax(z_t)[target]
        kl[t]   = mean over all B T positions of KL(p_t || p_{n-1})
                = sum_v p_t(v) (log p_t(v) - log p_{n-1}(v)),    p_t = softmax(z_t)

    readout is Parcae's coda(C h), loop_residual's and contractive's coda, the identity
    for the fully looped model (its state n(x) is what ln_f reads) and for gpt2 (the
    classic logit lens). Computed in float64 from the model's logits. The last entry is
    the model's own prediction: kl[-1] = 0 and loss[-1] is its loss (the fully looped
    model with loss_loops != "last" averages several of these into its loss).
    Returns {"loss": (n,), "kl": (n,)}.
    """
    idx, targets = _batch(model, idx, targets)
    tr = model.transformer
    with _kept(model), no_grad():
        run = _forward(model, idx, n_loops=n_loops, h0=_initial_state(model, idx, h0))
        logits = [_numpy(model.lm_head(tr.ln_f(tr.trunk.readout(h, run.ctx, tr.h))))
                  for h in run.states[1:]]  # (B, T, vocab) per loop
    logp = [_log_softmax(z) for z in logits]
    y = _numpy(targets).astype(np.int64)  # (B, T)
    keep = y != -1  # targets -1 are skipped, as in the model's cross-entropy
    loss = [-np.mean(lp[keep, y[keep]]) for lp in logp]
    kl = [np.mean(np.sum(np.exp(lp) * (lp - logp[-1]), axis=-1)) for lp in logp]
    return {"loss": np.array(loss), "kl": np.array(kl)}


def grad_norms(model, idx, targets, n_loops=None, h0=None):
    """Gradient norms after one backward of the model's loss L = model(idx, targets)[1].

        state[t]    = ||dL/dh_{t+1}||        the state loop t hands on (Frobenius over (B, T, C))
        layer[t, l] = ||dL/dx_{t,l}||        the residual stream after block l of loop t
        block[i]    = ||dL/dtheta_i||        all parameters of unique block transformer.h[i],
                                             summed over every loop that uses them
        total       = ||dL/dtheta||          every parameter (what gradient clipping sees)

    dL/dh is the total derivative: through everything downstream of h, later layers and
    loops included (the hidden-state gradient whose oscillation across loops is
    arXiv 2605.18797's instability signal). Eval mode: dropout off, and Parcae
    back-propagates through every loop. The model's own .grad are put back afterwards.
    Returns {"state": (n,), "layer": (n, L), "block": (n_layer,), "total": ()}.
    """
    idx, targets = _batch(model, idx, targets)
    with _kept(model):
        run = _forward(model, idx, targets, n_loops=n_loops, h0=_initial_state(model, idx, h0))
        if not run.loss.requires_grad:
            raise ValueError("grad_norms: the loss does not require grad; no parameter of the "
                             "model does (call model.requires_grad_(True)).")
        watched = run.states[1:] + [x for xs in run.layers for x in xs]
        for x in watched:
            if x.requires_grad:
                x.retain_grad()  # keep dL/dx on these intermediate tensors
        run.loss.backward()
        state = [_grad_norm([h]) for h in run.states[1:]]
        layer = _ragged([[_grad_norm([x]) for x in xs] for xs in run.layers])
        block = [_grad_norm(list(b.parameters())) for b in model.transformer.h]
        total = _grad_norm(list(model.parameters()))
    return {"state": np.array(state), "layer": layer, "block": np.array(block),
            "total": np.array(total)}


def _grad_norm(tensors):
    """sqrt(sum of ||t.grad||^2); a tensor with no gradient counts 0."""
    return float(np.sqrt(sum(np.sum(_numpy(t.grad) ** 2) for t in tensors if t.grad is not None)))


def grad_by_loop(model, idx, targets, n_loops=None, h0=None):
    """The gradient of every block parameter, split by the loop that used it.

    A block applied in n loops uses its weights n times, so by the chain rule their
    gradient is a sum of one term per use (chapter 5):

        dL/dW = sum_t dL/dW_t,    dL/dW_t = the gradient through loop t's use of W alone

    which is the gradient W would get if loop t had its own copy of it. So it is measured:
    the model's own forward runs with every loop stepping through its own copy of
    ``transformer.h``, equal to the blocks (same outputs, same loss), and one backward
    gives each copy its loop's share. Eval mode, as every measurement here.

    Returns {name: (n, *shape)} for every parameter of transformer.h, named as in
    model.named_parameters(); entry [t] is loop t's share. Summed over t it is the
    gradient the loops give the parameter: p.grad of one backward for the looped
    blocks; 0 for prelude and coda blocks, which run outside the loop.
    """
    idx, targets = _batch(model, idx, targets)
    trunk, blocks = model.transformer.trunk, model.transformer.h
    copies = []  # copies[t]: the blocks loop t steps through
    step = trunk.step  # the trunk's own method

    def untied_step(h, ctx, shared, t):
        copies.append(copy.deepcopy(shared))  # loop t's own blocks, equal to the shared ones
        return step(h, ctx, copies[-1], t)  # (B, T, C), as with the shared blocks

    with _kept(model):
        h0 = _initial_state(model, idx, h0)
        kwargs = {} if h0 is None else {"h0": h0}
        trunk.step = untied_step  # an instance attribute hides the class's method
        try:
            _, loss = model(idx, targets, n_loops=n_loops, **kwargs)
        finally:
            del trunk.step
        loss.backward()
        out = {}
        for name, p in blocks.named_parameters():
            shares = [dict(c.named_parameters())[name].grad for c in copies]
            out[f"transformer.h.{name}"] = np.stack(
                [np.zeros(p.shape) if g is None else _numpy(g) for g in shares])  # (n, *shape)
    return out


def jacobian_spectral_norm(model, idx, loop, n_loops=None, h0=None, iters=100, tol=1e-6, seed=0):
    """sigma_max(J_t), J_t = d step_t(h) / d h at h = h_t: the loop's largest local gain.

    The Jacobian is over the whole (B, T, C) state of the batch, N = B T C. Sequences do
    not interact, so J_t is block-diagonal and its sigma_max is the largest of the
    per-sequence ones (pass idx[b:b+1] for sequence b). Power iteration on J^T J:

        v_0 random unit (seed),   w_k = J^T (J v_k),   sigma_k = sqrt(||w_k||),   v_{k+1} = w_k / ||w_k||

    sigma_k rises to sigma_max from below; its error shrinks like (sigma_2 / sigma_1)^(2k).
    Iteration stops when |sigma_k - sigma_{k-1}| <= tol sigma_k, or after iters.

    J v and J^T u: ``_jvp`` and ``_vjp`` below (the core has no forward mode: its J v is a
    float64 central difference, about 1e-10 relative; the mirror's are exact).

    loop 0 of the fully looped model has no h_0 to differentiate by: an error.
    Returns {"sigma": float, "iters": int, "converged": bool, "history": (iters,) sigma_k}.
    """
    idx = _tokens(model, idx)
    with _kept(model):
        return _loop_jacobians(model, idx, [loop], n_loops, h0, iters, tol, seed)[loop]


def _loop_jacobians(model, idx, loops, n_loops, h0, iters, tol, seed):
    """{t: jacobian_spectral_norm result} for each loop t in loops (None: every loop that
    has a state h_t to differentiate by)."""
    jm = _jacobian_model(model)
    with no_grad():
        run = _forward(jm, idx, n_loops=n_loops, h0=_initial_state(jm, idx, h0))
    n = len(run.states) - 1
    if loops is None:
        loops = [t for t in range(n) if run.states[t] is not None]
    for t in loops:
        if not isinstance(t, int) or isinstance(t, bool) or not 0 <= t < n:
            raise ValueError(f"loop={t!r} is out of range: this model runs n={n} loops, "
                             f"loop = 0 .. {n - 1} (the map h_t -> h_(t+1)).")
        if run.states[t] is None:
            raise ValueError(f"loop={t}: variant={model.config.variant!r} has no state h_{t} "
                             "(its first loop starts from the embeddings alone), so step_t has "
                             "no Jacobian by h; ask for loop >= 1.")
    for p in jm.parameters():
        p.requires_grad_(False)  # J is by h only; parameters are constants
    trunk, blocks = jm.transformer.trunk, jm.transformer.h
    results = {}
    for t in loops:
        h = run.states[t]  # (B, T, C)

        def f(h, t=t):
            return trunk.step(h, run.ctx, blocks, t)  # step_t, h_t -> h_{t+1}

        results[t] = power_iteration(lambda v: _jvp(f, h, v), lambda u: _vjp(f, h, u),
                                     tuple(h.shape), iters, tol, seed)
    return results


def power_iteration(jvp, vjp, shape, iters, tol, seed):
    """sigma_max of a linear map J known only through J v and J^T u (NumPy float64).

    jvp(v) = J v and vjp(u) = J^T u take and return arrays of ``shape`` (J maps the space
    to itself). Power iteration on J^T J, whose top eigenvalue is sigma_max^2 (iterating
    J alone would find |lambda_max|, the spectral radius, which a non-normal J can hold
    far below sigma_max). Stops when |sigma_k - sigma_{k-1}| <= tol sigma_k (converged)
    or after ``iters`` steps; ``seed`` draws v_0. Chapter 6, exercise 6.4.
    Returns {"sigma": float, "iters": int, "converged": bool, "history": (iters,) sigma_k}.
    """
    if not isinstance(iters, int) or iters < 1:
        raise ValueError(f"iters={iters!r} must be an integer >= 1.")
    v = np.random.default_rng(seed).standard_normal(shape)
    v /= _norm(v)
    history, converged = [], False
    for _ in range(iters):
        w = vjp(jvp(v))  # J^T J v
        size = _norm(w)
        history.append(np.sqrt(size))  # sigma_k = sqrt(||J^T J v_k||), ||v_k|| = 1
        if size == 0.0:  # J v = 0: sigma_max = 0 if v had any part on the top singular vector
            break
        v = w / size
        if len(history) > 1 and abs(history[-1] - history[-2]) <= tol * history[-1]:
            converged = True
            break
    return {"sigma": float(history[-1]), "iters": len(history), "converged": converged,
            "history": np.array(history)}


# twin: framework-specific
# J v (core): no forward mode here, so a central difference in float64, on a float64
# copy of the model if it is not float64 already:
#     J v ~ (step_t(h + eps v) - step_t(h - eps v)) / (2 eps),   eps = FD_EPS max(1, ||h||)
# with error O(eps^2 ||D^3 step_t||) + O(machine eps ||step_t(h)|| / eps), about 1e-10
# relative for the course's models (tests/test_diagnostics.py measures it). J^T u:
# reverse mode, exact (backward of step_t(h) with gradient u).
def _jacobian_model(model):
    """The model J is taken on: float64 (J v is a finite difference), a copy if need be."""
    if model.lm_head.weight.dtype == np.float64:
        return model
    return copy.deepcopy(model).to("float64")


def _jvp(f, h, v):
    """J v by central differences, v a unit NumPy array of h's shape (see FD_EPS)."""
    eps = FD_EPS * max(1.0, _norm(_numpy(h)))
    with no_grad():
        up, down = f(h + _like(h, eps * v)), f(h - _like(h, eps * v))  # (B, T, C)
    return (_numpy(up) - _numpy(down)) / (2 * eps)


def _vjp(f, h, u):
    """J^T u by reverse mode: backward of f(h) with gradient u, read at the leaf h."""
    h = ml.Tensor(h.data, requires_grad=True)  # a fresh leaf (B, T, C)
    with enable_grad():
        f(h).backward(_like(h, u).data)
    return _numpy(h.grad)
# twin: end


def spectral_radius(model):
    """rho(A_bar) = max |eigenvalue| of the injection's linear map on h (Parcae).

    A_bar given as a vector (C,) is diagonal, so rho = max_c |A_bar_c|; as a matrix
    (C, C), rho = max |eig(A_bar)|. A variant with no ``trunk.injection.A_bar`` is an
    error (loop_table writes NaN for it).
    """
    a_bar = _a_bar(model)
    if a_bar is None:
        raise ValueError(f"spectral_radius: variant={model.config.variant!r} has no linear "
                         "injection h -> A_bar h (trunk.injection.A_bar); it is Parcae's diagnostic.")
    with no_grad():
        a = _numpy(a_bar())  # (C,) or (C, C)
    return float(np.max(np.abs(a))) if a.ndim <= 1 else float(np.max(np.abs(np.linalg.eigvals(a))))


def _a_bar(model):
    """The trunk's A_bar() method, or None."""
    return getattr(getattr(model.transformer.trunk, "injection", None), "A_bar", None)


def gradient_shrink_per_loop(grad_state):
    """The factor by which the gradient shrinks per loop on its way back from the loss.

    grad_state (n,) is grad_norms' ``state``: ||dL/dh_{t+1}|| for loops t = 0 .. n-1. A
    straight line is fitted by least squares to log grad_state[t] against t, and
    exp(slope) returned: the geometric-mean ratio grad_state[t + 1] / grad_state[t].
    Above 1: early loops receive less gradient than late ones (r^(n-1) less at loop 0);
    below 1: more. Entries that are 0, negative, NaN or infinite are left out of the fit:
    a zero there is a gradient too small for float32, flushed to zero (chapter 7), not a
    measured zero. At least two usable entries are needed.
    """
    g = np.asarray(grad_state, dtype=np.float64).reshape(-1)
    t = np.arange(g.size, dtype=np.float64)
    keep = np.isfinite(g) & (g > 0)
    if keep.sum() < 2:
        raise ValueError(f"gradient_shrink_per_loop: {int(keep.sum())} positive finite gradient norm(s) "
                         f"in {g.size} loops; a fit needs at least two.")
    slope = np.polyfit(t[keep], np.log(g[keep]), 1)[0]
    return float(np.exp(slope))


def subnormal_fraction(a, dtype="float32"):
    """The fraction of the entries of ``a`` that are subnormal numbers of ``dtype``.

    A subnormal (denormal) number is nonzero but smaller in magnitude than the dtype's
    smallest normal number (np.finfo(dtype).smallest_normal, ~1.2e-38 in float32):
    representable only with fewer significant bits, and on x86 CPUs matrix products on
    them run ~100-1000x slower. ``a`` (any shape, any float dtype) is judged by its
    values as ``dtype`` would hold them; an empty array has fraction 0.
    """
    a = np.asarray(a, dtype=np.float64)
    if a.size == 0:
        return 0.0
    tiny = float(np.finfo(np.dtype(dtype)).smallest_normal)
    smallest = float(np.finfo(np.dtype(dtype)).smallest_subnormal)
    m = np.abs(a)
    return float(np.mean((m >= smallest / 2) & (m < tiny)))  # below smallest / 2 rounds to 0


def loop_table(model, idx, targets, n_loops=None, h0=None, jacobian=True, iters=100, tol=1e-6,
               seed=0):
    """Every diagnostic of the loop in one dict of NumPy arrays, ready to plot:

        loop (n,)                         0 .. n-1
        rms, rel_update (n,); rms_layer (n, L)                    hidden_norms
        lens_loss, lens_kl (n,)                                   logit_lens
        grad_state (n,); grad_layer (n, L); grad_block (n_layer,); grad_total ()   grad_norms
        jac_sigma, jac_iters (n,)          jacobian_spectral_norm per loop (NaN / 0 where a
                                           loop has no h_t, or jacobian=False)
        rho ()                             spectral_radius (NaN without an A_bar)

    ``plt.plot(tab["loop"], tab["rms"])``. Every measurement runs from one h_0 (Parcae:
    drawn once, then passed to each through enter's h0=), and the model is left as it was.
    """
    idx, targets = _batch(model, idx, targets)
    with _kept(model):
        h0 = _initial_state(model, idx, h0)  # one h_0 for every measurement
        norms = hidden_norms(model, idx, n_loops, h0)
        lens = logit_lens(model, idx, targets, n_loops, h0)
        grads = grad_norms(model, idx, targets, n_loops, h0)
        n = len(norms["rms"])
        sigma, steps = np.full(n, np.nan), np.zeros(n, dtype=np.int64)
        if jacobian:
            for t, r in _loop_jacobians(model, idx, None, n_loops, h0, iters, tol, seed).items():
                sigma[t], steps[t] = r["sigma"], r["iters"]
        rho = spectral_radius(model) if _a_bar(model) is not None else np.nan
    return {"loop": np.arange(n), "rms": norms["rms"], "rel_update": norms["rel_update"],
            "rms_layer": norms["rms_layer"], "lens_loss": lens["loss"], "lens_kl": lens["kl"],
            "grad_state": grads["state"], "grad_layer": grads["layer"], "grad_block": grads["block"],
            "grad_total": grads["total"], "jac_sigma": sigma, "jac_iters": steps,
            "rho": np.array(rho)}


__all__ = ["hidden_norms", "logit_lens", "grad_norms", "grad_by_loop", "jacobian_spectral_norm", "power_iteration",
           "spectral_radius", "loop_table", "gradient_shrink_per_loop", "subnormal_fraction"]
