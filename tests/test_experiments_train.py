"""Training apps end to end (subprocess, absl flags parsed): train_meta, train_conventional,
train_istanet, adapt; resuming; bad flags exit non-zero naming the flag.

Also holds the tiny prepared-dataset helpers used by the reproduce and quickstart tests."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHAPE = (16, 16)


def smooth_images(n: int, seed: int, shape=SHAPE) -> np.ndarray:
    """Seeded smooth positive images in [0, 1] (sums of Gaussian blobs), float32 (n, H, W)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    out = np.zeros((n,) + tuple(shape), np.float32)
    for i in range(n):
        img = np.zeros(shape)
        for _ in range(4):
            cy, cx = rng.uniform(3, shape[0] - 3), rng.uniform(3, shape[1] - 3)
            s = rng.uniform(1.5, 4.0)
            img += rng.uniform(0.3, 1.0) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s * s))
        out[i] = img / img.max()
    return out


def write_prepared(path: str, counts=(6, 3, 2), seed: int = 0, shape=SHAPE) -> str:
    """Write ``manifest.json`` + ``{train,val,test}.npy`` in the on-disk format of ``data_prep.brats``."""
    os.makedirs(path, exist_ok=True)
    splits = {}
    for k, (name, n) in enumerate(zip(("train", "val", "test"), counts)):
        arr = smooth_images(n, seed + k, shape)
        f = os.path.join(path, f"{name}.npy")
        np.save(f, arr)
        with open(f, "rb") as fh:
            digest = hashlib.sha256(fh.read()).hexdigest()
        splits[name] = {"file": f"{name}.npy", "shape": list(arr.shape), "sha256": digest}
    with open(os.path.join(path, "manifest.json"), "w") as fh:
        json.dump({"splits": splits, "source": "tests/test_experiments_train.py"}, fh)
    return path


