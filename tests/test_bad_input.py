"""The bad-input matrix: what a user sees for broken data files, configs, checkpoints, recommend
requests, converter inputs, search spaces and faults. Each case is a clear one-line error that
names the problem and the fix, or a correct result; never a silent wrong one."""

import os
import re
import shutil
import subprocess
import sys

import pytest
import torch
from recbole.config import Config
from recbole.data import create_dataset, data_preparation

from conftest import SYNTH, write_sequences_dataset
from masan_recbole.atomic import AtomicFileError
from masan_recbole.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from masan_recbole.quick_start import main_hyper, main_run, read_search_space
from masan_recbole.recommend import Recommender
from masan_recbole.registry import get_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HEADER = "user_id:token\titem_id:token\ttimestamp:float\n"


def build(config_dict, model="SASRec", dataset=SYNTH):
    """Config, data and model, as run_recbole builds them before the first epoch."""
    config = Config(model=model, dataset=dataset, config_dict=config_dict)
    train_data, _, _ = data_preparation(config, create_dataset(config))
    return get_model(model)(config, train_data._dataset)


def dataset_with(tmp_path, text, name="bad"):
    folder = tmp_path / "data" / name
    folder.mkdir(parents=True)
    (folder / f"{name}.inter").write_text(text)
    return str(tmp_path / "data")


def good_rows(users=6, items=12, per_user=5):
    return "".join(f"{u}\t{(u + t) % items + 1}\t{100 * u + t}\n" for u in range(1, users + 1) for t in range(per_user))


# ------------------------------------------------------------------ data files

DATA_CASES = {
    "empty file": ("", AtomicFileError, "the file is empty"),
    "header only": (HEADER, AtomicFileError, "header but no data rows"),
    "commas instead of tabs": (HEADER.replace("\t", ",") + "1,2,3\n", AtomicFileError, "field_separator: ','"),
    "byte-order mark": ("\ufeff" + HEADER + good_rows(), AtomicFileError, "byte-order mark"),
    "text in a float column": (HEADER + "1\t2\tyesterday\n" + good_rows(), AtomicFileError,
                               r"line 2, column 3 \('timestamp', float\): 'yesterday' is not a number"),
    "missing timestamp": (HEADER + good_rows() + "1\t3\t\n", AtomicFileError,
                          r"line 32, column 3 \('timestamp'\): the value is missing"),
    "NaN timestamp": (HEADER + "1\t3\tNaN\n" + good_rows(), AtomicFileError, r"line 2.*'timestamp'.*missing"),
    "too few columns": (HEADER + "1\t2\n" + good_rows(), AtomicFileError, "has 2 column.*header has 3"),
    "no item column": ("user_id:token\ttimestamp:float\n1\t2\n", AtomicFileError,
                       r"required column\(s\) 'item_id'.*ITEM_ID_FIELD"),
    "unknown type": ("user_id:token\titem_id:tokn\ttimestamp:float\n1\t2\t3\n", AtomicFileError, "line 1"),
    "duplicate columns": ("user_id:token\titem_id:token\titem_id:token\n1\t2\t3\n", AtomicFileError, "duplicate"),
    "unbalanced quote": (HEADER + '1\t"2\t3\n' + good_rows(), AtomicFileError, "quote"),
    "every user once": (HEADER + "".join(f"{u}\t{u}\t{u}\n" for u in range(1, 20)), ValueError,
                        "split of dataset bad is empty.*at least 3"),
    "fewer items than topk": (HEADER + good_rows(items=4), ValueError, "topk 10 is more than the 4 items"),
}


@pytest.mark.parametrize("case", DATA_CASES)
def test_bad_data_files_are_named_before_training(case, tmp_path, tiny_config):
    text, error, message = DATA_CASES[case]
    with pytest.raises(error, match=message):
        build(dict(tiny_config, data_path=dataset_with(tmp_path, text)), dataset="bad")


def test_a_latin1_file_names_the_encoding_key(tmp_path, tiny_config):
    folder = tmp_path / "data" / "bad"
    folder.mkdir(parents=True)
    (folder / "bad.inter").write_bytes((HEADER + good_rows() + "1\tcaf\xe9\t7\n").encode("latin-1"))
    with pytest.raises(AtomicFileError, match="line 32 is not valid UTF-8.*`encoding`"):
        build(dict(tiny_config, data_path=str(tmp_path / "data")), dataset="bad")


