"""benchmarks.converged: a run stopped part-way and started again ends with the numbers of an
uninterrupted run, and its result file holds what the report needs."""

import json
import math
import os
import shutil

import pytest
import torch

from benchmarks import converged, run_lock
from benchmarks.per_user import unpack
from masan_recbole import protocol
from conftest import SYNTH

SETTINGS = {"epochs": 6, "stopping_step": 2, "state": "ERROR"}


def tiny(config):
    keep = ("data_path", "hidden_size", "inner_size", "n_layers", "n_heads", "MAX_ITEM_LIST_LENGTH", "learning_rate",
            "train_batch_size", "eval_batch_size", "metrics", "topk", "valid_metric", "load_col", "eval_args")
    return {**{k: config[k] for k in keep}, **SETTINGS}


class Killed(Exception):
    """The process ends here, as a kill or the end of a session would end it."""


def killed_in(monkeypatch, run, function, when):
    """Call ``run()`` with converged.<function> ending the process (raising Killed) right after a
    call for which ``when(*args)`` holds; the function is restored afterwards."""
    original = getattr(converged, function)

    def dies(*args, **kwargs):
        result = original(*args, **kwargs)
        if when(*args):
            raise Killed
        return result

    monkeypatch.setattr(converged, function, dies)
    with pytest.raises(Killed):
        run()
    monkeypatch.setattr(converged, function, original)


@pytest.mark.slow
def test_an_interrupted_run_resumes_to_the_same_result(tiny_config, tmp_path, monkeypatch):
    whole = converged.train("SASRec", SYNTH, 2020, tiny(tiny_config), out=str(tmp_path / "whole"))

    # between progress.json and latest.pth of the third epoch: the worst moment
    killed_in(monkeypatch, lambda: converged.train("SASRec", SYNTH, 2020, tiny(tiny_config), out=str(tmp_path / "cut")),
              "write_json", lambda path, data: path.endswith("progress.json") and len(data["train_seconds"]) == 3)
    assert not os.path.exists(tmp_path / "cut" / f"{SYNTH}-SASRec-seed2020.json")
    resumed = converged.train("SASRec", SYNTH, 2020, tiny(tiny_config), out=str(tmp_path / "cut"))

    for key in ("best_epoch", "epochs_run", "test_result", "best_valid_score", "test_result_history_excluded"):
        assert resumed[key] == whole[key], key
    assert [p["score"] for p in resumed["valid_curve"]] == [p["score"] for p in whole["valid_curve"]]
    assert unpack(resumed["per_user_ndcg@10"]) == unpack(whole["per_user_ndcg@10"])


@pytest.mark.slow
def test_a_run_whose_state_is_gone_starts_again_and_nothing_is_parked(tiny_config, tmp_path, monkeypatch):
    """The state stays on the machine that trains (never in git): on a new machine a stopped run
    starts again, from nothing, and ends as an uninterrupted run does."""
    settings = {**tiny(tiny_config), "epochs": 4}
    whole = converged.train("SASRec", SYNTH, 2020, settings, out=str(tmp_path / "whole"))
    out = tmp_path / "cut"
    killed_in(monkeypatch, lambda: converged.train("SASRec", SYNTH, 2020, settings, out=str(out)),
              "write_json", lambda path, data: path.endswith("progress.json") and len(data["train_seconds"]) == 2)
    run = converged.Run(SYNTH, "SASRec", "SASRec", 2020, settings)
    assert converged.run_state(run, str(out)) == "started"
    shutil.rmtree(out / ".state")  # a new machine
    assert converged.run_state(run, str(out)) == "pending"
    again = converged.train("SASRec", SYNTH, 2020, settings, out=str(out))
    for key in ("best_epoch", "epochs_run", "test_result", "best_valid_score"):
        assert again[key] == whole[key], key
    assert sorted(os.listdir(out)) == [".state", f"{SYNTH}-SASRec-seed2020.json"]  # no checkpoint beside the result


def curve(*scores):
    return {"train_seconds": [1.0] * len(scores), "valid_seconds": [0.1] * len(scores),
            "valid_curve": [{"epoch": i, "score": v, "metrics": {}} for i, v in enumerate(scores)]}


