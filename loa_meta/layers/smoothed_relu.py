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
    d = cast_like(delta, x.dtype)
    xc = tf.clip_by_value(x, -d, d)  # keeps the quadratic branch (and its gradients) bounded
    quad = xc * xc / (4.0 * d) + 0.5 * xc + d / 4.0
    return tf.where(x >= d, x, tf.where(x <= -d, tf.zeros_like(x), quad))


def _real_smoothed_relu_derivative(x: tf.Tensor, delta) -> tf.Tensor:
    d = cast_like(delta, x.dtype)
    xc = tf.clip_by_value(x, -d, d)
    return tf.where(x >= d, tf.ones_like(x), tf.where(x <= -d, tf.zeros_like(x), xc / (2.0 * d) + 0.5))


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
