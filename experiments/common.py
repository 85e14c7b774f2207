"""Shared helpers of the absl apps: workdirs, resolved-config JSON, task lists, model specs, models.

Every helper raises :class:`absl.app.UsageError` (message + non-zero exit, no traceback) for bad
flags, naming the flag and what was expected.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from typing import Dict, List, Mapping, Optional, Sequence

from absl import app, flags

from loa_meta.evaluation.tables import atomic_write_text

MODEL_TEMPLATE_KEYS = ("task",)
_METHOD_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_.*+-]*$")


def usage_error(flag: str, message: str) -> app.UsageError:
    """An error that absl prints as ``FATAL Flags parsing error``-style usage message, exit code 1."""
    return app.UsageError(f"--{flag}: {message}")


def require(flag: str, value) -> None:
    """Fail if a required flag is empty."""
    if value is None or (isinstance(value, (str, list, tuple)) and len(value) == 0):
        raise usage_error(flag, "is required")


def prepare_workdir(workdir: str, flag: str = "workdir") -> str:
    """Create ``workdir`` (and parents); fail clearly if it is a file or not writable."""
    require(flag, workdir)
    workdir = os.path.abspath(os.path.expanduser(workdir))
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise usage_error(flag, f"{workdir} exists and is not a directory")
    try:
        os.makedirs(workdir, exist_ok=True)
    except OSError as e:
        raise usage_error(flag, f"cannot create directory {workdir}: {e}") from None
    if not os.access(workdir, os.W_OK):
        raise usage_error(flag, f"directory {workdir} is not writable")
    return workdir


def require_file(flag: str, path: str) -> str:
    """Fail unless ``path`` names an existing file."""
    require(flag, path)
    if os.path.isdir(path):
        raise usage_error(flag, f"{path} is a directory, expected a file")
    if not os.path.isfile(path):
        raise usage_error(flag, f"file does not exist: {path}")
    return path


def require_dir(flag: str, path: str) -> str:
    """Fail unless ``path`` names an existing directory."""
    require(flag, path)
    if not os.path.isdir(path):
        raise usage_error(flag, f"directory does not exist: {path}")
    return path


def flag_values_dict(names: Optional[Sequence[str]] = None, module: Optional[str] = None) -> Dict[str, object]:
    """The resolved values of the given flags (or of all flags defined by ``module``)."""
    fv = flags.FLAGS
    if names is None:
        if module is None:
            raise ValueError("Give `names` or `module`.")
        names = [f.name for f in fv.get_flags_for_module(module)]
    return {n: fv[n].value for n in names}


def _jsonable(obj):
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    return str(obj)


def write_config_json(workdir: str, config: Mapping[str, object], name: str = "config.json") -> str:
    """Write the resolved configuration as JSON next to the results (atomically)."""
    path = os.path.join(workdir, name)
    atomic_write_text(path, json.dumps(dict(config), indent=2, sort_keys=True, default=_jsonable) + "\n")
    return path


def tf_threads() -> Dict[str, object]:
    """The CPU thread setting of this process, as far as it decides a training run's last bits.

    TensorFlow's intra-op pool (set by ``TF_NUM_INTRAOP_THREADS`` or ``tf.config.threading``; by
    default one thread per usable core) splits reductions such as a convolution's filter gradient, so
    the same command with another thread count trains to other weights (measured:
    docs/benchmarks_training.md, "Continuing a finished run").
    """
    import tensorflow as tf

    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return {"intra_op": tf.config.threading.get_intra_op_parallelism_threads()
            or int(os.environ.get("TF_NUM_INTRAOP_THREADS") or 0) or cores,
            "inter_op": tf.config.threading.get_inter_op_parallelism_threads()
            or int(os.environ.get("TF_NUM_INTEROP_THREADS") or 0) or cores,
            "usable_cores": cores}


def write_run_config(workdir: str, run_info: Mapping[str, object]) -> str:
    """Write ``run_config.json`` with this process's :func:`tf_threads`; if the workdir already holds
    a run started with another intra-op thread count, log a warning: resuming or continuing it then
    does not reproduce one uninterrupted run bit for bit."""
    from absl import logging

    info = dict(run_info, tf_threads=tf_threads())
    path = os.path.join(workdir, "run_config.json")
    try:
        with open(path) as fh:
            before = json.load(fh).get("tf_threads")
    except (OSError, ValueError, AttributeError):
        before = None
    if isinstance(before, dict) and before.get("intra_op") != info["tf_threads"]["intra_op"]:
        logging.warning("%s was trained with %s intra-op threads and continues with %s: the result will "
                        "not be bit-identical to one uninterrupted run (set TF_NUM_INTRAOP_THREADS=%s to keep it).",
                        workdir, before.get("intra_op"), info["tf_threads"]["intra_op"], before.get("intra_op"))
    return write_config_json(workdir, info, name="run_config.json")


def parse_tasks(value, flag: str = "tasks") -> List:
    """Parse a comma list of task specs (``radial:0.1,radial:0.2``) into ``TaskSpec`` objects."""
    from loa_meta.sampling import parse_task_specs

    if isinstance(value, (list, tuple)):
        value = ",".join(value)
    require(flag, value)
    try:
        return parse_task_specs(value)
    except ValueError as e:
        raise usage_error(flag, str(e)) from None


def parse_int_list(value, flag: str, length: Optional[int] = None, what: str = "one per task") -> Optional[List[int]]:
    """Parse ``"0,1,2"`` (or a list) into ints, optionally of a given ``length`` (``what`` says
    what they are in the error, e.g. ``H,W``); None/empty -> None."""
    if value is None or value == "" or value == []:
        return None
    items = value.split(",") if isinstance(value, str) else list(value)
    try:
        out = [int(str(v).strip()) for v in items]
    except ValueError:
        raise usage_error(flag, f"expected a comma list of integers, but received: {value!r}") from None
    if length is not None and len(out) != length:
        raise usage_error(flag, f"expected {length} integers ({what}), but received {len(out)}: {value!r}")
    if any(v < 0 for v in out):
        raise usage_error(flag, f"integers must be >= 0, but received: {value!r}")
    return out


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """One ``METHOD=PATH`` entry of ``--models``.

    ``PATH`` may contain ``{task}``, replaced by each task's filename-safe name (``TaskSpec.name``,
    e.g. ``radial_0.10``): one conventionally trained model per task. Without ``{task}`` one model
    serves all tasks (meta-learning), with task ids from ``--task_ids`` (default 0, 1, ...).
    """

    method: str
    path: str

    @property
    def per_task(self) -> bool:
        return "{task}" in self.path

    def path_for(self, task) -> str:
        return self.path.replace("{task}", task.name) if self.per_task else self.path


def parse_model_specs(value, flag: str = "models") -> List[ModelSpec]:
    """Parse ``meta=runs/meta/model.keras,conventional=runs/conv_{task}/model.keras``.

    Methods are names like ``meta``, ``conventional``, ``ISTA-Net+``; they become table rows.
    ``:`` is accepted instead of ``=`` when the path itself contains no ``=``.
    """
    if isinstance(value, (list, tuple)):
        items = list(value)
    else:
        items = [] if not value else [p for p in (x.strip() for x in str(value).split(",")) if p]
    specs, seen = [], set()
    for item in items:
        if "=" in item:
            method, _, path = item.partition("=")
        elif ":" in item:
            method, _, path = item.partition(":")
        else:
            raise usage_error(flag, f"entry {item!r} must be METHOD=PATH, e.g. meta=runs/meta/model.keras")
        method, path = method.strip(), path.strip()
        if not _METHOD_RE.match(method):
            raise usage_error(flag, f"method name {method!r} must start with a letter and use [A-Za-z0-9_.*+-]")
        if not path:
            raise usage_error(flag, f"entry {item!r} has an empty path")
        bad = [k for k in re.findall(r"{([^}]*)}", path) if k not in MODEL_TEMPLATE_KEYS]
        if bad:
            raise usage_error(flag, f"path {path!r} uses unknown placeholder(s) {bad}; only {{task}} is allowed")
        if method in seen:
            raise usage_error(flag, f"method {method!r} is listed twice")
        path = resolve_model_path(flag, path)
        seen.add(method)
        specs.append(ModelSpec(method, path))
    return specs


def check_model_files(specs: Sequence[ModelSpec], tasks: Sequence, flag: str = "models") -> None:
    """Fail before any work if a model file is missing (for every task of per-task templates)."""
    for s in specs:
        for t in tasks if s.per_task else tasks[:1]:
            p = s.path_for(t)
            what = f" (task {t})" if s.per_task else ""
            if os.path.isdir(p):
                raise usage_error(flag, f"model for method {s.method!r}{what} is a directory, expected a .keras file: {p}")
            if not os.path.isfile(p):
                raise usage_error(flag, f"model file for method {s.method!r}{what} does not exist: {p}")


def resolve_model_path(flag: str, value: str) -> str:
    """``pretrained:NAME`` -> the shipped model's file (loa_meta.pretrained); other values unchanged."""
    from loa_meta import pretrained

    try:
        return pretrained.resolve(value)
    except ValueError as e:
        raise usage_error(flag, str(e)) from None