def test_blank_lines_are_skipped_like_pandas_does(tmp_path, tiny_config):
    text = HEADER + good_rows(users=20, per_user=6).replace("\n", "\n\n", 3)
    model = build(dict(tiny_config, data_path=dataset_with(tmp_path, text)), dataset="bad")
    assert model.n_items == 13  # 12 items + padding: nothing lost, nothing invented


def test_a_missing_dataset_without_a_url_names_the_folder(tmp_path, tiny_config):
    with pytest.raises(FileNotFoundError, match="Dataset 'nowhere' not found.*url.yaml has no download for it"):
        build(dict(tiny_config, data_path=str(tmp_path)), dataset="nowhere")


def test_dataset_problems_are_named_before_training(tmp_path, tiny_config):
    text = HEADER + "".join(f"{u}\t{u}\t{u}\n" for u in range(1, 20))
    with pytest.raises(ValueError, match="split of dataset bad is empty"):
        build(dict(tiny_config, data_path=dataset_with(tmp_path, text)), dataset="bad")


# ------------------------------------------------------------------ configs

CONFIG_CASES = {
    "epochs 1.5": ({"epochs": 1.5}, "SASRec", TypeError, "'epochs' must be a whole number"),
    "epochs text": ({"epochs": "10x"}, "SASRec", TypeError, "'epochs' must be a whole number"),
    "negative epochs": ({"epochs": -1}, "SASRec", ValueError, "epochs must be 0 or more"),
    "learning rate text": ({"learning_rate": "fast"}, "SASRec", TypeError, "'learning_rate' must be a number"),
    "flag as number": ({"show_progress": 1}, "SASRec", TypeError, "must be true or false"),
    "metric not computed": ({"valid_metric": "AUC@10"}, "SASRec", ValueError,
                            "valid_metric 'AUC@10' is not one of the metrics"),
    "metric at unknown k": ({"valid_metric": "NDCG@5"}, "SASRec", ValueError, r"topk \[10\]"),
    "L = 0": ({"MAX_ITEM_LIST_LENGTH": 0}, "SASRec", ValueError, "MAX_ITEM_LIST_LENGTH must be at least 1"),
    "k_interests 0": ({"k_interests": 0}, "MASAN", ValueError, "k_interests must be a whole number >= 1"),
    "k_interests -1": ({"k_interests": -1}, "MASAN", ValueError, "k_interests must be a whole number >= 1"),
    "SR-SAN heads": ({"n_heads": 3}, "SR-SAN", ValueError, "hidden_size 16 must be a multiple of n_heads 3"),
    "SASRec heads": ({"n_heads": 3}, "SASRec", ValueError, "hidden_size 16 is not a multiple of n_heads 3"),
    "MASAN heads": ({"n_heads": 3}, "MASAN", ValueError, "hidden_size 16 must be a multiple of n_heads 3"),
    "ASRec heads": ({"n_heads": 3}, "ASRec", ValueError, "hidden_size 16 is not a multiple of n_heads 3"),
    "loss": ({"loss_type": "XE"}, "SASRec", ValueError, "loss_type 'XE' is not one of"),
    "train mode": ({"train_mode": "every"}, "SASRec", ValueError, "train_mode 'every' is not one of"),
    "non-causal all positions": ({"train_mode": "all_positions"}, "MASAN", ValueError, "needs a causal model"),
    "precision": ({"mixed_precision": "fp8"}, "SASRec", ValueError, "mixed_precision 'fp8'"),
    "sampler": ({"loss_type": "SSM", "ssm_sampler": "popular"}, "SASRec", ValueError, "ssm_sampler 'popular'"),
    "negatives": ({"loss_type": "SSM", "ssm_num_negatives": 0}, "SASRec", ValueError, "ssm_num_negatives must be"),
    "entmax mode": ({"entmax_mode": "sparse"}, "MASAN", ValueError, "entmax_mode 'sparse'"),
    "global pref": ({"global_pref": "max"}, "MASAN", ValueError, "global_pref 'max'"),
    "alpha eps": ({"alpha_eps": 1.5}, "MASAN", ValueError, "alpha_eps must lie in"),
    "window stride": ({"train_mode": "all_positions", "train_window_stride": 0}, "SASRec", ValueError,
                      "train_window_stride must be"),
    "device": ({"device": "tpu"}, "SASRec", ValueError, "'tpu' is not a torch device"),
    "cuda missing": ({"device": "cuda"}, "SASRec", ValueError, "CUDA is not available"),
}


