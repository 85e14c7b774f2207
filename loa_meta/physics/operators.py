"""The MRI forward model y = P F x + n (paper Eq. 1) and the data term f (Eq. 2).

Conventions used throughout loa-meta:

* images ``x``: complex64, shape ``(B, H, W)``;
* k-space ``y``: complex64, shape ``(B, H, W)`` on the full centred Cartesian grid, zero where
  not sampled (that is, ``P^T y``; storing the grid keeps the batch rectangular);
* masks: real (float32) 0/1, shape ``(B, H, W)`` or ``(H, W)`` (broadcast over the batch),
  centred layout (DC at ``(H // 2, W // 2)``).

The network only talks to a :class:`LinearOperator` through ``forward``, ``adjoint``,
``data_term``, ``data_grad`` and ``zero_filled``; a multi-coil SENSE operator can be added as
another subclass (``forward = P F S``, ``adjoint = S^H F^H P``) without touching the network.
"""

from __future__ import annotations

import math
from typing import Optional

import tensorflow as tf

from loa_meta.physics.fft import fft2c, ifft2c
from loa_meta.validation import check_in_range


def _sum_hw(t: tf.Tensor) -> tf.Tensor:
    return tf.reduce_sum(t, axis=[-2, -1])


class LinearOperator:
    """Interface of a linear MRI acquisition operator A with data term f(x) = 1/2 ||A x - y||^2.

    Subclasses implement :meth:`forward` and :meth:`adjoint`; everything else follows.
    All reductions are per sample: they sum over the last two (image) axes only.
    """

    def forward(self, x: tf.Tensor) -> tf.Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def adjoint(self, y: tf.Tensor) -> tf.Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def residual(self, x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
        """A x - y."""
        return self.forward(x) - y

    def data_term(self, x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
        """f(x) = 1/2 ||A x - y||^2 per sample; returns a real tensor of shape ``(B,)``."""
        r = self.residual(x, y)
        return 0.5 * _sum_hw(tf.math.real(r) ** 2 + tf.math.imag(r) ** 2)

    def data_grad(self, x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
        """grad f(x) = A^H (A x - y), the Wirtinger gradient w.r.t. (Re x, Im x) as a complex image."""
        return self.adjoint(self.residual(x, y))

    def zero_filled(self, y: tf.Tensor) -> tf.Tensor:
        """Zero-filled reconstruction x_0 = A^H y (paper Section 4.2)."""
        return self.adjoint(y)


class SingleCoilOperator(LinearOperator):
    """Single-coil Cartesian-grid sampling operator A = P F (paper Eq. 1).

    Args:
      mask: real or boolean tensor of 0/1 values, shape ``(H, W)`` or ``(B, H, W)``, centred
        layout. It is cast to the real dtype matching the images it is applied to.
    """

    def __init__(self, mask: tf.Tensor):
        mask = tf.convert_to_tensor(mask)
        if mask.dtype.is_complex:
            raise TypeError("Argument `mask` must be real or bool, but received a complex tensor.")
        if mask.shape.rank is not None and mask.shape.rank not in (2, 3):
            raise ValueError(
                f"Argument `mask` must have shape (H, W) or (B, H, W), but received shape: {mask.shape}"
            )
        self.mask = mask

    def _mask_as(self, dtype: tf.DType) -> tf.Tensor:
        return tf.cast(tf.cast(self.mask, dtype.real_dtype), dtype)

    def forward(self, x: tf.Tensor) -> tf.Tensor:
        """A x = P F x (on the full grid, zeros where unsampled)."""
        x = tf.convert_to_tensor(x)
        return self._mask_as(x.dtype) * fft2c(x)

    def adjoint(self, y: tf.Tensor) -> tf.Tensor:
        """A^H y = F^H P^T y."""
        y = tf.convert_to_tensor(y)
        return ifft2c(self._mask_as(y.dtype) * y)


def check_kspace_mask(kspace: tf.Tensor, mask: tf.Tensor, name: str = "kspace") -> None:
    """Raise ValueError if the static shapes of k-space and mask disagree on (H, W)."""
    ks, ms = tf.TensorShape(kspace.shape), tf.TensorShape(mask.shape)
    if ks.rank is None or ms.rank is None:
        return
    if ks[-2:].is_fully_defined() and ms[-2:].is_fully_defined() and ks[-2:] != ms[-2:]:
        raise ValueError(
            f"`{name}` has image shape {tuple(ks[-2:])} but the mask has shape {tuple(ms[-2:])}; "
            "they must match (H, W)."
        )


def add_kspace_noise(
    y: tf.Tensor,
    mask: tf.Tensor,
    sigma: Optional[float] = None,
    snr_db: Optional[float] = None,
    seed: int = 0,
) -> tf.Tensor:
    """Add circular complex Gaussian noise n (Eq. 1) to the sampled k-space locations.

    Exactly one of ``sigma`` and ``snr_db`` is given. ``sigma`` is the standard deviation of each
    of the real and imaginary parts. With ``snr_db`` the per-sample sigma is chosen so that
    10 log10(mean |y|^2 / mean |n|^2) over sampled locations equals ``snr_db``.

    Args:
      y: complex k-space, shape ``(..., H, W)``.
      mask: 0/1 mask broadcastable to ``y``; noise is added only where it is 1.
      sigma: noise standard deviation per real component, >= 0.
      snr_db: target signal-to-noise ratio in dB.
      seed: integer seed or int scalar tensor (so tf.data can vary it per batch); the noise is a
        deterministic function of (seed, shape).

    Returns:
      Noisy k-space with the same shape and dtype as ``y``.
    """
    if (sigma is None) == (snr_db is None):
        raise ValueError("Give exactly one of `sigma` and `snr_db`.")
    if sigma is not None and not sigma >= 0:
        raise ValueError(f"Argument `sigma` must be >= 0, but received: {sigma}")
    y = tf.convert_to_tensor(y)
    rdt = y.dtype.real_dtype
    m = tf.cast(tf.cast(mask, tf.bool), rdt)
    m = tf.broadcast_to(m, tf.shape(y))
    if sigma is not None:
        s = tf.cast(sigma, rdt)
    else:
        power = _sum_hw(m * (tf.math.real(y) ** 2 + tf.math.imag(y) ** 2)) / tf.maximum(_sum_hw(m), 1.0)
        # mean |n|^2 = 2 sigma^2
        s = tf.sqrt(power / (2.0 * 10.0 ** (tf.cast(snr_db, rdt) / 10.0)))
        s = s[..., tf.newaxis, tf.newaxis]
    if snr_db is not None and not math.isfinite(check_in_range(snr_db, "snr_db")):
        raise ValueError(f"Argument `snr_db` must be a finite number of dB, but received: {snr_db!r}")
    seeds = tf.stack([tf.cast(seed, tf.int64), tf.constant(0, tf.int64)])
    nr = tf.random.stateless_normal(tf.shape(y), seed=seeds, dtype=rdt)
    ni = tf.random.stateless_normal(tf.shape(y), seed=seeds + [0, 1], dtype=rdt)
    return y + tf.complex(s * m * nr, s * m * ni)
