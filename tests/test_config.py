"""GPTConfig: every validation rule shows its message; presets have the papers' sizes."""
import re

import pytest
import torch

from minilooped.models import GPT, GPTConfig, PRESETS
from minilooped.torch.models import GPT as TorchGPT

TINY = dict(vocab_size=64, n_embd=32, n_head=4, block_size=16, n_layer=3)


def raises(match, **fields):
    with pytest.raises(ValueError, match=match) as info:
        GPTConfig(**{**TINY, **fields})
    return str(info.value)


@pytest.mark.parametrize("field", ["block_size", "vocab_size", "n_layer", "n_head", "n_embd",
                                   "n_loops", "backprop_loops"])
@pytest.mark.parametrize("bad", [0, -3, 2.5, True])
def test_sizes_are_positive_integers(field, bad):
    msg = raises(rf"GPTConfig\.{field}=.* must be a positive integer", **{field: bad})
    assert repr(bad) in msg


@pytest.mark.parametrize("field", ["n_prelude", "n_coda", "lora_rank"])
def test_counts_are_non_negative(field):
    raises(rf"GPTConfig\.{field}=-1 must be an integer >= 0", **{field: -1})


def test_n_embd_divisible_by_n_head():
    msg = raises(r"n_embd=30 is not divisible by n_head=4", n_embd=30)
    assert "multiple of n_head" in msg and "n_embd=32" in msg


@pytest.mark.parametrize("bad", [-0.1, 1.0, "0.1"])
def test_dropout_is_a_probability(bad):
    raises(r"GPTConfig\.dropout=.* must be a probability in \[0, 1\)", dropout=bad)


def test_bias_is_bool():
    raises(r"GPTConfig\.bias=1 must be True or False", bias=1)
    raises(r"GPTConfig\.relax_vectors='yes' must be True or False", relax_vectors="yes")


@pytest.mark.parametrize("field,bad", [("variant", "looped"), ("injection", "concat"),
                                       ("loss_loops", "first"), ("score_f", "mlp"), ("h0", "ones"),
                                       ("sharing", "random"), ("init", "upper"),
                                       ("parcae_injection", "concat"), ("loop_sampling", "token")])
def test_choices(field, bad):
    msg = raises(rf"GPTConfig\.{field}='{bad}' is not one of", **{field: bad})
    assert "'" in msg.split("is not one of")[1]  # lists the valid choices


@pytest.mark.parametrize("injection,mode", [("additive", "LT_i"), ("attention_first", "LT_ia")])
@pytest.mark.parametrize("loss_loops", ["all", "last_third"])
def test_last_loop_only_modes(injection, mode, loss_loops):
    """The authors' LT_i and LT_ia put the loss on the last loop only."""
    msg = raises(rf"loss_loops='{loss_loops}' with injection='{injection}' \({mode}\).*last loop only",
                 variant="fully_looped", injection=injection, loss_loops=loss_loops)
    assert "loss_loops='last'" in msg
    GPTConfig(**TINY, variant="fully_looped", injection=injection)  # 'last' is fine
    for ok in ("attention", "none", "residual"):
        GPTConfig(**TINY, variant="fully_looped", injection=ok, loss_loops=loss_loops)


def test_parcae_defaults_follow_the_authors():
    c = GPTConfig(**TINY, variant="parcae", n_prelude=1, n_coda=1)
    assert (c.parcae_injection, c.loop_sampling) == ("diagonal", "sequence")


@pytest.mark.parametrize("bad", [0.0, -0.5, 1.5, True])
def test_dt_in_unit_interval(bad):
    msg = raises(r"GPTConfig\.dt=.* must be in \(0, 1\]", variant="contractive", dt=bad)
    assert "dt=None" in msg


def test_dt_default_is_one_over_loops():
    c = GPTConfig(**TINY, variant="contractive", n_loops=4)
    assert c.step_size == 0.25
    assert GPTConfig(**TINY, variant="contractive", n_loops=4, dt=1.0).step_size == 1.0


def test_gpt2_does_not_loop():
    raises(r"n_loops=3 with variant='gpt2'.*variant='loop_residual'", n_loops=3)
    raises(r"n_prelude=1, n_coda=0 with variant='gpt2'", n_prelude=1)


def test_loop_group_inside_layer_range():
    msg = raises(r"loop group h\[2:1\] is empty or outside the layer range", variant="loop_residual",
                 n_prelude=2, n_coda=2)
    assert "n_prelude + n_coda < n_layer" in msg
    raises(r"loop group h\[3:3\]", variant="parcae", n_prelude=3)