def check_model_file(path: str, flag: str = "model") -> str:
    """Resolve ``pretrained:NAME`` (see :func:`resolve_model_path`), then fail unless the result is an existing
    ``.keras`` file that is a zip archive (cheap: no TensorFlow). Returns the resolved path."""
    import zipfile

    path = resolve_model_path(flag, path)
    require_file(flag, path)
    if not path.endswith(".keras"):
        raise usage_error(flag, f"expected a Keras v3 '.keras' model file, but received: {path}")
    if not zipfile.is_zipfile(path):
        raise usage_error(flag, f"{path} is not a valid .keras file (a .keras file is a zip archive; this one is "
                                f"truncated, corrupt or of another format)")
    return path


def load_model(path: str, flag: str = "model"):
    """Load a ``.keras`` model (or ``pretrained:NAME``) with the loa_meta layers registered; clear error on failure."""
    path = check_model_file(path, flag)
    import keras

    _register_custom_objects()
    try:
        return keras.saving.load_model(path, compile=False)
    except Exception as e:  # noqa: BLE001 - any load failure becomes a flag error
        raise usage_error(flag, f"cannot load model {path}: {type(e).__name__}: {e}") from None


def _register_custom_objects() -> None:
    """Import the modules whose classes are registered as serializable (``package="loa_meta"``)."""
    import importlib

    for mod in ("loa_meta.layers", "loa_meta.models"):
        try:
            importlib.import_module(mod)
        except ImportError:  # pragma: no cover - partial installs
            pass


