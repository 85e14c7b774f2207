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
                       "--tasks=radial:0.2,radial:0.4", "--mask_seed=3", "--max_steps=3", "--eps0=0.05",
                       "--theta_steps=2", "--summary_every=3"))
    return wd, proc


# ----------------------------------------------------------------------------- end to end


@pytest.mark.xdist_group("meta_run")  # the three share one train_meta run (module fixture)
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
    from experiments.presets import get_preset

    assert cfg.model["eps0"] == 0.05 != get_preset("tiny").eps0  # --eps0 overrides the preset's start
    assert cfg.theta_steps == 2 != get_preset("tiny").theta_steps  # --theta_steps: K of Algorithm 2
    assert cfg.summary_every == 3 != get_preset("tiny").summary_every  # --summary_every: bookkeeping only
    # The saved masks are exactly the seeded masks of the specs (reused by evaluation/adaptation).
    for ratio, name in ((0.2, "radial_0.20"), (0.4, "radial_0.40")):
        m = np.load(os.path.join(wd, "masks", name + ".npy"))
        np.testing.assert_array_equal(m, make_mask("radial", SHAPE, ratio, seed=3))
        assert os.path.isfile(os.path.join(wd, "masks", name + ".png"))
    model = load_model(os.path.join(wd, "model.keras"))
    assert isinstance(model, keras.Model) and int(model.num_tasks) == 2
    assert model.task_specs == ["radial:0.2", "radial:0.4"]  # the model knows its tasks (issue 12.4)
    info = json.load(open(os.path.join(wd, "COMPLETE.json")))
    sig = {n: 1 / (1 + np.exp(-float(np.asarray(w)))) for n, w in zip(("radial_0.20", "radial_0.40"), model.omegas)}
    assert info["sigma_omega"] == pytest.approx(sig, rel=1e-6)
    # every mode's eval set is the held-out tail of the val split; Algorithm 2 splits the rest 2:1
    assert (info["num_train"], info["num_val"], info["num_heldout"]) == (3, 2, 2)
    assert cfg.eval_every == 1 and cfg.outer_iterations_per_epoch == 3 and cfg.stairwise["stage_max_iterations"] is None
    assert 1 <= info["steps"] <= 3
    assert "sigma(omega)" in proc.stdout
    # the thread setting that decides the last bits is recorded next to the results
    threads = json.load(open(os.path.join(wd, "run_config.json")))["tf_threads"]
    assert threads["intra_op"] >= 1 and threads["usable_cores"] >= 1


@pytest.mark.xdist_group("meta_run")  # the three share one train_meta run (module fixture)
@pytest.mark.slow
def test_train_meta_rerun_skips_finished_run(meta_run, prepared):
    from experiments import training_common as tc
    from experiments.presets import TINY
    from loa_meta.sampling import parse_task_specs

    wd, _ = meta_run
    before = os.path.getmtime(os.path.join(wd, "model.keras"))
    info = tc.run_meta(prepared, parse_task_specs("radial:0.2,radial:0.4"), wd, TINY, mask_seed=3, max_steps=3)
    assert info == json.load(open(os.path.join(wd, "COMPLETE.json")))  # the finished run's record, no training
    assert os.path.getmtime(os.path.join(wd, "model.keras")) == before


