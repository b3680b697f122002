"""One-command reproduction benchmark: a matrix of models x datasets through the plugin (our
MASAN, ASRec, SASRec and SR-SAN beside RecBole's own SASRec, LightSANs and FEARec), every model
with the same data config, seed and epoch budget, in one run.

    python -m benchmarks.reproduce --preset quick|full [--device auto|cpu|cuda]
        [--models M ...] [--datasets D ...] [--epochs N] [--run NAME]
        [--data-path dataset] [--shared ../shared/datasets]
        [--preset-file benchmarks/presets.yaml] [--anchors benchmarks/anchors.yaml]
        [--out-dir benchmarks/results] [--in-process] [--threads N]

Presets (datasets, models, shared settings, per-model overrides) are data in
benchmarks/presets.yaml; published figures in benchmarks/anchors.yaml. A dataset missing from
--data-path is converted from --shared first (masan_recbole.data.convert). Writes, in --out-dir,
with the run name (default reproduce-<preset>-<device>, plus -partial when --models, --datasets
or --epochs narrow the preset):

  <run>.json          per model: every metric, seconds per train epoch, eval seconds, peak memory,
                      epochs run, validation curve, config and its hash, or the error; device,
                      versions, speed ratios. Rewritten atomically after each model.
  <run>.md            our test figures beside the published ones (one column per protocol) and the
                      speed-ratio table
  <run>-curves.png    validation score per epoch, a line per model, a panel per dataset
  <run>-speed.png     training seconds per epoch, a panel per dataset

Each model runs in a child process (unless --in-process): a crash loses only that model, and on a
CPU the peak resident memory reported is that model's process (with --in-process it is the peak
of the whole run so far). On CUDA the peak is torch.cuda.max_memory_allocated.
"""

import argparse
import datetime
import json
import multiprocessing
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback

import yaml

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCHMARKS = os.path.join(REPO, "benchmarks")
SHAPE_KEYS = ("hidden_size", "inner_size", "n_layers", "n_heads", "k_interests", "MAX_ITEM_LIST_LENGTH",
              "train_batch_size", "eval_batch_size", "loss_type")
PLUGIN_SPEED_KEYS = ("train_mode", "mixed_precision", "compile")  # our trainer's speed switches, if present
METRIC_NAMES = {"hit": "HR", "ndcg": "NDCG", "mrr": "MRR", "recall": "Recall", "precision": "P"}


# ---------------------------------------------------------------------------- presets


def load_yaml(path, what):
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} file not found: {path}")
    with open(path) as f:
        return yaml.safe_load(f) or {}


def load_presets(path):
    spec = load_yaml(path, "preset")
    missing = [key for key in ("models", "datasets", "kinds", "presets") if key not in spec]
    if missing:
        raise ValueError(f"{path}: missing top-level key(s) {missing}; see benchmarks/presets.yaml for the layout")
    for name, entry in spec["datasets"].items():
        if entry.get("kind") not in spec["kinds"]:
            raise ValueError(f"{path}: dataset '{name}' has kind {entry.get('kind')!r}, not one of {list(spec['kinds'])}")
    for name, entry in spec["models"].items():
        if entry.get("data") not in spec["kinds"]:
            raise ValueError(f"{path}: model '{name}' has data {entry.get('data')!r}, not one of {list(spec['kinds'])}")
    return spec


def _known(spec, section, names, path):
    unknown = [n for n in names if n not in spec[section]]
    if unknown:
        raise ValueError(f"unknown {section} {unknown}; {path} lists {', '.join(spec[section])} "
                         f"(add an entry under '{section}:' there to use another)")


def model_config_files(model, alias):
    """configs/model/<Model>/<alias>.yaml, where a converted dataset borrows another dataset's
    per-model settings (beauty -> ASRec's amazon-beauty)."""
    if not alias:
        return []
    from masan_recbole.registry import CONFIG_DIR, canonical_name

    path = os.path.join(CONFIG_DIR, "model", canonical_name(model), f"{alias}.yaml")
    return [path] if os.path.isfile(path) else []


