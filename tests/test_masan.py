"""MASAN (docs/models.md#masan): logged parameter counts, LightSANs parity, entmax properties, gradients,
a real training run against Pop, and the attention analysis script."""

import glob
import os
import re

import pytest
import torch
import yaml
from entmax import entmax15, sparsemax
from recbole.config import Config
from recbole.data import create_dataset, data_preparation
from recbole.model.sequential_recommender import LightSANs
from recbole.quick_start import run_recbole
from recbole.utils import init_seed

from masan_recbole.analysis import masan_attention
from masan_recbole.model.masan.entmax_attention import AdaptiveEntmax
from masan_recbole.model.masan import MASAN
from masan_recbole.config import CONFIG_DIR

DEFAULTS = {}
for layer in ("overall.yaml", os.path.join("model", "MASAN.yaml")):  # the registry's layering
    with open(os.path.join(CONFIG_DIR, layer)) as f:
        DEFAULTS.update(yaml.safe_load(f))


class CountOnlyDataset:
    """What SequentialRecommender reads from a dataset: the number of item ids."""

    def __init__(self, n_items):
        self.n_items = n_items

    def num(self, field):
        return self.n_items


def build(n_items=30, max_len=10, **overrides):
    """MASAN from the yaml defaults without loading any data."""
    config = {**DEFAULTS, "USER_ID_FIELD": "user_id", "ITEM_ID_FIELD": "item_id", "LIST_SUFFIX": "_list",
              "ITEM_LIST_LENGTH_FIELD": "item_length", "NEG_PREFIX": "neg_", "MAX_ITEM_LIST_LENGTH": max_len,
              "device": torch.device("cpu"), **overrides}
    return MASAN(config, CountOnlyDataset(n_items))


def random_batch(n_items, max_len, lengths, seed=0):
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.tensor(lengths)
    seq = torch.randint(1, n_items, (len(lengths), max_len), generator=generator)
    seq[torch.arange(max_len) >= lengths[:, None]] = 0  # right padding
    return {"item_id_list": seq, "item_length": lengths,
            "item_id": torch.randint(1, n_items, (len(lengths),), generator=generator),
            "neg_item_id": torch.randint(1, n_items, (len(lengths),), generator=generator)}


# JXY66/MASAN runab_*.log: hidden size, layers, interests, attn/hidden dropout, LN eps -> trainable parameters.
LOGS = {
    "runab_1229_dr03d": (32, 1, 40, 0.3, 0.3, 1e-10, 1_973_313),
    "runab_dim32_dr03d": (32, 2, 20, 0.3, 0.3, 1e-12, 1_996_546),
    "runab_dim32_dr0305": (32, 2, 20, 0.5, 0.3, 1e-12, 1_996_546),
    "runab_dim32k25_dr03d": (32, 2, 25, 0.3, 0.3, 1e-8, 1_997_186),
    "runab_k10_dr03d": (32, 2, 10, 0.3, 0.3, 1e-12, 1_995_266),
    "runab_dr05d": (64, 2, 20, 0.5, 0.5, 1e-12, 4_017_154),
    "runab_la3_dr0305": (32, 3, 20, 0.3, 0.5, 1e-10, 2_021_059),
}


@pytest.mark.parametrize("log", LOGS)
def test_parameter_count_matches_log(log):
    d, n_layers, k, attn_drop, hidden_drop, eps, expected = LOGS[log]
    model = build(n_items=60_707, max_len=150, hidden_size=d, n_layers=n_layers, k_interests=k,
                  attn_dropout_prob=attn_drop, hidden_dropout_prob=hidden_drop, layer_norm_eps=eps)
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == expected
    assert model.position_embedding.num_embeddings == 151
    attention = model.trm_encoder.layer[0].multi_head_attention
    assert [name for name, _ in attention.named_parameters()][-2:] == ["normaliser.alpha_w.weight",
                                                                      "normaliser.alpha_w.bias"]


