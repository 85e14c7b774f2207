r"""Turn a trained model and its evaluation into a shipped pretrained model (``loa_meta.pretrained``).

  python -m experiments.publish_pretrained --name=demo-t1-radial \
      --model=runs/pre/model.keras --eval_dir=runs/pre_eval \
      --description="LOA meta-learned on the demo T1 slices, radial 10-40 %" \
      --data="demo tree, data_prep.brats --crop=160,180, 80/20/20 slices" \
      --command="python -m experiments.train_meta ..." --training_seconds=5400

The model card (``loa_meta.pretrained.CARD_FIELDS``) is built from the flags and from the evaluation
directory written by ``experiments.evaluate`` (``table.csv``: the test-split rows, which must include
Zero-filled and TV, and ``config.json``: tasks and image shape). The commit is the checkout's
``git rev-parse --short HEAD`` unless ``--commit`` is given. Nothing is written when a check fails;
both files are written atomically (``pretrained.install``).

Optionally (beyond the paper) ``--iterations_eval_dir`` names a second ``experiments.evaluate`` workdir
of the same model on the same slices and masks, run with ``--iterations=auto`` (an Algorithm 1
iteration count per task chosen off the evaluated split, ``loa_meta.evaluation.iterations``); its
chosen counts, how they were chosen and its rows become the card's ``inference_iterations`` entry,
read back by ``loa_meta.pretrained.recommended_iterations``. The two evaluations must agree on the
split, tasks, image shape, slice count and zero-filled rows (the same slices and masks), or nothing
is written.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess

from absl import app, flags

from experiments import cli
from experiments.common import require_file, usage_error

flags.DEFINE_string("name", None, "Name of the shipped model (lower case, digits, '.', '_', '-').")
flags.DEFINE_string("model", None, "Trained .keras model to ship.")
flags.DEFINE_string("eval_dir", None, "experiments.evaluate workdir of that model (table.csv, config.json).")
flags.DEFINE_string("method", None, "Method label of the model in table.csv (default: the one row that is "
                    "neither Zero-filled nor a TV row).")
flags.DEFINE_string("description", None, "One sentence: what the model reconstructs.")
flags.DEFINE_string("data", None, "The training data and how to rebuild it.")
flags.DEFINE_string("command", None, "The command that trained the model.")
flags.DEFINE_float("training_seconds", None, "Wall time of the training command.", lower_bound=0.0)
flags.DEFINE_string("machine", "2 CPU cores (no GPU)", "Where it was trained.")
flags.DEFINE_string("commit", None, "loa-meta commit that trained it (default: git rev-parse --short HEAD).")
flags.DEFINE_string("iterations_eval_dir", None, "Optional: an experiments.evaluate workdir of the same model, split "
                    "and masks run with --iterations=auto; its chosen counts and rows become the card's "
                    "inference_iterations entry (beyond the paper).")
flags.DEFINE_string("where", None, "Target directory (default: the loa_meta/pretrained package directory).")
FLAGS = flags.FLAGS

BASELINES = ("Zero-filled", "TV", "TV (SigPy)")
NUMERIC = ("psnr_mean", "psnr_std", "ssim_mean", "ssim_std", "nmse_mean", "nmse_std")


def _commit() -> str:
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() or "unknown"


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


def main(argv):
    del argv
    from loa_meta import pretrained

    try:
        pretrained.check_model_name(FLAGS.name)
    except ValueError as e:
        raise usage_error("name", str(e)) from None
    require_file("model", FLAGS.model)
    rows, tasks, shape, method = read_table(FLAGS.eval_dir, FLAGS.method)
    card = {"name": FLAGS.name, "description": FLAGS.description, "data": FLAGS.data, "command": FLAGS.command,
            "commit": FLAGS.commit or _commit(), "training_seconds": float(FLAGS.training_seconds),
            "machine": FLAGS.machine, "tasks": tasks, "image_shape": shape, "method": method, "table": rows}
    if FLAGS.iterations_eval_dir:
        card["inference_iterations"] = read_iterations(FLAGS.iterations_eval_dir, FLAGS.eval_dir, method, rows, tasks)
    try:
        path = pretrained.install(FLAGS.name, FLAGS.model, card, where=FLAGS.where)
    except ValueError as e:  # the name is valid (checked above): a table without the Zero-filled / TV rows
        raise usage_error("eval_dir", str(e)) from None
    print(f"installed {path} and its card {os.path.splitext(path)[0]}.json")
    from loa_meta.sampling import parse_task_spec

    for t in tasks:
        r = {x["method"]: x["psnr_mean"] for x in rows if x["task"] == parse_task_spec(t).name}
        print(f"  {t}: zero-filled {r.get('Zero-filled', float('nan')):.2f}, TV {r.get('TV', float('nan')):.2f}, "
              f"{method} {r.get(method, float('nan')):.2f} dB (model - TV {r.get(method, 0) - r.get('TV', 0):+.2f})")
    if "inference_iterations" in card:
        ii = card["inference_iterations"]
        print(f"  inference_iterations: {ii['chosen']}; {ii['note']}")


if __name__ == "__main__":
    flags.mark_flags_as_required(["name", "model", "eval_dir", "description", "data", "command", "training_seconds"])
    cli.run(main)
