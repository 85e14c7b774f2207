"""The learned regulariser r(x) = ||g(x)||_{2,1} (Eq. 4), its smoothing r_eps (Eq. 5) and the
explicit gradient grad r_eps (Eq. A2) with g the complex CNN of Eq. 19."""

from __future__ import annotations

import keras
import tensorflow as tf

from loa_meta.layers.complex_conv2d import (
    ComplexConv2D,
    from_stacked,
    stacked_conv,
    stacked_conv_transpose,
    to_stacked,
)
from loa_meta.layers.smoothed_relu import cast_like, smoothed_relu, smoothed_relu_derivative
from loa_meta.validation import check_one_of, check_positive, check_positive_int

INIT_MODES = ("random", "tv")


def _layer_initializer(initializer, q: int):
    """Initializer for conv ``q``: an independent copy, so no two same-shaped kernels coincide.

    Keras 3 random initializers fix their seed at construction, so one instance shared by layers
    of the same shape would give them identical kernels (w_2 = w_3 at initialisation). Unseeded
    initializers get a fresh default seed (drawn from Keras' seeded global generator, so
    ``keras.utils.set_random_seed`` keeps runs reproducible); a user seed s becomes ``s + 2 q``
    (``ComplexConv2D`` uses ``s + 2 q + 1`` for the imaginary kernel).
    """
    config = initializer.get_config()
    if "seed" not in config:
        return initializer
    seed = config["seed"]
    return initializer.__class__.from_config({**config, "seed": None if seed is None else int(seed) + 2 * q})


def _per_sample(eps, real_dtype: tf.DType, rank: int) -> tf.Tensor:
    """Scalar or (B,) eps -> tensor broadcastable against a rank-`rank` batch tensor."""
    e = cast_like(eps, real_dtype)
    if e.shape.rank == 0:
        return e
    return tf.reshape(e, [-1] + [1] * (rank - 1))