def test_softmax_mode_reproduces_lightsans(tiny_config):
    # LightSANs' padding rule (padding takes part in every normalisation), unbucketed
    cfg = {**tiny_config, "n_layers": 2, "k_interests": 5, "entmax_mode": "softmax", "attn_padding_mask": False,
           "length_bucketing": False}
    config = Config(model="MASAN", dataset="synth", config_dict=cfg)
    init_seed(config["seed"], config["reproducibility"])
    train_data, _, test_data = data_preparation(config, create_dataset(config))
    masan = MASAN(config, train_data._dataset)
    lightsans = LightSANs(Config(model="LightSANs", dataset="synth", config_dict=cfg), train_data._dataset)
    # LightSANs' table has L rows, ours L+1 and no alpha_w in softmax mode: nothing else differs.
    d = cfg["hidden_size"]
    assert sum(p.numel() for p in masan.parameters()) == sum(p.numel() for p in lightsans.parameters()) + d

    state = {re.sub(r"\.(pos_q_linear|pos_k_linear|pos_ln)\.", r".position_attention.\1.", key): value
             for key, value in lightsans.state_dict().items()}
    positions = masan.position_embedding.weight.detach().clone()
    positions[: cfg["MAX_ITEM_LIST_LENGTH"]] = state["position_embedding.weight"]
    state["position_embedding.weight"] = positions
    masan.load_state_dict(state)  # strict: the same tensors under the same (prefixed) names
    masan.eval(), lightsans.eval()

    interaction = next(iter(test_data))[0]
    assert (interaction["item_id_list"] == 0).any()  # padding is part of the comparison
    with torch.no_grad():
        ours, theirs = masan.full_sort_predict(interaction), lightsans.full_sort_predict(interaction)
    assert ours.shape == (len(interaction), masan.n_items)
    assert (ours - theirs).abs().max().item() < 1e-5


def scores_and_states(scale=1.0, batch=4, heads=2, length=12, k=5, d=8):
    generator = torch.Generator().manual_seed(0)
    scores = torch.randn(batch, heads, length, k, generator=generator) * scale
    x = torch.randn(batch, length, d, generator=generator)
    valid = torch.arange(length) < torch.tensor([12, 7, 3, 1])[:, None]
    return scores, x, valid


def normaliser(**kwargs):
    options = {"dim": DEFAULTS["entmax_dim"], "alpha_eps": DEFAULTS["alpha_eps"], "n_iter": DEFAULTS["entmax_n_iter"],
               **kwargs}
    return AdaptiveEntmax(8, **options)


def set_alpha_logit(module, logit):
    """Make the adaptive α constant: 1 + σ(logit) for every sequence."""
    with torch.no_grad():
        module.alpha_w.weight.zero_()
        module.alpha_w.bias.fill_(logit)


@pytest.mark.parametrize("dim", [-2, -1])
@pytest.mark.parametrize("mode", ["adaptive", "softmax", "entmax15", "sparsemax", "fixed"])
def test_weights_are_distributions_along_the_normalised_axis(mode, dim):
    scores, x, valid = scores_and_states(scale=3.0)
    probs, alpha = normaliser(mode=mode, dim=dim)(scores, x, valid)
    assert probs.shape == scores.shape and (probs >= 0).all()
    assert torch.allclose(probs.sum(dim), torch.ones(()), atol=1e-5)
    assert alpha.shape == (4, 1, 1, 1)


@pytest.mark.parametrize("mode", ["adaptive", "entmax15", "sparsemax", "fixed"])
def test_peaked_scores_give_exact_zeros(mode):
    scores, x, valid = scores_and_states(scale=10.0)
    probs, alpha = normaliser(mode=mode)(scores, x, valid)
    assert (alpha > 1).all()
    assert (probs == 0).any(dim=-2).all()  # every interest's distribution has zeros


@pytest.mark.parametrize("logit, alpha, reference", [(0.0, 1.5, entmax15), (100.0, 2.0, sparsemax)])
def test_adaptive_alpha_reproduces_entmax15_and_sparsemax(logit, alpha, reference):
    scores, x, valid = scores_and_states(scale=3.0)
    module = normaliser(mode="adaptive")
    set_alpha_logit(module, logit)
    probs, got_alpha = module(scores, x, valid)
    assert torch.equal(got_alpha, torch.full_like(got_alpha, alpha))
    expected = reference(scores, dim=-2)
    assert (probs - expected).abs().max() < 1e-5
    fixed, _ = normaliser(mode="fixed", alpha_fixed=alpha)(scores, x, valid)
    assert (fixed - expected).abs().max() < 1e-5


