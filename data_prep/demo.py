r"""A BraTS-2018-layout demo tree built from real MRI: the MNI152 2009 template bundled in nilearn.

Usage::

    python -m data_prep.demo --output_dir data/demo_tree            # 12 simulated subjects
    python -m data_prep.brats --brats_dir data/demo_tree --output_dir data/demo_t1 \
        --num_train 8 --num_val 2 --num_test 2 --modality t1         # validation from the same tree

Each subject ``HGG/Demo_MNI_<i>/Demo_MNI_<i>_{t1,t2,seg}.nii.gz`` is the ICBM 2009 symmetric template
(nilearn's bundled, skull-stripped copy, 1 mm) after a seeded random affine (rotation, scaling,
translation) and a smooth low-frequency displacement field, resampled with
``scipy.ndimage.map_coordinates`` onto BraTS's 240x240x155 1 mm grid, with a smooth multiplicative
bias field, a global intensity scale and Rician noise inside the brain. The T1-weighted image is the
template itself; the T2-weighted image is synthesised from the bundled GM/WM probability maps and
CSF = brain mask - GM - WM with the spin-echo model ``S = PD (1 - exp(-TR/T1)) exp(-TE/T2)``
(TR = 4000 ms, TE = 100 ms; tissue constants in :data:`TISSUES`, sources in docs/data.md).
``_seg`` holds *tissue* labels (1 CSF, 2 GM, 3 WM), not tumour labels: the demo has no tumours.
No network access is needed: nilearn ships these files in its package data.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Dict, Optional, Sequence

import numpy as np
from absl import logging

from data_prep.nifti_io import DataPrepError, atomic_output_dir, check_output_dir
from loa_meta.validation import check_positive_int

__all__ = ["BRATS_SHAPE", "BRATS_AFFINE", "TISSUES", "load_template", "simulate_subject", "build_demo_tree", "main"]

BRATS_SHAPE = (240, 240, 155)
# BraTS 2018 NIfTI headers (written by ITK, SRI24 space): 1 mm isotropic, stored LPS-like with
# affine diag(-1, -1, 1) and the origin on the grid's corner voxel (0, 239, 0 in RAS mm).
BRATS_AFFINE = np.array(
    [[-1.0, 0.0, 0.0, 0.0], [0.0, -1.0, 0.0, 239.0], [0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]]
)

# Spin-echo parameters and tissue constants (T1, T2 in ms at 1.5 T; PD relative to CSF).
TR_MS, TE_MS = 4000.0, 100.0
TISSUES: Dict[str, Dict[str, float]] = {
    "csf": {"T1": 4000.0, "T2": 2000.0, "PD": 1.00},
    "gm": {"T1": 1124.0, "T2": 95.0, "PD": 0.80},
    "wm": {"T1": 884.0, "T2": 72.0, "PD": 0.70},
}


def spin_echo(tissue: Dict[str, float], tr: float = TR_MS, te: float = TE_MS) -> float:
    """Spin-echo signal PD (1 - exp(-TR/T1)) exp(-TE/T2) of one tissue."""
    return float(tissue["PD"] * (1.0 - np.exp(-tr / tissue["T1"])) * np.exp(-te / tissue["T2"]))


_TEMPLATE_CACHE: Dict[str, dict] = {}


def load_template() -> dict:
    """The bundled MNI152 2009 T1 template, GM/WM maps and brain mask (no download), cached per process.

    Returns:
      dict with float32 arrays ``t1``, ``gm``, ``wm``, ``csf``, ``mask`` on the template grid,
      ``t2`` (synthesised), ``labels`` (uint8: 0 background, 1 CSF, 2 GM, 3 WM) and ``affine``.
    """
    if "mni" in _TEMPLATE_CACHE:
        return _TEMPLATE_CACHE["mni"]
    try:
        from nilearn import datasets
    except ImportError as e:
        raise DataPrepError(
            "data_prep.demo needs nilearn (it ships the MNI152 template): pip install 'loa-meta[demo]'"
        ) from e
    t1_img = datasets.load_mni152_template(resolution=1)
    gm = np.asarray(datasets.load_mni152_gm_template(resolution=1).dataobj, np.float32)
    wm = np.asarray(datasets.load_mni152_wm_template(resolution=1).dataobj, np.float32)
    mask = np.asarray(datasets.load_mni152_brain_mask(resolution=1).dataobj, np.float32) > 0.5
    t1 = np.asarray(t1_img.dataobj, np.float32)
    gm = np.clip(gm, 0, 1) * mask
    wm = np.clip(wm, 0, 1) * mask
    csf = np.clip(mask - gm - wm, 0.0, 1.0).astype(np.float32)
    t2 = (csf * spin_echo(TISSUES["csf"]) + gm * spin_echo(TISSUES["gm"]) + wm * spin_echo(TISSUES["wm"]))
    probs = np.stack([csf, gm, wm])
    labels = np.where(mask, probs.argmax(0) + 1, 0).astype(np.uint8)
    t1 = t1 * mask
    out = {"t1": t1, "t2": t2.astype(np.float32), "gm": gm, "wm": wm, "csf": csf, "mask": mask,
           "labels": labels, "affine": np.asarray(t1_img.affine, np.float64)}
    for v in out.values():
        v.flags.writeable = False  # shared by the cache and forked workers
    _TEMPLATE_CACHE["mni"] = out
    return out


def _rotation(angles):
    ax, ay, az = angles
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def _smooth_field(rng, axes, amplitude: float, terms: int = 3):
    """Sum of separable low-frequency sinusoids on the grid given by 1-D ``axes`` (broadcast)."""
    field = 0.0
    for _ in range(terms):
        f = 1.0
        for d, a in enumerate(axes):
            freq = rng.uniform(0.3, 1.2) * 2 * np.pi / max(len(a), 1)
            phase = rng.uniform(0, 2 * np.pi)
            shape = [1, 1, 1]
            shape[d] = len(a)
            f = f * np.sin(freq * a.astype(np.float32) + phase).reshape(shape).astype(np.float32)
        field = field + np.float32(rng.normal(0, amplitude)) * f
    return field


def simulate_subject(template: dict, seed: int, index: int, shape=BRATS_SHAPE, affine=BRATS_AFFINE) -> dict:
    """One simulated subject on the BraTS grid: ``{"t1", "t2", "seg"}`` arrays in stored (LPS) order.

    Args:
      template: output of :func:`load_template`.
      seed, index: the subject's generator is ``numpy.random.default_rng([seed, index])``.
      shape, affine: the output grid (default BraTS 240x240x155, 1 mm).
    """
    from scipy import ndimage

    rng = np.random.default_rng([int(seed), int(index)])
    a_m = template["affine"]
    mask = template["mask"]
    # Brain bounding-box centre (world mm) in the template and grid centre (world mm) of the output.
    nz = np.argwhere(mask)
    lo, hi = nz.min(0), nz.max(0)
    c_m = (a_m @ np.r_[(lo + hi) / 2.0, 1.0])[:3]
    c_b = (affine @ np.r_[(np.asarray(shape) - 1) / 2.0, 1.0])[:3]
    rot = _rotation(np.deg2rad(rng.uniform(-5, 5, 3)))
    scale = np.diag(rng.uniform(0.94, 1.06, 3))
    shift = rng.uniform(-3, 3, 3)
    m = rot @ scale
    # output voxel -> world (affine) -> template world -> template voxel, as one 3x4 map L.
    lin = np.linalg.inv(a_m)[:3, :3] @ m @ affine[:3, :3]
    off = np.linalg.inv(a_m)[:3, :3] @ (m @ (affine[:3, 3] - c_b) + c_m + shift) + np.linalg.inv(a_m)[:3, 3]
    # Output sub-box that can see the brain: map the template bbox corners back (+ margin).
    inv_lin = np.linalg.inv(lin)
    corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])], float)
    back = (inv_lin @ (corners - off).T).T
    b_lo = np.clip(np.floor(back.min(0)) - 8, 0, np.asarray(shape) - 1).astype(int)
    b_hi = np.clip(np.ceil(back.max(0)) + 8, 0, np.asarray(shape) - 1).astype(int)
    axes = [np.arange(b_lo[d], b_hi[d] + 1) for d in range(3)]
    disp = [_smooth_field(rng, axes, amplitude=2.0) for _ in range(3)]
    coords = []
    for a in range(3):
        c = off[a] + disp[a]
        for d in range(3):
            sh = [1, 1, 1]
            sh[d] = len(axes[d])
            c = c + (lin[a, d] * axes[d]).astype(np.float32).reshape(sh)
        coords.append(np.broadcast_to(c, [len(x) for x in axes]).astype(np.float32))
    coords = np.stack(coords)
    sub = tuple(slice(b_lo[d], b_hi[d] + 1) for d in range(3))
    out = {}
    seg = np.zeros(shape, np.uint8)
    seg[sub] = ndimage.map_coordinates(template["labels"], coords, order=0, mode="constant", cval=0)
    brain = seg[sub] > 0
    out["seg"] = seg
    brain_coords = coords[:, brain]  # interpolate intensities only inside the brain (half the box)
    del coords
    for name, level in (("t1", rng.uniform(600, 1200)), ("t2", rng.uniform(1500, 3000))):
        vals = ndimage.map_coordinates(template[name], brain_coords, order=1, mode="constant", cval=0.0)
        vals = vals / max(float(template[name].max()), 1e-6)
        bias = np.exp(_smooth_field(rng, axes, amplitude=0.08)).astype(np.float32)
        s = vals * np.broadcast_to(bias, brain.shape)[brain] * level
        sigma = 0.015 * level
        n1 = rng.normal(0, sigma, s.shape).astype(np.float32)
        n2 = rng.normal(0, sigma, s.shape).astype(np.float32)
        vol = np.zeros(shape, np.float32)
        region = np.zeros(brain.shape, np.float32)
        region[brain] = np.sqrt((s + n1) ** 2 + n2 ** 2)  # Rician magnitude noise
        vol[sub] = region
        out[name] = np.clip(np.rint(vol), 0, 32767).astype(np.int16)
    return out


_TEMPLATE: Optional[dict] = None


def _write_subject(job) -> str:
    import nibabel as nib

    tmp, i, seed, shape = job
    pid = f"Demo_MNI_{i:03d}"
    subj = simulate_subject(_TEMPLATE, seed, i, shape=shape)
    pdir = os.path.join(tmp, "HGG", pid)
    os.makedirs(pdir)
    for mod, arr in subj.items():
        img = nib.Nifti1Image(arr, BRATS_AFFINE)
        img.header.set_xyzt_units("mm", "sec")
        img.header.set_qform(BRATS_AFFINE, code=1)
        img.header.set_sform(BRATS_AFFINE, code=1)
        nib.save(img, os.path.join(pdir, f"{pid}_{mod}.nii.gz"))
    return pid


def build_demo_tree(output_dir: str, num_subjects: int = 12, seed: int = 0, overwrite: bool = False,
                    shape: Sequence[int] = BRATS_SHAPE, workers: int = 2, first_subject: int = 0) -> dict:
    """Write ``output_dir/HGG/Demo_MNI_<i>/Demo_MNI_<i>_{t1,t2,seg}.nii.gz`` atomically.

    Args:
      output_dir: destination (refused if non-empty unless ``overwrite``).
      num_subjects: number of simulated subjects.
      seed: base seed; subject ``i`` uses ``default_rng([seed, i])``.
      overwrite: replace a non-empty destination.
      shape: output grid (BraTS 240x240x155 by default).
      workers: processes simulating subjects in parallel (the output does not depend on it).
      first_subject: index of the first subject: subjects ``first_subject .. first_subject +
        num_subjects - 1`` are written, each identical to the same index in any other tree of this
        seed. A tree of new subjects (e.g. ``first_subject=12`` next to the quickstart's 0-11) is a
        held-out set for model choices that never touches the test split.

    Returns:
      Summary dict with the subject ids and the elapsed seconds.
    """
    num_subjects = check_positive_int(num_subjects, "num_subjects")
    workers = check_positive_int(workers, "workers")
    first_subject = check_positive_int(first_subject, "first_subject", minimum=0)
    t0 = time.perf_counter()
    check_output_dir(output_dir, overwrite)  # before the template is loaded
    global _TEMPLATE
    _TEMPLATE = load_template()
    indices = range(first_subject, first_subject + num_subjects)
    ids = [f"Demo_MNI_{i:03d}" for i in indices]
    with atomic_output_dir(output_dir, overwrite=overwrite) as tmp:
        jobs = [(tmp, i, seed, tuple(shape)) for i in indices]
        if workers > 1 and num_subjects > 1:
            import multiprocessing

            # fork shares the loaded template with the workers; each subject has its own seed, so
            # the result does not depend on the number of workers.
            with multiprocessing.get_context("fork").Pool(min(workers, num_subjects)) as pool:
                for pid in pool.imap(_write_subject, jobs):
                    logging.info("demo subject %s written", pid)
        else:
            for job in jobs:
                logging.info("demo subject %s written", _write_subject(job))
        with open(os.path.join(tmp, "README.txt"), "w", encoding="utf-8") as f:
            f.write(
                "Demo tree built by data_prep.demo from the MNI152 2009 template bundled in nilearn.\n"
                f"subjects={ids[0]}..{ids[-1]} seed={seed}; _seg holds tissue labels 1=CSF 2=GM 3=WM.\n"
                "Prepare (12 subjects) with: python -m data_prep.brats --brats_dir <this dir> --output_dir <out> "
                "--num_train 8 --num_val 2 --num_test 2\n"
            )
    return {"output_dir": os.path.abspath(output_dir), "subjects": ids, "seconds": time.perf_counter() - t0}


def main(argv):
    import json

    from absl import flags

    del argv
    f = flags.FLAGS
    try:
        summary = build_demo_tree(f.output_dir, num_subjects=f.num_subjects, seed=f.seed,
                                  overwrite=f.overwrite, workers=f.workers, first_subject=f.first_subject)
    except (DataPrepError, ValueError) as e:
        print(f"data_prep.demo: error: {e}", file=sys.stderr)
        sys.exit(2)
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    from absl import flags

    from experiments import cli

    flags.DEFINE_string("output_dir", None, "Destination of the BraTS-layout demo tree.")
    flags.DEFINE_integer("num_subjects", 12, "Simulated subjects (12 allow --num_train 8 --num_val 2 --num_test 2).")
    flags.DEFINE_integer("seed", 0, "Seed of the simulated subjects.")
    flags.DEFINE_integer("first_subject", 0, "Index of the first subject; e.g. --first_subject=12 --num_subjects=5 "
                         "writes new subjects next to the quickstart's 0-11: a held-out set for model choices "
                         "(docs/evaluation.md).")
    flags.DEFINE_boolean("overwrite", False, "Replace a non-empty --output_dir.")
    flags.DEFINE_integer("workers", 2, "Parallel processes (output is independent of it).")
    flags.mark_flag_as_required("output_dir")
    cli.run(main)
