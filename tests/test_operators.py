"""Single-coil operator A = P F (paper Eq. 1), data term f and its gradient (Eq. 2), k-space noise."""

import numpy as np
import pytest
import tensorflow as tf

from loa_meta.physics.operators import SingleCoilOperator, add_kspace_noise, check_kspace_mask

H, W = 12, 14


def _rand_complex(rng, shape, dtype=np.complex128):
    return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(dtype)


def _vdot(a, b):
    """<a, b> = sum conj(a) b, per sample over the last two axes."""
    return np.sum(np.conj(a) * b, axis=(-2, -1))


def _np_fft2c(x):
    return np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(x, axes=(-2, -1)), norm="ortho"), axes=(-2, -1))


def _np_ifft2c(k):
    return np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(k, axes=(-2, -1)), norm="ortho"), axes=(-2, -1))


@pytest.mark.parametrize("dtype", [np.complex64, np.complex128])
@pytest.mark.parametrize("per_sample", [True, False])
def test_adjoint_dot_product(rng, dtype, per_sample):
    b = 3
    mshape = (b, H, W) if per_sample else (H, W)
    mask = (rng.random(mshape) < 0.4).astype(np.float32)
    op = SingleCoilOperator(mask)
    x = _rand_complex(rng, (b, H, W), dtype)
    y = _rand_complex(rng, (b, H, W), dtype)
    ax = op.forward(tf.constant(x)).numpy()
    ahy = op.adjoint(tf.constant(y)).numpy()
    assert ax.dtype == dtype and ahy.dtype == dtype
    lhs, rhs = _vdot(ax, y), _vdot(x, ahy)
    tol = 1e-4 if dtype == np.complex64 else 1e-11
    np.testing.assert_allclose(lhs, rhs, rtol=tol, atol=tol * np.abs(lhs).max())
    # The test must be able to fail: a non-adjoint (A itself instead of A^H) breaks it.
    wrong = _vdot(x, op.forward(tf.constant(y)).numpy())
    assert np.max(np.abs(wrong - lhs)) > 1e-2 * np.abs(lhs).max()


def test_forward_matches_numpy_and_masks_per_sample(rng):
    mask = (rng.random((2, H, W)) < 0.5).astype(np.float32)
    x = _rand_complex(rng, (2, H, W))
    ax = SingleCoilOperator(mask).forward(tf.constant(x)).numpy()
    np.testing.assert_allclose(ax, mask * _np_fft2c(x), atol=1e-12)
    assert np.all(ax[mask == 0] == 0)


def test_bool_mask_equals_float_mask(rng):
    m = rng.random((H, W)) < 0.3
    x = tf.constant(_rand_complex(rng, (2, H, W), np.complex64))
    np.testing.assert_array_equal(
        SingleCoilOperator(m).forward(x).numpy(), SingleCoilOperator(m.astype(np.float32)).forward(x).numpy()
    )


def test_data_term_value(rng):
    mask = (rng.random((H, W)) < 0.4).astype(np.float64)
    x, y = _rand_complex(rng, (2, H, W)), mask * _rand_complex(rng, (2, H, W))
    f = SingleCoilOperator(mask).data_term(tf.constant(x), tf.constant(y)).numpy()
    expect = 0.5 * np.sum(np.abs(mask * _np_fft2c(x) - y) ** 2, axis=(-2, -1))
    assert f.shape == (2,)
    np.testing.assert_allclose(f, expect, rtol=1e-12)


def test_data_grad_matches_finite_differences(rng):
    """grad f = A^H (A x - y) equals dF/dRe(x) + i dF/dIm(x) (central differences, float64)."""
    h, w = 5, 6
    mask = (rng.random((h, w)) < 0.5).astype(np.float64)
    op = SingleCoilOperator(mask)
    x = _rand_complex(rng, (1, h, w))
    y = tf.constant(mask * _rand_complex(rng, (1, h, w)))
    g = op.data_grad(tf.constant(x), y).numpy()[0]

    def f(z):
        return float(op.data_term(tf.constant(z), y).numpy()[0])

    eps = 1e-6
    fd = np.zeros((h, w), np.complex128)
    for i in range(h):
        for j in range(w):
            for unit, part in ((1.0, 1.0), (1j, 1j)):
                d = np.zeros_like(x)
                d[0, i, j] = unit
                fd[i, j] += part * (f(x + eps * d) - f(x - eps * d)) / (2 * eps)
    np.testing.assert_allclose(g, fd, atol=1e-7)
    # And the analytic form in NumPy.
    np.testing.assert_allclose(g, _np_ifft2c(mask * (mask * _np_fft2c(x[0]) - y.numpy()[0])), atol=1e-12)


def test_data_grad_matches_gradient_tape(rng):
    """With a real loss, tf.GradientTape on a complex variable gives the same complex image."""
    mask = (rng.random((H, W)) < 0.5).astype(np.float64)
    op = SingleCoilOperator(mask)
    x = tf.Variable(_rand_complex(rng, (2, H, W)))
    y = tf.constant(mask * _rand_complex(rng, (2, H, W)))
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(op.data_term(x, y))
    g_tape = tape.gradient(loss, x).numpy()
    g = op.data_grad(x, y).numpy()
    np.testing.assert_allclose(g_tape, g, atol=1e-10)


