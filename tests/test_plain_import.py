"""A plain ``import masan_recbole`` registers the models and fixes RecBole, and changes nothing else
a RecBole program sees; ``masan_recbole.opt_in()`` (which run_recbole.py and run_hyper.py call)
switches on the speed patches, the console and the dataset configs for every model. Each case runs
in a fresh interpreter without the MASAN_RECBOLE_OPT_IN that the test session itself set."""

import os
import subprocess
import sys
import textwrap

import pytest

from tests.test_patches import FAULTS_PER_STEP

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PLAIN_ENV = {k: v for k, v in os.environ.items() if k != "MASAN_RECBOLE_OPT_IN"}

STATE = """
import json, torch
from recbole.trainer import Trainer
from masan_recbole import config
from masan_recbole.patches import applied
from masan_recbole.patches.tools import patched_by
print(json.dumps({"dropout": patched_by(torch.nn.functional, "dropout"),
                  "optimizer": patched_by(Trainer, "_build_optimizer"),
                  "console": "quiet_console" in applied(),
                  "dataset_configs": config.DATASET_CONFIGS_FOR_ALL_MODELS}))
"""


def python(code, **env):
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, capture_output=True, text=True,
                          env={**PLAIN_ENV, "OMP_NUM_THREADS": "1", **env}, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.strip().splitlines()[-1]


def state(before=""):
    import json

    return json.loads(python("import masan_recbole\n" + before + STATE))


def test_a_plain_import_patches_no_dropout_optimizer_console_or_dataset_config():
    assert state() == {"dropout": None, "optimizer": None, "console": False, "dataset_configs": False}


def test_opt_in_switches_each_of_them_on():
    assert state("masan_recbole.opt_in()") == {"dropout": "fast_cpu_dropout", "optimizer": "fused_optimizer",
                                               "console": True, "dataset_configs": True}
    assert state("masan_recbole.opt_in(speed=False, console=False)")["dropout"] is None


def test_the_entry_points_opt_in_and_their_child_processes_follow(tmp_path):
    # run_recbole.py as a user runs it, with its main replaced by a report of what is switched on
    for script in ("run_recbole.py", "run_hyper.py"):
        out = python(f"""
            import runpy, masan_recbole.quick_start as q
            q.main_run = q.main_hyper = lambda: exec({STATE!r})
            runpy.run_path({os.path.join(ROOT, script)!r}, run_name="__main__")
        """)
        assert '"dropout": "fast_cpu_dropout"' in out and '"dataset_configs": true' in out, script
    # a process started by an opted-in one (DDP children, Ray workers) imports the package opted in
    assert python("import masan_recbole" + STATE, MASAN_RECBOLE_OPT_IN="speed,console,dataset_configs") == \
        python("import masan_recbole; masan_recbole.opt_in()" + STATE)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_malloc_is_tuned_only_after_opt_in():
    faults = {}
    for label, env in (("plain", {}), ("opted in", {"MASAN_RECBOLE_OPT_IN": "speed"})):
        faults[label] = int(python(FAULTS_PER_STEP, **env))
    assert faults["plain"] > 25_000  # glibc's defaults: every step maps its 105 MB again
    assert faults["opted in"] < faults["plain"] / 100


def test_recboles_models_keep_recboles_dataset_defaults():
    # RecBole's own FM on ml-100k: RecBole's split (RS 0.8/0.1/0.1), not configs/dataset/ml-100k.yaml's
    code = """
        import json, masan_recbole
        from recbole.config import Config
        fm, masan = Config(model="FM", dataset="ml-100k"), Config(model="MASAN", dataset="ml-100k")
        print(json.dumps([fm["eval_args"]["split"], masan["eval_args"]["split"]]))
    """
    assert python(code) == '[{"RS": [0.8, 0.1, 0.1]}, {"LS": "valid_and_test"}]'
    opted = python(code.replace("import json, masan_recbole", "import json, masan_recbole; masan_recbole.opt_in()"))
    assert opted == '[{"LS": "valid_and_test"}, {"LS": "valid_and_test"}]'


def test_a_missing_recbole_names_the_install_for_this_python():
    out = python("""
        import sys
        sys.modules["recbole"] = None  # as if RecBole were not installed
        try:
            import masan_recbole
        except ImportError as e:
            print(e)
    """)
    no_deps = "--no-deps " if sys.version_info >= (3, 12) else ""
    assert out == f"masan_recbole needs RecBole 1.2.1, which is not installed: pip install {no_deps}recbole==1.2.1"
