"""ISTA-Net+ (Zhang & Ghanem, CVPR 2018), complex-valued, as the baseline of Section 5.3 / Table 1.

One phase k of ISTA-Net+ (the "+" variant with the residual D/G convolutions) is

    r_k = x_{k-1} - rho_k A^H (A x_{k-1} - y)                         (gradient step on f)
    x_k = r_k + G_k( F~_k( soft( F_k( D_k(r_k) ), theta_k ) ) )      (learned proximal step)

with ``D_k`` a convolution 1 -> d, ``F_k`` and ``F~_k`` each "conv, ReLU, conv" (d -> d),
``soft`` a soft-thresholding with a learnable threshold ``theta_k``, ``G_k`` a convolution d -> 1,
and x_0 = A^H y (zero filling). All weights are per phase (not shared), as in the original.

The original also trains with the symmetry constraint
``L_constraint = sum_k mean || F~_k(F_k(D_k r_k)) - D_k r_k ||^2`` weighted by
``gamma = 0.01`` (:data:`SYMMETRY_LOSS_WEIGHT`); it is returned per sample by
``ISTANetPlus.reconstruct(..., return_symmetry_loss=True)`` so training code can add it.

Complex-valued adaptation (the paper applies complex convolutions to every CNN, Section 5.2, and
for a fair comparison gives ISTA-Net+ the same phases, kernels and kernel size as LOA):

* convolutions are :class:`loa_meta.layers.complex_conv2d.ComplexConv2D` (two real kernels, no bias);
* ReLU acts on the real and imaginary parts separately (as the complex CNN of LOA does);
* soft-thresholding acts on the complex *magnitude*:
  ``soft(z, theta) = z * max(|z| - theta, 0) / |z|``. This is the proximal operator of the complex
  l1 norm ``sum |z|`` (the function ISTA-Net's sparsity prior is written with), it commutes with a
  global phase rotation of the image (MR images have arbitrary phase) and it reduces exactly to
  the original real ``sign(z) max(|z| - theta, 0)`` when the imaginary part is zero.

References:
  J. Zhang, B. Ghanem, "ISTA-Net: Interpretable Optimization-Inspired Deep Network for Image
  Compressive Sensing", CVPR 2018 (paper ref. [54]).
"""

from __future__ import annotations

from typing import Any, Dict, List, Tuple, Union

import keras
import tensorflow as tf

from loa_meta.layers.complex_conv2d import ComplexConv2D
from loa_meta.physics.operators import SingleCoilOperator, check_kspace_mask
from loa_meta.validation import check_in_range, check_positive, check_positive_int

#: Weight gamma of the symmetry constraint in the original ISTA-Net+ training loss.
SYMMETRY_LOSS_WEIGHT = 0.01

# Below this squared magnitude a feature is treated as exactly zero by the soft threshold
# (avoids 0/0 and the NaN gradient of |z| at z = 0).
_TINY_SQ = 1e-30


def complex_relu(z: tf.Tensor) -> tf.Tensor:
    """ReLU applied to the real and imaginary parts separately."""
    return tf.complex(tf.nn.relu(tf.math.real(z)), tf.nn.relu(tf.math.imag(z)))


def complex_soft_threshold(z: tf.Tensor, theta: tf.Tensor) -> tf.Tensor:
    """Magnitude soft-thresholding ``z * max(|z| - theta, 0) / |z|`` (0 where z = 0).

    Args:
      z: complex tensor.
      theta: real threshold, broadcastable to ``z``.

    Returns:
      Complex tensor like ``z``.
    """
    re, im = tf.math.real(z), tf.math.imag(z)
    sq = re * re + im * im
    nonzero = sq > _TINY_SQ
    mag = tf.sqrt(tf.where(nonzero, sq, tf.ones_like(sq)))
    theta = tf.cast(theta, mag.dtype)
    scale = tf.where(nonzero, tf.nn.relu(mag - theta) / mag, tf.zeros_like(mag))
    return tf.complex(scale * re, scale * im)


