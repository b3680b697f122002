"""benchmarks.converged_report: the generated tables hold the result files' numbers, the paired test
is scipy's, the hand-written text around the markers survives, and a pair missing a side is left out."""

import json
import os
import statistics

import pytest
import yaml
from scipy.stats import wilcoxon

from benchmarks import converged_report as report
from benchmarks.harness import BENCHMARKS
from benchmarks.per_user import pack

USERS = list(range(1, 41))
# per-user NDCG@10 of 40 test users: MASAN better than LightSANs on most of them
MASAN_2020 = [round(0.05 * (u % 7), 6) for u in USERS]
LIGHTSANS_2020 = [round(max(0.0, 0.05 * (u % 7) - 0.02 * (u % 3)), 6) for u in USERS]


def per_user_field(ndcg):
    """As benchmarks.converged writes it: the packed lists and their mean."""
    return {**pack(USERS, ndcg), "mean": sum(ndcg) / len(ndcg)}


def result(model, seed, ndcg10, hit10, per_user, label=None, epochs_run=12, best_epoch=7, excluded=None,
           per_user_excluded=None):
    curve = [{"epoch": e, "score": 0.01 * e if e <= best_epoch else 0.01 * best_epoch - 0.001 * (e - best_epoch),
              "metrics": {}} for e in range(epochs_run)]
    record = {
        "schema_version": 2, "model": model, "dataset": "toyset", "seed": seed,
        "best_epoch": best_epoch, "epochs_run": epochs_run, "stopping_step": 5, "stopped_early": True,
        "valid_metric": "NDCG@20", "best_valid_score": curve[best_epoch]["score"],
        "test_result": {"hit@10": hit10, "ndcg@10": ndcg10, "hit@20": hit10 + 0.02, "ndcg@20": ndcg10 + 0.01},
        "valid_curve": curve, "train_seconds_per_epoch": 100.0, "valid_seconds_per_epoch": 20.0,
        "parameters": 1234, "per_user_ndcg@10": per_user_field(per_user),
        "settings": {}, "config": {}, "device": "cpu", "versions": {},
    }
    if label:
        record["label"] = label
    if excluded:  # (NDCG@10, HR@10) with the user's earlier items scored 0
        record["test_result_history_excluded"] = {"hit@10": excluded[1], "ndcg@10": excluded[0],
                                                  "hit@20": excluded[1] + 0.03, "ndcg@20": excluded[0] + 0.02}
    if per_user_excluded:
        record["per_user_ndcg@10_history_excluded"] = per_user_field(per_user_excluded)
    return record


@pytest.fixture
def setup(tmp_path):
    """Two seeds of MASAN, one of LightSANs (seed 2020), one MASAN variant; a doc with hand-written text."""
    results = tmp_path / "results"
    (results / ".state" / "toyset-MASAN-seed2022").mkdir(parents=True)
    (results / "ml-100k-seed2020").mkdir()  # another harness's folder: not read
    (results / "ml-100k-seed2020" / "stray.json").write_text("{}")
    # the papers' protocol flips the order: there each model's per-user NDCG@10 is the other's under RecBole's
    runs = [result("MASAN", 2020, 0.0300, 0.0600, MASAN_2020, excluded=(0.0400, 0.0700),
                   per_user_excluded=LIGHTSANS_2020),
            result("MASAN", 2021, 0.0340, 0.0640, MASAN_2020[::-1], excluded=(0.0460, 0.0760)),
            result("LightSANs", 2020, 0.0250, 0.0550, LIGHTSANS_2020, excluded=(0.0333, 0.0666),
                   per_user_excluded=MASAN_2020),
            result("MASAN", 2021, 0.0330, 0.0630, LIGHTSANS_2020, label="MASAN-bucketed")]
    for r in runs:
        name = f"toyset-{r.get('label', r['model'])}-seed{r['seed']}.json"
        (results / name).write_text(json.dumps(r))
    anchors = tmp_path / "anchors.yaml"
    anchors.write_text(yaml.safe_dump({
        "protocols": {"full-loo": "full ranking, leave-one-out", "sampled100-loo": "100 sampled negatives",
                      "full-loo-history-excluded": "full ranking, earlier items left out"},
        "anchors": [
            {"model": "BSARec", "dataset": "toyset", "protocol": "full-loo-history-excluded", "metric": "ndcg@10",
             "value": 0.0611, "source": "a log", "data": "the same file"},
            {"model": "BSARec", "dataset": "toyset", "protocol": "full-loo-history-excluded", "metric": "hit@10",
             "value": 0.0807, "source": "a log", "data": "the same file"},
            {"model": "SASRec+SS", "dataset": "toyset", "protocol": "full-loo", "metric": "ndcg@10", "value": 0.0522,
             "source": "a README"},
            {"model": "SASRec", "dataset": "toyset", "protocol": "sampled100-loo", "metric": "ndcg@10",
             "value": 0.4321, "source": "a paper"}]}))
    matrix = tmp_path / "matrix.yaml"
    matrix.write_text(yaml.safe_dump({"shared": {"epochs": 5}, "datasets": {"toyset": {"models": {
        "MASAN": {"seeds": [2020, 2021]}, "LightSANs": {"seeds": [2020, 2021]}, "ASRec": {"seeds": [2020]},
        "MASAN-bucketed": {"model": "MASAN", "seeds": [2021]}}}}}, sort_keys=False))
    doc = tmp_path / "docs" / "results.md"
    doc.parent.mkdir()
    doc.write_text(f"# Results\n\nHand-written intro.\n\n{report.BEGIN}\nstale table\n{report.END}\n\n## Notes\n\nKept.\n")
    # no searches unless a test writes them (the tuned fixture)
    return {"results": str(results), "anchors": str(anchors), "matrix": str(matrix), "doc": str(doc),
            "searches": str(tmp_path / "searches.yaml"), "trials": str(tmp_path / "tuning")}


