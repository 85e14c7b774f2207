"""Eq. 18 penalty objective: exact gradient vs central finite differences, and Algorithm 2 logic."""

import numpy as np
import pytest
import tensorflow as tf

from loa_meta.training.algorithm2 import (
    Algorithm2Schedule,
    penalty_objective_and_grads,
    penalty_objective_value,
    run_algorithm2_iteration,
)
from loa_meta.training.losses import batch_loss, per_sample_loss, reconstruction_loss, with_loss_weights
from tests.training_helpers import ToyUnrolled, fixed_batch, make_arrays


def _batches(dtype=np.complex128):
    arr = make_arrays(3, num_tasks=2, seed=1, cdtype=dtype)
    return fixed_batch(arr, [0, 3, 1, 4]), fixed_batch(arr, [2, 5])


def test_loss_is_half_squared_error_sum_and_mean():
    rng = np.random.default_rng(0)
    p = rng.normal(size=(3, 4, 5)) + 1j * rng.normal(size=(3, 4, 5))
    t = rng.normal(size=(3, 4, 5))
    expect = 0.5 * np.sum(np.abs(p - t) ** 2, axis=(1, 2))
    np.testing.assert_allclose(per_sample_loss(tf.constant(p), tf.constant(t)).numpy(), expect, rtol=1e-12)
    np.testing.assert_allclose(reconstruction_loss(tf.constant(p), tf.constant(t)).numpy(), expect.sum(), rtol=1e-12)
    np.testing.assert_allclose(
        reconstruction_loss(tf.constant(p), tf.constant(t), "mean", 6).numpy(), expect.sum() / 6, rtol=1e-12)
    with pytest.raises(ValueError, match="reduction"):
        reconstruction_loss(tf.constant(p), tf.constant(t), "avg")


@pytest.mark.parametrize("reduction,power", [("task_norm", 1.0), ("task_norm_sqrt", 0.5), ("task_norm_075", 0.75)])
def test_task_norm_loss_weights_each_sample_by_its_zero_filled_error(reduction, power):
    """task_norm: sum_i w_i l_i, w_i = 1/||A^H y_i - x*_i||^2 scaled to mean 1 over the batch (numpy);
    task_norm_sqrt: w_i = 1/||A^H y_i - x*_i||."""
    rng = np.random.default_rng(3)
    b, h, w = 4, 6, 5
    x = rng.normal(size=(b, h, w))
    mask = (rng.random((b, h, w)) < np.array([0.2, 0.4, 0.6, 0.9])[:, None, None]).astype(np.float64)
    k = np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(x, axes=(1, 2)), norm="ortho"), axes=(1, 2)) * mask
    zf = np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(k, axes=(1, 2)), norm="ortho"), axes=(1, 2))
    inv = 1.0 / np.sum(np.abs(zf - x) ** 2, axis=(1, 2)) ** power
    expect_w = inv / inv.mean()
    batch = {"kspace": tf.constant(k), "mask": tf.constant(mask), "target": tf.constant(x)}
    wb = with_loss_weights(batch, reduction)
    np.testing.assert_allclose(wb["loss_weight"].numpy(), expect_w, rtol=1e-5)
    assert expect_w.max() / expect_w.min() > 2  # the ratios really differ, so the weights do
    assert with_loss_weights(batch, "sum") is batch and "loss_weight" not in batch
    p = x + 0.1 * rng.normal(size=x.shape) + 0.1j * rng.normal(size=x.shape)
    per = 0.5 * np.sum(np.abs(p - x) ** 2, axis=(1, 2))
    got = batch_loss(tf.constant(p), wb, reduction).numpy()
    np.testing.assert_allclose(got, np.sum(expect_w * per), rtol=1e-5)
    assert abs(got - per.sum()) > 1e-3 * per.sum()  # differs from the paper's sum
    with pytest.raises(ValueError, match="with_loss_weights"):
        reconstruction_loss(tf.constant(p), tf.constant(x), reduction)
    with pytest.raises(ValueError, match="task_norm"):
        reconstruction_loss(tf.constant(p), tf.constant(x), "sum", weights=tf.ones([b]))


