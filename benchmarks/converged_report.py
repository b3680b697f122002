"""The report of the converged runs: tables, paired tests and validation curves from the result files
of ``benchmarks.converged``.

    python -m benchmarks.converged_report [--results DIR] [--anchors FILE] [--doc FILE] [--matrix FILE]
                                          [--searches FILE] [--trials DIR] [--check]

Reads every ``*.json`` at the top of the results folder (subfolders and ``.state`` are other
harnesses' or unfinished runs) and writes

* the generated part of docs/results.md, between ``<!-- converged:begin -->`` and
  ``<!-- converged:end -->`` (appended at the end if the markers are missing); the text around
  the markers is hand-written and kept as it is;
* ``<results>/<dataset>-curves.png``: the validation metric per epoch, one line per run, its best
  epoch marked.

``--check`` writes nothing and exits 1 where the doc's generated part differs from what the result
files make (tests/benchmarks/test_converged_report.py runs the same comparison).

Per dataset the generated part holds our runs (test figures of the best-validation epoch, mean ±
half the seed range over the seeds done; below a run refitted on training + validation rows, its
refit's figures), the published full-ranking figures from anchors.yaml, and, where published figures
were measured with the user's earlier items left out of the ranking (protocol
``full-loo-history-excluded``: BSARec's code), our figures under that rule
(``test_result_history_excluded``) and theirs, then a Wilcoxon signed-rank test over the test users'
NDCG@10 (``benchmarks.per_user`` packs them in the result files) for each pair of runs of the same
seed (MASAN vs LightSANs, ASRec vs FEARec, SASRec and its variants vs RecBoleSASRec, a variant vs its
base model) under each protocol the pair's files hold. For each dataset of ``benchmarks/searches.yaml``
a "tuned" part follows: per model its searches (``benchmarks/results/tuning/<dataset>-<Model>.jsonl``
and, where one ran, ``...-widened.jsonl``: trials, CPU hours, best validation score) and its
``<Model>-tuned`` runs' test figures under both protocols, the published figures again, and the paired
tests of tuned against tuned (MASAN vs LightSANs, ASRec vs FEARec); the -tuned runs are left out of
the default tables and tests. Every figure in it comes from a result or trials file or from
anchors.yaml, or is computed from them.
"""

import argparse
import json
import math
import os
import statistics
import sys

import yaml

from benchmarks.converged import MATRIX, OUT, load_matrix, record_state
from benchmarks.harness import BENCHMARKS, REPO, mean_half_range, read_result, write_figure, write_text
from benchmarks.per_user import unpack
from benchmarks.searches import best_trial, read_records

DOC = os.path.join(REPO, "docs", "results.md")
ANCHORS = os.path.join(BENCHMARKS, "anchors.yaml")
SEARCHES = os.path.join(BENCHMARKS, "searches.yaml")
TRIALS = os.path.join(BENCHMARKS, "results", "tuning")
BEGIN, END = "<!-- converged:begin -->", "<!-- converged:end -->"

# (ours, reference) compared user by user; a variant of ours (MASAN-bucketed) is compared with the same
# reference and with its base model
PAIRS = [("MASAN", "LightSANs"), ("ASRec", "FEARec"), ("SASRec", "RecBoleSASRec")]
# two variants that differ in one setting
VARIANT_PAIRS = [("SASRec-b256-unbucketed", "SASRec-b256"), ("SASRec-b256-per-target", "SASRec-b256")]
# the matrix's tuned entries (tuned: true) are labelled <Model>-tuned; they are compared with each other
# only, not with the default runs, whose settings were not searched
TUNED = "-tuned"
TUNED_PAIRS = [("MASAN-tuned", "LightSANs-tuned"), ("ASRec-tuned", "FEARec-tuned")]
TUNED_METRICS = ["hit@10", "ndcg@10"]
# the metrics of our tables, in this order, where the results hold them; the published figures
# of a dataset add their metrics (Diginetica's MRR@20) so that both tables show the same columns
TABLE_METRICS = ["hit@10", "ndcg@10", "hit@20", "ndcg@20", "mrr@10", "mrr@20"]
DEFAULT_METRICS = ["hit@10", "ndcg@10", "hit@20", "ndcg@20"]
FULL_RANKING = ("full-loo", "full-session")  # our runs rank all items: sampled-negative figures are not comparable
# the papers' protocol (BSARec and the S3-Rec line): full ranking after the user's earlier items are
# scored 0; beside these figures go ours computed the same way, never RecBole's
HISTORY_EXCLUDED = "full-loo-history-excluded"
HISTORY_RESULT = "test_result_history_excluded"
PER_USER = "per_user_ndcg@10"
PER_USER_HISTORY_EXCLUDED = "per_user_ndcg@10_history_excluded"
REFIT_RESULT = "test_result_refit"  # the run trained again on training + validation rows (converged.refit)
METRIC_NAMES = {"hit": "HR", "ndcg": "NDCG", "mrr": "MRR", "recall": "Recall", "precision": "P"}
ALPHA = 0.05


