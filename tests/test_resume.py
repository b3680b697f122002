"""A run killed mid-training and resumed from its checkpoint ends exactly like an
uninterrupted run with the same seed."""

import json
import os
import signal
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = """
import json, sys
import masan_recbole
from recbole.quick_start import run_recbole
result = run_recbole(model=sys.argv[1], dataset="synth", config_dict=json.loads(sys.argv[2]))
print("RESULT", json.dumps({k: float(v) for k, v in result["test_result"].items()}), flush=True)
"""


def start(model, config, cwd):
    return subprocess.Popen([sys.executable, "-c", SCRIPT, model, json.dumps(config)], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def result_of(proc):
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-3000:]
    return json.loads(out.split("RESULT", 1)[1])


@pytest.mark.slow
def test_sigkill_after_an_epoch_then_resume_matches_uninterrupted(tiny_config, tmp_path):
    # The step schedule makes the scheduler state matter too.
    config = dict(tiny_config, epochs=4, state="INFO", lr_scheduler="step", lr_step_size=1, lr_gamma=0.5,
                  loss_type="BPR")  # BPR: negative sampling draws from numpy's generator
    uninterrupted = result_of(start("SASRec", dict(config, checkpoint_dir=str(tmp_path / "a")), tmp_path))

    saved = tmp_path / "b"
    proc = start("SASRec", dict(config, checkpoint_dir=str(saved)), tmp_path)
    past_epoch_0 = False
    for line in proc.stdout:  # kill right after a checkpoint written after epoch 0
        past_epoch_0 |= "epoch 1 training" in line
        if past_epoch_0 and "Saving current" in line:
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    (ckpt,) = os.listdir(saved)
    resumed = result_of(start("SASRec", dict(config, checkpoint_dir=str(saved),
                                             checkpoint_file=str(saved / ckpt)), tmp_path))
    assert resumed == uninterrupted
