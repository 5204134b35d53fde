"""GPTConfig: one plain dataclass for GPT-2 and every looped variant of the course.

Pure Python (no NumPy, no torch): the NumPy core (minilooped.models) and the PyTorch
mirror (minilooped.torch.models) import this same file, so a config means the same
model in both.

Vocabulary of the looped models, used by every variant file:

- ``n_layer`` is the number of *unique* blocks, the ones that hold parameters
  (``transformer.h.0 .. h.{n_layer-1}``). It is not the depth the input goes through.
- The blocks split into a prelude ``h[:n_prelude]`` (applied once), a looped group
  ``h[n_prelude : n_layer - n_coda]`` (applied ``n_loops`` times) and a coda
  ``h[n_layer - n_coda:]`` (applied once). The names come from Huginn (arXiv 2502.05171)
  and Parcae (arXiv 2604.12946, chapter 8); Loop-Residual (arXiv 2409.14199, chapter 5)
  calls them the unlooped blocks before and after the loop.
- ``effective_depth`` is the number of block applications in one forward pass at the
  training loop count; it is what nanoGPT's ``n_layer`` means in the scaled init of
  the residual projections (see ``GPT._init_weights``).

``GPTConfig.from_preset(name, **overrides)`` builds the papers' models and the course's
small CPU models; ``PRESETS`` lists them.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

VARIANTS = ("gpt2", "loop_residual", "fully_looped", "contractive", "parcae", "recursive")
# fully looped: value -> the mode's name in the authors' code (model_type in their nanochat/gpt.py)
INJECTIONS = ("attention", "none", "additive", "attention_first", "residual")
FLT_MODES = {"attention": "FLT", "none": "LT", "additive": "LT_i", "attention_first": "LT_ia",
             "residual": "FLT_res"}
LAST_LOOP_ONLY = ("additive", "attention_first")  # their LT_i and LT_ia: loss on the last loop only
LOSS_LOOPS = ("last", "last_third", "all")
PARCAE_INJECTIONS = ("diagonal", "add", "linear")
LOOP_SAMPLINGS = ("sequence", "batch")
SCORE_F = ("block", "branch")
H0_INITS = ("zeros", "normal")
SHARINGS = ("cycle", "sequence")
RECURSIVE_INITS = ("stepwise", "average", "lower")


@dataclass
class GPTConfig:
    """The hyperparameters of one model. Every field is checked in ``__post_init__``.

    GPT-2 (nanoGPT's names):
        block_size, vocab_size, n_layer, n_head, n_embd, dropout, bias.
    Looping (every looped variant):
        variant: one of VARIANTS.
        n_loops: how many times the looped group runs in training; any count >= 1 can be
            passed to ``model(idx, n_loops=...)`` at inference. For parcae it is the mean
            of the sampled training loop count and the inference default (the authors'
            ``mean_recurrence``).
        n_prelude, n_coda: unlooped blocks before and after the looped group.
    Fully looped (Fu et al., arXiv 2605.18797; chapter 7), one value per mode of the
    authors' code (their ``model_type``, github FuRuF-11/FullyLoopedTransformer):
        injection: "attention" = FLT (the paper: the stream restarts at n(E) every loop and
            every layer's queries come from the previous loop's output), "none" = LT
            (plain re-feed), "additive" = LT_i (x = n(E + h)), "attention_first" = LT_ia
            (restart, query injection at layer 0 only), "residual" = FLT_res (restart, and
            x = n(x + h) before every layer from loop 2 on, no attention injection).
        loss_loops: loss on the "last" loop, the "last_third" of loops (their "FEW":
            loops range(2K // 3, K)), or "all" (their "STEP"), averaged. As in their code,
            LT_i and LT_ia put the loss on the last loop only: with those two injections
            any other loss_loops is an error (their code ignores its loss_type there).
    Contractive (SCORE, Godin):
        dt: Euler step in (0, 1]; None means 1 / n_loops.
        score_f: F is the whole "block" or only its residual "branch".
    Parcae (Prairie et al., arXiv 2604.12946; chapter 8):
        backprop_loops: gradients flow through the last min(T, backprop_loops) loops.
        h0: the initial recurrent state, "zeros" or "normal" (truncated normal).
        parcae_injection: how the input e enters the loop, u = injection(h, e), their
            ``injection_type``: "diagonal" (Parcae: A_bar h + B_bar e with a diagonal A_bar
            in (0, 1)), "add" (h + e: A_bar = I, plain additive input injection) or
            "linear" (an adapter on the concatenation [h; e], as Huginn's code does,
            github seal-rg/recurrent-pretraining: A_bar = the adapter's h-block).
        loop_sampling: the training loop count T ~ max(1, Poisson(n_loops)) is drawn per
            "sequence" (one T for each row of the batch: the default, because every
            Parcae config the authors ship sets recurrent_iteration_method="per-sequence")
            or once per "batch" (their per-batch mode, which keeps the batch one loop
            count). Parcae only; other variants ignore it.
    Recursive (Relaxed Recursive Transformers, Bae et al.):
        sharing: "cycle" or "sequence"; init: "stepwise", "average" or "lower" (how
        ``recursive.from_gpt2`` built the shared blocks, kept as a record);
        lora_rank: rank of the per-depth LoRA relaxation, 0 = strictly shared;
        relax_vectors: with lora_rank > 0, also give every depth its own additive delta
            on LayerNorm weights and on biases (vectors, so cheap), which makes the
            full-rank model reproduce the original exactly.
    """

    # GPT-2 (defaults: GPT-2 124M)
    block_size: int = 1024
    vocab_size: int = 50257
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    dropout: float = 0.0
    bias: bool = True
    # looping
    variant: str = "gpt2"
    n_loops: int = 1
    n_prelude: int = 0
    n_coda: int = 0
    # fully looped
    injection: str = "attention"
    loss_loops: str = "last"
    # contractive
    dt: float | None = None
    score_f: str = "block"
    # parcae
    backprop_loops: int = 4
    h0: str = "normal"
    parcae_injection: str = "diagonal"
    loop_sampling: str = "sequence"
    # recursive
    sharing: str = "cycle"
    init: str = "stepwise"
    lora_rank: int = 0
    relax_vectors: bool = True
    # free-form note carried into checkpoints (e.g. which preset this came from)
    name: str = field(default="", compare=False)

    def __post_init__(self):
        for f in ("block_size", "vocab_size", "n_layer", "n_head", "n_embd", "n_loops",
                  "backprop_loops"):
            _check_int(f, getattr(self, f), minimum=1)
        for f in ("n_prelude", "n_coda", "lora_rank"):
            _check_int(f, getattr(self, f), minimum=0)
        if self.n_embd % self.n_head != 0:
            raise ValueError(
                f"GPTConfig.n_embd={self.n_embd} is not divisible by n_head={self.n_head}: "
                "every head gets n_embd // n_head channels. Choose n_embd a multiple of "
                f"n_head (e.g. n_embd={self.n_head * max(1, round(self.n_embd / self.n_head))})."
            )
        if not isinstance(self.dropout, (int, float)) or isinstance(self.dropout, bool) \
                or not 0.0 <= self.dropout < 1.0:
            raise ValueError(
                f"GPTConfig.dropout={self.dropout!r} must be a probability in [0, 1); "
                "use 0.0 to switch dropout off."
            )
        for f in ("bias", "relax_vectors"):
            if not isinstance(getattr(self, f), bool):
                raise ValueError(f"GPTConfig.{f}={getattr(self, f)!r} must be True or False.")
        _check_choice("variant", self.variant, VARIANTS)
        _check_choice("injection", self.injection, INJECTIONS)
        _check_choice("loss_loops", self.loss_loops, LOSS_LOOPS)
        _check_choice("score_f", self.score_f, SCORE_F)
        _check_choice("h0", self.h0, H0_INITS)
        _check_choice("parcae_injection", self.parcae_injection, PARCAE_INJECTIONS)
        _check_choice("loop_sampling", self.loop_sampling, LOOP_SAMPLINGS)
        _check_choice("sharing", self.sharing, SHARINGS)
        _check_choice("init", self.init, RECURSIVE_INITS)
        if self.dt is not None:
            if not isinstance(self.dt, (int, float)) or isinstance(self.dt, bool) \
                    or not 0.0 < self.dt <= 1.0:
                raise ValueError(
                    f"GPTConfig.dt={self.dt!r} must be in (0, 1]: the contractive update "
                    "h <- (1 - dt) h + dt F(h) mixes the old state and F(h). Use dt=None "
                    "for the default 1 / n_loops."
                )
        if self.variant == "gpt2" and self.n_loops != 1:
            raise ValueError(
                f"GPTConfig.n_loops={self.n_loops} with variant='gpt2': plain GPT-2 applies "
                "each block once. Use variant='loop_residual' to loop blocks, or n_loops=1."
            )
        if self.variant == "gpt2" and (self.n_prelude or self.n_coda):
            raise ValueError(
                f"GPTConfig.n_prelude={self.n_prelude}, n_coda={self.n_coda} with "
                "variant='gpt2': there is no looped group to put blocks around. Use 0 and 0, "
                "or a looped variant."
            )
        if self.variant in ("fully_looped", "recursive") and (self.n_prelude or self.n_coda):
            raise ValueError(
                f"GPTConfig.n_prelude={self.n_prelude}, n_coda={self.n_coda} with "
                f"variant={self.variant!r}: this variant loops all n_layer blocks. "
                "Set n_prelude=0 and n_coda=0."
            )
        if self.n_prelude + self.n_coda >= self.n_layer:
            raise ValueError(
                f"GPTConfig: the loop group h[{self.n_prelude}:{self.n_layer - self.n_coda}] "
                f"is empty or outside the layer range (n_prelude={self.n_prelude} + "
                f"n_coda={self.n_coda} >= n_layer={self.n_layer}). Keep "
                "n_prelude + n_coda < n_layer so at least one block is looped."
            )
        if self.injection in LAST_LOOP_ONLY and self.loss_loops != "last":
            raise ValueError(
                f"GPTConfig.loss_loops={self.loss_loops!r} with injection={self.injection!r} "
                f"({FLT_MODES[self.injection]}): the authors' code puts the loss of "
                f"{FLT_MODES[self.injection]} on the last loop only. Use loss_loops='last', or "
                "an injection that supports the others ('attention', 'none', 'residual')."
            )
        if self.lora_rank > self.n_embd:
            raise ValueError(
                f"GPTConfig.lora_rank={self.lora_rank} exceeds n_embd={self.n_embd}, the "
                "largest useful rank (every block weight has min(out, in) = n_embd). "
                f"Use lora_rank <= {self.n_embd} (n_embd is full rank)."
            )
        if self.lora_rank > 0 and self.variant != "recursive":
            raise ValueError(
                f"GPTConfig.lora_rank={self.lora_rank} with variant={self.variant!r}: the "
                "LoRA relaxation belongs to variant='recursive'. Set lora_rank=0, or build a "
                "recursive model with minilooped.models.recursive.from_gpt2."
            )

    # ------------------------------------------------------------------ derived
    @property
    def head_size(self) -> int:
        return self.n_embd // self.n_head

    @property
    def loop_start(self) -> int:
        """Index of the first looped block."""
        return self.n_prelude

    @property
    def loop_end(self) -> int:
        """One past the last looped block."""
        return self.n_layer - self.n_coda

    @property
    def n_recurrent(self) -> int:
        """Blocks in the looped group (Parcae's recurrent block R)."""
        return self.loop_end - self.loop_start

    @property
    def step_size(self) -> float:
        """The contractive variant's dt: ``dt`` or 1 / n_loops (the training loop count).

        Fixed by the config, so running more loops at inference integrates further in
        "time" instead of taking smaller steps."""
        return self.dt if self.dt is not None else 1.0 / self.n_loops

    @property
    def effective_depth(self) -> int:
        """Block applications per forward pass at the training loop count.

        The fully looped model restarts its residual stream every loop (Fu et al.), so
        only n_layer additions ever pile up on one stream: its effective depth for the
        init is n_layer. For the others the looped group counts n_loops times."""
        if self.variant in ("gpt2", "fully_looped"):
            return self.n_layer
        return self.n_prelude + self.n_recurrent * self.n_loops + self.n_coda

    # ------------------------------------------------------------------ presets, I/O
    @classmethod
    def from_preset(cls, name: str, **overrides) -> "GPTConfig":
        """A named config (see ``PRESETS``), with any field overridden.

        >>> GPTConfig.from_preset("shakespeare-gpt2", vocab_size=65).vocab_size
        65
        """
        if name not in PRESETS:
            raise ValueError(
                f"unknown preset {name!r}. Known presets: {', '.join(sorted(PRESETS))}. "
                "Or build GPTConfig(...) directly."
            )
        unknown = sorted(set(overrides) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(
                f"GPTConfig.from_preset({name!r}) got unknown field(s) {unknown}; "
                f"GPTConfig fields are: {', '.join(f.name for f in dataclasses.fields(cls))}."
            )
        return cls(**{"name": name, **PRESETS[name], **overrides})

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "GPTConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"GPTConfig.from_dict: unknown field(s) {unknown}.")
        return cls(**d)

    def replace(self, **changes) -> "GPTConfig":
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)


def _check_int(name, value, minimum):
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ValueError(f"GPTConfig.{name}={value!r} must be {what}.")


def _check_choice(name, value, choices):
    if value not in choices:
        raise ValueError(
            f"GPTConfig.{name}={value!r} is not one of {', '.join(map(repr, choices))}."
        )


# --------------------------------------------------------------------------- presets
# GPT-2 small width (Radford et al. 2019; the Loop-Residual paper's base, arXiv 2409.14199,
# chapter 5): vocab 50257, context 1024, 768 wide, 12 heads.
_GPT2_SMALL = dict(block_size=1024, vocab_size=50257, n_embd=768, n_head=12, bias=True)
# The course's CPU models: nanoGPT's CPU config (4 layers, 128 wide, 4 heads, T = 64).
# vocab_size is the GPT-2 BPE's by default; pass the tokenizer's size as an override.
_CPU = dict(block_size=64, vocab_size=50257, n_embd=128, n_head=4, bias=True)

PRESETS: dict[str, dict] = {
    # Loop-Residual paper (Ng & Wang), the four models of its table; nanoGPT counting gives
    # 123.65M, 81.13M, 45.69M, 45.69M.
    "gpt2-124m": dict(_GPT2_SMALL, n_layer=12),
    "loop-residual-81m": dict(_GPT2_SMALL, variant="loop_residual", n_layer=6, n_loops=6),
    "gpt2-45m-lite": dict(_GPT2_SMALL, n_layer=1),
    "loop-residual-45m": dict(_GPT2_SMALL, variant="loop_residual", n_layer=1, n_loops=2),
    # Counterparts of the other looped variants at the same scale (course's choices).
    # Fully looped: the paper's depth (L = 6) looped like loop-residual-81m; the authors'
    # own shape (K = 12, d = 384) is flt-l6-d384 below.
    "fully-looped-81m": dict(_GPT2_SMALL, variant="fully_looped", n_layer=6, n_loops=6),
    "contractive-45m": dict(_GPT2_SMALL, variant="contractive", n_layer=1, n_loops=4),
    "contractive-81m": dict(_GPT2_SMALL, variant="contractive", n_layer=6, n_loops=6),
    # Parcae: 1 block looped twice (the loop-residual-45m budget), and prelude 1 +
    # recurrent 4 looped 8 times on average (the paper's mean) + coda 1, ~ the 36 block
    # applications of loop-residual-81m. Injection and C add 2 n_embd^2 + 4 n_embd.
    "parcae-47m": dict(_GPT2_SMALL, variant="parcae", n_layer=1, n_loops=2, backprop_loops=2),
    "parcae-82m": dict(_GPT2_SMALL, variant="parcae", n_layer=6, n_prelude=1, n_coda=1,
                       n_loops=8, backprop_loops=4),
    # Small CPU models (the Shakespeare chapters). gpt2 and loop-residual have the same
    # compute (4 block applications); lite and loop-residual the same parameters.
    "shakespeare-gpt2": dict(_CPU, n_layer=4),
    "shakespeare-gpt2-lite": dict(_CPU, n_layer=1),
    "shakespeare-loop-residual": dict(_CPU, variant="loop_residual", n_layer=1, n_loops=4),
    "shakespeare-fully-looped": dict(_CPU, variant="fully_looped", n_layer=2, n_loops=2),
    "shakespeare-contractive": dict(_CPU, variant="contractive", n_layer=1, n_loops=4),
    "shakespeare-parcae": dict(_CPU, variant="parcae", n_layer=3, n_prelude=1, n_coda=1,
                               n_loops=4, backprop_loops=2),
    # The capstone's CPU replica (chapter 11): the Loop-Residual paper's four models at the
    # course's CPU size (128 wide, 4 heads, context 64), each block count divided by 3 and
    # the loop counts kept, so that the ratios the paper compares survive: 12 blocks -> 4;
    # 6 blocks x 6 loops -> 2 x 6 (3x the block applications of the unlooped model, as 36
    # against 12); 1 block -> 1; 1 block x 2 loops -> 1 x 2 (the lite model's parameters,
    # twice its compute). The 45M pair keeps the paper's 1 block, which cannot be divided.
    "cpu-gpt2-124m": dict(_CPU, n_layer=4),
    "cpu-loop-residual-81m": dict(_CPU, variant="loop_residual", n_layer=2, n_loops=6),
    "cpu-gpt2-45m-lite": dict(_CPU, n_layer=1),
    "cpu-loop-residual-45m": dict(_CPU, variant="loop_residual", n_layer=1, n_loops=2),
    # The authors' own shapes, in the course's GPT-2 blocks (LayerNorm, GELU, learned
    # positions) but without biases, as theirs.
    # FLT (github FuRuF-11/FullyLoopedTransformer, run.sh and scripts/base_train.py): L = 6
    # layers, width 64 L = 384, head dim 128 (3 heads), K = 12 loops, loss on the last loop,
    # context 1024, their nanochat tokenizer's 65536 = 2^16 tokens. 10.6M parameters in
    # the six blocks (theirs have no LayerNorm weights, no position embeddings, an untied head).
    "flt-l6-d384": dict(block_size=1024, vocab_size=65536, n_embd=384, n_head=3, bias=False,
                        variant="fully_looped", n_layer=6, n_loops=12),
    # Parcae small (github sandyresearch/parcae, configs/parcae/parcae-small-140m.py):
    # prelude / recurrent / coda = 2 / 2 / 2 blocks of width 768 with 6 heads, mean 8
    # loops, gradients through the last 4, drawn per sequence, diagonal injection, context
    # 2048, vocabulary 32768. This model counts ~69M parameters: their 140M include three
    # value embeddings (vocab x 768 each, at layers 1, 3, 5), which the course leaves out.
    "parcae-small-140m": dict(block_size=2048, vocab_size=32768, n_embd=768, n_head=6, bias=False,
                              variant="parcae", n_layer=6, n_prelude=2, n_coda=2, n_loops=8,
                              backprop_loops=4, parcae_injection="diagonal",
                              loop_sampling="sequence"),
}

__all__ = ["GPTConfig", "PRESETS", "VARIANTS", "FLT_MODES"]
