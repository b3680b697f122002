"""Length bucketing (masan_recbole/data/bucketing.py): every sample once per epoch in batches of
similar length cut to their longest, a reproducible new order each epoch, each DDP rank its
share, the same scores with and without it, and a refusal for models that read the padding."""

import json
import os
import signal
import subprocess
import sys
import types

import numpy as np
import pytest
import torch
from recbole.config import Config
from recbole.data import create_dataset, data_preparation
from recbole.quick_start import run_recbole
from recbole.utils import get_model, get_trainer

from masan_recbole.data import bucketing
from masan_recbole.data.bucketing import LengthBucketSampler, bucket_batches


def prepare(tiny_config, model="SASRec", **overrides):
    config = Config(model=model, dataset="synth", config_dict=dict(tiny_config, **overrides))
    return config, data_preparation(config, create_dataset(config))


def lengths_for(n=1000, seed=0):
    return np.random.default_rng(seed).integers(1, 51, n)


def generator(seed=2020):
    g = torch.Generator()
    g.manual_seed(seed)
    return g


# -- the order: pure functions ------------------------------------------------------------------

def test_batches_hold_every_sample_once_in_contiguous_length_ranges():
    lengths = lengths_for()
    batches = bucket_batches(lengths, 64, generator(), shuffle=True)
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(len(lengths)))
    assert [len(b) for b in batches[:-1]] == [64] * (len(batches) - 1) and len(batches[-1]) == 1000 % 64
    # sorted buckets: no two batches' length ranges overlap except at a shared boundary length
    ranges = sorted((lengths[b].min(), lengths[b].max()) for b in batches)
    assert all(hi <= next_lo for (_, hi), (next_lo, _) in zip(ranges, ranges[1:]))
    assert np.mean([np.ptp(lengths[b]) for b in batches]) <= 3  # 50 lengths over 16 batches


def test_epochs_differ_and_a_seed_reproduces_them():
    lengths, g = lengths_for(), generator()
    first, second = bucket_batches(lengths, 64, g, shuffle=True), bucket_batches(lengths, 64, g, shuffle=True)
    assert [b.tolist() for b in first] != [b.tolist() for b in second]
    g = generator()
    assert [b.tolist() for b in bucket_batches(lengths, 64, g, shuffle=True)] == [b.tolist() for b in first]
    assert [b.tolist() for b in bucket_batches(lengths, 64, g, shuffle=True)] == [b.tolist() for b in second]
    # evaluation: a fixed order, nothing drawn
    state = g.get_state()
    assert [b.tolist() for b in bucket_batches(lengths, 64, g)] == [b.tolist() for b in bucket_batches(lengths, 64)]
    assert torch.equal(g.get_state(), state)


@pytest.mark.parametrize("world_size", [2, 3])
def test_ddp_ranks_split_each_step_and_cover_every_sample(world_size):
    lengths, batch = lengths_for(1001), 32  # the last group (41 samples) does not split evenly
    per_rank = [bucket_batches(lengths, batch, generator(), shuffle=True, rank=r, world_size=world_size)
                for r in range(world_size)]
    n_steps = len(per_rank[0])
    assert all(len(batches) == n_steps for batches in per_rank)  # no rank waits forever in an all-reduce
    for r, batches in enumerate(per_rank):
        assert all(len(b) == batch for b in batches[:-1]) and 0 < len(batches[-1]) <= batch
        sampler = LengthBucketSampler(lengths, batch, generator(), shuffle=True, rank=r, world_size=world_size)
        assert len(sampler) == sum(map(len, batches))
        # torch's DataLoader cuts the sampler's flat list into exactly these batches
        loaded = list(torch.utils.data.DataLoader(list(range(len(lengths))), batch_size=batch, sampler=sampler))
        assert [b.tolist() for b in loaded] == [b.tolist() for b in batches]
    every = np.concatenate([b for batches in per_rank for b in batches])
    assert set(every.tolist()) == set(range(len(lengths)))
    assert len(every) - len(lengths) < world_size  # the padding of the last group only
    # a step's batches, all ranks together, are one stretch of the sorted lengths: similar lengths
    steps = [lengths[np.concatenate([batches[i] for batches in per_rank])] for i in range(n_steps)]
    ranges = sorted((step.min(), step.max()) for step in steps)
    assert all(hi <= next_lo for (_, hi), (next_lo, _) in zip(ranges, ranges[1:]))


# -- RecBole's loaders ----------------------------------------------------------------------------

