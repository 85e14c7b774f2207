"""Section 5.1 data: prepared slices, tf.data pipelines, k-space files and whole volumes.

Submodules are imported lazily so that NumPy-only users (``data_prep.brats``) do not load TensorFlow.
"""

import importlib

_EXPORTS = {
    "load_split": "prepared",
    "load_manifest": "prepared",
    "PreparedDataError": "prepared",
    "simulate_kspace": "pipeline",
    "task_dataset": "pipeline",
    "cross_task_dataset": "pipeline",
    "load_kspace": "kspace_io",
    "KSpaceData": "kspace_io",
    "KSpaceFileError": "kspace_io",
    "load_volume_slices": "volume",
    "write_volume": "volume",
    "reconstruct_volume": "volume",
    "VolumeSlices": "volume",
    "VolumeError": "volume",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"loa_meta.data.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'loa_meta.data' has no attribute {name!r}")
