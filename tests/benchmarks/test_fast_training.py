"""benchmarks.fast_training: the baseline first, ratios against it, RecBole's epoch numbering."""

import pytest


def benchmarks_module(name):
    """A module of benchmarks/, a folder of the repository rather than an installed package."""
    import importlib
    import os
    import sys

    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    if repo not in sys.path:
        sys.path.insert(0, repo)
    return importlib.import_module(f"benchmarks.{name}")


@pytest.mark.slow
def test_benchmark_reports_ratios_against_recboles_sasrec(data_root, tmp_path, monkeypatch):
    import json
    import sys

    fast_training = benchmarks_module("fast_training")

    out = tmp_path / "results"
    monkeypatch.setattr(sys, "argv", [
        "fast_training", "--dataset", "synth", "--seeds", "1", "2", "--prefix-epochs", "1", "--fast-epochs", "3",
        "--fast-batch-size", "32", "--out", str(out), f"--data_path={data_root}",
        f"--checkpoint_dir={tmp_path / 'saved'}", "--hidden_size=16", "--inner_size=32", "--n_layers=1",
        "--MAX_ITEM_LIST_LENGTH=20", "--state=WARNING",
    ])
    fast_training.main()
    report = json.loads((out / "fast_training-synth-cpu.json").read_text())
    assert report["schema_version"] == 2 and report["device"] == "cpu" and report["threads"] == 1
    assert {"python", "torch", "recbole", "numpy", "pandas", "git"} <= set(report["versions"])
    assert set(report["runs"]) == {"1", "2"}
    for runs in report["runs"].values():
        assert list(runs) == list(fast_training.VARIANTS)
        base = runs[fast_training.BASELINE]
        assert base["ratios"]["seconds_per_epoch"] == 1.0 and base["epochs_run"] == 1
        fast = runs["SASRec (all positions, CE)"]
        assert fast["epochs_run"] == 3 and fast["train_rows"] < base["train_rows"]
        assert fast["window_stride"] == 2 and "window_stride" not in base  # ~ = L // 10
        assert fast["ratios"]["seconds_per_epoch"] == pytest.approx(
            fast["seconds_per_epoch"] / base["seconds_per_epoch"])
        assert all(0 <= run["test"]["ndcg@10"] <= 1 for run in runs.values())
        # the loss each run resolved to is recorded, not the variant's intent
        assert fast["loss_type"] == "CE" and "ssm_sampler" not in fast
        assert runs["SASRec (all positions, SSM in-batch)"]["ssm_sampler"] == "in_batch"
        assert runs["SASRec (all positions, SSM)"]["ssm_num_negatives"] == 256
    table = (out / "fast_training-synth-cpu.md").read_text()
    assert "| SASRec (all positions, SSM) | 2 |" in table and "Mean over seeds" in table


def test_the_baseline_runs_first_whatever_variants_are_asked(tmp_path, monkeypatch):
    import json
    import sys

    fast_training = benchmarks_module("fast_training")
    calls = []

    def fake_run(model, dataset, config):
        fast = config.get("train_mode") == "all_positions"
        calls.append((model, config.get("train_mode"), config["epochs"], config.get("train_batch_size")))
        scores, seconds = ([0.1, 0.3, 0.2], 1.0) if fast else ([0.2, 0.25], 10.0)
        epochs = [{"train_s": seconds, "valid_score": s, "wall_s": seconds * n} for n, s in enumerate(scores, 1)]
        best = max(range(len(scores)), key=scores.__getitem__)
        return {"model": model, "train_rows": 10 if fast else 100, "epochs": epochs, "epochs_run": len(epochs),
                "seconds_per_epoch": seconds, "best_epoch": best, "best_valid_score": scores[best],
                "wall_to_best_s": epochs[best]["wall_s"], "test": {"ndcg@10": 0.05, "hit@10": 0.1}}

    monkeypatch.setattr(fast_training, "run_variant", fake_run)
    monkeypatch.setattr(sys, "argv", [
        "fast_training", "--dataset", "synth", "--seeds", "1", "--variants", "SASRec (all positions, CE)",
        "--prefix-epochs", "2", "--fast-epochs", "3", "--device", "cpu", "--out", str(tmp_path), "--hidden_size=16",
    ])
    fast_training.main()
    report = json.loads((tmp_path / "fast_training-synth-cpu.json").read_text())
    assert calls == [("RecBoleSASRec", None, 2, None), ("SASRec", "all_positions", 3, 128)]
    assert list(report["runs"]["1"]) == [fast_training.BASELINE, "SASRec (all positions, CE)"]
    assert report["settings"] == ["--hidden_size=16"]
    fast = report["runs"]["1"]["SASRec (all positions, CE)"]
    # RecBole's best, 0.25, is first passed at the fast run's second epoch: 2 s against RecBole's 20 s
    assert fast["wall_to_baseline_best_s"] == 2.0
    assert fast["ratios"] == {"seconds_per_epoch": 0.1, "wall_to_best": 0.1, "wall_to_baseline_best": 0.1}
    mean_row = (tmp_path / "fast_training-synth-cpu.md").read_text().splitlines()[-1]
    assert mean_row.startswith("| SASRec (all positions, CE) | 0.1000 | 0.1000 | 0.3000 | ")


def test_the_best_epoch_is_recboles_numbering_and_choice(monkeypatch):
    """Epochs from 0 as RecBole logs them, and of equal best scores the last, as RecBole keeps it."""
    fast_training = benchmarks_module("fast_training")
    curve = [{"epoch": e, "seconds": 0.5, "score": s} for e, s in enumerate([0.3, 0.1, 0.3, 0.2])]
    monkeypatch.setattr(fast_training, "run_model", lambda *args: {
        "valid_curve": curve, "train_seconds": [1.0] * 4, "train_seconds_per_epoch": 1.0, "train_rows": 10,
        "test": {}, "config": {"loss_type": "CE"}})
    run = fast_training.run_variant("SASRec", "synth", {})
    assert run["best_epoch"] == 2 and run["best_valid_score"] == 0.3 and run["wall_to_best_s"] == 4.5
