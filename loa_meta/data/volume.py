"""NIfTI volumes <-> normalised 2D slices (paper Section 5.1), shared by preparation and inference.

Conventions (the same in ``data_prep.brats`` and whole-volume inference):

* Volumes are reoriented to RAS with ``nibabel.as_closest_canonical`` so that the third voxel axis
  is inferior -> superior and a slice ``data[:, :, k]`` is axial whatever the stored orientation.
* A 2D image is ``data[x0:x0 + H, y0:y0 + W, k]``: rows follow the RAS x axis (left -> right),
  columns the RAS y axis (posterior -> anterior). No transposes or flips are applied, so the
  inverse placement is plain indexing.
* The crop box is centred: ``x0 = (X - H) // 2``, ``y0 = (Y - W) // 2``.
* The ``n`` adjacent central slices are ``Z // 2 - n // 2, ..., Z // 2 - n // 2 + n - 1``.
* Each slice is divided by its own maximum (after cropping) so that its maximum is 1; the scale
  factors are kept so that reconstructions can be written back in the source intensity units.
"""

from __future__ import annotations

import dataclasses
import gzip
import os
import zlib
from typing import Callable, Optional, Sequence, Tuple

import numpy as np
from absl import logging

from loa_meta.fileio import atomic_path
from loa_meta.validation import check_positive_int

__all__ = [
    "VolumeError",
    "VolumeSlices",
    "read_nifti_ras",
    "centre_crop_box",
    "central_slice_indices",
    "normalise_slices",
    "load_volume_slices",
    "write_volume",
    "reconstruct_volume",
]


class VolumeError(ValueError):
    """A NIfTI file cannot be used; the message names the file and the problem."""


def read_nifti_ras(path: str, allow_nonfinite: bool = False):
    """Read a 3D NIfTI volume, reoriented to RAS, as float32.

    A 4D volume with a singleton 4th dimension is squeezed; any other rank is an error.

    Args:
      path: path to a ``.nii`` or ``.nii.gz`` file.
      allow_nonfinite: if False (default), NaN or Inf voxels raise :class:`VolumeError`.

    Returns:
      ``(data, canonical_img, original_img)``: ``data`` is a float32 array ``(X, Y, Z)`` in RAS
      voxel order, ``canonical_img`` the RAS nibabel image and ``original_img`` the image as stored.

    Raises:
      VolumeError: missing, unreadable or truncated file, wrong rank, non-finite voxels.
    """
    import nibabel as nib

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise VolumeError(f"NIfTI file not found: {path}")
    try:
        img = nib.load(path)
        if len(img.shape) == 4 and img.shape[3] == 1:
            img = img.slicer[..., 0]
        if len(img.shape) != 3:
            raise VolumeError(
                f"NIfTI file {path} must hold a 3D volume (or 4D with a singleton 4th dimension), "
                f"but has shape {tuple(img.shape)}"
            )
        canon = nib.as_closest_canonical(img)
        data = np.asarray(canon.dataobj, dtype=np.float32)
    except VolumeError:
        raise
    except (EOFError, OSError, zlib.error, gzip.BadGzipFile, ValueError, nib.filebasedimages.ImageFileError) as e:
        raise VolumeError(f"Cannot read NIfTI file {path}: {type(e).__name__}: {e}") from e
    if not allow_nonfinite and not np.all(np.isfinite(data)):
        bad = int(np.size(data) - np.count_nonzero(np.isfinite(data)))
        raise VolumeError(f"NIfTI file {path} contains {bad} NaN/Inf voxels")
    return data, canon, img


def centre_crop_box(shape_xy: Sequence[int], crop: Optional[Sequence[int]], path: str = "") -> Tuple[int, int, int, int]:
    """Centred crop box ``(x0, y0, H, W)`` of size ``crop`` in an ``(X, Y)`` plane.

    Args:
      shape_xy: in-plane shape ``(X, Y)`` of the volume.
      crop: ``(H, W)`` or None for the full plane.
      path: file name used in the error message.

    Raises:
      VolumeError: the plane is smaller than the crop.
    """
    x, y = int(shape_xy[0]), int(shape_xy[1])
    if crop is None:
        return 0, 0, x, y
    h, w = int(crop[0]), int(crop[1])
    if h > x or w > y:
        raise VolumeError(
            f"NIfTI file {path}: in-plane shape {(x, y)} is smaller than the crop {(h, w)}"
        )
    return (x - h) // 2, (y - w) // 2, h, w