@pytest.mark.parametrize("best_epoch, accepted", [(1, True), (3, True), (4, True), (0, False), (2, False)])
def test_a_resume_point_is_one_epochs_files(tmp_path, best_epoch, accepted):
    """latest.pth after epoch 2 (done = 3), the best score at epoch 1 (equal scores: the later one
    is RecBole's). best.pth may be epoch 1, or an epoch saved after latest.pth (3, or 4 when
    validation runs every other epoch), never another earlier one."""
    from masan_recbole.checkpoint import save_checkpoint

    save_checkpoint({"epoch": best_epoch}, str(tmp_path / "best.pth"))
    saved = curve(0.3, 0.3, 0.2, 0.5)  # progress.json one epoch ahead of latest.pth
    if accepted:
        progress = converged.resume_progress(saved, 3, str(tmp_path), bigger=True)
        assert progress == curve(0.3, 0.3, 0.2) and len(progress["valid_curve"]) == 3
    else:
        with pytest.raises(converged.ResumeError, match=f"best.pth is epoch {best_epoch}, the curve's best is 1"):
            converged.resume_progress(saved, 3, str(tmp_path), bigger=True)
    with pytest.raises(converged.ResumeError, match="progress.json has 3 epochs, latest.pth 4.*start the run over"):
        converged.resume_progress(curve(0.1, 0.3, 0.2), 4, str(tmp_path), bigger=True)


@pytest.mark.slow
def test_a_state_mixed_from_two_epochs_is_refused(tiny_config, tmp_path):
    from masan_recbole.checkpoint import load_checkpoint, save_checkpoint

    settings = {**tiny(tiny_config), "stopping_step": 20, "epochs": 3}  # ends at its epochs: its state stays
    converged.train("SASRec", SYNTH, 2020, settings, out=str(tmp_path))
    state = tmp_path / ".state" / f"{SYNTH}-SASRec-seed2020"
    progress = json.loads((state / "progress.json").read_text())
    (state / "progress.json").write_text(json.dumps({k: v[:2] if isinstance(v, list) else v for k, v in progress.items()}))  # one epoch behind
    with pytest.raises(converged.ResumeError, match="progress.json has 2 epochs, latest.pth 3"):
        converged.train("SASRec", SYNTH, 2020, {**settings, "epochs": 5}, out=str(tmp_path))
    (state / "progress.json").write_text(json.dumps(progress))
    best = load_checkpoint(state / "best.pth")
    wrong = min({0, 1, 2} - {best["epoch"]})
    save_checkpoint({**best, "epoch": wrong}, str(state / "best.pth"))  # another epoch's best model
    with pytest.raises(converged.ResumeError, match=f"best.pth is epoch {wrong}"):
        converged.train("SASRec", SYNTH, 2020, {**settings, "epochs": 5}, out=str(tmp_path))


@pytest.mark.slow
def test_the_result_file_holds_the_report_fields(tiny_config, tmp_path):
    record = converged.train("SASRec", SYNTH, 2021, tiny(tiny_config), out=str(tmp_path))
    with open(tmp_path / f"{SYNTH}-SASRec-seed2021.json") as f:
        saved = json.load(f)
    for key in ("model", "dataset", "seed", "best_epoch", "epochs_run", "stopping_step", "test_result",
                "valid_curve", "config", "train_seconds_per_epoch", "device", "versions", "schema_version",
                "train_seconds", "valid_seconds",
                "test_result_history_excluded", "per_user_ndcg@10_history_excluded"):
        assert key in saved, key
    assert saved["epochs_run"] == len(saved["valid_curve"]) == len(saved["train_seconds"]) and saved["stopping_step"] == 2
    per_user = record["per_user_ndcg@10"]
    assert len(unpack(per_user)[1]) == 150  # every generated user is a test user
    assert per_user["mean"] == pytest.approx(record["test_result"]["ndcg@10"], abs=1e-4)
    # a finished run is not trained again
    assert converged.train("SASRec", SYNTH, 2021, tiny(tiny_config), out=str(tmp_path)) == saved


def test_the_matrix_covers_the_issues_runs():
    runs = {(r.dataset, r.model): set() for r in converged.load_matrix()}
    for r in converged.load_matrix():  # a model's seeds under any of its labels
        runs[(r.dataset, r.model)].add(r.seed)
        assert r.label == r.model or r.label.startswith(r.model + "-"), r  # a variant names its model
    for dataset in ("beauty", "lastfm"):
        for model in ("MASAN", "LightSANs", "SASRec", "RecBoleSASRec"):
            assert len(runs[(dataset, model)]) >= 2
        for model in ("ASRec", "FEARec"):
            assert runs[(dataset, model)]
    assert runs[("diginetica", "SR-SAN")] and runs[("yoochoose1_64", "SR-SAN")]


