"""loa-meta: LOA-induced MRI reconstruction network with bilevel meta-learning.

TensorFlow 2 / Keras 3 implementation of Bian, Chen, Ye, Zhang, "An Optimization-Based
Meta-Learning Model for MRI Reconstruction with Diverse Dataset", J. Imaging 7(11):231, 2021.

Where the paper lives in the package:

* ``loa_meta.physics``  -- Eq. 1-2: centred orthonormal FFT, A = P F, A^H, f, grad f, noise.
* ``loa_meta.sampling`` -- sampling masks P and task specs (``radial:0.2``).
* ``loa_meta.metrics``  -- Eqs. 21-23: PSNR, SSIM, NMSE.
* ``loa_meta.layers``   -- Eqs. 4-10, 19-20 and Algorithm 1 (one phase = ``LOAPhase``).
* ``loa_meta.models``   -- ``LOANet`` (Eq. 11-12) and the ISTA-Net+ baseline.
* ``loa_meta.training`` -- Eqs. 13-18 and Algorithm 2, conventional training, omega adaptation.
* ``loa_meta.data``     -- Section 5.1 slices and the tf.data pipeline.
"""

__version__ = "0.1.0"