@pytest.mark.parametrize("case", CONFIG_CASES)
def test_bad_settings_are_named_before_training(case, tiny_config):
    settings, model, error, message = CONFIG_CASES[case]
    if case == "cuda missing" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(error, match=message):
        build(dict(tiny_config, **settings), model=model)


@pytest.mark.parametrize("key,suggestion", [("hiden_size", "hidden_size"), ("learning_rte", "learning_rate"),
                                            ("k_interest", "k_interests"), ("MAX_ITEM_LIST_LENGHT", "MAX_ITEM_LIST_LENGTH")])
def test_misspelt_keys_are_named_with_the_closest_known_one(key, suggestion, tiny_config, caplog):
    expected = rf"config key '{key}' is not a RecBole or masan_recbole setting.*{suggestion}"
    config = Config(model="MASAN", dataset=SYNTH, config_dict=dict(tiny_config, **{key: 1}))
    with pytest.warns(UserWarning, match=expected), caplog.at_level("WARNING"):
        create_dataset(config)
    # RecBole's logger has it too (its console and log file), whatever PYTHONWARNINGS says
    assert any(re.search(expected, r.getMessage()) for r in caplog.records)


def test_known_keys_of_other_models_do_not_warn(tiny_config, recwarn):
    create_dataset(Config(model="SASRec", dataset=SYNTH,
                          config_dict=dict(tiny_config, k_interests=5, lr_scheduler="step")))
    assert not [w for w in recwarn if "is not a RecBole" in str(w.message)]


def test_a_config_builds_as_recboles_does_and_is_checked_before_loading(tiny_config):
    # RecBole's own tests build a Config and then adjust it; the checks wait for the data
    config = Config(model="BPR", dataset=SYNTH, config_dict=dict(tiny_config, topk=[50, 100]))
    assert config["topk"] == [50, 100]
    with pytest.raises(ValueError, match=r"valid_metric 'MRR@10' is not one of the metrics.*topk \[50, 100\]"):
        create_dataset(config)
    config["valid_metric"] = "MRR@50"
    create_dataset(config)


def test_a_read_only_checkpoint_dir_is_found_before_training(tmp_path, tiny_config):
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        if os.access(folder, os.W_OK):
            pytest.skip("running as a user who can write anywhere")
        with pytest.raises(PermissionError, match="checkpoint_dir .* is not writable"):
            Config(model="SASRec", dataset=SYNTH, config_dict=dict(tiny_config, checkpoint_dir=str(folder / "x")))
    finally:
        folder.chmod(0o700)


def test_a_read_only_checkpoint_dir_as_root_is_found_before_training(tmp_path, tiny_config, monkeypatch):
    # root may write anywhere, so os.access answers as the file system would for another user
    monkeypatch.setattr(os, "access", lambda path, mode: not str(path).startswith(str(tmp_path / "locked")))
    (tmp_path / "locked").mkdir()
    config = Config(model="SASRec", dataset=SYNTH, config_dict=dict(tiny_config, checkpoint_dir=str(tmp_path / "locked")))
    with pytest.raises(PermissionError, match="checkpoint_dir .* is not writable"):
        create_dataset(config)


@pytest.mark.parametrize("text,message", [
    ("epochs: [1\n", r"bad.yaml, line \d+ is not valid YAML"),
    ("- 1\n- 2\n", "bad.yaml must hold `key: value` lines"),
    ("epochs 3\n", "bad.yaml must hold `key: value` lines"),
])
def test_config_file_errors_name_the_file(text, message, tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        Config(model="SASRec", dataset="ml-100k", config_file_list=[str(path)])


def test_a_missing_config_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="config file not found: .*nope.yaml"):
        Config(model="SASRec", dataset="ml-100k", config_file_list=[str(tmp_path / "nope.yaml")])


