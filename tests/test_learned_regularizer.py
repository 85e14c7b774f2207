"""LearnedRegularizer (Eqs. 4, 5, 19, A2): r_eps values, explicit gradient vs autodiff and finite
differences in float64, per-sample eps, round trips."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from loa_meta.layers import LearnedRegularizer
from tests.layer_test_utils import run_layer_test

DELTA = 1e-3


def _image(rng, shape=(2, 12, 14), dtype=np.complex128):
    return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(dtype)


def _kink_free(layer, x, margin):
    """True if no pre-activation (real or imag part) lies within `margin` of +-delta."""
    pre, _ = layer._forward(tf.constant(x))  # real and imaginary parts as stacked real channels
    return all(np.min(np.abs(np.abs(p.numpy()) - DELTA)) > margin for p in pre)


def _autodiff_grad(layer, x, eps):
    xr, xi = tf.constant(np.real(x)), tf.constant(np.imag(x))
    with tf.GradientTape() as tape:
        tape.watch([xr, xi])
        v = tf.reduce_sum(layer.value(tf.complex(xr, xi), eps))
    gr, gi = tape.gradient(v, [xr, xi])
    return gr.numpy() + 1j * gi.numpy()


def test_value_matches_definition(rng):
    layer = LearnedRegularizer(dtype="float64")
    x = _image(rng)
    eps = np.array([1e-3, 0.5])
    g = layer.features(tf.constant(x)).numpy()
    assert g.shape == (2, 12, 14, 4)
    norms = np.sqrt(np.sum(np.abs(g) ** 2, axis=-1))
    ref = np.sum(np.sqrt(norms**2 + eps[:, None, None] ** 2) - eps[:, None, None], axis=(1, 2))
    np.testing.assert_allclose(layer.value(tf.constant(x), tf.constant(eps)).numpy(), ref, rtol=1e-12)
    # R_eps <= R <= R_eps + m * eps  (m = number of pixels); r_eps -> ||g||_{2,1} as eps -> 0
    r = np.sum(norms, axis=(1, 2))
    r_eps = layer.value(tf.constant(x), 1e-3).numpy()
    assert np.all(r_eps <= r) and np.all(r <= r_eps + 12 * 14 * 1e-3 + 1e-12)
    np.testing.assert_allclose(layer.value(tf.constant(x), 1e-12).numpy(), r, rtol=1e-9)


@pytest.mark.parametrize("num_layers,filters", [(3, 4), (2, 3), (1, 2)])
def test_grad_matches_autodiff_and_finite_differences(num_layers, filters):
    keras.utils.set_random_seed(7 + num_layers)
    rng = np.random.default_rng(7 + num_layers)
    layer = LearnedRegularizer(num_layers=num_layers, filters=filters, delta=DELTA, dtype="float64")
    eps = tf.constant([1e-3, 2e-2], tf.float64)
    h = 1e-6
    for _ in range(20):  # deterministic search for a test point away from the kinks of phi'
        x = _image(rng, (2, 9, 10)) * 0.3
        if _kink_free(layer, x, 10 * h):
            break
    assert _kink_free(layer, x, 10 * h)
    explicit = layer.grad(tf.constant(x), eps).numpy()
    auto = _autodiff_grad(layer, x, eps)
    np.testing.assert_allclose(explicit, auto, rtol=1e-9, atol=1e-11)
    # central finite differences on a random subset of coordinates (real and imaginary)
    v = lambda z: layer.value(tf.constant(z), eps).numpy()  # noqa: E731
    idx = [(b, i, j) for b, i, j in zip(rng.integers(0, 2, 12), rng.integers(0, 9, 12), rng.integers(0, 10, 12))]
    for b, i, j in idx:
        for unit, part in ((1.0, np.real), (1j, np.imag)):
            e = np.zeros_like(x)
            e[b, i, j] = unit * h
            fd = (v(x + e)[b] - v(x - e)[b]) / (2 * h)
            assert abs(fd - part(explicit[b, i, j])) <= 1e-6 * max(1.0, abs(fd)), (b, i, j, fd, explicit[b, i, j])


def test_value_and_grad_consistent_and_per_sample_eps(rng):
    layer = LearnedRegularizer(dtype="float64")
    x = _image(rng, (3, 8, 8))
    eps = tf.constant([1e-3, 1e-2, 1e-1], tf.float64)
    v, g = layer.value_and_grad(tf.constant(x), eps)
    np.testing.assert_allclose(v.numpy(), layer.value(tf.constant(x), eps).numpy(), rtol=1e-14)
    for b in range(3):
        vb, gb = layer.value_and_grad(tf.constant(x[b : b + 1]), float(eps[b]))
        np.testing.assert_allclose(vb.numpy()[0], v.numpy()[b], rtol=1e-12)
        np.testing.assert_allclose(gb.numpy()[0], g.numpy()[b], rtol=1e-10, atol=1e-12)


def test_float32_grad_close_to_float64(rng):
    l64 = LearnedRegularizer(dtype="float64")
    l32 = LearnedRegularizer()
    l64.build(None)
    l32.build(None)
    l32.set_weights(l64.get_weights())
    x = _image(rng, (2, 12, 14))
    g64 = l64.grad(tf.constant(x), 1e-2).numpy()
    g32 = l32.grad(tf.constant(x.astype(np.complex64)), 1e-2).numpy()
    assert g32.dtype == np.complex64
    np.testing.assert_allclose(g32, g64, atol=1e-4 * np.abs(g64).max())


def test_layer_round_trips(rng):
    x = tf.constant(_image(rng, (2, 12, 14), np.complex64))
    layer, out = run_layer_test(LearnedRegularizer, {"num_layers": 3, "filters": 4}, x, (2, 12, 14, 4))
    assert len(layer.trainable_variables) == 6
    with pytest.raises(TypeError, match="`x`"):
        layer.features(tf.zeros((1, 4, 4)))


def test_every_kernel_is_initialised_independently_and_reproducibly():
    # regression: one seeded initializer shared by the convs made w_2 == w_3 at initialisation
    def kernels(**kw):
        keras.utils.set_random_seed(7)
        layer = LearnedRegularizer(num_layers=3, filters=4, **kw)
        layer.build(None)
        return [v.numpy() for v in layer.trainable_variables]

    ks = kernels()
    same_shape = [(i, j) for i in range(6) for j in range(i + 1, 6) if ks[i].shape == ks[j].shape]
    assert len(same_shape) == 7  # (real, imag) of conv 1 and of conv 2..3
    for i, j in same_shape:
        assert np.abs(ks[i] - ks[j]).max() > 1e-3, (i, j)
    for a, b in zip(ks, kernels()):  # reproducible under keras.utils.set_random_seed
        np.testing.assert_array_equal(a, b)
    seeded = kernels(kernel_initializer=keras.initializers.GlorotUniform(seed=5))
    for a, b in zip(seeded, kernels(kernel_initializer=keras.initializers.GlorotUniform(seed=5))):
        np.testing.assert_array_equal(a, b)
    for i, j in same_shape:
        assert np.abs(seeded[i] - seeded[j]).max() > 1e-3, (i, j)