@pytest.mark.xdist_group("meta_run")  # the three share one train_meta run (module fixture)
@pytest.mark.slow
def test_adapt_adds_one_task_and_keeps_theta(meta_run, prepared, tmp_path):
    import tensorflow as tf

    from experiments.common import load_model
    from experiments.presets import TINY
    from loa_meta.physics.operators import SingleCoilOperator
    from loa_meta.training.losses import reconstruction_loss

    wd, _ = meta_run
    out = str(tmp_path / "adapt")
    proc = _ok(run_app("experiments.adapt", f"--model={wd}/model.keras", f"--data_dir={prepared}",
                       f"--workdir={out}", "--task=radial:0.45", "--preset=tiny", "--num_images=2", "--epochs=1",
                       f"--mask_dir={wd}/masks"))
    base, adapted = load_model(f"{wd}/model.keras"), load_model(f"{out}/model.keras")
    assert int(adapted.num_tasks) == int(base.num_tasks) + 1
    # a task the model was trained on is not an unseen task: a one-line flag error, nothing written
    again = str(tmp_path / "again")
    proc2 = run_app("experiments.adapt", f"--model={wd}/model.keras", f"--data_dir={prepared}", f"--workdir={again}",
                    "--task=radial:0.4", "--preset=tiny")
    assert proc2.returncode != 0 and "Traceback" not in proc2.stderr
    assert "--task" in proc2.stderr and "already trained on radial:0.4 (task id 1)" in proc2.stderr
    assert not os.path.exists(os.path.join(again, "model.keras"))
    assert adapted.task_specs == ["radial:0.2", "radial:0.4", "radial:0.45"]
    for a, b in zip(base.theta_variables, adapted.theta_variables):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    info = json.load(open(os.path.join(out, "COMPLETE.json")))
    assert info["task_id"] == 2 and f"{info['sigma_omega']}" in proc.stdout
    assert info["sigma_omega"] == pytest.approx(1 / (1 + np.exp(-float(np.asarray(adapted.omegas[2])))), rel=1e-6)
    # the new omega started from the nearest trained task's (radial 40 %) ...
    omega0 = float(np.asarray(base.omegas[1]))
    assert (info["start_task"], info["initial_omega"]) == ("radial:0.4", pytest.approx(omega0, abs=0))
    # ... and its one Adam step (lr 5e-2) went the way the adaptation loss asks: against its gradient
    x = np.load(os.path.join(prepared, "train.npy"))[:2].astype(np.complex64)
    m = tf.constant(np.load(os.path.join(out, "masks", "radial_0.45.npy")).astype(np.float32))
    base.add_task(omega0, spec="radial:0.45")
    with tf.GradientTape() as tape:
        pred = base({"kspace": SingleCoilOperator(m).forward(tf.constant(x)), "mask": m, "task_id": tf.constant([2, 2])})
        loss = reconstruction_loss(pred, tf.constant(np.abs(x)))
    g = float(tape.gradient(loss, base.omegas[2]))
    step = float(np.asarray(adapted.omegas[2])) - omega0
    assert abs(g) > 0 and step == pytest.approx(-np.sign(g) * TINY.adapt_learning_rate, rel=1e-3)


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
    info = json.load(open(os.path.join(wd, "COMPLETE.json")))
    assert info["steps"] == 2  # the run took exactly its budget
    run = json.load(open(os.path.join(wd, "run_config.json")))
    from experiments.presets import TINY

    # train and val merged (Section 5.2): the tiny preset keeps the first 4 train slices and the one
    # val slice left after the 2 held-out ones
    assert run["num_train"] == TINY.max_train + 3 - TINY.eval_slices == 5
    model = load_model(os.path.join(wd, "model.keras"))
    assert type(model).__name__ == ("LOANet" if model_type == "loa" else "ISTANetPlus")
    if model_type == "loa":
        # no task weights: kappa is the preset's fixed conventional kappa (1.0 in the paper preset)
        np.testing.assert_allclose(float(np.asarray(model.kappa(0)).reshape(-1)[0]), TINY.conv_kappa, rtol=1e-6)
    assert os.path.isfile(os.path.join(wd, "masks", "radial_0.20.npy"))


def test_ista_steps_factor_scales_only_the_istanet_budget():
    from experiments import training_common as tc
    from experiments.presets import CPU, TINY

    p = TINY.override(conv_max_steps=1, ista_steps_factor=3.0)
    assert (tc.conventional_steps(p, 6, "ista_net_plus"), tc.conventional_steps(p, 6, "loa")) == (3, 1)
    # an explicit max_steps (the apps' --max_steps) is taken as given
    assert tc.conventional_steps(p, 6, "ista_net_plus", max_steps=2) == 2
    # cpu: 23 epochs of 92 slices in batches of 8 = 265 steps, capped at 250; ISTA-Net+ 4 x 250
    assert (tc.conventional_steps(CPU, 92), tc.conventional_steps(CPU, 92, "ista_net_plus")) == (250, 1000)


def test_cpu_preset_is_the_quickstart_recipe_plus_the_protocol():
    """``reproduce --preset=cpu`` trains every stage with the quickstart's measured recipe, so its seen-ratio
    meta-learning and conventional rows (and the adapted radial 25 %) are the quickstart's on the same data."""
    import dataclasses

    from experiments.presets import CPU, QUICKSTART

    differ = {f.name for f in dataclasses.fields(CPU) if getattr(CPU, f.name) != getattr(QUICKSTART, f.name)}
    assert differ == {"name", "ista_steps_factor"}
    # the fixes of issue 11 are on: eps_0 floored (no collapse), 16 kernels, no safeguard in training, the
    # per-sample normalised loss, lambda_0 = 1e-8, the last 3 checkpoints averaged
    assert (CPU.eps0_floor, CPU.filters, CPU.safeguard, CPU.loss_reduction, CPU.lambda0, CPU.average_checkpoints) == (
        1e-3, 16, False, "task_norm", 1e-8, 3)
    # beyond the paper, in the quality presets only: LOA rows also at the iteration count chosen on held-out slices
    from experiments.presets import PAPER
    from loa_meta.evaluation.iterations import DEFAULT_GRID

    assert CPU.inference_iterations == QUICKSTART.inference_iterations == DEFAULT_GRID
    assert PAPER.inference_iterations == ()


