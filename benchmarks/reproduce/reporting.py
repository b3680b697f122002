"""The report of a reproduction run: speed ratios between pairs of models, the Markdown tables
(our figures beside the published anchors, one column per protocol; the speed table) and the
plots (validation curves, seconds per epoch)."""

import json

from benchmarks.harness import write_figure

SHAPE_KEYS = ("hidden_size", "inner_size", "n_layers", "n_heads", "k_interests", "MAX_ITEM_LIST_LENGTH",
              "train_batch_size", "eval_batch_size", "loss_type")
PLUGIN_SPEED_KEYS = ("train_mode", "mixed_precision", "compile")  # our trainer's speed switches, if present
METRIC_NAMES = {"hit": "HR", "ndcg": "NDCG", "mrr": "MRR", "recall": "Recall", "precision": "P"}


def speed_ratios(results, pairs):
    """Ours / reference for each speed pair run on the same dataset in this run."""
    rows = []
    for dataset, by_model in results.items():
        for ours, reference in pairs:
            a, b = by_model.get(ours), by_model.get(reference)
            if not (a and b and a["status"] == "ok" and b["status"] == "ok"):
                continue
            differing = {k: [a["config"].get(k), b["config"].get(k)] for k in SHAPE_KEYS
                         if a["config"].get(k) != b["config"].get(k)}
            rows.append({
                "dataset": dataset, "model": ours, "reference": reference,
                "train_seconds_per_epoch": [a["train_seconds_per_epoch"], b["train_seconds_per_epoch"]],
                "train_ratio": a["train_seconds_per_epoch"] / b["train_seconds_per_epoch"],
                "eval_seconds": [a["eval_seconds"], b["eval_seconds"]],
                "eval_ratio": a["eval_seconds"] / b["eval_seconds"] if a["eval_seconds"] and b["eval_seconds"] else None,
                "same_shapes": not differing, "differing": differing,
                "ours_speed_settings": {k: a["config"][k] for k in PLUGIN_SPEED_KEYS if k in a["config"]},
            })
    return rows


def metric_label(key):
    name, _, k = key.partition("@")
    return f"{METRIC_NAMES.get(name, name)}@{k}"


def fmt(value, digits=4):
    return "—" if value is None else f"{value:.{digits}f}"


def anchor_model(model):
    """The published model whose figures a row shows (RecBole's SASRec is SASRec)."""
    return "SASRec" if model == "RecBoleSASRec" else model


def dataset_table(dataset, by_model, report, anchors, protocols):
    kind = report["datasets"][dataset]["kind"]
    ours_protocol = report["kinds"][kind]["protocol"]
    metrics = list(report["kinds"][kind]["table_metrics"])
    mine = [a for a in anchors if a["dataset"] == dataset]
    run_models = {anchor_model(m) for m in by_model}
    published_only = [m for m in dict.fromkeys(a["model"] for a in mine) if m not in run_models]
    columns = sorted({a["protocol"] for a in mine}, key=lambda p: (p != ours_protocol, p))
    notes = {}  # (source, data) -> footnote number

    def cell(model, protocol):
        figures = [a for a in mine if a["model"] == model and a["protocol"] == protocol]
        groups = {}
        for a in figures:
            groups.setdefault((a["source"], a.get("data", "")), []).append(a)
        parts = []
        for key, group in groups.items():
            number = notes.setdefault(key, len(notes) + 1)
            values = ", ".join(f"{a.get('published_as') or metric_label(a['metric'])} {a['value']:.4f}" for a in group)
            parts.append(f"{values} [{number}]")
        return "; ".join(parts) or "—"

    memory_label = "peak CUDA MB" if report["device"] == "cuda" else "peak RSS MB"
    header = ["model", *map(metric_label, metrics), "epochs", "s/epoch", "eval s", memory_label,
              *(f"published: {protocols.get(p, p)}" for p in columns)]
    lines = [f"### {dataset}", "",
             f"Ours: {protocols.get(ours_protocol, ours_protocol)}, test figures of the best-validation epoch.", "",
             "| " + " | ".join(header) + " |",
             "|---|" + "---:|" * (len(metrics) + 4) + "---|" * len(columns)]
    for model, r in by_model.items():
        name = f"{model} ({report['models'][model]['origin']})"
        published = [cell(anchor_model(model), p) for p in columns]
        if r["status"] != "ok":
            first = r["error"].splitlines()[0][:120].replace("|", "\\|")
            ours = [f"failed: {first}", *["—"] * (len(metrics) + 3)]
        else:
            ours = [fmt(r["test"].get(m)) for m in metrics] + [
                str(r["epochs"]), fmt(r["train_seconds_per_epoch"], 1), fmt(r["eval_seconds"], 2),
                fmt(r["peak_memory_mb"], 0)]
        lines.append("| " + " | ".join([name, *ours, *published]) + " |")
    for model in published_only:
        ours = ["—"] * (len(metrics) + 4)
        lines.append("| " + " | ".join([f"{model} (published only)", *ours, *(cell(model, p) for p in columns)]) + " |")
    lines.append("")
    if not mine:
        lines.append("No published figures for this dataset in the anchors file.")
    for (source, data), number in notes.items():
        lines.append(f"[{number}] {source}" + (f"; data: {data}" if data else "") + "  ")
    return lines + [""]