def test_an_empty_config_file_sets_nothing(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text("# nothing yet\n")
    assert Config(model="SASRec", dataset="ml-100k", config_file_list=[str(path)])["epochs"] == 300


@pytest.mark.parametrize("args,message", [
    (["--epochs=1.5"], "error: config key 'epochs' must be a whole number"),
    (["--valid_metric=AUC@10"], "error: valid_metric 'AUC@10'"),
    (["--model=NoSuchModel"], "error: Unknown model 'NoSuchModel'"),
    (["--MAX_ITEM_LIST_LENGTH=0"], "error: MAX_ITEM_LIST_LENGTH must be at least 1"),
])
def test_run_recbole_prints_one_line_and_exits_2(args, message, capsys):
    with pytest.raises(SystemExit) as stop:
        main_run(args)
    err = capsys.readouterr().err.strip()
    assert stop.value.code == 2 and err.startswith(message) and "\n" not in err


def test_debug_shows_the_traceback():
    with pytest.raises(TypeError, match="must be a whole number"):
        main_run(["--epochs=1.5", "--debug"])


# ------------------------------------------------------------------ checkpoints


def test_random_bytes_are_not_called_a_malicious_pickle(tmp_path):
    path = tmp_path / "noise.pth"
    path.write_bytes(os.urandom(4096).replace(b"\x80", b"\x00").replace(b"PK", b"pk"))
    with pytest.raises(CheckpointError, match="is not a torch checkpoint"):
        load_checkpoint(path)


def test_a_truncated_checkpoint_says_so(tmp_path):
    good = tmp_path / "good.pth"
    save_checkpoint({"state_dict": {"w": torch.ones(1000)}}, good)
    for size in (10, 100, 1000, len(good.read_bytes()) - 10):
        cut = tmp_path / f"cut{size}.pth"
        cut.write_bytes(good.read_bytes()[:size])
        with pytest.raises(CheckpointError, match="truncated or corrupt|is not a torch checkpoint"):
            load_checkpoint(cut)


def test_flipped_bytes_in_a_tensor_fail_the_checksum(tmp_path):
    path = tmp_path / "best.pth"
    save_checkpoint({"state_dict": {"w": torch.arange(4096, dtype=torch.float32)}}, path)
    data = bytearray(path.read_bytes())
    marker = torch.arange(4096, dtype=torch.float32)[1000:1002].numpy().tobytes()
    at = bytes(data).index(marker)
    data[at : at + 8] = b"\xff" * 8  # NaN where 1000.0 and 1001.0 were: the zip itself stays valid
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="does not match the checksum"):
        load_checkpoint(path)


def test_a_save_killed_before_it_ends_leaves_no_temporary_file_behind(tmp_path):
    path = tmp_path / "best.pth"
    stale = tmp_path / ".best.pth.999999999.tmp"  # what SIGKILL leaves: no process has this id
    stale.write_bytes(b"half")
    save_checkpoint({"w": torch.ones(2)}, path)
    assert sorted(os.listdir(tmp_path)) == ["best.pth"]


@pytest.fixture
def trained_copy(trained_sasrec, tmp_path, data_root):
    """The session's trained SASRec, with its own copy of the data so a test may change it."""
    data = tmp_path / "data"
    shutil.copytree(os.path.join(data_root, SYNTH), data / SYNTH)
    state = load_checkpoint(trained_sasrec)
    state["config"]["data_path"] = str(data / SYNTH)
    state.pop("format"), state.pop("checksum")
    path = tmp_path / "sasrec.pth"
    save_checkpoint(state, path)
    return str(path), data / SYNTH / f"{SYNTH}.inter"


@pytest.mark.slow
def test_a_changed_data_file_is_named_instead_of_silently_remapping_ids(trained_copy):
    path, inter = trained_copy
    lines = inter.read_text().splitlines(keepends=True)
    inter.write_text(lines[0] + "".join(reversed(lines[1:])))  # same rows, other order
    with pytest.raises(CheckpointError, match=r"synth.inter has changed since .* ids follow the file's order"):
        Recommender(path)


@pytest.mark.slow
def test_an_added_item_is_named_not_a_size_mismatch(trained_copy):
    path, inter = trained_copy
    with open(inter, "a") as f:
        f.write("1\t999\t99999999\n")
    with pytest.raises(CheckpointError, match="has changed since"):
        Recommender(path)


@pytest.mark.slow
def test_a_missing_data_file_is_named(trained_copy):
    path, inter = trained_copy
    os.remove(inter)
    with pytest.raises(CheckpointError, match=r"was trained on .*synth.inter, which is gone"):
        Recommender(path)


@pytest.mark.slow
def test_checkpoints_carry_the_id_maps_and_the_best_epochs_own_result(trained_sasrec):
    state = torch.load(trained_sasrec, weights_only=True)
    assert state["data"]["item_tokens"][0] == "[PAD]" and len(state["data"]["item_tokens"]) == 41
    assert state["data"]["files"]["synth.inter"]["bytes"] > 0
    # RecBole stores the result of the epoch before; the checkpoint holds its own epoch's
    assert state["best_valid_result"]["mrr@10"] == pytest.approx(state["best_valid_score"], abs=1e-4)
    assert state["finished"] == "last_epoch"


