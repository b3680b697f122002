"""Time the README's main command from a fresh clone, and record what it printed.

    python -m benchmarks.main_command        # writes benchmarks/results/main_command-cpu.json

The command is read from the README (the first bash block under "## Set-up"), so the figure is the
one for the line a newcomer copies. It runs in a clone of this checkout's HEAD in a new temporary
folder, with its own .venv, RecBole log and saved model, so the install counts in the time as it
does for the newcomer and nothing in this checkout is touched. The clone holds committed work only.
Run it with the machine otherwise idle: the command uses every core. ``--python 3.13`` runs the line
with that Python as its ``python3`` (found on PATH or in pyenv's versions) and records it in
main_command-cpu-py3.13.json.
"""

import argparse
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

from benchmarks.harness import BENCHMARKS, REPO, git_commit, now, write_json

ANSI = re.compile(r"\x1b\[[0-9;]*m")
PROGRESS = re.compile(r"\d+%\|")


def readme_command(readme):
    """The first line of the first ```bash block under "## Set-up" in the README's text."""
    section = readme.split("\n## Set-up", 1)
    block = re.search(r"```bash\n(.+?)\n", section[1]) if len(section) == 2 else None
    if block is None:
        raise ValueError("README.md has no ```bash block under '## Set-up'; the main command is read from there")
    return block.group(1).strip()


def parse_output(text):
    """Best epoch, epochs run, best validation score and test metrics from run_recbole.py's output.
    One validation per epoch (eval_step 1, as the main command runs); the best epoch is the last
    with the highest validation score (RecBole's early stopping takes a score equal to the best as
    the new best, so the last of equals is the model it keeps)."""
    text = ANSI.sub("", text)
    scores = [float(s) for s in re.findall(r"epoch \d+ evaluating \[.*?valid_score: ([0-9.]+)\]", text)]
    table = re.search(r"test result \(model of the best validation score, ([0-9.]+)\):\n(.+?)(?:\n\S|\Z)",
                      text, re.S)
    if not scores or table is None:
        raise ValueError("run_recbole.py's output has no validated epochs or no test table; "
                         "see the log written beside the result file")
    header, *rows = table.group(2).splitlines()
    ks = header.split()[1:]  # "@5", "@10", ...
    test = {}
    for row in filter(str.strip, rows):
        name, *values = row.split()
        test.update({f"{name}{k}": float(v) for k, v in zip(ks, values)})
    return {"best_epoch": len(scores) - 1 - scores[::-1].index(max(scores)), "epochs_run": len(scores),
            "best_valid_score": float(table.group(1)), "test_result": test}


def without_redraws(output):
    """The output without blank lines and progress-bar redraws (each bar kept once, finished)."""
    return "\n".join(line for line in output.splitlines()
                     if line.strip() and (not PROGRESS.search(line) or "100%|" in line)) + "\n"


def find_python(version):
    """An interpreter of Python ``version`` ("3.13"): python3.13 on PATH, else pyenv's build."""
    candidates = [shutil.which(f"python{version}")]
    pyenv_root = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
    candidates += sorted(glob.glob(os.path.join(pyenv_root, "versions", f"{version}.*", "bin", f"python{version}")))
    for path in filter(None, candidates):
        found = subprocess.run([path, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                               capture_output=True, text=True)
        if found.stdout.strip() == version:
            return path
    raise SystemExit(f"error: no Python {version} on PATH or in {pyenv_root}/versions (pyenv install {version})")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=None, help="default benchmarks/results/main_command-cpu[-pyX.Y].json")
    parser.add_argument("--python", default=None, help="X.Y: run the line with this Python as python3")
    args = parser.parse_args(argv)
    suffix = f"-py{args.python}" if args.python else ""
    args.out = args.out or os.path.join(BENCHMARKS, "results", f"main_command-cpu{suffix}.json")
    with open(os.path.join(REPO, "README.md")) as f:
        command = readme_command(f.read())
    commit = git_commit()
    work = tempfile.mkdtemp(prefix="main_command-")
    try:
        subprocess.run(["git", "clone", "-q", REPO, os.path.join(work, "clone")], check=True)
        env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "VIRTUAL_ENV", "PYTHONPATH")}
        python = find_python(args.python) if args.python else shutil.which("python3")
        if args.python:  # the line's python3 is this interpreter
            os.makedirs(os.path.join(work, "bin"))
            os.symlink(python, os.path.join(work, "bin", "python3"))
            env["PATH"] = os.path.join(work, "bin") + os.pathsep + env.get("PATH", "")
        start = time.perf_counter()
        done = subprocess.run(["bash", "-c", command], cwd=os.path.join(work, "clone"), env=env,
                              capture_output=True, text=True)
        seconds = time.perf_counter() - start
    finally:
        shutil.rmtree(work, ignore_errors=True)
    log_path, output = os.path.splitext(args.out)[0] + ".log", done.stdout + "\n" + done.stderr
    with open(log_path, "w") as f:  # RecBole logs to stderr, run_recbole.py prints its table to stdout
        f.write(without_redraws(output))
    if done.returncode != 0:
        sys.exit(f"error: the main command failed (exit {done.returncode}); its output is in {log_path}")
    version = subprocess.run([python, "--version"], capture_output=True, text=True).stdout.split()[-1]
    record = {"command": command, "commit": commit, "python": version, "finished": now(), "cpu_count": os.cpu_count(),
              "wall_seconds": round(seconds, 1), **parse_output(output)}
    write_json(args.out, record)
    print(f"{record['wall_seconds']:.0f} s, best epoch {record['best_epoch']} of {record['epochs_run']}, "
          f"test {record['test_result']} -> {args.out}")
    return record


if __name__ == "__main__":
    main()
