"""benchmarks/speed_table.py: a --quick run on the generated dataset writes both result files, with
the bucketed/padded ratios, the issue's same-run model ratios and the timed batch counts."""

import json

import pytest

from benchmarks import speed_table


@pytest.mark.slow
def test_quick_run_writes_json_and_markdown_with_ratios(tiny_config, tmp_path):
    out = tmp_path / "results"
    report = speed_table.main(["--datasets", "synth", "--quick", "--out", str(out)],
                              extra=dict(tiny_config, train_batch_size=32, eval_batch_size=32))
    data = json.loads((out / "speed_table-quick-cpu.json").read_text())
    assert data["schema_version"] >= 2 and data["finished"] and data["versions"]["torch"]
    synth = data["datasets"]["synth"]
    assert set(synth["models"]) == set(speed_table.DATASETS["beauty"]["models"])
    for label, row in synth["models"].items():
        padded = row["padded"]
        assert padded["train_batches_timed"] == 2 < padded["train_batches_per_epoch"]
        assert padded["train_seconds_per_epoch"] > 0 and padded["eval_seconds"] > 0
        if label == "ASRec":  # cannot bucket: padded only
            assert "bucketed" not in row and "bucketed_over_padded" not in row
        else:
            assert row["bucketed"]["train_batches_timed"] == 2
            assert row["bucketed_over_padded"]["train"] > 0
    assert set(synth["ratios"]) == {"MASAN / LightSANs (padded)", "ASRec / SASRec (padded)"}
    assert 0 < synth["bucketed_token_share"]["train"] <= 1
    text = (out / "speed_table-quick-cpu.md").read_text()
    assert "MASAN / LightSANs (padded)" in text and "cannot bucket" in text
    assert report["datasets"]["synth"]["ratios"] == synth["ratios"]


def test_batch_subset_takes_the_first_batches_or_fixed_positions():
    batches = [[i] for i in range(10)]
    assert list(speed_table.BatchSubset(batches, first=3)) == [[0], [1], [2]]
    assert len(speed_table.BatchSubset(batches, first=30)) == 10
    subset = speed_table.BatchSubset(batches, positions={1, 7})
    assert list(subset) == [[1], [7]] and len(subset) == 2


def test_flop_ratio_counts_the_extra_arithmetic_of_a_model(tiny_config):
    from benchmarks import flop_ratio

    settings = {k: tiny_config[k] for k in ("data_path", "load_col", "MAX_ITEM_LIST_LENGTH", "eval_args")}
    settings.update(flop_ratio.SHAPES, MAX_ITEM_LIST_LENGTH=10, train_batch_size=32)
    one_layer = flop_ratio.step_flops("SASRec", "synth", dict(settings, n_layers=1))
    two_layers = flop_ratio.step_flops("SASRec", "synth", settings)
    asrec = flop_ratio.step_flops("ASRec", "synth", settings)
    assert sum(one_layer.values()) < sum(two_layers.values()) < sum(asrec.values())
    assert "aten.convolution" in asrec and "aten.convolution" not in two_layers  # ASRec's multi-scale branch
