"""Pretrained models shipped with the package, loaded by name.

Each model ``NAME`` is two files in this package directory:

* ``NAME.keras`` -- the trained Keras model (a few kilobytes for LOANet);
* ``NAME.json``  -- its model card: what it was trained on and how, and how good it is (fields in
  :data:`CARD_FIELDS`; the ``table`` holds the test-split rows of zero-filled, TV and the model per
  task, so that the card states the model against the classical baseline).

Use::

    from loa_meta import pretrained
    pretrained.available()                      # names shipped with this installation
    model = pretrained.load("demo-t1-radial")   # a keras.Model
    pretrained.card("demo-t1-radial")["command"]

and in the apps ``--model=pretrained:NAME`` (``experiments.reconstruct``, ``evaluate``, ``adapt``).
:func:`install` writes a trained model and its validated card into the directory (how a model is
added to the package). The environment variable ``LOA_META_PRETRAINED_DIR`` replaces the package
directory (tests; a private model collection).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from typing import Any, Dict, List, Mapping, Optional

from loa_meta.fileio import atomic_path, write_json_atomic

PREFIX = "pretrained:"
ENV_DIR = "LOA_META_PRETRAINED_DIR"
CARD_FIELDS = {
    "name": "the model's name (= the file stem)",
    "description": "one sentence: what the model reconstructs",
    "data": "the training data (dataset, modality, split sizes, crop) and how to rebuild it",
    "command": "the command that trained the model (reproduces it)",
    "commit": "git commit of loa-meta that trained it",
    "training_seconds": "wall time of the training command",
    "machine": "where it was trained (cores, GPU)",
    "tasks": "task specs in task-id order (task id i <-> tasks[i])",
    "image_shape": "[H, W] of the training slices",
    "table": "test-split rows: [{task, method, psnr_mean, psnr_std, ssim_mean, ...}] incl. Zero-filled and TV",
}
# Optional card fields (validated when present).
OPTIONAL_CARD_FIELDS = {
    "inference_iterations": "beyond the paper: {chosen: {task spec: N}, selection: how N was chosen (never on the "
                            "test split), table: test-split rows of the model run for N iterations}",
}
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]*$")


class UnknownPretrainedModel(ValueError):
    """No shipped model has this name (the message lists the known names)."""


def directory() -> str:
    """The directory searched for models (``LOA_META_PRETRAINED_DIR`` or this package's)."""
    return os.environ.get(ENV_DIR) or os.path.dirname(os.path.abspath(__file__))


def available(where: Optional[str] = None) -> List[str]:
    """Sorted names of the models with both a ``.keras`` file and a ``.json`` card."""
    d = where or directory()
    if not os.path.isdir(d):
        return []
    stems = {f[: -len(".keras")] for f in os.listdir(d) if f.endswith(".keras")}
    return sorted(s for s in stems if os.path.isfile(os.path.join(d, s + ".json")))


def _known(where: Optional[str]) -> str:
    names = available(where)
    return ", ".join(names) if names else "none (no pretrained model is shipped with this installation yet)"


def _check_name(name: str, where: Optional[str] = None) -> str:
    if not isinstance(name, str) or name not in available(where):
        raise UnknownPretrainedModel(
            f"Unknown pretrained model {name!r} in {where or directory()}; known names: {_known(where)}."
        )
    return name


def model_path(name: str, where: Optional[str] = None) -> str:
    """Path of the ``.keras`` file of model ``name`` (``UnknownPretrainedModel`` otherwise)."""
    _check_name(name, where)
    return os.path.join(where or directory(), name + ".keras")


def resolve(spec: str, where: Optional[str] = None) -> str:
    """``"pretrained:NAME"`` -> the path of that model's file; any other string is returned as is."""
    if isinstance(spec, str) and spec.startswith(PREFIX):
        return model_path(spec[len(PREFIX):], where)
    return spec


def check_model_name(name: str) -> str:
    """``name`` if it can name a shipped model (lower case, digits, '.', '_', '-'); ``ValueError`` otherwise."""
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ValueError(f"Model name {name!r} must match {_NAME_RE.pattern}")
    return name


def validate_card(card: Mapping[str, Any]) -> Dict[str, Any]:
    """The card as a dict if it has every field of :data:`CARD_FIELDS` and a usable table.

    The table must hold, for every task in ``tasks``, a ``Zero-filled`` and a ``TV`` row and at
    least one other (the model's) row, each with a numeric ``psnr_mean``.
    """
    if not isinstance(card, Mapping):
        raise ValueError(f"A model card must be a JSON object, but received: {type(card).__name__}")
    missing = [k for k in CARD_FIELDS if k not in card]
    if missing:
        raise ValueError(f"Model card lacks the field(s) {missing}; expected: "
                         + "; ".join(f"{k} ({v})" for k, v in CARD_FIELDS.items()))
    check_model_name(str(card["name"]))
    tasks = card["tasks"]
    if not isinstance(tasks, list) or not tasks:
        raise ValueError(f"Model card field 'tasks' must be a non-empty list of task specs, but received: {tasks!r}")
    from loa_meta.sampling import parse_task_spec

    names = [parse_task_spec(t).name for t in tasks]
    rows = card["table"]
    if not isinstance(rows, list):
        raise ValueError("Model card field 'table' must be a list of rows.")
    for r in rows:
        if not isinstance(r, Mapping) or not isinstance(r.get("psnr_mean"), (int, float)):
            raise ValueError(f"Model card table row {r!r} needs 'task', 'method' and a numeric 'psnr_mean'.")
    for t in names:
        methods = {r.get("method") for r in rows if r.get("task") == t}
        need = {"Zero-filled", "TV"}
        if not need <= methods or len(methods - need) < 1:
            raise ValueError(f"Model card table must have Zero-filled, TV and the model's rows for task {t}, "
                             f"but has: {sorted(m for m in methods if m)}")
    if "inference_iterations" in card:
        _check_inference_iterations(card["inference_iterations"], tasks)
    return dict(card)


def _check_inference_iterations(entry: Any, tasks: List[str]) -> None:
    """The optional ``inference_iterations`` field: a count per task spec, how it was chosen, its rows."""
    if not isinstance(entry, Mapping) or not {"chosen", "selection", "table"} <= set(entry):
        raise ValueError(f"Model card field 'inference_iterations' must be {OPTIONAL_CARD_FIELDS['inference_iterations']}"
                         f", but received: {entry!r}")
    chosen = entry["chosen"]
    if not isinstance(chosen, Mapping) or sorted(chosen) != sorted(tasks) or not all(
            isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in chosen.values()):
        raise ValueError(f"Model card field 'inference_iterations.chosen' must map each of the tasks {tasks} to a "
                         f"positive integer, but received: {chosen!r}")
    rows = entry["table"]
    if not isinstance(rows, list) or not all(isinstance(r, Mapping) and isinstance(r.get("psnr_mean"), (int, float))
                                             for r in rows):
        raise ValueError("Model card field 'inference_iterations.table' must be a list of rows with a numeric "
                         "'psnr_mean'.")


def recommended_iterations(name: str, where: Optional[str] = None) -> Optional[List[int]]:
    """The card's inference iteration count per task, in task-id order (``None`` if it states none).

    Beyond the paper: ``model.reconstruct(y, mask, task_id, num_iterations=N)`` with these counts (or
    ``experiments.evaluate --iterations=...``); how they were chosen is the card's
    ``inference_iterations.selection``.
    """
    c = card(name, where)
    entry = c.get("inference_iterations")
    return None if entry is None else [int(entry["chosen"][t]) for t in c["tasks"]]


def card(name: str, where: Optional[str] = None) -> Dict[str, Any]:
    """The validated model card of ``name``."""
    _check_name(name, where)
    path = os.path.join(where or directory(), name + ".json")
    with open(path, encoding="utf-8") as f:
        try:
            data = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"Model card {path} is not valid JSON: {e}") from None
    try:
        return validate_card(data)
    except ValueError as e:
        raise ValueError(f"Model card {path}: {e}") from None


