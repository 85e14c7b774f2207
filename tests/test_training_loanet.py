"""Training with the real networks (tiny LOANet / ISTA-Net+, 12x14 images, eager steps)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from loa_meta.models.ista_net_plus import ISTANetPlus
from loa_meta.models.loa_net import LOANet
from loa_meta.training import (
    AdaptConfig,
    ConventionalConfig,
    MetaConfig,
    adapt_omega,
    penalty_objective_and_grads,
    penalty_objective_value,
    train_conventional,
    train_meta,
)
from loa_meta.training.algorithm2 import model_inputs
from loa_meta.training.losses import reconstruction_loss
from tests.training_helpers import fixed_batch, make_arrays, make_dataset

COMMON = dict(compile_steps=False, log_every=100, image_every=0, summary_every=5)


def _fixed(arr):
    return tf.data.Dataset.from_tensors({k: tf.constant(v) for k, v in arr.items()}).repeat()


def _loss(model, arr):
    b = {k: tf.constant(v) for k, v in arr.items()}
    return float(reconstruction_loss(model(model_inputs(b)), b["target"]))


def test_loanet_penalty_gradient_exact_and_finite_difference_in_omega():
    tr, va = make_arrays(2, seed=0), make_arrays(2, seed=50)
    bt, bv = fixed_batch(tr, [0, 2]), fixed_batch(va, [1, 3])
    m = LOANet(num_phases=1, num_tasks=2)
    lam = 1.0
    metrics, g_theta, g_omega = penalty_objective_and_grads(m, bt, bv, lam)
    # HVP form == direct nested-tape gradient of L~ (exact identity, float32 round-off only)
    with tf.GradientTape() as tape:
        f = penalty_objective_value(m, bt, bv, lam)
    direct = tape.gradient(f, m.theta_variables + m.omega_variables)
    for a, b in zip(g_theta + g_omega, direct):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=2e-3, atol=1e-5 * (1 + np.abs(b.numpy()).max()))
    np.testing.assert_allclose(float(metrics["objective"]), float(f), rtol=1e-5)
    # central differences in each omega (the safeguard's branch choice is locally constant here)
    for i, w in enumerate(m.omega_variables):
        w0 = float(w.numpy())
        h = 1e-2
        w.assign(w0 + h); fp = float(penalty_objective_value(m, bt, bv, lam))
        w.assign(w0 - h); fm = float(penalty_objective_value(m, bt, bv, lam))
        w.assign(w0)
        fd = (fp - fm) / (2 * h)
        an = float(g_omega[i])
        assert abs(fd - an) <= 0.03 * abs(an) + 1e-4, (i, fd, an)


@pytest.mark.slow
def test_loanet_meta_stairwise_resume_and_adaptation(tmp_path):
    tr, va = make_arrays(2, seed=3), make_arrays(2, seed=4)
    data = {"train": _fixed(tr), "val": _fixed(va)}
    cfg = MetaConfig(learning_rate=1e-2, omega_learning_rate=5e-2, delta0=1e-12, delta_tol=1e-13,
                     max_inner_iterations=3, checkpoint_every=1,
                     stairwise={"enabled": True, "initial_phases": 1, "max_phases": 2,
                                "stage_max_iterations": 1, "min_delta": 0.0}, **COMMON)
    build = lambda p: LOANet(num_phases=p, num_tasks=2)  # noqa: E731
    ref = build(1)
    l0 = _loss(ref, va)
    model, hist = train_meta(cfg, str(tmp_path / "meta"), data, model_fn=build)
    assert [s["num_phases"] for s in hist["stages"]] == [1, 2]
    # item 8: eps_t per phase (Algorithm 1 diagnostics) and per-task PSNR/SSIM on B_val in TensorBoard
    import os

    tags = set()
    d = tmp_path / "meta" / "tb" / "val"
    for f in os.listdir(d):
        for e in tf.compat.v1.train.summary_iterator(str(d / f)):
            tags |= {v.tag for v in e.summary.value}
    assert {"eps/phase_0", "eps/phase_1", "batch_psnr/task_1", "batch_ssim/task_0"} <= tags, tags
    assert len(hist["steps"]) == 12 and {h["block"] for h in hist["steps"]} == {"theta", "omega"}
    assert _loss(model, va) < 0.9 * l0
    # re-running on the finished workdir rebuilds the right number of phases, restores and matches
    again, hist2 = train_meta(cfg, str(tmp_path / "meta"), data, model_fn=build)
    assert again.num_phases == model.num_phases and hist2["steps"] == []
    for a, b in zip(model.weights, again.weights):
        assert np.array_equal(a.numpy(), b.numpy())
    # Section 5.4: adapt a new omega; theta and the old tasks are untouched
    theta = [v.numpy().copy() for v in model.theta_variables]
    b_old = fixed_batch(va, [0, 2])
    out_old = model(model_inputs(b_old)).numpy()
    new = make_arrays(3, num_tasks=3, seed=7)
    new = {k: v[new["task_id"] == 2] for k, v in new.items()}
    acfg = AdaptConfig(max_steps=4, learning_rate=0.3, initial_omega=-2.0, **COMMON)
    model, idx, ahist = adapt_omega(model, acfg, str(tmp_path / "adapt"), {"train": make_dataset(new, 3, 0)})
    assert idx == 2
    for a, v in zip(theta, model.theta_variables):
        assert np.array_equal(a, v.numpy())
    np.testing.assert_array_equal(model(model_inputs(b_old)).numpy(), out_old)
    assert ahist["steps"][-1]["loss_train"] < ahist["steps"][0]["loss_train"]


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["loa", "ista_net_plus"])
def test_conventional_loanet_and_ista_net_plus(tmp_path, kind):
    arr = make_arrays(3, num_tasks=1, seed=8)
    cfg = ConventionalConfig(max_steps=12, learning_rate=1e-2, model_type=kind,
                             stairwise={"enabled": False, "max_phases": 2}, **COMMON)
    if kind == "loa":
        build = lambda p: LOANet(num_phases=p, use_task_weights=False)  # noqa: E731
    else:
        build = lambda p: ISTANetPlus(num_phases=p, filters=4)  # noqa: E731
    l0 = _loss(build(2), arr)
    model, hist = train_conventional(cfg, str(tmp_path), {"train": _fixed(arr)}, model_fn=build)
    assert _loss(model, arr) < 0.9 * l0
    if kind == "ista_net_plus":
        assert all(h["symmetry_loss"] >= 0 for h in hist["steps"])
        assert all(h["objective"] > h["loss_train"] for h in hist["steps"])


def test_bookkeeping_intervals_do_not_change_the_trained_weights(tmp_path):
    """Batch summaries (an extra forward pass with Algorithm 1's diagnostics) and held-out scores only
    read the weights: without stair-wise training the run's weights are bit-identical whether they come
    every step or never (the quickstart preset thins them out on that ground)."""
    tr, va = make_arrays(4, seed=5), make_arrays(4, seed=6)
    base = dict(learning_rate=1e-2, omega_learning_rate=5e-2, max_inner_iterations=1, max_steps=6,
                stairwise={"enabled": False, "max_phases": 2}, compile_steps=False, log_every=100)
    weights = []
    for i, every in enumerate(({"summary_every": 1, "eval_every": 1, "image_every": 2},
                               {"summary_every": 100, "eval_every": 0, "image_every": 0})):
        keras.utils.set_random_seed(0)  # the same Xavier start and batch order (the apps seed from --seed)
        data = {"train": make_dataset(tr, 4, 0), "val": make_dataset(va, 4, 1),
                "eval": make_dataset(va, 4, shuffle=False, repeat=False)}
        model, hist = train_meta(MetaConfig(**base, **every), str(tmp_path / str(i)), data,
                                 model_fn=lambda p: LOANet(num_phases=p, num_tasks=2))
        weights.append([w.numpy() for w in model.weights])
    assert len(weights[0]) == len(weights[1]) > 0
    for a, b in zip(*weights):
        np.testing.assert_array_equal(a, b)
    assert any(np.abs(a).max() > 0 for a in weights[0])
