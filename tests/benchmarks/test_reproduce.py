"""benchmarks.reproduce on generated data: a tiny preset (SASRec and RecBole's SASRec, one epoch)
through the real command-line path, a failing model that must not lose the other's results, the
on-the-fly conversion and the errors for bad input; and the shared benchmark harness (config
hashes, result files and their schema version)."""

import json
import os
import sys

import pytest
import yaml

from conftest import SYNTH

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if REPO not in sys.path:  # benchmarks/ is a folder of the repository, not an installed package
    sys.path.insert(0, REPO)

from benchmarks import harness, reproduce  # noqa: E402
from benchmarks.reproduce import cli  # noqa: E402

TINY = {
    "hidden_size": 16, "inner_size": 32, "n_layers": 1, "n_heads": 2, "MAX_ITEM_LIST_LENGTH": 20,
    "hidden_dropout_prob": 0.1, "attn_dropout_prob": 0.1, "epochs": 1, "stopping_step": 2,
    "train_batch_size": 256, "eval_batch_size": 512, "learning_rate": 0.005, "seed": 2020,
    "metrics": ["Hit", "NDCG", "MRR"], "topk": [10], "valid_metric": "MRR@10",
}
FULL, SAMPLED = "full ranking, leave-one-out", "100 sampled negatives, leave-one-out"


def write_files(folder, models, overrides=None):
    spec = {
        "models": {"SASRec": {"data": "sequential", "origin": "ours"},
                   "RecBoleSASRec": {"data": "sequential", "origin": "RecBole"},
                   "SR-SAN": {"data": "session", "origin": "ours"}},
        "datasets": {SYNTH: {"kind": "sequential", "source": None}},
        "kinds": {"sequential": {"protocol": "full-loo", "table_metrics": ["hit@10", "ndcg@10", "mrr@10"]},
                  "session": {"protocol": "full-session", "table_metrics": ["hit@20", "mrr@20"]}},
        "speed_pairs": [["SASRec", "RecBoleSASRec"]],
        "presets": {"tiny": {"datasets": {SYNTH: {}}, "models": models, "shared": TINY,
                             "overrides": overrides or {}}},
    }
    anchors = {
        "protocols": {"full-loo": FULL, "sampled100-loo": SAMPLED},
        "anchors": [
            {"model": "SASRec", "dataset": SYNTH, "protocol": "full-loo", "metric": "hit@10", "value": 0.5,
             "source": "paper A"},
            {"model": "SASRec", "dataset": SYNTH, "protocol": "sampled100-loo", "metric": "ndcg@10", "value": 0.7,
             "source": "paper B", "data": "another version"},
            {"model": "SR-GNN", "dataset": SYNTH, "protocol": "full-loo", "metric": "mrr@10", "value": 0.3,
             "source": "paper C"},
        ],
    }
    presets, anchor_file = folder / "presets.yaml", folder / "anchors.yaml"
    presets.write_text(yaml.safe_dump(spec))
    anchor_file.write_text(yaml.safe_dump(anchors))
    return str(presets), str(anchor_file)


def run_cli(tmp_path, data_root, models, *extra, overrides=None):
    presets, anchors = write_files(tmp_path, models, overrides)
    out = tmp_path / "results"
    code = reproduce.main(["--preset", "tiny", "--preset-file", presets, "--anchors", anchors, "--device", "cpu",
                           "--data-path", data_root, "--out-dir", str(out), "--run", "tiny", "--threads", "1", *extra])
    report = json.loads((out / "tiny.json").read_text())
    return code, report, (out / "tiny.md").read_text(), out


def row(markdown, name):
    """Cells of the table row of ``name`` and the header row of its table."""
    lines = markdown.splitlines()
    (index,) = [i for i, line in enumerate(lines) if line.startswith(f"| {name} ")]
    header = next(lines[i] for i in range(index, -1, -1) if lines[i].startswith("| model |"))
    cells = [c.strip() for c in lines[index].strip("|").split("|")]
    return dict(zip([c.strip() for c in header.strip("|").split("|")], cells))