def central_slice_indices(depth: int, num_slices: Optional[int], path: str = "") -> list:
    """Indices of ``num_slices`` adjacent slices centred on the middle slice ``depth // 2``.

    ``None`` means all slices. Raises :class:`VolumeError` if the volume has too few slices.
    """
    depth = int(depth)
    if num_slices is None:
        return list(range(depth))
    n = check_positive_int(num_slices, "num_slices")
    if n > depth:
        raise VolumeError(f"NIfTI file {path} has {depth} slices, fewer than the {n} requested")
    start = depth // 2 - n // 2
    return list(range(start, start + n))


def normalise_slices(slices: np.ndarray):
    """Divide each slice ``(S, H, W)`` by its maximum; returns ``(normalised, scales)``.

    All-zero (or non-positive) slices get scale 0 and stay zero.
    """
    slices = np.asarray(slices, dtype=np.float32)
    scales = slices.reshape(slices.shape[0], -1).max(axis=1).astype(np.float32)
    safe = np.where(scales > 0, scales, 1.0).astype(np.float32)
    out = np.where(scales[:, None, None] > 0, slices / safe[:, None, None], 0.0).astype(np.float32)
    return out, np.where(scales > 0, scales, 0.0).astype(np.float32)


@dataclasses.dataclass
class VolumeSlices:
    """Normalised 2D slices of one volume and what is needed to put them back.

    Attributes:
      images: float32 ``(S, H, W)``, each slice divided by its maximum (max 1, or all zero).
      scales: float32 ``(S,)`` the divisors (0 for an all-zero slice).
      slice_indices: RAS axial indices of the slices.
      crop_box: ``(x0, y0, H, W)`` in the RAS plane.
      ras_shape: shape of the RAS volume ``(X, Y, Z)``.
      path: the source file.
    """

    images: np.ndarray
    scales: np.ndarray
    slice_indices: list
    crop_box: Tuple[int, int, int, int]
    ras_shape: Tuple[int, int, int]
    path: str


def load_volume_slices(
    nifti_path: str,
    crop: Optional[Sequence[int]] = None,
    num_slices: Optional[int] = None,
    slice_indices: Optional[Sequence[int]] = None,
) -> VolumeSlices:
    """Load axial slices of a NIfTI volume exactly as ``data_prep.brats`` prepares them.

    Args:
      nifti_path: the volume.
      crop: in-plane ``(H, W)`` centred crop, or None for the full plane.
      num_slices: number of adjacent central slices, or None for all slices.
      slice_indices: explicit RAS axial indices (overrides ``num_slices``).

    Returns:
      A :class:`VolumeSlices`.
    """
    data, _, _ = read_nifti_ras(nifti_path)
    x0, y0, h, w = centre_crop_box(data.shape[:2], crop, nifti_path)
    if slice_indices is None:
        idx = central_slice_indices(data.shape[2], num_slices, nifti_path)
    else:
        idx = [int(k) for k in slice_indices]
        if any(k < 0 or k >= data.shape[2] for k in idx):
            raise VolumeError(f"NIfTI file {nifti_path}: slice indices {idx} outside [0, {data.shape[2]})")
    raw = np.moveaxis(data[x0:x0 + h, y0:y0 + w, idx], 2, 0)
    images, scales = normalise_slices(raw)
    return VolumeSlices(images, scales, idx, (x0, y0, h, w), tuple(data.shape), os.fspath(nifti_path))


def _atomic_save_nifti(img, out_path: str) -> None:
    import nibabel as nib

    out_path = os.fspath(out_path)
    with atomic_path(out_path, suffix=".nii.gz" if out_path.endswith(".gz") else ".nii") as tmp:
        nib.save(img, tmp)