@pytest.mark.parametrize("variant", ["fully_looped", "recursive"])
def test_whole_stack_variants_have_no_prelude(variant):
    raises(rf"variant='{variant}': this variant loops all n_layer blocks", variant=variant, n_coda=1)


def test_lora_rank_bounds():
    raises(r"lora_rank=33 exceeds n_embd=32.*lora_rank <= 32", variant="recursive", lora_rank=33)
    raises(r"lora_rank=2 with variant='loop_residual'.*from_gpt2", variant="loop_residual", lora_rank=2)


def test_valid_configs_and_derived_fields():
    c = GPTConfig(**{**TINY, "n_layer": 4}, variant="parcae", n_prelude=1, n_coda=1, n_loops=5)
    assert (c.loop_start, c.loop_end, c.n_recurrent, c.head_size) == (1, 3, 2, 8)
    assert c.effective_depth == 1 + 2 * 5 + 1
    assert GPTConfig(**TINY, variant="fully_looped", n_loops=6).effective_depth == 3
    assert GPTConfig.from_dict(c.to_dict()) == c
    assert c.replace(n_loops=2).n_loops == 2


def test_presets_and_overrides():
    c = GPTConfig.from_preset("shakespeare-gpt2", vocab_size=65)
    assert (c.vocab_size, c.n_embd, c.n_head, c.n_layer) == (65, 128, 4, 4)
    with pytest.raises(ValueError, match=r"unknown preset 'gpt5'.*gpt2-124m"):
        GPTConfig.from_preset("gpt5")
    with pytest.raises(ValueError, match=r"unknown field\(s\) \['n_layers'\]"):
        GPTConfig.from_preset("gpt2-124m", n_layers=3)
    with pytest.raises(ValueError, match=r"GPTConfig\.n_loops=0"):
        GPTConfig.from_preset("loop-residual-81m", n_loops=0)
    for name in PRESETS:
        assert GPTConfig.from_preset(name).name == name


@pytest.mark.parametrize("name,millions", [("gpt2-124m", "123.65"), ("loop-residual-81m", "81.13"),
                                           ("gpt2-45m-lite", "45.69"), ("loop-residual-45m", "45.69")])
def test_paper_preset_num_params(name, millions):
    """nanoGPT's count (no position embeddings, tied head once) of the Loop-Residual table."""
    with torch.device("meta"):  # shapes only: nothing is allocated
        model = TorchGPT(GPTConfig.from_preset(name))
    assert f"{model.num_params() / 1e6:.2f}" == millions


def test_authors_presets():
    """Their shapes; parcae-small-140m counts ~69M here: their 140M include three value
    embeddings (32768 x 768 each) that the course leaves out."""
    flt = GPTConfig.from_preset("flt-l6-d384")
    assert (flt.variant, flt.n_layer, flt.n_embd, flt.head_size, flt.n_loops, flt.injection, flt.loss_loops) == \
        ("fully_looped", 6, 384, 128, 12, "attention", "last")
    p = GPTConfig.from_preset("parcae-small-140m")
    assert (p.n_prelude, p.n_recurrent, p.n_coda, p.n_embd, p.n_loops, p.backprop_loops) == (2, 2, 2, 768, 8, 4)
    assert (p.parcae_injection, p.loop_sampling, p.block_size, p.vocab_size) == ("diagonal", "sequence", 2048, 32768)
    with torch.device("meta"):
        n = TorchGPT(p).num_params()
    assert abs(n + 3 * 32768 * 768 - 140e6) < 5e6  # with their value embeddings: ~144M


def test_preset_num_params_core_matches_mirror():
    """The core counts the same (built for real, so with a small vocabulary)."""
    for name in ("loop-residual-45m", "parcae-47m"):
        config = GPTConfig.from_preset(name, vocab_size=256, block_size=64)
        with torch.device("meta"):
            mirror = TorchGPT(config)
        assert GPT(config).num_params() == mirror.num_params()
    assert mirror.num_params() == 7_087_872 + 256 * 768 + 2 * 768 + (2 * 768 * 768 + 4 * 768)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_builds(name):
    with torch.device("meta"):
        model = TorchGPT(GPTConfig.from_preset(name))
    m = re.search(r"(\d+)m", name)
    # the name says the size, to within the rounding of the papers' names; the capstone's cpu-*
    # replicas name the paper model they scale down, not their own size
    if m and name != "parcae-small-140m" and not name.startswith("cpu-"):
        assert abs(model.num_params() / 1e6 - int(m.group(1))) < 1.5