@pytest.mark.slow
def test_resuming_a_finished_run_leaves_its_checkpoint_alone(trained_copy, tiny_config):
    from recbole.quick_start import run_recbole

    path, _ = trained_copy
    before = load_checkpoint(path)
    result = run_recbole(model="SASRec", dataset=SYNTH, config_dict=dict(
        tiny_config, epochs=3, checkpoint_file=path, data_path=os.path.dirname(os.path.dirname(str(trained_copy[1])))))
    after = load_checkpoint(path)
    assert after["epoch"] == before["epoch"] and torch.equal(after["state_dict"]["item_embedding.weight"],
                                                            before["state_dict"]["item_embedding.weight"])
    assert result["best_valid_score"] == pytest.approx(before["best_valid_score"])


@pytest.mark.slow
@pytest.mark.parametrize("settings,message", [
    ({"hidden_size": 32}, "the model's shapes differ .*hidden_size"),
    ({"MAX_ITEM_LIST_LENGTH": 10}, "the model's shapes differ .*MAX_ITEM_LIST_LENGTH"),
])
def test_resuming_with_other_shapes_names_the_settings(settings, message, trained_sasrec, tiny_config):
    from recbole.quick_start import run_recbole

    with pytest.raises(CheckpointError, match=message):
        run_recbole(model="SASRec", dataset=SYNTH,
                    config_dict=dict(tiny_config, epochs=4, checkpoint_file=trained_sasrec, **settings))


@pytest.mark.slow
def test_resuming_on_another_dataset_is_refused(trained_sasrec, tiny_config, tmp_path):
    from recbole.quick_start import run_recbole

    write_sequences_dataset(str(tmp_path / "data"), name="other", seed=3)
    with pytest.raises(CheckpointError, match="trained on synth. Resume with --dataset=synth"):
        run_recbole(model="SASRec", dataset="other", config_dict=dict(
            tiny_config, data_path=str(tmp_path / "data"), epochs=4, checkpoint_file=trained_sasrec))


# ------------------------------------------------------------------ recommend


@pytest.fixture(scope="module")
def recommender(trained_sasrec):
    return Recommender(trained_sasrec)


@pytest.mark.slow
@pytest.mark.parametrize("request_,message", [
    ({"user_ids": ["nobody"]}, r"unknown user id\(s\) \['nobody'\]"),
    ({"user_ids": ["[PAD]"]}, "'\\[PAD\\]' is RecBole's padding token, not a user id"),
    ({"item_sequences": [["[PAD]", "3"]]}, "'\\[PAD\\]' is RecBole's padding token, not a item id"),
    ({"item_sequences": [["3", "nothing"]]}, r"unknown item id\(s\) \['nothing'\]"),
    ({"item_sequences": [[]]}, "every sequence needs at least one item"),
    ({"user_ids": ["1"], "k": 0}, "k must be between 1 and 40"),
    ({"user_ids": ["1"], "k": 41}, "k must be between 1 and 40"),
    ({"user_ids": ["1"], "item_sequences": [["3"]]}, "either user_ids or item_sequences"),
    ({"item_sequences": [[str(i) for i in range(1, 41)]], "exclude_history": True}, "leaves no item"),
])
def test_bad_recommend_requests_are_named(recommender, request_, message):
    with pytest.raises(ValueError, match=message):
        recommender.top_k(**request_)


@pytest.mark.slow
def test_exclude_history_near_the_catalogue_size_never_returns_history_or_padding(recommender):
    history = [str(i) for i in range(1, 36)]
    rows = recommender.top_k(item_sequences=[history], k=40, exclude_history=True)
    items = [r["item"] for r in rows]
    assert len(items) == 5 and not set(items) & set(history) and "[PAD]" not in items
    assert all(r["score"] > -float("inf") for r in rows)


