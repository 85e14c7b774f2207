"""Training loop: smoke of every mode, loss decrease, stair-wise growth, adaptation, NaN guard,
checkpoint errors. Uses the tiny real Keras model of tests/training_helpers.py (12x14 images)."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from loa_meta.training import (
    AdaptConfig,
    CheckpointError,
    ConventionalConfig,
    MetaConfig,
    NonFiniteError,
    adapt_omega,
    train_conventional,
    train_meta,
)
from loa_meta.training.algorithm2 import Algorithm2Schedule, model_inputs
from loa_meta.training.losses import reconstruction_loss
from tests.training_helpers import ToyUnrolled, fixed_batch, make_arrays, make_dataset


def _meta_data(seed=0, n=4):
    tr = make_arrays(n, num_tasks=2, seed=seed)
    va = make_arrays(n, num_tasks=2, seed=seed + 50)
    return tr, va, {"train": make_dataset(tr, 4, seed), "val": make_dataset(va, 4, seed + 1),
                    "eval": make_dataset(va, 4, shuffle=False, repeat=False)}


def _fixed(arr):
    b = {k: tf.constant(v) for k, v in arr.items()}
    return tf.data.Dataset.from_tensors(b).repeat()


def _loss(model, arr):
    b = {k: tf.constant(v) for k, v in arr.items()}
    return float(reconstruction_loss(model(model_inputs(b)), b["target"]))


def test_meta_one_step_smoke_writes_config_summaries_and_checkpoint(tmp_path, caplog):
    import logging

    from absl import logging as absl_logging

    _, _, data = _meta_data()
    cfg = MetaConfig(max_steps=1, summary_every=1, image_every=1, log_every=1, stairwise={"enabled": False, "max_phases": 1})
    # Tests that run absl apps in-process may have lowered absl's verbosity; the progress line is an
    # INFO record of the "absl" logger.
    previous = absl_logging.get_verbosity()
    absl_logging.set_verbosity(absl_logging.INFO)
    try:
        with caplog.at_level(logging.INFO), caplog.at_level(logging.INFO, logger="absl"):
            model, hist = train_meta(cfg, str(tmp_path), data, model_fn=lambda p: ToyUnrolled(p))
    finally:
        absl_logging.set_verbosity(previous)
    # item 12: progress line with loss, images/s, ETA (step budget) and the Algorithm 2 outer-loop position
    n_outer = Algorithm2Schedule(1e-3, 0.95, 4.35e-6, 1e-5, 1.001).outer_iterations_to_tol()
    line = [r.getMessage() for r in caplog.records if "img/s" in r.getMessage()][0]
    assert "step 1 |" in line and "loss" in line and "ETA 0m00s" in line and "outer 1/%d" % n_outer in line, line
    assert len(hist["steps"]) == 1 and hist["steps"][0]["block"] == "theta"
    cfg2 = MetaConfig.from_dict(json.load(open(tmp_path / "config.json")))
    assert cfg2 == cfg
    assert tf.train.latest_checkpoint(str(tmp_path / "ckpt"))
    tags = {}
    for which in ("train", "val"):
        tags[which] = set()
        d = tmp_path / "tb" / which
        for f in os.listdir(d):
            for e in tf.compat.v1.train.summary_iterator(str(d / f)):
                tags[which] |= {v.tag for v in e.summary.value}
    assert {"loss_train", "penalty", "lambda", "delta", "grad_norm2", "kappa/task_0", "kappa/task_1"} <= tags["train"]
    assert {"grad_theta_norm2", "grad_omega_norm2", "grad_tr_norm2", "objective"} <= tags["train"]
    assert any(t.startswith("params/") and "step_0" in t for t in tags["train"]), tags["train"]
    assert {"loss", "reconstruction", "zero_filled", "reference", "error_map"} <= tags["val"]
    assert {"batch_psnr/task_0", "batch_psnr/task_1", "batch_ssim/task_0", "batch_ssim/task_1"} <= tags["val"]
    assert {"stage_end/psnr/task_0", "stage_end/ssim/task_1"} <= tags["val"]


def test_meta_loss_decreases_on_fixed_batch_pair_and_omega_moves(tmp_path):
    tr = make_arrays(2, seed=3)
    va = make_arrays(2, seed=4)
    data = {"train": _fixed(tr), "val": _fixed(va)}
    ref = ToyUnrolled(1)
    ref(model_inputs(fixed_batch(tr, [0])))
    l0 = _loss(ref, va)
    om0 = [float(o.numpy()) for o in ref.omega_variables]
    cfg = MetaConfig(max_steps=20, learning_rate=1e-2, omega_learning_rate=1e-2, theta_steps=1,
                     delta0=1e-12, delta_tol=1e-13, max_inner_iterations=5,
                     stairwise={"enabled": False, "max_phases": 1}, log_every=5, image_every=0)
    model, hist = train_meta(cfg, str(tmp_path), data, model_fn=lambda p: ToyUnrolled(p))
    assert len(hist["steps"]) == 20
    blocks = [h["block"] for h in hist["steps"]]
    assert blocks[:4] == ["theta", "omega", "theta", "omega"]
    l1 = _loss(model, va)
    assert l1 < 0.7 * l0, (l0, l1)
    assert [float(o.numpy()) for o in model.omega_variables] != om0
    # lambda grows by nu_lambda per outer iteration (4 outer iterations of 5 cycles x 2 steps... capped by steps)
    assert hist["steps"][-1]["lambda"] > hist["steps"][0]["lambda"]


def test_conventional_and_omega_free_model(tmp_path):
    arr = make_arrays(3, num_tasks=1, seed=7)
    cfg = ConventionalConfig(max_steps=20, learning_rate=1e-2, log_every=5, image_every=0,
                             stairwise={"enabled": False, "max_phases": 2})
    ref = ToyUnrolled(2, use_task_weights=False)
    ref(model_inputs(fixed_batch(arr, [0])))
    l0 = _loss(ref, arr)
    model, hist = train_conventional(cfg, str(tmp_path), {"train": _fixed(arr)},
                                     model_fn=lambda p: ToyUnrolled(p, use_task_weights=False))
    assert model.num_phases == 2 and model.omega_variables == []
    assert all(h["block"] == "theta" and "penalty" not in h for h in hist["steps"])
    assert _loss(model, arr) < 0.7 * l0


@pytest.mark.parametrize("reduction,power", [("task_norm", 1.0), ("task_norm_sqrt", 0.5), ("task_norm_075", 0.75)])
def test_conventional_task_norm_trains_and_reports_the_loss_relative_to_zero_filling(tmp_path, reduction, power):
    """loss_reduction="task_norm": the step loss is sum_i w_i l_i (weights of mean 1) and the held-out
    loss is each slice's error relative to its zero-filled error, averaged (NumPy reference);
    "task_norm_sqrt": relative to the zero-filled error to the power 1/2 (l_i / l_zf,i ** 0.5)."""
    arr = make_arrays(4, num_tasks=2, seed=7)
    ev = tf.data.Dataset.from_tensors({k: tf.constant(v) for k, v in arr.items()})
    cfg = ConventionalConfig(max_steps=20, learning_rate=1e-2, log_every=5, image_every=0, loss_reduction=reduction,
                             stairwise={"enabled": False, "max_phases": 2})
    ref = ToyUnrolled(2, use_task_weights=False)
    ref(model_inputs(fixed_batch(arr, [0])))
    model, hist = train_conventional(cfg, str(tmp_path), {"train": _fixed(arr), "eval": ev},
                                     model_fn=lambda p: ToyUnrolled(p, use_task_weights=False))

    def rel(m):
        pred = m(model_inputs({k: tf.constant(v) for k, v in arr.items()})).numpy()
        k, mask, x = arr["kspace"], arr["mask"], arr["target"]
        zf = np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(k * mask, axes=(-2, -1)), norm="ortho"), axes=(-2, -1))
        per, ref = (0.5 * np.sum(np.abs(a - x) ** 2, axis=(1, 2)) for a in (pred, zf))
        return per / ref ** power

    np.testing.assert_allclose(hist["stages"][-1]["loss"], rel(model).mean(), rtol=1e-4)
    assert rel(model).mean() < 0.7 * rel(ref).mean()
    w = 1 / np.sum(np.abs(np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(arr["kspace"] * arr["mask"], axes=(-2, -1)),
                                                    norm="ortho"), axes=(-2, -1)) - arr["target"]) ** 2, axis=(1, 2))
    assert w.max() / w.min() > 1.2  # the slices really get different weights


@pytest.mark.slow
def test_stairwise_grows_phases_and_rolls_back_when_no_gain(tmp_path):
    tr, va, data = _meta_data(seed=2)
    cfg = MetaConfig(learning_rate=1e-2, omega_learning_rate=1e-2, delta0=1e-12, delta_tol=1e-13,
                     max_inner_iterations=1, eval_every=2, log_every=50, image_every=0,
                     stairwise={"enabled": True, "initial_phases": 1, "max_phases": 3,
                                "stage_max_iterations": 4, "patience": 5, "min_delta": 0.0})
    model, hist = train_meta(cfg, str(tmp_path), data, model_fn=lambda p: ToyUnrolled(p))
    st = hist["stages"]
    assert [s["num_phases"] for s in st][:2] == [1, 2]
    assert st[1]["loss"] < st[0]["loss"]  # a second phase helps on this data
    # the returned model is the best stage; its eval loss equals the best recorded one
    best = min(s["loss"] for s in st)
    assert model.num_phases == [s["num_phases"] for s in st if s["loss"] == best][0]
    # min_delta so large that no new phase can be accepted -> roll back to 1 phase
    cfg2 = MetaConfig.from_dict({**cfg.to_dict(), "stairwise": {**cfg.stairwise, "min_delta": 0.99, "max_phases": 2}})
    model2, hist2 = train_meta(cfg2, str(tmp_path / "b"), data, model_fn=lambda p: ToyUnrolled(p))
    assert [s["num_phases"] for s in hist2["stages"]] == [1, 2]
    assert model2.num_phases == 1


def test_adaptation_freezes_theta_and_old_tasks(tmp_path):
    arr_old = make_arrays(2, num_tasks=2, seed=11)
    model = ToyUnrolled(2)
    old_b = fixed_batch(arr_old, [0, 2])
    out_before = model(model_inputs(old_b)).numpy()
    theta_before = [v.numpy().copy() for v in model.theta_variables]
    omega_before = [v.numpy().copy() for v in model.omega_variables]
    new = make_arrays(4, num_tasks=3, seed=12)
    new = {k: v[new["task_id"] == 2] for k, v in new.items()}  # an unseen mask
    cfg = AdaptConfig(max_steps=15, learning_rate=5e-2, initial_omega=-3.0, log_every=5, image_every=0)
    model, idx, hist = adapt_omega(model, cfg, str(tmp_path), {"train": make_dataset(new, 2, 0)})
    assert idx == 2 and model.num_tasks == 3
    for a, b in zip(theta_before, model.theta_variables):
        assert np.array_equal(a, b.numpy())  # bit-identical
    for a, b in zip(omega_before, model.omega_variables[:2]):
        assert np.array_equal(a, b.numpy())
    np.testing.assert_array_equal(model(model_inputs(old_b)).numpy(), out_before)
    assert float(model.omega_variables[2].numpy()) != -3.0
    assert hist["steps"][-1]["loss_train"] < hist["steps"][0]["loss_train"]


def test_nan_data_stops_with_clear_error_and_keeps_last_good_checkpoint(tmp_path):
    arr = make_arrays(8, num_tasks=1, seed=9)
    arr["kspace"][5] = np.nan  # batch index 2 (batch size 2) is poisoned
    ds = make_dataset(arr, 2, shuffle=False)
    cfg = ConventionalConfig(max_steps=10, checkpoint_every=1, log_every=50, image_every=0,
                             stairwise={"enabled": False, "max_phases": 1})
    with pytest.raises(NonFiniteError, match=r"Non-finite .* at step 3"):
        train_conventional(cfg, str(tmp_path), {"train": ds},
                           model_fn=lambda p: ToyUnrolled(p, use_task_weights=False))
    path = tf.train.latest_checkpoint(str(tmp_path / "ckpt"))
    assert path.endswith("-2")
    reader = tf.train.load_checkpoint(path)
    for name, _ in tf.train.list_variables(path):
        if name.startswith("model/") and "OPTIMIZER" not in name:
            v = reader.get_tensor(name)
            if np.issubdtype(np.asarray(v).dtype, np.floating):
                assert np.all(np.isfinite(v)), name


def test_missing_or_corrupt_checkpoint_names_the_path(tmp_path):
    arr = make_arrays(2, num_tasks=1, seed=9)
    cfg = ConventionalConfig(max_steps=2, log_every=50, image_every=0, stairwise={"enabled": False, "max_phases": 1})
    fn = lambda p: ToyUnrolled(p, use_task_weights=False)  # noqa: E731
    train_conventional(cfg, str(tmp_path), {"train": _fixed(arr)}, model_fn=fn)
    ck = tmp_path / "ckpt"
    for f in os.listdir(ck):
        if ".data-" in f:
            with open(ck / f, "r+b") as fh:
                fh.write(b"garbage" * 10)
    with pytest.raises(CheckpointError, match=str(ck)):
        train_conventional(cfg, str(tmp_path), {"train": _fixed(arr)}, model_fn=fn)
    for f in os.listdir(ck):
        if f != "checkpoint":
            os.remove(ck / f)
    with pytest.raises(CheckpointError, match="checkpoint"):
        train_conventional(cfg, str(tmp_path), {"train": _fixed(arr)}, model_fn=fn)


def test_config_validation_and_round_trip():
    c = MetaConfig(theta_steps=2, stairwise={"max_phases": 4})
    assert MetaConfig.from_dict(c.to_dict()) == c
    with pytest.raises(ValueError, match="nu_delta"):
        MetaConfig(nu_delta=1.5).validate()
    with pytest.raises(ValueError, match="stairwise.initial_phases"):
        MetaConfig(stairwise={"initial_phases": 5, "max_phases": 2}).validate()
    with pytest.raises(ValueError, match="Unknown MetaConfig"):
        MetaConfig.from_dict({"bogus": 1})
    with pytest.raises(ValueError, match="kind"):
        ConventionalConfig.from_dict(c.to_dict())


def test_progress_logger_eta_and_rate():
    from loa_meta.training.progress import ProgressLogger

    t = [0.0]
    p = ProgressLogger(every=5, total_steps=20, clock=lambda: t[0])
    p.start(0)
    line = None
    for step in range(1, 11):
        t[0] += 2.0
        line = p.update(step, images=4, loss=1.5, stage=1, num_phases=3) or line
    assert p.images_per_second() == pytest.approx(2.0)
    assert p.eta_seconds(10) == pytest.approx(20.0)
    assert "step 10" in line and "phases 3" in line and "2.00 img/s" in line and "ETA 0m20s" in line


def test_meta_with_real_data_pipeline_checkpoints_iterators_and_continues(tmp_path):
    from loa_meta.data.pipeline import cross_task_dataset, task_dataset
    from tests.training_helpers import make_images, make_masks

    imgs, masks = make_images(6, seed=1), make_masks(2, seed=1).astype(bool)
    data = {"train": cross_task_dataset([imgs[:3], imgs[:3]], list(masks), per_task_batch=1, seed=0),
            "val": cross_task_dataset([imgs[3:], imgs[3:]], list(masks), per_task_batch=1, seed=1),
            "eval": task_dataset(imgs[3:], masks[1], task_id=1, batch_size=3, seed=0, shuffle=False, repeat=False)}
    cfg = MetaConfig(max_steps=3, delta0=1e-12, delta_tol=1e-13, max_inner_iterations=2, checkpoint_every=1,
                     log_every=50, image_every=0, stairwise={"enabled": False, "max_phases": 1})
    model, hist = train_meta(cfg, str(tmp_path), data, model_fn=lambda p: ToyUnrolled(p))
    assert len(hist["steps"]) == 3
    # the stage-end PSNR is the model's PSNR on the eval set (Eq. 21, computed independently here)
    from loa_meta import metrics

    ev = next(iter(data["eval"]))
    pred = np.abs(model(model_inputs(ev)).numpy())
    assert hist["stages"][0]["psnr/task_1"] == pytest.approx(metrics.psnr(pred, ev["target"].numpy()).mean(), rel=1e-4)
    # a larger budget on the same workdir resumes (iterators, optimizers, step) and continues
    cfg5 = MetaConfig.from_dict({**cfg.to_dict(), "max_steps": 5})
    model, hist = train_meta(cfg5, str(tmp_path), data, model_fn=lambda p: ToyUnrolled(p))
    assert [h["step"] for h in hist["steps"]] == [4, 5]



def test_average_checkpoints_returns_the_mean_of_the_last_k_and_keeps_the_last_iterate_for_resume(tmp_path):
    """TrainConfig.average_checkpoints = 3: the returned weights are the mean of the last three
    checkpoints (outer 4, 6, 7: every 2 outer iterations and the final one), never the start-of-run
    checkpoint. Training is deterministic, so the checkpoints' weights are those of runs stopped
    after 4, 6 and 7 steps. The checkpoints keep the last iterate: a second call (resume of a
    finished run) returns the same average; average_checkpoints = 1 returns the last iterate."""
    arr = make_arrays(3, num_tasks=1, seed=7)
    kw = dict(learning_rate=1e-2, log_every=5, image_every=0, checkpoint_every=2, keep_checkpoints=4,
              stairwise={"enabled": False, "max_phases": 2})
    fn = lambda p: ToyUnrolled(p, use_task_weights=False)  # noqa: E731

    def run(name, steps, **extra):
        return train_conventional(ConventionalConfig(max_steps=steps, **kw, **extra), str(tmp_path / name),
                                  {"train": _fixed(arr)}, model_fn=fn)

    model, hist = run("avg", 7, average_checkpoints=3)
    ck = tf.train.get_checkpoint_state(str(tmp_path / "avg" / "ckpt"))
    assert [os.path.basename(p) for p in ck.all_model_checkpoint_paths] == ["ckpt-2", "ckpt-4", "ckpt-6", "ckpt-7"]
    assert [os.path.basename(p) for p in hist["averaged_checkpoints"]] == ["ckpt-4", "ckpt-6", "ckpt-7"]
    iterates = [[v.numpy() for v in run(f"last{n}", n)[0].weights] for n in (4, 6, 7)]
    assert run("last7b", 7)[1]["averaged_checkpoints"] == []
    got = [v.numpy() for v in model.weights]
    for i, g in enumerate(got):
        np.testing.assert_allclose(g, sum(it[i] for it in iterates) / 3, rtol=1e-5, atol=1e-7)
    assert max(float(np.max(np.abs(g - w))) for g, w in zip(got, iterates[2])) > 1e-4  # not the last iterate
    again, _ = run("avg", 7, average_checkpoints=3)
    for a, b in zip(again.weights, got):
        np.testing.assert_allclose(a.numpy(), b, rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match="average_checkpoints"):
        ConventionalConfig(average_checkpoints=4, keep_checkpoints=3).validate()
    with pytest.raises(ValueError, match="average_checkpoints"):
        ConventionalConfig(average_checkpoints=0).validate()


def test_continuing_a_finished_run_equals_one_run_of_the_larger_budget(tmp_path):
    """A finished meta-learning run given a larger max_steps continues to the uninterrupted run's
    checkpoints, weights and averaged model bit for bit, also when the first budget ended between two
    checkpoints (outer 5, a checkpoint every 2): the averaging window skips that off-cadence checkpoint,
    which one run of the larger budget never writes (before: the windows were 5/6/8 and 4/6/8).
    Both runs in one process: another thread count changes the last bits (docs/benchmarks_training.md)."""
    def data():  # fresh datasets (a second iterator reshuffles), built under the same global seed (their
        tf.random.set_seed(0)  # shuffle order depends on it, and the first run sets it)
        return _meta_data(seed=3)[2]

    kw = dict(delta0=1e-12, delta_tol=1e-13, max_inner_iterations=1, learning_rate=1e-2, omega_learning_rate=1e-2,
              checkpoint_every=2, keep_checkpoints=4, average_checkpoints=3, log_every=50, image_every=0,
              stairwise={"enabled": False, "max_phases": 2})
    fn = lambda p: ToyUnrolled(p)  # noqa: E731
    full, hf = train_meta(MetaConfig(max_steps=16, **kw), str(tmp_path / "full"), data(), model_fn=fn)
    first, h1 = train_meta(MetaConfig(max_steps=10, **kw), str(tmp_path / "cont"), data(), model_fn=fn)
    assert [os.path.basename(p) for p in h1["averaged_checkpoints"]] == ["ckpt-2", "ckpt-4", "ckpt-5"]
    cont, hc = train_meta(MetaConfig(max_steps=16, **kw), str(tmp_path / "cont"), data(), model_fn=fn)
    assert [h["step"] for h in hc["steps"]][0] == 11
    ck = tf.train.get_checkpoint_state(str(tmp_path / "cont" / "ckpt"))
    assert [os.path.basename(p) for p in ck.all_model_checkpoint_paths] == ["ckpt-4", "ckpt-5", "ckpt-6", "ckpt-8"]
    for h in (hf, hc):
        assert [os.path.basename(p) for p in h["averaged_checkpoints"]] == ["ckpt-4", "ckpt-6", "ckpt-8"]
    for a, b in zip(full.weights, cont.weights):
        assert np.array_equal(a.numpy(), b.numpy()), a.name
    ra, rb = (tf.train.load_checkpoint(str(tmp_path / d / "ckpt" / "ckpt-8")) for d in ("full", "cont"))
    keys = [k for k in ra.get_variable_to_shape_map() if k.endswith("VARIABLE_VALUE") and "save_counter" not in k]
    assert len(keys) > 30 and any(k.startswith("opt_theta/_variables") for k in keys)
    for k in keys:
        assert np.array_equal(ra.get_tensor(k), rb.get_tensor(k)), k
    # the averaged model is not the last iterate, so the window really decides it
    w1 = next(v for v in full.weights if v.name.endswith("w1"))
    assert np.max(np.abs(w1.numpy() - ra.get_tensor("model/w1/.ATTRIBUTES/VARIABLE_VALUE"))) > 1e-4


@pytest.mark.parametrize("deterministic", [True, False])
def test_grappler_is_off_during_a_deterministic_run_and_restored_after(tmp_path, deterministic):
    """config.deterministic switches TensorFlow's graph optimizer off while the run lasts (the
    process-dependent rewrites broke bit-reproducibility between processes), and only then."""
    seen = []

    def build(p):
        seen.append(tf.config.optimizer.get_experimental_options().get("disable_meta_optimizer", False))
        return ToyUnrolled(p)

    _, _, data = _meta_data()
    cfg = MetaConfig(max_steps=2, deterministic=deterministic, image_every=0,
                     stairwise={"enabled": False, "max_phases": 1})
    before = tf.config.optimizer.get_experimental_options().get("disable_meta_optimizer", False)
    assert before is False
    train_meta(cfg, str(tmp_path), data, model_fn=build)
    assert seen and all(s is deterministic for s in seen), seen
    assert tf.config.optimizer.get_experimental_options().get("disable_meta_optimizer", False) is False