def test_the_default_step_bound_reaches_the_converged_output():
    # long sequences and alpha near 1 need the most Newton steps; 24 must already be converged
    scores, x, valid = scores_and_states(scale=3.0, length=150, k=20)
    for alpha in (1.02, 1.2, 1.5, 1.9):
        default, _ = normaliser(mode="fixed", alpha_fixed=alpha)(scores, x, valid)
        fifty, _ = normaliser(mode="fixed", alpha_fixed=alpha, n_iter=50)(scores, x, valid)
        assert (default - fifty).abs().max() < 1e-6
        assert (default.sum(-2) - 1).abs().max() < 1e-5


def test_alpha_stays_in_range_and_ignores_padding():
    scores, x, valid = scores_and_states()
    module = normaliser(mode="adaptive")
    alpha = module.alpha(x * 100, valid)
    assert ((alpha >= 1 + DEFAULTS["alpha_eps"]) & (alpha <= 2)).all()
    set_alpha_logit(module, -100.0)
    assert torch.equal(module.alpha(x, valid), torch.full((4, 1, 1, 1), 1 + DEFAULTS["alpha_eps"]))
    set_alpha_logit(module, 100.0)
    assert torch.equal(module.alpha(x, valid), torch.full((4, 1, 1, 1), 2.0))

    module = normaliser(mode="adaptive")
    padded = x.masked_fill(~valid[:, :, None], 1e3)  # only padding positions change
    assert torch.equal(module.alpha(padded, valid), module.alpha(x, valid))
    assert not torch.equal(module.alpha(x, valid), module.alpha(x, torch.ones_like(valid)))


def test_query_scope_gives_one_alpha_per_position():
    scores, x, valid = scores_and_states(scale=3.0)
    probs, alpha = normaliser(mode="adaptive", alpha_scope="query", dim=-1)(scores, x, valid)
    assert alpha.shape == (4, 1, 12, 1) and len(alpha.unique()) > 1
    assert torch.allclose(probs.sum(-1), torch.ones(()), atol=1e-5)


@pytest.mark.parametrize("kwargs", [
    {"mode": "adaptive", "alpha_scope": "query", "dim": -2},
    {"mode": "fixed", "alpha_fixed": 1.0},
    {"mode": "softmax2"},
    {"dim": 1},
    {"alpha_eps": 0.0},
])
def test_invalid_normaliser_settings_raise(kwargs):
    with pytest.raises(ValueError):
        normaliser(**kwargs)


@pytest.mark.parametrize("loss_type", ["CE", "BPR"])
def test_gradients_reach_alpha_interests_and_positions(loss_type):
    model = build(hidden_size=16, inner_size=32, k_interests=4, n_layers=2, loss_type=loss_type)
    model.train()
    batch = random_batch(30, 10, [10, 6, 3, 1])
    batch["neg_item_id"] = batch["item_id"] % 29 + 1  # never the positive (BPR's gradient would be 0)
    loss = model.calculate_loss(batch)
    assert torch.isfinite(loss)
    loss.backward()
    for i in range(2):
        prefix = f"trm_encoder.layer.{i}.multi_head_attention."
        for name in ("normaliser.alpha_w.weight", "normaliser.alpha_w.bias", "attpooling_key.theta",
                     "attpooling_value.theta", "position_attention.pos_q_linear.weight",
                     "position_attention.pos_k_linear.weight", "position_attention.pos_ln.weight"):
            grad = model.get_parameter(prefix + name).grad
            assert grad is not None and grad.abs().sum() > 0, prefix + name
    assert model.position_embedding.weight.grad[:10].abs().sum(1).gt(0).all()  # every used row
    assert model.position_embedding.weight.grad[10].abs().sum() == 0  # the logged extra row is unused


def test_explain_reports_alpha_and_weights_per_layer():
    model = build(hidden_size=16, inner_size=32, k_interests=4, n_layers=2, attn_padding_mask=True).eval()
    batch = random_batch(30, 10, [10, 6, 3, 1])
    layers = model.explain(batch["item_id_list"], batch["item_length"])
    assert len(layers) == 2
    valid = torch.arange(10) < batch["item_length"][:, None]
    for layer in layers:
        alpha, weights = layer["alpha"], layer["weights"]
        assert alpha.shape == (4, 1) and ((alpha > 1) & (alpha <= 2)).all()
        assert weights.shape == (4, 2, 10, 4)
        assert (weights.transpose(1, 2)[~valid] == 0).all()  # padding masked out of the entmax
        assert torch.allclose(weights.sum(-2), torch.ones(()), atol=1e-5)


