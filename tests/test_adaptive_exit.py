"""Adaptive exit (minilooped/models/adaptive.py and its mirror): halting per position.

- a threshold that never triggers gives the plain forward; one that always triggers gives
  the model run for 1 loop (max_prob) or 2 loops (kl, which needs two loops to compare);
- with a threshold that makes positions halt at different loops, the result equals a
  brute-force loop written plainly here, position by position, with NumPy's softmax;
- position 0 sees only itself, so its logits are those of the model cut at its exit loop;
- core and mirror agree (float64), and exit_frontier's fixed points are the model's losses.
"""
import numpy as np
import pytest
import torch

import minilooped as ml
from minilooped.models import GPT, GPTConfig
from minilooped.models.adaptive import adaptive_forward, exit_frontier, last_block
from minilooped.models.early_exit import embed, head
from minilooped.torch.models import GPT as TorchGPT
from minilooped.torch.models import from_gpt2 as torch_from_gpt2
from minilooped.torch.models.adaptive import adaptive_forward as torch_adaptive_forward

torch.set_num_threads(1)

TINY = dict(vocab_size=32, n_embd=16, n_head=2, block_size=8, n_layer=2)
VARIANTS = {
    "loop_residual": dict(variant="loop_residual", n_layer=3, n_prelude=1, n_coda=1, n_loops=4),
    "fully_looped": dict(variant="fully_looped", n_layer=1, n_loops=4),
    "contractive": dict(variant="contractive", n_layer=1, n_loops=4, dt=0.5),
    "parcae": dict(variant="parcae", n_layer=3, n_prelude=1, n_coda=1, n_loops=4, h0="zeros"),
    "recursive": "recursive",
}
EXTRA = {  # for the gathered MLP: a block applied twice in a loop, and a loop of two blocks
    "recursive_sequence": "recursive_sequence",
    "fully_looped_2_blocks": dict(variant="fully_looped", n_layer=2, n_loops=3, injection="none"),
}


def build_pair(name):
    """(mirror, core) float64 models with the same weights, in eval mode."""
    torch.manual_seed(0)
    spec = {**VARIANTS, **EXTRA}[name]
    if spec == "recursive":
        source = TorchGPT(GPTConfig(**{**TINY, "n_layer": 4})).double()
        mirror = torch_from_gpt2(source, 1, lora_rank=2)  # 1 shared block looped 4 times
    elif spec == "recursive_sequence":
        source = TorchGPT(GPTConfig(**{**TINY, "n_layer": 8})).double()
        mirror = torch_from_gpt2(source, 2, sharing="sequence", lora_rank=2)  # loops: h0 h0 | h0 h0 | h1 h1 | ..
    else:
        mirror = TorchGPT(GPTConfig(**{**TINY, **spec})).double()
    with torch.no_grad():  # larger weights than the init, so the loops' predictions differ
        for p in mirror.parameters():
            if p.dim() == 2:
                p.mul_(8.0)
    core = GPT(mirror.config).to("float64")
    core.load_state_dict({k: v.detach().numpy() for k, v in mirror.state_dict().items()})
    return mirror.eval(), core.eval()


def tokens(B=3, T=8, seed=0):
    return np.random.default_rng(seed).integers(0, TINY["vocab_size"], size=(B, T))


def logits_of(model, idx, n):
    with ml.no_grad():
        return model(ml.Tensor(idx), n_loops=n)[0].numpy()


def log_softmax(z):
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def brute_force(model, idx, criterion, threshold, n):
    """Per position, plainly: step the whole sequence, then copy each position's new state
    in only if it has not halted; decide halting per position with NumPy."""
    trunk, blocks = model.transformer.trunk, model.transformer.h
    B, T = idx.shape
    with ml.no_grad():
        h, ctx = trunk.enter(embed(model, ml.Tensor(idx)), blocks)
        state = None
        halted_at = np.zeros((B, T), dtype=int)
        out = np.zeros((B, T, model.config.vocab_size))
        prev = None
        for t in range(n):
            new = trunk.step(h if state is None else ml.Tensor(state), ctx, blocks, t).numpy()
            if state is None:
                state = new.copy()
            for b in range(B):
                for i in range(T):
                    if halted_at[b, i] == 0:
                        state[b, i] = new[b, i]  # a halted position keeps its state
            logits = head(model, trunk.readout(ml.Tensor(state), ctx, blocks)).numpy()
            for b in range(B):
                for i in range(T):
                    if halted_at[b, i]:
                        continue
                    lp = log_softmax(logits[b, i])
                    if criterion == "max_prob":
                        done = np.exp(lp).max() >= threshold
                    else:
                        done = prev is not None and (np.exp(prev[b, i]) * (prev[b, i] - lp)).sum() < threshold
                    if done or t == n - 1:
                        halted_at[b, i] = t + 1
                        out[b, i] = logits[b, i]
            prev = np.stack([[log_softmax(logits[b, i]) for i in range(T)] for b in range(B)])
    return out, halted_at


def mixed_threshold(model, idx, criterion):
    """A threshold at which some positions halt early and some late: the median score."""
    with ml.no_grad():
        trunk, blocks = model.transformer.trunk, model.transformer.h
        h, ctx = trunk.enter(embed(model, ml.Tensor(idx)), blocks)
        scores = []
        prev = None
        for t in range(2):
            h = trunk.step(h, ctx, blocks, t)
            lp = log_softmax(head(model, trunk.readout(h, ctx, blocks)).numpy())
            scores.append(np.exp(lp).max(-1) if criterion == "max_prob" else
                          None if prev is None else (np.exp(prev) * (prev - lp)).sum(-1))
            prev = lp
    return float(np.median(scores[0] if criterion == "max_prob" else scores[1]))


