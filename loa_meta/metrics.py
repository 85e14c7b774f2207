"""Image quality metrics of the paper's Section 5.2: PSNR (Eq. 21), SSIM (Eq. 22), NMSE (Eq. 23).

All metrics compare magnitude images: complex inputs are replaced by their absolute value. They
are computed per slice: an ``(H, W)`` input gives a float, an ``(N, H, W)`` input an array ``(N,)``.
The reconstruction ``x`` comes first and the ground truth ``ref`` (the paper's ``x*``) second.

* PSNR = 20 log10(max|ref| / sqrt(MSE)), MSE = mean |x - ref|^2 (Eq. 21).
* SSIM with k1 = 0.01, k2 = 0.03, L = max|ref| (Eq. 22), local statistics over 7x7 uniform
  windows with the sample (N-1) covariance normalisation, averaged over all windows that fit
  inside the image. This is exactly ``skimage.metrics.structural_similarity(ref, x,
  data_range=max|ref|)`` with its defaults, which fastMRI uses too (see ``docs/metrics.md``).
* NMSE = ||x - ref||^2 / ||ref||^2 (Eq. 23 with the reference in the denominator, as in the
  authors' code and fastMRI; the paper prints ||x||^2, see ``docs/fidelity/foundation.md``).

``tf_psnr``, ``tf_ssim`` and ``tf_nmse`` are TensorFlow versions for ``(B, H, W)`` tensors that
return ``(B,)`` float32, work inside ``tf.function`` and agree with the NumPy versions.
"""

from __future__ import annotations

from typing import Optional, Tuple, Union

import numpy as np
import tensorflow as tf

SSIM_K1 = 0.01
SSIM_K2 = 0.03
SSIM_WIN = 7

ArrayOrFloat = Union[float, np.ndarray]


def _prepare(x, ref) -> Tuple[np.ndarray, np.ndarray, bool]:
    """Magnitudes as float64 (N, H, W) and whether the input was a single (H, W) slice."""
    arrays = []
    for name, a in (("x", x), ("ref", ref)):
        a = np.asarray(a)
        if not (np.issubdtype(a.dtype, np.number) or a.dtype == bool):
            raise ValueError(f"Argument `{name}` must be a real or complex numeric array, but received dtype: {a.dtype}")
        arrays.append(np.abs(a).astype(np.float64))
    x, ref = arrays
    if x.shape != ref.shape:
        raise ValueError(
            f"Arguments `x` and `ref` must have the same shape, but received: {x.shape} and {ref.shape}"
        )
    if x.ndim not in (2, 3):
        raise ValueError(f"Arguments `x` and `ref` must have shape (H, W) or (N, H, W), but received: {x.shape}")
    for name, a in (("x", x), ("ref", ref)):
        if not np.all(np.isfinite(a)):
            raise ValueError(f"Argument `{name}` contains NaN or infinite values.")
    single = x.ndim == 2
    if single:
        x, ref = x[None], ref[None]
    return x, ref, single


def _peak(ref: np.ndarray, data_range: Optional[float]) -> np.ndarray:
    if data_range is not None:
        dr = float(data_range)
        if not dr > 0:
            raise ValueError(f"Argument `data_range` must be > 0, but received: {data_range!r}")
        return np.full(ref.shape[0], dr)
    peak = ref.max(axis=(-2, -1))
    if np.any(peak <= 0):
        bad = np.flatnonzero(peak <= 0).tolist()
        raise ValueError(f"Argument `ref` is all zero in slice(s) {bad}; the peak max|ref| must be > 0 (or pass `data_range`).")
    return peak


def _out(v: np.ndarray, single: bool) -> ArrayOrFloat:
    return float(v[0]) if single else v


def psnr(x, ref, data_range: Optional[float] = None) -> ArrayOrFloat:
    """Peak signal-to-noise ratio in dB (paper Eq. 21), peak = max|ref| per slice.

    Args:
      x: reconstruction, real or complex, ``(H, W)`` or ``(N, H, W)``.
      ref: ground truth of the same shape.
      data_range: optional fixed peak instead of max|ref|.

    Returns:
      float for one slice, else array ``(N,)``; ``inf`` where ``x == ref``.
    """
    x, ref, single = _prepare(x, ref)
    peak = _peak(ref, data_range)
    mse = np.mean((x - ref) ** 2, axis=(-2, -1))
    with np.errstate(divide="ignore"):
        v = 10.0 * np.log10(peak**2 / mse)
    return _out(v, single)


def nmse(x, ref) -> ArrayOrFloat:
    """Normalised mean squared error ||x - ref||^2 / ||ref||^2 (paper Eq. 23, reference-normalised).

    Args:
      x: reconstruction, real or complex, ``(H, W)`` or ``(N, H, W)``.
      ref: ground truth of the same shape (not all zero).
    """
    x, ref, single = _prepare(x, ref)
    den = np.sum(ref**2, axis=(-2, -1))
    if np.any(den <= 0):
        raise ValueError(f"Argument `ref` is all zero in slice(s) {np.flatnonzero(den <= 0).tolist()}; NMSE is undefined.")
    return _out(np.sum((x - ref) ** 2, axis=(-2, -1)) / den, single)


def _box_mean_valid(a: np.ndarray, k: int) -> np.ndarray:
    """Mean over every k x k window fully inside the image (N, H, W) -> (N, H-k+1, W-k+1)."""
    c = np.cumsum(np.cumsum(a, axis=-2), axis=-1)
    c = np.pad(c, ((0, 0), (1, 0), (1, 0)))
    s = c[:, k:, k:] - c[:, :-k, k:] - c[:, k:, :-k] + c[:, :-k, :-k]
    return s / (k * k)