def test_global_preference_adds_the_mean_state():
    batch = random_batch(30, 10, [1, 5])
    torch.manual_seed(0)
    plain = build(hidden_size=16, inner_size=32, k_interests=4).eval()
    torch.manual_seed(0)
    with_mean = build(hidden_size=16, inner_size=32, k_interests=4, global_pref="mean_add").eval()
    with torch.no_grad():
        h_plain = plain(batch["item_id_list"], batch["item_length"])
        h_mean = with_mean(batch["item_id_list"], batch["item_length"])
    assert torch.allclose(h_mean[0], 2 * h_plain[0], atol=1e-6)  # one item: the mean is the last state
    assert not torch.allclose(h_mean[1], 2 * h_plain[1], atol=1e-3)


@pytest.mark.slow
def test_short_training_beats_popularity(tiny_config):
    cfg = {**tiny_config, "k_interests": 5}
    masan = run_recbole(model="MASAN", dataset="synth", config_dict=cfg, saved=False)["test_result"]
    pop = run_recbole(model="Pop", dataset="synth", config_dict=cfg, saved=False)["test_result"]
    assert masan["ndcg@10"] > pop["ndcg@10"] + 0.05
    assert masan["mrr@10"] > pop["mrr@10"]


@pytest.mark.slow
def test_analysis_plots_a_trained_checkpoint(tiny_config, tmp_path):
    cfg = {**tiny_config, "epochs": 1, "k_interests": 5, "n_layers": 2}
    run_recbole(model="MASAN", dataset="synth", config_dict=cfg)
    (checkpoint,) = glob.glob(os.path.join(cfg["checkpoint_dir"], "MASAN-*.pth"))
    out = tmp_path / "alpha.png"
    summary = masan_attention.main(["--checkpoint", checkpoint, "--out", str(out)])
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(summary) == 2
    for layer in summary:
        assert ((layer["alpha"] >= 1 + DEFAULTS["alpha_eps"]) & (layer["alpha"] <= 2)).all()
        assert 0 <= layer["zero_fraction"] <= 1


# α-entmax by Newton's method (masan_recbole/model/masan/entmax.py) against the entmax package's bisection,
# which AdaptiveEntmax called before.

from entmax import entmax_bisect  # noqa: E402

from masan_recbole.model.masan.entmax import entmax_newton  # noqa: E402
from masan_recbole.model.masan.entmax_attention import MASKED_SCORE  # noqa: E402


