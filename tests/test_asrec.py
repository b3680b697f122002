"""ASRec: Fourier smoothing, the adaptive filter, parameter counts of docs/models.md#asrec,
batch-independent evaluation, the learning-rate schedule, real runs and the spectrum plot."""

import math
import os

import numpy as np
import pytest
import scipy.fftpack
import torch
import torch.nn.functional as F
from recbole.config import Config
from recbole.data import create_dataset, data_preparation
from recbole.quick_start import run_recbole
from recbole.utils import get_model, get_trainer, init_seed

from masan_recbole.analysis import asrec_spectrum
from masan_recbole.layers import padding_mask
from masan_recbole.model.asrec.fourier import AdaptiveHighFrequencyFilter, FourierSmoothing
from masan_recbole.model.asrec.hybrid import HybridAttentionLayer

# ---------------------------------------------------------------- Fourier smoothing (FSM)


def direct_smoothing(fsm, x):
    """docs/models.md#asrec step 2 written out in float64: S_t = c Σ_{τ≤t} (1−a) a^{t−τ} X_τ, c = 1/√F."""
    x = x.double()
    length = x.size(1)
    a = torch.sigmoid(fsm.smoothing_weight.detach().double())
    c = 1.0 / math.sqrt(scipy.fftpack.next_fast_len(2 * length - 1))  # the reference's F
    v0, v1 = fsm.v0.detach().double(), fsm.v1.detach().double()
    out = torch.empty_like(x)
    for t in range(length):
        weights = (1 - a) * a ** torch.arange(t, -1, -1, dtype=torch.float64)  # τ = 0..t
        smoothed = c * (weights[None, :, None] * x[:, : t + 1]).sum(1)
        out[:, t] = a ** (t + 1) * v0 + smoothed * v1
    return fsm.strength * out + (1 - fsm.strength) * x


def random_fsm(hidden, strength):
    fsm = FourierSmoothing(hidden, strength)
    with torch.no_grad():  # O(1) values instead of the 0.02 init, so that errors would show
        fsm.smoothing_weight.fill_(0.7)
        fsm.v0.normal_()
        fsm.v1.normal_()
    return fsm


def test_fft_length_is_the_references():
    assert FourierSmoothing.fft_length(50) == 100 and FourierSmoothing.fft_length(200) == 400
    assert all(FourierSmoothing.fft_length(n) == scipy.fftpack.next_fast_len(2 * n - 1) for n in range(1, 300))


def test_strength_zero_is_the_identity():
    fsm = random_fsm(8, 0.0)
    x = torch.randn(3, 20, 8)
    assert torch.equal(fsm(x), x)


@pytest.mark.parametrize("length, strength", [(50, 1.0), (7, 1.0), (20, 0.4)])
def test_fsm_equals_the_direct_moving_average(length, strength):
    torch.manual_seed(0)
    fsm = random_fsm(8, strength)
    x = torch.randn(3, length, 8)
    assert torch.allclose(fsm(x).double(), direct_smoothing(fsm, x), atol=1e-5, rtol=0)


def test_fsm_is_causal():
    torch.manual_seed(0)
    fsm = random_fsm(8, 1.0)
    x = torch.randn(2, 30, 8)
    t = 12
    changed = x.clone()
    changed[:, t:] = torch.randn_like(changed[:, t:])
    before, after = fsm(x), fsm(changed)
    assert torch.allclose(before[:, :t], after[:, :t], atol=1e-6, rtol=0)
    assert (before[:, t] - after[:, t]).abs().max() > 1e-2


# ---------------------------------------------------------------- adaptive filter (AHFF)


class FixedDropout(torch.nn.Module):
    """Dropout with a mask fixed in advance, so that two computations drop the same units."""

    def __init__(self, mask, p):
        super().__init__()
        self.mask, self.p = mask, p

    def forward(self, x):
        return x * self.mask / (1 - self.p)


def test_keeping_every_frequency_gives_ln_of_dropout_plus_input(monkeypatch):
    ahff = AdaptiveHighFrequencyFilter(8, quantile=0.8, dropout=0.5, layer_norm_eps=1e-12)
    monkeypatch.setattr(ahff, "keep_mask", lambda energy, length: torch.ones_like(energy, dtype=torch.bool))
    y = torch.randn(4, 20, 8)
    assert torch.allclose(ahff.dominant_frequencies(y), y, atol=1e-5)  # iFFT(FFT(Y)) = Y
    assert torch.allclose(ahff.eval()(y), ahff.LayerNorm(2 * y), atol=1e-5)  # no dropout in eval
    ahff.dropout = FixedDropout(torch.rand(y.shape) > 0.5, p=0.5)
    assert torch.allclose(ahff.train()(y), ahff.LayerNorm(ahff.dropout(y) + y), atol=1e-5)