# ---------------------------------------------------------------------------- reading


def label_of(record):
    """The run's name in the matrix; result files written before variants existed have no label."""
    return record.get("label") or record["model"]


def load_results(folder):
    """{dataset: {label: {seed: record}}} from the JSON files at the top of ``folder``."""
    results = {}
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        if not (name.endswith(".json") and os.path.isfile(path)):
            continue
        record = read_result(path)
        results.setdefault(record["dataset"], {}).setdefault(label_of(record), {})[record["seed"]] = record
    return results


def load_anchors(path):
    with open(path) as f:
        spec = yaml.safe_load(f) or {}
    return spec.get("anchors") or [], spec.get("protocols") or {}


def read_trials(path):
    """A search's ended trials (searches.read_records), or None without a trials file."""
    return read_records(path) if os.path.exists(path) else None


def load_searches(path, trials_dir):
    """{"budget": trials per search, "trials": {dataset: {model: (first search's trials, widened search's)}}}
    for the models of searches.yaml; a missing file, no searches."""
    if not os.path.exists(path):
        return {"budget": None, "grace": None, "trials": {}}
    with open(path) as f:
        spec = yaml.safe_load(f) or {}
    trials = {dataset: {model: (read_trials(os.path.join(trials_dir, f"{dataset}-{model}.jsonl")),
                                read_trials(os.path.join(trials_dir, f"{dataset}-{model}-widened.jsonl")))
                        for model in models}
              for dataset, models in (spec.get("datasets") or {}).items()}
    budget = spec.get("budget") or {}
    return {"budget": budget.get("num_samples"), "grace": budget.get("grace_period"), "trials": trials}


def pending_runs(matrix_runs, results):
    """The matrix's runs not done yet, in the matrix's order: no result file, or one whose run is to go
    on or still to be refitted (converged.record_state, the rule --list and --all follow)."""
    def done(run):
        record = results.get(run.dataset, {}).get(run.label, {}).get(run.seed)
        return record is not None and record_state(run, record) == "done"

    return [r for r in matrix_runs if not done(r)]


# ---------------------------------------------------------------------------- numbers


def paired_test(a, b, key=PER_USER):
    """Wilcoxon signed-rank test on the per-user NDCG@10 (``key``: under which protocol) of two runs,
    over the users both hold."""
    from scipy.stats import wilcoxon

    x_by_user = dict(zip(*unpack(a[key])))
    y_by_user = dict(zip(*unpack(b[key])))
    users = sorted(x_by_user.keys() & y_by_user.keys())
    x, y = [x_by_user[u] for u in users], [y_by_user[u] for u in users]
    diffs = [p - q for p, q in zip(x, y)]
    # wilcoxon refuses a sample of zero differences only: two runs that rank every target alike
    p_value = wilcoxon(x, y).pvalue if any(diffs) else None
    return {"n": len(users), "mean_a": sum(x) / len(x), "mean_b": sum(y) / len(y),
            "mean_diff": sum(diffs) / len(diffs), "p": p_value}


def pairs_for(labels_by_model):
    """(ours, reference) label pairs: each fixed pair followed by its model's variants against the same
    reference, then each variant against its base model, then the variant pairs."""
    variants = [(label, model) for label, model in labels_by_model.items() if label != model]
    pairs = []
    for ours, reference in PAIRS:
        pairs += [(ours, reference)] + [(label, reference) for label, model in variants if model == ours]
    return pairs + variants + VARIANT_PAIRS


