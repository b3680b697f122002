"""Two "machines" on localhost: two separate ``run_recbole.py`` processes joined by
``--world_size=2 --ip --port --group_offset``, as two hosts would be started (docs/usage.md,
"More than one process"). Each host runs in its own folder, as it would on its own disk."""

import os
import re
import signal
import subprocess
import sys
import time

import pytest
import torch

from masan_recbole.checkpoint import load_checkpoint
from test_entry_points import ROOT, TINY, free_port, logged_test_metric

# SASRec on ml-100k (ships in the recbole wheel), small enough to train in seconds per epoch.
# No dropout: then the only randomness left is the data order, which DistributedSampler fixes
# by global rank, so two hosts with one process each train exactly like one host with two.
ARGS = [os.path.join(ROOT, "run_recbole.py"), "--model=SASRec", "--dataset=ml-100k",
        *[a for a in TINY if not a.startswith(("--epochs", "--train_batch_size"))],
        "--epochs=2", "--train_batch_size=1024", "--learning_rate=0.005",
        "--hidden_dropout_prob=0", "--attn_dropout_prob=0", "--device=cpu"]  # gloo, even where CUDA is
TIMEOUT = 420  # seconds for each group of processes (a loaded 2-core CPU takes about a minute)


def start(args, folder):
    folder.mkdir(parents=True, exist_ok=True)
    log = open(folder / "output.txt", "w")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    # Its own process group: mp.spawn's children are killed with it.
    proc = subprocess.Popen([sys.executable, *args], cwd=folder, stdout=log, stderr=subprocess.STDOUT,
                            text=True, env=env, start_new_session=True)
    proc.log, proc.folder = log, folder
    return proc


def kill(proc):
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()


def run_together(jobs, timeout=TIMEOUT):
    """Start every ``(args, folder)`` at once; wait for all of them, but no longer than ``timeout``.

    As soon as one fails (or time runs out) the others are killed: a host whose partner is
    gone would otherwise wait for it until torch.distributed's own 30-minute timeout.
    Returns each job's output; on failure, the failure names every job with its output's tail."""
    procs = [start(args, folder) for args, folder in jobs]
    deadline = time.monotonic() + timeout
    try:
        while any(p.poll() is None for p in procs):
            failed = [p for p in procs if p.poll() not in (None, 0)]
            if failed or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    finally:
        for p in procs:
            kill(p)
            p.log.close()
    outputs = [(p.folder / "output.txt").read_text() for p in procs]
    if any(p.returncode != 0 for p in procs):
        why = "timed out after %ds" % timeout if time.monotonic() > deadline else "failed"
        report = "\n\n".join(f"--- {p.folder.name}: exit code {p.returncode}\n{out[-3000:]}"
                             for p, out in zip(procs, outputs))
        raise AssertionError(f"{why}:\n{report}")
    return outputs


def run_two_hosts(tmp_path, attempts=2):
    """Host A (global rank 0, which listens on the port) and host B (global rank 1)."""
    for attempt in range(attempts):
        port = free_port()
        common = [*ARGS, "--nproc=1", "--world_size=2", "--ip=127.0.0.1", f"--port={port}"]
        try:
            return run_together([([*common, "--group_offset=0"], tmp_path / "host_a"),
                                 ([*common, "--group_offset=1"], tmp_path / "host_b")])
        except AssertionError as e:
            # The free port can be taken between free_port() and host A binding it: try another.
            if attempt + 1 == attempts or "address already in use" not in str(e).lower():
                raise


def metrics_of(output):
    line = re.search(r"test result: OrderedDict\(\[(.*?)\]\)", output)
    assert line, output[-3000:]
    return {k: float(v) for k, v in re.findall(r"\('([\w@]+)', (?:np\.float64\()?([0-9.e-]+)", line.group(1))}


def checkpoint(folder):
    (name,) = os.listdir(folder / "saved")
    return name, load_checkpoint(str(folder / "saved" / name))


@pytest.mark.slow
def test_two_machines_on_localhost_train_like_one_process(tmp_path):
    host_a, host_b = run_two_hosts(tmp_path)
    (single,) = run_together([(ARGS, tmp_path / "single")])
    (one_host,) = run_together([([*ARGS, "--nproc=2", f"--port={free_port()}"], tmp_path / "one_host")])

    # Every host prints the test result (its first process is its local rank 0), and the
    # result is reduced over all processes of both hosts: the same numbers on both.
    a, b = metrics_of(host_a), metrics_of(host_b)
    assert a == b and a["hit@10"] > 0
    assert re.search(r"test result \(model of the best validation score, [0-9.]+\):\n  metric +@10", host_a)
    assert re.search(r"test result \(model of the best validation score, [0-9.]+\):\n  metric +@10", host_b)
    # Two hosts with one process each are one host with two processes, to the last digit ...
    assert a == metrics_of(one_host)
    # ... and, as for --nproc=2 (test_entry_points), close to one process: each process trains on
    # half of every batch (DistributedSampler), so the order of the samples differs a little.
    assert abs(logged_test_metric(host_a) - logged_test_metric(single)) < 0.1

    # Each host saves the same model in its own saved/, under rank 0's run tag (the time in
    # the name is each host's own clock).
    (name_a, state_a), (name_b, state_b) = checkpoint(tmp_path / "host_a"), checkpoint(tmp_path / "host_b")
    assert name_a.rsplit("-", 1)[1] == name_b.rsplit("-", 1)[1]
    assert state_a["state_dict"].keys() == state_b["state_dict"].keys()
    assert all(torch.equal(state_a["state_dict"][k], state_b["state_dict"][k]) for k in state_a["state_dict"])