def generate(setup):
    return report.generate(setup["results"], setup["anchors"], setup["doc"], setup["matrix"], setup["searches"],
                           setup["trials"])


def row(text, first_cell):
    return next(line for line in text.splitlines() if line.startswith(f"| {first_cell} |"))


def test_the_table_shows_mean_and_half_range_of_the_seeds(setup):
    text = generate(setup)
    masan = row(text, "MASAN")
    assert "| 2020, 2021 |" in masan
    assert "0.0320 ± 0.0020" in masan  # NDCG@10: seeds 0.0300 and 0.0340
    assert "0.0620 ± 0.0020" in masan  # HR@10: 0.0600 and 0.0640
    assert "7 / 12, 7 / 12" in masan and "| 100.0 |" in masan and "1,234" in masan
    assert "0.0250 (1 seed)" in row(text, "LightSANs")
    # only full-ranking published figures sit beside ours; BSARec's protocol has tables of its own
    recbole_protocol = text.split("Under the papers' protocol")[0]
    assert "0.0522" in row(recbole_protocol, "SASRec+SS") and "0.4321" not in text and "BSARec" not in recbole_protocol


def papers_part(text):
    """The tables under the papers' protocol: after their caption, up to the curves."""
    return text.split("Under the papers' protocol (full ranking, earlier items left out), the same models:")[1].split("![")[0]


def test_history_excluded_figures_sit_beside_the_papers(setup):
    text = generate(setup)
    papers = papers_part(text)
    # ours under that rule: the seeds' test_result_history_excluded, never their test_result
    masan = row(papers, "MASAN")
    assert masan == "| MASAN | 2020, 2021 | 0.0730 ± 0.0030 | 0.0430 ± 0.0030 | 0.1030 ± 0.0030 | 0.0630 ± 0.0030 |"
    assert row(papers, "LightSANs") == "| LightSANs | 2020 | 0.0666 (1 seed) | 0.0333 (1 seed) | 0.0966 (1 seed) | 0.0533 (1 seed) |"
    # a run whose file lacks them is named, to be rescored, not shown as a row
    assert "| MASAN-bucketed |" not in papers and "(MASAN-bucketed seed 2021)" in papers
    # then the published figures of the same protocol
    bsarec = row(papers, "BSARec")
    assert bsarec == "| BSARec | 0.0807 | 0.0611 | a log | the same file |"
    assert papers.index(masan) < papers.index("| published |") < papers.index(bsarec)
    assert "SASRec+SS" not in papers


def test_runs_on_data_without_histories_are_not_sent_to_rescoring(setup):
    # session files: the converged run records None for the history-excluded fields
    record = dict(result("SR-SAN", 2020, 0.0310, 0.0610, MASAN_2020), test_result_history_excluded=None)
    with open(os.path.join(setup["results"], "toyset-SR-SAN-seed2020.json"), "w") as f:
        json.dump(record, f)
    text = generate(setup)
    assert "0.0310 (1 seed)" in row(text, "SR-SAN")  # RecBole's protocol: shown
    papers = papers_part(text)
    assert "SR-SAN" not in papers and "(MASAN-bucketed seed 2021)" in papers