def paired_tests(runs, key=PER_USER, pairs=None):
    """One row per pair (``pairs``, or pairs_for's) and seed where both runs are done and hold ``key``; a
    pair missing a side is skipped."""
    labels_by_model = {label: next(iter(seeds.values()))["model"] for label, seeds in runs.items()}
    rows = []
    for ours, reference in pairs or pairs_for(labels_by_model):
        for seed in sorted(runs.get(ours, {}).keys() & runs.get(reference, {}).keys()):
            a, b = runs[ours][seed], runs[reference][seed]
            if a.get(key) and b.get(key):
                rows.append({"ours": ours, "reference": reference, "seed": seed, **paired_test(a, b, key)})
    return rows


def seconds_per_epoch(record, part="train"):
    """The median of the run's per-epoch wall-clock seconds (``part``: train or valid): a run paused
    or crowded for a while has a few long epochs, which the mean would spread over all. Result files
    written before the per-epoch lists existed give their mean."""
    each = record.get(f"{part}_seconds")
    return statistics.median(each) if each else record[f"{part}_seconds_per_epoch"]


def compute_hours(results):
    """{device: hours} summed over runs of epochs_run × (median train + validation seconds per epoch),
    plus the refits' epochs."""
    hours = {}
    for runs in results.values():
        for seeds in runs.values():
            for r in seeds.values():
                seconds = r["epochs_run"] * (seconds_per_epoch(r, "train") + seconds_per_epoch(r, "valid"))
                if r.get("refit"):
                    seconds += r["refit"]["epochs"] * seconds_per_epoch(r["refit"])
                hours[r["device"]] = hours.get(r["device"], 0.0) + seconds / 3600
    return hours


# ---------------------------------------------------------------------------- Markdown


def metric_label(key):
    name, _, k = key.partition("@")
    return f"{METRIC_NAMES.get(name, name)}@{k}"


def table(header, rows, align):
    """A Markdown table; ``align`` has one letter per column: l(eft) or r(ight)."""
    align = ["---:" if a == "r" else "---" for a in align]
    return ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|",
            *("| " + " | ".join(str(c) for c in row) + " |" for row in rows)]


def format_seeds(values):
    return mean_half_range(values) + (" (1 seed)" if len(values) == 1 else "")


def figure_cell(records, metric, key="test_result"):
    values = [r[key].get(metric) for r in records]
    return "—" if None in values else format_seeds(values)


def metric_columns(runs, anchors):
    """The metrics our table shows: the default ones and the published figures', where our results hold them."""
    held = {m for seeds in runs.values() for r in seeds.values() for m in r["test_result"]}
    wanted = set(DEFAULT_METRICS) | {a["metric"] for a in anchors}
    return [m for m in TABLE_METRICS if m in wanted and m in held]


def ordered_labels(dataset, runs, matrix_runs):
    """Labels in the matrix's order, then any run outside the matrix."""
    in_matrix = [r.label for r in matrix_runs if r.dataset == dataset and r.label in runs]
    return list(dict.fromkeys(in_matrix + sorted(runs)))


def ours_table(dataset, runs, metrics, matrix_runs):
    """One row per run, and below it a row for its refit where it was refitted."""
    header = ["run", "seeds", *(f"test {metric_label(m)}" for m in metrics),
              "best epoch / epochs run", "train s/epoch (median)", "parameters"]
    rows = []
    for label in ordered_labels(dataset, runs, matrix_runs):
        seeds = runs[label]
        records = [seeds[s] for s in sorted(seeds)]
        figures = [figure_cell(records, m) for m in metrics]
        epochs = ", ".join(f"{r['best_epoch']} / {r['epochs_run']}" for r in records)
        train = sum(seconds_per_epoch(r) for r in records) / len(records)
        parameters = ", ".join(f"{p:,}" for p in dict.fromkeys(r["parameters"] for r in records))
        rows.append([label, ", ".join(map(str, sorted(seeds))), *figures, epochs, f"{train:.1f}", parameters])
        refitted = [r for r in records if r.get(REFIT_RESULT)]
        if refitted:
            # tested at its last epoch, the one validation chose for the run above
            epochs = ", ".join(f"{r['refit']['epochs'] - 1} / {r['refit']['epochs']}" for r in refitted)
            train = sum(seconds_per_epoch(r["refit"]) for r in refitted) / len(refitted)
            rows.append([f"{label} (refit)", ", ".join(str(r["seed"]) for r in refitted),
                         *(figure_cell(refitted, m, REFIT_RESULT) for m in metrics), epochs, f"{train:.1f}", parameters])
    return table(header, rows, "ll" + "r" * (len(header) - 2))