def ssim(x, ref, data_range: Optional[float] = None, win_size: int = SSIM_WIN) -> ArrayOrFloat:
    """Structural similarity (paper Eq. 22), k1 = 0.01, k2 = 0.03, L = max|ref| per slice.

    Args:
      x: reconstruction, real or complex, ``(H, W)`` or ``(N, H, W)``.
      ref: ground truth of the same shape.
      data_range: optional fixed L instead of max|ref|.
      win_size: odd side of the uniform window (default 7, as scikit-image and fastMRI).
    """
    s = ssim_map(x, ref, data_range=data_range, win_size=win_size)
    return float(s.mean()) if s.ndim == 2 else s.mean(axis=(-2, -1))


def ssim_map(x, ref, data_range: Optional[float] = None, win_size: int = SSIM_WIN) -> np.ndarray:
    """The SSIM of every ``win_size`` x ``win_size`` window that fits inside the image; :func:`ssim`
    is its mean. Entry ``[i, j]`` belongs to the window whose top-left pixel is ``(i, j)``, i.e.
    centred on pixel ``(i + win_size // 2, j + win_size // 2)``; it equals scikit-image's
    ``structural_similarity(ref, x, data_range=max|ref|, full=True)[1]`` with ``win_size // 2``
    pixels cropped on every side (scikit-image pads the map there and leaves those pixels out of its
    mean too). Where in the image a reconstruction loses SSIM: ``docs/metrics.md``.

    Returns:
      ``(H - win_size + 1, W - win_size + 1)`` for an ``(H, W)`` input, else ``(N, ...)`` float64.
    """
    x, ref, single = _prepare(x, ref)
    if win_size < 2 or win_size % 2 == 0 or win_size > min(x.shape[-2:]):
        raise ValueError(
            f"Argument `win_size` must be odd, >= 3 and <= min(H, W) = {min(x.shape[-2:])}, but received: {win_size}"
        )
    L = _peak(ref, data_range)[:, None, None]
    c1, c2 = (SSIM_K1 * L) ** 2, (SSIM_K2 * L) ** 2
    n = win_size * win_size
    cov_norm = n / (n - 1.0)
    ux, uy = _box_mean_valid(x, win_size), _box_mean_valid(ref, win_size)
    uxx, uyy = _box_mean_valid(x * x, win_size), _box_mean_valid(ref * ref, win_size)
    uxy = _box_mean_valid(x * ref, win_size)
    vx, vy, vxy = cov_norm * (uxx - ux * ux), cov_norm * (uyy - uy * uy), cov_norm * (uxy - ux * uy)
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux**2 + uy**2 + c1) * (vx + vy + c2))
    return s[0] if single else s


# ----------------------------------------------------------------------------- TensorFlow


def _tf_prepare(x, ref) -> Tuple[tf.Tensor, tf.Tensor]:
    x, ref = tf.convert_to_tensor(x), tf.convert_to_tensor(ref)
    if x.shape.rank is not None and ref.shape.rank is not None:
        if not x.shape.is_compatible_with(ref.shape):
            raise ValueError(
                f"Arguments `x` and `ref` must have the same shape, but received: {x.shape} and {ref.shape}"
            )
        if x.shape.rank != 3:
            raise ValueError(f"Arguments `x` and `ref` must have shape (B, H, W), but received: {x.shape}")

    def mag(t):
        return tf.cast(tf.abs(t), tf.float64)

    return mag(x), mag(ref)


def tf_psnr(x, ref) -> tf.Tensor:
    """TensorFlow PSNR (Eq. 21) of ``(B, H, W)`` real or complex tensors; returns float32 ``(B,)``."""
    x, ref = _tf_prepare(x, ref)
    mse = tf.reduce_mean(tf.square(x - ref), axis=[-2, -1])
    peak = tf.reduce_max(ref, axis=[-2, -1])
    return tf.cast(10.0 * tf.math.log(tf.square(peak) / mse) / tf.math.log(tf.constant(10.0, tf.float64)), tf.float32)


def tf_nmse(x, ref) -> tf.Tensor:
    """TensorFlow NMSE ||x - ref||^2 / ||ref||^2 (Eq. 23); returns float32 ``(B,)``."""
    x, ref = _tf_prepare(x, ref)
    return tf.cast(
        tf.reduce_sum(tf.square(x - ref), axis=[-2, -1]) / tf.reduce_sum(tf.square(ref), axis=[-2, -1]), tf.float32
    )


def tf_ssim(x, ref, win_size: int = SSIM_WIN) -> tf.Tensor:
    """TensorFlow SSIM (Eq. 22), same definition as :func:`ssim`; returns float32 ``(B,)``."""
    x, ref = _tf_prepare(x, ref)
    L = tf.reduce_max(ref, axis=[-2, -1])[:, None, None]
    c1, c2 = tf.square(SSIM_K1 * L), tf.square(SSIM_K2 * L)
    n = float(win_size * win_size)
    cov_norm = n / (n - 1.0)

    def box(t):
        return tf.nn.avg_pool2d(t[..., None], ksize=win_size, strides=1, padding="VALID")[..., 0]

    ux, uy = box(x), box(ref)
    uxx, uyy, uxy = box(x * x), box(ref * ref), box(x * ref)
    vx, vy, vxy = cov_norm * (uxx - ux * ux), cov_norm * (uyy - uy * uy), cov_norm * (uxy - ux * uy)
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux**2 + uy**2 + c1) * (vx + vy + c2))
    return tf.cast(tf.reduce_mean(s, axis=[-2, -1]), tf.float32)