def test_the_paired_test_is_scipys_wilcoxon_on_the_same_users(setup):
    text = generate(setup)
    line = row(text, "MASAN | LightSANs")
    expected = wilcoxon(MASAN_2020, LIGHTSANS_2020).pvalue
    gap = sum(MASAN_2020) / 40 - sum(LIGHTSANS_2020) / 40
    assert expected < 0.05 and line.startswith(f"| MASAN | LightSANs | 2020 | 40 | {gap:+.4f} | **{expected:.3g}** |")
    # the numbers behind it, straight from the function
    tested = report.paired_test(*(json.load(open(os.path.join(setup["results"], f"toyset-{m}-seed2020.json")))
                                  for m in ("MASAN", "LightSANs")))
    assert tested["p"] == pytest.approx(expected) and tested["n"] == 40
    assert tested["mean_diff"] == pytest.approx(sum(MASAN_2020) / 40 - sum(LIGHTSANS_2020) / 40)


def test_the_paired_test_runs_again_under_the_papers_protocol(setup):
    text = generate(setup)
    gap = sum(MASAN_2020) / 40 - sum(LIGHTSANS_2020) / 40
    recbole_p, papers_p = wilcoxon(MASAN_2020, LIGHTSANS_2020).pvalue, wilcoxon(LIGHTSANS_2020, MASAN_2020).pvalue
    # the same row goes on with the per-user figures with earlier items scored 0, where LightSANs is ahead
    assert row(text, "MASAN | LightSANs") == (f"| MASAN | LightSANs | 2020 | 40 | {gap:+.4f} | **{recbole_p:.3g}** "
                                              f"| {-gap:+.4f} | **{papers_p:.3g}** |")
    # a pair whose files lack those figures (MASAN-bucketed's) has none there
    assert row(text, "MASAN-bucketed | MASAN").endswith("| — | — |")


def test_the_tests_of_a_pair_share_a_row_one_value_per_seed():
    def run(seed, per_user, excluded=None):
        return dict(result("MASAN", seed, 0.03, 0.06, per_user, per_user_excluded=excluded), seed=seed)

    same = [0.1] * 40
    runs = {"MASAN": {2020: run(2020, MASAN_2020, LIGHTSANS_2020), 2021: run(2021, same)},
            "LightSANs": {2020: run(2020, LIGHTSANS_2020, MASAN_2020), 2021: run(2021, same)}}
    runs["LightSANs"][2020]["model"] = runs["LightSANs"][2021]["model"] = "LightSANs"
    lines = report.tests_table(report.paired_tests(runs), report.paired_tests(runs, report.PER_USER_HISTORY_EXCLUDED))
    assert len(lines) == 3  # header, alignment, one pair
    cells = lines[2].split(" | ")
    assert cells[2:4] == ["2020, 2021", "40"]
    assert cells[5].endswith(", identical")  # seed 2021: every user alike, nothing to test
    assert cells[6].endswith(", —")  # seed 2021 has no figures under the papers' protocol


def test_a_pair_missing_a_side_is_skipped(setup):
    text = generate(setup)
    # LightSANs has no seed 2021 and ASRec/FEARec no run at all: no row for either
    assert "| MASAN | LightSANs | 2021 |" not in text
    assert "| ASRec |" not in text
    # a variant is compared with its base model on the seed both have
    assert "| MASAN-bucketed | MASAN | 2021 | 40 |" in text


def test_a_variant_is_compared_with_its_models_reference_and_with_its_model():
    pairs = report.pairs_for({"LightSANs": "LightSANs", "MASAN": "MASAN", "MASAN-x": "MASAN", "FEARec": "FEARec"})
    assert pairs.index(("MASAN", "LightSANs")) + 1 == pairs.index(("MASAN-x", "LightSANs"))
    assert ("MASAN-x", "MASAN") in pairs and ("MASAN-x", "FEARec") not in pairs


