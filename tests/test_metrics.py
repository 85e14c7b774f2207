"""PSNR, SSIM and NMSE of the paper's Eqs. 21-23, NumPy and TensorFlow versions."""

import numpy as np
import pytest
import tensorflow as tf
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from loa_meta.metrics import nmse, psnr, ssim, ssim_map, tf_nmse, tf_psnr, tf_ssim


def _pair(rng, n=3, h=12, w=14, noise=0.1, complex_=False):
    ref = rng.random((n, h, w))
    x = ref + noise * rng.standard_normal((n, h, w))
    if complex_:
        phase = np.exp(1j * rng.uniform(0, 2 * np.pi, (n, h, w)))
        return x * phase, ref * np.exp(1j * rng.uniform(0, 2 * np.pi, (n, h, w)))
    return x, ref


@pytest.mark.parametrize("complex_", [False, True])
def test_against_skimage_and_manual(rng, complex_):
    x, ref = _pair(rng, complex_=complex_)
    mx, mr = np.abs(x), np.abs(ref)
    p, s, e = psnr(x, ref), ssim(x, ref), nmse(x, ref)
    assert p.shape == s.shape == e.shape == (3,)
    for i in range(3):
        dr = mr[i].max()
        assert p[i] == pytest.approx(peak_signal_noise_ratio(mr[i], mx[i], data_range=dr), abs=1e-10)
        assert s[i] == pytest.approx(structural_similarity(mr[i], mx[i], data_range=dr, win_size=7), abs=1e-10)
        assert e[i] == pytest.approx(np.sum((mx[i] - mr[i]) ** 2) / np.sum(mr[i] ** 2), rel=1e-12)
    # Single slices return floats.
    assert isinstance(psnr(x[0], ref[0]), float) and psnr(x[0], ref[0]) == pytest.approx(p[0])
    assert isinstance(ssim(x[1], ref[1]), float) and ssim(x[1], ref[1]) == pytest.approx(s[1])


def test_ssim_map_is_skimage_full_map_without_its_border_and_averages_to_ssim(rng):
    x, ref = _pair(rng, h=15, w=19, noise=0.2, complex_=True)
    maps = ssim_map(x, ref)
    assert maps.shape == (3, 15 - 6, 19 - 6)
    np.testing.assert_allclose(maps.mean(axis=(1, 2)), ssim(x, ref), rtol=0, atol=1e-12)
    for i in range(3):
        mr, mx = np.abs(ref[i]), np.abs(x[i])
        _, full = structural_similarity(mr, mx, data_range=mr.max(), win_size=7, full=True)
        np.testing.assert_allclose(ssim_map(x[i], ref[i]), full[3:-3, 3:-3], rtol=0, atol=1e-10)
    # A window of the ground truth that is all zero (air) scores c1 / (mean_x^2 + c1) * c2 / (var_x + c2)
    # when x has signal there: the map locates such losses (a 5x5 window, win_size 5, fixed data range 1).
    ref0 = np.zeros((5, 5))
    x0 = np.zeros((5, 5))
    x0[::2, ::2] = 0.03  # 9 of 25 pixels
    v = 25 / 24 * (np.mean(x0**2) - np.mean(x0) ** 2)
    c1, c2 = 0.01**2, 0.03**2
    expect = c1 / (np.mean(x0) ** 2 + c1) * c2 / (v + c2)
    assert ssim_map(x0, ref0, data_range=1.0, win_size=5)[0, 0] == pytest.approx(expect, rel=1e-12)
    assert ssim(x0, ref0, data_range=1.0, win_size=5) == pytest.approx(expect, rel=1e-12)


def test_nmse_uses_reference_in_denominator(rng):
    ref = rng.random((12, 14)) + 0.5
    x = 2.0 * ref
    assert nmse(x, ref) == pytest.approx(1.0)  # ||x - ref||^2 / ||ref||^2; Eq. 23 as printed gives 0.25