def run_app(module: str, *args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    """``python -m <module> args...`` from the repository root."""
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def _ok(proc):
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    return write_prepared(str(tmp_path_factory.mktemp("prepared")))


@pytest.fixture(scope="module")
def meta_run(prepared, tmp_path_factory):
    wd = str(tmp_path_factory.mktemp("meta"))
    proc = _ok(run_app("experiments.train_meta", f"--data_dir={prepared}", f"--workdir={wd}", "--preset=tiny",
                       "--tasks=radial:0.2,radial:0.4", "--mask_seed=3", "--max_steps=3"))
    return wd, proc


# ----------------------------------------------------------------------------- end to end


@pytest.mark.slow
def test_train_meta_writes_model_config_masks_checkpoint(meta_run):
    import keras

    from experiments.common import load_model
    from loa_meta.sampling import make_mask
    from loa_meta.training import MetaConfig

    wd, proc = meta_run
    for f in ("model.keras", "config.json", "run_config.json", "flags.json", "COMPLETE.json"):
        assert os.path.isfile(os.path.join(wd, f)), f
    assert os.listdir(os.path.join(wd, "ckpt")) and os.path.isdir(os.path.join(wd, "tb"))
    cfg = MetaConfig.from_dict(json.load(open(os.path.join(wd, "config.json"))))
    assert cfg.max_steps == 3 and cfg.stairwise["max_phases"] == 2 and cfg.model["num_tasks"] == 2
    # The saved masks are exactly the seeded masks of the specs (reused by evaluation/adaptation).
    for ratio, name in ((0.2, "radial_0.20"), (0.4, "radial_0.40")):
        m = np.load(os.path.join(wd, "masks", name + ".npy"))
        np.testing.assert_array_equal(m, make_mask("radial", SHAPE, ratio, seed=3))
        assert os.path.isfile(os.path.join(wd, "masks", name + ".png"))
    model = load_model(os.path.join(wd, "model.keras"))
    assert isinstance(model, keras.Model) and int(model.num_tasks) == 2
    info = json.load(open(os.path.join(wd, "COMPLETE.json")))
    assert set(info["sigma_omega"]) == {"radial_0.20", "radial_0.40"}
    assert all(0.0 < s < 1.0 for s in info["sigma_omega"].values())
    assert 1 <= info["steps"] <= 3
    assert "sigma(omega)" in proc.stdout


@pytest.mark.slow
def test_train_meta_rerun_skips_finished_run(meta_run, prepared):
    wd, _ = meta_run
    before = os.path.getmtime(os.path.join(wd, "model.keras"))
    proc = _ok(run_app("experiments.train_meta", f"--data_dir={prepared}", f"--workdir={wd}", "--preset=tiny",
                       "--tasks=radial:0.2,radial:0.4", "--mask_seed=3", "--max_steps=3"))
    assert "skipped" in proc.stderr
    assert os.path.getmtime(os.path.join(wd, "model.keras")) == before


@pytest.mark.slow
def test_adapt_adds_one_task_and_keeps_theta(meta_run, prepared, tmp_path):
    from experiments.common import load_model

    wd, _ = meta_run
    out = str(tmp_path / "adapt")
    proc = _ok(run_app("experiments.adapt", f"--model={wd}/model.keras", f"--data_dir={prepared}",
                       f"--workdir={out}", "--task=radial:0.3", "--preset=tiny", "--num_images=2", "--epochs=1",
                       f"--mask_dir={wd}/masks"))
    base, adapted = load_model(f"{wd}/model.keras"), load_model(f"{out}/model.keras")
    assert int(adapted.num_tasks) == int(base.num_tasks) + 1
    for a, b in zip(base.theta_variables, adapted.theta_variables):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    info = json.load(open(os.path.join(out, "COMPLETE.json")))
    assert info["task_id"] == 2 and 0.0 < info["sigma_omega"] < 1.0
    assert f"{info['sigma_omega']}" in proc.stdout
    # the new omega moved away from its initial value 0 (sigma = 0.5): it was trained
    assert abs(info["sigma_omega"] - 0.5) > 1e-6


@pytest.mark.slow
@pytest.mark.parametrize("module,model_type", [("experiments.train_conventional", "loa"),
                                               ("experiments.train_istanet", "ista_net_plus")])
def test_conventional_and_istanet_end_to_end(prepared, tmp_path, module, model_type):
    from experiments.common import load_model
    from loa_meta.training import ConventionalConfig

    wd = str(tmp_path / "run")
    _ok(run_app(module, f"--data_dir={prepared}", f"--workdir={wd}", "--preset=tiny", "--task=radial:0.2",
                "--max_steps=2"))
    cfg = ConventionalConfig.from_dict(json.load(open(os.path.join(wd, "config.json"))))
    assert cfg.model_type == model_type and cfg.max_steps == 2
    run = json.load(open(os.path.join(wd, "run_config.json")))
    from experiments.presets import TINY

    # train and val merged (Section 5.2); the tiny preset keeps the first 4 train and 2 val slices
    assert run["num_train"] == min(6, TINY.max_train) + min(3, TINY.max_val) == 6
    model = load_model(os.path.join(wd, "model.keras"))
    assert type(model).__name__ == ("LOANet" if model_type == "loa" else "ISTANetPlus")
    if model_type == "loa":
        # no task weights: kappa is the preset's fixed conventional kappa (1.0 in the paper preset)
        np.testing.assert_allclose(float(np.asarray(model.kappa(0)).reshape(-1)[0]), TINY.conv_kappa, rtol=1e-6)
    assert os.path.isfile(os.path.join(wd, "masks", "radial_0.20.npy"))


def test_ista_steps_factor_scales_only_the_istanet_budget(prepared, tmp_path):
    from experiments import training_common as tc
    from experiments.presets import TINY
    from loa_meta.sampling.task_spec import parse_task_spec

    p = TINY.override(conv_max_steps=1, ista_steps_factor=3.0)
    task = parse_task_spec("radial:0.2")
    ista = tc.run_conventional(prepared, task, str(tmp_path / "ista"), p, "ista_net_plus")
    loa = tc.run_conventional(prepared, task, str(tmp_path / "loa"), p, "loa")
    assert (ista["max_steps"], loa["max_steps"]) == (3, 1)
    assert ista["steps"] == 3 and loa["steps"] == 1
    # an explicit max_steps (the apps' --max_steps) is taken as given
    assert tc.run_conventional(prepared, task, str(tmp_path / "ista2"), p, "ista_net_plus", max_steps=2)["max_steps"] == 2


# ----------------------------------------------------------------------------- bad flags


@pytest.mark.parametrize("args,flag", [
    (["--tasks=spiral:0.1"], "--tasks"),
    (["--tasks=radial:1.5"], "--tasks"),
    (["--max_steps=-3"], "--max_steps"),
    (["--preset=huge"], "--preset"),
    (["--epochs=0"], "--epochs"),
    (["--data_fraction=1.5"], "--data_fraction"),
])
def test_train_meta_bad_flags_exit_nonzero_naming_the_flag(prepared, tmp_path, args, flag):
    proc = run_app("experiments.train_meta", f"--data_dir={prepared}", f"--workdir={tmp_path}/w", *args)
    assert proc.returncode != 0
    assert flag in proc.stderr, proc.stderr[-2000:]
    assert not os.path.exists(os.path.join(tmp_path, "w", "model.keras"))


def test_missing_data_dir_names_the_flag(tmp_path):
    proc = run_app("experiments.train_meta", f"--data_dir={tmp_path}/nope", f"--workdir={tmp_path}/w", "--preset=tiny")
    assert proc.returncode != 0 and "--data_dir" in proc.stderr
    proc = run_app("experiments.train_conventional", f"--workdir={tmp_path}/w", "--task=radial:0.2")
    assert proc.returncode != 0 and "data_dir" in proc.stderr


def test_conventional_and_adapt_bad_flags(prepared, tmp_path):
    proc = run_app("experiments.train_conventional", f"--data_dir={prepared}", f"--workdir={tmp_path}/w",
                   "--task=radial:0.1,radial:0.2")
    assert proc.returncode != 0 and "--task" in proc.stderr
    proc = run_app("experiments.adapt", f"--model={tmp_path}/missing.keras", f"--data_dir={prepared}",
                   f"--workdir={tmp_path}/a", "--task=radial:0.15")
    assert proc.returncode != 0 and "--model" in proc.stderr


# ----------------------------------------------------------------------------- helpers (in process)


def test_presets_override_and_budget_conversion():
    from experiments import training_common as tc
    from experiments.presets import PAPER, get_preset

    assert PAPER.num_phases == 11 and PAPER.per_task_batch * 4 == 8 and PAPER.conv_batch == 25
    assert PAPER.conv_epochs == 2000 and PAPER.meta_epochs == 100
    assert PAPER.adapt_images == 100 and PAPER.adapt_epochs == 50 and abs(PAPER.reduced_fraction - 2 / 3) < 1e-12
    assert (PAPER.delta0, PAPER.delta_tol, PAPER.lambda0, PAPER.nu_delta, PAPER.nu_lambda) == (1e-3, 4.35e-6, 1e-5, 0.95, 1.001)
    p = get_preset("cpu").override(num_phases=7, alpha0=None)
    assert p.num_phases == 7 and p.alpha0 == get_preset("cpu").alpha0
    with pytest.raises(ValueError, match="bogus"):
        p.override(bogus=1)
    # Algorithm 1 constants reach LOANet; the paper preset keeps the paper's values
    assert {k: PAPER.model_kwargs()[k] for k in ("alpha0", "tau0", "eps0", "a")} == {"alpha0": 0.01, "tau0": 0.01, "eps0": 1e-3, "a": 1e5}
    assert PAPER.conventional_kwargs()["tau0"] == PAPER.tau0 and "initial_omega" not in PAPER.conventional_kwargs()
    assert PAPER.conventional_kwargs()["fixed_kappa"] == 1.0  # the paper's conventional network: kappa = 1
    q = get_preset("quickstart")
    # quickstart: conventional starts from the same network as meta-learning (same tau0, kappa fixed
    # at meta-learning's initial sigmoid(omega))
    kappa0 = 1.0 / (1.0 + np.exp(-q.initial_omega))
    assert q.conventional_kwargs()["tau0"] == q.tau0
    from loa_meta.models import LOANet
    m = LOANet(num_phases=1, num_tasks=2, **q.model_kwargs())
    assert (m.a, m.initial_omega, m.max_backtracks) == (q.a, q.initial_omega, q.max_backtracks)
    c = LOANet(num_phases=1, num_tasks=1, use_task_weights=False, **q.conventional_kwargs())
    np.testing.assert_allclose(c.kappa([0]).numpy(), [kappa0], rtol=1e-6)
    np.testing.assert_allclose(m.kappa([0, 1]).numpy(), [kappa0, kappa0], rtol=1e-6)
    # paper conventional budget: 2000 epochs over 450 merged images in batches of 25 = 36000 steps
    assert tc._steps(2000, 450, 25) == 36000
    # paper meta stage: 100 epochs over 300 images at J = 2 per task = 15000 outer iterations
    assert tc._steps(100, 300, 2) == 15000


def test_task_masks_built_once_then_reused(tmp_path):
    from experiments import training_common as tc
    from loa_meta.sampling import make_mask, parse_task_specs

    tasks = parse_task_specs("radial:0.2,cartesian:0.3")
    a = tc.task_masks(tasks, SHAPE, 5, str(tmp_path / "m"))
    np.testing.assert_array_equal(a["radial_0.20"], make_mask("radial", SHAPE, 0.2, seed=5).astype(np.float32))
    # a different seed later does not change the saved masks: every stage sees the same masks
    b = tc.task_masks(tasks, SHAPE, 99, str(tmp_path / "m"))
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    c = tc.task_masks(tasks, SHAPE, 5, str(tmp_path / "other"), mask_dir=str(tmp_path / "m"))
    np.testing.assert_array_equal(c["cartesian_0.30"], a["cartesian_0.30"])


def test_completion_marker_and_atomic_model_save(tmp_path):
    from experiments import training_common as tc

    d = str(tmp_path)
    assert not tc.is_complete(d)
    tc.mark_complete(d, {"x": 1})
    assert tc.is_complete(d) and tc.read_complete(d)["x"] == 1
    assert not [f for f in os.listdir(d) if f.startswith(".tmp")]


def test_load_images_fraction_and_limit(prepared):
    from experiments import training_common as tc

    assert tc.load_images(prepared, "train").shape == (6,) + SHAPE
    assert tc.load_images(prepared, "train", fraction=2 / 3).shape[0] == 4
    assert tc.load_images(prepared, "train", limit=3).shape[0] == 3