def test_a_variant_is_its_model_with_its_own_name_and_settings(tmp_path, capsys):
    matrix = tmp_path / "matrix.yaml"
    matrix.write_text("shared: {epochs: 3}\ndatasets:\n  lastfm:\n    models:\n      MASAN: {seeds: [1]}\n"
                      "      MASAN-masked: {model: MASAN, seeds: [1, 2], settings: {attn_padding_mask: true}}\n")
    runs = converged.load_matrix(str(matrix))
    assert [(r.label, r.model, r.seed) for r in runs] == [("MASAN", "MASAN", 1), ("MASAN-masked", "MASAN", 1),
                                                          ("MASAN-masked", "MASAN", 2)]
    assert runs[1].settings == {"epochs": 3, "attn_padding_mask": True} and runs[0].settings == {"epochs": 3}
    converged.main(["--list", "--matrix", str(matrix), "--out", str(tmp_path), "--models", "MASAN-masked"])
    assert capsys.readouterr().out.split() == ["lastfm-MASAN-masked-seed1", "pending", "lastfm-MASAN-masked-seed2", "pending"]
    assert run_lock.claim(str(tmp_path), "lastfm-MASAN-masked-seed2")  # this process trains it: --list says so
    converged.main(["--list", "--matrix", str(matrix), "--out", str(tmp_path), "--models", "MASAN-masked"])
    assert capsys.readouterr().out.splitlines()[1].split() == [
        "lastfm-MASAN-masked-seed2", "pending", "(running,", "pid", f"{os.getpid()})"]


def test_a_tuned_entry_waits_for_its_settings_file_then_takes_it(tmp_path, monkeypatch, capsys):
    matrix = tmp_path / "matrix.yaml"
    matrix.write_text("shared: {epochs: 3}\ndatasets:\n  lastfm:\n    settings: {model_dataset_config: false}\n"
                      "    models:\n      MASAN-tuned: {model: MASAN, seeds: [1], tuned: true, settings: {epochs: 4}}\n")
    monkeypatch.setattr(converged, "CONFIGS", str(tmp_path / "configs"))
    monkeypatch.setattr(converged, "train", lambda *args, **kwargs: pytest.fail("a waiting run was trained"))
    flags = ["--matrix", str(matrix), "--out", str(tmp_path)]
    converged.main(["--list", *flags])
    assert capsys.readouterr().out.split()[:3] == ["lastfm-MASAN-tuned-seed1", "waiting", "for"]
    assert converged.main(["--all", *flags]) == 0  # nothing to train yet
    with pytest.raises(SystemExit):
        converged.main(["--model", "MASAN-tuned", "--dataset", "lastfm", "--seed", "1", *flags])
    assert "--write-configs" in capsys.readouterr().err
    (tmp_path / "configs" / "MASAN").mkdir(parents=True)
    (tmp_path / "configs" / "MASAN" / "lastfm.yaml").write_text("# tuned\nhidden_size: 128\nepochs: 9\n")
    run, = converged.load_matrix(str(matrix))
    # the file's settings over the dataset's, the entry's own over the file's
    assert run.waits_for is None and run.settings == {"epochs": 4, "model_dataset_config": False, "hidden_size": 128}
    converged.main(["--list", *flags])
    assert capsys.readouterr().out.split() == ["lastfm-MASAN-tuned-seed1", "pending"]


