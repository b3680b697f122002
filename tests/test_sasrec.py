"""SASRec: RecBole's behaviour (parity to 1e-5, scores and training), its parameter count, causality,
losses, and the written-out CPU attention (SDPA's formula)."""

import math

import pytest
import torch
import torch.nn.functional as F
from recbole.config import Config
from recbole.data import create_dataset, data_preparation
from recbole.quick_start import run_recbole
from recbole.utils import get_model, init_seed

from masan_recbole.layers import attention, causal_padding_mask, padding_mask


@pytest.fixture
def built(tiny_config):
    """Our SASRec and RecBole's, built on the same real dataset; ours holds RecBole's weights."""
    cfg = dict(tiny_config, n_layers=2, hidden_size=32, inner_size=64)
    config = Config(model="SASRec", dataset="synth", config_dict=cfg)
    train_data, _, test_data = data_preparation(config, create_dataset(config))
    init_seed(1, True)
    theirs = get_model("RecBoleSASRec")(config, train_data._dataset).eval()
    ours = get_model("SASRec")(config, train_data._dataset).eval()
    ours.load_state_dict(theirs.state_dict())  # same names, nothing renamed
    batch = next(iter(test_data))[0]
    return config, ours, theirs, batch


def test_recbole_weights_give_recbole_logits(built):
    _, ours, theirs, batch = built
    with torch.no_grad():
        assert torch.allclose(ours.full_sort_predict(batch), theirs.full_sort_predict(batch), atol=1e-5, rtol=0)
        assert torch.allclose(ours.predict(batch), theirs.predict(batch), atol=1e-5, rtol=0)


def test_recbole_weights_and_seed_give_recbole_training_loss_and_gradients(built):
    # Training mode: the same dropout masks are drawn in the same order (input, then per layer the
    # attention weights, the attention output, the feed-forward output), so the losses agree.
    _, ours, theirs, batch = built
    ours.train(), theirs.train()
    losses, grads = [], []
    for model in (ours, theirs):
        model.zero_grad()
        torch.manual_seed(7)
        loss = model.calculate_loss(batch)
        loss.backward()
        losses.append(loss.item())
        grads.append({name: p.grad.clone() for name, p in model.named_parameters()})
    assert losses[0] == pytest.approx(losses[1], abs=1e-5)
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        assert torch.allclose(grads[0][name], grads[1][name], atol=1e-5, rtol=1e-4), name


@pytest.mark.parametrize("mask_of", [causal_padding_mask, padding_mask, None])
def test_cpu_training_attention_is_sdpas(mask_of):
    # With dropout, CPU attention is written out (SDPA's dropout there cannot be made fast); with a
    # dropout too small to drop anything it must give SDPA's outputs and gradients, a query that
    # sees no key (an all-padding sequence) included.
    torch.manual_seed(0)
    batch, heads, length, head_size = 16, 2, 8, 4
    seq = torch.randint(1, 50, (batch, length))
    seq[torch.arange(length)[None, :] >= torch.randint(1, length + 1, (batch, 1))] = 0
    seq[0] = 0
    mask = mask_of(seq) if mask_of else None
    q, k, v = (torch.randn(batch, heads, length, head_size, dtype=torch.float64, requires_grad=True)
               for _ in range(3))
    weights = torch.randn(batch, heads, length, head_size, dtype=torch.float64)
    written_out = attention(q, k, v, mask, dropout_p=1e-300)
    fused = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    assert torch.allclose(written_out, fused, atol=1e-12)
    for a, b in zip(torch.autograd.grad((written_out * weights).sum(), (q, k, v)),
                    torch.autograd.grad((fused * weights).sum(), (q, k, v))):
        assert torch.allclose(a, b, atol=1e-12)
    if mask_of is not None:
        assert written_out[0].abs().max() == 0  # no key to attend to: a zero output, as SDPA gives


