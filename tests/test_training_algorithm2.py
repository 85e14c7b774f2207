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
from loa_meta.training.losses import per_sample_loss, reconstruction_loss
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


@pytest.mark.parametrize("lam", [0.0, 0.7])
def test_penalty_gradient_matches_central_differences_float64(lam):
    model = ToyUnrolled(num_phases=2, num_tasks=2, dtype="float64")
    btr, bval = _batches()
    metrics, g_theta, g_omega = penalty_objective_and_grads(model, btr, bval, lam)
    f0 = penalty_objective_value(model, btr, bval, lam).numpy()
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
            fp = penalty_objective_value(model, btr, bval, lam).numpy()
            var.assign(orig - e.reshape(orig.shape))
            fm = penalty_objective_value(model, btr, bval, lam).numpy()
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