def plan(spec, preset_name, models=None, datasets=None, epochs=None, path="presets file"):
    """The (dataset, model) jobs of a preset with their settings, and the pairs left out because
    the model does not run on that kind of data."""
    if preset_name not in spec["presets"]:
        raise ValueError(f"unknown preset '{preset_name}'; {path} has {', '.join(spec['presets'])}")
    preset = spec["presets"][preset_name]
    preset_datasets = preset.get("datasets") or {}
    dataset_names = datasets or list(preset_datasets)
    model_names = models or preset["models"]
    _known(spec, "datasets", dataset_names, path)
    _known(spec, "models", model_names, path)
    if epochs is not None and epochs < 1:
        raise ValueError(f"--epochs must be at least 1, got {epochs}")
    jobs, skipped = [], []
    for dataset in dataset_names:
        entry = spec["datasets"][dataset]
        for model in model_names:
            if spec["models"][model]["data"] != entry["kind"]:
                skipped.append(f"{model} on {dataset} ({spec['models'][model]['data']} model, {entry['kind']} data)")
                continue
            config = {**(preset.get("shared") or {}), **(preset_datasets.get(dataset) or {}),
                      **((preset.get("overrides") or {}).get(model) or {})}
            if epochs is not None:
                config["epochs"] = epochs
            jobs.append({"dataset": dataset, "model": model, "config": config,
                         "config_files": model_config_files(model, entry.get("model_configs_as"))})
    if not jobs:
        raise ValueError(f"nothing to run: no model of {model_names} runs on the data of {dataset_names} "
                         f"(skipped: {'; '.join(skipped)})")
    return jobs, skipped


# ---------------------------------------------------------------------------- data


def has_atomic_files(folder, name):
    return any(os.path.isfile(os.path.join(folder, f"{name}{suffix}")) for suffix in (".inter", ".train.inter"))


def ensure_dataset(name, entry, data_path, shared):
    """Convert ``name`` from the shared datasets into ``<data_path>/<name>/`` unless it is there
    (or ships in the recbole wheel). Returns the converter's counts, or None if nothing was done."""
    from masan_recbole.registry import WHEEL_DATASETS

    folder = os.path.join(data_path, name)
    if has_atomic_files(folder, name):
        return None
    source = entry.get("source")
    if not source:
        if os.path.isdir(os.path.join(WHEEL_DATASETS, name)):
            return None
        raise FileNotFoundError(f"dataset '{name}': no {name}.inter in {folder} and no 'source' to convert it "
                                f"from; put the atomic files there or give it a source in the presets file")
    from masan_recbole.data import CONVERTERS, convert

    if name not in CONVERTERS:
        raise ValueError(f"dataset '{name}' is not in {folder} and masan_recbole.data has no converter for it "
                         f"(converters: {', '.join(sorted(CONVERTERS))})")
    source_dir = os.path.join(shared, source)
    if not os.path.exists(source_dir):
        raise FileNotFoundError(f"dataset '{name}': source {source_dir} not found; pass --shared DIR, the folder "
                                f"that holds {source}/ (the project's shared datasets)")
    print(f"converting {name}: {source_dir} -> {folder}", flush=True)
    return convert(name, source_dir, data_path)


# ---------------------------------------------------------------------------- running


def execute(job):
    """Run one job in this process; never raises: a failure becomes an error record."""
    from benchmarks.compare import run_model

    start = time.perf_counter()
    argv, sys.argv = sys.argv, sys.argv[:1]  # RecBole reads --key=value from the command line
    try:
        with tempfile.TemporaryDirectory(prefix="reproduce-") as checkpoints:
            config = dict(job["config"], checkpoint_dir=checkpoints, **job["runtime"])
            result = run_model(job["model"], job["dataset"], config, config_file_list=job["config_files"] or None)
        result["status"] = "ok"
    except Exception as error:  # noqa: BLE001  (one model's failure must not end the run)
        result = {"status": "error", "error": f"{type(error).__name__}: {error}",
                  "traceback": traceback.format_exc()[-4000:]}
    finally:
        sys.argv = argv
    result["wall_seconds"] = time.perf_counter() - start
    return result


def child_main(job, out_path, threads):
    if threads:
        import torch

        torch.set_num_threads(threads)
    write_json_atomic(out_path, execute(job))