def test_cpu_attention_dropout_is_functional_dropout(monkeypatch):
    # The weights' dropout goes through F.dropout, so the fast_cpu_dropout patch (opt-in) reaches it,
    # as it reaches RecBole's attention dropout.
    calls = []
    original = F.dropout

    def recording(input, p=0.5, training=True, inplace=False):
        calls.append((tuple(input.shape), p, training))
        return original(input, p, training, inplace)

    monkeypatch.setattr(F, "dropout", recording)
    q = torch.randn(3, 2, 5, 4)
    out = attention(q, q, q, torch.ones(5, 5, dtype=torch.bool).tril(), dropout_p=0.25)
    assert calls == [((3, 2, 5, 5), 0.25, True)] and out.shape == q.shape


def test_parameter_count_matches_the_formula(built):
    config, ours, theirs, _ = built
    n, length, d, inner = ours.n_items, config["MAX_ITEM_LIST_LENGTH"], config["hidden_size"], config["inner_size"]
    per_layer = 4 * d * d + 2 * d * inner + 9 * d + inner
    expected = n * d + length * d + 2 * d + config["n_layers"] * per_layer
    assert sum(p.numel() for p in ours.parameters()) == expected
    assert sum(p.numel() for p in theirs.parameters()) == expected


def test_default_configuration_has_the_specified_size(data_root):
    # docs/models.md#sasrec: d 64, inner 256, 2 layers, L 50 -> 103,296 parameters besides the item table.
    config = Config(model="SASRec", dataset="synth", config_dict={"data_path": data_root, "state": "WARNING",
                                                                 "MAX_ITEM_LIST_LENGTH": 50})
    dataset = create_dataset(config)
    model = get_model("SASRec")(config, dataset)
    assert sum(p.numel() for p in model.parameters()) - model.n_items * 64 == 103_296


def test_future_items_do_not_change_earlier_states(built):
    _, ours, _, batch = built
    seq = batch["item_id_list"].clone()
    t = 3
    changed = seq.clone()
    changed[:, t + 1:] = torch.randint(1, ours.n_items, changed[:, t + 1:].shape)
    with torch.no_grad():
        length = batch["item_length"]
        before, after = ours.encode(seq, length), ours.encode(changed, length)
    assert torch.allclose(before[:, : t + 1], after[:, : t + 1], atol=1e-6)
    assert not torch.allclose(before[:, t + 1:], after[:, t + 1:])


def test_shorter_padding_gives_the_same_state(built):
    # A sequence run with L' < L (position table sliced) ends in the same state.
    _, ours, _, batch = built
    lengths = batch["item_length"]
    keep = int(lengths.max())
    seq = batch["item_id_list"]
    with torch.no_grad():
        full = ours(seq, lengths)
        ours.position_embedding.weight.data = ours.position_embedding.weight.data[:keep]
        short = ours(seq[:, :keep], lengths)
    assert torch.allclose(full, short, atol=1e-5)


def test_untrained_ce_is_uniform(built):
    _, ours, _, batch = built
    with torch.no_grad():
        loss = ours.calculate_loss(batch)
    assert loss.item() == pytest.approx(math.log(ours.n_items), rel=0.02)


@pytest.mark.slow
def test_training_beats_popularity_and_bpr_trains(tiny_config):
    cfg = dict(tiny_config, epochs=5)
    pop = run_recbole(model="Pop", dataset="synth", config_dict=dict(cfg))["test_result"]
    ce = run_recbole(model="SASRec", dataset="synth", config_dict=dict(cfg))["test_result"]
    assert ce["ndcg@10"] > pop["ndcg@10"] + 0.2 and ce["mrr@10"] > pop["mrr@10"] + 0.2
    bpr = run_recbole(model="SASRec", dataset="synth", config_dict=dict(cfg, loss_type="BPR"))["test_result"]
    assert bpr["ndcg@10"] > pop["ndcg@10"]
