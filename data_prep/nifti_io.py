"""Small file helpers for data preparation: atomic output directories and checksums."""

from __future__ import annotations

import contextlib
import os

from loa_meta.data.prepared import sha256_file
from loa_meta.fileio import atomic_dir

__all__ = ["DataPrepError", "atomic_output_dir", "check_output_dir", "sha256_file"]


class DataPrepError(RuntimeError):
    """Preparation cannot proceed; the message names the file, flag or directory and the problem."""


def check_output_dir(output_dir: str, overwrite: bool) -> None:
    """Refuse a non-empty ``output_dir`` unless ``overwrite``; refuse a path that is a file."""
    if os.path.isfile(output_dir):
        raise DataPrepError(f"--output_dir {output_dir} is an existing file, expected a directory")
    if os.path.isdir(output_dir) and os.listdir(output_dir) and not overwrite:
        raise DataPrepError(
            f"--output_dir {output_dir} exists and is not empty; pass --overwrite to replace it"
        )


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