def history_excluded_table(dataset, runs, metrics, matrix_runs):
    """Our runs' test figures with the user's earlier items left out, over the seeds whose result
    file holds them; runs with none are listed below the table, to be rescored."""
    header = ["run", "seeds", *(f"test {metric_label(m)}" for m in metrics)]
    rows, missing = [], []
    for label in ordered_labels(dataset, runs, matrix_runs):
        seeds = sorted(s for s, r in runs[label].items() if r.get(HISTORY_RESULT))
        # a file without the key predates it (rescore); None means its data have no user histories
        missing += [f"{label} seed {s}" for s in sorted(runs[label]) if HISTORY_RESULT not in runs[label][s]]
        if seeds:
            records = [runs[label][s] for s in seeds]
            rows.append([label, ", ".join(map(str, seeds)), *(figure_cell(records, m, HISTORY_RESULT) for m in metrics)])
    lines = table(header, rows, "ll" + "r" * len(metrics)) if rows else ["No run has these figures yet."]
    if missing:
        lines += ["", f"Without history-excluded figures yet ({', '.join(missing)}): "
                      "`python -m benchmarks.converged --rescore` adds them from the best checkpoints."]
    return lines


def published_table(anchors, metrics):
    """One row per published model and source; the data column says how their data differ from ours."""
    groups = {}
    for a in anchors:
        groups.setdefault((a["model"], a["source"], a.get("data", "")), {})[a["metric"]] = a
    shown = [m for m in TABLE_METRICS if any(m in g for g in groups.values())] or metrics
    rows = []
    for (model, source, data), by_metric in groups.items():
        cells = [f"{by_metric[m]['value']:.4f}" if m in by_metric else "—" for m in shown]
        rows.append([model, *cells, source, data or "the same file"])
    header = ["published", *(metric_label(m) for m in shown), "source", "data"]
    return table(header, rows, "l" + "r" * len(shown) + "ll")


def p_cell(p):
    if p is None:
        return "identical"  # every user's NDCG@10 the same: nothing to test
    return f"**{p:.3g}**" if p < ALPHA else f"{p:.3g}"


def tests_table(recbole_rows, papers_rows):
    """One row per pair, one value per seed in each cell: the mean difference in per-user NDCG@10 and
    the test's p under RecBole's protocol, then under the papers' where the files hold it."""
    by_pair = {}
    for protocol, rows in (("recbole", recbole_rows), ("papers", papers_rows)):
        for r in rows:
            by_pair.setdefault((r["ours"], r["reference"]), {}).setdefault(r["seed"], {})[protocol] = r
    header = ["paired test: ours", "against", "seeds", "users", "NDCG@10 difference", "p"]
    protocols = ["recbole"]
    if papers_rows:
        header += ["papers' protocol: NDCG@10 difference", "p"]
        protocols.append("papers")
    body = []
    for (ours, reference), by_seed in by_pair.items():
        seeds = sorted(by_seed)
        tested = [r for s in seeds for r in by_seed[s].values()]
        row = [ours, reference, ", ".join(map(str, seeds)), ", ".join(dict.fromkeys(f"{r['n']:,}" for r in tested))]
        for protocol in protocols:
            cells = [by_seed[s].get(protocol) for s in seeds]
            row += [", ".join("—" if r is None else f"{r['mean_diff']:+.4f}" for r in cells),
                    ", ".join("—" if r is None else p_cell(r["p"]) for r in cells)]
        body.append(row)
    return table(header, body, "lll" + "r" * (len(header) - 3))


def dataset_section(dataset, all_runs, anchors, protocols, matrix_runs, curves_link, searches):
    mine = [a for a in anchors if a["dataset"] == dataset and a["protocol"] in FULL_RANKING]
    excluded = [a for a in anchors if a["dataset"] == dataset and a["protocol"] == HISTORY_EXCLUDED]
    searched = dataset in searches["trials"]  # else its -tuned runs, if any, stay in the tables above
    runs = {label: seeds for label, seeds in all_runs.items() if not (searched and label.endswith(TUNED))}
    lines = [f"### {dataset}", ""]
    if runs:
        metrics = metric_columns(runs, mine)
        lines += ours_table(dataset, runs, metrics, matrix_runs) + [""]
    else:
        metrics = DEFAULT_METRICS
        lines += ["No finished run yet.", ""]
    if mine:
        lines += published_table(mine, metrics) + [""]
    if excluded:
        lines += history_excluded_section(dataset, runs, excluded, protocols, matrix_runs)
    if all_runs:
        lines += [f"![{dataset}: validation curves]({curves_link})", ""]
    recbole, papers = paired_tests(runs), paired_tests(runs, PER_USER_HISTORY_EXCLUDED)
    if recbole or papers:
        lines += tests_table(recbole, papers) + [""]
    if searched:
        lines += tuned_section(dataset, all_runs, searches, mine, excluded, protocols)
    return lines