def test_a_tuned_run_whose_config_changed_is_stale_and_not_trained_again_on_its_own(tmp_path, monkeypatch, capsys):
    """A result trained with settings its configs/model file no longer holds is neither reported as
    done nor overwritten: --all and --list name it and the fix, a single run refuses."""
    matrix = tmp_path / "matrix.yaml"
    matrix.write_text("shared: {epochs: 3}\ndatasets:\n  lastfm:\n"
                      "    models:\n      MASAN-tuned: {model: MASAN, seeds: [1], tuned: true, settings: {epochs: 4}}\n")
    monkeypatch.setattr(converged, "CONFIGS", str(tmp_path / "configs"))
    (tmp_path / "configs" / "MASAN").mkdir(parents=True)
    config = tmp_path / "configs" / "MASAN" / "lastfm.yaml"
    config.write_text("hidden_size: 128\nepochs: 9\n")
    run, = converged.load_matrix(str(matrix))
    with open(tmp_path / "lastfm-MASAN-tuned-seed1.json", "w") as f:
        json.dump({"settings": run.settings, "stopped_early": True, "epochs_run": 4}, f)
    assert converged.run_state(run, str(tmp_path)) == "done"
    config.write_text("hidden_size: 64\nepochs: 2\n")  # epochs: the entry's own 4 still wins, not stale
    run, = converged.load_matrix(str(matrix))
    assert converged.stale_keys(run, json.load(open(tmp_path / "lastfm-MASAN-tuned-seed1.json"))) == ["hidden_size"]
    monkeypatch.setattr(converged, "train", lambda *args, **kwargs: pytest.fail("a stale run was trained again"))
    flags = ["--matrix", str(matrix), "--out", str(tmp_path)]
    converged.main(["--list", *flags])
    assert capsys.readouterr().out.split()[:2] == ["lastfm-MASAN-tuned-seed1", "stale:"]
    assert converged.main(["--all", *flags]) == 0
    assert "delete" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        converged.main(["--model", "MASAN-tuned", "--dataset", "lastfm", "--seed", "1", *flags])
    assert "trained with other hidden_size" in capsys.readouterr().err
    assert os.path.isfile(tmp_path / "lastfm-MASAN-tuned-seed1.json")


def test_a_living_process_keeps_its_claim(tmp_path):
    assert run_lock.claim(str(tmp_path), "run")
    assert run_lock.holder(str(tmp_path), "run") == os.getpid()
    with open(tmp_path / ".state" / "run" / "lock", "w") as f:
        f.write(str(os.getppid()))  # another living process
    assert not run_lock.claim(str(tmp_path), "run")
    assert run_lock.holder(str(tmp_path), "run") == os.getppid()
    with open(tmp_path / ".state" / "run" / "lock", "w") as f:
        f.write("999999999")  # a process that is gone
    assert run_lock.claim(str(tmp_path), "run")


# ---------------------------------------------------------------------------- the two test protocols


def built_run(config_dict, model="SASRec"):
    """Config, unsplit-data histories, test data and trainer of a run on the generated dataset."""
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.utils import get_model, get_trainer, init_seed

    config = Config(model=model, dataset=SYNTH, config_dict=config_dict)
    init_seed(config["seed"], config["reproducibility"])
    dataset = create_dataset(config)
    histories = protocol.user_histories(dataset)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    trainer = get_trainer(config["MODEL_TYPE"], model)(config, get_model(model)(config, train_data._dataset))
    return config, dataset, histories, train_data, valid_data, test_data, trainer


def test_metrics_from_ranks_are_recboles_evaluators(tiny_config):
    metrics, topk = ["Hit", "NDCG", "MRR", "Recall", "Precision", "MAP"], [1, 5, 10]
    config, _, histories, train_data, valid_data, test_data, trainer = built_run(
        dict(tiny_config, epochs=1, metrics=metrics, topk=topk, metric_decimal_place=12))
    trainer.fit(train_data, valid_data, saved=False)
    recbole = trainer.evaluate(test_data, load_best_model=False)
    scored = converged.score_test_users(trainer, test_data, histories)
    ours = converged.rank_metrics(scored.ranks, metrics, topk)
    assert list(ours) == list(recbole) and len(ours) == 18
    assert ours == pytest.approx(dict(recbole), abs=1e-9)
    assert 0 < ours["hit@10"] < 1 and ours["mrr@10"] < ours["hit@10"]  # not a degenerate ranking
    converged.check_matches_recbole(ours, {k: round(v, 4) for k, v in recbole.items()}, 4)
    with pytest.raises(ValueError, match="differ from RecBole"):
        converged.check_matches_recbole(ours, {**recbole, "ndcg@10": recbole["ndcg@10"] + 1e-3}, 4)
    with pytest.raises(ValueError, match="per-target"):
        converged.rank_metrics(scored.ranks, ["GiniIndex"], topk)


