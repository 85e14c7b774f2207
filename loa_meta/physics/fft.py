"""Centred, orthonormal 2D Fourier transforms on the last two axes.

The paper's F in Eq. 1 is "the 2D discrete Fourier transform (DFT) matrix", with no normalisation
stated. We choose the orthonormal (unitary) 2D DFT, so that F^H = F^{-1} and ||F x|| = ||x||, in the
centred convention of fastMRI and most MRI software: k-space DC sits at index (H // 2, W // 2). The
authors' TF1 script uses the uncentred ``tf.fft2d``; the two agree up to a permutation of k-space,
which only matters for how masks are stored (see ``docs/FIDELITY.md``).
"""

from __future__ import annotations

import tensorflow as tf


def _check_complex(x: tf.Tensor, name: str) -> tf.Tensor:
    x = tf.convert_to_tensor(x)
    if not x.dtype.is_complex:
        raise TypeError(
            f"Argument `{name}` must be a complex tensor (complex64/complex128), "
            f"but received dtype: {x.dtype.name}"
        )
    if x.shape.rank is not None and x.shape.rank < 2:
        raise ValueError(
            f"Argument `{name}` must have rank >= 2 (..., H, W), but received shape: {x.shape}"
        )
    return x


def _hw(x: tf.Tensor):
    """(H, W) as Python ints when static (fewer graph ops to trace and differentiate), else tensors."""
    h, w = x.shape[-2], x.shape[-1]
    if h is not None and w is not None:
        return int(h), int(w)
    shape = tf.shape(x)
    return shape[-2], shape[-1]


def _shift(x: tf.Tensor, inverse: bool) -> tf.Tensor:
    """fftshift (inverse=False) or ifftshift (inverse=True) over the last two axes."""
    h, w = _hw(x)
    if inverse:
        shifts = [-(h // 2), -(w // 2)]
    else:
        shifts = [h // 2, w // 2]
    return tf.roll(x, shift=shifts, axis=[-2, -1])


def _scale(x: tf.Tensor, inverse: bool = False) -> tf.Tensor:
    """1/sqrt(H W) (forward) or sqrt(H W) (inverse) in the dtype of ``x``."""
    h, w = _hw(x)
    n = tf.cast(h * w, x.dtype.real_dtype)
    return tf.cast(tf.sqrt(n) if inverse else tf.math.rsqrt(n), x.dtype)


def fft2c(x: tf.Tensor) -> tf.Tensor:
    """Centred orthonormal 2D FFT: ``fftshift(fft2(ifftshift(x)), norm="ortho")``.

    Args:
      x: complex tensor of shape ``(..., H, W)`` (image space, object centred).

    Returns:
      Complex tensor of the same shape and dtype, k-space with DC at ``(H // 2, W // 2)``.
    """
    x = _check_complex(x, "x")
    return _shift(tf.signal.fft2d(_shift(x, inverse=True)), inverse=False) * _scale(x)


def ifft2c(k: tf.Tensor) -> tf.Tensor:
    """Centred orthonormal 2D inverse FFT, the adjoint (and inverse) of :func:`fft2c`.

    Args:
      k: complex tensor of shape ``(..., H, W)``, k-space with DC at ``(H // 2, W // 2)``.

    Returns:
      Complex image tensor of the same shape and dtype.
    """
    k = _check_complex(k, "k")
    return _shift(tf.signal.ifft2d(_shift(k, inverse=True)), inverse=False) * _scale(k, inverse=True)
