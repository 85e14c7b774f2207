r"""Prepare BraTS-2018-style NIfTI volumes as the 2D slices of paper Section 5.1.

Usage::

    python -m data_prep.brats --brats_dir /data/MICCAI_BraTS_2018_Data_Training \
        --val_dir /data/MICCAI_BraTS_2018_Data_Validation --output_dir data/brats_t1 --modality t1

Paper defaults: HGG, 30 training / 15 validation / 6 test patients, 160x180 centre crop, 10 adjacent
central axial slices, each slice divided by its maximum. Validation patients come from the BraTS
validation tree (``--val_dir``), test patients from the training tree (disjoint from the training
patients). Without ``--val_dir`` validation patients are drawn from the training tree too.
See docs/data.md for the output format and the handling of bad input.

The library functions (:func:`prepare_brats`, :func:`PrepConfig`) never read flags; :func:`main` is
a thin absl wrapper.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from absl import logging

import loa_meta
from data_prep.nifti_io import DataPrepError, atomic_output_dir, check_output_dir, sha256_file
from loa_meta.data.prepared import MANIFEST_NAME
from loa_meta.data.volume import (
    VolumeError,
    central_slice_indices,
    centre_crop_box,
    normalise_slices,
    read_nifti_ras,
)
from loa_meta.validation import check_one_of, check_positive_int

__all__ = ["PrepConfig", "PatientError", "find_patients", "modality_file", "extract_patient", "assign_splits", "prepare_brats", "main"]

MODALITIES = ("t1", "t1ce", "t2", "flair")
GRADES = ("HGG", "LGG", "ALL")
ON_ERROR = ("skip", "fail")
FORMAT_VERSION = 1


class PatientError(DataPrepError):
    """One patient cannot be used (missing/corrupt file, bad shape, NaN, empty slice)."""

    def __init__(self, patient: str, path: str, message: str):
        super().__init__(f"patient {patient}: {message}")
        self.patient = patient
        self.path = path


@dataclasses.dataclass
class PrepConfig:
    """Options of the preparation (defaults = paper Section 5.1).

    Args:
      brats_dir: training tree with ``HGG/`` and ``LGG/`` folders of patient folders.
      output_dir: destination directory (created atomically).
      val_dir: optional BraTS validation tree (patient folders, no grade folders).
      modality: one of t1, t1ce, t2, flair.
      grade: HGG, LGG or ALL (both) for the training tree.
      num_train, num_val, num_test: patients per split.
      crop: in-plane centre crop ``(H, W)``.
      num_slices: adjacent central axial slices per patient.
      seed: seed of the patient permutation.
      on_error: ``skip`` a bad patient (counted in the summary) or ``fail``.
      overwrite: replace a non-empty ``output_dir``.
    """

    brats_dir: str
    output_dir: str
    val_dir: Optional[str] = None
    modality: str = "t1"
    grade: str = "HGG"
    num_train: int = 30
    num_val: int = 15
    num_test: int = 6
    crop: Tuple[int, int] = (160, 180)
    num_slices: int = 10
    seed: int = 0
    on_error: str = "fail"
    overwrite: bool = False

    def validate(self) -> "PrepConfig":
        check_one_of(self.modality, "modality", MODALITIES)
        check_one_of(self.grade, "grade", GRADES)
        check_one_of(self.on_error, "on_error", ON_ERROR)
        check_positive_int(self.num_train, "num_train")
        check_positive_int(self.num_val, "num_val", minimum=0)
        check_positive_int(self.num_test, "num_test", minimum=0)
        check_positive_int(self.num_slices, "num_slices")
        if len(tuple(self.crop)) != 2:
            raise ValueError(f"Argument `crop` must be two positive integers H,W, but received: {self.crop!r}")
        self.crop = tuple(check_positive_int(c, "crop") for c in self.crop)
        if not os.path.isdir(self.brats_dir):
            raise DataPrepError(f"--brats_dir {self.brats_dir} is not a directory")
        if self.val_dir is not None and not os.path.isdir(self.val_dir):
            raise DataPrepError(f"--val_dir {self.val_dir} is not a directory")
        return self

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["crop"] = list(self.crop)
        d["brats_dir"] = os.path.abspath(self.brats_dir)
        # Where the output lives and whether it replaced something are not properties of the data:
        # leaving them out keeps re-runs into another directory byte-identical.
        del d["output_dir"], d["overwrite"]
        d["val_dir"] = None if self.val_dir is None else os.path.abspath(self.val_dir)
        return d


def _patient_dirs(root: str) -> List[str]:
    return sorted(
        d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)) and not d.startswith(".")
    )


def find_patients(brats_dir: str, grade: str = "HGG") -> List[Tuple[str, str]]:
    """Patients of a training tree as sorted ``(patient_id, patient_dir)`` pairs.

    ``grade`` selects the ``HGG`` or ``LGG`` folder, or both with ``ALL``.
    """
    grades = ("HGG", "LGG") if grade == "ALL" else (grade,)
    out = []
    for g in grades:
        root = os.path.join(brats_dir, g)
        if not os.path.isdir(root):
            if grade == "ALL":
                continue
            raise DataPrepError(f"--brats_dir {brats_dir} has no {g}/ folder (expected BraTS 2018 layout {g}/<patient>/)")
        out += [(p, os.path.join(root, p)) for p in _patient_dirs(root)]
    return sorted(out)


def find_val_patients(val_dir: str) -> List[Tuple[str, str]]:
    """Patients of a BraTS validation tree (patient folders directly under ``val_dir``)."""
    return [(p, os.path.join(val_dir, p)) for p in _patient_dirs(val_dir)]


def modality_file(patient: str, patient_dir: str, modality: str) -> str:
    """Path of ``<patient>_<modality>.nii.gz`` (or ``.nii``); raises :class:`PatientError` if absent."""
    for ext in (".nii.gz", ".nii"):
        p = os.path.join(patient_dir, f"{patient}_{modality}{ext}")
        if os.path.isfile(p):
            return p
    expected = os.path.join(patient_dir, f"{patient}_{modality}.nii.gz")
    raise PatientError(patient, expected, f"missing modality file {expected}")


def extract_patient(
    patient: str, patient_dir: str, modality: str, crop: Sequence[int], num_slices: int
) -> dict:
    """Read one patient's volume and return its normalised central slices and provenance.

    Raises:
      PatientError: missing or unreadable file, wrong rank, NaN/Inf, too small for the crop,
        too few slices, or an all-zero slice inside the crop.
    """
    path = modality_file(patient, patient_dir, modality)
    try:
        data, canon, orig = read_nifti_ras(path)
        box = centre_crop_box(data.shape[:2], crop, path)
        idx = central_slice_indices(data.shape[2], num_slices, path)
    except VolumeError as e:
        raise PatientError(patient, path, str(e)) from e
    x0, y0, h, w = box
    raw = np.moveaxis(data[x0:x0 + h, y0:y0 + w, idx], 2, 0)
    maxima = raw.reshape(len(idx), -1).max(axis=1)
    empty = [k for k, m in zip(idx, maxima) if not m > 0]
    if empty:
        raise PatientError(
            patient, path,
            f"NIfTI file {path}: axial slice(s) {empty} are empty (max <= 0) inside the crop {tuple(crop)}",
        )
    images, scales = normalise_slices(raw)
    import nibabel as nib

    return {
        "images": images,
        "file": path,
        "sha256": sha256_file(path),
        "stored_shape": [int(s) for s in orig.shape],
        "stored_orientation": "".join(nib.aff2axcodes(orig.affine)),
        "ras_shape": [int(s) for s in data.shape],
        "crop_box": [int(v) for v in box],
        "slice_indices": [int(k) for k in idx],
        "scales": [float(s) for s in scales],
    }


def assign_splits(
    train_tree: List[Tuple[str, str]],
    val_tree: Optional[List[Tuple[str, str]]],
    num_train: int,
    num_val: int,
    num_test: int,
    seed: int,
) -> Dict[str, List[Tuple[str, str]]]:
    """Candidate patients for each split, in the order they are tried (patient-level, disjoint).

    The training tree is permuted with ``numpy.random.default_rng(seed)``; training patients are
    taken first, then (without a validation tree) validation, then test, each from the remaining
    candidates. With a validation tree, it is permuted by the same generator and validation patients
    come from it alone. Raises :class:`DataPrepError` if there are fewer patients than requested.
    """
    rng = np.random.default_rng(seed)
    perm = [train_tree[i] for i in rng.permutation(len(train_tree))]
    if val_tree is None:
        need = num_train + num_val + num_test
        if len(perm) < need:
            raise DataPrepError(
                f"found {len(perm)} patients in the training tree, but {need} were requested "
                f"(num_train={num_train} + num_val={num_val} + num_test={num_test})"
            )
        return {"train": perm, "val": perm, "test": perm}
    need = num_train + num_test
    if len(perm) < need:
        raise DataPrepError(
            f"found {len(perm)} patients in the training tree, but {need} were requested "
            f"(num_train={num_train} + num_test={num_test})"
        )
    vperm = [val_tree[i] for i in rng.permutation(len(val_tree))]
    if len(vperm) < num_val:
        raise DataPrepError(f"found {len(vperm)} patients in --val_dir, but num_val={num_val} were requested")
    return {"train": perm, "val": vperm, "test": perm}


def _json_bytes(obj) -> bytes:
    return (json.dumps(obj, indent=1, sort_keys=True) + "\n").encode("utf-8")


def prepare_brats(config: PrepConfig) -> dict:
    """Run the preparation described by ``config``; returns the summary dict.

    Writes ``train.npy``, ``val.npy``, ``test.npy`` (float32 ``(N, H, W)``) and ``manifest.json``
    into a temp directory that is renamed to ``config.output_dir`` only when everything succeeded.

    Raises:
      DataPrepError: bad flags, too few (usable) patients, or a bad patient with ``on_error=fail``.
    """
    config.validate()
    check_output_dir(os.path.abspath(config.output_dir), config.overwrite)
    train_tree = find_patients(config.brats_dir, config.grade)
    val_tree = None if config.val_dir is None else find_val_patients(config.val_dir)
    counts = {"train": config.num_train, "val": config.num_val, "test": config.num_test}
    candidates = assign_splits(train_tree, val_tree, config.num_train, config.num_val, config.num_test, config.seed)
    order = ("train", "test", "val") if val_tree is not None else ("train", "val", "test")
    roots = {"brats_dir": os.path.abspath(config.brats_dir)}
    if config.val_dir is not None:
        roots["val_dir"] = os.path.abspath(config.val_dir)

    used, skipped = set(), []
    chosen: Dict[str, List[Tuple[str, dict]]] = {s: [] for s in counts}
    for split in order:
        for patient, pdir in candidates[split]:
            if len(chosen[split]) >= counts[split]:
                break
            key = os.path.abspath(pdir)
            if key in used:
                continue
            used.add(key)
            try:
                rec = extract_patient(patient, pdir, config.modality, config.crop, config.num_slices)
            except PatientError as e:
                if config.on_error == "fail":
                    raise
                logging.warning("Skipping %s", e)
                skipped.append({"patient": patient, "file": e.path, "error": str(e), "split": split})
                continue
            chosen[split].append((patient, rec))
        if len(chosen[split]) < counts[split]:
            raise DataPrepError(
                f"found only {len(chosen[split])} usable patients for split {split!r}, but "
                f"{counts[split]} were requested ({len(skipped)} patients skipped as unusable: "
                + "; ".join(s["error"] for s in skipped[:5]) + ")"
            )

    h, w = config.crop
    manifest = {
        "format": "loa_meta.prepared_slices",
        "format_version": FORMAT_VERSION,
        "tool": "data_prep.brats",
        "tool_version": loa_meta.__version__,
        "flags": config.to_dict(),
        "seed": config.seed,
        "modality": config.modality,
        "grade": config.grade,
        "source_roots": roots,
        "orientation": "RAS via nibabel.as_closest_canonical; image[r, c] = volume[x0 + r, y0 + c, k]",
        "crop": [h, w],
        "crop_rule": "centred: x0 = (X - H) // 2, y0 = (Y - W) // 2",
        "slice_rule": "num_slices adjacent axial slices starting at Z // 2 - num_slices // 2",
        "normalisation": "each cropped slice divided by its maximum (scale recorded per slice)",
        "validation_source": "val_dir" if val_tree is not None else "brats_dir",
        "splits": {},
        "skipped": skipped,
    }
    summary = {"output_dir": os.path.abspath(config.output_dir), "skipped": len(skipped), "splits": {}}
    with atomic_output_dir(config.output_dir, overwrite=config.overwrite) as tmp:
        for split in ("train", "val", "test"):
            recs = chosen[split]
            arr = (
                np.concatenate([r["images"] for _, r in recs], axis=0)
                if recs else np.zeros((0, h, w), np.float32)
            ).astype(np.float32)
            fname = f"{split}.npy"
            fpath = os.path.join(tmp, fname)
            np.save(fpath, arr, allow_pickle=False)
            slices, patients = [], []
            for patient, r in recs:
                patients.append({
                    "patient": patient,
                    "file": r["file"],
                    "sha256": r["sha256"],
                    "stored_shape": r["stored_shape"],
                    "stored_orientation": r["stored_orientation"],
                    "ras_shape": r["ras_shape"],
                    "crop_box": r["crop_box"],
                    "slice_indices": r["slice_indices"],
                })
                for k, s in zip(r["slice_indices"], r["scales"]):
                    slices.append({"patient": patient, "file": r["file"], "slice_index": k, "scale": s})
            manifest["splits"][split] = {
                "file": fname,
                "sha256": sha256_file(fpath),
                "shape": [int(s) for s in arr.shape],
                "dtype": "float32",
                "patients": patients,
                "slices": slices,
            }
            summary["splits"][split] = {"patients": len(recs), "slices": int(arr.shape[0])}
        with open(os.path.join(tmp, MANIFEST_NAME), "wb") as f:
            f.write(_json_bytes(manifest))
    logging.info("Prepared %s: %s", config.output_dir, summary)
    return summary


def _parse_crop(text: str) -> Tuple[int, int]:
    try:
        parts = tuple(int(p) for p in str(text).split(","))
    except ValueError:
        parts = ()
    if len(parts) != 2 or min(parts) < 1:
        raise DataPrepError(f"--crop must be two positive integers H,W (e.g. 160,180), but received: {text!r}")
    return parts


def main(argv):
    from absl import flags

    del argv
    f = flags.FLAGS
    try:
        config = PrepConfig(
            brats_dir=f.brats_dir, output_dir=f.output_dir, val_dir=f.val_dir, modality=f.modality,
            grade=f.grade, num_train=f.num_train, num_val=f.num_val, num_test=f.num_test,
            crop=_parse_crop(f.crop), num_slices=f.num_slices, seed=f.seed, on_error=f.on_error,
            overwrite=f.overwrite,
        )
        summary = prepare_brats(config)
    except (DataPrepError, ValueError) as e:
        print(f"data_prep.brats: error: {e}", file=sys.stderr)
        sys.exit(2)
    print(json.dumps(summary, indent=1, sort_keys=True))


def _define_flags():
    from absl import flags

    flags.DEFINE_string("brats_dir", None, "BraTS training tree with HGG/ and LGG/ patient folders.")
    flags.DEFINE_string("output_dir", None, "Destination directory (written atomically).")
    flags.DEFINE_string("val_dir", None, "Optional BraTS validation tree (patient folders); validation patients are drawn from it.")
    flags.DEFINE_enum("modality", "t1", list(MODALITIES), "Modality to prepare.")
    flags.DEFINE_enum("grade", "HGG", list(GRADES), "Glioma grade folder of the training tree.")
    flags.DEFINE_integer("num_train", 30, "Training patients.")
    flags.DEFINE_integer("num_val", 15, "Validation patients.")
    flags.DEFINE_integer("num_test", 6, "Test patients (from the training tree).")
    flags.DEFINE_string("crop", "160,180", "In-plane centre crop H,W.")
    flags.DEFINE_integer("num_slices", 10, "Adjacent central axial slices per patient.")
    flags.DEFINE_integer("seed", 0, "Seed of the patient permutation.")
    flags.DEFINE_enum("on_error", "fail", list(ON_ERROR), "Skip bad patients (counted) or fail.")
    flags.DEFINE_boolean("overwrite", False, "Replace a non-empty --output_dir.")
    flags.mark_flags_as_required(["brats_dir", "output_dir"])


if __name__ == "__main__":
    from experiments import cli

    _define_flags()
    cli.run(main)
