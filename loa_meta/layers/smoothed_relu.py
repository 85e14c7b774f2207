"""Smoothed rectified linear unit (paper Eq. 20) and its derivative."""

from __future__ import annotations

import keras
import tensorflow as tf

from loa_meta.validation import check_positive


def cast_like(value, dtype: tf.DType) -> tf.Tensor:
    """Python numbers go straight to ``dtype`` (tf.cast of a Python float rounds through float32)."""
    if isinstance(value, (tf.Tensor, tf.Variable)) or hasattr(value, "dtype"):
        return tf.cast(value, dtype)
    return tf.constant(value, dtype)


def _real_smoothed_relu(x: tf.Tensor, delta) -> tf.Tensor:
    # (max(x, -d) + d)^2 / (4 d) is the quadratic piece x^2/(4d) + x/2 + d/4 and exactly 0 for x <= -d;
    # few ops, since the network's graph (and its second-order gradient) repeats this many times
    d = cast_like(delta, x.dtype)
    return tf.where(x >= d, x, tf.square(tf.maximum(x, -d) + d) / (4.0 * d))


def _real_smoothed_relu_derivative(x: tf.Tensor, delta) -> tf.Tensor:
    # (clip(x, -d, d) + d) / (2 d): exactly 0 below -d and exactly 1 above d
    d = cast_like(delta, x.dtype)
    return (tf.clip_by_value(x, -d, d) + d) / (2.0 * d)


def smoothed_relu(x: tf.Tensor, delta: float = 1e-3) -> tf.Tensor:
    """Smoothed ReLU of Eq. 20, element-wise.

    phi(x) = 0 for x <= -delta, x^2/(4 delta) + x/2 + delta/4 for |x| < delta, x for x >= delta.
    phi is C^1 (continuous value and slope at +-delta). For complex input the rule
    ``phi(a + i b) = phi(a) + i phi(b)`` is used (split activation as in complex-valued CNNs [66]
    and the authors' code).

    Args:
      x: real or complex tensor.
      delta: smoothing half-width delta > 0 (paper: 1e-3).

    Returns:
      Tensor of the same shape and dtype as ``x``.
    """
    x = tf.convert_to_tensor(x)
    if x.dtype.is_complex:
        return tf.complex(_real_smoothed_relu(tf.math.real(x), delta), _real_smoothed_relu(tf.math.imag(x), delta))
    return _real_smoothed_relu(x, delta)


def smoothed_relu_derivative(x: tf.Tensor, delta: float = 1e-3) -> tf.Tensor:
    """Derivative phi'(x) of :func:`smoothed_relu`, element-wise.

    For complex ``x = a + i b`` it returns ``phi'(a) + i phi'(b)``: the real part is the derivative
    of the real output w.r.t. ``a`` and the imaginary part that of the imaginary output w.r.t. ``b``
    (the split activation is diagonal in (real, imag)).

    Args:
      x: real or complex tensor.
      delta: smoothing half-width delta > 0.

    Returns:
      Tensor of the same shape and dtype as ``x``.
    """
    x = tf.convert_to_tensor(x)
    if x.dtype.is_complex:
        return tf.complex(
            _real_smoothed_relu_derivative(tf.math.real(x), delta),
            _real_smoothed_relu_derivative(tf.math.imag(x), delta),
        )
    return _real_smoothed_relu_derivative(x, delta)


@keras.saving.register_keras_serializable(package="loa_meta")
class SmoothedReLU(keras.layers.Layer):
    """Layer form of the smoothed ReLU (Eq. 20); complex inputs are activated part-wise.

    Args:
      delta: smoothing half-width delta > 0 (paper Section 4.1: 1e-3).
      **kwargs: standard layer arguments.

    Call arguments:
      inputs: real or complex tensor of any shape.

    Returns:
      Tensor of the same shape and dtype.
    """

    def __init__(self, delta: float = 1e-3, **kwargs):
        super().__init__(**kwargs)
        self.delta = check_positive(delta, "delta")

    def call(self, inputs):
        return smoothed_relu(inputs, self.delta)

    def derivative(self, inputs):
        """phi'(inputs), see :func:`smoothed_relu_derivative`."""
        return smoothed_relu_derivative(inputs, self.delta)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "delta": self.delta}