def test_the_text_outside_the_markers_is_kept_and_the_curves_are_drawn(setup):
    generate(setup)
    doc = open(setup["doc"]).read()
    assert doc.startswith("# Results\n\nHand-written intro.\n\n" + report.BEGIN)
    assert doc.endswith(report.END + "\n\n## Notes\n\nKept.\n")
    assert "stale table" not in doc and doc.count(report.BEGIN) == 1
    png = os.path.join(setup["results"], "toyset-curves.png")
    with open(png, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert "(../results/toyset-curves.png)" in doc
    # the pending runs and the hours: LightSANs 2021 and ASRec 2020 missing; 4 runs × 12 × 120 s = 1.6 h
    assert "toyset LightSANs (seed 2021); toyset ASRec (seed 2020)" in doc
    assert "cpu 1.6 h" in doc


def test_check_says_whether_the_doc_is_what_the_results_make(setup):
    args = ["--results", setup["results"], "--anchors", setup["anchors"], "--doc", setup["doc"], "--matrix", setup["matrix"],
            "--searches", setup["searches"], "--trials", setup["trials"]]
    assert report.main(args + ["--check"]) == 1  # the doc holds a stale table
    generate(setup)
    assert report.main(args + ["--check"]) == 0


def test_the_committed_doc_is_what_the_committed_results_make():
    """docs/results.md's generated part cannot drift from the result files, anchors.yaml and the matrix."""
    doc, _ = report.rendered_doc(report.load_results(report.OUT))
    with open(report.DOC) as f:
        assert f.read() == doc, "docs/results.md is out of date: run python -m benchmarks.converged_report"


def test_the_markers_are_appended_to_a_doc_without_them(setup):
    with open(setup["doc"], "w") as f:
        f.write("# Results\n\nOnly hand-written.\n")
    generate(setup)
    doc = open(setup["doc"]).read()
    assert doc.startswith("# Results\n\nOnly hand-written.\n\n" + report.BEGIN) and doc.endswith(report.END + "\n")


def test_the_projects_anchors_file_is_complete():
    """Every published figure names its model, our dataset, a known protocol, a metric, a value and a source."""
    anchors, protocols = report.load_anchors(os.path.join(BENCHMARKS, "anchors.yaml"))
    assert anchors
    for a in anchors:
        assert {"model", "dataset", "protocol", "metric", "value", "source"} <= set(a), a
        assert a["protocol"] in protocols, a
        assert 0 < a["value"] < 1, a  # fractions: papers' percentages are divided by 100


def test_a_refitted_run_gets_a_row_below_its_run_and_its_hours(setup):
    record = dict(result("SR-SAN", 2020, 0.0310, 0.0610, MASAN_2020), test_result_history_excluded=None,
                  test_result_refit={"hit@10": 0.0650, "ndcg@10": 0.0333, "hit@20": 0.0700, "ndcg@20": 0.0400},
                  refit={"epochs": 8, "train_rows": 12345, "train_seconds_per_epoch": 150.0})
    before = report.compute_hours(report.load_results(setup["results"]))["cpu"]
    with open(os.path.join(setup["results"], "toyset-SR-SAN-seed2020.json"), "w") as f:
        json.dump(record, f)
    text = generate(setup)
    refit = row(text, "SR-SAN (refit)")
    assert refit == "| SR-SAN (refit) | 2020 | 0.0650 (1 seed) | 0.0333 (1 seed) | 0.0700 (1 seed) | 0.0400 (1 seed) | 7 / 8 | 150.0 | 1,234 |"
    assert text.index(row(text, "SR-SAN")) < text.index(refit)
    assert "| MASAN (refit) |" not in text  # runs without a refit have no such row
    after = report.compute_hours(report.load_results(setup["results"]))["cpu"]
    assert after - before == pytest.approx((12 * 120 + 8 * 150) / 3600)


def test_seconds_per_epoch_are_medians_so_a_paused_epoch_does_not_count(setup):
    # 12 epochs of about 30 s and one of an hour (the process was stopped meanwhile)
    train = [30.0] * 5 + [3600.0] + [31.0] * 6
    record = dict(result("LightSANs", 2021, 0.0260, 0.0560, LIGHTSANS_2020), train_seconds=train,
                  valid_seconds=[2.0] * 12, train_seconds_per_epoch=sum(train) / 12, valid_seconds_per_epoch=2.0)
    before = report.compute_hours(report.load_results(setup["results"]))["cpu"]
    with open(os.path.join(setup["results"], "toyset-LightSANs-seed2021.json"), "w") as f:
        json.dump(record, f)
    text = generate(setup)
    assert "| 65.5 |" in row(text, "LightSANs")  # the seeds' medians, 100.0 (no list: its mean) and 31.0
    after = report.compute_hours(report.load_results(setup["results"]))["cpu"]
    assert after - before == pytest.approx(12 * (31.0 + 2.0) / 3600)


def test_a_run_to_go_on_or_to_refit_is_not_done(setup):
    from benchmarks.converged import Run

    stopped = result("MASAN", 2020, 0.03, 0.06, MASAN_2020)
    cut_short = dict(stopped, stopped_early=False, epochs_run=12, config={"epochs": 12})
    results = {"toyset": {"MASAN": {2020: stopped, 2021: cut_short}}}
    runs = [Run("toyset", "MASAN", "MASAN", 2020, {"epochs": 300}),
            Run("toyset", "MASAN", "MASAN", 2021, {"epochs": 30}),  # ran all its 12: goes on to 30
            Run("toyset", "MASAN", "MASAN", 2021, {"epochs": 12}, refit=True)]  # done, but not refitted
    assert report.pending_runs(runs, results) == runs[1:]


def test_a_stale_tuned_run_is_left_out_of_the_figures_and_named(setup):
    from benchmarks.converged import Run

    trained = dict(result("MASAN", 2020, 0.03, 0.06, MASAN_2020), settings={"hidden_size": 128})
    results = {"toyset": {"MASAN-tuned": {2020: trained}}}
    now = Run("toyset", "MASAN-tuned", "MASAN", 2020, {"hidden_size": 64}, tuned_keys=("hidden_size",))
    kept, stale = report.without_stale(results, [now])
    assert kept == {"toyset": {}} and stale == [now]
    assert results["toyset"]["MASAN-tuned"][2020] is trained  # the caller's results are not changed
    text = report.report(results, {}, {}, [now], {})
    assert "Left out as stale" in text and "toyset MASAN-tuned (seed 2020)" in text
    same = now._replace(settings={"hidden_size": 128})
    assert report.without_stale(results, [same]) == (results, [])


def test_every_figure_of_the_findings_is_in_the_generated_tables():
    """The findings are written by hand; their figures must be ones the generated part holds, so a
    regenerated table that moves a figure fails here until the sentence is rewritten."""
    import re

    text = open(os.path.join(os.path.dirname(BENCHMARKS), "docs", "results.md")).read()
    findings = text[text.index("## Reading the finished runs"):text.index("<!-- converged:begin -->")]
    generated = text[text.index("<!-- converged:begin -->"):text.index("<!-- converged:end -->")]
    figures = set(re.findall(r"\d+\.\d+(?:e-\d+)?", findings))
    assert len(figures) > 20
    assert sorted(f for f in figures if f not in generated) == []


# ---------------------------------------------------------------------------- the tuned part


def trial(sample, cpu_seconds, score, status="tested"):
    return {"sample": sample, "status": status, "params": {"learning_rate": 0.001}, "best_valid_score": score,
            "epochs": 3, "cpu_seconds": cpu_seconds, "code": "ef9bc11ff116"}


def write_trials(folder, name, trials):
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, name), "w") as f:
        f.writelines(json.dumps(t) + "\n" for t in trials)


