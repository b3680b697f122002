"""Plugin models resolve by name everywhere; defaults layer under the user's config."""

import pytest
from recbole.config import Config
from recbole.model.sequential_recommender.sasrec import SASRec as RecBoleSASRec
from recbole.utils import get_model, get_trainer

import masan_recbole
from masan_recbole.model.sasrec import SASRec
from masan_recbole.config import model_yaml
from masan_recbole.registry import register_model
from masan_recbole.trainer import Trainer


def test_plugin_sasrec_shadows_recbole_and_recbole_stays_reachable():
    from recbole.quick_start import quick_start

    assert get_model("SASRec") is SASRec
    assert get_model("RecBoleSASRec") is RecBoleSASRec
    assert quick_start.get_model("SASRec") is SASRec  # the name RecBole's run_recbole uses
    assert get_model("LightSANs").__module__.startswith("recbole.model")
    assert "SASRec" in masan_recbole.plugin_models()


def test_unknown_model_lists_the_available_ones():
    with pytest.raises(ValueError) as err:
        get_model("SASRek")
    message = str(err.value)
    assert "Unknown model 'SASRek'" in message and "Did you mean SASRec" in message
    assert "RecBoleSASRec" in message and "LightSANs" in message and "lightgbm" not in message


def test_defaults_layer_under_the_user(tiny_config, tmp_path):
    user_yaml = tmp_path / "mine.yaml"
    user_yaml.write_text("n_heads: 4\n")
    cfg = {k: v for k, v in tiny_config.items() if k not in ("hidden_size", "n_heads")}
    config = Config(model="SASRec", dataset="synth", config_file_list=[str(user_yaml)], config_dict=cfg)
    assert config["hidden_size"] == 64  # configs/model/SASRec.yaml
    assert config["n_heads"] == 4  # user file beats it
    assert config["n_layers"] == 1  # user dict beats it
    assert config["lr_scheduler"] is None  # configs/overall.yaml, plugin models only
    assert config["train_neg_sample_args"]["distribution"] == "none"  # CE: no negatives


def test_dataset_config_applies_when_the_name_matches(tiny_config):
    config = Config(model="RecBoleSASRec", dataset="ml-100k", config_dict={"state": "WARNING"})
    assert config["eval_args"]["order"] == "TO" and config["valid_metric"] == "MRR@10"
    assert config["data_path"].endswith("dataset_example/ml-100k")  # wheel copy, nothing local


def test_local_dataset_folder_wins_over_the_wheel(tmp_path, tiny_config):
    (tmp_path / "ml-100k").mkdir()
    config = Config(model="SASRec", dataset="ml-100k", config_dict={"data_path": str(tmp_path)})
    assert config["data_path"] == str(tmp_path / "ml-100k")


def test_bpr_gets_negatives_unless_the_user_says_otherwise(tiny_config):
    config = Config(model="SASRec", dataset="synth", config_dict=dict(tiny_config, loss_type="BPR"))
    assert config["train_neg_sample_args"]["sample_num"] == 1
    # RecBole's built-in with CE no longer needs `train_neg_sample_args: None` spelled out
    assert Config(model="RecBoleSASRec", dataset="synth", config_dict=tiny_config)["MODEL_INPUT_TYPE"].name == "POINTWISE"


@pytest.mark.parametrize("key,value,expected", [
    ("learning_rate", "fast", "must be a number"),
    ("epochs", "10x", "must be a whole number"),
    ("epochs", 1.5, "must be a whole number"),
    ("show_progress", 1, "must be true or false"),
])
def test_wrong_config_types_are_named(tiny_config, key, value, expected):
    from recbole.data import create_dataset

    config = Config(model="SASRec", dataset="synth", config_dict=dict(tiny_config, **{key: value}))
    with pytest.raises(TypeError, match=rf"config key '{key}' {expected}"):
        create_dataset(config)  # before any data loads


def test_fractions_with_a_whole_default_pass_the_type_check(tiny_config):
    from recbole.data import create_dataset

    # FEARec's global_ratio defaults to 1 but takes any fraction; the tuned search draws 0.4 to 1.0
    config = Config(model="FEARec", dataset="synth", config_dict=dict(tiny_config, global_ratio=0.6))
    create_dataset(config)
    assert config["global_ratio"] == 0.6


@pytest.mark.slow
def test_a_registered_model_gets_its_own_trainer_and_aliases(tiny_config):
    from recbole.quick_start import run_recbole

    class CountingTrainer(Trainer):
        fitted = 0

        def fit(self, *args, **kwargs):
            CountingTrainer.fitted += 1
            return super().fit(*args, **kwargs)

    class TinySASRec(SASRec):
        pass

    register_model(TinySASRec, name="Tiny-SASRec", aliases=("TinySASRec",), trainer=CountingTrainer)
    assert get_trainer(None, "TinySASRec") is CountingTrainer
    assert get_trainer(None, "SASRec") is Trainer
    # no configs/model/Tiny-SASRec.yaml exists: the user passes the settings
    result = run_recbole(model="TinySASRec", dataset="synth", config_file_list=[model_yaml("SASRec")],
                         config_dict=dict(tiny_config, epochs=1))
    assert CountingTrainer.fitted == 1
    assert result["test_result"].keys() >= {"hit@10", "ndcg@10"}  # tested through the registered model


@pytest.mark.parametrize("name, library", [("XGBoost", "xgboost"), ("LightGBM", "lightgbm")])
def test_recboles_exlib_models_resolve_or_name_their_library(name, library):
    # RecBole's own get_model imports them; without their library that fails on the import, as here
    try:
        __import__(library)
    except ImportError:
        with pytest.raises(ImportError, match=rf"RecBole's {name} needs .*{library}.*pip install .*{library}"):
            get_model(name)
    else:
        assert get_model(name).__name__ == name