def write_volume(
    recon_slices: np.ndarray,
    reference_nifti: str,
    out_path: str,
    slice_indices: Sequence[int],
    crop_box: Optional[Sequence[int]] = None,
    scales: Optional[Sequence[float]] = None,
    fill_value: float = 0.0,
) -> str:
    """Write reconstructed slices back into the grid of a reference volume (atomically).

    The slices (RAS, cropped, normalised) are multiplied by ``scales``, placed at ``crop_box`` and
    ``slice_indices`` into a RAS volume of the reference's shape (``fill_value`` elsewhere, i.e.
    outside the crop and for slices not reconstructed), reoriented back to the stored orientation
    and saved as float32 with the reference affine and header. The output therefore overlays the
    reference voxel by voxel.

    Args:
      recon_slices: real array ``(S, H, W)`` (complex input is reduced to its magnitude).
      reference_nifti: the source volume.
      out_path: ``.nii`` or ``.nii.gz`` output path; written to a temp file then renamed.
      slice_indices: RAS axial index of each slice.
      crop_box: ``(x0, y0, H, W)``; None means the full plane.
      scales: per-slice intensity factors (from :func:`load_volume_slices`); None means 1.
      fill_value: value of voxels that were not reconstructed.

    Returns:
      ``out_path``.
    """
    import nibabel as nib

    rec = np.asarray(recon_slices)
    if np.iscomplexobj(rec):
        rec = np.abs(rec)
    rec = rec.astype(np.float32)
    if rec.ndim != 3:
        raise ValueError(f"Argument `recon_slices` must have shape (S, H, W), but received shape: {rec.shape}")
    ref = nib.load(os.fspath(reference_nifti))
    if len(ref.shape) == 4 and ref.shape[3] == 1:
        ref = ref.slicer[..., 0]
    canon = nib.as_closest_canonical(ref)
    ras_shape = canon.shape[:3]
    if crop_box is None:
        crop_box = (0, 0, ras_shape[0], ras_shape[1])
    x0, y0, h, w = (int(c) for c in crop_box)
    idx = [int(k) for k in slice_indices]
    if rec.shape != (len(idx), h, w):
        raise ValueError(
            f"Argument `recon_slices` has shape {rec.shape} but {len(idx)} slices of the crop {(h, w)} "
            "were expected"
        )
    if scales is None:
        scales = np.ones(len(idx), np.float32)
    scales = np.asarray(scales, np.float32)
    if scales.shape != (len(idx),):
        raise ValueError(f"Argument `scales` must have shape ({len(idx)},), but received shape: {scales.shape}")
    vol = np.full(ras_shape, fill_value, np.float32)
    vol[x0:x0 + h, y0:y0 + w, idx] = np.moveaxis(rec * scales[:, None, None], 0, 2)
    # Undo as_closest_canonical: RAS voxel order -> the stored orientation.
    ornt = nib.orientations.ornt_transform(
        nib.orientations.axcodes2ornt(("R", "A", "S")), nib.orientations.io_orientation(ref.affine)
    )
    stored = nib.orientations.apply_orientation(vol, ornt).astype(np.float32)
    header = ref.header.copy()
    header.set_data_dtype(np.float32)
    out = nib.Nifti1Image(stored, ref.affine, header)
    out.header.set_slope_inter(1.0, 0.0)
    _atomic_save_nifti(out, out_path)
    logging.info("Wrote %d reconstructed slices to %s", len(idx), out_path)
    return os.fspath(out_path)


def reconstruct_volume(
    nifti_path: str,
    mask: np.ndarray,
    model_fn: Callable,
    out_path: str,
    batch_size: int = 8,
    crop: Optional[Sequence[int]] = None,
    num_slices: Optional[int] = None,
    task_id: int = 0,
    noise_sigma: float = 0.0,
    seed: int = 0,
) -> VolumeSlices:
    """Simulate undersampled k-space for every slice of a volume, reconstruct and write a NIfTI.

    Args:
      nifti_path: the fully sampled source volume.
      mask: ``(H, W)`` 0/1 centred mask matching the crop (or the full plane).
      model_fn: callable mapping a batch dict ``{"kspace", "mask", "target", "task_id"}`` to
        images ``(B, H, W)`` (complex: the magnitude is written).
      out_path: output NIfTI path.
      batch_size: slices per call.
      crop: in-plane crop ``(H, W)``; None for the full plane.
      num_slices: adjacent central slices to reconstruct; None for all.
      task_id: task index passed to the model.
      noise_sigma: k-space noise standard deviation (Eq. 1).
      seed: noise seed.

    Returns:
      The :class:`VolumeSlices` of the source with ``images`` replaced by the reconstructions.
    """
    from loa_meta.data.pipeline import task_dataset

    batch_size = check_positive_int(batch_size, "batch_size")
    vs = load_volume_slices(nifti_path, crop=crop, num_slices=num_slices)
    mask = np.asarray(mask)
    if mask.shape != vs.images.shape[1:]:
        raise ValueError(
            f"Argument `mask` has shape {mask.shape} but the slices of {nifti_path} have shape "
            f"{vs.images.shape[1:]}"
        )
    ds = task_dataset(
        vs.images, mask, task_id=task_id, batch_size=batch_size, seed=seed, shuffle=False,
        repeat=False, noise_sigma=noise_sigma, drop_remainder=False,
    )
    outs = []
    for batch in ds:
        out = np.asarray(model_fn(batch))
        outs.append(np.abs(out) if np.iscomplexobj(out) else out)
    rec = np.concatenate(outs, axis=0).astype(np.float32)
    write_volume(rec, nifti_path, out_path, vs.slice_indices, vs.crop_box, vs.scales)
    return dataclasses.replace(vs, images=rec)
