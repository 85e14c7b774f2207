"""MRI physics: centred orthonormal FFTs and the sampling operator A = P F (paper Eqs. 1-2)."""

from loa_meta.physics.fft import fft2c, ifft2c
from loa_meta.physics.operators import (
    LinearOperator,
    SingleCoilOperator,
    add_kspace_noise,
)

__all__ = [
    "fft2c",
    "ifft2c",
    "LinearOperator",
    "SingleCoilOperator",
    "add_kspace_noise",
]