@keras.saving.register_keras_serializable(package="loa_meta")
class ISTANetPlus(keras.Model):
    """Complex-valued ISTA-Net+ unrolled network (baseline of the paper's Table 1).

    Args:
      num_phases: number of phases T (the paper's fair comparison uses the LOA network's 11).
      filters: number of feature channels d of every convolution (LOA uses 4).
      kernel_size: spatial size of every (square) convolution kernel (LOA uses 3).
      rho0: initial value of every per-phase step size rho_k (0.5 as in the original code).
      theta0: initial value of every per-phase soft threshold theta_k (0.01 as in the original).
      **kwargs: passed to ``keras.Model`` (e.g. ``name``; ``dtype="float64"`` runs the whole
        network in complex128, used for finite-difference gradient checks).

    Call arguments:
      inputs: dict with ``"kspace"`` (complex64 ``(B, H, W)``, zero where unsampled), ``"mask"``
        (float32 0/1 ``(B, H, W)`` or ``(H, W)``) and optionally ``"task_id"`` (ignored).
      training: unused (no dropout / batch norm).

    Returns:
      complex64 image ``(B, H, W)`` (complex128 when the model dtype is float64).

    Attributes:
      theta_variables: all trainable variables (conv kernels, rho_k, theta_k).
      omega_variables: empty list (no task-specific weights; cf. ``LOANet(use_task_weights=False)``).
    """

    def __init__(
        self,
        num_phases: int = 11,
        filters: int = 4,
        kernel_size: int = 3,
        rho0: float = 0.5,
        theta0: float = 0.01,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_phases = check_positive_int(num_phases, "num_phases")
        self.filters = check_positive_int(filters, "filters")
        self.kernel_size = check_positive_int(kernel_size, "kernel_size")
        self.rho0 = check_positive(rho0, "rho0")
        self.theta0 = check_in_range(theta0, "theta0", low=0.0)

        def conv(n_out: int, label: str, k: int) -> ComplexConv2D:
            return ComplexConv2D(
                n_out, kernel_size=self.kernel_size, name=f"phase{k}_{label}", dtype=self.dtype_policy
            )

        d = self.filters
        # Per phase: D (1->d), F = (conv_f1, ReLU, conv_f2), F~ = (conv_b1, ReLU, conv_b2), G (d->1).
        self.conv_d = [conv(d, "D", k) for k in range(self.num_phases)]
        self.conv_f1 = [conv(d, "F1", k) for k in range(self.num_phases)]
        self.conv_f2 = [conv(d, "F2", k) for k in range(self.num_phases)]
        self.conv_b1 = [conv(d, "Ft1", k) for k in range(self.num_phases)]
        self.conv_b2 = [conv(d, "Ft2", k) for k in range(self.num_phases)]
        self.conv_g = [conv(1, "G", k) for k in range(self.num_phases)]
        self.rho = []
        self.theta = []
        # All weights are independent of the image size, so they are created right away.
        self.build(None)
        # tf.train.Checkpoint does not see inside Keras 3 lists: also expose every layer and scalar
        # weight as a numbered attribute so training checkpoints save and restore all of them.
        for k in range(self.num_phases):
            for label in ("d", "f1", "f2", "b1", "b2", "g"):
                setattr(self, f"conv_{label}_{k}", getattr(self, f"conv_{label}")[k])
            setattr(self, f"rho_{k}", self.rho[k])
            setattr(self, f"theta_{k}", self.theta[k])

    def build(self, input_shape=None):
        d = self.filters
        for k in range(self.num_phases):
            for layer, c_in in (
                (self.conv_d[k], 1),
                (self.conv_f1[k], d),
                (self.conv_f2[k], d),
                (self.conv_b1[k], d),
                (self.conv_b2[k], d),
                (self.conv_g[k], d),
            ):
                if not layer.built:
                    layer.build((None, None, None, c_in))
        while len(self.rho) < self.num_phases:
            k = len(self.rho)
            self.rho.append(
                self.add_weight(
                    name=f"rho_{k}",
                    shape=(),
                    initializer=keras.initializers.Constant(self.rho0),
                    trainable=True,
                )
            )
            self.theta.append(
                self.add_weight(
                    name=f"theta_{k}",
                    shape=(),
                    initializer=keras.initializers.Constant(self.theta0),
                    trainable=True,
                )
            )
        self.built = True

    # ------------------------------------------------------------------ properties
    @property
    def _complex_dtype(self) -> tf.DType:
        return tf.complex128 if self.compute_dtype == "float64" else tf.complex64

    @property
    def theta_variables(self) -> List[keras.Variable]:
        """All trainable variables (ISTA-Net+ has no task-specific parameters)."""
        return list(self.trainable_variables)

    @property
    def omega_variables(self) -> List[keras.Variable]:
        """Empty: ISTA-Net+ has no task-specific weights."""
        return []

    # ------------------------------------------------------------------ forward pass
    def _prox(self, r: tf.Tensor, k: int, with_symmetry: bool) -> Tuple[tf.Tensor, Any]:
        """Learned proximal step of phase k: returns (x_k, symmetry residual or None)."""
        r4 = r[..., tf.newaxis]  # (B, H, W, 1)
        x_d = self.conv_d[k](r4)
        x_forward = self.conv_f2[k](complex_relu(self.conv_f1[k](x_d)))
        z = complex_soft_threshold(x_forward, self.theta[k])
        x_backward = self.conv_b2[k](complex_relu(self.conv_b1[k](z)))
        x_g = self.conv_g[k](x_backward)
        x_new = r + x_g[..., 0]
        if not with_symmetry:
            return x_new, None
        # Symmetry constraint F~(F(D r)) = D r (no thresholding in between).
        sym = self.conv_b2[k](complex_relu(self.conv_b1[k](x_forward))) - x_d
        return x_new, sym

    def reconstruct(
        self,
        kspace: tf.Tensor,
        mask: tf.Tensor,
        task_id: Any = None,
        return_symmetry_loss: bool = False,
        return_intermediates: bool = False,
    ) -> Union[tf.Tensor, Tuple[tf.Tensor, ...]]:
        """Run the T phases on k-space ``y`` sampled with ``mask``.

        Args:
          kspace: complex64 ``(B, H, W)`` on the full centred grid, zero where unsampled.
          mask: 0/1 mask ``(B, H, W)`` or ``(H, W)``.
          task_id: ignored (accepted for interface compatibility with ``LOANet``).
          return_symmetry_loss: also return the per-sample symmetry constraint
            ``sum_k mean_{h,w,c} |F~_k(F_k(D_k r_k)) - D_k r_k|^2``, real ``(B,)``. The original
            training loss is ``mean_b(mse) + SYMMETRY_LOSS_WEIGHT * mean_b(symmetry_loss)``.
          return_intermediates: also return the list ``[x_0, x_1, ..., x_T]``.

        Returns:
          ``x_T`` (complex64 ``(B, H, W)``), followed by the symmetry loss and/or the
          intermediates when requested, in that order.
        """
        del task_id
        kspace = tf.convert_to_tensor(kspace)
        if not kspace.dtype.is_complex:
            raise TypeError(
                "Input `kspace` must be a complex tensor (complex64), but received dtype: "
                f"{kspace.dtype.name}"
            )
        if kspace.shape.rank is not None and kspace.shape.rank != 3:
            raise ValueError(
                f"Input `kspace` must have shape (B, H, W), but received shape: {kspace.shape}"
            )
        kspace = tf.cast(kspace, self._complex_dtype)
        mask = tf.convert_to_tensor(mask)
        check_kspace_mask(kspace, mask)
        op = SingleCoilOperator(mask)

        x = op.zero_filled(kspace)
        xs = [x]
        sym_total = tf.zeros(tf.shape(kspace)[:1], self._complex_dtype.real_dtype)
        for k in range(self.num_phases):
            rho = tf.cast(tf.convert_to_tensor(self.rho[k]), x.dtype.real_dtype)
            grad = op.data_grad(x, kspace)
            r = x - tf.complex(rho * tf.math.real(grad), rho * tf.math.imag(grad))
            x, sym = self._prox(r, k, return_symmetry_loss)
            if return_symmetry_loss:
                sym_total += tf.reduce_mean(
                    tf.math.real(sym) ** 2 + tf.math.imag(sym) ** 2, axis=[1, 2, 3]
                )
            if return_intermediates:
                xs.append(x)

        out = (x,)
        if return_symmetry_loss:
            out += (sym_total,)
        if return_intermediates:
            out += (xs,)
        return out[0] if len(out) == 1 else out

    def call(self, inputs: Dict[str, tf.Tensor], training=None):
        if not isinstance(inputs, dict):
            raise TypeError(
                "ISTANetPlus expects a dict input {'kspace', 'mask'[, 'task_id']}, but received: "
                f"{type(inputs).__name__}"
            )
        for key in ("kspace", "mask"):
            if key not in inputs:
                raise KeyError(f"ISTANetPlus input dict is missing key `{key}`; got keys {sorted(inputs)}")
        return self.reconstruct(inputs["kspace"], inputs["mask"], inputs.get("task_id"))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape["kspace"])

    def get_config(self) -> Dict[str, Any]:
        base = super().get_config()
        base.update(
            {
                "num_phases": self.num_phases,
                "filters": self.filters,
                "kernel_size": self.kernel_size,
                "rho0": self.rho0,
                "theta0": self.theta0,
            }
        )
        return base

    @classmethod
    def from_config(cls, config: Dict[str, Any]) -> "ISTANetPlus":
        return cls(**config)
