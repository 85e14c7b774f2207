"""Helpers that write tiny seeded BraTS-2018-style trees with nibabel (used by the data tests)."""

from __future__ import annotations

import os

import nibabel as nib
import numpy as np

SHAPE = (40, 44, 20)
CROP = (24, 28)
NUM_SLICES = 3

# Stored as LPS (x and y flipped), like ITK-written BraTS files, to exercise RAS reorientation.
LPS_AFFINE = np.array([[-1.0, 0, 0, 0], [0, -1.0, 0, 239.0], [0, 0, 1.0, 0], [0, 0, 0, 1]])
RAS_AFFINE = np.eye(4)


def ras_volume(seed: int, shape=SHAPE) -> np.ndarray:
    """A positive float32 volume (in RAS voxel order) with a distinct value at every voxel."""
    rng = np.random.default_rng(seed)
    x, y, z = np.meshgrid(*[np.arange(s, dtype=np.float32) for s in shape], indexing="ij")
    return (1.0 + x + 0.5 * y + 0.25 * z + rng.random(shape, dtype=np.float32)).astype(np.float32)


def write_nifti(path: str, ras_data: np.ndarray, lps: bool = False, dtype=np.float32) -> None:
    """Write RAS-ordered data; with ``lps`` the stored array is flipped to match LPS_AFFINE."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if lps:
        stored = ras_data[::-1, ::-1, ...]
        aff = LPS_AFFINE
    else:
        stored = ras_data
        aff = RAS_AFFINE
    img = nib.Nifti1Image(np.ascontiguousarray(stored).astype(dtype), aff)
    nib.save(img, path)


def make_tree(root: str, n_hgg: int = 8, n_lgg: int = 2, n_val: int = 3, modalities=("t1", "t2")) -> dict:
    """Write ``root/train/{HGG,LGG}/<pid>/<pid>_<mod>.nii.gz`` and ``root/val/<pid>/...``.

    Returns a dict patient -> RAS data of the t1 volume and the tree paths.
    """
    vols = {}
    k = 0
    specs = [("train/HGG", f"Brats18_TCIA_{i:03d}_1", n) for n, i in enumerate(range(n_hgg))]
    specs += [("train/LGG", f"Brats18_LGG_{i:03d}_1", n) for n, i in enumerate(range(n_lgg))]
    specs += [("val", f"Brats18_VAL_{i:03d}_1", n) for n, i in enumerate(range(n_val))]
    for folder, pid, n in specs:
        for mod in modalities:
            data = ras_volume(1000 + k)
            k += 1
            write_nifti(os.path.join(root, folder, pid, f"{pid}_{mod}.nii.gz"), data, lps=(n % 2 == 0))
            if mod == "t1":
                vols[pid] = data
    return {"volumes": vols, "train": os.path.join(root, "train"), "val": os.path.join(root, "val")}
