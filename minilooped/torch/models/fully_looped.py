"""Fully Looped Transformer (Fu et al., arXiv 2605.18797; chapter 7).

PyTorch mirror of the NumPy core's minilooped/models/fully_looped.py, line by line alike.

All L blocks are looped K = n_loops times; n(.) is parameter-free RMSNorm and E the
token + position embeddings. As in the authors' code (github FuRuF-11/FullyLoopedTransformer,
nanochat/gpt.py):

    loop 1:     x = n(E);  for each layer l: x += Attn_l(x); x += MLP_l(x);  h^1 = n(x)
    loop k > 1: the residual stream RESTARTS at x = n(E), and at EVERY layer the
                attention's queries come from the previous loop's output:
                x += Attn_l(Q = W_q h^{k-1}, K = W_k x, V = W_v x);  x += MLP_l(x);  h^k = n(x)
    logits from h^K.

config.injection picks the mode; the value -> the mode's name in their code (model_type):

    "attention"        FLT      the above
    "none"             LT       x = h^{k-1}                 (plain re-feed, no restart)
    "additive"         LT_i     x = n(E + h^{k-1})          (additive input injection)
    "attention_first"  LT_ia    x = n(E), queries from h^{k-1} at layer 0 only
    "residual"         FLT_res  x = n(E), and before every layer x = n(x + h^{k-1})
                                (their Block_res: the restart without attention injection)

Loop 1 is the same in every mode (no h^0). The loss is taken on the readouts h^k of the
last loop (loss_loops="last", their default "END"), of the last third of the loops
(their "FEW": loops range(2K // 3, K), i.e. the last ceil(K / 3)), or of all loops (their
"STEP"), and averaged. Their LT_i and LT_ia always put the loss on the last loop only;
config.py refuses another loss_loops for them.

The course keeps GPT-2's parts, unlike the authors (RoPE, QK-norm, ReLU^2, no biases):
each block keeps its LayerNorms with parameters, GELU, biases, and the model its learned
position embeddings; only the loop boundaries use the parameter-free RMSNorm n(.).
"Attn(n x)" becomes the block's own Attn(ln_1 x), and the injected queries are
W_q ln_1(h^{k-1}) with the same layer's ln_1 (course's choice; attention.py, block.py).
Their logit soft-cap 15 tanh(z / 15) is left out: GPT-2 has none.
"""
import torch.nn.functional as F

from .trunk import Trunk


def norm(x):
    """n(x): parameter-free RMSNorm, x / sqrt(mean(x^2) + eps), eps = the dtype's epsilon."""
    return F.rms_norm(x, (x.size(-1),))


class FullyLooped(Trunk):
    def enter(self, x, blocks):
        return None, x  # no h^0 yet; the context is E, token + position embeddings (B, T, C)

    def step(self, h, e, blocks, t):
        """Loop t: h^{t} (None before the first loop) -> h^{t+1} = n(x)."""
        injection = "attention" if h is None else self.config.injection  # loop 1: every mode alike
        if injection == "none":
            x = h  # LT: x = h^{k-1}
        elif injection == "additive":
            x = norm(e + h)  # LT_i: x = n(E + h^{k-1})
        else:
            x = norm(e)  # FLT, LT_ia, FLT_res: the stream restarts, x = n(E)
        for l, block in enumerate(blocks):
            if injection == "residual":
                x = norm(x + h)  # FLT_res: x = n(x + h^{k-1}) before every layer
            # queries from h^{k-1}: FLT at every layer, LT_ia at layer 0 only (None in loop 1)
            attends = injection == "attention" or (injection == "attention_first" and l == 0)
            x = block(x, h if attends else None)  # (B, T, C)
        self.record(x)
        return norm(x)  # h^k = n(x)

    def forward(self, x, blocks, n_loops=None):
        n = self.loop_count(n_loops)
        h, e = self.enter(x, blocks)
        readouts = []
        for t in range(n):
            h = self.step(h, e, blocks, t)  # (B, T, C)
            readouts.append(h)  # the readout is the normalised state itself
        keep = {"last": 1, "last_third": n - 2 * n // 3, "all": n}[self.config.loss_loops]
        return readouts[-keep:]  # loops range(n - keep, n)
