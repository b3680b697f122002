"""The patch layer: its inventory, and each patch driven through RecBole itself.
Every test here fails when the patch it covers is removed."""

import os
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest
import torch
from recbole.config import Config
from recbole.data import create_dataset

from conftest import SYNTH
from masan_recbole import patches
from masan_recbole.patches.tools import patched_by

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_python(code, cwd, timeout=300):
    """Run ``code`` in a fresh interpreter (nothing imported), return its stdout."""
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_numpy_aliases_let_config_and_metrics_run(tiny_config):
    # numpy 2 removed np.float_ (Config.__init__) and np.float/np.bool (RecBole's metrics).
    config = Config(model="SASRec", dataset="synth", config_dict=tiny_config)
    assert config["model"] == "SASRec"
    from recbole.evaluator.metrics import MRR

    ranks = MRR(config).metric_info(np.array([[False, True, False]]))  # uses np.float
    assert ranks.tolist() == [[0.0, 0.5, 0.5]]


@pytest.mark.slow
def test_load_data_and_model_evaluates_in_a_fresh_process(tiny_config, tmp_path):
    # The rebuilt config never runs Config.__init__, so only the import-time aliases
    # make RecBole's evaluator work there.
    from recbole.quick_start import run_recbole

    result = run_recbole(model="SASRec", dataset="synth", config_dict=dict(tiny_config, epochs=1))
    (ckpt,) = os.listdir(tiny_config["checkpoint_dir"])
    out = run_python(f"""
        import masan_recbole
        from recbole.quick_start import load_data_and_model
        from recbole.utils import get_trainer
        config, model, dataset, train, valid, test = load_data_and_model({os.path.join(tiny_config['checkpoint_dir'], ckpt)!r})
        trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
        print("NDCG", trainer.evaluate(test, load_best_model=False)["ndcg@10"])
    """, cwd=tmp_path)
    assert float(out.split("NDCG")[-1]) == pytest.approx(float(result["test_result"]["ndcg@10"]))


def _write_with_missing_values(root):
    folder = os.path.join(root, "gaps")
    os.makedirs(folder)
    with open(os.path.join(folder, "gaps.inter"), "w") as f:
        f.write("user_id:token\titem_id:token\trating:float\ttimestamp:float\n")
        for u in range(1, 6):
            for t in range(6):
                rating = "" if (u + t) % 4 == 0 else str(1 + (u * t) % 5)
                f.write(f"{u}\t{(u + t) % 7 + 1}\t{rating}\t{100 * u + t}\n")
    with open(os.path.join(folder, "gaps.item"), "w") as f:
        f.write("item_id:token\tgenre:token\tprice:float\ttags:token_seq\n")
        for i in range(1, 9):
            genre, price, tags = ("", "", "") if i % 3 == 0 else (f"g{i % 2}", f"{i}.5", f"t{i} t{i + 1}")
            f.write(f"{i}\t{genre}\t{price}\t{tags}\n")


def test_missing_values_are_filled_and_sequences_kept(tmp_path):
    # Under pandas 3 (hence the pin), RecBole's `df[col].fillna(inplace=True)` is a no-op
    # and `Series.agg(len)` stops being per row, which breaks token_seq fields.
    _write_with_missing_values(str(tmp_path))
    config = Config(model="SASRec", dataset="gaps", config_dict={
        "data_path": str(tmp_path), "load_col": None, "state": "WARNING"})
    dataset = create_dataset(config)
    inter, item = dataset.inter_feat, dataset.item_feat
    assert not inter["rating"].isna().any()
    assert not item["price"].isna().any()
    known = [i + 0.5 for i in range(1, 9) if i % 3]
    row = {token: item.index[item["item_id"] == dataset.token2id("item_id", token)][0] for token in ("3", "4")}
    assert item.at[row["3"], "price"] == pytest.approx(np.mean(known))  # missing float -> column mean
    assert item.at[row["3"], "genre"] == 0  # missing token -> [PAD]
    assert len(item.at[row["3"], "tags"]) == 0  # missing sequence -> empty
    assert dataset.id2token("tags", item.at[row["4"], "tags"]).tolist() == ["t4", "t5"]