def signal_with_known_spectrum(batch, length, hidden, seed=0):
    """Y [B,L,d] whose real-FFT coefficients are R (returned too); DC and Nyquist real."""
    gen = torch.Generator().manual_seed(seed)
    coeffs = torch.complex(torch.randn(batch, length // 2 + 1, hidden, generator=gen),
                           torch.randn(batch, length // 2 + 1, hidden, generator=gen))
    coeffs[:, 0].imag = 0
    coeffs[:, -1].imag = 0
    return torch.fft.irfft(coeffs, n=length, dim=1), coeffs


def expected_dominant(coeffs, length, quantile, per_sequence):
    """Keep frequency f iff its median-normalised energy exceeds the θ-quantile (numpy, float64)."""
    energy = (coeffs.abs() ** 2).sum(-1).double().numpy()  # [B,L//2+1], exact per bin
    full = np.concatenate([energy, energy[:, 1:length - length // 2][:, ::-1]], axis=1)  # f and L−f equal
    normalized = full / (np.median(full, axis=1, keepdims=True) + 1e-6)
    if per_sequence:
        threshold = np.quantile(normalized, quantile, axis=1, keepdims=True)
    else:
        threshold = np.quantile(normalized, quantile)
    keep = torch.from_numpy(normalized[:, : energy.shape[1]] > threshold)
    return torch.fft.irfft(coeffs * keep[..., None], n=length, dim=1), keep


@pytest.mark.parametrize("scope", ["sequence", "batch"])
def test_ahff_keeps_the_frequencies_above_the_quantile(scope):
    length = 16
    y, coeffs = signal_with_known_spectrum(5, length, 3)
    ahff = AdaptiveHighFrequencyFilter(3, quantile=0.8, dropout=0.5, layer_norm_eps=1e-12, threshold_scope=scope)
    expected, keep = expected_dominant(coeffs, length, 0.8, per_sequence=scope == "sequence")
    assert 0 < keep.sum() < keep.numel()  # the filter is not trivial here
    assert torch.allclose(ahff.dominant_frequencies(y), expected.float(), atol=1e-5)


def test_sequence_threshold_ignores_the_rest_of_the_batch():
    y = torch.randn(6, 20, 8)
    per_sequence = AdaptiveHighFrequencyFilter(8, 0.8, 0.5, 1e-12, "sequence").eval()
    per_batch = AdaptiveHighFrequencyFilter(8, 0.8, 0.5, 1e-12, "batch").eval()
    alone = torch.cat([per_sequence(y[i:i + 1]) for i in range(len(y))])
    assert torch.allclose(per_sequence(y), alone, atol=1e-6)
    alone = torch.cat([per_batch(y[i:i + 1]) for i in range(len(y))])
    assert (per_batch(y) - alone).abs().max() > 1e-2  # the reference's threshold mixes sequences


def test_unknown_threshold_scope_is_refused():
    with pytest.raises(ValueError, match="ahff_threshold_scope 'user' is not one of"):
        AdaptiveHighFrequencyFilter(8, 0.8, 0.5, 1e-12, "user")


# ---------------------------------------------------------------- the model


@pytest.fixture
def asrec_config(tiny_config):
    return dict(tiny_config, n_layers=2)


def build(cfg):
    config = Config(model="ASRec", dataset="synth", config_dict=cfg)
    train_data, valid_data, test_data = data_preparation(config, create_dataset(config))
    init_seed(config["seed"], True)
    model = get_model("ASRec")(config, train_data._dataset)
    return config, model, train_data, valid_data, test_data


# Parameters the reference creates but never lets change (docs/models.md#asrec "dead params"),
# which ASRec here does not create, by name and size.
def reference_only_parameters(n_layers, d, h):
    return {
        "SAMM head_weights (never used)": n_layers * h,
        "FSM LayerNorm (never used)": 2 * d,
        "layer LayerNorm (never used)": n_layers * 2 * d,
        "AHFF threshold θ (no gradient; config ahff_quantile here)": n_layers * 1,
    }


@pytest.mark.parametrize("length, d, inner, heads, spec_count", [
    (50, 256, 256, 4, 1_443_937),
    (50, 256, 256, 1, 1_936_219),
    (200, 64, 64, 1, 1_333_099),
])
def test_parameter_counts_of_models_md(data_root, length, d, inner, heads, spec_count):
    # docs/models.md#asrec counts parameters besides the item table, including the reference's
    # unused ones; ours plus those (computed from their formula) must give it exactly.
    cfg = {"data_path": data_root, "state": "WARNING", "MAX_ITEM_LIST_LENGTH": length, "hidden_size": d,
           "inner_size": inner, "n_heads": heads, "n_layers": 2}
    config = Config(model="ASRec", dataset="synth", config_dict=cfg)
    model = get_model("ASRec")(config, create_dataset(config))
    ours = sum(p.numel() for p in model.parameters()) - model.n_items * d
    assert ours + sum(reference_only_parameters(2, d, heads).values()) == spec_count


def test_full_sort_predict_and_predict_shapes(asrec_config):
    _, model, _, _, test_data = build(asrec_config)
    batch = next(iter(test_data))[0]
    model.eval()
    with torch.no_grad():
        scores = model.full_sort_predict(batch)
        assert scores.shape == (len(batch), model.n_items)
        assert model.predict(batch).shape == (len(batch),)
        assert torch.isfinite(scores).all()


@pytest.mark.parametrize("loss_type", ["CE", "BPR"])
def test_gradients_reach_every_parameter(asrec_config, loss_type):
    # Every parameter is used and trained: none of the reference's dead ones exist.
    _, model, train_data, _, _ = build(dict(asrec_config, loss_type=loss_type))
    model.train()
    loss = model.calculate_loss(next(iter(train_data)))
    loss.backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert torch.isfinite(loss) and not missing


def test_reference_init(asrec_config):
    _, model, _, _, _ = build(asrec_config)
    samm = model.layers[0].samm
    bound = 1 / math.sqrt(2 * asrec_config["hidden_size"] // asrec_config["n_heads"])
    uniform = [samm.gate_weight, samm.gate_bias, samm.scales, samm.keep_weight, samm.contrast_weight,
               *samm.convs.parameters()]
    assert all(p.abs().max() <= bound for p in uniform)
    assert samm.convs[0].weight.std() > 0.4 * bound  # U(±b) has std b/√3, far above N(0, 0.02)
    assert samm.query.bias.abs().max() == 0 and samm.LayerNorm.weight.eq(1).all()
    assert model.layers[0].mix_weight.item() == 0.5
    assert model.fourier_smoothing.v0.abs().max() < 0.1


def test_ahff_on_input_moves_the_filter(asrec_config):
    _, model, _, _, test_data = build(dict(asrec_config, ahff_on_input=True))
    _, default, _, _, _ = build(asrec_config)
    assert all(layer.input_filter is not None and layer.samm.ahff is None for layer in model.layers)
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in default.parameters())
    batch = next(iter(test_data))[0]
    with torch.no_grad():
        assert torch.isfinite(model.eval().full_sort_predict(batch)).all()


def full_sort_test_loader(cfg, eval_batch_size):
    """RecBole's full-sort test loader of the synth data at ``eval_batch_size`` rows per batch."""
    config = Config(model="ASRec", dataset="synth", config_dict=dict(cfg, eval_batch_size=eval_batch_size))
    return data_preparation(config, create_dataset(config))[2]


def scores_by_user(model, test_data, users=70):
    """Full-sort scores of the first ``users`` test users (at least), by user id."""
    scores = {}
    with torch.no_grad():
        for interaction, *_ in test_data:
            for user, row in zip(interaction["user_id"].tolist(), model.full_sort_predict(interaction)):
                scores[user] = row
            if len(scores) >= users:
                return scores
    return scores


def largest_difference(model, one_by_one, by_64):
    alone, in_64 = scores_by_user(model, one_by_one), scores_by_user(model, by_64)
    assert len(alone) == 70 and set(alone) <= set(in_64)  # a full batch of 64 and more
    return max((alone[u] - in_64[u]).abs().max().item() for u in alone)


def test_eval_scores_do_not_depend_on_eval_batch_size(asrec_config):
    config, model, _, _, _ = build(dict(asrec_config, n_layers=1))
    assert config["ahff_threshold_scope"] == "sequence"  # the default
    # Weights of a generic network: at the small init (and after a short run) the
    # convolution biases, shared by all users, dominate every sequence's spectrum, so
    # every sequence keeps the same frequencies whatever the scope.
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.3)
    model.eval()
    one_by_one, by_64 = full_sort_test_loader(asrec_config, 1), full_sort_test_loader(asrec_config, 64)
    assert largest_difference(model, one_by_one, by_64) < 1e-5
    # The reference's batch-wide threshold does depend on the batch.
    for module in model.modules():
        if isinstance(module, AdaptiveHighFrequencyFilter):
            module.threshold_scope = "batch"
    assert largest_difference(model, one_by_one, by_64) > 1e-3


def test_asrec_defaults_use_the_step_schedule(data_root):
    config = Config(model="ASRec", dataset="synth", config_dict={"data_path": data_root, "state": "WARNING"})
    assert (config["lr_scheduler"], config["lr_step_size"], config["lr_gamma"]) == ("step", 30, 0.2)
    assert config["loss_type"] == "CE" and config["A"] == 1.0 and config["hidden_size"] == 256


@pytest.mark.slow
def test_learning_rate_decays_during_a_run(asrec_config):
    # Two training epochs, no validation; the plugin trainer steps the schedule per epoch.
    cfg = dict(asrec_config, n_layers=1, epochs=2, eval_step=10, train_batch_size=1024, lr_step_size=1, lr_gamma=0.2)
    config, model, train_data, valid_data, _ = build(cfg)
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    trainer.fit(train_data, valid_data, saved=False)
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(cfg["learning_rate"] * 0.2**2)


# ---------------------------------------------------------------- real runs

_TRAINED = {}


@pytest.fixture
def trained_asrec(asrec_config):
    """One short real ASRec run per session, shared: its config, test result and checkpoint."""
    if not _TRAINED:
        cfg = dict(asrec_config, n_layers=1, train_batch_size=512)
        result = run_recbole(model="ASRec", dataset="synth", config_dict=cfg)["test_result"]
        (name,) = os.listdir(cfg["checkpoint_dir"])
        _TRAINED.update(cfg=cfg, result=result, checkpoint=os.path.join(cfg["checkpoint_dir"], name))
    return _TRAINED


@pytest.mark.slow
def test_short_run_beats_most_popular(trained_asrec):
    ours = trained_asrec["result"]
    pop = run_recbole(model="Pop", dataset="synth", config_dict=trained_asrec["cfg"])["test_result"]
    assert ours["ndcg@10"] > pop["ndcg@10"] + 0.05
    assert ours["mrr@10"] > pop["mrr@10"] + 0.05


def test_spectrum_script_plots_a_trained_checkpoint(trained_asrec, tmp_path):
    out = tmp_path / "spectrum.png"
    asrec_spectrum.main(["--checkpoint", trained_asrec["checkpoint"], "--out", str(out)])
    data = out.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 10_000


# ---------------------------------------------------------------- the fast forms against the reference's computations
# The FSM (a Toeplitz product), the AHFF's backward pass (hand-written: the filter is its own
# adjoint) and the SAMM's gate (another memory layout) are computed differently from the
# reference code; these check them, values and gradients, against the reference's own
# computations written out here: to float64 rounding, and to 1e-5 in float32.


def fft_smoothing(fsm, x):
    """The reference's FSM: the moving average as an FFT convolution zero-padded to F."""
    length = x.size(1)
    fft_len = scipy.fftpack.next_fast_len(2 * length - 1)
    a = fsm.smoothing_factor().to(x.dtype)
    lags = torch.arange(length, dtype=x.dtype)
    kernel = (1 - a) * a ** lags
    x_hat = torch.fft.rfft(x, n=fft_len, dim=1)
    kernel_hat = torch.fft.rfft(kernel, n=fft_len)[None, :, None]
    smoothed = torch.fft.irfft(x_hat * kernel_hat, n=fft_len, dim=1)[:, :length] / math.sqrt(fft_len)
    out = (a ** (lags + 1))[:, None] * fsm.v0 + smoothed * fsm.v1
    return fsm.strength * out + (1 - fsm.strength) * x


def reference_ahff(ahff, y):
    """The reference's filter of the AHFF: autograd through rFFT -> keep mask -> irFFT."""
    length = y.size(1)
    spectrum = torch.fft.rfft(y, dim=1)
    keep = ahff.keep_mask(spectrum.detach().abs().square().sum(-1), length)
    return torch.fft.irfft(spectrum * keep[..., None], n=length, dim=1)


def reference_samm(samm, x, mask):
    """docs/models.md#asrec SAMM in eval mode, in the reference's layout: gate on [B,h,L,d_h]."""
    q, k, v = (samm.split_heads(linear(x)) for linear in (samm.query, samm.key, samm.value))
    context = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    gates = torch.sigmoid(F.linear(torch.cat([v, context], dim=-1), samm.gate_weight, samm.gate_bias))
    reset, update = gates.chunk(2, dim=-1)
    context = (1 - update) * context + update * F.gelu(context + reset * v)
    context = context.transpose(1, 2).reshape(x.shape)
    mixed = 0
    for scale, conv in zip(samm.scales, samm.convs):
        s = conv(context)
        mixed = mixed + scale * (samm.ahff.LayerNorm(reference_ahff(samm.ahff, s) + s) + s)
    z = F.normalize(mixed, dim=-1).square()
    weights = torch.softmax(z, dim=-1) + torch.softmax(z, dim=1)
    desmoothed = samm.keep_weight * mixed - samm.contrast_weight * (weights * mixed)
    return samm.LayerNorm(x + samm.dense(F.gelu(desmoothed)))


def values_and_gradients(fn, module, x, seed=0):
    """fn(x), and the gradients of a fixed random projection of it w.r.t. x and module's parameters."""
    x = x.clone().requires_grad_(True)
    out = fn(x)
    projection = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    inputs = [x, *module.parameters()]
    grads = torch.autograd.grad((out * projection.to(out.dtype)).sum(), inputs, allow_unused=True)
    return [out.detach()] + [torch.zeros_like(p) if g is None else g for g, p in zip(grads, inputs)]


def assert_same(ours, reference, tol):
    """Every tensor of ``ours`` within tol · max(1, its largest reference entry) of the reference."""
    assert len(ours) == len(reference)
    for a, b in zip(ours, reference):
        assert (a - b).abs().max() <= tol * max(1.0, b.abs().max().item())


@pytest.mark.parametrize("length, strength", [(50, 1.0), (7, 1.0), (200, 0.4)])
def test_fsm_equals_the_references_fft_convolution_with_gradients(length, strength):
    torch.manual_seed(0)
    fsm = random_fsm(8, strength)
    x = torch.randn(3, length, 8)
    reference = values_and_gradients(lambda x: fft_smoothing(fsm, x), fsm, x)
    assert_same(values_and_gradients(fsm, fsm, x), reference, 1e-5)
    fsm.double()
    reference = values_and_gradients(lambda x: fft_smoothing(fsm, x), fsm, x.double())
    assert_same(values_and_gradients(fsm, fsm, x.double()), reference, 1e-12)


@pytest.mark.parametrize("length", [16, 15])  # even: a Nyquist bin; odd: none
def test_ahff_gradient_equals_autograd_through_the_ffts(length):
    torch.manual_seed(0)
    ahff = AdaptiveHighFrequencyFilter(8, quantile=0.6, dropout=0.0, layer_norm_eps=1e-12)
    for dtype, tol in ((torch.float32, 1e-5), (torch.float64, 1e-12)):
        y = torch.randn(4, length, 8, dtype=dtype)
        reference = values_and_gradients(lambda y: reference_ahff(ahff, y), ahff, y)
        assert_same(values_and_gradients(ahff.dominant_frequencies, ahff, y), reference, tol)
    y = torch.randn(2, length, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(ahff.dominant_frequencies, (y,))


@pytest.mark.parametrize("heads", [1, 2])
def test_hybrid_layer_equals_the_reference_computation(heads):
    # One whole layer (both branches, v₃ mixing, FFN) with generic weights, eval mode:
    # values and every gradient, against the reference's formulas and memory layout.
    torch.manual_seed(0)
    length, d = 12, 8
    layer = HybridAttentionLayer(n_heads=heads, hidden_size=d, inner_size=16, max_seq_length=length,
                                 hidden_dropout_prob=0.0, attn_dropout_prob=0.0, hidden_act="gelu",
                                 layer_norm_eps=1e-12, conv_kernels=[3, 5], ahff_quantile=0.8,
                                 ahff_dropout=0.0).eval()
    with torch.no_grad():
        for p in layer.parameters():
            p.normal_(0, 0.5)
    item_seq = torch.randint(1, 30, (5, length))
    item_seq[:, 9:] = 0  # padding at the end, as RecBole's
    mask = padding_mask(item_seq)

    def reference(x):
        v3 = layer.mix_weight
        return layer.feed_forward(v3 * layer.attention(x, mask) + (1 - v3) * reference_samm(layer.samm, x, mask))

    for dtype, tol in ((torch.float32, 1e-5), (torch.float64, 1e-12)):
        layer.to(dtype)
        x = torch.randn(5, length, d, dtype=dtype)
        ours = values_and_gradients(lambda x: layer(x, mask), layer, x)
        assert_same(ours, values_and_gradients(reference, layer, x), tol)
