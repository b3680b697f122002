"""Fast training: all-position windows, the sampled-softmax loss, bf16 autocast, torch.compile."""

from collections import Counter

import pytest
import torch
from recbole.config import Config
from recbole.data import create_dataset, data_preparation
from recbole.quick_start import run_recbole

from masan_recbole.data.all_positions import all_positions_train_set, windows
from masan_recbole.registry import get_model


def prepare(cfg, model="SASRec"):
    config = Config(model=model, dataset="synth", config_dict=cfg)
    return config, data_preparation(config, create_dataset(config))


def whole_batch(loader):
    return loader._dataset.inter_feat


@pytest.mark.parametrize("length,stride", [(5, 1), (5, 2), (5, 5), (1, 1), (50, 25)])
def test_windows_count_each_target_once_with_at_least_l_minus_s_plus_1_context(length, stride):
    for n in range(1, 130):
        counted = []
        for start, end, first in windows(n, length, stride):
            assert 0 <= start <= first < end <= n and end - start <= length
            counted += range(first, end)
            # target j sees inputs start..j
            assert all(j - start + 1 >= min(j + 1, length - stride + 1) for j in range(first, end))
        assert counted == list(range(n))


def pairs_of_prefix_rows(feat):
    lengths = feat["item_length"].tolist()
    return Counter(
        (uid, tuple(seq[:n]), target)
        for uid, seq, n, target in zip(feat["user_id"].tolist(), feat["item_id_list"].tolist(), lengths,
                                       feat["item_id"].tolist())
    )


def pairs_of_windows(feat):
    pairs = Counter()
    for uid, seq, targets in zip(feat["user_id"].tolist(), feat["item_id_list"].tolist(),
                                 feat["item_id_targets"].tolist()):
        pairs.update((uid, tuple(seq[: j + 1]), t) for j, t in enumerate(targets) if t)
    return pairs


def test_stride_1_trains_on_exactly_recboles_prefix_pairs(tiny_config):
    # L = 6 < most sequence lengths (12-24), so long sequences are windowed.
    cfg = dict(tiny_config, MAX_ITEM_LIST_LENGTH=6)
    _, (prefix_train, prefix_valid, prefix_test) = prepare(cfg)
    _, (train, valid, test) = prepare(dict(cfg, train_mode="all_positions", train_window_stride=1))
    assert pairs_of_windows(whole_batch(train)) == pairs_of_prefix_rows(whole_batch(prefix_train))
    # evaluation data is RecBole's own, untouched
    for ours, theirs in ((valid, prefix_valid), (test, prefix_test)):
        for field in ("user_id", "item_id", "item_id_list", "item_length"):
            assert torch.equal(whole_batch(ours)[field], whole_batch(theirs)[field])


def test_default_stride_counts_every_target_once_in_fewer_rows(tiny_config):
    cfg = dict(tiny_config, MAX_ITEM_LIST_LENGTH=10)  # the generated users have 12-24 items
    _, (prefix_train, _, _) = prepare(cfg)
    config, (train, _, _) = prepare(dict(cfg, train_mode="all_positions"))
    feat, prefix_feat = whole_batch(train), whole_batch(prefix_train)
    by_stride = {s: whole_batch(prepare(dict(cfg, train_mode="all_positions", train_window_stride=s))[1][0])
                 for s in (1, 5)}
    assert torch.equal(feat["item_id_targets"], by_stride[1]["item_id_targets"])  # ~ = L // 10
    assert len(by_stride[5]) < len(feat)
    assert int((feat["item_id_targets"] > 0).sum()) == len(prefix_feat)
    assert len(feat) < len(prefix_feat) / 2
    targets = Counter((uid, t) for uid, _, t in pairs_of_windows(feat).elements())
    assert targets == Counter(zip(prefix_feat["user_id"].tolist(), prefix_feat["item_id"].tolist()))


def test_all_position_loss_equals_the_prefix_loss_on_the_same_pairs(tiny_config):
    cfg = dict(tiny_config, MAX_ITEM_LIST_LENGTH=6, hidden_dropout_prob=0.0, attn_dropout_prob=0.0)
    config, (prefix_train, _, _) = prepare(cfg)
    _, (train, _, _) = prepare(dict(cfg, train_mode="all_positions", train_window_stride=1))
    torch.manual_seed(0)
    model = get_model("SASRec")(config, train._dataset).eval()
    with torch.no_grad():
        prefix_loss = model.calculate_loss(whole_batch(prefix_train))
        window_loss = model.calculate_loss(whole_batch(train))
    assert window_loss.item() == pytest.approx(prefix_loss.item(), rel=1e-5)