def speed_table(report, speed_anchors):
    rows = report["speed_ratios"]
    lines = ["## Speed ratios, measured in the same run", ""]
    if not rows:
        return lines + ["No speed pair (e.g. SASRec with RecBoleSASRec) ran on the same dataset.", ""]
    lines += ["| dataset | model | reference | train s/epoch (model / ref) | × | full-sort eval s (model / ref) | × | shapes |",
              "|---|---|---|---:|---:|---:|---:|---|"]
    for r in rows:
        shapes = "same" if r["same_shapes"] else "differ: " + ", ".join(
            f"{k} {a}/{b}" for k, (a, b) in r["differing"].items())
        train, evals = r["train_seconds_per_epoch"], r["eval_seconds"]
        lines.append(f"| {r['dataset']} | {r['model']} | {r['reference']} | {train[0]:.1f} / {train[1]:.1f} | "
                     f"{r['train_ratio']:.2f} | {fmt(evals[0], 2)} / {fmt(evals[1], 2)} | {fmt(r['eval_ratio'], 2)} | "
                     f"{shapes} |")
    settings = {json.dumps(r["ours_speed_settings"], sort_keys=True) for r in rows if r["ours_speed_settings"]}
    if settings:
        lines += ["", "Our models' speed settings: " + "; ".join(sorted(settings)) + "."]
    if speed_anchors:
        published = ", ".join(
            f"{s['seconds_per_epoch']['LightSANs'] / s['seconds_per_epoch']['SASRec']:.2f} ({s['dataset']})"
            for s in speed_anchors if {"LightSANs", "SASRec"} <= set(s["seconds_per_epoch"]))
        lines += ["", f"For scale, published LightSANs / SASRec s/epoch ({speed_anchors[0]['setting']}): {published}."]
    return lines + [""]


def markdown(report, anchors_spec):
    anchors = anchors_spec.get("anchors") or []
    protocols = anchors_spec.get("protocols") or {}
    settings = report["settings"]  # the preset's layers as the jobs received them (--epochs applied)
    shared = ", ".join(f"{k} {v}" for k, v in settings["shared"].items())
    per_dataset = {d: s for d, s in settings["datasets"].items() if s}
    overrides = {m: o for m, o in settings["overrides"].items() if o}
    v = report["versions"]
    starts = [r["rss_start_mb"] for ms in report["results"].values() for r in ms.values()
              if r["status"] == "ok" and r.get("rss_start_mb")]
    baseline = min(starts) if starts and report["device"] == "cpu" and report["isolated"] else None
    lines = [
        f"# Reproduction benchmark: preset `{report['preset']}`" + (" (partial)" if report["partial"] else ""), "",
        f"Run `{report['run']}`, {report['started']}, {report['device']} ({report['device_name']}, "
        f"{report['threads']} threads); torch {v['torch']}, RecBole {v['recbole']}, masan_recbole "
        f"{v['masan_recbole']} (git {v['git']}); config hash `{report['config_hash']}`; "
        f"wall time {report['wall_seconds'] / 60:.1f} min.", "",
        f"Shared by every model: {shared or 'nothing'}." + (
            " Per-dataset settings: " + "; ".join(f"{d} {s}" for d, s in per_dataset.items()) + "."
            if per_dataset else "") + (
            " Per-model overrides: " + "; ".join(f"{m} {o}" for m, o in overrides.items()) + "." if overrides else ""),
        f"Peak memory: {report['memory_note']}" + (
            f"; the interpreter with torch and RecBole, before any data, takes about {baseline:.0f} MB of it."
            if baseline else "."), "",
    ]
    if report["skipped"]:
        kinds = "; ".join(f"{m}: {e['data']}" for m, e in report["models"].items())
        lines += [f"Each model runs on its kind of data only ({kinds}): {len(report['skipped'])} pairs left out.", ""]
    for dataset, by_model in report["results"].items():
        lines += dataset_table(dataset, by_model, report, anchors, protocols)
    lines += speed_table(report, anchors_spec.get("speed") or [])
    failed = [(d, m, r["error"]) for d, ms in report["results"].items() for m, r in ms.items() if r["status"] != "ok"]
    if failed:
        lines += ["## Errors", ""] + [f"- {d} / {m}: `{e.splitlines()[0]}`" for d, m, e in failed] + [""]
    return "\n".join(lines)


def plots(report, prefix):
    """<prefix>-curves.png (validation score per epoch) and <prefix>-speed.png (s per train epoch)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    datasets = list(report["results"])
    fig, axes = plt.subplots(1, len(datasets), figsize=(5 * len(datasets), 3.8), squeeze=False)
    for ax, dataset in zip(axes[0], datasets):
        for model, r in report["results"][dataset].items():
            if r["status"] == "ok" and r["valid_curve"]:
                curve = r["valid_curve"]
                ax.plot([p["epoch"] for p in curve], [p["score"] for p in curve], marker="o", label=model)
                ax.set_ylabel(f"validation {r['valid_metric']}")
        ax.set_title(dataset)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend(fontsize="small")
    fig.tight_layout()
    write_figure(f"{prefix}-curves.png", fig)
    plt.close(fig)

    fig, axes = plt.subplots(1, len(datasets), figsize=(5 * len(datasets), 3.8), squeeze=False)
    for ax, dataset in zip(axes[0], datasets):
        done = [(m, r) for m, r in report["results"][dataset].items() if r["status"] == "ok"]
        colours = ["tab:blue" if report["models"][m]["origin"] == "ours" else "tab:gray" for m, _ in done]
        bars = ax.barh([m for m, _ in done], [r["train_seconds_per_epoch"] for _, r in done], color=colours)
        ax.bar_label(bars, fmt="%.1f", fontsize="small")
        ax.invert_yaxis()
        ax.margins(x=0.2)  # room for the value labels
        ax.set_title(f"{dataset} ({report['device']})")
        ax.set_xlabel("seconds per training epoch (blue: ours, grey: RecBole)")
    fig.tight_layout()
    write_figure(f"{prefix}-speed.png", fig)
    plt.close(fig)