@pytest.fixture
def tuned(setup):
    """The setup's default runs, searches of five models on toyset and tuned runs of four of them."""
    with open(setup["searches"], "w") as f:
        yaml.safe_dump({"budget": {"num_samples": 4},
                        "datasets": {"toyset": ["SASRec", "MASAN", "LightSANs", "ASRec", "FEARec", "SR-SAN"]}}, f)
    write_trials(setup["trials"], "toyset-MASAN.jsonl", [
        trial(0, 999.0, None, status="error"), trial(0, 1800.0, 0.05),  # failed, then run again on resume
        trial(1, 900.0, 0.03, status="stopped"), trial(2, 500.0, None, status="error"),
        trial(1, 1800.0, 0.04)])  # sample 1 again: this line replaces the earlier one
    write_trials(setup["trials"], "toyset-MASAN-widened.jsonl", [trial(0, 3600.0, 0.07), trial(1, 60.0, None, status="error")])
    write_trials(setup["trials"], "toyset-SASRec.jsonl", [trial(0, 360.0, 0.02), trial(1, 180.0, 0.025)])
    for model in ("LightSANs", "ASRec", "FEARec"):
        write_trials(setup["trials"], f"toyset-{model}.jsonl", [trial(0, 720.0, 0.045)])
    runs = [result("MASAN", 2020, 0.0400, 0.0800, MASAN_2020, label="MASAN-tuned", excluded=(0.0500, 0.0900),
                   per_user_excluded=MASAN_2020),
            result("MASAN", 2021, 0.0440, 0.0840, MASAN_2020, label="MASAN-tuned", excluded=(0.0540, 0.0940)),
            result("LightSANs", 2020, 0.0350, 0.0750, LIGHTSANS_2020, label="LightSANs-tuned", excluded=(0.0450, 0.0850),
                   per_user_excluded=LIGHTSANS_2020),
            result("ASRec", 2020, 0.0300, 0.0700, LIGHTSANS_2020, label="ASRec-tuned"),
            result("FEARec", 2020, 0.0310, 0.0710, MASAN_2020, label="FEARec-tuned")]
    for r in runs:
        with open(os.path.join(setup["results"], f"toyset-{r['label']}-seed{r['seed']}.json"), "w") as f:
            json.dump(r, f)
    return setup