def test_per_target_weighting_makes_an_epochs_loss_independent_of_how_batches_group_rows(tiny_config):
    # length bucketing groups short sequences (few targets) and long ones into separate batches
    cfg = dict(tiny_config, hidden_dropout_prob=0.0, attn_dropout_prob=0.0, train_mode="all_positions")
    models = {}
    for weight in ("per_target", "per_batch"):
        models[weight], rows = built_model(cfg, all_positions_weight=weight)
        with torch.no_grad():  # targets of unequal loss, so that their weights show
            models[weight].item_embedding.weight.normal_(std=1.0, generator=torch.Generator().manual_seed(1))
        models[weight].eval()
    half = len(rows) // 2
    n_targets = (rows[models["per_target"].TARGETS][:2 * half] > 0).sum(1)  # two batches of the same rows, grouped two ways
    by_length, mixed = n_targets.argsort(), torch.randperm(2 * half, generator=torch.Generator().manual_seed(0))
    short = rows[by_length[:half]]
    assert n_targets[by_length[:half]].sum() < n_targets[by_length[half:]].sum()
    with torch.no_grad():
        def epoch_loss(order):
            return sum(models["per_target"].calculate_loss(rows[order[i:i + half]]).item() for i in (0, half))
        # both equal the summed loss over the rows * the mean targets per row
        assert epoch_loss(by_length) == pytest.approx(epoch_loss(mixed), rel=1e-4)
        # the batch mean (per_batch) weighs a short batch's targets more
        factor = n_targets[by_length[:half]].sum().item() / (half * models["per_target"].targets_per_row)
        assert factor < 0.9
        assert models["per_target"].calculate_loss(short).item() == pytest.approx(
            factor * models["per_batch"].calculate_loss(short).item(), rel=1e-5)


@pytest.mark.parametrize("model", ["MASAN", "ASRec", "SR-SAN", "LightSANs"])
def test_non_causal_models_refuse_all_positions(tiny_config, model):
    with pytest.raises(ValueError, match="needs a causal model.*Causal models: SASRec"):
        prepare(dict(tiny_config, train_mode="all_positions"), model=model)


@pytest.mark.parametrize("setting,message", [
    ({"train_mode": "every"}, "train_mode 'every' is not one of"),
    ({"train_window_stride": 0}, r"train_window_stride must be an integer in \[1, MAX_ITEM_LIST_LENGTH=20\]"),
    ({"train_neg_sample_args": {"distribution": "uniform", "sample_num": 1}, "loss_type": "BPR"},
     "set train_neg_sample_args: ~"),
])
def test_bad_all_position_settings_are_named(tiny_config, setting, message):
    cfg = dict(tiny_config, train_mode="all_positions")
    with pytest.raises(ValueError, match=message):
        prepare(dict(cfg, **setting))


def test_training_rows_out_of_sequence_order_are_refused(tiny_config):
    config, (train, _, _) = prepare(tiny_config)
    shuffled = train._dataset.copy(whole_batch(train)[torch.randperm(len(whole_batch(train)))])
    with pytest.raises(ValueError, match="needs each user's training rows to be the prefixes of one sequence"):
        all_positions_train_set(shuffled, config)


@pytest.mark.slow
def test_fast_modes_beat_popularity(tiny_config):
    cfg = dict(tiny_config, epochs=5)
    pop = run_recbole(model="Pop", dataset="synth", config_dict=dict(cfg))["test_result"]
    fast = dict(cfg, train_mode="all_positions", train_batch_size=32)
    for extra in ({}, {"loss_type": "SSM", "ssm_num_negatives": 10},
                  {"loss_type": "SSM", "ssm_sampler": "in_batch", "ssm_num_negatives": 10}):
        result = run_recbole(model="SASRec", dataset="synth", config_dict=dict(fast, **extra))["test_result"]
        assert result["ndcg@10"] > pop["ndcg@10"] + 0.2, extra


@pytest.mark.slow
def test_sampled_softmax_serves_every_plugin_model(tiny_config):
    cfg = dict(tiny_config, epochs=3, loss_type="SSM", ssm_num_negatives=10)
    pop = run_recbole(model="Pop", dataset="synth", config_dict=dict(tiny_config))["test_result"]
    result = run_recbole(model="MASAN", dataset="synth", config_dict=dict(cfg, k_interests=4))["test_result"]
    assert result["ndcg@10"] > pop["ndcg@10"]


def built_model(tiny_config, **settings):
    config, (train, _, _) = prepare(dict(tiny_config, **settings))
    torch.manual_seed(0)
    return get_model("SASRec")(config, train._dataset), whole_batch(train)