def test_known_values_and_invariances(rng):
    ref = np.zeros((16, 16))
    ref[4:12, 4:12] = 1.0
    x = ref + 0.1
    assert psnr(x, ref) == pytest.approx(20.0)  # peak 1, MSE 0.01
    assert psnr(ref, ref) == np.inf and ssim(ref, ref) == pytest.approx(1.0) and nmse(ref, ref) == 0.0
    x, ref = _pair(rng)
    for f in (psnr, ssim, nmse):
        np.testing.assert_allclose(f(7.0 * x, 7.0 * ref), f(x, ref), rtol=1e-10)
    # More noise -> worse on every metric.
    x2 = ref + 2 * (x - ref)
    assert np.all(psnr(x2, ref) < psnr(x, ref)) and np.all(ssim(x2, ref) < ssim(x, ref))
    assert np.all(nmse(x2, ref) > nmse(x, ref))
    assert psnr(x, ref, data_range=2.0)[0] == pytest.approx(10 * np.log10(4.0 / np.mean((np.abs(x[0]) - ref[0]) ** 2)))


@pytest.mark.parametrize("dtype", [tf.float32, tf.complex64])
def test_tf_versions_agree_with_numpy(rng, dtype):
    x, ref = _pair(rng, n=4, complex_=dtype.is_complex)
    tx, tr = tf.constant(x, dtype), tf.constant(ref, dtype)
    fn = tf.function(lambda a, b: (tf_psnr(a, b), tf_ssim(a, b), tf_nmse(a, b)))
    for p, s, e in ((tf_psnr(tx, tr), tf_ssim(tx, tr), tf_nmse(tx, tr)), fn(tx, tr)):
        assert p.shape == s.shape == e.shape == (4,) and p.dtype == tf.float32
        xs, rs = tx.numpy(), tr.numpy()
        np.testing.assert_allclose(p.numpy(), psnr(xs, rs), atol=1e-4)
        np.testing.assert_allclose(s.numpy(), ssim(xs, rs), atol=1e-4)
        np.testing.assert_allclose(e.numpy(), nmse(xs, rs), rtol=1e-4)


def test_tf_versions_with_unknown_batch_and_size(rng):
    x, ref = _pair(rng, n=2, h=13, w=18)
    spec = tf.TensorSpec([None, None, None], tf.float32)
    fn = tf.function(tf_ssim, input_signature=[spec, spec])
    np.testing.assert_allclose(fn(tf.constant(x, tf.float32), tf.constant(ref, tf.float32)).numpy(), ssim(x, ref), atol=1e-4)


def test_bad_inputs(rng):
    x, ref = _pair(rng)
    with pytest.raises(ValueError, match="same shape"):
        psnr(x, ref[:, :-1])
    with pytest.raises(ValueError, match="same shape"):
        tf_ssim(tf.constant(x), tf.constant(ref[:2]))
    with pytest.raises(ValueError, match="`x`.*NaN"):
        ssim(np.where(x > 0.5, np.nan, x), ref)
    with pytest.raises(ValueError, match="`ref`.*NaN"):
        nmse(x, np.where(ref > 0.5, np.inf, ref))
    with pytest.raises(ValueError, match=r"\(N, H, W\)"):
        psnr(x[None], ref[None])
    with pytest.raises(ValueError, match="all zero"):
        psnr(x, np.zeros_like(ref))
    with pytest.raises(ValueError, match="`win_size`"):
        ssim(x[:, :5, :5], ref[:, :5, :5])
    with pytest.raises(ValueError, match=r"\(B, H, W\)"):
        tf_psnr(tf.constant(x[0]), tf.constant(ref[0]))
    with pytest.raises(ValueError, match="`x`.*numeric"):
        psnr(np.full(x.shape, "a"), ref)
    with pytest.raises(ValueError, match="`ref`.*numeric"):
        nmse(x, np.full(ref.shape, "a"))
