"""Safe checkpoints: plain data only, weights_only loading, atomic writes, clear refusals."""

import os
import re
import pickle
import zipfile

import pytest
import torch
from recbole.quick_start import run_recbole

from masan_recbole.checkpoint import CheckpointError, load_checkpoint, save_checkpoint


def _trained_checkpoint(tiny_config, model="SASRec"):
    cfg = dict(tiny_config, epochs=1)
    run_recbole(model=model, dataset="synth", config_dict=cfg)
    (name,) = os.listdir(cfg["checkpoint_dir"])
    return os.path.join(cfg["checkpoint_dir"], name)


class _RunsShell:
    """Unpickling this calls os.system: the classic malicious checkpoint."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.slow
@pytest.mark.parametrize("model", ["SASRec", "RecBoleSASRec"])
def test_trainer_checkpoints_load_with_weights_only(tiny_config, model):
    # Built-in RecBole models get the safe format too, once the plugin is imported.
    path = _trained_checkpoint(tiny_config, model)
    state = torch.load(path, weights_only=True)
    assert state["config"]["model"] == model
    assert state["config"]["MODEL_TYPE"] == {"__enum__": "ModelType", "name": "SEQUENTIAL"}
    assert isinstance(state["state_dict"]["item_embedding.weight"], torch.Tensor)
    assert state["epoch"] == 0 and isinstance(state["best_valid_score"], float)


def test_malicious_pickle_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"format": "masan_recbole.checkpoint.v1", "config": _RunsShell(marker)}, path)
    with pytest.raises(CheckpointError, match="refusing to load .*pickled Python objects"):
        load_checkpoint(path)
    assert not marker.exists()


def test_malicious_pickle_is_refused_by_recboles_load_data_and_model(tmp_path):
    from recbole.quick_start import load_data_and_model

    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:  # a raw pickle, not even a torch zip file
        pickle.dump({"config": _RunsShell(marker)}, f)
    with pytest.raises(CheckpointError):
        load_data_and_model(str(path))
    assert not marker.exists()


def test_truncated_and_foreign_files_get_clear_errors(tmp_path):
    good = tmp_path / "good.pth"
    save_checkpoint({"state_dict": {"w": torch.ones(3)}}, good)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(good.read_bytes()[:200])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(truncated)
    foreign = tmp_path / "foreign.pth"
    torch.save({"state_dict": {"w": torch.ones(3)}}, foreign)
    with pytest.raises(CheckpointError, match="not a masan_recbole checkpoint"):
        load_checkpoint(foreign)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pth")


def test_unsafe_values_are_refused_at_save_time(tmp_path):
    with pytest.raises(CheckpointError, match=r"checkpoint\.other_parameter is a object"):
        save_checkpoint({"other_parameter": object()}, tmp_path / "x.pth")


def test_interrupted_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "best.pth"
    save_checkpoint({"state_dict": {"w": torch.zeros(4)}}, path)

    def killed_mid_write(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a zip")
        raise KeyboardInterrupt  # what a kill looks like from inside the process

    monkeypatch.setattr(torch, "save", killed_mid_write)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint({"state_dict": {"w": torch.ones(4)}}, path)
    monkeypatch.undo()
    assert torch.equal(load_checkpoint(path)["state_dict"]["w"], torch.zeros(4))
    assert os.listdir(tmp_path) == ["best.pth"]  # no temporary file left behind
    assert zipfile.is_zipfile(path)


@pytest.mark.slow
def test_resume_restores_training_state(tiny_config):
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.utils import get_model, get_trainer

    path = _trained_checkpoint(tiny_config)
    config = Config(model="SASRec", dataset="synth", config_dict=dict(tiny_config, epochs=3))
    train_data, valid_data, _ = data_preparation(config, create_dataset(config))
    model = get_model("SASRec")(config, train_data._dataset)
    trainer = get_trainer(config["MODEL_TYPE"], "SASRec")(config, model)
    trainer.resume_checkpoint(path)
    saved = load_checkpoint(path)
    assert trainer.start_epoch == 1
    assert trainer.best_valid_score == saved["best_valid_score"]
    assert torch.equal(model.item_embedding.weight, saved["state_dict"]["item_embedding.weight"])
    assert trainer.optimizer.state_dict()["state"][0]["step"] == saved["optimizer"]["state"][0]["step"]
    trainer.fit(train_data, valid_data, saved=True, show_progress=False)  # goes on from epoch 1
    assert load_checkpoint(path)["epoch"] >= 1


@pytest.mark.slow
def test_resume_refuses_another_models_checkpoint(tiny_config):
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.utils import get_model, get_trainer

    path = _trained_checkpoint(tiny_config, "RecBoleSASRec")
    config = Config(model="SASRec", dataset="synth", config_dict=tiny_config)
    train_data, _, _ = data_preparation(config, create_dataset(config))
    trainer = get_trainer(config["MODEL_TYPE"], "SASRec")(config, get_model("SASRec")(config, train_data._dataset))
    with pytest.raises(CheckpointError, match="written by model RecBoleSASRec"):
        trainer.resume_checkpoint(path)


def test_runs_started_in_the_same_second_keep_their_own_checkpoint(tiny_config, monkeypatch):
    """RecBole names a run's file <model>-<time to the second>.pth; two runs side by side in one
    checkpoint_dir must not save into (and test from) the same file."""
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.trainer import trainer as trainer_module
    from recbole.utils import get_model, get_trainer, init_seed

    monkeypatch.setattr(trainer_module, "get_local_time", lambda: "Nov-24-2026_00-58-49")
    runs = []
    for loss in ("CE", "BPR"):
        config = Config(model="SASRec", dataset="synth", config_dict=dict(tiny_config, loss_type=loss, epochs=1))
        init_seed(config["seed"], config["reproducibility"])
        train, valid, _ = data_preparation(config, create_dataset(config))
        trainer = get_trainer(config["MODEL_TYPE"], "SASRec")(config, get_model("SASRec")(config, train._dataset))
        runs.append((trainer, train, valid))
    for trainer, train, valid in runs:  # both created before either saves, as when started together
        trainer.fit(train, valid, saved=True, show_progress=False)
    files = [trainer.saved_model_file for trainer, _, _ in runs]
    assert files[0] != files[1]
    assert all(os.path.basename(f).startswith("SASRec-Nov-24-2026_00-58-49-") for f in files)
    assert [load_checkpoint(f)["config"]["loss_type"] for f in files] == ["CE", "BPR"]


def test_any_unreadable_checkpoint_gets_the_corrupt_file_error(tmp_path):
    # a pickle's first bytes and then what torch's loader trips on: IndexError ("pop from empty
    # list", "index out of range") and struct.error, none of them a pickling error
    for garbage in (b"\x80", b"\x80\x02.", b"\x80\x02q\x00.", b"\x80\x02}q\x00(X"):
        path = tmp_path / "garbage.pth"
        path.write_bytes(garbage)
        with pytest.raises(CheckpointError, match=r"not a readable torch checkpoint \(truncated or corrupt"):
            load_checkpoint(path)


@pytest.mark.slow
def test_resuming_with_fewer_epochs_than_run_leaves_the_checkpoint_and_trains_no_extra_epoch(tiny_config, caplog):
    from recbole.quick_start import run_recbole

    from masan_recbole import checkpoint

    config = dict(tiny_config, epochs=1, state="INFO")
    run_recbole(model="SASRec", dataset="synth", config_dict=config)
    (name,) = os.listdir(config["checkpoint_dir"])
    path = os.path.join(config["checkpoint_dir"], name)
    state = checkpoint.load_checkpoint(path)
    state["finished"] = False  # as if the run had been killed after saving epoch 0
    state.pop("format"), state.pop("checksum", None)
    checkpoint.save_checkpoint(state, path)
    before = open(path, "rb").read()
    with caplog.at_level("INFO"):
        run_recbole(model="SASRec", dataset="synth", config_dict=dict(config, checkpoint_file=path))
    assert open(path, "rb").read() == before  # not rewritten with epoch -1
    assert any("has run 1 epoch(s) and epochs=1 asks for no more" in r.getMessage() for r in caplog.records)
    caplog.clear()
    with caplog.at_level("INFO"):
        run_recbole(model="SASRec", dataset="synth", config_dict=dict(config, epochs=2, checkpoint_file=path))
    plain = [re.sub(r"\x1b\[[0-9;]*m", "", r.getMessage()) for r in caplog.records]
    trained = [m for m in plain if " training [time" in m]
    assert len(trained) == 1 and "epoch 1 training" in trained[0]  # one more epoch, numbered 1
    assert checkpoint.load_checkpoint(path)["epoch"] == 1


def test_pretrained_models_load_with_torchs_default_weights_only(tiny_config, tmp_path):
    # S3Rec's finetune stage reads its pretraining file with a plain torch.load (weights_only since torch 2.6)
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.trainer.trainer import PretrainTrainer
    from recbole.utils import get_model

    config = Config(model="SASRec", dataset="synth", config_dict=dict(tiny_config, pretrain_epochs=1, save_step=1))
    train, _, _ = data_preparation(config, create_dataset(config))
    model = get_model("SASRec")(config, train._dataset)
    trainer = PretrainTrainer(config, model)
    path = str(tmp_path / "pretrained.pth")
    trainer.save_pretrained_model(0, path)
    loaded = torch.load(path)
    assert loaded["epoch"] == 0 and loaded["config"]["model"] == "SASRec"
    assert all(torch.equal(loaded["state_dict"][k], v) for k, v in model.state_dict().items())