def test_pandas_3_is_refused_with_the_reason(monkeypatch):
    import pandas

    from masan_recbole.patches import platform

    monkeypatch.setattr(pandas, "__version__", "3.1.1")
    with pytest.raises(ImportError, match=r"silently corrupts data.*pandas>=2,<3"):
        platform.pandas_below_3()


def test_exhaustive_hyper_search_runs_on_current_hyperopt(tmp_path):
    from recbole.trainer import HyperTuning

    params = tmp_path / "hyper.test"
    params.write_text("learning_rate choice [0.01,0.001]\nn_layers choice [1,2]\n")
    seen = []

    def objective(config_dict, config_file_list):
        seen.append((config_dict["learning_rate"], config_dict["n_layers"]))
        score = config_dict["learning_rate"] * config_dict["n_layers"]
        return {"model": "toy", "best_valid_score": score, "valid_score_bigger": True,
                "best_valid_result": {}, "test_result": {}}

    tuner = HyperTuning(objective, params_file=str(params), algo="exhaustive")
    tuner.run()
    assert sorted(seen) == [(0.001, 1), (0.001, 2), (0.01, 1), (0.01, 2)]
    assert tuner.best_params == {"learning_rate": 0.01, "n_layers": 2}


def test_device_cpu_is_respected_when_cuda_exists(tiny_config, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert Config(model="SASRec", dataset="synth", config_dict=dict(tiny_config, device="cpu"))["device"].type == "cpu"
    assert Config(model="SASRec", dataset="synth", config_dict=tiny_config)["device"].type == "cuda"


def test_unavailable_cuda_request_is_an_error(tiny_config, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="CUDA is not available"):
        Config(model="SASRec", dataset="synth", config_dict=dict(tiny_config, device="cuda"))
    assert Config(model="SASRec", dataset="synth", config_dict=tiny_config)["device"].type == "cpu"


def test_directories_are_created_without_a_race(tmp_path, monkeypatch):
    # Two DDP ranks both pass RecBole's exists() check; the second makedirs used to raise.
    from recbole.utils import logger as logger_module

    target = tmp_path / "log"
    monkeypatch.setattr(os.path, "exists", lambda p: False)  # both ranks "saw" no folder
    logger_module.ensure_dir(str(target))
    logger_module.ensure_dir(str(target))
    assert target.is_dir()


@pytest.mark.slow
def test_recbole_quick_start_imports_without_ray(tmp_path):
    out = run_python("""
        import sys
        sys.modules["ray"] = None  # makes `import ray` fail, as in an install without ray
        import masan_recbole
        from recbole.quick_start import objective_function, run_recbole
        print("ok")
    """, cwd=tmp_path)
    assert out.strip().endswith("ok")


def test_anomaly_detection_stays_off_after_model_lookup():
    # RecBole's SINE module enables it globally on import; plugin and built-in lookups import it.
    from recbole.utils import get_model

    get_model("SINE"), get_model("SASRec"), get_model("LightSANs")
    assert not torch.is_anomaly_enabled()


def test_nan_loss_names_the_problem_and_the_fix(tiny_config, monkeypatch):
    from recbole.quick_start import run_recbole

    from masan_recbole.model.sasrec import SASRec

    monkeypatch.setattr(SASRec, "calculate_loss", lambda self, batch: self.item_embedding.weight.sum() * float("nan"))
    with pytest.raises(ValueError, match="Training loss is NaN.*Lower learning_rate"):
        run_recbole(model="SASRec", dataset="synth", config_dict=tiny_config)


def test_missing_dataset_without_a_url_says_where_to_put_it_and_recboles_download_never_runs(tiny_config, monkeypatch):
    import recbole.data.dataset.dataset as dataset_module

    def no_network(*args, **kwargs):
        raise AssertionError("RecBole's own download ran")

    monkeypatch.setattr(dataset_module, "download_url", no_network)
    monkeypatch.setattr(dataset_module, "decide_download", no_network)
    config = Config(model="SASRec", dataset="no-such-data", config_dict=tiny_config)
    with pytest.raises(FileNotFoundError, match=r"Dataset 'no-such-data' not found.*no-such-data\.inter.*no download"):
        create_dataset(config)
    # lastfm: RecBole's url.yaml has one, but the plugin's lastfm is the converted S3-Rec file
    config = Config(model="SASRec", dataset="lastfm", config_dict={**tiny_config, "data_path": "/nonexistent"})
    with pytest.raises(FileNotFoundError, match=r"downloads another 'lastfm'.*\n.*convert lastfm"):
        create_dataset(config)


@pytest.mark.parametrize("header,row,message", [
    ("user_id\titem_id:token\ttimestamp:float", "1\t2\t3", "user_id"),
    ("user_id:token\titem_id:token\ttimestamp:float", "1\t2\tlate", "late"),
    ("user_id:token\ttimestamp:float", "1\t3", "ITEM_ID_FIELD"),
    ("user_id:token\titem_id:token\ttimestamp:float", "1\t2", "line 3"),
])
def test_malformed_atomic_files_are_rejected_clearly(tmp_path, tiny_config, header, row, message):
    from masan_recbole.atomic import AtomicFileError

    folder = tmp_path / "bad"
    folder.mkdir()
    good_row = "\t".join("1" for _ in header.split("\t"))
    (folder / "bad.inter").write_text(f"{header}\n{good_row}\n{row}\n")
    config = Config(model="SASRec", dataset="bad", config_dict=dict(tiny_config, data_path=str(tmp_path)))
    with pytest.raises(AtomicFileError, match=message):
        create_dataset(config)


def test_every_patch_is_applied_once_and_names_a_test_that_exists():
    # the fixes and features in order at import, then the opt-in ones (conftest opts in)
    assert patches.applied() == tuple(p.name for p in patches.INVENTORY if p.kind != "opt-in") + tuple(
        p.name for p in patches.OPT_IN)
    assert {p.kind for p in patches.INVENTORY} == {"fix", "feature", "opt-in"}
    assert len({p.name for p in patches.INVENTORY}) == len(patches.INVENTORY)
    for patch in patches.INVENTORY:
        path, test = patch.test.split("::")
        with open(os.path.join(ROOT, path)) as f:
            assert f"def {test}(" in f.read(), f"{patch.name}: {patch.test} does not exist"
        assert patch.why and patch.remove_when and patch.target


def test_patches_wrap_and_keep_the_original_reachable():
    from recbole.config import Config
    from recbole.trainer import Trainer

    import recbole.quick_start

    original_fit = Trainer.fit.__wrapped__
    assert patched_by(Trainer, "fit") == "exact_resume"
    assert original_fit.__module__ == "recbole.trainer.trainer"
    assert patched_by(Config, "_load_internal_config_dict") == "config_layers"
    assert patched_by(recbole.quick_start, "load_data_and_model") == "safe_checkpoints"
    patches.apply()  # a second time changes nothing
    assert Trainer.fit.__wrapped__ is original_fit


@pytest.mark.slow
def test_patch_inventory_prints_as_one_command(tmp_path):
    out = run_python("import runpy; runpy.run_module('masan_recbole.patches', run_name='__main__')", cwd=tmp_path)
    for patch in patches.INVENTORY:
        assert f"| {patch.name} | {patch.kind} | yes |" in out and patch.test in out


def test_an_unsupported_recbole_version_stops_with_the_reason(monkeypatch):
    import recbole

    monkeypatch.setattr(recbole, "__version__", "1.3.0")
    with pytest.raises(ImportError, match=r"supports RecBole 1.2.1, but RecBole 1.3.0 .*recbole==1.2.1"):
        patches.check_recbole_version()


@pytest.mark.slow
def test_known_warnings_are_hidden_and_others_shown(tmp_path):
    # -W always would show every warning; the patch's filters must still hide RecBole's own.
    proc = subprocess.run([sys.executable, "-W", "always", "-c", textwrap.dedent("""
        import warnings
        import masan_recbole
        warnings.warn_explicit("recbole deprecation", FutureWarning, "dataset.py", 1, module="recbole.data.dataset")
        warnings.warn_explicit("user code warning", FutureWarning, "mine.py", 1, module="mine")
    """)], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "user code warning" in proc.stderr
    assert "recbole deprecation" not in proc.stderr and "pkg_resources" not in proc.stderr


def test_all_positions_reaches_recboles_data_preparation(tiny_config):
    from recbole.data import data_preparation

    config = Config(model="SASRec", dataset="synth", config_dict=dict(tiny_config, train_mode="all_positions"))
    train_data, _, _ = data_preparation(config, create_dataset(config))
    assert "item_id_targets" in train_data._dataset.inter_feat


FAULTS_PER_STEP = """
import resource, torch
import masan_recbole  # noqa: F401
torch.set_num_threads(1)
x, w = torch.randn(2048 * 50, 64), torch.randn(64, 256)

def step():  # a feed-forward block's worth of activations: [102400, 256] floats, 105 MB
    return (torch.nn.functional.gelu(x @ w) @ w.T).sum()

for _ in range(5):  # the heap grows to its working size in the first steps
    step()
faults = []
for _ in range(5):  # each step's page faults; now and then a step still grows the heap once
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    step()
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(sorted(faults)[2])  # the median step
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_freed_training_buffers_are_reused_not_faulted_again():
    def page_faults(**env):
        out = subprocess.run([sys.executable, "-c", FAULTS_PER_STEP], capture_output=True, text=True, check=True,
                             env={**os.environ, "OMP_NUM_THREADS": "1", **env})
        return int(out.stdout.split()[-1])

    tuned, untuned = page_faults(), page_faults(MASAN_MALLOC_TUNING="0")
    assert untuned > 25_000  # glibc's default: every step maps its 105 MB again
    assert tuned < untuned / 100


def _trainer_after_one_epoch(tiny_config, model, **settings):
    from recbole.data import data_preparation
    from recbole.utils import get_model, get_trainer, init_seed

    config = Config(model=model, dataset="synth", config_dict=dict(tiny_config, **settings))
    init_seed(config["seed"], config["reproducibility"])
    train, _, _ = data_preparation(config, create_dataset(config))
    init_seed(config["seed"], config["reproducibility"])
    net = get_model(config["model"])(config, train._dataset)
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, net)
    trainer._train_epoch(train, 0)
    return trainer


@pytest.mark.parametrize("model, learner", [("SASRec", "adam"), ("LightSANs", "adam"), ("SASRec", "adamw")])
def test_adam_is_fused_and_steps_like_recboles(tiny_config, model, learner):
    fused = _trainer_after_one_epoch(tiny_config, model, learner=learner)
    plain = _trainer_after_one_epoch(tiny_config, model, learner=learner, fused_optimizer=False)
    assert type(fused.optimizer) is type(plain.optimizer)
    assert [g["fused"] for g in fused.optimizer.param_groups] == [True]
    assert not plain.optimizer.param_groups[0]["fused"]
    for key in ("lr", "weight_decay", "betas", "eps", "amsgrad"):
        assert fused.optimizer.param_groups[0][key] == plain.optimizer.param_groups[0][key], key
    # an epoch of steps moves every parameter the same way, up to float rounding
    for (name, a), b in zip(fused.model.named_parameters(), plain.model.parameters()):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4, msg=name)


def test_a_resumed_run_keeps_the_kernel_it_is_resumed_with(tiny_config, tmp_path):
    fused = _trainer_after_one_epoch(tiny_config, "SASRec")
    path = str(tmp_path / "fused.pth")
    fused._save_checkpoint(0, verbose=False, saved_model_file=path)
    plain = _trainer_after_one_epoch(tiny_config, "SASRec", fused_optimizer=False)
    plain.resume_checkpoint(path)  # the checkpoint's groups say fused: True
    assert not plain.optimizer.param_groups[0]["fused"]
    moments = [plain.optimizer.state[p]["exp_avg"] for p in plain.model.parameters()]
    for p, m in zip(fused.model.parameters(), moments):  # the state itself is the checkpoint's
        torch.testing.assert_close(fused.optimizer.state[p]["exp_avg"], m, atol=0, rtol=0)
    path = str(tmp_path / "plain.pth")
    plain._save_checkpoint(0, verbose=False, saved_model_file=path)
    fused.resume_checkpoint(path)
    assert fused.optimizer.param_groups[0]["fused"] is True


def test_resuming_under_other_settings_names_them(tiny_config, tmp_path, caplog):
    first = _trainer_after_one_epoch(tiny_config, "SASRec")
    path = str(tmp_path / "run.pth")
    first._save_checkpoint(0, verbose=False, saved_model_file=path)
    same = _trainer_after_one_epoch(tiny_config, "SASRec", epochs=9)  # more epochs: a plain resume
    with caplog.at_level("WARNING"):
        same.resume_checkpoint(path)
    assert "differ" not in caplog.text
    other = _trainer_after_one_epoch(tiny_config, "SASRec", hidden_dropout_prob=0.3, train_mode="all_positions")
    with caplog.at_level("WARNING"):
        other.resume_checkpoint(path)
    assert "hidden_dropout_prob: 0.1 -> 0.3" in caplog.text and "train_mode: 'prefix' -> 'all_positions'" in caplog.text


def test_resuming_a_checkpoint_from_before_a_setting_existed_names_it(tiny_config, tmp_path, caplog):
    first = _trainer_after_one_epoch(tiny_config, "SASRec")
    path = str(tmp_path / "run.pth")
    first._save_checkpoint(0, verbose=False, saved_model_file=path)
    from masan_recbole.checkpoint import load_checkpoint, save_checkpoint

    state = load_checkpoint(path)
    del state["config"]["all_positions_weight"]  # as written before the setting existed
    save_checkpoint({k: v for k, v in state.items() if k != "checksum"}, path)
    later = _trainer_after_one_epoch(tiny_config, "SASRec", epochs=9)
    with caplog.at_level("WARNING"):
        later.resume_checkpoint(path)
    assert "all_positions_weight: None -> 'per_target'" in caplog.text


def test_fused_optimizer_leaves_other_learners_alone(tiny_config):
    sgd = _trainer_after_one_epoch(tiny_config, "SASRec", learner="sgd")
    assert type(sgd.optimizer) is torch.optim.SGD and not sgd.optimizer.param_groups[0].get("fused")


def test_cpu_dropout_masks_come_from_uniform_draws():
    x = torch.randn(200_000, requires_grad=True)
    torch.manual_seed(7)
    y = torch.nn.Dropout(0.3).train()(x)  # a module, as every model calls it
    torch.manual_seed(7)
    keep = torch.rand_like(x) >= 0.3
    assert torch.equal(y == 0, ~keep)  # torch's bernoulli_ mask is another (x has no zeros)
    assert torch.allclose(y[keep], x[keep] / 0.7)
    assert abs(keep.float().mean().item() - 0.7) < 0.005
    y.sum().backward()
    assert torch.allclose(x.grad, keep / 0.7)
    # evaluation, p 0, p 1 and in-place calls are torch's own: the same seed gives torch's result
    dropout, torchs = torch.nn.functional.dropout, torch.nn.functional.dropout.__wrapped__
    for kwargs in ({"p": 0.3, "training": False}, {"p": 0.0}, {"p": 1.0}, {"p": 0.5, "inplace": True}):
        torch.manual_seed(3)
        ours = dropout(x.detach().clone(), **kwargs)
        torch.manual_seed(3)
        assert torch.equal(ours, torchs(x.detach().clone(), **kwargs)), kwargs
    torch.manual_seed(3)
    ours = dropout(x.detach(), 0.5)
    torch.manual_seed(3)
    assert not torch.equal(ours, torchs(x.detach(), 0.5))  # in training ours, with another mask
    # a scripted module still runs (as Python for its dropout)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit.script is deprecated in torch 2.13
        assert torch.jit.script(torch.nn.Dropout(0.5))(torch.ones(1000)).eq(0).any()
    # under bf16 the draws stay float32: the kept share is still 1 - p
    half = torch.nn.functional.dropout(torch.ones(200_000, dtype=torch.bfloat16), 0.1)
    assert abs((half != 0).float().mean().item() - 0.9) < 0.005


def test_torchs_dropout_stays_reachable():
    code = ("import masan_recbole, torch; f = torch.nn.functional.dropout; "
            "print(getattr(f, '__masan_patch__', None))")
    def patch_name(**env):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                             env={**os.environ, "OMP_NUM_THREADS": "1", **env})
        return out.stdout.split()[-1]
    assert patch_name() == "fast_cpu_dropout"
    assert patch_name(MASAN_FAST_DROPOUT="0") == "None"


def test_recboles_graph_models_build_their_adjacency_on_current_scipy(tiny_config):
    import scipy.sparse as sp
    from recbole.data import data_preparation
    from recbole.utils import get_model

    matrix = sp.dok_matrix((3, 4), dtype=np.float32)
    matrix._update({(np.int64(0), np.int32(1)): 1, (2, 3): 2.5, (1, 1): 0})
    assert matrix.toarray().tolist() == [[0, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 2.5]]
    # LightGCN (a general model) on the synthetic data: its normalised adjacency has one entry per
    # distinct user-item pair each way, and a training step runs
    config = Config(model="LightGCN", dataset="synth", config_dict=dict(
        tiny_config, eval_args={"split": {"RS": [0.8, 0.1, 0.1]}, "order": "RO", "group_by": "user", "mode": "full"},
        train_neg_sample_args={"distribution": "uniform", "sample_num": 1}))
    train, _, _ = data_preparation(config, create_dataset(config))
    model = get_model("LightGCN")(config, train._dataset)
    pairs = train._dataset.inter_matrix(form="coo")
    assert model.norm_adj_matrix._nnz() == 2 * len(set(zip(pairs.row, pairs.col)))  # repeated pairs count once
    batch = next(iter(train))
    assert torch.isfinite(model.calculate_loss(batch))


@pytest.mark.parametrize("model", ["RecBoleSASRec", "SASRec"])
def test_mixed_precision_reaches_recboles_models_only_when_set(tiny_config, model):
    """bf16 asked for: RecBole's SASRec computes its training loss under autocast as ours does;
    not asked for, RecBole's trains in fp32 as RecBole trains it (the plugin's default is its own)."""
    from masan_recbole.build import build_config, build_run

    dtypes = {}
    for setting in ("bf16", None):
        settings = dict(tiny_config, **({"mixed_precision": setting} if setting else {}))
        built = build_run(build_config(model, SYNTH, config_dict=settings))
        seen = []
        linear = next(m for m in built.model.modules() if isinstance(m, torch.nn.Linear))
        linear.register_forward_hook(lambda module, args, output: seen.append(output.dtype))
        batch = next(iter(built.train_data)).to(built.config["device"])
        built.model.train()
        built.model.calculate_loss(batch)
        dtypes[setting] = seen[0]
    assert dtypes["bf16"] == torch.bfloat16
    assert dtypes[None] == torch.float32  # on CPU the plugin's default (auto) is fp32 too
