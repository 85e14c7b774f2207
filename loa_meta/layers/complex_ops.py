"""Small complex-dtype helpers shared by the layers."""

import tensorflow as tf


def real_to_complex(v, dtype: tf.DType) -> tf.Tensor:
    """Real tensor -> complex tensor of ``dtype`` with zero imaginary part.

    Same value as ``tf.cast(v, dtype)``, but its gradient is the real part of the incoming complex
    gradient without TensorFlow's "casting complex to float discards the imaginary part" warning,
    which ``tf.cast``'s gradient emits at every step of training.
    """
    v = tf.cast(v, dtype.real_dtype)
    return tf.complex(v, tf.zeros_like(v))