@pytest.mark.slow
def test_tiny_preset_writes_json_table_ratios_and_plots(tmp_path, data_root):
    code, report, markdown, out = run_cli(tmp_path, data_root, ["SASRec", "RecBoleSASRec"])
    assert code == 0
    assert report["schema_version"] == harness.SCHEMA_VERSION == 2
    assert report["device"] == "cpu" and report["isolated"] is True and report["threads"] == 1
    assert {"torch", "recbole", "masan_recbole", "python", "numpy", "pandas", "git"} <= set(report["versions"])
    assert report["settings"]["shared"] == TINY
    results = report["results"][SYNTH]
    assert list(results) == ["SASRec", "RecBoleSASRec"]
    for name, r in results.items():
        assert r["status"] == "ok", r.get("error")
        assert r["epochs"] == 1 and len(r["train_seconds"]) == 1 and r["train_seconds_per_epoch"] > 0
        assert r["eval_seconds"] > 0 and r["test_eval_seconds"] > 0
        assert r["peak_memory_mb"] > 100 and "own process" in r["peak_memory_kind"]
        assert [p["epoch"] for p in r["valid_curve"]] == [0]  # RecBole's epoch number, from 0
        assert r["valid_curve"][0]["score"] == pytest.approx(r["best_valid_score"])
        assert set(r["test"]) >= {"hit@10", "ndcg@10", "mrr@10"}
        assert 0 < r["test"]["hit@10"] <= 1
        # the shared settings reach RecBole's built-in model as well as ours
        assert r["config"]["hidden_size"] == 16 and r["config"]["seed"] == 2020 and r["config"]["epochs"] == 1
        assert r["config_hash"] == harness.config_hash(r["config"])  # the hash of the settings it records
    assert results["SASRec"]["config_hash"] != results["RecBoleSASRec"]["config_hash"]

    (ratio,) = report["speed_ratios"]
    assert (ratio["model"], ratio["reference"], ratio["same_shapes"]) == ("SASRec", "RecBoleSASRec", True)
    assert ratio["train_ratio"] == pytest.approx(
        results["SASRec"]["train_seconds_per_epoch"] / results["RecBoleSASRec"]["train_seconds_per_epoch"])
    assert ratio["eval_ratio"] == pytest.approx(results["SASRec"]["eval_seconds"] / results["RecBoleSASRec"]["eval_seconds"])

    # anchors beside ours, one column per protocol; RecBole's SASRec shows SASRec's figures too
    for name in ("SASRec (ours)", "RecBoleSASRec (RecBole)"):
        cells = row(markdown, name)
        assert cells["HR@10"] == f"{results[name.split()[0]]['test']['hit@10']:.4f}"
        assert "HR@10 0.5000" in cells[f"published: {FULL}"] and "0.7000" not in cells[f"published: {FULL}"]
        assert "NDCG@10 0.7000" in cells[f"published: {SAMPLED}"] and "0.5000" not in cells[f"published: {SAMPLED}"]
    published_only = row(markdown, "SR-GNN (published only)")
    assert published_only["HR@10"] == "—" and "MRR@10 0.3000" in published_only[f"published: {FULL}"]
    assert "paper B; data: another version" in markdown
    assert f"| {SYNTH} | SASRec | RecBoleSASRec | " in markdown and f"| {ratio['train_ratio']:.2f} |" in markdown

    for suffix in ("-curves.png", "-speed.png"):
        image = (out / f"tiny{suffix}").read_bytes()
        assert image[:8] == b"\x89PNG\r\n\x1a\n" and len(image) > 5000


@pytest.mark.slow
def test_a_failing_model_is_recorded_and_the_others_kept(tmp_path, data_root):
    # 3 heads do not divide hidden_size 16: our SASRec fails while it is built.
    code, report, markdown, _ = run_cli(tmp_path, data_root, ["SASRec", "RecBoleSASRec"], "--in-process",
                                        overrides={"SASRec": {"n_heads": 3}})
    assert code == 1
    failed, kept = report["results"][SYNTH]["SASRec"], report["results"][SYNTH]["RecBoleSASRec"]
    assert failed["status"] == "error" and "n_heads 3" in failed["error"] and "Traceback" in failed["traceback"]
    assert kept["status"] == "ok" and kept["epochs"] == 1 and "hit@10" in kept["test"]
    assert "process-wide" in kept["peak_memory_kind"]
    assert report["speed_ratios"] == []
    assert row(markdown, "SASRec (ours)")["HR@10"].startswith("failed: ValueError")
    assert "## Errors" in markdown


def test_settings_layer_shared_dataset_override_epochs(tmp_path):
    presets, _ = write_files(tmp_path, ["SASRec", "RecBoleSASRec"], overrides={"SASRec": {"hidden_size": 24}})
    spec = reproduce.load_presets(presets)
    spec["presets"]["tiny"]["datasets"][SYNTH] = {"MAX_ITEM_LIST_LENGTH": 10, "hidden_size": 8}
    jobs, skipped = reproduce.plan(spec, "tiny", models=["SASRec", "RecBoleSASRec", "SR-SAN"], epochs=3)
    by_model = {job["model"]: job["config"] for job in jobs}
    assert set(by_model) == {"SASRec", "RecBoleSASRec"} and skipped == [f"SR-SAN on {SYNTH} (session model, sequential data)"]
    assert by_model["SASRec"]["hidden_size"] == 24 and by_model["RecBoleSASRec"]["hidden_size"] == 8
    assert by_model["SASRec"]["MAX_ITEM_LIST_LENGTH"] == 10 and by_model["SASRec"]["epochs"] == 3
    assert by_model["SASRec"]["seed"] == 2020


