"""SASRec: RecBole's behaviour (parity to 1e-5), its parameter count, causality, losses."""

import math

import pytest
import torch
from recbole.config import Config
from recbole.data import create_dataset, data_preparation
from recbole.quick_start import run_recbole
from recbole.utils import get_model, init_seed


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