def run_job(job, isolate, threads):
    if not isolate:
        return execute(job)
    from benchmarks import reproduce  # the importable module, also when this file runs as __main__

    with tempfile.TemporaryDirectory(prefix="reproduce-child-") as scratch:
        out_path = os.path.join(scratch, "result.json")
        start = time.perf_counter()
        child = multiprocessing.get_context("spawn").Process(target=reproduce.child_main,
                                                             args=(job, out_path, threads))
        child.start()
        try:
            child.join()
        except KeyboardInterrupt:
            child.terminate()
            raise
        if os.path.isfile(out_path):
            with open(out_path) as f:
                return json.load(f)
        return {"status": "error", "wall_seconds": time.perf_counter() - start,
                "error": f"the child process ended with exit code {child.exitcode} and no result "
                         f"(a negative code is the signal that killed it, e.g. -9 when out of memory)"}


def peak_memory(result, device, isolate):
    """The peak-memory figure and what it measures."""
    if device == "cuda":
        return result.get("peak_cuda_memory_mb"), "torch.cuda.max_memory_allocated"
    if isolate:
        return result.get("peak_rss_mb"), "peak RSS of the model's own process (ru_maxrss)"
    return result.get("peak_rss_mb"), "peak RSS of the whole run so far (ru_maxrss, process-wide)"


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


# ---------------------------------------------------------------------------- report


def write_json_atomic(path, data):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1)
    os.replace(tmp, path)