def planned_report(presets, *extra):
    """The report ``main`` starts from (no job run yet), as its Markdown header shows it."""
    args = reproduce.parse_args(["--preset", "tiny", "--preset-file", presets, *extra])
    spec = reproduce.load_presets(presets)
    jobs, skipped = reproduce.plan(spec, "tiny", args.models, args.datasets, args.epochs, settings=dict(args.set))
    report = cli.new_report(args, [], spec, jobs, skipped, "cpu")
    return report, dict(report, wall_seconds=0.0)


def test_the_header_shows_the_epochs_used_and_the_run_hash_follows_the_settings(tmp_path):
    presets, _ = write_files(tmp_path, ["SASRec", "RecBoleSASRec"], overrides={"SASRec": {"epochs": 6}})
    spec = yaml.safe_load((tmp_path / "presets.yaml").read_text())
    spec["presets"]["tiny"]["shared"]["epochs"] = 4
    spec["presets"]["tiny"]["datasets"][SYNTH] = {"epochs": 5, "MAX_ITEM_LIST_LENGTH": 10}
    (tmp_path / "presets.yaml").write_text(yaml.safe_dump(spec))  # keys sorted, as write_files does

    as_written, shown = planned_report(presets)
    header = next(line for line in reproduce.markdown(shown, {}).splitlines() if line.startswith("Shared by"))
    assert "epochs 4" in header and f"{SYNTH} {{'MAX_ITEM_LIST_LENGTH': 10, 'epochs': 5}}" in header and "SASRec {'epochs': 6}" in header

    narrowed, shown = planned_report(presets, "--epochs", "1")
    header = next(line for line in reproduce.markdown(shown, {}).splitlines() if line.startswith("Shared by"))
    assert "epochs 1" in header and "epochs 4" not in header and "'epochs'" not in header
    assert f"{SYNTH} {{'MAX_ITEM_LIST_LENGTH': 10}}" in header and "overrides" not in header
    assert narrowed["preset_config"]["shared"]["epochs"] == 4  # the preset as written is kept too
    assert narrowed["partial"] and narrowed["run"] == "reproduce-tiny-cpu-partial"

    # the run's hash: equal for equal settings, another for other settings
    assert planned_report(presets)[0]["config_hash"] == as_written["config_hash"] != narrowed["config_hash"]
    assert planned_report(presets, "--epochs", "1")[0]["config_hash"] == narrowed["config_hash"]
    assert planned_report(presets, "--models", "SASRec")[0]["config_hash"] != as_written["config_hash"]


def test_set_gives_every_model_the_same_settings_and_baseline_pairs_every_model_with_it(tmp_path, capsys):
    presets, _ = write_files(tmp_path, ["SASRec", "RecBoleSASRec"], overrides={"SASRec": {"hidden_size": 24}})
    spec = yaml.safe_load((tmp_path / "presets.yaml").read_text())
    spec["presets"]["tiny"]["datasets"][SYNTH] = {"MAX_ITEM_LIST_LENGTH": 10}
    (tmp_path / "presets.yaml").write_text(yaml.safe_dump(spec))

    extra = ["--set", "hidden_size=64", "MAX_ITEM_LIST_LENGTH=50", "loss_type=CE", "--baseline", "RecBoleSASRec"]
    report, shown = planned_report(presets, *extra)
    args = reproduce.parse_args(["--preset", "tiny", "--preset-file", presets, *extra])
    jobs, _ = reproduce.plan(reproduce.load_presets(presets), "tiny", settings=dict(args.set))
    for job in jobs:  # above the shared, per-dataset and per-model layers; values read as YAML
        assert (job["config"]["hidden_size"], job["config"]["MAX_ITEM_LIST_LENGTH"]) == (64, 50)
    assert report["settings"]["shared"]["hidden_size"] == 64 and report["settings"]["overrides"]["SASRec"] == {}
    assert report["partial"] and "hidden_size 64" in reproduce.markdown(shown, {})
    assert cli.speed_pairs(spec, jobs, "RecBoleSASRec") == [["SASRec", "RecBoleSASRec"]]
    assert cli.speed_pairs(spec, jobs) == spec["speed_pairs"]
    with pytest.raises(SystemExit):
        reproduce.parse_args(["--preset", "tiny", "--set", "hidden_size"])
    assert "invalid setting value: 'hidden_size'" in capsys.readouterr().err