def test_earlier_items_are_scored_zero_not_removed():
    import torch

    #                     pad     1    2    3     4    5
    scores = torch.tensor([[-math.inf, 5.0, 1.0, 3.0, -2.0, 0.5],
                           [-math.inf, -1.0, -3.0, 2.0, -0.5, -4.0]])
    rows, items = torch.tensor([0, 0, 1, 1]), torch.tensor([1, 3, 1, 3])  # user 0 had 1, 3; user 1 had 1, 3
    excluded = protocol.exclude_history(scores, rows, items)
    assert excluded[0].tolist() == [-math.inf, 0.0, 1.0, 0.0, -2.0, 0.5] and scores[0, 1] == 5.0  # a copy
    # user 0's target 2: third under RecBole (items 1 and 3 above it), first once they are scored 0
    users, targets = torch.tensor([0, 1]), torch.tensor([2, 1])
    assert converged.target_ranks(scores, users, targets).tolist() == [3, 3]
    assert converged.target_ranks(excluded, users, targets).tolist()[0] == 1
    assert excluded[0].argmax() == 2  # the history item with the top score is no longer first
    # user 1's target 1 repeats an earlier item: scored 0, it still ranks first, for every other
    # item scores below 0 (item 3's 2.0 is history too); under -inf it would be unrankable
    assert converged.target_ranks(excluded, users, targets).tolist()[1] == 1
    # and a repeated target falls behind every item scoring above 0: user 0 with target 3
    assert converged.target_ranks(excluded, torch.tensor([0]), torch.tensor([3])).tolist() == [3]


def inter_file_sequences(data_root, dataset):
    """Each user's items in time order, read from the generated file, as internal ids (no RecBole)."""
    import pandas as pd

    frame = pd.read_csv(os.path.join(data_root, SYNTH, f"{SYNTH}.inter"), sep="\t")
    frame.columns = [c.split(":")[0] for c in frame.columns]
    frame = frame.sort_values(["user_id", "timestamp"])
    return {int(dataset.token2id("user_id", str(u))): [int(i) for i in dataset.token2id("item_id", group.item_id.astype(str).tolist())]
            for u, group in frame.groupby("user_id")}


def test_history_excluded_ranks_leave_out_the_whole_history(tiny_config, data_root, monkeypatch):
    """Scores made up per user: every earlier item on top (100+), the rest in (-1, 1). With a
    5-item model input, the history the rule needs is the whole sequence, read here from the file."""
    import numpy as np
    import torch

    config, dataset, histories, _, _, test_data, trainer = built_run(dict(tiny_config, MAX_ITEM_LIST_LENGTH=5))
    sequences = inter_file_sequences(data_root, dataset)
    rng = np.random.default_rng(0)
    table = torch.tensor(rng.uniform(-1, 1, (dataset.user_num, dataset.item_num)))
    for user, items in sequences.items():
        table[user, items[:-1]] += 100
    monkeypatch.setattr(trainer.model, "full_sort_predict", lambda interaction: table[interaction["user_id"]].clone())
    trainer.tot_item_num = dataset.item_num  # as RecBole's evaluate sets it before scoring

    scored = converged.score_test_users(trainer, test_data, histories)
    assert sorted(scored.users) == sorted(sequences)  # every user tested once
    expected, expected_excluded, repeats = [], [], 0
    for user in scored.users:
        items, target = sequences[user][:-1], sequences[user][-1]
        row = table[user].clone()
        row[0] = -math.inf
        expected.append(int((row > row[target]).sum()) + 1)
        row[items] = 0.0
        expected_excluded.append(int((row > row[target]).sum()) + 1)
        if target in items:  # a repeat, scored 0: behind the items above 0, ahead of those below
            repeats += 1
            assert expected_excluded[-1] == 1 + int((row > 0).sum()) < dataset.item_num - len(set(items))
    assert scored.ranks.tolist() == expected
    assert scored.ranks_history_excluded.tolist() == expected_excluded
    assert repeats and max(len(s) for s in sequences.values()) > 5 + 1  # both cases are in the data
    # while RecBole ranks the whole history above such a target
    assert all(rank > len(set(sequences[user][:-1])) for user, rank in zip(scored.users, expected)
               if sequences[user][-1] not in sequences[user][:-1])


