"""ComplexConv2D (Eq. 19): explicit numpy complex convolution, adjoint dot-product test, config."""

import numpy as np
import pytest
import tensorflow as tf

from loa_meta.layers import ComplexConv2D
from tests.layer_test_utils import run_layer_test


def _crandn(rng, shape, dtype=np.complex64):
    return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(dtype)


def _numpy_complex_conv(z, w):
    """'same' cross-correlation: out[b,i,j,o] = sum_{p,q,c} w[p,q,c,o] z[b,i+p-o0,j+q-o1,c]."""
    b, h, wd, cin = z.shape
    k = w.shape[0]
    top = (k - 1) // 2
    zp = np.zeros((b, h + k - 1, wd + k - 1, cin), z.dtype)
    zp[:, top : top + h, top : top + wd, :] = z
    out = np.zeros((b, h, wd, w.shape[-1]), np.complex128)
    for p in range(k):
        for q in range(k):
            out += np.einsum("bhwc,co->bhwo", zp[:, p : p + h, q : q + wd, :], w[p, q])
    return out


@pytest.mark.parametrize("kernel_size,cin,filters", [(3, 1, 4), (3, 4, 4), (5, 2, 3)])
def test_matches_numpy_complex_convolution(rng, kernel_size, cin, filters):
    z = _crandn(rng, (2, 12, 14, cin))
    layer = ComplexConv2D(filters=filters, kernel_size=kernel_size)
    out = layer(tf.constant(z)).numpy()
    w = layer.kernel_real.numpy() + 1j * layer.kernel_imag.numpy()
    ref = _numpy_complex_conv(z, w)
    np.testing.assert_allclose(out, ref, atol=2e-5 * np.abs(ref).max())


def test_no_bias_and_complex_linearity(rng):
    layer = ComplexConv2D(filters=3)
    z1, z2 = _crandn(rng, (2, 7, 9, 1)), _crandn(rng, (2, 7, 9, 1))
    c = np.complex64(0.7 - 1.3j)
    lhs = layer(tf.constant(c * z1 + z2)).numpy()
    rhs = c * layer(tf.constant(z1)).numpy() + layer(tf.constant(z2)).numpy()
    np.testing.assert_allclose(lhs, rhs, atol=1e-5)
    assert np.abs(layer(tf.zeros((1, 7, 9, 1), tf.complex64)).numpy()).max() == 0.0
    assert [w.name for w in layer.weights] == ["kernel_real", "kernel_imag"]
    assert all(w.dtype == "float32" for w in layer.weights)


@pytest.mark.parametrize("kernel_size", [3, 4])
def test_transpose_is_adjoint(rng, kernel_size):
    layer = ComplexConv2D(filters=4, kernel_size=kernel_size, dtype="float64")
    x = _crandn(rng, (3, 12, 14, 2), np.complex128)
    y = _crandn(rng, (3, 12, 14, 4), np.complex128)
    ax = layer(tf.constant(x)).numpy()
    aty = layer.transpose(tf.constant(y)).numpy()
    assert aty.shape == x.shape
    lhs = np.real(np.vdot(y, ax))  # Re<Ax, y>
    rhs = np.real(np.vdot(aty, x))  # Re<x, A^T y>
    assert abs(lhs - rhs) <= 1e-12 * max(1.0, abs(lhs))
    # complex-linear map: also the imaginary parts agree, i.e. it is the Hermitian adjoint
    assert abs(np.vdot(y, ax) - np.vdot(aty, x)) <= 1e-12 * max(1.0, abs(lhs))


def test_transpose_matches_vector_jacobian_product(rng):
    layer = ComplexConv2D(filters=4)
    x = tf.constant(_crandn(rng, (2, 9, 8, 1)))
    y = tf.constant(_crandn(rng, (2, 9, 8, 4)))
    xr, xi = tf.math.real(x), tf.math.imag(x)
    with tf.GradientTape() as tape:
        tape.watch([xr, xi])
        out = layer(tf.complex(xr, xi))
        s = tf.reduce_sum(tf.math.real(out) * tf.math.real(y) + tf.math.imag(out) * tf.math.imag(y))
    gr, gi = tape.gradient(s, [xr, xi])
    t = layer.transpose(y)
    np.testing.assert_allclose(tf.math.real(t).numpy(), gr.numpy(), atol=1e-5)
    np.testing.assert_allclose(tf.math.imag(t).numpy(), gi.numpy(), atol=1e-5)


def test_layer_round_trips(rng):
    z = tf.constant(_crandn(rng, (2, 12, 14, 1)))
    run_layer_test(ComplexConv2D, {"filters": 4, "kernel_size": 3}, z, (2, 12, 14, 4))


def test_bad_input_errors():
    layer = ComplexConv2D(2)
    with pytest.raises(TypeError, match="inputs"):
        layer(tf.zeros((1, 4, 4, 1)))
    with pytest.raises(ValueError, match="filters"):
        ComplexConv2D(filters=0)


def test_real_and_imaginary_kernels_are_initialised_independently():
    layer = ComplexConv2D(4)
    layer.build((None, 8, 8, 2))
    kr, ki = layer.kernel_real.numpy(), layer.kernel_imag.numpy()
    assert np.abs(kr - ki).max() > 1e-3
    # Both follow Glorot-uniform: bound sqrt(6 / (fan_in + fan_out)).
    bound = np.sqrt(6.0 / (9 * 2 + 9 * 4))
    assert np.abs(kr).max() <= bound and np.abs(ki).max() <= bound
    seeded = ComplexConv2D(4, kernel_initializer=tf.keras.initializers.GlorotUniform(seed=3))
    seeded.build((None, 8, 8, 2))
    again = ComplexConv2D(4, kernel_initializer=tf.keras.initializers.GlorotUniform(seed=3))
    again.build((None, 8, 8, 2))
    np.testing.assert_array_equal(seeded.kernel_imag.numpy(), again.kernel_imag.numpy())
    assert np.abs(seeded.kernel_real.numpy() - seeded.kernel_imag.numpy()).max() > 1e-3