def test_config_hash_is_equal_for_equal_settings_only():
    settings = {"hidden_size": 16, "n_layers": 2, "loss_type": "CE", "topk": [10], "train_neg_sample_args": None}
    assert harness.config_hash(settings) == harness.config_hash(dict(reversed(list(settings.items()))))
    assert harness.config_hash(settings) == harness.config_hash(json.loads(json.dumps(settings)))
    others = {harness.config_hash(dict(settings, **change)) for change in (
        {"hidden_size": 32}, {"loss_type": "BPR"}, {"topk": [10, 20]}, {"train_neg_sample_args": {}}, {"seed": 1})}
    assert len(others) == 5 and harness.config_hash(settings) not in others

    # machine-specific keys are left out: the same settings hash alike on another machine
    class Config:
        def __init__(self, **machine):
            self.final_config_dict = dict(settings, **machine)

    here = harness.portable_config(Config(device="cpu", data_path="/here", checkpoint_dir="a", show_progress=True))
    there = harness.portable_config(Config(device="cuda", data_path="/there", gpu_id="1", state="INFO"))
    assert here == there == dict(sorted(settings.items()))
    assert harness.config_hash(here) == harness.config_hash(there)


def test_result_files_carry_the_schema_version_and_old_ones_still_read(tmp_path):
    path = tmp_path / "deeper" / "result.json"
    harness.write_json(path, {"benchmark": "x", "schema_version": 1, "results": {"a": 1}})
    written = json.loads(path.read_text())
    assert list(written) == ["schema_version", "benchmark", "results"] and written["schema_version"] == 2
    assert harness.read_result(path) == written
    assert [p.name for p in path.parent.iterdir()] == ["result.json"]  # no temporary file left

    (tmp_path / "v1.json").write_text(json.dumps({"benchmark": "x"}))  # written before schema_version
    assert harness.schema_version(harness.read_result(tmp_path / "v1.json")) == 1
    for version in (harness.SCHEMA_VERSION + 1, "2", 0, True):
        (tmp_path / "odd.json").write_text(json.dumps({"schema_version": version}))
        with pytest.raises(ValueError, match="reads versions 1 to 2"):
            harness.read_result(tmp_path / "odd.json")


@pytest.mark.parametrize("extra, message", [
    (["--models", "NoSuchModel"], "unknown models ['NoSuchModel']"),
    (["--datasets", "nowhere"], "unknown datasets ['nowhere']"),
    (["--models", "SR-SAN"], "nothing to run"),
    (["--preset", "huge"], "unknown preset 'huge'"),
    (["--baseline", "LightSANs"], "--baseline LightSANs is not a model of this run"),
])
def test_bad_input_is_named(tmp_path, capsys, extra, message):
    presets, anchors = write_files(tmp_path, ["SASRec"])
    code = reproduce.main(["--preset", "tiny", "--preset-file", presets, "--anchors", anchors, *extra])
    assert code == 2 and message in capsys.readouterr().err


def test_missing_dataset_is_converted_from_the_shared_folder(tmp_path, monkeypatch):
    from masan_recbole import data

    calls = []

    def fake_converter(source, out_dir, name, valid_fraction=0.1):
        calls.append(source)
        os.makedirs(out_dir, exist_ok=True)
        with open(os.path.join(out_dir, f"{name}.inter"), "w") as f:
            f.write("user_id:token\titem_id:token\ttimestamp:float\n1\t1\t1\n")
        return {"users": 1}

    monkeypatch.setitem(data.CONVERTERS, "tinyseq", fake_converter)
    shared, data_path = tmp_path / "shared", str(tmp_path / "dataset")
    (shared / "tiny-source").mkdir(parents=True)
    entry = {"kind": "sequential", "source": "tiny-source"}
    assert reproduce.ensure_dataset("tinyseq", entry, data_path, str(shared)) == {"users": 1}
    assert calls == [str(shared / "tiny-source")]
    assert os.path.isfile(os.path.join(data_path, "tinyseq", "tinyseq.inter"))
    assert reproduce.ensure_dataset("tinyseq", entry, data_path, str(shared)) is None  # already there
    assert len(calls) == 1
    with pytest.raises(FileNotFoundError, match="--shared"):
        reproduce.ensure_dataset("tinyseq", entry, str(tmp_path / "elsewhere"), str(tmp_path / "no-shared"))
    with pytest.raises(ValueError, match="no converter"):
        reproduce.ensure_dataset("unconvertible", entry, data_path, str(shared))