def test_length_bucketing_reaches_recboles_data_preparation(tiny_config):
    config, (train_data, valid_data, test_data) = prepare(tiny_config, length_bucketing=True, MAX_ITEM_LIST_LENGTH=30)
    assert isinstance(train_data, bucketing.BucketedTrainDataLoader)
    assert isinstance(valid_data, bucketing.BucketedFullSortEvalDataLoader)
    assert isinstance(test_data, bucketing.BucketedFullSortEvalDataLoader)
    seen, n_batches = [], 0
    for batch in train_data:
        lengths = batch["item_length"]
        assert batch["item_id_list"].shape == (len(lengths), int(lengths.max()))  # cut to the longest
        assert int(lengths.max() - lengths.min()) <= 6
        seen += list(zip(batch["user_id"].tolist(), lengths.tolist()))  # a training row = (user, prefix)
        n_batches += 1
    assert len(seen) == len(set(seen)) == len(train_data._dataset)  # each sample once
    assert n_batches == len(train_data)
    _, (plain, _, _) = prepare(tiny_config, MAX_ITEM_LIST_LENGTH=30)
    assert type(plain).__name__ == "TrainDataLoader" and next(iter(plain))["item_id_list"].shape[1] == 30


def test_all_position_targets_are_cut_with_the_items(tiny_config):
    _, (train_data, _, _) = prepare(tiny_config, length_bucketing=True, train_mode="all_positions",
                                    MAX_ITEM_LIST_LENGTH=30)
    for batch in train_data:
        width = int(batch["item_length"].max())
        assert batch["item_id_list"].shape[1] == batch["item_id_targets"].shape[1] == width


def test_ddp_loaders_give_each_rank_its_share(tiny_config, monkeypatch):
    """RecBole's loaders under DDP (single_spec false), built per rank in this one process:
    RecBole asks for a DistributedSampler, which here only carries the rank (no process group)."""
    config, (train_data, valid_data, _) = prepare(tiny_config, length_bucketing=True)
    config["single_spec"], config["world_size"] = False, 2
    per_rank = {}
    for rank in (0, 1):
        monkeypatch.setattr(torch.utils.data.distributed, "DistributedSampler",
                            lambda *args, rank=rank, **kwargs: types.SimpleNamespace(rank=rank, num_replicas=2))
        train = bucketing.BucketedTrainDataLoader(config, train_data._dataset, None, shuffle=True)
        valid = bucketing.BucketedFullSortEvalDataLoader(config, valid_data._dataset, None)
        train.sampler.set_epoch(1)  # RecBole's trainer calls it under DDP
        per_rank[rank] = [list(train), [batch[0] for batch in valid]]
    for phase, dataset, batch_size in ((0, train_data._dataset, 128), (1, valid_data._dataset, 256)):
        batches = [per_rank[rank][phase] for rank in (0, 1)]
        assert len(batches[0]) == len(batches[1])  # the same number of steps on every rank
        rows = [row for b in batches[0] + batches[1] for row in zip(b["user_id"].tolist(), b["item_length"].tolist())]
        feat = dataset.inter_feat
        assert set(rows) == set(zip(feat["user_id"].tolist(), feat["item_length"].tolist()))
        assert len(rows) - len(dataset) < 2  # at most one repeat, to even out the last step
        assert all(len(b) <= batch_size for b in batches[0] + batches[1])  # RecBole's batch size / world size


def epoch_order(loader):
    return [tuple(batch["user_id"].tolist()) + tuple(batch["item_length"].tolist()) for batch in loader]


def test_training_order_is_new_each_epoch_reproducible_and_resumable(tiny_config):
    _, (train_data, _, _) = prepare(tiny_config, length_bucketing=True)
    before_first = train_data.generator.get_state()
    first = epoch_order(train_data)
    before_second = train_data.generator.get_state()  # what an end-of-epoch checkpoint saves
    second = epoch_order(train_data)
    assert first != second
    _, (again, _, _) = prepare(tiny_config, length_bucketing=True)  # same seed: same epochs
    assert torch.equal(again.generator.get_state(), before_first)
    assert [epoch_order(again), epoch_order(again)] == [first, second]
    train_data.generator.set_state(before_second)  # resuming restores the loader's generator
    assert epoch_order(train_data) == second


# -- same scores, or a refusal -----------------------------------------------------------------------

def scores_by_user(model, loader):
    out = {}
    with torch.no_grad():
        for interaction, _, _, _ in loader:
            for user, row in zip(interaction["user_id"].tolist(), model.full_sort_predict(interaction)):
                out[user] = row
    return out