def entmax_inputs(dtype, batch=40, length=50, k=20, seed=0):
    """Scores [B,2,L,k] of spreads 0.01 to 10 with a few masked positions, and α [B,1,1,1] over [1.01, 2]
    (both ends included)."""
    generator = torch.Generator().manual_seed(seed)
    spread = torch.tensor([0.01, 0.3, 1.0, 3.0, 10.0]).repeat(batch)[:batch, None, None, None]
    scores = torch.randn(batch, 2, length, k, generator=generator) * spread
    scores[::3, :, -length // 5:] = MASKED_SCORE
    alpha = 1.01 + 0.99 * torch.rand(batch, 1, 1, 1, generator=generator)
    alpha[0], alpha[1] = 1.01, 2.0
    return scores.to(dtype), alpha.to(dtype)


@pytest.mark.parametrize("dim", [-2, -1])
def test_newton_entmax_reproduces_bisection(dim):
    scores, alpha = entmax_inputs(torch.float32)
    ours = entmax_newton(scores, alpha, dim)
    bisection = entmax_bisect(scores, alpha, dim, n_iter=DEFAULTS["entmax_n_iter"])  # the former AdaptiveEntmax
    assert (ours - bisection).abs().max() < 1e-5
    assert torch.allclose(ours.sum(dim), torch.ones(()), atol=1e-6)
    # Exact zeros, in the same places up to values that underflow anyway.
    assert (ours == 0).float().mean() > 0.3
    differ = (ours == 0) != (bisection == 0)
    assert (torch.maximum(ours, bisection)[differ] < 1e-12).all()


@pytest.mark.parametrize("dim", [-2, -1])
def test_newton_entmax_and_its_gradients_equal_the_entmax_package_in_float64(dim):
    scores, alpha = entmax_inputs(torch.float64, batch=10, length=12, k=5)
    scores.requires_grad_(), alpha.requires_grad_()
    upstream = torch.randn(scores.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    ours = entmax_newton(scores, alpha, dim)
    reference = entmax_bisect(scores, alpha, dim, n_iter=100)  # bisection to float64 precision
    assert (ours - reference).abs().max() < 1e-12
    our_grads = torch.autograd.grad(ours, (scores, alpha), upstream)
    reference_grads = torch.autograd.grad(reference, (scores, alpha), upstream)
    for got, expected in zip(our_grads, reference_grads):
        assert got.shape == expected.shape
        assert torch.allclose(got, expected, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("dim, alpha_shape", [(-2, (4, 1, 1, 1)), (-1, (4, 1, 1, 1)), (-1, (4, 1, 6, 1))])
def test_newton_entmax_passes_gradcheck(dim, alpha_shape):
    generator = torch.Generator().manual_seed(0)
    scores = (2 * torch.randn(4, 2, 6, 5, generator=generator, dtype=torch.float64)).requires_grad_()
    # α = 2 itself is left out: finite differences would step past it.
    alpha = (1.01 + 0.97 * torch.rand(alpha_shape, generator=generator, dtype=torch.float64)).requires_grad_()
    assert torch.autograd.gradcheck(lambda s, a: entmax_newton(s, a, dim), (scores, alpha))


def test_adaptive_entmax_gradients_match_bisection():
    """The former AdaptiveEntmax (entmax_bisect, 24 steps) and ours: same Π, same gradients of the scores
    and of alpha_w, in float32."""
    scores, x, valid = scores_and_states(scale=3.0, length=50, k=20)
    module = normaliser(mode="adaptive")
    upstream = torch.randn(scores.shape, generator=torch.Generator().manual_seed(1))
    results = []
    for function in (entmax_newton, entmax_bisect):
        module.zero_grad()
        leaf = scores.clone().requires_grad_()
        alpha = module.alpha(x, valid)
        probs = function(leaf, alpha, module.dim, module.n_iter)
        (probs * upstream).sum().backward()
        results.append((probs, leaf.grad, module.alpha_w.weight.grad.clone(), module.alpha_w.bias.grad.clone()))
    for ours, bisection in zip(*results):
        assert (ours - bisection).abs().max() <= 1e-5 * max(1.0, bisection.abs().max().item())


def test_newton_entmax_computes_bf16_scores_in_float32():
    scores, alpha = entmax_inputs(torch.float32, batch=10)
    low = scores.to(torch.bfloat16).requires_grad_()
    probs = entmax_newton(low, alpha, -2)
    assert probs.dtype == torch.float32
    assert torch.equal(probs, entmax_newton(low.detach().float(), alpha, -2))
    (probs * torch.randn(probs.shape)).sum().backward()
    assert low.grad.dtype == torch.bfloat16 and low.grad.abs().sum() > 0


def test_newton_entmax_with_no_steps_still_gives_distributions():
    scores, alpha = entmax_inputs(torch.float32, batch=10)
    probs = entmax_newton(scores, alpha, -2, n_iter=0)  # the starting threshold only, normalised
    assert (probs >= 0).all() and torch.allclose(probs.sum(-2), torch.ones(()), atol=1e-6)


def test_newton_entmax_threshold_returns_p_and_p_to_the_two_minus_alpha():
    """The backward's g = p^(2−α) must be exact, not merely proportional: the scores' gradient scales with it."""
    from masan_recbole.model.masan.entmax import entmax_threshold

    scores, alpha = entmax_inputs(torch.float64, batch=10)
    probs, g = entmax_threshold(scores * (alpha - 1), alpha, -2, n_iter=1)  # not yet converged: Σ u^β ≠ 1
    expected = torch.where(probs > 0, probs.pow(2 - alpha), torch.zeros(()))
    assert torch.allclose(g, expected, rtol=1e-12, atol=1e-300)


def test_the_per_dataset_file_applies_unless_turned_off():
    # configs/model/MASAN/ml-100k.yaml sets inner_size 64 over MASAN.yaml's 256; the user's word still wins
    assert Config(model="MASAN", dataset="ml-100k")["inner_size"] == 64
    assert Config(model="MASAN", dataset="ml-100k", config_dict={"inner_size": 128})["inner_size"] == 128
    defaults = Config(model="MASAN", dataset="ml-100k", config_dict={"model_dataset_config": False})
    assert defaults["inner_size"] == 256 and defaults["MAX_ITEM_LIST_LENGTH"] == 20  # the dataset file still applies
    with pytest.raises(ValueError, match="model_dataset_config must be true or false"):
        Config(model="MASAN", dataset="ml-100k", config_dict={"model_dataset_config": "no"})