# ----------------------------------------------------------------------------- bad flags


@pytest.mark.parametrize("args,flag", [
    (["--tasks=spiral:0.1"], "--tasks"),
    (["--tasks=radial:1.5"], "--tasks"),
    (["--max_steps=-3"], "--max_steps"),
    (["--preset=huge"], "--preset"),
    (["--epochs=0"], "--epochs"),
    (["--data_fraction=1.5"], "--data_fraction"),
    (["--theta_steps=0"], "--theta_steps"),
    (["--summary_every=0"], "--summary_every"),
    (["--eval_every=-1"], "--eval_every"),
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
    assert PAPER.conv_epochs == 2000 and PAPER.meta_stage_epochs == 107  # "100 epochs", delta to delta_tol
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
    # quickstart: meta-learning and conventional training see the same number of images
    # (meta_max_steps / 2 outer iterations x (B_tr + B_val) = 4 ratios x conv_max_steps x conv_batch); the
    # stage's epochs of the 64x64 demo data's 31 batch pairs do not end it before the step cap
    per_task = 2 * q.per_task_batch * 4
    assert q.meta_max_steps // 2 * per_task == 4 * q.conv_max_steps * q.conv_batch
    assert q.meta_stage_epochs * 31 >= q.meta_max_steps // 2
    assert tc._steps(q.conv_epochs, 92, q.conv_batch) >= q.conv_max_steps
    # paper conventional budget: 2000 epochs over 450 merged images in batches of 25 = 36000 steps
    assert tc._steps(2000, 450, 25) == 36000
    # Adam lr 1e-3 (Section 4.2) for theta and, not stated, omega in Algorithm 2
    assert (PAPER.learning_rate, PAPER.omega_learning_rate) == (1e-3, 1e-3)
    # the Algorithm 1 safeguard (lines 5-13) is on in the network of every preset, meta and conventional,
    # except the quickstart's and the cpu preset's (beyond the paper, measured: docs/benchmarks_quality.md 5.5-5.8)
    for pr in (PAPER, q, get_preset("cpu"), get_preset("tiny")):
        on = pr.name not in ("quickstart", "cpu")
        assert LOANet(num_phases=1, **pr.model_kwargs()).safeguard is on
        assert LOANet(num_phases=1, use_task_weights=False, **pr.conventional_kwargs()).safeguard is on
        # the plateau rule is live (evaluations on held-out slices) and Algorithm 2 splits 2 : 1
        assert pr.eval_every >= 1 and pr.patience >= 1 and pr.eval_slices >= 1 and pr.val_fraction == 1 / 3
    # --jit_compile reaches TrainConfig (XLA kernels), but not for the eager tiny preset
    assert tc._common_cfg(q, 0, 5)["jit_compile"] is False
    assert tc._common_cfg(q.override(jit_compile=True), 0, 5)["jit_compile"] is True
    assert tc._common_cfg(get_preset("tiny").override(jit_compile=True), 0, 5)["jit_compile"] is False
    # --average_checkpoints reaches TrainConfig; the paper preset keeps the last iterate (the paper's),
    # the quickstart and cpu presets average their last 3 checkpoints (beyond the paper, quality 5.18)
    assert tc._common_cfg(PAPER, 0, 5)["average_checkpoints"] == 1
    for pr in (q, get_preset("cpu")):
        cfg = tc._common_cfg(pr, 0, 5)
        assert (cfg["average_checkpoints"], cfg["keep_checkpoints"]) == (3, 4)  # one more: see loop._average_checkpoints
    from loa_meta.training.losses import REDUCTIONS
    assert tc.LOSS_REDUCTIONS == REDUCTIONS  # the --loss_reduction flag offers exactly the library's reductions
    assert tc._common_cfg(q.override(average_checkpoints=2), 0, 5)["average_checkpoints"] == 2
    # paper adaptation: 50 epochs of 100 images in batches of 8 = 650 Adam steps; at most lr per step,
    # so omega can move 6.5, more than the 2.28 between sigma(omega) = 0.66 and 0.95 (Tables 3-5)
    steps = tc._steps(PAPER.adapt_epochs, PAPER.adapt_images, PAPER.adapt_batch)
    logit = lambda s: np.log(s / (1 - s))  # noqa: E731
    assert steps == 650 and steps * PAPER.adapt_learning_rate > 2 * (logit(0.95) - logit(0.66))


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
    import keras

    from experiments import training_common as tc
    from loa_meta.models import LOANet

    d = str(tmp_path)
    assert not tc.is_complete(d)
    tc.mark_complete(d, {"x": 1})
    assert tc.is_complete(d) and tc.read_complete(d)["x"] == 1
    model = LOANet(num_phases=1, num_tasks=2)
    model.omegas[1].assign(0.75)
    path = tc.save_model_atomic(model, os.path.join(d, "sub", "model.keras"))
    assert float(np.asarray(keras.models.load_model(path).omegas[1])) == 0.75

    class FailingSave:  # a save that dies half way through writing
        def save(self, p):
            open(p, "wb").write(b"partial")
            raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        tc.save_model_atomic(FailingSave(), path)
    assert float(np.asarray(keras.models.load_model(path).omegas[1])) == 0.75  # the old file is intact
    with pytest.raises(OSError):
        tc.save_model_atomic(FailingSave(), os.path.join(d, "new.keras"))
    assert sorted(os.listdir(d)) == ["COMPLETE.json", "sub"] and os.listdir(os.path.join(d, "sub")) == ["model.keras"]


def test_load_images_fraction_and_limit(prepared):
    from experiments import training_common as tc

    assert tc.load_images(prepared, "train").shape == (6,) + SHAPE
    assert tc.load_images(prepared, "train", fraction=2 / 3).shape[0] == 4
    assert tc.load_images(prepared, "train", limit=3).shape[0] == 3


def test_split_data_holds_out_val_tail_and_splits_the_rest_two_to_one(tmp_path):
    from absl import app as absl_app

    from experiments import training_common as tc
    from experiments.presets import PAPER

    data = write_prepared(str(tmp_path / "p"), counts=(20, 12, 2))
    train, val = np.load(os.path.join(data, "train.npy")), np.load(os.path.join(data, "val.npy"))
    p = PAPER.override(eval_slices=3)
    s = tc.split_data(data, p)
    np.testing.assert_array_equal(s["heldout"], val[-3:])
    np.testing.assert_array_equal(s["pool"], np.concatenate([train, val[:-3]]))
    assert (len(s["train"]), len(s["val"])) == (19, 10)  # 29 slices split 2 : 1 (paper: 300 : 150)
    np.testing.assert_array_equal(np.concatenate([s["train"], s["val"]]), s["pool"])
    # no training slice is a held-out slice
    assert not any(np.array_equal(a, b) for a in s["pool"] for b in s["heldout"])
    # the reduced-data runs keep the same held-out slices
    r = tc.split_data(data, p, fraction=2 / 3)
    np.testing.assert_array_equal(r["heldout"], s["heldout"])
    assert len(r["pool"]) == round(20 * 2 / 3) + round(9 * 2 / 3)
    with pytest.raises(absl_app.UsageError, match="val split has 12 slices; 12 are held out"):
        tc.split_data(data, p.override(eval_slices=12))


def test_run_config_records_threads_and_warns_when_a_run_continues_with_another_count(tmp_path, caplog, monkeypatch):
    """A continued run with another intra-op thread count is not bit-identical to one uninterrupted run
    (docs/benchmarks_training.md): write_run_config records the count and warns, naming both."""
    import logging

    from experiments import common

    monkeypatch.setenv("TF_NUM_INTRAOP_THREADS", "1")
    assert common.tf_threads()["intra_op"] == 1  # the env var decides when the API did not set a count
    wd = str(tmp_path)
    with caplog.at_level(logging.WARNING):
        common.write_run_config(wd, {"app": "x"})
    assert not [r for r in caplog.records if "intra-op" in r.getMessage()]
    assert json.load(open(os.path.join(wd, "run_config.json")))["tf_threads"]["intra_op"] == 1
    monkeypatch.setenv("TF_NUM_INTRAOP_THREADS", "3")
    with caplog.at_level(logging.WARNING):
        common.write_run_config(wd, {"app": "x"})
    msgs = [r.getMessage() for r in caplog.records if "intra-op" in r.getMessage()]
    assert len(msgs) == 1 and "with 1 intra-op threads and continues with 3" in msgs[0], msgs
    assert json.load(open(os.path.join(wd, "run_config.json")))["tf_threads"]["intra_op"] == 3
