"""Complex-valued 2D convolution without bias (paper Eq. 19, Section 5.2 "complex convolutions [66]")."""

from __future__ import annotations

import keras
import tensorflow as tf

from loa_meta.validation import check_positive_int


def _independent_copy(initializer):
    """A copy of a seeded Keras initializer that draws different values.

    Keras 3 random initializers fix their seed at construction, so calling the same instance twice
    returns the same tensor; the imaginary kernel would then equal the real one. The copy gets a new
    default seed (itself drawn from Keras' seeded global generator, so runs stay reproducible under
    ``keras.utils.set_random_seed``), or ``seed + 1`` if the user fixed a seed.
    """
    config = initializer.get_config()
    if "seed" not in config:
        return initializer
    seed = config["seed"]
    return initializer.__class__.from_config({**config, "seed": None if seed is None else int(seed) + 1})


def to_stacked(z: tf.Tensor) -> tf.Tensor:
    """Complex ``(..., C)`` -> real ``(..., 2 C)``: the channels ``[Re z, Im z]``."""
    return tf.concat([tf.math.real(z), tf.math.imag(z)], axis=-1)


def from_stacked(x: tf.Tensor) -> tf.Tensor:
    """Real stacked ``(..., 2 C)`` -> complex ``(..., C)`` (inverse of :func:`to_stacked`)."""
    re, im = tf.split(x, 2, axis=-1)
    return tf.complex(re, im)


def stacked_conv(x: tf.Tensor, block_kernel: tf.Tensor) -> tf.Tensor:
    """The complex convolution on stacked real channels (``ComplexConv2D.block_kernel``)."""
    return tf.nn.conv2d(x, block_kernel, strides=1, padding="SAME")


def stacked_conv_transpose(x: tf.Tensor, block_kernel: tf.Tensor) -> tf.Tensor:
    """The adjoint of :func:`stacked_conv` (``(B, H, W, 2 F)`` -> ``(B, H, W, 2 C_in)``).

    The output shape is a constant when ``x``'s shape is static (fewer graph ops to trace and
    differentiate), else computed from ``tf.shape(x)``.
    """
    cin2 = int(block_kernel.shape[-2])
    if x.shape[:3].is_fully_defined():
        out_shape = x.shape[:3].as_list() + [cin2]
    else:
        shape = tf.shape(x)
        out_shape = tf.stack([shape[0], shape[1], shape[2], cin2])
    return tf.nn.conv2d_transpose(x, block_kernel, out_shape, strides=1, padding="SAME")


@keras.saving.register_keras_serializable(package="loa_meta")
class ComplexConv2D(keras.layers.Layer):
    """Complex 2D convolution ``w * z`` with ``w = w_r + i w_i`` and no bias, 'same' padding.

    The complex kernel is stored as two real variables ``kernel_real`` and ``kernel_imag`` of
    shape ``(k, k, C_in, filters)``. With ``z = a + i b`` the output is
    ``(w_r * a - w_i * b) + i (w_r * b + w_i * a)``. Internally the four real convolutions are
    fused into one real convolution of the stacked ``[a, b]`` channels with the block kernel
    ``[[w_r, w_i], [-w_i, w_r]]`` (rows: input a/b, columns: output real/imag); the helpers
    :func:`stacked_conv` / :func:`stacked_conv_transpose` apply it to such stacked real tensors. As in Keras,
    "convolution" means cross-correlation (kernel not flipped); the learned kernel absorbs the
    difference.

    Args:
      filters: number of output complex channels (d in the paper, default 4).
      kernel_size: odd or even spatial kernel size (int), default 3.
      kernel_initializer: initializer of both real kernels, default Glorot (Xavier) uniform
        (Section 4.2).
      **kwargs: standard layer arguments (``name``, ``dtype``: the weight dtype, float32 by default;
        pass ``dtype="float64"`` to run in complex128, e.g. for gradient checks).

    Call arguments:
      inputs: complex tensor ``(B, H, W, C_in)`` (complex64, or complex128 with a float64 layer).

    Returns:
      Complex tensor ``(B, H, W, filters)`` of the input dtype.

    References:
      Trabelsi et al., "Deep Complex Networks", ICLR 2018 (ref. [66] of the paper).
    """

    def __init__(self, filters: int = 4, kernel_size: int = 3, kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        self.filters = check_positive_int(filters, "filters")
        self.kernel_size = check_positive_int(kernel_size, "kernel_size")
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def build(self, input_shape):
        cin = input_shape[-1]
        if cin is None:
            raise ValueError(
                "ComplexConv2D needs a known channel dimension, but received input shape: "
                f"{input_shape}"
            )
        shape = (self.kernel_size, self.kernel_size, int(cin), self.filters)
        self.kernel_real = self.add_weight(
            name="kernel_real", shape=shape, initializer=self.kernel_initializer, trainable=True
        )
        self.kernel_imag = self.add_weight(
            name="kernel_imag", shape=shape, initializer=_independent_copy(self.kernel_initializer), trainable=True
        )

    # -- helpers -------------------------------------------------------------------------
    def block_kernel(self, real_dtype: tf.DType = tf.float32) -> tf.Tensor:
        """The real block kernel ``[[w_r, w_i], [-w_i, w_r]]``, ``(k, k, 2 C_in, 2 filters)``.

        It maps stacked ``[Re z, Im z]`` channels to stacked ``[Re w*z, Im w*z]`` channels
        (:func:`stacked_conv`); build it once and reuse it for several convolutions.
        """
        wr = tf.cast(tf.convert_to_tensor(self.kernel_real), real_dtype)
        wi = tf.cast(tf.convert_to_tensor(self.kernel_imag), real_dtype)
        top = tf.concat([wr, wi], axis=-1)  # input a -> (real, imag)
        bottom = tf.concat([-wi, wr], axis=-1)  # input b -> (real, imag)
        return tf.concat([top, bottom], axis=-2)  # (k, k, 2 Cin, 2 F)

    @staticmethod
    def _check_input(z: tf.Tensor, name: str) -> tf.Tensor:
        z = tf.convert_to_tensor(z)
        if not z.dtype.is_complex:
            raise TypeError(f"Argument `{name}` must be complex (B, H, W, C), but received dtype: {z.dtype.name}")
        if z.shape.rank is not None and z.shape.rank != 4:
            raise ValueError(f"Argument `{name}` must have rank 4 (B, H, W, C), but received shape: {z.shape}")
        return z

    def call(self, inputs):
        z = self._check_input(inputs, "inputs")
        return from_stacked(stacked_conv(to_stacked(z), self.block_kernel(z.dtype.real_dtype)))

    def transpose(self, z: tf.Tensor) -> tf.Tensor:
        """Adjoint of the convolution as a real-linear map w.r.t. Re<a, b> (= the complex adjoint).

        Args:
          z: complex tensor ``(B, H, W, filters)``.

        Returns:
          Complex tensor ``(B, H, W, C_in)`` such that ``Re<conv(x), z> = Re<x, transpose(z)>``.
        """
        z = self._check_input(z, "z")
        return from_stacked(stacked_conv_transpose(to_stacked(z), self.block_kernel(z.dtype.real_dtype)))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.filters,)

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
            "kernel_size": self.kernel_size,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
        }
