"""Early-exit training: a loss at every loop's readout, and distillation from a teacher
(Relaxed Recursive Transformers, Bae et al., arXiv 2410.20672; chapter 9).

NumPy core; the PyTorch mirror minilooped/torch/models/early_exit.py reads line by line alike.

A looped model can stop after any loop t and read out, logits_t = lm_head(ln_f(readout(h_t))),
but a model trained only on its last loop's logits has no reason to make the earlier
ones good. Early-exit training puts a loss on every loop's readout:

    L_exit = sum_t w_t CE(logits_t, y),                  t = 1 .. R, sum_t w_t = 1
    L_KD   = sum_t w_t tau^2 KL(p_teacher^tau || p_t^tau)  p^tau = softmax(logits / tau)
    L      = (1 - alpha) L_exit + alpha L_KD             alpha = distill_weight

with the teacher the source model the student was made from (GPT-2, before its layers
were tied), run without gradients; tau^2 keeps the gradient's scale independent of tau
(Hinton et al. 2015, arXiv 1503.02531). Without exit weights (kind "") only the last
loop is trained: w_R = 1.

Weights w_t (``exit_weights``):
    "uniform"     w_t = 1 / R                every exit counts the same
    "aggressive"  w_t = t / sum_s s          the later the loop, the more it counts;
                                             the last loop weighs most
The paper trains its early exits with intermediate-loop losses under what it calls an
aggressive weighting, together with distillation from the source model; its exact
coefficients could not be checked here (the authors released no code). Weights growing
linearly with the loop index are the course's choice; the option keeps the paper's word.

``loop_logits`` is the loop's anatomy (trunk.py) with a readout after every step: the
same computation as ``model(idx, n_loops=t)`` for every t at once, in one pass.
"""
import minilooped.functional as F


def embed(model, idx):
    """x = drop(wte[idx] + wpe[:T]): what the trunk receives (B, T, C), as GPT.forward."""
    B, T = idx.shape
    if T > model.config.block_size:
        raise ValueError(f"idx has T={T} tokens but block_size={model.config.block_size}; "
                         "crop it to the last block_size tokens.")
    tok_emb = model.transformer.wte(idx)  # (B, T, C)
    pos_emb = model.transformer.wpe.weight[:T]  # (T, C)
    return model.transformer.drop(tok_emb + pos_emb)  # (B, T, C)


def head(model, x):
    """logits = lm_head(ln_f(x)): (B, T, C) -> (B, T, vocab)."""
    return model.lm_head(model.transformer.ln_f(x))


def check_looped(model, what):
    """Refuse GPT-2: it has no loop to exit from."""
    if model.config.variant == "gpt2":
        raise ValueError(f"{what} needs a looped model; variant='gpt2' applies each block once.")


def loop_logits(model, idx, n_loops=None):
    """[logits after loop 1, ..., after loop n]: each (B, T, vocab), with gradients."""
    check_looped(model, "loop_logits")
    trunk, blocks = model.transformer.trunk, model.transformer.h
    n = trunk.loop_count(n_loops)
    h, ctx = trunk.enter(embed(model, idx), blocks)
    logits = []
    for t in range(n):
        h = trunk.step(h, ctx, blocks, t)  # h_{t+1}: (B, T, C)
        logits.append(head(model, trunk.readout(h, ctx, blocks)))  # (B, T, vocab)
    return logits


def exit_weights(kind, n):
    """The weights w_1 .. w_n of the loops' losses (they sum to 1); kind "" trains the last loop only."""
    if kind == "":
        return [0.0] * (n - 1) + [1.0]
    if kind == "uniform":
        return [1.0 / n] * n
    if kind == "aggressive":
        return [t / (n * (n + 1) / 2) for t in range(1, n + 1)]  # w_t = t / sum_s s
    raise ValueError(f"exit_loss={kind!r}: use '' (last loop only), 'uniform' or 'aggressive'.")


def distillation_kl(student_logits, teacher_logits, temperature):
    """tau^2 KL(p_teacher^tau || p_student^tau), averaged over positions: (B, T, V) -> scalar."""
    log_p = F.log_softmax(teacher_logits / temperature, dim=-1)  # teacher (B, T, V)
    log_q = F.log_softmax(student_logits / temperature, dim=-1)  # student (B, T, V)
    kl = (log_p.exp() * (log_p - log_q)).sum(dim=-1)  # sum_v p (log p - log q): (B, T)
    return kl.mean() * temperature ** 2


def early_exit_loss(model, idx, targets, kind="", teacher_logits=None, distill_weight=0.5, temperature=1.0,
                    n_loops=None):
    """L = (1 - alpha) sum_t w_t CE_t + alpha sum_t w_t tau^2 KL_t; alpha = 0 without a teacher."""
    logits = loop_logits(model, idx, n_loops)
    weights = exit_weights(kind, len(logits))
    alpha = 0.0 if teacher_logits is None else distill_weight
    B, T = idx.shape
    loss = 0.0
    for w, z in zip(weights, logits):
        if w == 0:
            continue  # a loop without weight adds nothing (its graph is still built)
        ce = F.cross_entropy(z.reshape(B * T, -1), targets.reshape(B * T), ignore_index=-1)
        term = ce if alpha == 0 else (1 - alpha) * ce + alpha * distillation_kl(z, teacher_logits, temperature)
        loss = term * w + loss
    return loss