def test_in_batch_log_q_is_the_target_frequency_and_accidental_hits_are_masked(tiny_config):
    model, batch = built_model(tiny_config, loss_type="SSM", ssm_sampler="in_batch", ssm_num_negatives=8)
    counts = torch.bincount(batch["item_id"], minlength=model.n_items).float()
    seen = counts > 0
    assert torch.allclose(model.log_q[seen], (counts[seen] / counts.sum()).log())
    # every negative drawn from a batch with a single target is that target: no negative left
    states = torch.randn(4, model.item_embedding.embedding_dim)
    same = torch.full((4,), 7)
    assert model.sampled_softmax(states, same).item() == pytest.approx(0.0, abs=1e-6)
    assert model.sampled_softmax(states, torch.tensor([7, 8, 9, 10])).item() > 0


@pytest.mark.parametrize("sampler", ["uniform", "in_batch"])
def test_sampled_softmax_tends_to_full_softmax_with_many_negatives(tiny_config, sampler):
    model, _ = built_model(tiny_config, loss_type="SSM", ssm_sampler=sampler, ssm_num_negatives=200_000)
    torch.manual_seed(1)
    states = torch.randn(60, model.item_embedding.embedding_dim)
    with torch.no_grad():
        model.item_embedding.weight.mul_(20)  # logits with a std of ~1.6: far from uniform
        logits = states @ model.item_embedding.weight.T  # [60,N]
    if sampler == "uniform":
        pos_items = torch.randint(1, model.n_items, (60,))
        candidates = torch.arange(1, model.n_items)  # every item but padding
    else:  # the batch is the whole training set: its target shares are q
        pos_items = torch.randint(1, 9, (60,))
        counts = torch.bincount(pos_items, minlength=model.n_items).float()
        model.log_q = (counts.clamp(min=1) / counts.sum()).log()
        candidates = pos_items.unique()  # in-batch negatives can only be batch targets
    full = torch.nn.functional.cross_entropy(logits[:, candidates], torch.searchsorted(candidates, pos_items))
    with torch.no_grad():
        # sampling error ~1e-3 nats; an unmasked accidental hit or q counting padding: ~2e-2
        assert model.sampled_softmax(states, pos_items).item() == pytest.approx(full.item(), abs=5e-3)


def test_bf16_autocast_stays_close_to_fp32(tiny_config):
    model, batch = built_model(tiny_config, hidden_dropout_prob=0.0, attn_dropout_prob=0.0)
    assert model.autocast_dtype is None  # auto on a CPU: fp32
    model.eval()
    losses, grads = [], []
    for dtype in (None, torch.bfloat16):
        model.autocast_dtype = dtype
        model.zero_grad()
        loss = model.calculate_loss(batch)
        loss.backward()
        losses.append(loss.item())
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
    assert losses[1] == pytest.approx(losses[0], rel=2e-2)
    assert torch.nn.functional.cosine_similarity(grads[0], grads[1], dim=0) > 0.99


def test_unknown_precision_and_loss_are_named(tiny_config):
    with pytest.raises(ValueError, match="mixed_precision 'fp8' is not one of"):
        built_model(tiny_config, mixed_precision="fp8")
    with pytest.raises(ValueError, match="ssm_sampler 'popular' is not one of"):
        built_model(tiny_config, loss_type="SSM", ssm_sampler="popular")
    with pytest.raises(ValueError, match="all_positions_weight 'per_user' is not one of"):
        built_model(tiny_config, all_positions_weight="per_user")


@pytest.mark.slow
def test_compiled_model_matches_eager(tiny_config):
    eager, batch = built_model(tiny_config, train_mode="all_positions")
    compiled, _ = built_model(tiny_config, train_mode="all_positions", compile=True)
    compiled.load_state_dict(eager.state_dict())
    eager.eval(), compiled.eval()
    with torch.no_grad():
        assert compiled.calculate_loss(batch).item() == pytest.approx(eager.calculate_loss(batch).item(), rel=1e-5)


@pytest.mark.parametrize("model_name", ["SASRec", "MASAN", "ASRec"])
def test_compile_wraps_forward_and_encode_of_every_model(tiny_config, model_name):
    # MASAN's forward does not go through encode: compiling encode alone left it eager
    config, (train, _, _) = prepare(dict(tiny_config, compile=True), model=model_name)
    model = get_model(model_name)(config, train._dataset)
    assert hasattr(model.forward, "_torchdynamo_orig_callable") and hasattr(model.encode, "_torchdynamo_orig_callable")


@pytest.mark.slow
def test_compiled_masan_matches_eager(tiny_config):
    config, (train, _, _) = prepare(dict(tiny_config), model="MASAN")
    compiled_config, _ = prepare(dict(tiny_config, compile=True), model="MASAN")
    torch.manual_seed(0)
    eager = get_model("MASAN")(config, train._dataset)
    compiled = get_model("MASAN")(compiled_config, train._dataset)
    compiled.load_state_dict(eager.state_dict())
    eager.eval(), compiled.eval()
    batch = whole_batch(train)
    with torch.no_grad():
        assert torch.allclose(compiled.full_sort_predict(batch), eager.full_sort_predict(batch), atol=1e-5)
