"""Checkpoint helpers around ``tf.train.CheckpointManager`` (atomic writes, clear errors).

The checkpoint of a run holds the model, both Adam optimizers (built *before* restoring so their
slots are restored, not dropped), the step / outer-iteration / stage / num_phases / num_tasks
counters, Algorithm 2's delta and lambda, the stair-wise bookkeeping, the tf.data iterators and the
tf.random.Generator. The stage and num_phases are read from the checkpoint file *before* the model
is built (:func:`read_checkpoint_values`) so that the model is rebuilt with the right number of
phases and then restored.
"""

from __future__ import annotations

import os
from typing import Dict, Iterable, Optional

import tensorflow as tf


class CheckpointError(RuntimeError):
    """A checkpoint is missing, corrupt or does not match the model being restored."""


def checkpoint_dir(workdir: str) -> str:
    return os.path.join(workdir, "ckpt")


def latest_checkpoint(workdir: str) -> Optional[str]:
    """Path prefix of the newest checkpoint in ``workdir/ckpt``, or None for a fresh run.

    Raises:
      CheckpointError: when the directory has a ``checkpoint`` state file but the checkpoint it
        names is missing (deleted or half-copied), instead of silently starting from scratch.
    """
    d = checkpoint_dir(workdir)
    state = os.path.join(d, "checkpoint")
    if not os.path.exists(state):
        return None
    path = tf.train.latest_checkpoint(d)
    if path is None:
        raise CheckpointError(
            f"Checkpoint state file {state} exists but the checkpoint it names is missing or "
            "unreadable; remove the directory to start fresh or restore the files."
        )
    return path


def read_checkpoint_values(path: str, names: Iterable[str]) -> Dict[str, object]:
    """Read scalar variables saved as top-level attributes of a checkpoint without building it."""
    try:
        reader = tf.train.load_checkpoint(path)
    except Exception as e:  # noqa: BLE001 - re-raised with the path
        raise CheckpointError(f"Cannot read checkpoint {path}: {e}") from e
    out = {}
    for n in names:
        key = f"{n}/.ATTRIBUTES/VARIABLE_VALUE"
        if reader.has_tensor(key):
            out[n] = reader.get_tensor(key)
    return out


def restore(checkpoint: tf.train.Checkpoint, path: str) -> None:
    """Restore ``path`` into ``checkpoint`` and assert every existing object was matched."""
    try:
        status = checkpoint.restore(path)
        status.assert_existing_objects_matched()
    except Exception as e:  # noqa: BLE001 - re-raised with the path
        raise CheckpointError(f"Cannot restore checkpoint {path}: {type(e).__name__}: {e}") from e