def test_the_history_is_every_interaction_but_the_test_target(tiny_config):
    import torch

    _, dataset, histories, *_ = built_run(tiny_config)
    users = torch.tensor([1, 2])
    last = histories.items[histories.ends[users] - 1]
    rows, items = protocol.earlier_items(histories, users, last)
    assert len(rows) == int((histories.ends[users] - histories.starts[users] - 1).sum())
    assert items.tolist() == histories.items[histories.starts[1]:histories.ends[1] - 1].tolist() + \
        histories.items[histories.starts[2]:histories.ends[2] - 1].tolist()
    # with equal times the target may come earlier in the stored order: the others are the history
    first = histories.items[histories.starts[users]]
    rows, items = protocol.earlier_items(histories, users, first)
    for row, user in enumerate(users.tolist()):
        whole = histories.items[histories.starts[user]:histories.ends[user]].tolist()
        whole.reverse(), whole.remove(first[row].item()), whole.reverse()  # its last occurrence goes
        assert sorted(items[rows == row].tolist()) == sorted(whole)
    absent = torch.tensor([i for i in range(1, dataset.item_num) if i not in
                           histories.items[histories.starts[1]:histories.ends[1]].tolist()][:1] + [last[1].item()])
    with pytest.raises(ValueError, match="not among their users' interactions"):
        protocol.earlier_items(histories, users, absent)
    with pytest.raises(ValueError, match="before data_preparation"):
        protocol.user_histories(dataset)  # data_preparation has built it since


@pytest.mark.slow
def test_rescore_adds_the_history_fields_and_nothing_else(tiny_config, tmp_path, capsys):
    out = tmp_path / "out"
    record = converged.train("SASRec", SYNTH, 2020, dict(tiny(tiny_config), epochs=2), out=str(out))
    path = out / f"{SYNTH}-SASRec-seed2020.json"
    written = json.loads(path.read_text())
    assert set(converged.HISTORY_FIELDS) <= set(written)
    assert written["per_user_ndcg@10_history_excluded"]["mean"] == pytest.approx(
        written["test_result_history_excluded"]["ndcg@10"], abs=1e-4)
    assert written["test_result_history_excluded"].keys() == written["test_result"].keys()
    # a file from before the fields existed
    older = {k: v for k, v in written.items() if k not in converged.HISTORY_FIELDS}
    converged.write_json(str(path), older)
    assert converged.main(["--rescore", "--out", str(out), "--datasets", SYNTH]) == 0
    rescored = json.loads(path.read_text())
    assert rescored == written and list(rescored) == list(older) + list(converged.HISTORY_FIELDS)
    converged.main(["--rescore", "--out", str(out)])
    assert "has the history-excluded fields already" in capsys.readouterr().out
    # no checkpoint, no rescoring
    converged.write_json(str(path), older)
    os.remove(out / ".state" / f"{SYNTH}-SASRec-seed2020" / "best.pth")
    with pytest.raises(converged.RescoreError, match="best-validation checkpoint .* is missing"):
        converged.rescore(str(path), str(out))
    assert converged.main(["--rescore", "--out", str(out)]) == 1
    assert json.loads(path.read_text()) == older
    assert record["test_result_history_excluded"] == written["test_result_history_excluded"]


@pytest.mark.slow
def test_session_files_have_no_history_to_exclude(tmp_path):
    # SR-GNN's files: no time column and no user behind a row, so only RecBole's protocol applies
    from masan_recbole.data import convert
    from test_session_data import write_srgnn

    convert("diginetica", write_srgnn(str(tmp_path / "src")), str(tmp_path / "data"), valid_fraction=0.25)
    settings = {"data_path": str(tmp_path / "data"), "topk": [5], "valid_metric": "MRR@5", "epochs": 2,
                "hidden_size": 8, "inner_size": 16, "state": "ERROR"}
    record = converged.train("SR-SAN", "diginetica", 2020, settings, out=str(tmp_path / "out"))
    assert record["test_result_history_excluded"] is None and record["per_user_ndcg@10_history_excluded"] is None
    assert len(unpack(record["per_user_ndcg@10"])[1]) == 3  # one per test pair
    assert set(record["test_result"]) == {"hit@5", "mrr@5"} and record["epochs_run"] == 2
    assert converged.rescore_all(str(tmp_path / "out")) == 0  # nothing to add, nothing refused


