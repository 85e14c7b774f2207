"""Centred orthonormal FFT (paper Eq. 1, F): agreement with NumPy, DC position, Parseval, inverse."""

import numpy as np
import pytest
import tensorflow as tf

from loa_meta.physics.fft import fft2c, ifft2c


def _np_fft2c(x):
    return np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(x, axes=(-2, -1)), norm="ortho"), axes=(-2, -1))


def _np_ifft2c(k):
    return np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(k, axes=(-2, -1)), norm="ortho"), axes=(-2, -1))


def _rand_complex(rng, shape, dtype=np.complex128):
    return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(dtype)


@pytest.mark.parametrize("shape", [(13, 18), (16, 16), (2, 161, 179), (3, 12, 15)])
def test_fft2c_matches_numpy(rng, shape):
    x = _rand_complex(rng, shape)
    np.testing.assert_allclose(fft2c(tf.constant(x)).numpy(), _np_fft2c(x), rtol=0, atol=1e-10)
    np.testing.assert_allclose(ifft2c(tf.constant(x)).numpy(), _np_ifft2c(x), rtol=0, atol=1e-10)


@pytest.mark.parametrize("shape", [(13, 18), (16, 16), (15, 11)])
def test_dc_at_centre_for_constant_image(shape):
    h, w = shape
    x = tf.ones(shape, tf.complex64)
    k = fft2c(x).numpy()
    assert np.unravel_index(np.argmax(np.abs(k)), shape) == (h // 2, w // 2)
    # Orthonormal: the DC of a constant image of ones is sqrt(H W), all else zero.
    np.testing.assert_allclose(k[h // 2, w // 2], np.sqrt(h * w), rtol=1e-5)
    k[h // 2, w // 2] = 0
    assert np.max(np.abs(k)) < 1e-4


@pytest.mark.parametrize("dtype", [np.complex64, np.complex128])
def test_parseval_and_inverse(rng, dtype):
    x = _rand_complex(rng, (2, 13, 18), dtype)
    k = fft2c(tf.constant(x))
    assert k.dtype == tf.as_dtype(dtype)
    tol = 1e-5 if dtype == np.complex64 else 1e-12
    np.testing.assert_allclose(np.linalg.norm(k.numpy()), np.linalg.norm(x), rtol=tol)
    np.testing.assert_allclose(ifft2c(k).numpy(), x, atol=10 * tol)
    np.testing.assert_allclose(fft2c(ifft2c(tf.constant(x))).numpy(), x, atol=10 * tol)


def test_fft2c_in_tf_function_with_unknown_shape(rng):
    x = _rand_complex(rng, (2, 13, 18), np.complex64)
    f = tf.function(fft2c, input_signature=[tf.TensorSpec([None, None, None], tf.complex64)])
    np.testing.assert_allclose(f(tf.constant(x)).numpy(), _np_fft2c(x), atol=1e-4)


def test_real_input_raises():
    with pytest.raises(TypeError, match="`x`"):
        fft2c(tf.ones((4, 4), tf.float32))
    with pytest.raises(TypeError, match="`k`"):
        ifft2c(tf.ones((4, 4), tf.float32))


def test_rank_one_raises():
    with pytest.raises(ValueError, match="rank"):
        fft2c(tf.ones((4,), tf.complex64))
