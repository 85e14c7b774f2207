"""Atomic file output: every file loa-meta writes appears whole or not at all.

One implementation for masks, tables, configs, NIfTI volumes and weights: write to a temporary
file in the destination directory, then ``os.replace`` it onto the destination (atomic on POSIX).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from typing import Any, Iterator


def current_umask() -> int:
    """The process's umask (read without changing it where /proc allows)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str, suffix: str = "", create_dirs: bool = True) -> Iterator[str]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` only on success.

    Args:
      path: the destination file.
      suffix: suffix of the temporary file (some writers infer the format from it, e.g.
        ``.nii.gz`` or ``.weights.h5``); default ``.tmp``.
      create_dirs: create the destination directory if missing; if False a missing directory
        raises ValueError naming it.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    if create_dirs:
        os.makedirs(directory, exist_ok=True)
    elif not os.path.isdir(directory):
        raise ValueError(f"Cannot write '{path}': directory '{directory}' does not exist.")
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=suffix or ".tmp", dir=directory)
    os.close(fd)
    try:
        yield tmp
        # mkstemp creates 0600; the result gets the mode of an ordinary write (0666 minus the umask)
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def atomic_write_text(path: str, text: str) -> str:
    """Write ``text`` to ``path`` atomically. Returns ``path``."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            f.write(text)
    return path


def write_json_atomic(path: str, obj: Any) -> None:
    """Write ``obj`` as indented, key-sorted JSON to ``path`` atomically (fsynced before the rename)."""
    with atomic_path(path, suffix=".json") as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=2, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())


@contextlib.contextmanager
def atomic_dir(path: str) -> Iterator[str]:
    """Yield a temporary directory next to ``path``; on success it replaces ``path`` as a whole.

    On any exception the temporary directory is removed and ``path`` (if it existed) is untouched,
    so a half-written output directory never appears under the final name.
    """
    path = os.path.abspath(os.fspath(path))
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.tmp-", dir=parent)
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~current_umask())  # mkdtemp creates 0700; as os.makedirs would
        if os.path.exists(path):
            trash = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.old-", dir=parent)
            os.replace(path, os.path.join(trash, "old"))
            os.replace(tmp, path)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