def versions():
    import numpy
    import pandas
    import recbole
    import torch

    import masan_recbole

    found = {"python": platform.python_version(), "torch": torch.__version__, "recbole": recbole.__version__,
             "masan_recbole": masan_recbole.__version__, "numpy": numpy.__version__, "pandas": pandas.__version__}
    try:
        git = ["git", "-C", REPO]
        found["git"] = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                      check=True).stdout.strip()
        dirty = subprocess.run([*git, "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, check=True).stdout.strip()
        found["git"] += "+uncommitted" if dirty else ""
    except (OSError, subprocess.CalledProcessError):
        found["git"] = None
    return found


def device_name(device):
    import torch

    if device == "cuda":
        return torch.cuda.get_device_name()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


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
    lines = ["## Speed: ours vs RecBole's, measured in the same run", ""]
    if not rows:
        return lines + ["No speed pair (e.g. SASRec with RecBoleSASRec) ran on the same dataset.", ""]
    lines += ["| dataset | ours | reference | train s/epoch (ours / ref) | × | full-sort eval s (ours / ref) | × | shapes |",
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
    shared = ", ".join(f"{k} {v}" for k, v in report["preset_config"].get("shared", {}).items())
    overrides = report["preset_config"].get("overrides") or {}
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
    fig.savefig(f"{prefix}-curves.png", dpi=110)
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
    fig.savefig(f"{prefix}-speed.png", dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------------------- main


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.reproduce", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", required=True, help="a preset of the presets file (quick, full)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--models", nargs="+", help="run only these models of the preset (or others of the file)")
    parser.add_argument("--datasets", nargs="+", help="run only these datasets")
    parser.add_argument("--epochs", type=int, help="epoch budget instead of the preset's")
    parser.add_argument("--run", help="name of the result files (default reproduce-<preset>-<device>[-partial])")
    parser.add_argument("--data-path", default=os.path.join(REPO, "dataset"),
                        help="RecBole data_path; missing datasets are converted into it (default <repo>/dataset)")
    parser.add_argument("--shared", default=os.path.join(os.path.dirname(REPO), "shared", "datasets"),
                        help="the shared datasets folder converters read (default <repo>/../shared/datasets)")
    parser.add_argument("--preset-file", default=os.path.join(BENCHMARKS, "presets.yaml"))
    parser.add_argument("--anchors", default=os.path.join(BENCHMARKS, "anchors.yaml"))
    parser.add_argument("--out-dir", default=os.path.join(BENCHMARKS, "results"))
    parser.add_argument("--in-process", action="store_true",
                        help="run the models in this process (faster start; peak RSS becomes process-wide)")
    parser.add_argument("--threads", type=int, help="torch CPU threads per model (default: torch's choice)")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    try:
        spec = load_presets(args.preset_file)
        jobs, skipped = plan(spec, args.preset, args.models, args.datasets, args.epochs, path=args.preset_file)
        anchors_spec = load_yaml(args.anchors, "anchors")
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

    import torch

    import masan_recbole  # noqa: F401  (registers the models, applies the compatibility fixes)

    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda, but CUDA is not available here; use --device cpu or auto", file=sys.stderr)
        return 2
    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    if args.threads:
        torch.set_num_threads(args.threads)  # for --in-process; child processes set their own
    isolate = not args.in_process
    partial = bool(args.models or args.datasets or args.epochs)
    run = args.run or f"reproduce-{args.preset}-{device}" + ("-partial" if partial else "")
    os.makedirs(args.out_dir, exist_ok=True)
    prefix = os.path.join(args.out_dir, run)
    from benchmarks.compare import config_hash

    preset_config = spec["presets"][args.preset]
    report = {
        "benchmark": "reproduce", "run": run, "preset": args.preset,
        "description": preset_config.get("description", ""), "partial": partial,
        "command": "python -m benchmarks.reproduce " + " ".join(sys.argv[1:] if argv is None else argv),
        "preset_config": preset_config,
        "config_hash": config_hash([[j["dataset"], j["model"], j["config"], [os.path.basename(f) for f in j["config_files"]]]
                                    for j in jobs]),
        "device": device, "device_name": device_name(device),
        "threads": args.threads or torch.get_num_threads(), "isolated": isolate,
        "versions": versions(),
        "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "memory_note": peak_memory({}, device, isolate)[1],
        "models": {m: spec["models"][m] for m in dict.fromkeys(j["model"] for j in jobs)},
        "datasets": {d: spec["datasets"][d] for d in dict.fromkeys(j["dataset"] for j in jobs)},
        "kinds": spec["kinds"], "skipped": skipped, "converted": {},
        "results": {}, "speed_ratios": [],
    }
    if skipped:
        print(f"{len(jobs)} runs; left out (model and data kinds differ): {'; '.join(skipped)}")
    start = time.perf_counter()
    data_errors = {}
    for number, job in enumerate(jobs, start=1):
        dataset, model = job["dataset"], job["model"]
        if dataset not in report["converted"] and dataset not in data_errors:
            try:
                report["converted"][dataset] = ensure_dataset(dataset, spec["datasets"][dataset], args.data_path,
                                                              args.shared)
            except Exception as error:  # noqa: BLE001  (the other datasets still run)
                data_errors[dataset] = f"dataset not ready: {type(error).__name__}: {error}"
        job["runtime"] = {"data_path": args.data_path, "device": device, "show_progress": False, "state": "WARNING"}
        if dataset in data_errors:
            result = {"status": "error", "error": data_errors[dataset], "wall_seconds": 0.0}
        else:
            print(f"[{number}/{len(jobs)}] {dataset} / {model} ...", flush=True)
            result = run_job(job, isolate, args.threads)
        result["peak_memory_mb"], result["peak_memory_kind"] = peak_memory(result, device, isolate)
        report["results"].setdefault(dataset, {})[model] = result
        if result["status"] == "ok":
            metric = result["valid_metric"].lower()
            print(f"    {result['epochs']} epoch(s), {result['train_seconds_per_epoch']:.1f} s/epoch, eval "
                  f"{result['eval_seconds']:.2f} s, test {metric} {result['test'].get(metric, float('nan')):.4f}, "
                  f"peak {fmt(result['peak_memory_mb'], 0)} MB, {result['wall_seconds']:.0f} s", flush=True)
        else:
            print(f"    FAILED: {result['error'].splitlines()[0]}", flush=True)
        report["speed_ratios"] = speed_ratios(report["results"], spec.get("speed_pairs") or [])
        report["wall_seconds"] = time.perf_counter() - start
        report["finished"] = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
        write_json_atomic(prefix + ".json", report)  # after every model: a later crash keeps these
        with open(prefix + ".md", "w") as f:
            f.write(markdown(report, anchors_spec))
    plots(report, prefix)
    print(markdown(report, anchors_spec))
    print(f"wrote {prefix}.json, .md, -curves.png, -speed.png")
    failed = sum(r["status"] != "ok" for ms in report["results"].values() for r in ms.values())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