@pytest.mark.slow
def test_recommend_without_cuda_says_so(trained_sasrec):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    proc = subprocess.run([sys.executable, "-m", "masan_recbole.recommend", "--checkpoint", trained_sasrec,
                           "--users", "1", "--device", "cuda"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "CUDA is not available here; use --device cpu" in proc.stderr


# ------------------------------------------------------------------ converters and search spaces


@pytest.mark.parametrize("content,message", [
    ("", "holds no sequences"),
    ("1 2 3\n\n2 3 4\n", "line 2: empty line"),
    ("1 2 x\n", "line 1: 'x' is not an integer id"),
    ("1 2 3\n1 4 5\n", "line 2: user 1 again"),
])
def test_converter_input_errors_name_file_and_line(content, message, tmp_path):
    from masan_recbole.data import convert

    source = tmp_path / "Beauty.txt"
    source.write_text(content)
    with pytest.raises(ValueError, match=message):
        convert("beauty", str(source), to=str(tmp_path / "out"))
    assert not (tmp_path / "out" / "beauty" / "beauty.inter").exists()


def test_session_text_errors_name_file_and_line(tmp_path):
    from masan_recbole.data import convert

    (tmp_path / "train_sessions.txt").write_text("1 2 3\n4 x\n")
    (tmp_path / "test_sessions.txt").write_text("1 2\n")
    with pytest.raises(ValueError, match=r"train_sessions.txt, line 2: 'x' is not an integer item id"):
        convert("diginetica", str(tmp_path), to=str(tmp_path / "out"))


def test_the_convert_command_exits_2_with_the_reason(tmp_path):
    from masan_recbole.data.__main__ import main

    with pytest.raises(SystemExit) as stop:
        main(["convert", "beauty", "--from", str(tmp_path / "missing")])
    assert stop.value.code == 2


@pytest.mark.parametrize("line,message", [
    ("learning_rate choice [0.1,", "line 1: '\\[0.1,' is not a list of values"),
    ("learning_rate pick [0.1]", "line 1: kind 'pick' is not one of"),
    ("learning_rate", "line 1: expected `name kind values`"),
    ("learning_rate uniform 0.1", "uniform needs low,high as numbers"),
    ("learning_rate choice []", "choice needs a non-empty list"),
    ("x choice __import__('os').system('true')", "is not a list of values"),
])
def test_malformed_search_spaces_name_the_line_and_never_run_code(line, message, tmp_path):
    path = tmp_path / "space.test"
    path.write_text(line + "\n")
    with pytest.raises(ValueError, match=message):
        read_search_space(str(path))


def test_run_hyper_with_a_bad_space_exits_2(tmp_path, capsys):
    path = tmp_path / "space.test"
    path.write_text("learning_rate choice [0.1,\n")
    with pytest.raises(SystemExit) as stop:
        main_hyper([f"--params_file={path}"])
    assert stop.value.code == 2 and "line 1" in capsys.readouterr().err


def test_search_spaces_read_all_four_kinds(tmp_path):
    path = tmp_path / "space.test"
    path.write_text("a choice [1,2]\n# a comment\n\nb uniform 0.1,0.5\nc loguniform -8,0\nd quniform 1,9,2\n")
    assert read_search_space(str(path)) == {"choice": {"a": [1, 2]}, "uniform": {"b": [0.1, 0.5]},
                                            "loguniform": {"c": [-8, 0]}, "quniform": {"d": [1, 9, 2]}}


@pytest.mark.slow
def test_run_hyper_honours_max_evals_and_keeps_each_trial(data_root, tmp_path):
    space = tmp_path / "space.test"
    space.write_text("learning_rate choice [0.01,0.005,0.001]\nhidden_size choice [8,16]\n")
    out = tmp_path / "result.txt"
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "run_hyper.py"), "--model=SASRec", f"--dataset={SYNTH}",
                           f"--params_file={space}", f"--output_file={out}", "--max_evals", "2",
                           f"--data_path={data_root}", "--epochs=1", "--n_layers=1", "--n_heads=1",
                           "--inner_size=16", "--MAX_ITEM_LIST_LENGTH=10", "--state=ERROR", "--show_progress=False"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "the first 2 of 6 grid points" in proc.stdout
    assert out.read_text().count("Valid result:") == 2
    assert "np.float64" not in proc.stdout
    assert "session" not in (proc.stdout + proc.stderr).lower()  # ray's "Session not detected" warnings



@pytest.mark.slow
@pytest.mark.parametrize("module", ["masan_attention", "asrec_spectrum"])
def test_plots_without_matplotlib_say_how_to_get_it(module, tmp_path):
    code = ("import sys; sys.modules['matplotlib'] = None; import runpy; "
            f"runpy.run_module('masan_recbole.analysis.{module}', run_name='__main__')")
    proc = subprocess.run([sys.executable, "-c", code, "--checkpoint", "x.pth"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert 'need matplotlib, which is not installed: pip install -e ".[plot]"' in proc.stderr
    assert "Traceback" not in proc.stderr
