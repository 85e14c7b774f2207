"""Model-card tables from ``experiments.evaluate`` workdirs, for ``experiments.publish_pretrained``.

Kept apart from the app so that it can be imported without defining absl flags (tests, other tools).
Errors are flag errors (``app.UsageError``) naming ``--eval_dir`` or ``--iterations_eval_dir``.
"""

from __future__ import annotations

import csv
import json
import os

from experiments.common import require_file, usage_error

BASELINES = ("Zero-filled", "TV", "TV (SigPy)")
NUMERIC = ("psnr_mean", "psnr_std", "ssim_mean", "ssim_std", "nmse_mean", "nmse_std")


def _read_eval(eval_dir: str, flag: str):
    """(config, csv rows) of an evaluate workdir; a missing or unreadable file is an error naming ``flag``."""
    table, cfg_path = os.path.join(eval_dir, "table.csv"), os.path.join(eval_dir, "config.json")
    require_file(flag, table)
    require_file(flag, cfg_path)
    try:
        with open(cfg_path, encoding="utf-8") as f:
            cfg = json.load(f)
        with open(table, newline="", encoding="utf-8") as f:
            raw = list(csv.DictReader(f))
        for r in raw:
            r["n"] = int(r["n"])
            for k in NUMERIC:
                r[k] = float(r[k])
    except (ValueError, KeyError, TypeError) as e:
        raise usage_error(flag, f"{eval_dir} is not an experiments.evaluate workdir (config.json, table.csv): "
                                f"{type(e).__name__}: {e}") from None
    return cfg, raw


def _row(r):
    return dict({"task": r["task"], "method": r["method"], "n": r["n"]}, **{k: r[k] for k in NUMERIC})


def read_table(eval_dir: str, method: str = None):
    """(rows, tasks, image_shape, method) from an evaluate workdir; the rows keep Zero-filled, TV and ``method``."""
    cfg, raw = _read_eval(eval_dir, "eval_dir")
    table = os.path.join(eval_dir, "table.csv")
    methods = sorted({r["method"] for r in raw} - set(BASELINES))
    if method is None:
        if len(methods) != 1:
            raise usage_error("method", f"{table} has the model rows {methods}; name the one to ship")
        method = methods[0]
    elif method not in methods:
        raise usage_error("method", f"{method!r} is not a model row of {table}; it has {methods}")
    rows = [_row(r) for r in raw if r["method"] in (method, "Zero-filled", "TV")]
    return rows, list(cfg["tasks"]), list(cfg["image_shape"]), method


def read_iterations(iter_dir: str, eval_dir: str, method: str, rows, tasks):
    """The card's ``inference_iterations`` entry from an ``evaluate --iterations=auto`` workdir.

    ``rows``/``tasks`` are the main evaluation's (:func:`read_table`); the two runs must have scored the
    same split, tasks, image shape and slices with the same masks (equal zero-filled rows), and ``method``
    must be a model row of both.
    """
    from loa_meta.sampling import parse_task_spec

    flag = "iterations_eval_dir"
    cfg, raw = _read_eval(iter_dir, flag)
    main_cfg, main_raw = _read_eval(eval_dir, "eval_dir")
    chosen = (cfg.get("iterations_chosen") or {}).get(method)
    if not chosen:
        raise usage_error(flag, f"{iter_dir} has no iteration counts chosen for {method!r} (chosen for "
                                f"{sorted(cfg.get('iterations_chosen') or {})}); run experiments.evaluate with "
                                f"--iterations=auto and --models={method}=MODEL")
    for key in ("split", "tasks", "image_shape", "num_slices"):
        if main_cfg.get(key) != cfg.get(key):
            raise usage_error(flag, f"{iter_dir} evaluated {key}={cfg.get(key)!r} but --eval_dir={eval_dir} "
                                    f"{key}={main_cfg.get(key)!r}; both must score the same slices")
    zf = {r["task"]: r["psnr_mean"] for r in raw if r["method"] == "Zero-filled"}
    zf_main = {r["task"]: r["psnr_mean"] for r in main_raw if r["method"] == "Zero-filled"}
    if not zf or sorted(zf) != sorted(zf_main) or any(abs(zf[t] - zf_main[t]) > 1e-6 for t in zf):
        raise usage_error(flag, f"the Zero-filled rows of {iter_dir} ({zf}) differ from those of {eval_dir} "
                                f"({zf_main}): not the same slices and masks (give both runs the same --mask_dir)")
    names = {parse_task_spec(t).name: t for t in tasks}
    if sorted(chosen) != sorted(names):
        raise usage_error(flag, f"{iter_dir} chose counts for {sorted(chosen)}, the card's tasks are {sorted(names)}")
    label = f"{method} (N iterations)"
    table = [dict(_row(r), method=label) for r in raw if r["method"] == method]
    if sorted(r["task"] for r in table) != sorted(names):
        raise usage_error(flag, f"{iter_dir} has {method!r} rows for {sorted(r['task'] for r in table)}, "
                                f"expected one for each of {sorted(names)}")
    tv = {r["task"]: r["psnr_mean"] for r in rows if r["method"] == "TV"}
    at_n = {r["task"]: r["psnr_mean"] for r in table}
    sel_data = cfg.get("iterations_data_dir") or cfg.get("data_dir")
    grid = ",".join(str(g) for g in cfg.get("iterations_grid") or [])
    selection = (f"beyond the paper: per task the count N in {{{grid}}} of the highest mean PSNR on the first "
                 f"{cfg.get('iterations_slices')} slices of the '{cfg.get('iterations_split')}' split of {sel_data}, "
                 "ties within 0.01 dB to the smallest N (experiments.evaluate --iterations=auto, "
                 "loa_meta.evaluation.iterations); never chosen on the evaluated split")

    def _flag(k):
        v = cfg.get(k)
        return None if v is None else f"--{k}={','.join(map(str, v)) if isinstance(v, list) else v}"

    parts = [_flag(k) for k in ("data_dir", "split", "tasks", "mask_dir")] + [f"--models={method}=MODEL",
             "--iterations=auto"] + [_flag(k) for k in ("iterations_data_dir", "iterations_split",
                                                         "iterations_slices", "iterations_grid")]
    if not cfg.get("classical", True):
        parts.append("--noclassical")
    command = "python -m experiments.evaluate " + " ".join(p for p in parts if p)
    note = ("the same slices as 'table' (its Zero-filled and TV rows apply): PSNR - TV "
            + " / ".join(f"{at_n[parse_task_spec(t).name] - tv[parse_task_spec(t).name]:+.2f}" for t in tasks
                         if parse_task_spec(t).name in at_n and parse_task_spec(t).name in tv)
            + f" dB at {', '.join(tasks)}")
    return {"chosen": {names[k]: int(v) for k, v in chosen.items()}, "selection": selection, "command": command,
            "note": note, "table": table}
