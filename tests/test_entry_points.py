"""Every RecBole entry point, driven for real, from our CLIs and from a user's own script."""

import json
import os
import re
import socket
import subprocess
import sys
import textwrap

import pytest

from benchmarks.main_command import parse_output, readme_command, without_redraws

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--epochs=1", "--hidden_size=16", "--inner_size=32", "--n_layers=1", "--MAX_ITEM_LIST_LENGTH=10",
        "--train_batch_size=512", "--show_progress=False", "--state=INFO"]


def run(args, cwd, timeout=400):
    proc = subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    return proc.stdout + proc.stderr


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_run_recbole_cli_trains_and_tests(data_root, tmp_path):
    out = run([os.path.join(ROOT, "run_recbole.py"), "--model=SASRec", "--dataset=synth",
               f"--data_path={data_root}", *TINY], cwd=tmp_path)
    assert re.search(r"test result \(model of the best validation score, [0-9.]+\):\n  metric +@10\n  recall +0\.\d{4}\n  mrr +0\.\d{4}", out)
    assert os.listdir(tmp_path / "saved")[0].startswith("SASRec-")
    # the console shows progress and results; the config, dataset and model dumps go to the log file only
    (log,) = [os.path.join(folder, f) for folder, _, files in os.walk(tmp_path / "log") for f in files]
    assert "hidden_size = 16" in open(log).read() and "hidden_size = 16" not in out
    assert "epoch 0 training" in out and "np.float64" not in out and len(out.splitlines()) < 40
    assert out.count("model 'SASRec' is the plugin's implementation; RecBole's built-in one is available as "
                     "'RecBoleSASRec'") == 1
    # benchmarks.main_command reads the same output (and the README's line) to record the main command
    parsed = parse_output(out)
    assert (parsed["epochs_run"], parsed["best_epoch"]) == (1, 0)
    logged = re.search(r"test result: OrderedDict\((.+)\)", out).group(1)
    logged = {k: float(v) for k, v in re.findall(r"'(\w+@\d+)', (?:np\.float64\()?([0-9.]+)", logged)}
    assert "recall@10" in logged and parsed["test_result"] == pytest.approx(logged, abs=5e-5)
    assert readme_command(open(os.path.join(ROOT, "README.md")).read()).endswith(".venv/bin/python run_recbole.py")
    assert parse_output(without_redraws(out)) == parsed
    bars = "Train     0:  50%|#  | 1/2\nTrain     0: 100%|## | 2/2\n\nepoch 0 training [time: 1.00s]\n"
    assert without_redraws(bars) == "Train     0: 100%|## | 2/2\nepoch 0 training [time: 1.00s]\n"


def logged_test_metric(log, name="hit@10"):
    return float(re.search(rf"test result.*?'{name}'[,:] (?:np\.float64\()?([0-9.]+)", log).group(1))


@pytest.mark.slow
def test_run_recbole_cli_two_processes_on_cpu(data_root, tmp_path):
    # both protocols: the papers' figures are reduced over the ranks as RecBole's are
    args = [os.path.join(ROOT, "run_recbole.py"), "--model=SASRec", "--dataset=synth", f"--data_path={data_root}",
            *[a for a in TINY if not a.startswith("--epochs")], "--epochs=3", "--eval_exclude_history=both"]
    two = run([*args, "--nproc=2", f"--port={free_port()}"], cwd=tmp_path)
    (ckpt,) = os.listdir(tmp_path / "saved")
    single = run(args, cwd=tmp_path / "saved")  # its own folder: one checkpoint per run
    # Each rank trains on half the batches (DistributedSampler), so the two runs differ a little.
    for metric in ("hit@10", "hit@10_history_excluded"):
        assert abs(logged_test_metric(two, metric) - logged_test_metric(single, metric)) < 0.1
    assert "@10 excl." in two and "@10 excl." in single
    # a checkpoint from a multi-process run loads in one process
    run(["-c", f"import masan_recbole\nfrom recbole.quick_start import load_data_and_model\n"
               f"load_data_and_model({str(tmp_path / 'saved' / ckpt)!r})"], cwd=tmp_path)


@pytest.mark.slow
def test_unknown_model_on_the_cli_lists_models(tmp_path):
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "run_recbole.py"), "--model=NoSuchNet"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "Unknown model 'NoSuchNet'" in proc.stderr and "SASRec" in proc.stderr


@pytest.mark.slow
def test_run_hyper_cli_searches_with_hyperopt(data_root, tmp_path):
    params = tmp_path / "hyper.test"
    params.write_text("learning_rate choice [0.01,0.001]\n")
    out_file = tmp_path / "result.txt"
    out = run([os.path.join(ROOT, "run_hyper.py"), "--model=SASRec", "--dataset=synth", f"--params_file={params}",
               f"--output_file={out_file}", "--algo=exhaustive", f"--data_path={data_root}", *TINY], cwd=tmp_path)
    assert "best params" in out
    text = out_file.read_text()
    assert "learning_rate:0.01" in text and "learning_rate:0.001" in text


@pytest.mark.slow
def test_a_users_script_outside_the_repo_on_ml100k(tmp_path):
    """The foundation's promise: import the plugin, call RecBole's own functions."""
    script = tmp_path / "my_experiment.py"
    script.write_text(textwrap.dedent("""
        import json, os, sys
        import masan_recbole
        from recbole.quick_start import run_recbole, load_data_and_model
        from recbole.utils import get_trainer

        result = run_recbole(model="SASRec", dataset="ml-100k", config_dict={
            "epochs": 1, "hidden_size": 8, "inner_size": 16, "n_layers": 1, "MAX_ITEM_LIST_LENGTH": 5,
            "train_batch_size": 4096, "show_progress": False, "state": "WARNING"})
        (ckpt,) = os.listdir("saved")
        config, model, dataset, train, valid, test = load_data_and_model(os.path.join("saved", ckpt))
        trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
        again = trainer.evaluate(test, load_best_model=False)
        print(json.dumps({"run": float(result["test_result"]["ndcg@10"]), "reloaded": float(again["ndcg@10"]),
                          "users": int(dataset.user_num)}))
    """))
    out = run([str(script)], cwd=tmp_path)
    numbers = json.loads(next(line for line in out.splitlines() if line.startswith('{"run"')))
    assert numbers["users"] == 944  # ml-100k from the recbole wheel, 943 users + [PAD]
    assert numbers["reloaded"] == pytest.approx(numbers["run"])


def test_the_main_commands_best_epoch_is_the_last_of_equal_scores_as_recbole_keeps():
    # RecBole's early_stopping takes a score equal to the best as the new best: the last one is saved
    lines = [f"epoch {i} evaluating [time: 0.10s, valid_score: {s}]" for i, s in enumerate(["0.1", "0.3", "0.2", "0.3"])]
    table = "test result (model of the best validation score, 0.3000):\n  metric          @10\n  mrr          0.2500\n"
    parsed = parse_output("\n".join(lines) + "\n" + table)
    assert (parsed["best_epoch"], parsed["epochs_run"], parsed["test_result"]) == (3, 4, {"mrr@10": 0.25})