def search_cells(first, widened, budget):
    """Trials, CPU hours and best validation score of a model's first and widened searches."""
    if first is None and widened is None:
        return ["no trials yet", "—", "—"]
    trials = f"{len(first or [])}" + (f" of {budget}" if budget else "")
    if widened is not None:
        trials += f" + {len(widened)} widened"
    ended = (first or []) + (widened or [])
    hours = sum(t.get("cpu_seconds") or 0 for t in ended) / 3600
    scores = [t["best_valid_score"] for t in ended if t.get("best_valid_score") is not None]
    return [trials, f"{hours:.1f}", f"{max(scores):.4f}" if scores else "—"]


def knob_spreads(trials, epochs):
    """Which settings of a search moved its validation score: per setting, the mean score after ``epochs``
    epochs (ASHA's grace period, which every trial runs) of the trials that took each value.
    [(setting, best mean - worst mean, the best value)], widest first; a setting with one value is left out."""
    groups = {}
    for trial in trials:
        score = max(trial["valid_curve"][:epochs])
        for name, value in trial["params"].items():
            groups.setdefault(name, {}).setdefault(json.dumps(value, sort_keys=True), []).append(score)
    spreads = []
    for name, by_value in groups.items():
        # fsum: the same rounding on every Python (3.12's sum() compensates, 3.11's does not)
        means = {value: math.fsum(scores) / len(scores) for value, scores in by_value.items()}
        if len(means) > 1:
            best = max(means, key=means.get)
            spreads.append((name, means[best] - min(means.values()), json.loads(best)))
    return sorted(spreads, key=lambda spread: -spread[1])


def knob_value(value):
    """A setting's value as the report writes it; a bundle of settings tried together (MASAN's padding
    rule) as its members, ``attn_padding_mask=True/length_bucketing=True``."""
    if isinstance(value, dict):
        return "/".join(f"{name}={member}" for name, member in value.items())
    return str(value)


def knobs_line(model, first, epochs, shown=None):
    spreads = knob_spreads(first or [], epochs)[:shown]
    if not spreads:
        return None
    return f"- {model}: " + ", ".join(f"{name} {spread:.4f} (best {knob_value(value)})" for name, spread, value in spreads)


def widened_line(model, first, widened):
    """What a model's widened search tried, against its first search's best: each trial's moved setting
    (the one its ``widened`` bundle, else its params, holds otherwise than that best) and its best
    validation score."""
    if not first or not widened:
        return None
    best = best_trial(first)
    tried, top = [], max(t["best_valid_score"] for t in widened)
    for trial in sorted(widened, key=lambda t: t["sample"]):
        moved = ", ".join(f"{name} {value}" for name, value in trial["params"].get("widened", trial["params"]).items()
                          if best["params"].get(name) != value)
        won = trial["best_valid_score"] == top and top > best["best_valid_score"]
        tried.append(f"{moved} {trial['best_valid_score']:.4f}" + (" (best of both searches, at the widened "
                                                                     "end: not widened again)" if won else ""))
    return f"- {model} (first search's best {best['best_valid_score']:.4f}): " + "; ".join(tried)


def tuned_cells(seeds):
    """A tuned run's test figures under RecBole's protocol and the papers', and its seeds done."""
    if not seeds:
        return ["pending"] * (2 * len(TUNED_METRICS)) + ["—"]
    records = [seeds[s] for s in sorted(seeds)]
    cells = [figure_cell(records, m) for m in TUNED_METRICS]
    # a seed without the papers' figures (to be rescored) leaves them out rather than mixing seeds
    rescored = all(r.get(HISTORY_RESULT) for r in records)
    cells += [figure_cell(records, m, HISTORY_RESULT) if rescored else "—" for m in TUNED_METRICS]
    return cells + [", ".join(map(str, sorted(seeds)))]


