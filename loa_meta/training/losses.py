"""Reconstruction loss of Eqs. 13-14.

l(F(y), x*) = 1/2 ||F(y) - x*||^2 per sample (squared modulus summed over pixels), and
L(theta, omega; B) = sum over tasks and samples of l (Eq. 13 and the definition of L before Eq. 16).

Reductions (``TrainConfig.loss_reduction``):

* ``"sum"`` (the paper's, default): the sum over the batch.
* ``"mean"``: the sum divided by the *global* batch size (the size of B summed over all replicas),
  the usual tf.distribute convention; per-replica losses then add up to the global mean.
* ``"task_norm"`` (beyond the paper): sum_i w_i l_i with w_i proportional to 1 / ||A^H y_i - x*_i||^2,
  the sample's zero-filled error, and scaled to mean 1 over the global batch (so the loss keeps the
  sum's scale and lambda_0 keeps its meaning). Under the paper's sum a 10 % radial slice's squared
  error is about 17x a 40 % slice's at 160x180, so the low-ratio tasks decide theta; with the
  weights each sample counts by its error relative to zero filling. The weights depend only on the
  data (k-space, mask, target), never on the network, and are computed once per global batch
  (:func:`with_loss_weights`) before the batch is split into replicas or micro-batches, so the
  accumulated gradients stay exact. Measured in docs/benchmarks_quality.md 5.10-5.11.
* ``"task_norm_sqrt"`` (beyond the paper): the same with w_i proportional to 1 / ||A^H y_i - x*_i||,
  the square root of ``"task_norm"``'s weights: half-way (in log scale) between the sum, which
  favours the low ratios, and ``"task_norm"``, which favours the high ones. Measured in
  docs/benchmarks_quality.md 5.13.
* ``"task_norm_075"`` (beyond the paper): w_i proportional to 1 / ||A^H y_i - x*_i||^1.5, i.e. the
  power 0.75 of ``"task_norm"``'s weights, between ``"task_norm_sqrt"`` and ``"task_norm"``.
  Measured in docs/benchmarks_quality.md 5.28.
"""

from __future__ import annotations

from typing import Dict

import tensorflow as tf

from loa_meta.validation import check_one_of

REDUCTIONS = ("sum", "mean", "task_norm", "task_norm_sqrt", "task_norm_075")
# The weighted reductions and the power p of their weights 1 / (||A^H y - x*||^2)^p.
WEIGHT_POWERS = {"task_norm": 1.0, "task_norm_sqrt": 0.5, "task_norm_075": 0.75}
LOSS_WEIGHT_KEY = "loss_weight"


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


def is_weighted(reduction: str) -> bool:
    """True for the reductions whose per-sample weights come from :func:`with_loss_weights`."""
    return reduction in WEIGHT_POWERS


def zero_filled_loss_weights(kspace, mask, target, power: float = 1.0) -> tf.Tensor:
    """The ``"task_norm"`` weights of a batch: 1 / (||A^H y_i - x*_i||^2)^power scaled to mean 1.

    Args:
      kspace: complex ``(B, H, W)`` measurements y (centred layout).
      mask: ``(H, W)`` or ``(B, H, W)`` sampling mask.
      target: ``(B, H, W)`` ground truth x*.
      power: 1 for ``"task_norm"``, 0.5 for ``"task_norm_sqrt"``, 0.75 for ``"task_norm_075"`` (``WEIGHT_POWERS``); must be > 0.

    Returns:
      float32 ``(B,)``, mean 1. A sample whose zero-filled error is zero (a full mask) gets the
      weight of an error of 1e-12 times the batch's largest error, so the weights stay finite.
    """
    from loa_meta.physics.operators import SingleCoilOperator

    kspace = tf.convert_to_tensor(kspace)
    if not kspace.dtype.is_complex:
        raise TypeError(f"Argument `kspace` must be complex, but received dtype {kspace.dtype.name}.")
    zf = SingleCoilOperator(mask).zero_filled(kspace)
    err = 2.0 * per_sample_loss(zf, target)
    err = tf.maximum(err, 1e-12 * tf.reduce_max(err) + tf.constant(1e-30, err.dtype))
    w = tf.pow(err, -tf.cast(power, err.dtype))
    return tf.cast(w / tf.reduce_mean(w), tf.float32)