def session_run(tmp_path, out="out"):
    """A finished SR-SAN run on a tiny SR-GNN split (4 training, 3 validation, 3 test rows)."""
    from masan_recbole.data import convert
    from test_session_data import write_srgnn

    if not (tmp_path / "data").exists():
        convert("diginetica", write_srgnn(str(tmp_path / "src")), str(tmp_path / "data"), valid_fraction=0.25)
    settings = {"data_path": str(tmp_path / "data"), "topk": [5], "valid_metric": "MRR@5", "epochs": 2,
                "hidden_size": 8, "inner_size": 16, "state": "ERROR", "lr_step_size": 1}
    converged.train("SR-SAN", "diginetica", 2020, settings, out=str(tmp_path / out))
    path = tmp_path / out / "diginetica-SR-SAN-seed2020.json"
    record = json.loads(path.read_text())
    record["best_epoch"] = 2  # as if validation had chosen the third epoch: the refit trains three
    path.write_text(json.dumps(record))
    return path, record


def refit_weights(out):
    from masan_recbole.checkpoint import load_checkpoint

    return load_checkpoint(os.path.join(out, ".state", "diginetica-SR-SAN-seed2020", "refit", "latest.pth"))


@pytest.mark.slow
def test_refit_trains_on_training_and_validation_rows_for_the_chosen_epochs(tmp_path):
    path, record = session_run(tmp_path)
    refitted = converged.refit(str(path), str(tmp_path / "out"))
    assert refitted["refit"]["epochs"] == 3 and refitted["refit"]["train_rows"] == 4 + 3
    assert set(refitted["test_result_refit"]) == {"hit@5", "mrr@5"}
    saved = json.loads(path.read_text())
    assert {k: v for k, v in saved.items() if k not in converged.REFIT_FIELDS} == record
    state = refit_weights(str(tmp_path / "out"))
    assert state["epoch"] == 2 and state["scheduler"]["last_epoch"] == 3  # the run's schedule, three steps
    # a refitted run is not trained again
    assert converged.refit(str(path), str(tmp_path / "out"))["test_result_refit"] == saved["test_result_refit"]


