"""Reconstruction loss of Eqs. 13-14.

l(F(y), x*) = 1/2 ||F(y) - x*||^2 per sample (squared modulus summed over pixels), and
L(theta, omega; B) = sum over tasks and samples of l (Eq. 13 and the definition of L before Eq. 16).
With ``reduction="mean"`` the sum is divided by the *global* batch size (the size of B summed over
all replicas), which is the usual tf.distribute convention; per-replica losses then add up to the
global mean. The paper's sum is the default.
"""

from __future__ import annotations

import tensorflow as tf

from loa_meta.validation import check_one_of


def per_sample_loss(prediction: tf.Tensor, target: tf.Tensor) -> tf.Tensor:
    """1/2 ||prediction - target||^2 per sample (Eq. 14).

    Args:
      prediction: complex tensor ``(B, H, W)``.
      target: real or complex tensor ``(B, H, W)``; cast to the prediction dtype.

    Returns:
      Real tensor of shape ``(B,)``.
    """
    prediction = tf.convert_to_tensor(prediction)
    target = tf.cast(target, prediction.dtype)
    r = prediction - target
    if r.dtype.is_complex:
        sq = tf.math.real(r) ** 2 + tf.math.imag(r) ** 2
    else:
        sq = r * r
    return 0.5 * tf.reduce_sum(sq, axis=[-2, -1])


def reconstruction_loss(prediction, target, reduction: str = "sum", global_batch_size=None) -> tf.Tensor:
    """L(theta, omega; B) of Eq. 13: the sum (or mean over the global batch) of Eq. 14.

    Args:
      prediction: complex tensor ``(B, H, W)``.
      target: tensor ``(B, H, W)``.
      reduction: ``"sum"`` (paper) or ``"mean"``.
      global_batch_size: divisor for ``"mean"``; defaults to this batch's size.

    Returns:
      Real scalar.
    """
    check_one_of(reduction, "reduction", ["sum", "mean"])
    per = per_sample_loss(prediction, target)
    total = tf.reduce_sum(per)
    if reduction == "mean":
        n = tf.shape(per)[0] if global_batch_size is None else global_batch_size
        total = total / tf.cast(n, total.dtype)
    return total
