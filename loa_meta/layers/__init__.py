"""Layers of the LOA-induced network: Eq. 19-20 (g), Eqs. 4-5/A2 (r_eps), Algorithm 1 (one phase)."""

from loa_meta.layers.complex_conv2d import ComplexConv2D
from loa_meta.layers.smoothed_relu import SmoothedReLU, smoothed_relu, smoothed_relu_derivative

__all__ = ["ComplexConv2D", "SmoothedReLU", "smoothed_relu", "smoothed_relu_derivative"]
from loa_meta.layers.learned_regularizer import LearnedRegularizer  # noqa: E402

__all__ += ["LearnedRegularizer"]
from loa_meta.layers.loa_phase import LOAPhase  # noqa: E402

__all__ += ["LOAPhase"]
from loa_meta.layers.algorithm1_config import Algorithm1Config  # noqa: E402

__all__ += ["Algorithm1Config"]
