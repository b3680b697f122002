"""The wheel ships every subpackage and the configs."""

import os
import tomllib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_every_subpackage_is_listed_for_the_wheel():
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        listed = set(tomllib.load(f)["tool"]["setuptools"]["packages"])
    found = {
        os.path.relpath(folder, ROOT).replace(os.sep, ".")
        for folder, _, files in os.walk(os.path.join(ROOT, "masan_recbole"))
        if "__init__.py" in files
    }
    assert found | {"masan_recbole.configs"} == listed


def test_configs_are_found_by_the_package():
    from masan_recbole.config import CONFIG_DIR

    assert os.path.isfile(os.path.join(CONFIG_DIR, "model", "SASRec.yaml"))
    assert os.path.isfile(os.path.join(CONFIG_DIR, "overall.yaml"))
