"""benchmarks.converged: a run stopped part-way and started again ends with the numbers of an
uninterrupted run, and its result file holds what the report needs."""

import json
import os

import pytest

from benchmarks import converged
from conftest import SYNTH

SETTINGS = {"epochs": 6, "stopping_step": 2, "state": "ERROR"}


def tiny(config):
    keep = ("data_path", "hidden_size", "inner_size", "n_layers", "n_heads", "MAX_ITEM_LIST_LENGTH", "learning_rate",
            "train_batch_size", "eval_batch_size", "metrics", "topk", "valid_metric", "load_col", "eval_args")
    return {**{k: config[k] for k in keep}, **SETTINGS}


@pytest.mark.slow
def test_an_interrupted_run_resumes_to_the_same_result(tiny_config, tmp_path, monkeypatch):
    whole = converged.train("SASRec", SYNTH, 2020, tiny(tiny_config), out=str(tmp_path / "whole"))

    class Killed(Exception):
        pass

    original = converged.write_json
    calls = []

    def dies_after_three_epochs(path, data):
        original(path, data)
        calls.append(path)
        if path.endswith("progress.json") and len(calls) == 3:
            raise Killed  # between progress.json and latest.pth: the worst moment

    monkeypatch.setattr(converged, "write_json", dies_after_three_epochs)
    with pytest.raises(Killed):
        converged.train("SASRec", SYNTH, 2020, tiny(tiny_config), out=str(tmp_path / "cut"))
    monkeypatch.setattr(converged, "write_json", original)
    assert not os.path.exists(tmp_path / "cut" / f"{SYNTH}-SASRec-seed2020.json")
    resumed = converged.train("SASRec", SYNTH, 2020, tiny(tiny_config), out=str(tmp_path / "cut"))

    for key in ("best_epoch", "epochs_run", "test_result", "best_valid_score"):
        assert resumed[key] == whole[key], key
    assert [p["score"] for p in resumed["valid_curve"]] == [p["score"] for p in whole["valid_curve"]]
    assert resumed["per_user_ndcg@10"]["ndcg"] == whole["per_user_ndcg@10"]["ndcg"]


@pytest.mark.slow
def test_the_result_file_holds_the_report_fields(tiny_config, tmp_path):
    record = converged.train("SASRec", SYNTH, 2021, tiny(tiny_config), out=str(tmp_path))
    with open(tmp_path / f"{SYNTH}-SASRec-seed2021.json") as f:
        saved = json.load(f)
    for key in ("model", "dataset", "seed", "best_epoch", "epochs_run", "stopping_step", "test_result",
                "valid_curve", "config", "train_seconds_per_epoch", "device", "versions", "schema_version"):
        assert key in saved, key
    assert saved["epochs_run"] == len(saved["valid_curve"]) and saved["stopping_step"] == 2
    per_user = record["per_user_ndcg@10"]
    assert len(per_user["ndcg"]) == 150  # every generated user is a test user
    assert per_user["mean"] == pytest.approx(record["test_result"]["ndcg@10"], abs=1e-4)
    # a finished run is not trained again
    assert converged.train("SASRec", SYNTH, 2021, tiny(tiny_config), out=str(tmp_path)) == saved


def test_the_matrix_covers_the_issues_runs():
    runs = {(r.dataset, r.label): set() for r in converged.load_matrix()}
    for r in converged.load_matrix():
        runs[(r.dataset, r.label)].add(r.seed)
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


def test_a_living_process_keeps_its_claim(tmp_path):
    assert converged.claim(str(tmp_path), "run")
    with open(tmp_path / ".state" / "run" / "lock", "w") as f:
        f.write(str(os.getppid()))  # another living process
    assert not converged.claim(str(tmp_path), "run")
    with open(tmp_path / ".state" / "run" / "lock", "w") as f:
        f.write("999999999")  # a process that is gone
    assert converged.claim(str(tmp_path), "run")