@pytest.mark.parametrize("lam,reduction", [(0.0, "sum"), (0.7, "sum"), (0.7, "task_norm"), (0.7, "task_norm_sqrt")])
def test_penalty_gradient_matches_central_differences_float64(lam, reduction):
    model = ToyUnrolled(num_phases=2, num_tasks=2, dtype="float64")
    btr, bval = _batches()
    metrics, g_theta, g_omega = penalty_objective_and_grads(model, btr, bval, lam, reduction)
    f0 = penalty_objective_value(model, btr, bval, lam, reduction).numpy()
    np.testing.assert_allclose(metrics["objective"].numpy(), f0, rtol=1e-5)
    rng = np.random.default_rng(5)
    h = 1e-6
    checked = 0
    for var, g in list(zip(model.theta_variables, g_theta)) + list(zip(model.omega_variables, g_omega)):
        flat = var.numpy().reshape(-1)
        for j in rng.choice(flat.size, size=min(3, flat.size), replace=False):
            orig = var.numpy()
            e = np.zeros_like(flat); e[j] = h
            var.assign(orig + e.reshape(orig.shape))
            fp = penalty_objective_value(model, btr, bval, lam, reduction).numpy()
            var.assign(orig - e.reshape(orig.shape))
            fm = penalty_objective_value(model, btr, bval, lam, reduction).numpy()
            var.assign(orig)
            fd = (fp - fm) / (2 * h)
            an = g.numpy().reshape(-1)[j]
            assert abs(fd - an) <= 1e-6 * max(1.0, abs(fd)), (var.name, j, fd, an)
            checked += 1
    assert checked >= 10
    # the penalty really contributes a second-order term to the omega gradient
    assert np.abs(np.concatenate([g.numpy().ravel() for g in g_omega])).max() > 0


def test_hvp_form_equals_direct_gradient_of_penalty():
    """lambda * J_g^T g (via <g, stop_gradient(g)>) == d/dw of lambda/2 ||g||^2 by nested tapes."""
    model = ToyUnrolled(num_phases=2, num_tasks=2, dtype="float64")
    btr, bval = _batches()
    lam = 3.0
    _, g_theta, g_omega = penalty_objective_and_grads(model, btr, bval, lam)
    allv = model.theta_variables + model.omega_variables
    with tf.GradientTape() as outer:
        f = penalty_objective_value(model, btr, bval, lam)
    direct = outer.gradient(f, allv)
    for a, b in zip(g_theta + g_omega, direct):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-9, atol=1e-12)


def test_schedule_matches_paper_constants():
    s = Algorithm2Schedule(1e-3, 0.95, 4.35e-6, 1e-5, 1.001)
    n = s.outer_iterations_to_tol()
    d, brute = 1e-3, 0
    while d > 4.35e-6:
        d, brute = d * 0.95, brute + 1
    assert n == brute  # 107 outer iterations: about the paper's "100 epochs"
    for _ in range(n - 1):
        s.decay()
    assert not s.done()
    s.decay()
    assert s.done()
    np.testing.assert_allclose(s.lam.numpy(), 1e-5 * 1.001 ** n, rtol=1e-12)


def test_omega_step_uses_the_omega_only_gradient_and_line_6_the_full_one():
    """With ``compute_omega`` the line-10 step (k = K >= 1) takes the omega-only gradient; the line-6
    test (k = 0) and every theta step take the full one; with K = 0 the omega step is also the
    line-6 test and stays full."""
    for theta_steps, expect in ((1, ["all", "omega", "all", "omega"]), (2, ["all", "all", "omega"] * 2),
                                (0, ["all", "all"])):
        used, records = [], []

        def compute(bt, bv, lam, tag="all"):
            used.append(tag)
            g_t = [] if tag == "omega" else [tf.constant([3.0])]
            return {"objective": tf.constant(1.0)}, g_t, [tf.constant([4.0])]

        s = Algorithm2Schedule(1e-3, 0.5, 1e-6, 1e-5, 2.0)
        run_algorithm2_iteration(compute, lambda g: None, lambda g: None, None, None, s, theta_steps=theta_steps,
                                 max_inner_iterations=2, on_step=lambda m, w: records.append((w, dict(m))),
                                 compute_omega=lambda bt, bv, lam: compute(bt, bv, lam, "omega"))
        assert used == expect, (theta_steps, used)
        for (which, m), tag in zip(records, used):
            assert m["grad_omega_norm2"] == 16.0
            assert ("grad_norm2" in m) == (tag == "all") and (m.get("grad_norm2") in (None, 25.0))


def test_inner_loop_runs_K_theta_steps_then_one_omega_step_and_stops_on_delta():
    calls = []
    norms = iter([10.0, 10.0, 10.0, 10.0, 10.0, 10.0, 1e-9])

    def compute(bt, bv, lam):
        g = next(norms)
        return {"objective": tf.constant(1.0)}, [tf.constant([np.sqrt(g)])], [tf.constant([0.0])]

    s = Algorithm2Schedule(1e-3, 0.5, 1e-6, 1e-5, 2.0)
    out = run_algorithm2_iteration(compute, lambda g: calls.append("theta"), lambda g: calls.append("omega"),
                                   None, None, s, theta_steps=2, max_inner_iterations=10,
                                   on_step=lambda m, w: None)
    assert calls == ["theta", "theta", "omega", "theta", "theta", "omega"]
    assert out["inner_cycles"] == 3.0
    np.testing.assert_allclose([s.delta.numpy(), s.lam.numpy()], [5e-4, 2e-5])