@pytest.mark.slow
@pytest.mark.parametrize("model_name, overrides", [
    ("SASRec", {}),
    ("SR-SAN", {"dropout_prob": 0.1, "lr_scheduler": None}),
    ("MASAN", {"attn_padding_mask": True, "k_interests": 4}),
    ("RecBoleSASRec", {}),  # RecBole's own, declared in bucketing.PADDING_FREE_BUILTINS
])
def test_trained_model_scores_the_same_with_and_without_bucketing(tiny_config, model_name, overrides):
    cfg = dict(tiny_config, epochs=1, eval_batch_size=32, MAX_ITEM_LIST_LENGTH=30, **overrides)
    config, (train_data, valid_data, test_data) = prepare(cfg, model_name, length_bucketing=True)
    model = get_model(model_name)(config, train_data._dataset)
    trainer = get_trainer(config["MODEL_TYPE"], model_name)(config, model)
    trainer.fit(train_data, saved=False)  # trained on bucketed batches
    model.eval()
    _, (_, plain_valid, plain_test) = prepare(cfg, model_name, length_bucketing=False)
    for bucketed, plain in ((valid_data, plain_valid), (test_data, plain_test)):
        widths = [batch[0]["item_id_list"].shape[1] for batch in bucketed]
        assert max(widths) < 30 and len(set(widths)) > 1  # cut, to different widths
        got, expected = scores_by_user(model, bucketed), scores_by_user(model, plain)
        assert got.keys() == expected.keys()
        for user, row in expected.items():
            torch.testing.assert_close(got[user], row, rtol=0, atol=1e-5)


@pytest.mark.parametrize("model_name, overrides, says", [
    ("ASRec", {}, "multi-scale convolutions"),
    ("MASAN", {"attn_padding_mask": False}, "attn_padding_mask: false"),
    ("SR-SAN", {"use_padding_mask": False}, "use_padding_mask: false"),
    ("LightSANs", {}, "no padding_dependence()"),
])
def test_padding_dependent_models_are_refused_before_training(tiny_config, model_name, overrides, says):
    with pytest.raises(ValueError) as refused:
        run_recbole(model=model_name, dataset="synth", saved=False,
                    config_dict=dict(tiny_config, length_bucketing=True, **overrides))
    message = str(refused.value)
    assert model_name in message and says in message and "Set length_bucketing: false" in message
    assert "--length_bucketing=false" in message and "default" not in message  # the user asked for it
    saved = tiny_config["checkpoint_dir"]
    assert not os.path.isdir(saved) or not os.listdir(saved)  # refused before training


def test_masans_default_bucketing_is_named_when_its_padding_rule_is_turned_off(tiny_config):
    with pytest.raises(ValueError) as refused:
        run_recbole(model="MASAN", dataset="synth", saved=False, config_dict=dict(tiny_config, attn_padding_mask=False))
    message = str(refused.value)
    assert "attn_padding_mask: false" in message and "--length_bucketing=false" in message
    assert "length_bucketing: true is MASAN's default" in message


def test_models_without_sequences_ignore_the_key(tiny_config):
    config, (train_data, valid_data, _) = prepare(tiny_config, "Pop", length_bucketing=True)
    assert not bucketing.enabled(config)
    assert type(train_data).__name__ == "TrainDataLoader" and type(valid_data).__name__ == "FullSortEvalDataLoader"


@pytest.mark.slow
def test_training_with_bucketing_beats_popularity(tiny_config):
    cfg = dict(tiny_config, epochs=5)
    pop = run_recbole(model="Pop", dataset="synth", config_dict=dict(cfg), saved=False)["test_result"]
    bucketed = run_recbole(model="SASRec", dataset="synth", config_dict=dict(cfg, length_bucketing=True),
                           saved=False)["test_result"]
    assert bucketed["ndcg@10"] > pop["ndcg@10"] + 0.2 and bucketed["mrr@10"] > pop["mrr@10"] + 0.2


@pytest.mark.slow
def test_killed_bucketed_run_resumes_exactly(tiny_config, tmp_path):
    """The batch order comes from the loader's generator, which the exact resume restores."""
    script = ("import json, sys\nimport masan_recbole\nfrom recbole.quick_start import run_recbole\n"
              "r = run_recbole(model='SASRec', dataset='synth', config_dict=json.loads(sys.argv[1]))\n"
              "print('RESULT', json.dumps({k: float(v) for k, v in r['test_result'].items()}), flush=True)\n")

    def start(config):
        return subprocess.Popen([sys.executable, "-c", script, json.dumps(config)], cwd=tmp_path,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def result_of(proc):
        out, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0, out[-3000:]
        return json.loads(out.split("RESULT", 1)[1])

    config = dict(tiny_config, epochs=3, state="INFO", length_bucketing=True, MAX_ITEM_LIST_LENGTH=30)
    uninterrupted = result_of(start(dict(config, checkpoint_dir=str(tmp_path / "a"))))
    saved = tmp_path / "b"
    proc = start(dict(config, checkpoint_dir=str(saved)))
    past_epoch_0 = False
    for line in proc.stdout:  # kill right after the checkpoint written after epoch 1
        past_epoch_0 |= "epoch 1 training" in line
        if past_epoch_0 and "Saving current" in line:
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    (ckpt,) = os.listdir(saved)
    resumed = result_of(start(dict(config, checkpoint_dir=str(saved), checkpoint_file=str(saved / ckpt))))
    assert resumed == uninterrupted