def standard_error(record, key=PER_USER_HISTORY_EXCLUDED):
    """(standard error of the run's test NDCG@10 mean over its users, users): how far the test users
    drawn alone move one run's figure."""
    values = unpack(record[key])[1]
    return statistics.stdev(values) / math.sqrt(len(values)), len(values)


def sampling_line(runs, published_excluded):
    """The standard error of a test NDCG@10 under the papers' protocol (median over the tuned runs
    holding per-user figures), and how many of them the best tuned model sits from each published
    NDCG@10. It says how precisely one run's figure measures a model on users like these; two models
    run on the same users share part of that error, so it bounds what the user draw explains of a
    gap between them rather than measuring it."""
    tuned = {label: seeds for label, seeds in runs.items() if label.endswith(TUNED)}
    errors = [standard_error(r) for seeds in tuned.values() for r in seeds.values() if r.get(PER_USER_HISTORY_EXCLUDED)]
    published = [a for a in published_excluded if a["metric"] == "ndcg@10"]
    means = {label: statistics.mean(r[HISTORY_RESULT]["ndcg@10"] for r in seeds.values())
             for label, seeds in tuned.items() if all(r.get(HISTORY_RESULT) for r in seeds.values())}
    if not (errors and published and means):
        return None
    error = statistics.median(e for e, _ in errors)
    users = max(n for _, n in errors)
    best = max(means, key=means.get)
    gaps = "; ".join(f"{abs(a['value'] - means[best]) / error:.1f} standard errors "
                     f"{'below' if means[best] < a['value'] else 'above'} {a['model']}'s {a['value']:.4f}"
                     for a in published)
    return (f"Sampling error: under the papers' protocol a test NDCG@10 is a mean over {users:,} users, with a "
            f"standard error of {error:.4f} (the users' standard deviation over the square root of their number; "
            f"median over {len(errors)} tuned runs), the precision of one run's figure. The best tuned model, {best} at {means[best]:.4f}, is {gaps}.")


def tuned_section(dataset, runs, searches, published, published_excluded, protocols):
    """The searches of searches.yaml and the <Model>-tuned runs, the published figures again below,
    and the paired tests of tuned against tuned."""
    header = ["tuned", "trials", "search CPU h", "best valid score",
              *(f"test {metric_label(m)}" for m in TUNED_METRICS),
              *(f"papers' protocol: {metric_label(m)}" for m in TUNED_METRICS), "seeds"]
    rows = [[model, *search_cells(*trials, searches["budget"]), *tuned_cells(runs.get(model + TUNED))]
            for model, trials in searches["trials"][dataset].items()]
    lines = [f"#### {dataset}: tuned", "",
             "Each model's hyperparameters searched on validation (`benchmarks/searches.yaml`, trials in "
             "`benchmarks/results/tuning/`); its test figures are those of its `<model>-tuned` runs (`tuned: true` in "
             "`benchmarks/converged.yaml`), run to convergence with the settings the searches chose. Trials: the first "
             "search's ended trials, of its budget, then a widened search's; CPU hours and the best validation score "
             "(the dataset's valid_metric) over both.", ""]
    lines += table(header, rows, "l" + "r" * (len(header) - 2) + "l") + [""]
    knobs = [knobs_line(model, trials[0], searches["grace"]) for model, trials in searches["trials"][dataset].items()
             if searches["grace"]]
    if any(knobs):
        lines += [f"Settings that moved the first search's validation score: for each setting, the mean score after "
                  f"{searches['grace']} epochs (every trial runs them) of the trials that took each value; the gap between "
                  "the best and the worst value, widest first (a dozen trials drawn at random, so settings are mixed "
                  "in each mean: indicative only).", ""]
        lines += [line for line in knobs if line] + [""]
    widenings = [widened_line(model, *trials) for model, trials in searches["trials"][dataset].items()]
    if any(widenings):
        lines += ["Widened searches: where a first search's best took the first or last value of a numeric setting, "
                  "one trial with that setting one step beyond, the best's other settings kept; each trial's moved "
                  "setting and its best validation score.", ""]
        lines += [line for line in widenings if line] + [""]
    if published:
        lines += ["Published, full ranking:", ""] + published_table(published, TUNED_METRICS) + [""]
    if published_excluded:
        lines += [f"Published, under the papers' protocol ({protocols.get(HISTORY_EXCLUDED, HISTORY_EXCLUDED)}):", ""]
        lines += published_table(published_excluded, TUNED_METRICS) + [""]
        sampling = sampling_line(runs, published_excluded)
        lines += [sampling, ""] if sampling else []
    recbole = paired_tests(runs, pairs=TUNED_PAIRS)
    papers = paired_tests(runs, PER_USER_HISTORY_EXCLUDED, pairs=TUNED_PAIRS)
    if recbole or papers:
        lines += tests_table(recbole, papers) + [""]
    return lines