def tuned_part(text):
    return text[text.index("#### toyset: tuned"):]


def test_trials_are_counted_once_per_sample_without_the_failed_ones(tmp_path):
    write_trials(str(tmp_path), "t.jsonl", [trial(0, 10.0, None, status="error"), trial(0, 20.0, 0.1),
                                            trial(1, 30.0, 0.2), trial(1, 40.0, None, status="error")])
    assert [(t["sample"], t["cpu_seconds"]) for t in report.read_trials(str(tmp_path / "t.jsonl"))] == [(0, 20.0)]
    assert report.read_trials(str(tmp_path / "none.jsonl")) is None


def test_the_tuned_table_counts_the_trials_and_hours_of_both_searches(tuned):
    part = tuned_part(generate(tuned))
    # first search: samples 0 and 1 (their last lines, 1800 s each), sample 2 failed; widened: one trial of 3600 s
    assert row(part, "MASAN").startswith("| MASAN | 2 of 4 + 1 widened | 2.0 | 0.0700 |")
    assert row(part, "SASRec").startswith("| SASRec | 2 of 4 | 0.1 | 0.0250 |")  # no widened file: no "+"


def test_a_model_without_tuned_runs_or_trials_is_pending(tuned):
    part = tuned_part(generate(tuned))
    assert row(part, "SASRec") == "| SASRec | 2 of 4 | 0.1 | 0.0250 | pending | pending | pending | pending | — |"
    assert row(part, "SR-SAN") == "| SR-SAN | no trials yet | — | — | pending | pending | pending | pending | — |"


def test_the_tuned_figures_are_the_tuned_runs_under_both_protocols(tuned):
    text = generate(tuned)
    part = tuned_part(text)
    assert row(part, "MASAN") == ("| MASAN | 2 of 4 + 1 widened | 2.0 | 0.0700 | 0.0820 ± 0.0020 | 0.0420 ± 0.0020 "
                                  "| 0.0920 ± 0.0020 | 0.0520 ± 0.0020 | 2020, 2021 |")
    # a run without the papers' figures has none there
    assert row(part, "ASRec") == "| ASRec | 1 of 4 | 0.2 | 0.0450 | 0.0700 (1 seed) | 0.0300 (1 seed) | — | — | 2020 |"
    # the published figures of both protocols follow, and the tuned runs are not in the default tables
    assert row(part, "SASRec+SS") == "| SASRec+SS | 0.0522 | a README | the same file |" and row(part, "BSARec").startswith("| BSARec |")
    assert "-tuned" not in text[:text.index("#### toyset: tuned")]


