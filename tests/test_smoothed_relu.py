"""Smoothed ReLU (Eq. 20): values and derivative per region, continuity, finite differences."""

import numpy as np
import pytest
import tensorflow as tf

from loa_meta.layers import SmoothedReLU, smoothed_relu, smoothed_relu_derivative
from tests.layer_test_utils import run_layer_test

DELTA = 1e-3


def _ref(x, d):
    return np.where(x <= -d, 0.0, np.where(x >= d, x, x**2 / (4 * d) + x / 2 + d / 4))


def test_values_in_three_regions(rng):
    x = np.concatenate([rng.uniform(-1, -DELTA, 50), rng.uniform(-DELTA, DELTA, 50), rng.uniform(DELTA, 1, 50)])
    y = smoothed_relu(tf.constant(x), DELTA).numpy()
    np.testing.assert_allclose(y, _ref(x, DELTA), atol=1e-15)
    assert np.all(y[:50] == 0) and np.all(y[100:] == x[100:])
    assert np.all(y >= 0)
    # phi(0) = delta/4
    assert smoothed_relu(tf.constant(0.0, tf.float64), DELTA).numpy() == pytest.approx(DELTA / 4)


def test_derivative_regions_and_continuity():
    d = DELTA
    x = tf.constant([-1.0, -d, -d / 2, 0.0, d / 2, d, 2.0], tf.float64)
    g = smoothed_relu_derivative(x, d).numpy()
    np.testing.assert_allclose(g, [0.0, 0.0, 0.25, 0.5, 0.75, 1.0, 1.0], atol=1e-12)
    for edge in (-d, d):
        for fn in (smoothed_relu, smoothed_relu_derivative):
            left = fn(tf.constant(edge - 1e-12, tf.float64), d).numpy()
            right = fn(tf.constant(edge + 1e-12, tf.float64), d).numpy()
            assert abs(left - right) < 1e-8


def test_derivative_matches_finite_differences_and_autodiff(rng):
    x = np.concatenate([rng.uniform(-3 * DELTA, 3 * DELTA, 200), rng.uniform(-2, 2, 50)])
    x = x[np.min(np.abs(np.abs(x)[:, None] - DELTA), axis=1) > 1e-6]  # away from the kinks of phi'
    h = 1e-8
    fd = (_ref(x + h, DELTA) - _ref(x - h, DELTA)) / (2 * h)
    g = smoothed_relu_derivative(tf.constant(x), DELTA).numpy()
    np.testing.assert_allclose(g, fd, atol=1e-6)
    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        y = tf.reduce_sum(smoothed_relu(xt, DELTA))
    np.testing.assert_allclose(tape.gradient(y, xt).numpy(), g, atol=1e-12)


def test_complex_split_rule(rng):
    a, b = rng.uniform(-2e-3, 2e-3, 40), rng.uniform(-2e-3, 2e-3, 40)
    z = tf.constant(a + 1j * b)
    out = smoothed_relu(z, DELTA).numpy()
    np.testing.assert_allclose(out.real, _ref(a, DELTA), atol=1e-15)
    np.testing.assert_allclose(out.imag, _ref(b, DELTA), atol=1e-15)
    der = smoothed_relu_derivative(z, DELTA).numpy()
    np.testing.assert_allclose(der.real, smoothed_relu_derivative(tf.constant(a), DELTA).numpy())
    np.testing.assert_allclose(der.imag, smoothed_relu_derivative(tf.constant(b), DELTA).numpy())


def test_layer_round_trips(rng):
    z = tf.constant((rng.standard_normal((2, 5, 6, 3)) * 1e-3 + 1j * rng.standard_normal((2, 5, 6, 3)) * 1e-3).astype(np.complex64))
    layer, out = run_layer_test(SmoothedReLU, {"delta": 1e-3}, z, (2, 5, 6, 3))
    np.testing.assert_allclose(out, smoothed_relu(z, 1e-3).numpy())
    with pytest.raises(ValueError, match="delta"):
        SmoothedReLU(delta=0.0)