def history_excluded_section(dataset, runs, anchors, protocols, matrix_runs):
    """Ours and the published figures under the papers' protocol, one table above the other."""
    metrics = metric_columns(runs, anchors) if runs else DEFAULT_METRICS
    lines = [f"Under the papers' protocol ({protocols.get(HISTORY_EXCLUDED, HISTORY_EXCLUDED)}), the same models:", ""]
    lines += (history_excluded_table(dataset, runs, metrics, matrix_runs) if runs else ["No finished run yet."]) + [""]
    return lines + published_table(anchors, metrics) + [""]


def without_stale(results, matrix_runs):
    """``results`` less the tuned runs trained with settings their configs/model file no longer holds
    (converged.record_state's "stale"), and those runs: their figures are not the config's."""
    stale = [r for r in matrix_runs if r.seed in results.get(r.dataset, {}).get(r.label, {})
             and record_state(r, results[r.dataset][r.label][r.seed]) == "stale"]
    kept = {d: {label: dict(seeds) for label, seeds in runs.items()} for d, runs in results.items()}
    for r in stale:
        del kept[r.dataset][r.label][r.seed]
    return {d: {label: seeds for label, seeds in runs.items() if seeds} for d, runs in kept.items()}, stale


def stale_line(stale):
    if not stale:
        return ""
    names = ", ".join(f"{r.dataset} {r.label} (seed {r.seed})" for r in stale)
    return (f" Left out as stale, trained before their configs/model file changed (python -m benchmarks.converged "
            f"--list names the settings): {names}.")


def pending_line(pending):
    if not pending:
        return "Every run of the matrix is done."
    by_run = {}
    for r in pending:
        by_run.setdefault((r.dataset, r.label), []).append(str(r.seed))
    listed = "; ".join(f"{dataset} {label} (seed {', '.join(seeds)})" for (dataset, label), seeds in by_run.items())
    return f"Matrix runs not yet done ({len(pending)}): {listed}."


def hours_line(hours):
    if not hours:
        return "No compute spent on finished runs yet."
    spent = ", ".join(f"{device} {h:.1f} h" for device, h in sorted(hours.items()))
    return (f"Compute spent on the finished runs (epochs run × (median train + median validation) seconds "
            f"per epoch, refits included): {spent}.")


def report(results, anchors, protocols, matrix_runs, curve_links, searches=None):
    """The generated Markdown, markers excluded; ``searches``: load_searches's."""
    searches = searches or {"budget": None, "grace": None, "trials": {}}
    results, stale = without_stale(results, matrix_runs)
    datasets = list(dict.fromkeys([r.dataset for r in matrix_runs] + sorted(results)))
    lines = ["## Converged runs (generated)", "",
             "Generated by `python -m benchmarks.converged_report` from `benchmarks/results/converged/` and "
             "`benchmarks/anchors.yaml`; do not edit by hand. "
             + pending_line(pending_runs(matrix_runs, results)) + stale_line(stale) + " "
             + hours_line(compute_hours(results)), "",
             "Test figures are those of each run's best-validation epoch (two or more seeds: mean ± half their "
             "range), under RecBole's protocol unless a table says otherwise. A run marked (refit) was trained "
             "again from the same seed on the training and validation rows together for the number of epochs "
             "validation chose, then tested at its last epoch. Paired tests: Wilcoxon signed-rank, two-sided, "
             "over the per-user NDCG@10 of two runs of the same seed, one value per seed in each cell, "
             f"**bold** where p < {ALPHA}.", ""]
    for dataset in datasets:
        lines += dataset_section(dataset, results.get(dataset, {}), anchors, protocols, matrix_runs,
                                 curve_links.get(dataset, ""), searches)
    return "\n".join(lines).rstrip() + "\n"