def load_split_images(data_dir: str, split: str, max_slices: int = 0, flag: str = "data_dir"):
    """The prepared ``split`` of ``data_dir`` (its first ``max_slices`` if > 0); a missing or corrupt split
    is a usage error naming ``--flag``."""
    from loa_meta.data import load_split

    try:
        images = load_split(data_dir, split)
    except ValueError as e:
        raise usage_error(flag, str(e)) from None
    return images[:max_slices] if max_slices else images


def load_task_masks(tasks: Sequence, shape, mask_dir: Optional[str], seed: int, flag: str = "mask_dir"):
    """Masks for the tasks: from ``mask_dir/<task.name>.{npy,npz,mat,png}`` when present (the masks
    saved at training time), else ``task.build_mask(shape, seed)``.

    Returns:
      ``(masks, sources)``: dict task name -> float32 ``(H, W)`` mask, dict task name -> origin.
    """
    import numpy as np

    from loa_meta.sampling import load_mask

    if mask_dir:
        require_dir(flag, mask_dir)
    masks, sources = {}, {}
    for t in tasks:
        found = None
        if mask_dir:
            for ext in (".npy", ".npz", ".mat", ".png"):
                p = os.path.join(mask_dir, t.name + ext)
                if os.path.isfile(p):
                    found = p
                    break
        try:
            if found:
                m = load_mask(found, shape=tuple(shape))
                sources[t.name] = found
            else:
                m = t.build_mask(tuple(shape), seed=seed)
                sources[t.name] = f"built from spec '{t}' with seed {seed}"
        except ValueError as e:
            raise usage_error(flag if found else "tasks", str(e)) from None
        masks[t.name] = np.asarray(m, np.float32)
    return masks, sources