def relative_sample_loss(prediction, kspace, mask, target, power: float = 1.0) -> tf.Tensor:
    """l_i / (l_i of zero filling)^power per sample (l of Eq. 14): a weighted term without the batch scale.

    The held-out loss of a ``"task_norm"`` (power 1) or ``"task_norm_sqrt"`` (power 0.5) run (plateau
    rule and phase acceptance of stair-wise training): it does not depend on how the held-out slices
    are batched.
    """
    from loa_meta.physics.operators import SingleCoilOperator

    per = per_sample_loss(prediction, target)
    zf = SingleCoilOperator(mask).zero_filled(tf.cast(kspace, prediction.dtype))
    ref = per_sample_loss(zf, target)
    return per / tf.pow(tf.maximum(ref, tf.constant(1e-30, ref.dtype)), tf.cast(power, ref.dtype))


def with_loss_weights(batch: Dict[str, tf.Tensor], reduction: str) -> Dict[str, tf.Tensor]:
    """``batch`` plus its ``"loss_weight"`` for the weighted reductions (unchanged otherwise).

    Call it on the *global* batch, before :func:`~loa_meta.training.algorithm2.replica_slice` and
    micro-batching, so that the weights (normalised over the whole batch) are the same however the
    batch is split. A batch that already carries weights is returned as is.
    """
    check_one_of(reduction, "reduction", list(REDUCTIONS))
    if not is_weighted(reduction) or LOSS_WEIGHT_KEY in batch:
        return batch
    out = dict(batch)
    out[LOSS_WEIGHT_KEY] = zero_filled_loss_weights(batch["kspace"], batch["mask"], batch["target"],
                                                    WEIGHT_POWERS[reduction])
    return out


def reconstruction_loss(prediction, target, reduction: str = "sum", global_batch_size=None,
                        weights=None) -> tf.Tensor:
    """L(theta, omega; B) of Eq. 13: the sum (or mean over the global batch) of Eq. 14.

    Args:
      prediction: complex tensor ``(B, H, W)``.
      target: tensor ``(B, H, W)``.
      reduction: ``"sum"`` (paper), ``"mean"``, ``"task_norm"``, ``"task_norm_sqrt"`` or ``"task_norm_075"`` (module docstring).
      global_batch_size: divisor for ``"mean"``; defaults to this batch's size.
      weights: ``(B,)`` per-sample weights; required by the weighted reductions (from
        :func:`with_loss_weights`), not accepted by the other reductions.

    Returns:
      Real scalar.
    """
    check_one_of(reduction, "reduction", list(REDUCTIONS))
    per = per_sample_loss(prediction, target)
    if is_weighted(reduction):
        if weights is None:
            raise ValueError(f'loss_reduction="{reduction}" needs per-sample weights: pass the batch through '
                             "loa_meta.training.losses.with_loss_weights first.")
        return tf.reduce_sum(tf.cast(weights, per.dtype) * per)
    if weights is not None:
        raise ValueError(f"Per-sample weights are only used by loss_reduction in {sorted(WEIGHT_POWERS)}, "
                         f'not "{reduction}".')
    total = tf.reduce_sum(per)
    if reduction == "mean":
        n = tf.shape(per)[0] if global_batch_size is None else global_batch_size
        total = total / tf.cast(n, total.dtype)
    return total


def batch_loss(prediction, batch: Dict[str, tf.Tensor], reduction: str = "sum", global_batch_size=None) -> tf.Tensor:
    """:func:`reconstruction_loss` of ``prediction`` against ``batch["target"]`` with the batch's weights."""
    return reconstruction_loss(prediction, batch["target"], reduction, global_batch_size,
                               batch.get(LOSS_WEIGHT_KEY) if is_weighted(reduction) else None)