def test_tuned_runs_are_tested_against_tuned_runs_only(tuned, setup):
    text = generate(tuned)
    part = tuned_part(text)
    gap = sum(MASAN_2020) / 40 - sum(LIGHTSANS_2020) / 40
    p = wilcoxon(MASAN_2020, LIGHTSANS_2020).pvalue
    assert row(part, "MASAN-tuned | LightSANs-tuned") == f"| MASAN-tuned | LightSANs-tuned | 2020 | 40 | {gap:+.4f} | **{p:.3g}** | {gap:+.4f} | **{p:.3g}** |"
    assert row(part, "ASRec-tuned | FEARec-tuned") == f"| ASRec-tuned | FEARec-tuned | 2020 | 40 | {-gap:+.4f} | **{p:.3g}** | — | — |"
    assert "| MASAN-tuned | LightSANs |" not in text and "| MASAN-tuned | MASAN |" not in text
    # the default part of the section is what it was without the searches and tuned runs
    for name in os.listdir(setup["results"]):
        if "-tuned-" in name:
            os.remove(os.path.join(setup["results"], name))
    os.remove(setup["searches"])
    default = generate(setup)
    assert text[text.index("### toyset"):text.index("#### toyset: tuned")].rstrip() == default[default.index("### toyset"):].rstrip()


def test_the_settings_that_moved_the_score_are_ranked_by_the_gap_between_their_values():
    def searched(lr, size, curve):
        return {"params": {"learning_rate": lr, "hidden_size": size, "train_mode": "all_positions"}, "valid_curve": curve}

    # after 2 epochs: lr 0.01 means 0.30, lr 0.001 means 0.10; hidden 64 means 0.25, hidden 32 means 0.15
    trials = [searched(0.01, 64, [0.1, 0.4, 0.9]), searched(0.01, 32, [0.2, 0.2]),
              searched(0.001, 64, [0.1, 0.1]), searched(0.001, 32, [0.05, 0.1])]
    spreads = report.knob_spreads(trials, 2)
    assert [(name, round(gap, 6), best) for name, gap, best in spreads] == [
        ("learning_rate", 0.2, 0.01), ("hidden_size", 0.1, 64)]  # a setting of one value is no finding
    assert report.knobs_line("SASRec", trials, 2, shown=1) == "- SASRec: learning_rate 0.2000 (best 0.01)"
    assert report.knobs_line("SASRec", trials, 2) == (
        "- SASRec: learning_rate 0.2000 (best 0.01), hidden_size 0.1000 (best 64)")
    bundled = [dict(t, params={"padding": {"attn_padding_mask": i % 2 == 0, "length_bucketing": i % 2 == 0}})
               for i, t in enumerate(trials)]  # masked 0.25 against unmasked 0.15
    assert report.knobs_line("MASAN", bundled, 2) == (
        "- MASAN: padding 0.1000 (best attn_padding_mask=True/length_bucketing=True)")


def test_a_widened_search_names_each_trial_s_moved_setting_and_a_widened_winner():
    def searched(sample, score, **params):
        return {"sample": sample, "params": params, "best_valid_score": score}

    first = [searched(0, 0.05, learning_rate=0.001, hidden_size=64), searched(1, 0.06, learning_rate=0.005, hidden_size=128),
             searched(2, 0.06, learning_rate=0.002, hidden_size=64)]  # equal scores: the earlier sample is the best
    widened = [searched(1, 0.07, n_heads=1, widened={"learning_rate": 0.005, "hidden_size": 256}),
               searched(0, 0.055, n_heads=1, widened={"learning_rate": 0.01, "hidden_size": 128})]
    assert report.widened_line("SASRec", first, widened) == (
        "- SASRec (first search's best 0.0600): learning_rate 0.01 0.0550; hidden_size 256 0.0700 "
        "(best of both searches, at the widened end: not widened again)")
    below = [dict(widened[0], best_valid_score=0.059), widened[1]]  # no widened trial beats the first search
    assert "best of both" not in report.widened_line("SASRec", first, below)
    assert report.widened_line("SASRec", first, None) is None and report.widened_line("SASRec", first, []) is None


def test_the_gap_to_a_published_figure_is_given_in_standard_errors_of_the_test_users(tuned):
    part = tuned_part(generate(tuned))
    # the two tuned runs with per-user figures under the papers' protocol: their standard errors' median
    error = statistics.median([statistics.stdev(MASAN_2020) / 40 ** 0.5, statistics.stdev(LIGHTSANS_2020) / 40 ** 0.5])
    line = next(line for line in part.splitlines() if line.startswith("Sampling error:"))
    assert f"a mean over 40 users, with a standard error of {error:.4f}" in line and "median over 2 tuned runs" in line
    # the best tuned model under the papers' protocol is MASAN-tuned, 0.0520 over its two seeds
    assert line.endswith(f"MASAN-tuned at 0.0520, is {(0.0611 - 0.0520) / error:.1f} standard errors below BSARec's 0.0611.")
