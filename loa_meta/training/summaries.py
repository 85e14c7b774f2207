"""TensorBoard summaries: separate train and val writers under ``workdir/tb/{train,val}``."""

from __future__ import annotations

import os
from typing import Dict

import tensorflow as tf

try:  # Eqs. 21-22 from the metrics module.
    from loa_meta.metrics import tf_psnr as _tf_psnr  # type: ignore
    from loa_meta.metrics import tf_ssim as _tf_ssim  # type: ignore
except Exception:  # pragma: no cover - depends on the metrics module
    _tf_psnr = _tf_ssim = None


def batch_ssim(x: tf.Tensor, ref: tf.Tensor) -> tf.Tensor:
    """Per-sample SSIM (Eq. 22) via ``loa_meta.metrics.tf_ssim``; NaN when unavailable."""
    if _tf_ssim is None:
        return tf.fill(tf.shape(x)[:1], float("nan"))
    return tf.reshape(tf.cast(_tf_ssim(x, ref), tf.float32), [-1])


def batch_psnr(x: tf.Tensor, ref: tf.Tensor) -> tf.Tensor:
    """Per-sample PSNR (Eq. 21: peak = max |x*|, MSE over pixels) of complex images, shape (B,).

    Uses ``loa_meta.metrics.tf_psnr`` when available, else this in-graph version.
    """
    if _tf_psnr is not None:
        try:
            return tf.reshape(tf.cast(_tf_psnr(x, ref), tf.float32), [-1])
        except Exception:  # pragma: no cover - signature mismatch: fall back
            pass
    x = tf.cast(tf.abs(x), tf.float32)
    ref = tf.cast(tf.abs(tf.cast(ref, tf.complex64)), tf.float32)
    mse = tf.reduce_mean(tf.square(x - ref), axis=[-2, -1])
    peak = tf.reduce_max(ref, axis=[-2, -1])
    return 20.0 * tf.math.log(peak / tf.sqrt(tf.maximum(mse, 1e-20))) / tf.math.log(10.0)


def _to_image(x: tf.Tensor) -> tf.Tensor:
    """|x| scaled to [0, 1] per image, shape (B, H, W, 1)."""
    a = tf.abs(tf.cast(x, tf.complex64))
    a = a / tf.maximum(tf.reduce_max(a, axis=[-2, -1], keepdims=True), 1e-12)
    return a[..., tf.newaxis]


class Summaries:
    """Scalar and image summaries for training.

    Args:
      workdir: run directory; writers go to ``workdir/tb/train`` and ``workdir/tb/val``.
      enabled: when False every call is a no-op (benchmarks).
    """

    def __init__(self, workdir: str, enabled: bool = True):
        self.enabled = enabled
        if enabled:
            self.train = tf.summary.create_file_writer(os.path.join(workdir, "tb", "train"))
            self.val = tf.summary.create_file_writer(os.path.join(workdir, "tb", "val"))

    def scalars(self, which: str, values: Dict[str, float], step: int):
        if not self.enabled:
            return
        w = self.train if which == "train" else self.val
        with w.as_default(step=step):
            for k, v in values.items():
                tf.summary.scalar(k, v)

    def model_scalars(self, model, step: int):
        """sigma(omega_i) per task, alpha/tau per phase and eps_0 when the model exposes them."""
        if not self.enabled:
            return
        vals = {}
        n = int(getattr(model, "num_tasks", 0) or 0)
        if hasattr(model, "kappa"):
            for i in range(n):
                try:
                    vals[f"kappa/task_{i}"] = float(tf.reshape(model.kappa(i), [-1])[0])
                except Exception:
                    break
        for v in model.theta_variables:
            name = v.path if hasattr(v, "path") else v.name
            if int(tf.size(v)) == 1:  # step sizes alpha_t, tau_t and eps_0 are scalars
                vals["params/" + name.replace(":", "_")] = float(tf.reshape(v, [-1])[0])
        self.scalars("train", vals, step)

    def images(self, batch: Dict[str, tf.Tensor], recon: tf.Tensor, step: int, max_outputs: int = 2):
        if not self.enabled:
            return
        from loa_meta.physics.operators import SingleCoilOperator

        zf = SingleCoilOperator(batch["mask"]).zero_filled(tf.cast(batch["kspace"], tf.complex64))
        ref = tf.cast(batch["target"], tf.complex64)
        err = tf.abs(tf.cast(recon, tf.complex64) - ref)
        with self.val.as_default(step=step):
            tf.summary.image("zero_filled", _to_image(zf), max_outputs=max_outputs)
            tf.summary.image("reconstruction", _to_image(recon), max_outputs=max_outputs)
            tf.summary.image("reference", _to_image(ref), max_outputs=max_outputs)
            tf.summary.image("error_map", _to_image(tf.cast(err, tf.complex64)), max_outputs=max_outputs)

    def flush(self):
        if self.enabled:
            self.train.flush()
            self.val.flush()