def load(name: str, where: Optional[str] = None):
    """The shipped model ``name`` as a ``keras.Model`` (its card is checked first)."""
    import keras

    import loa_meta.layers  # noqa: F401  (registers the serializable classes)
    import loa_meta.models  # noqa: F401

    card(name, where)
    return keras.saving.load_model(model_path(name, where), compile=False)


def install(name: str, model_file: str, model_card: Mapping[str, Any], where: Optional[str] = None) -> str:
    """Copy a trained ``.keras`` file and write its card as model ``name``; returns the model path.

    The card is validated (and its ``name`` must equal ``name``) before anything is written; both
    files are written atomically.
    """
    c = validate_card(model_card)
    if c["name"] != name:
        raise ValueError(f"Model card name {c['name']!r} differs from the model name {name!r}.")
    if not (os.path.isfile(model_file) and model_file.endswith(".keras")):
        raise ValueError(f"Argument `model_file` must be an existing .keras file, but received: {model_file}")
    d = where or directory()
    os.makedirs(d, exist_ok=True)
    dest = os.path.join(d, name + ".keras")
    with atomic_path(dest, suffix=".keras") as tmp:
        shutil.copyfile(model_file, tmp)
    write_json_atomic(os.path.join(d, name + ".json"), c)
    return dest