@keras.saving.register_keras_serializable(package="loa_meta")
class LearnedRegularizer(keras.layers.Layer):
    """Feature extractor g (Eq. 19) with the smoothed l_{2,1} regulariser r_eps (Eq. 5).

    ``g(x) = w_l * phi(... phi(w_2 * phi(w_1 * x)))``: ``num_layers`` bias-free complex 3x3
    convolutions (:class:`ComplexConv2D`), ``filters`` (= d) kernels each, the smoothed ReLU
    (Eq. 20) between convolutions and none after the last. The first layer maps the single complex
    image channel to d channels. ``g_j(x)`` is the d-vector of features at pixel j.

    ``r_eps(x) = sum_j sqrt(||g_j(x)||^2 + eps^2) - eps`` (Eq. 5) and its gradient (Eq. A2)
    ``grad r_eps(x) = sum_j grad g_j(x)^T g_j(x) / sqrt(||g_j(x)||^2 + eps^2)`` is evaluated with
    the explicit chain rule: one forward pass storing the pre-activations, ``h = g / sqrt(|g|^2 +
    eps^2)``, then back through the transposed convolutions (:meth:`ComplexConv2D.transpose`) and
    the activation derivatives. Gradients use the convention ``dr/dRe x + i dr/dIm x``, so they
    add directly to grad f = A^H (A x - y).

    Args:
      num_layers: number of convolutions l (paper: 3).
      filters: kernels per convolution d (paper: 4).
      kernel_size: spatial kernel size (paper: 3).
      delta: smoothed-ReLU parameter (paper: 1e-3).
      kernel_initializer: initializer of the conv kernels (paper: Xavier/Glorot).
      init_mode: ``"random"`` (paper: every kernel drawn from ``kernel_initializer``) or ``"tv"``
        (beyond the paper, :meth:`assign_tv_kernels`): g starts as ``tv_scale`` times the forward
        finite differences (D_h x, D_v x), so r_eps starts as a smoothed isotropic total variation.
      tv_scale: the scale s of the ``"tv"`` start (r_eps(x) = sum_j sqrt(s^2 |D x|_j^2 + eps^2) - eps).
      **kwargs: standard layer arguments; ``dtype="float64"`` runs the layer in complex128.

    Call arguments:
      inputs: complex image ``(B, H, W)``; returns the features ``g(x)``, complex ``(B, H, W, d)``.
    """

    def __init__(
        self,
        num_layers: int = 3,
        filters: int = 4,
        kernel_size: int = 3,
        delta: float = 1e-3,
        kernel_initializer="glorot_uniform",
        init_mode: str = "random",
        tv_scale: float = 1.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.init_mode = check_one_of(init_mode, "init_mode", INIT_MODES)
        self.tv_scale = check_positive(tv_scale, "tv_scale")
        if self.init_mode == "tv" and (filters < 4 or kernel_size < 2):
            raise ValueError(
                f"init_mode='tv' needs filters >= 4 and kernel_size >= 2, but received filters={filters}, "
                f"kernel_size={kernel_size}."
            )
        self.num_layers = check_positive_int(num_layers, "num_layers")
        self.filters = check_positive_int(filters, "filters")
        self.kernel_size = check_positive_int(kernel_size, "kernel_size")
        self.delta = check_positive(delta, "delta")
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        # One attribute per conv (not a list): Keras 3 lists are invisible to tf.train.Checkpoint.
        for q in range(self.num_layers):
            setattr(
                self,
                f"conv_{q}",
                ComplexConv2D(
                    filters=self.filters,
                    kernel_size=self.kernel_size,
                    kernel_initializer=_layer_initializer(self.kernel_initializer, q),
                    dtype=self.dtype_policy,
                    name=f"conv_{q}",
                ),
            )

    @property
    def convs(self):
        """The convolutions w_1, ..., w_l in order."""
        return [getattr(self, f"conv_{q}") for q in range(self.num_layers)]

    def build(self, input_shape=None):
        for q, conv in enumerate(self.convs):
            conv.build((None, None, None, 1 if q == 0 else self.filters))
        if self.init_mode == "tv":
            self.assign_tv_kernels()

    def tv_kernels(self):
        """The real kernels of the ``"tv"`` start, one ``(k, k, c_in, d)`` array per convolution.

        Uses ReLU(a) - ReLU(-a) = a, which holds exactly for the smoothed ReLU of Eq. 20 too
        (phi(a) - phi(-a) = a for every a), so 4 channels carry both signs of both differences:
        layer 1 gives (s D_h x, -s D_h x, s D_v x, -s D_v x); each middle layer maps a pair (p, n)
        of activated channels to (p - n, n - p) = (+, -) of the same difference; the last layer
        gives g_0 = p - n = s D_h x, g_1 = s D_v x and 0 in the other channels. Hence
        ||g_j(x)|| = s |(D x)_j| exactly (forward differences, zero padding at the border).
        With more than 4 kernels the other channels start at 0.1 times ``kernel_initializer``'s
        draw, so they are not all equal (the imaginary kernels start at 0 in the 4-channel block).
        """
        import numpy as np

        k, d, c = self.kernel_size, self.filters, (self.kernel_size - 1) // 2
        out = []
        for q in range(self.num_layers):
            w = np.zeros((k, k, 1 if q == 0 else d, d), np.float32)
            if q == 0:
                dh = np.zeros((k, k), np.float32)
                dh[c, c], dh[c, c + 1] = -self.tv_scale, self.tv_scale
                dv = np.zeros((k, k), np.float32)
                dv[c, c], dv[c + 1, c] = -self.tv_scale, self.tv_scale
                for ch, ker in enumerate((dh, -dh, dv, -dv)):
                    w[:, :, 0, ch] = ker
                if self.num_layers == 1:  # no activation: g = (D_h x, D_v x, 0, ...)
                    w[:, :, 0, 1], w[:, :, 0, 2] = dv, 0.0
                    w[:, :, 0, 3] = 0.0
            elif q < self.num_layers - 1:
                for p, n in ((0, 1), (2, 3)):
                    w[c, c, p, p], w[c, c, n, p] = 1.0, -1.0
                    w[c, c, n, n], w[c, c, p, n] = 1.0, -1.0
            else:
                w[c, c, 0, 0], w[c, c, 1, 0] = 1.0, -1.0
                w[c, c, 2, 1], w[c, c, 3, 1] = 1.0, -1.0
            out.append(w)
        return out

    def assign_tv_kernels(self) -> None:
        """Overwrite the kernels with :meth:`tv_kernels` (plus small random extra channels, d > 4)."""
        import numpy as np

        for q, (conv, w) in enumerate(zip(self.convs, self.tv_kernels())):
            block = np.zeros(w.shape, bool)
            block[:, :, : min(4, w.shape[2]), :4] = True
            for var, base in ((conv.kernel_real, w), (conv.kernel_imag, np.zeros_like(w))):
                rest = 0.1 * np.asarray(var.numpy(), np.float32)
                var.assign(np.where(block, base, rest).astype(var.dtype))

    def _ensure_built(self):
        if not self.built:
            self.build((None, None, None))

    @staticmethod
    def _check_image(x: tf.Tensor) -> tf.Tensor:
        x = tf.convert_to_tensor(x)
        if not x.dtype.is_complex:
            raise TypeError(f"Argument `x` must be a complex image (B, H, W), but received dtype: {x.dtype.name}")
        if x.shape.rank is not None and x.shape.rank != 3:
            raise ValueError(f"Argument `x` must have shape (B, H, W), but received shape: {x.shape}")
        return x

    def _forward(self, x, kernels=None):
        """(pre-activations of layers 1..l-1, g(x)), all as stacked real ``[Re, Im]`` channels.

        The split activation acts on real and imaginary parts separately, so the whole network runs
        on real tensors of 2 d channels (half the graph ops of converting to complex and back
        around every convolution). ``kernels``: the convolutions' block kernels if already built.
        """
        self._ensure_built()
        x = self._check_image(x)
        if kernels is None:
            kernels = self.block_kernels(x.dtype.real_dtype)
        z = to_stacked(x[..., tf.newaxis])
        pre = []
        for q, kernel in enumerate(kernels):
            p = stacked_conv(z, kernel)
            if q < self.num_layers - 1:
                pre.append(p)
                z = smoothed_relu(p, self.delta)
            else:
                z = p
        return pre, z

    def block_kernels(self, real_dtype: tf.DType = tf.float32):
        """The block kernels of the convolutions (:meth:`ComplexConv2D.block_kernel`), in order."""
        self._ensure_built()
        return [conv.block_kernel(real_dtype) for conv in self.convs]

    def features(self, x: tf.Tensor) -> tf.Tensor:
        """g(x): complex ``(B, H, W, d)``."""
        return from_stacked(self._forward(x)[1])

    def call(self, inputs):
        return self.features(inputs)

    @staticmethod
    def _root(g, eps):
        """sqrt(||g_j||^2 + eps^2) per pixel from stacked features, shape (B, H, W, 1)."""
        e = _per_sample(eps, g.dtype, 4)
        return tf.sqrt(tf.reduce_sum(g * g, axis=-1, keepdims=True) + e * e), e

    def _value_from_features(self, g, eps):
        s, e = self._root(g, eps)
        return tf.reduce_sum(s - e, axis=[1, 2, 3]), s

    def value(self, x: tf.Tensor, eps, kernels=None) -> tf.Tensor:
        """r_eps(x) of Eq. 5 per sample, real ``(B,)``; ``eps`` is a scalar or ``(B,)``; ``kernels``
        as in :meth:`value_and_grad`."""
        return self._value_from_features(self._forward(x, kernels)[1], eps)[0]

    def value_and_grad(self, x: tf.Tensor, eps, kernels=None):
        """(r_eps(x) ``(B,)``, grad r_eps(x) complex ``(B, H, W)``) sharing one forward pass.

        ``kernels``: the block kernels (:meth:`block_kernels`) when the caller evaluates the
        regulariser several times with the same weights (each evaluation builds them otherwise).
        """
        x = self._check_image(x)
        if kernels is None:
            kernels = self.block_kernels(x.dtype.real_dtype)
        pre, g = self._forward(x, kernels)
        v, s = self._value_from_features(g, eps)
        d = stacked_conv_transpose(g / s, kernels[-1])
        for q in range(self.num_layers - 2, -1, -1):
            # split activation: the Jacobian is diagonal in (Re, Im), i.e. element-wise here
            d = stacked_conv_transpose(d * smoothed_relu_derivative(pre[q], self.delta), kernels[q])
        return v, from_stacked(d)[..., 0]

    def grad(self, x: tf.Tensor, eps) -> tf.Tensor:
        """grad r_eps(x) (Eq. A2) as ``dr/dRe x + i dr/dIm x``, complex ``(B, H, W)``."""
        return self.value_and_grad(x, eps)[1]

    def compute_output_shape(self, input_shape):
        return tuple(input_shape) + (self.filters,)

    def get_config(self):
        return {
            **super().get_config(),
            "num_layers": self.num_layers,
            "filters": self.filters,
            "kernel_size": self.kernel_size,
            "delta": self.delta,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "init_mode": self.init_mode,
            "tv_scale": self.tv_scale,
        }
