"""Loading user k-space (.npz or .mat) into the loa-meta conventions.

A file holds ``kspace`` (complex, ``(H, W)`` or ``(N, H, W)``), ``mask`` (0/1, ``(H, W)`` or the
k-space's shape) and optionally ``target`` (the reference image, same shape as ``kspace``).
k-space is returned centred (DC at ``(H // 2, W // 2)``) as complex64 with values outside the mask set
to zero, the mask as float32 0/1, the target as complex64.
"""

from __future__ import annotations

import dataclasses
import os
import zipfile
from typing import Optional

import numpy as np
from absl import logging

__all__ = ["KSpaceData", "KSpaceFileError", "load_kspace"]


class KSpaceFileError(ValueError):
    """A k-space file is missing, unreadable or inconsistent; the message names the file."""


@dataclasses.dataclass
class KSpaceData:
    """Validated k-space from a file.

    Attributes:
      kspace: complex64 ``(N, H, W)`` centred, zero outside the mask.
      mask: float32 ``(N, H, W)`` or ``(H, W)`` 0/1, centred.
      target: complex64 ``(N, H, W)`` or None.
      path: source file.
    """

    kspace: np.ndarray
    mask: np.ndarray
    target: Optional[np.ndarray]
    path: str


def _read(path: str) -> dict:
    ext = os.path.splitext(path)[1].lower()
    if ext == ".npz":
        try:
            with np.load(path, allow_pickle=False) as f:
                return {k: f[k] for k in f.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
            raise KSpaceFileError(f"Cannot read k-space file {path}: {type(e).__name__}: {e}") from e
    if ext == ".mat":
        import scipy.io

        try:
            d = scipy.io.loadmat(path)
        except NotImplementedError as e:  # MATLAB v7.3 files are HDF5
            raise KSpaceFileError(
                f"Cannot read k-space file {path}: MATLAB v7.3 (HDF5) files are not supported; "
                "save with -v7 or convert to .npz"
            ) from e
        except (OSError, ValueError, TypeError) as e:
            raise KSpaceFileError(f"Cannot read k-space file {path}: {e}") from e
        return {k: v for k, v in d.items() if not k.startswith("__")}
    raise KSpaceFileError(f"k-space file {path} must end in .npz or .mat")


def _shift(a: np.ndarray) -> np.ndarray:
    return np.fft.fftshift(a, axes=(-2, -1))


def load_kspace(
    path: str,
    centred: bool = True,
    kspace_key: str = "kspace",
    mask_key: str = "mask",
    target_key: str = "target",
) -> KSpaceData:
    """Load and validate k-space, mask and optional target from ``.npz`` or ``.mat``.

    Args:
      path: the file.
      centred: True if the stored k-space and mask have DC at ``(H // 2, W // 2)`` (loa-meta,
        fastMRI); False if DC is at ``(0, 0)`` (``numpy.fft.fft2`` / ``tf.signal.fft2d`` output, as in
        the authors' TF1 script), in which case both are ``fftshift``-ed here.
      kspace_key, mask_key, target_key: array names in the file.

    Returns:
      :class:`KSpaceData`.

    Raises:
      KSpaceFileError: missing file/keys, real k-space, non-binary mask, shape mismatch, NaN/Inf.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise KSpaceFileError(f"k-space file not found: {path}")
    d = _read(path)
    for key in (kspace_key, mask_key):
        if key not in d:
            raise KSpaceFileError(f"k-space file {path} has no array {key!r} (found: {sorted(d)})")
    k = np.asarray(d[kspace_key])
    if not np.iscomplexobj(k):
        raise KSpaceFileError(f"k-space file {path}: {kspace_key!r} must be complex, but has dtype {k.dtype}")
    if k.ndim == 2:
        k = k[None]
    if k.ndim != 3:
        raise KSpaceFileError(f"k-space file {path}: {kspace_key!r} must have shape (H, W) or (N, H, W), but has {k.shape}")
    if not np.all(np.isfinite(k)):
        raise KSpaceFileError(f"k-space file {path}: {kspace_key!r} contains NaN or Inf")
    m = np.asarray(d[mask_key])
    if np.iscomplexobj(m) or not np.all((m == 0) | (m == 1)):
        raise KSpaceFileError(f"k-space file {path}: {mask_key!r} must be binary (0/1)")
    if m.ndim == 3 and m.shape[0] == 1 and k.shape[0] != 1:
        m = m[0]
    if m.shape not in (k.shape[1:], k.shape):
        raise KSpaceFileError(
            f"k-space file {path}: {mask_key!r} has shape {m.shape}, expected {k.shape[1:]} or {k.shape}"
        )
    target = None
    if target_key in d:
        target = np.asarray(d[target_key])
        if target.ndim == 2:
            target = target[None]
        if target.shape != k.shape:
            raise KSpaceFileError(
                f"k-space file {path}: {target_key!r} has shape {target.shape}, expected {k.shape}"
            )
        if not np.all(np.isfinite(target)):
            raise KSpaceFileError(f"k-space file {path}: {target_key!r} contains NaN or Inf")
        target = target.astype(np.complex64)
    if not centred:
        k, m = _shift(k), _shift(m)
    m = m.astype(np.float32)
    outside = np.abs(k) * (1.0 - m) > 0
    if np.any(outside):
        logging.warning("k-space file %s: %d nonzero samples outside the mask were set to zero", path, int(outside.sum()))
    k = (k * m).astype(np.complex64)
    return KSpaceData(kspace=k, mask=m, target=target, path=path)
