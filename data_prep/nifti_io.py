"""Small file helpers for data preparation: atomic output directories and checksums."""

from __future__ import annotations

import contextlib
import os
import tempfile

from loa_meta.data.prepared import sha256_file
from loa_meta.fileio import atomic_dir

__all__ = ["DataPrepError", "atomic_output_dir", "check_output_dir", "sha256_file"]


class DataPrepError(RuntimeError):
    """Preparation cannot proceed; the message names the file, flag or directory and the problem."""


def check_output_dir(output_dir: str, overwrite: bool) -> None:
    """Refuse a non-empty ``output_dir`` unless ``overwrite``, a path that is a file, and a location
    where no directory can be written (the output is built next to it, then renamed into place)."""
    output_dir = os.path.abspath(os.fspath(output_dir))
    if os.path.isfile(output_dir):
        raise DataPrepError(f"--output_dir {output_dir} is an existing file, expected a directory")
    if os.path.isdir(output_dir) and os.listdir(output_dir) and not overwrite:
        raise DataPrepError(
            f"--output_dir {output_dir} exists and is not empty; pass --overwrite to replace it"
        )
    parent = os.path.dirname(output_dir)
    existing = parent
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise DataPrepError(f"--output_dir {output_dir} cannot be created: {existing} is a file, not a directory")
    try:
        os.makedirs(parent, exist_ok=True)
        os.rmdir(tempfile.mkdtemp(prefix=f".{os.path.basename(output_dir)}.probe-", dir=parent))
    except OSError as e:
        raise DataPrepError(
            f"--output_dir {output_dir} cannot be written: creating a directory in {parent} failed "
            f"({e.strerror or e}); choose a writable location"
        ) from None


@contextlib.contextmanager
def atomic_output_dir(output_dir: str, overwrite: bool = False):
    """Yield a temp directory next to ``output_dir``; on success rename it into place.

    On any exception the temp directory is removed and ``output_dir`` is left untouched, so no
    half-written output ever appears under the final name.
    """
    output_dir = os.path.abspath(os.fspath(output_dir))
    check_output_dir(output_dir, overwrite)
    with atomic_dir(output_dir) as tmp:
        yield tmp
