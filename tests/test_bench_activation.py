"""benchmarks/bench_activation.py: the Relu-only form of Eq. 20 is the library's smoothed ReLU."""

import importlib

import numpy as np
import pytest
import tensorflow as tf

from benchmarks.bench_activation import relu_form

sr = importlib.import_module("loa_meta.layers.smoothed_relu")


@pytest.mark.parametrize("d", [1e-3, 0.1])
def test_relu_form_matches_value_slope_and_second_derivative(d):
    value, derivative = relu_form(sr, tf)
    x = tf.constant(np.concatenate([np.linspace(-3 * d, 3 * d, 601), [-5.0, -1.0, 1.0, 5.0]]), tf.float64)
    np.testing.assert_allclose(value(x, d).numpy(), sr.smoothed_relu(x, d).numpy(), rtol=0, atol=1e-15)
    u = derivative(x, d).numpy()
    np.testing.assert_allclose(u, sr.smoothed_relu_derivative(x, d).numpy(), rtol=0, atol=1e-15)
    xs = x.numpy()
    assert np.all(u[xs >= d] == 1.0) and np.all(u[xs <= -d] == 0.0)  # exact outside (-d, d)
    with tf.GradientTape(persistent=True) as tape:  # the gradients Eq. 18 differentiates agree too
        tape.watch(x)
        a, b = value(x, d), sr.smoothed_relu(x, d)
        da, db = derivative(x, d), sr.smoothed_relu_derivative(x, d)
    ga, gb = tape.gradient(a, x).numpy(), tape.gradient(b, x).numpy()
    near = np.isclose(np.abs(xs), d, rtol=1e-9, atol=0)  # the kinks x = -d, d (within rounding of the grid)
    np.testing.assert_allclose(ga[~near], gb[~near], atol=1e-12)
    inside = np.abs(xs) < d * (1 - 1e-9)
    np.testing.assert_allclose(tape.gradient(da, x).numpy()[inside], tape.gradient(db, x).numpy()[inside], rtol=1e-9)
    # At exactly x = d autodiff of the Relu form returns 0 (ReluGrad at 0), not phi'(d) = 1, which the
    # library's form returns: one more reason the Relu form is not the library's (docs/benchmarks_training.md).
    at_d = tf.constant([d], tf.float64)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(at_d)
        a, b = value(at_d, d), sr.smoothed_relu(at_d, d)
    assert tape.gradient(b, at_d).numpy()[0] == 1.0 and tape.gradient(a, at_d).numpy()[0] == 0.0
