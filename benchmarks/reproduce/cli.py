"""One-command reproduction benchmark: a matrix of models x datasets through the plugin (our
MASAN, ASRec, SASRec and SR-SAN beside RecBole's own SASRec, LightSANs and FEARec), every model
with the same data config, seed and epoch budget, in one run.

    python -m benchmarks.reproduce --preset quick|full [--device auto|cpu|cuda]
        [--models M ...] [--datasets D ...] [--epochs N] [--set KEY=VALUE ...] [--baseline M] [--run NAME]
        [--data-path dataset] [--shared ../shared/datasets]
        [--preset-file benchmarks/presets.yaml] [--anchors benchmarks/anchors.yaml]
        [--out-dir benchmarks/results] [--in-process] [--threads N]

Presets (datasets, models, shared settings, per-model overrides) are data in
benchmarks/presets.yaml; published figures in benchmarks/anchors.yaml. A dataset missing from
--data-path is converted from --shared first (masan_recbole.data.convert). --set gives every model
of the run the same RecBole settings (e.g. --set hidden_size=64 MAX_ITEM_LIST_LENGTH=50), above the
preset's own; --baseline M replaces the presets file's speed pairs by every other model against M.
Writes, in --out-dir, with the run name (default reproduce-<preset>-<device>, plus -partial when
--models, --datasets, --epochs or --set change the preset):

  <run>.json          per model: every metric, seconds per train epoch, eval seconds, peak memory,
                      epochs run, validation curve, config and its hash, or the error; device,
                      versions, speed ratios; its schema_version is benchmarks/harness.py's.
                      Rewritten atomically after each model.
  <run>.md            our test figures beside the published ones (one column per protocol) and the
                      speed-ratio table
  <run>-curves.png    validation score per epoch, a line per model, a panel per dataset
  <run>-speed.png     training seconds per epoch, a panel per dataset

Each model runs in a child process (unless --in-process): a crash loses only that model, and on a
CPU the peak resident memory reported is that model's process (with --in-process it is the peak
of the whole run so far). On CUDA the peak is torch.cuda.max_memory_allocated.
"""

import argparse
import os
import sys

from benchmarks.harness import BENCHMARKS, REPO, clock, config_hash, environment, now, write_json, write_text
from benchmarks.reproduce.planning import ensure_dataset, load_presets, load_yaml, plan, setting, settings_layers
from benchmarks.reproduce.reporting import fmt, markdown, plots, speed_ratios
from benchmarks.reproduce.running import peak_memory, run_job


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.reproduce", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", required=True, help="a preset of the presets file (quick, full)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--models", nargs="+", help="run only these models of the preset (or others of the file)")
    parser.add_argument("--datasets", nargs="+", help="run only these datasets")
    parser.add_argument("--epochs", type=int, help="epoch budget instead of the preset's")
    parser.add_argument("--set", nargs="+", type=setting, default=[], metavar="KEY=VALUE",
                        help="RecBole settings for every model, above the preset's (values read as YAML)")
    parser.add_argument("--baseline", help="speed ratios of every other model of the run against this one")
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


def new_report(args, argv, spec, jobs, skipped, device):
    """The report of a run before any job: what runs, with which settings, where and with what."""
    preset_config = spec["presets"][args.preset]
    datasets = list(dict.fromkeys(j["dataset"] for j in jobs))
    partial = bool(args.models or args.datasets or args.epochs or args.set)
    run = args.run or f"reproduce-{args.preset}-{device}" + ("-partial" if partial else "")
    return {
        "benchmark": "reproduce", "run": run, "preset": args.preset,
        "description": preset_config.get("description", ""), "partial": partial,
        "command": "python -m benchmarks.reproduce " + " ".join(sys.argv[1:] if argv is None else argv),
        "preset_config": preset_config,
        "settings": settings_layers(preset_config, datasets, args.epochs, dict(args.set)),
        "config_hash": config_hash([[j["dataset"], j["model"], j["config"], [os.path.basename(f) for f in j["config_files"]]]
                                    for j in jobs]),
        **environment(device, args.threads), "isolated": not args.in_process,
        "started": now(),
        "memory_note": peak_memory({}, device, not args.in_process)[1],
        "models": {m: spec["models"][m] for m in dict.fromkeys(j["model"] for j in jobs)},
        "datasets": {d: spec["datasets"][d] for d in datasets},
        "kinds": spec["kinds"], "skipped": skipped, "converted": {},
        "results": {}, "speed_ratios": [],
    }


def speed_pairs(spec, jobs, baseline=None):
    """[ours, reference] pairs of the speed table: the presets file's, or each model against --baseline."""
    if not baseline:
        return spec.get("speed_pairs") or []
    return [[model, baseline] for model in dict.fromkeys(j["model"] for j in jobs) if model != baseline]


def run_jobs(report, jobs, spec, args, prefix, anchors_spec):
    """Prepare each dataset once, run each job, and rewrite the JSON and Markdown after each."""
    device, isolate = report["device"], report["isolated"]
    start = clock()
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
        report["speed_ratios"] = speed_ratios(report["results"], speed_pairs(spec, jobs, args.baseline))
        report["wall_seconds"] = clock() - start
        report["finished"] = now()
        write_json(prefix + ".json", report, indent=1)  # after every model: a later crash keeps these
        write_text(prefix + ".md", markdown(report, anchors_spec))


def main(argv=None):
    args = parse_args(argv)
    try:
        spec = load_presets(args.preset_file)
        jobs, skipped = plan(spec, args.preset, args.models, args.datasets, args.epochs, path=args.preset_file,
                             settings=dict(args.set))
        if args.baseline and args.baseline not in {j["model"] for j in jobs}:
            raise ValueError(f"--baseline {args.baseline} is not a model of this run")
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
    report = new_report(args, argv, spec, jobs, skipped, device)
    prefix = os.path.join(args.out_dir, report["run"])
    if skipped:
        print(f"{len(jobs)} runs; left out (model and data kinds differ): {'; '.join(skipped)}")
    run_jobs(report, jobs, spec, args, prefix, anchors_spec)
    plots(report, prefix)
    print(markdown(report, anchors_spec))
    print(f"wrote {prefix}.json, .md, -curves.png, -speed.png")
    failed = sum(r["status"] != "ok" for ms in report["results"].values() for r in ms.values())
    return 1 if failed else 0