@pytest.mark.parametrize("name", list(VARIANTS))
def test_never_halting_is_the_plain_forward(name):
    _, core = build_pair(name)
    idx = tokens()
    for criterion, threshold in (("kl", 0.0), ("max_prob", 1.5)):  # KL >= 0; p <= 1
        logits, loops = adaptive_forward(core, ml.Tensor(idx), criterion, threshold)
        np.testing.assert_allclose(logits.numpy(), logits_of(core, idx, None), rtol=1e-12, atol=1e-12)
        assert (loops == core.config.n_loops).all()


@pytest.mark.parametrize("name", list(VARIANTS))
def test_always_halting_is_the_shortest_run(name):
    _, core = build_pair(name)
    idx = tokens()
    for criterion, threshold, n in (("max_prob", 0.0, 1), ("kl", np.inf, 2)):
        logits, loops = adaptive_forward(core, ml.Tensor(idx), criterion, threshold)
        np.testing.assert_allclose(logits.numpy(), logits_of(core, idx, n), rtol=1e-12, atol=1e-12)
        assert (loops == n).all()


@pytest.mark.parametrize("criterion", ["kl", "max_prob"])
@pytest.mark.parametrize("name", list(VARIANTS))
def test_mixed_halting_matches_brute_force(name, criterion):
    _, core = build_pair(name)
    idx = tokens()
    threshold = mixed_threshold(core, idx, criterion)
    logits, loops = adaptive_forward(core, ml.Tensor(idx), criterion, threshold)
    expected, expected_loops = brute_force(core, idx, criterion, threshold, core.config.n_loops)
    assert len(np.unique(loops)) >= 2, "the threshold should make positions halt at different loops"
    np.testing.assert_array_equal(loops, expected_loops)
    np.testing.assert_allclose(logits.numpy(), expected, rtol=1e-10, atol=1e-12)
    # position 0 attends only to itself: its logits are those of the model cut at its exit
    for b in range(idx.shape[0]):
        cut = logits_of(core, idx[b:b + 1, :1], int(loops[b, 0]))
        np.testing.assert_allclose(logits.numpy()[b, 0], cut[0, 0], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", list(VARIANTS) + ["recursive_sequence", "fully_looped_2_blocks"])
def test_gathering_the_last_mlp_changes_nothing(name):
    """gather=True computes the loop's last MLP on the active positions only: same numbers."""
    _, core = build_pair(name)
    idx = tokens()
    for criterion in ("kl", "max_prob"):
        threshold = mixed_threshold(core, idx, criterion)
        logits, loops = adaptive_forward(core, ml.Tensor(idx), criterion, threshold)
        g_logits, g_loops = adaptive_forward(core, ml.Tensor(idx), criterion, threshold, gather=True)
        np.testing.assert_array_equal(loops, g_loops)
        np.testing.assert_allclose(g_logits.numpy(), logits.numpy(), rtol=1e-12, atol=1e-12)
    for block in core.transformer.h:  # the block's own MLP is back in place
        assert type(block.mlp).__name__ == "MLP"


def test_which_block_is_gathered():
    _, core = build_pair("loop_residual")  # prelude h[0], loop h[1], coda h[2]
    assert last_block(core, 2) is core.transformer.h[1]
    _, core = build_pair("recursive_sequence")  # 2 blocks, each twice in a row: loop 0 is h[0], h[0]
    assert last_block(core, 0) is None


@pytest.mark.parametrize("gather", [False, True])
@pytest.mark.parametrize("criterion", ["kl", "max_prob"])
@pytest.mark.parametrize("name", list(VARIANTS))
def test_core_and_mirror_agree(name, criterion, gather):
    mirror, core = build_pair(name)
    idx = tokens()
    threshold = mixed_threshold(core, idx, criterion)
    logits, loops = adaptive_forward(core, ml.Tensor(idx), criterion, threshold, gather=gather)
    t_logits, t_loops = torch_adaptive_forward(mirror, torch.from_numpy(idx), criterion, threshold, gather=gather)
    np.testing.assert_array_equal(loops, t_loops)
    np.testing.assert_allclose(logits.numpy(), t_logits.numpy(), rtol=1e-9, atol=1e-12)


def test_exit_frontier_reports_fixed_and_adaptive_points():
    _, core = build_pair("loop_residual")
    batches = [(tokens(seed=s), tokens(seed=s + 10)) for s in range(2)]
    f = exit_frontier(core, batches, "max_prob", thresholds=[1.5, 0.0], repeat=2)
    assert f["max_loops"] == 4 and f["tokens"] == 2 * 3 * 8
    assert [p["loops"] for p in f["fixed"]] == [1, 2, 3, 4]
    never, always = f["adaptive"]
    assert never["mean_loops"] == 4 and never["loops_histogram"] == [0, 0, 0, 48]
    assert always["mean_loops"] == 1 and always["loops_histogram"] == [48, 0, 0, 0]
    for point, k in ((never, 4), (always, 1)):
        with ml.no_grad():
            losses = [core(ml.Tensor(x), ml.Tensor(y), n_loops=k)[1].item() for x, y in batches]
        assert point["val_loss"] == pytest.approx(np.mean(losses), rel=1e-12)
        assert f["fixed"][k - 1]["val_loss"] == pytest.approx(np.mean(losses), rel=1e-12)
        assert point["tokens_per_s"] > 0


def test_bad_input_is_refused():
    _, core = build_pair("loop_residual")
    with pytest.raises(ValueError, match="criterion"):
        adaptive_forward(core, ml.Tensor(tokens()), "entropy", 0.1)
    gpt2 = GPT(GPTConfig(**TINY))
    with pytest.raises(ValueError, match="looped"):
        adaptive_forward(gpt2, ml.Tensor(tokens()), "kl", 0.1)
