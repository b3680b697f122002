"""Running the jobs of a reproduction run: one job in this process, or in a child process of its
own so that a crash loses only that model and its peak memory is its own."""

import json
import multiprocessing
import os
import sys
import tempfile
import traceback

from benchmarks.harness import clock, run_model, write_text


def execute(job):
    """Run one job in this process; never raises: a failure becomes an error record."""
    start = clock()
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
    result["wall_seconds"] = clock() - start
    return result


def child_main(job, out_path, threads):
    """The child process: run the job and leave its record in ``out_path`` (scratch, not a result file)."""
    if threads:
        import torch

        torch.set_num_threads(threads)
    write_text(out_path, json.dumps(execute(job)))


def run_job(job, isolate, threads):
    if not isolate:
        return execute(job)
    with tempfile.TemporaryDirectory(prefix="reproduce-child-") as scratch:
        out_path = os.path.join(scratch, "result.json")
        start = clock()
        child = multiprocessing.get_context("spawn").Process(target=child_main, args=(job, out_path, threads))
        child.start()
        try:
            child.join()
        except KeyboardInterrupt:
            child.terminate()
            raise
        if os.path.isfile(out_path):
            with open(out_path) as f:
                return json.load(f)
        return {"status": "error", "wall_seconds": clock() - start,
                "error": f"the child process ended with exit code {child.exitcode} and no result "
                         f"(a negative code is the signal that killed it, e.g. -9 when out of memory)"}


def peak_memory(result, device, isolate):
    """The peak-memory figure of a job's record and what it measures."""
    if device == "cuda":
        return result.get("peak_cuda_memory_mb"), "torch.cuda.max_memory_allocated"
    if isolate:
        return result.get("peak_rss_mb"), "peak RSS of the model's own process (ru_maxrss)"
    return result.get("peak_rss_mb"), "peak RSS of the whole run so far (ru_maxrss, process-wide)"