def test_zero_filled(rng):
    mask = (rng.random((2, H, W)) < 0.3).astype(np.float32)
    x = _rand_complex(rng, (2, H, W), np.complex64)
    op = SingleCoilOperator(mask)
    y = op.forward(tf.constant(x))
    x0 = op.zero_filled(y).numpy()
    np.testing.assert_allclose(x0, _np_ifft2c(mask * _np_fft2c(x)), atol=1e-5)
    # A full mask gives back x exactly (F unitary).
    full = SingleCoilOperator(np.ones((H, W), np.float32))
    np.testing.assert_allclose(full.zero_filled(full.forward(tf.constant(x))).numpy(), x, atol=1e-5)


def test_complex_mask_and_bad_rank_raise():
    with pytest.raises(TypeError, match="`mask`"):
        SingleCoilOperator(tf.ones((H, W), tf.complex64))
    with pytest.raises(ValueError, match="`mask`"):
        SingleCoilOperator(tf.ones((1, 2, H, W)))


def test_check_kspace_mask():
    check_kspace_mask(tf.zeros((2, H, W), tf.complex64), tf.zeros((H, W)))
    with pytest.raises(ValueError, match="kspace"):
        check_kspace_mask(tf.zeros((2, H, W), tf.complex64), tf.zeros((H, W + 1)))


# ----------------------------------------------------------------------------- noise


def _kspace(rng, b=2, h=32, w=40):
    return tf.constant(_rand_complex(rng, (b, h, w), np.complex64) * 3.0)


def test_noise_is_seeded_and_only_on_sampled_entries(rng):
    y = _kspace(rng)
    mask = (rng.random((32, 40)) < 0.3).astype(np.float32)
    a = add_kspace_noise(y, mask, sigma=0.1, seed=7).numpy()
    b = add_kspace_noise(y, mask, sigma=0.1, seed=7).numpy()
    c = add_kspace_noise(y, mask, sigma=0.1, seed=8).numpy()
    np.testing.assert_array_equal(a, b)
    assert np.max(np.abs(a - c)) > 1e-3
    n = a - y.numpy()
    assert np.all(n[:, mask == 0] == 0)
    assert np.all(n[:, mask == 1] != 0)
    assert a.dtype == np.complex64


def test_noise_sigma_level(rng):
    y = _kspace(rng, b=2, h=64, w=64)
    mask = (rng.random((2, 64, 64)) < 0.5).astype(np.float32)
    n = add_kspace_noise(y, mask, sigma=0.25, seed=3).numpy() - y.numpy()
    parts = np.concatenate([n.real[mask == 1], n.imag[mask == 1]])
    # ~4100 samples: std of the sample std is ~1.1%; allow 5%.
    np.testing.assert_allclose(parts.std(), 0.25, rtol=0.05)
    assert abs(parts.mean()) < 0.02


@pytest.mark.parametrize("snr_db", [10.0, 30.0])
def test_noise_snr_level(rng, snr_db):
    y = _kspace(rng, b=3, h=64, w=64)
    y = y * tf.constant([1.0, 10.0, 0.1], tf.complex64)[:, None, None]  # per-sample power differs
    mask = (rng.random((64, 64)) < 0.4).astype(np.float32)
    noisy = add_kspace_noise(y, mask, snr_db=snr_db, seed=11).numpy()
    n = noisy - y.numpy()
    m = mask.astype(bool)
    for i in range(3):
        snr = 10 * np.log10(np.mean(np.abs(y.numpy()[i][m]) ** 2) / np.mean(np.abs(n[i][m]) ** 2))
        assert abs(snr - snr_db) < 0.3, (i, snr)


def test_noise_bad_arguments():
    y = tf.zeros((1, 4, 4), tf.complex64)
    m = tf.ones((4, 4))
    with pytest.raises(ValueError, match="exactly one"):
        add_kspace_noise(y, m, sigma=0.1, snr_db=20.0)
    with pytest.raises(ValueError, match="exactly one"):
        add_kspace_noise(y, m)
    with pytest.raises(ValueError, match="`sigma`"):
        add_kspace_noise(y, m, sigma=-1.0)


def test_noise_accepts_tensor_seed_and_rejects_infinite_snr(rng):
    y = tf.constant((rng.standard_normal((2, 6, 7)) + 1j * rng.standard_normal((2, 6, 7))).astype(np.complex64))
    m = np.ones((6, 7), bool)
    a = add_kspace_noise(y, m, sigma=0.1, seed=tf.constant(5))
    b = add_kspace_noise(y, m, sigma=0.1, seed=5)
    c = add_kspace_noise(y, m, sigma=0.1, seed=tf.constant(6))
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert np.abs(a.numpy() - c.numpy()).max() > 1e-3
    with pytest.raises(ValueError, match="snr_db"):
        add_kspace_noise(y, m, snr_db=float("inf"))


def test_operator_accepts_numpy_input(rng):
    x = (rng.standard_normal((2, 6, 7)) + 1j * rng.standard_normal((2, 6, 7))).astype(np.complex64)
    m = rng.random((6, 7)) < 0.5
    op = SingleCoilOperator(m)
    np.testing.assert_allclose(op.forward(x).numpy(), op.forward(tf.constant(x)).numpy())
    np.testing.assert_allclose(op.adjoint(x).numpy(), op.adjoint(tf.constant(x)).numpy())