@pytest.mark.slow
def test_an_interrupted_refit_resumes_to_the_same_model(tmp_path, monkeypatch):
    path, _ = session_run(tmp_path, "whole")
    whole = converged.refit(str(path), str(tmp_path / "whole"))
    cut_path, _ = session_run(tmp_path, "cut")

    # after the second epoch's time, before its checkpoint
    killed_in(monkeypatch, lambda: converged.refit(str(cut_path), str(tmp_path / "cut")),
              "write_json", lambda target, data: target.endswith("progress.json") and len(data["train_seconds"]) == 2)
    assert refit_weights(str(tmp_path / "cut"))["epoch"] == 0
    resumed = converged.refit(str(cut_path), str(tmp_path / "cut"))
    assert resumed["test_result_refit"] == whole["test_result_refit"]
    a, b = refit_weights(str(tmp_path / "whole"))["state_dict"], refit_weights(str(tmp_path / "cut"))["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_refit_refuses_a_leave_one_out_split(tiny_config, tmp_path):
    from recbole.config import Config
    from recbole.data import create_dataset

    config = Config(model="SASRec", dataset=SYNTH, config_dict=tiny(tiny_config))
    with pytest.raises(ValueError, match="refit needs a dataset read from train, valid and test files"):
        converged.with_validation_in_training(create_dataset(config))


def test_the_session_runs_are_refitted_and_listed_until_they_are(tmp_path, capsys):
    assert all(r.refit for r in converged.load_matrix() if r.model == "SR-SAN")
    assert not any(r.refit for r in converged.load_matrix() if r.model != "SR-SAN")
    matrix = tmp_path / "matrix.yaml"
    matrix.write_text("datasets:\n  diginetica:\n    models:\n      SR-SAN: {seeds: [2020], refit: true}\n")
    out = tmp_path / "out"
    out.mkdir()
    finished = {"schema_version": 2, "model": "SR-SAN", "stopped_early": True, "epochs_run": 14, "config": {}}
    (out / "diginetica-SR-SAN-seed2020.json").write_text(json.dumps(finished))
    converged.main(["--list", "--matrix", str(matrix), "--out", str(out)])
    assert capsys.readouterr().out.split() == ["diginetica-SR-SAN-seed2020", "refit", "pending"]
    (out / "diginetica-SR-SAN-seed2020.json").write_text(json.dumps({**finished, "test_result_refit": {}, "refit": {}}))
    converged.main(["--list", "--matrix", str(matrix), "--out", str(out)])
    assert capsys.readouterr().out.split() == ["diginetica-SR-SAN-seed2020", "done"]


@pytest.mark.slow
def test_raising_the_epochs_of_a_run_that_did_not_stop_early_continues_it(tiny_config, tmp_path):
    settings = {**tiny(tiny_config), "stopping_step": 20}  # no early stopping within 6 epochs
    straight = converged.train("SASRec", SYNTH, 2020, {**settings, "epochs": 5}, out=str(tmp_path / "straight"))
    short = converged.train("SASRec", SYNTH, 2020, {**settings, "epochs": 3}, out=str(tmp_path / "raised"))
    assert short["epochs_run"] == 3 and not short["stopped_early"]
    run = converged.Run(SYNTH, "SASRec", "SASRec", 2020, {**settings, "epochs": 5})
    assert converged.run_state(run, str(tmp_path / "raised")) == "started"
    raised = converged.train("SASRec", SYNTH, 2020, {**settings, "epochs": 5}, out=str(tmp_path / "raised"))
    assert converged.run_state(run, str(tmp_path / "raised")) == "done"
    for key in ("best_epoch", "epochs_run", "test_result", "valid_curve"):
        assert raised[key] == straight[key], key
    # a run that early stopping ended stays as it is, whatever its epochs now
    path = tmp_path / "raised" / f"{SYNTH}-SASRec-seed2020.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "stopped_early": True}))
    assert converged.train("SASRec", SYNTH, 2020, {**settings, "epochs": 8}, out=str(tmp_path / "raised"))["epochs_run"] == 5


@pytest.mark.slow
def test_a_refit_of_fewer_epochs_than_its_state_starts_over(tmp_path):
    path, record = session_run(tmp_path)
    converged.refit(str(path), str(tmp_path / "out"))  # three epochs
    saved = json.loads(path.read_text())
    for key in converged.REFIT_FIELDS:
        del saved[key]
    path.write_text(json.dumps({**saved, "best_epoch": 0}))  # the run went on and now chooses its first epoch
    shorter = converged.refit(str(path), str(tmp_path / "out"))
    assert shorter["refit"]["epochs"] == 1 and refit_weights(str(tmp_path / "out"))["epoch"] == 0
    fresh_path, _ = session_run(tmp_path, "fresh")
    fresh_path.write_text(json.dumps({**json.loads(fresh_path.read_text()), "best_epoch": 0}))
    fresh = converged.refit(str(fresh_path), str(tmp_path / "fresh"))
    assert shorter["test_result_refit"] == fresh["test_result_refit"]
    a, b = refit_weights(str(tmp_path / "out"))["state_dict"], refit_weights(str(tmp_path / "fresh"))["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_a_refit_state_of_another_run_is_not_reused(tmp_path, capsys):
    path, record = session_run(tmp_path)
    first = converged.refit(str(path), str(tmp_path / "out"))
    # the run was trained again with other settings, its refit fields dropped: the old refit is not its
    changed = {k: v for k, v in json.loads(path.read_text()).items() if k not in converged.REFIT_FIELDS}
    changed["settings"] = {**changed["settings"], "dropout_prob": 0.5}
    changed["config"] = {**changed["config"], "dropout_prob": 0.5}
    path.write_text(json.dumps(changed))
    capsys.readouterr()
    again = converged.refit(str(path), str(tmp_path / "out"))
    assert "starting over" in capsys.readouterr().out
    assert again["refit"]["epochs"] == first["refit"]["epochs"] == 3


def test_the_best_epoch_is_the_last_of_equal_scores_as_recboles_early_stopping_keeps_it():
    from recbole.utils import early_stopping

    curve = [{"epoch": e, "score": s} for e, s in enumerate([0.1, 0.3, 0.2, 0.3, 0.25])]
    best, step, kept = -1.0, 0, None
    for point in curve:  # RecBole's own rule, epoch by epoch
        best, step, _, update = early_stopping(point["score"], best, step, max_step=10, bigger=True)
        kept = point["epoch"] if update else kept
    assert converged.best_point(curve)["epoch"] == kept == 3
    lower = [{"epoch": e, "score": s} for e, s in enumerate([0.5, 0.2, 0.4, 0.2])]
    assert converged.best_point(lower, bigger=False)["epoch"] == 3