def splice(doc_text, generated):
    """``doc_text`` with the part between the markers replaced; markers appended if absent."""
    block = f"{BEGIN}\n{generated}{END}"
    if BEGIN in doc_text and END in doc_text:
        head, _, rest = doc_text.partition(BEGIN)
        _, _, tail = rest.partition(END)
        return head + block + tail
    return doc_text.rstrip("\n") + "\n\n" + block + "\n"


# ---------------------------------------------------------------------------- plots


def plot_curves(dataset, runs, path):
    """The validation metric per epoch, one line per run, a dot on its best epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4.5))
    metrics = set()
    for label in sorted(runs):
        colour = None
        for number, (seed, r) in enumerate(sorted(runs[label].items())):
            epochs = [p["epoch"] for p in r["valid_curve"]]
            scores = [p["score"] for p in r["valid_curve"]]
            style = ("-", "--", ":", "-.")[number % 4]  # a model's seeds share its colour, told apart by style
            line, = axis.plot(epochs, scores, style, label=f"{label} seed {seed}", linewidth=1.2, color=colour)
            colour = line.get_color()
            axis.plot([r["best_epoch"]], [r["best_valid_score"]], "o", color=colour)
            metrics.add(r["valid_metric"])
    axis.set_xlabel("epoch")
    axis.set_ylabel("validation " + " / ".join(sorted(metrics)))
    axis.set_title(f"{dataset}: validation curves (dot: best epoch)")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    write_figure(path, figure)
    plt.close(figure)


# ---------------------------------------------------------------------------- command line


def curve_path(results_dir, dataset):
    return os.path.join(results_dir, f"{dataset}-curves.png")


def rendered_doc(results, anchors_path=ANCHORS, doc_path=DOC, matrix_path=MATRIX, results_dir=OUT,
                 searches_path=SEARCHES, trials_dir=TRIALS):
    """(the doc as the result and trials files make it, the generated Markdown); writes nothing."""
    anchors, protocols = load_anchors(anchors_path)
    doc_dir = os.path.dirname(os.path.abspath(doc_path))
    links = {d: os.path.relpath(curve_path(results_dir, d), doc_dir).replace(os.sep, "/") for d in results}
    generated = report(results, anchors, protocols, load_matrix(matrix_path), links,
                       load_searches(searches_path, trials_dir))
    existing = open(doc_path).read() if os.path.isfile(doc_path) else ""
    return splice(existing, generated), generated


def generate(results_dir=OUT, anchors_path=ANCHORS, doc_path=DOC, matrix_path=MATRIX, searches_path=SEARCHES,
             trials_dir=TRIALS):
    """Write the curves and the generated part of the doc; returns the generated Markdown."""
    results = load_results(results_dir)
    for dataset, runs in results.items():
        # the default runs only: a committed figure is redrawn (a new binary in git) only when they change
        plot_curves(dataset, {label: seeds for label, seeds in runs.items() if not label.endswith(TUNED)},
                    curve_path(results_dir, dataset))
    doc, generated = rendered_doc(results, anchors_path, doc_path, matrix_path, results_dir, searches_path, trials_dir)
    write_text(doc_path, doc)
    return generated


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", default=OUT, help="folder of the converged result files")
    parser.add_argument("--anchors", default=ANCHORS)
    parser.add_argument("--doc", default=DOC, help="Markdown file whose marked part is rewritten")
    parser.add_argument("--matrix", default=MATRIX)
    parser.add_argument("--searches", default=SEARCHES, help="the tuned searches' matrix")
    parser.add_argument("--trials", default=TRIALS, help="folder of the searches' trials files")
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 if the doc's generated part is not what the result files make")
    args = parser.parse_args(argv)
    if args.check:
        doc, _ = rendered_doc(load_results(args.results), args.anchors, args.doc, args.matrix, args.results,
                              args.searches, args.trials)
        current = open(args.doc).read() if os.path.isfile(args.doc) else ""
        if doc != current:
            print(f"{args.doc} is out of date: run python -m benchmarks.converged_report", file=sys.stderr)
            return 1
        return 0
    print(generate(args.results, args.anchors, args.doc, args.matrix, args.searches, args.trials))
    return 0


if __name__ == "__main__":
    sys.exit(main())
