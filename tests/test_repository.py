"""The repository stays light: every clone downloads its whole history, so no large file or
checkpoint is tracked."""

import os
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LIMIT = 2 * 1024 * 1024
# result files are read in review and diffed in every commit that touches them: per-user lists go
# packed (benchmarks.per_user), so a file stays well under this
RESULT_LIMIT = 100 * 1024


def tracked_files():
    try:
        out = subprocess.run(["git", "-C", ROOT, "ls-files", "-z"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git work tree")
    return [name for name in out.split("\0") if name]


def test_no_tracked_file_is_over_2_mb_or_a_checkpoint():
    files = tracked_files()
    big = [(name, os.path.getsize(os.path.join(ROOT, name))) for name in files
           if os.path.isfile(os.path.join(ROOT, name)) and os.path.getsize(os.path.join(ROOT, name)) > LIMIT]
    assert not big, f"tracked files over 2 MB: {big}"
    checkpoints = [name for name in files if name.endswith((".pth", ".pt", ".ckpt"))]
    assert not checkpoints, f"checkpoints tracked: {checkpoints}"


def test_every_result_json_is_under_100_kb():
    results = [name for name in tracked_files() if name.startswith("benchmarks/results/") and name.endswith(".json")]
    assert results
    big = [(name, os.path.getsize(os.path.join(ROOT, name))) for name in results
           if os.path.isfile(os.path.join(ROOT, name)) and os.path.getsize(os.path.join(ROOT, name)) > RESULT_LIMIT]
    assert not big, f"result files over 100 KB: {big}"


def test_gitignore_keeps_checkpoints_out():
    for path in ("saved/SASRec-x.pth", "benchmarks/results/converged/parked/run.pth", "any/where/model.pth"):
        ignored = subprocess.run(["git", "-C", ROOT, "check-ignore", "-q", path]).returncode == 0
        assert ignored, f"{path} is not ignored"
