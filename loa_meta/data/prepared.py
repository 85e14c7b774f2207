"""Reading a prepared dataset directory written by ``data_prep.brats`` (paper Section 5.1).

Layout::

    <data_dir>/manifest.json   provenance: sources + sha256, per-slice origin, splits, flags
    <data_dir>/train.npy       float32 (N_train, H, W), each slice max-normalised to [0, 1]
    <data_dir>/val.npy
    <data_dir>/test.npy
"""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np

__all__ = ["MANIFEST_NAME", "SPLITS", "PreparedDataError", "load_manifest", "load_split", "sha256_file"]

MANIFEST_NAME = "manifest.json"
SPLITS = ("train", "val", "test")


class PreparedDataError(ValueError):
    """A prepared dataset directory is missing, corrupt or inconsistent with its manifest."""


def sha256_file(path: str, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def load_manifest(data_dir: str) -> dict:
    """Parse ``<data_dir>/manifest.json``; raises :class:`PreparedDataError` naming the file."""
    path = os.path.join(os.fspath(data_dir), MANIFEST_NAME)
    if not os.path.isdir(os.fspath(data_dir)):
        raise PreparedDataError(f"Prepared data directory not found: {data_dir}")
    if not os.path.isfile(path):
        raise PreparedDataError(f"Manifest not found: {path} (was the directory written by data_prep.brats?)")
    try:
        with open(path, "r", encoding="utf-8") as f:
            manifest = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise PreparedDataError(f"Cannot parse manifest {path}: {e}") from e
    if not isinstance(manifest, dict) or "splits" not in manifest:
        raise PreparedDataError(f"Manifest {path} has no 'splits' entry")
    return manifest


def load_split(data_dir: str, split: str, verify_checksum: bool = True) -> np.ndarray:
    """Load one split of a prepared dataset.

    Args:
      data_dir: directory written by ``python -m data_prep.brats``.
      split: ``"train"``, ``"val"`` or ``"test"``.
      verify_checksum: compare the shard's sha256 with the manifest (about 0.1 s per 35 MB).

    Returns:
      float32 array ``(N, H, W)`` with values in [0, 1].

    Raises:
      PreparedDataError: missing or corrupt files, manifest mismatch, NaN/Inf or out-of-range values.
    """
    manifest = load_manifest(data_dir)
    splits = manifest["splits"]
    if split not in splits:
        raise PreparedDataError(
            f"Argument `split` must be one of {sorted(splits)} for {data_dir}, but received: {split!r}"
        )
    entry = splits[split]
    path = os.path.join(os.fspath(data_dir), entry["file"])
    if not os.path.isfile(path):
        raise PreparedDataError(f"Shard for split {split!r} not found: {path}")
    if verify_checksum and sha256_file(path) != entry.get("sha256"):
        raise PreparedDataError(f"Checksum mismatch for {path}: the shard does not match {MANIFEST_NAME}")
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise PreparedDataError(f"Cannot read shard {path}: {e}") from e
    expected = tuple(entry.get("shape", ()))
    if arr.shape != expected or arr.dtype != np.float32:
        raise PreparedDataError(
            f"Shard {path} has shape {arr.shape} dtype {arr.dtype}, but the manifest says shape "
            f"{expected} dtype float32"
        )
    if not np.all(np.isfinite(arr)):
        raise PreparedDataError(f"Shard {path} contains NaN or Inf values")
    if arr.size and (arr.min() < 0.0 or arr.max() > 1.0):
        raise PreparedDataError(f"Shard {path} has values outside [0, 1]: [{arr.min()}, {arr.max()}]")
    return arr
