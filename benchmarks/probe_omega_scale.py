"""Probe: is each learned task weight sigma(omega_i) at its best value for the trained theta? (issue 11)

  PYTHONPATH=. python benchmarks/probe_omega_scale.py --model=pretrained:demo-t1-radial --data_dir=P160 \
      --split=val --mask_dir=R1600/masks --factors=0.6,0.8,1.25,1.5 --output=scan.csv

For every task of a meta-learned LOANet (``model.task_specs``) and every factor f, the model is scored
on the split with kappa_i = f * sigma(omega_i) (omega_i replaced by logit(f sigma(omega_i)), theta
unchanged), next to f = 1 (the trained value) and zero filling. Only the task's own weight changes, so
the rows answer whether Algorithm 2's upper level (line 10) left omega_i short of (f > 1 better) or past
(f < 1 better) the weight that suits the learned regulariser r(x; theta) on new images. The PSNR peak
and the SSIM peak are reported separately: they need not coincide (docs/benchmarks_quality.md 5.25).

Score on a split that no training run selected anything on: the ``val`` split of a selection set (the
5.15 / 5.18 sets of new subjects), never the test split of the data the model is reported on. Prints
one line per (task, factor) and writes them as CSV (temporary file, then renamed).
"""

from __future__ import annotations

import csv
import io
import math
import os
import sys

import numpy as np
from absl import app, flags, logging

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from experiments import common  # noqa: E402
from loa_meta.data import load_split  # noqa: E402
from loa_meta.evaluation.evaluate import evaluate_model, model_reconstruct_fn, sigma_omega, zero_filled_fn  # noqa: E402
from loa_meta.fileio import atomic_write_text  # noqa: E402
from loa_meta.sampling import model_task_ids, parse_task_spec  # noqa: E402

flags.DEFINE_string("model", None, "Meta-learned LOANet (.keras file or pretrained:NAME).")
flags.DEFINE_string("data_dir", None, "Prepared slices (data_prep.brats output).")
flags.DEFINE_string("split", "val", "Split to score on (train/val/test); see the module docstring.")
flags.DEFINE_string("mask_dir", None, "Masks of the model's training run (<task.name>.npy); else built from the specs.")
flags.DEFINE_integer("mask_seed", 0, "Seed of masks built from the specs (when --mask_dir lacks them).")
flags.DEFINE_list("factors", ["0.6", "0.8", "1.25", "1.5"], "Multipliers of sigma(omega_i) besides 1.")
flags.DEFINE_string("output", None, "CSV of the scan (task, factor, sigma, psnr, ssim).")
FLAGS = flags.FLAGS


def _logit(p: float) -> float:
    return math.log(p / (1.0 - p))


def scan(model, images, masks: dict, factors) -> list:
    """Rows ``{task, factor, sigma, psnr, ssim}`` (means over slices), factor 0 = zero filling."""
    specs = list(masks)
    ids = dict(zip(specs, model_task_ids(model, [parse_task_spec(s) for s in specs])))
    rows = []
    for spec, mask in masks.items():
        one = {spec: mask}
        zf = evaluate_model(zero_filled_fn, images, one)[spec]
        rows.append({"task": spec, "factor": 0.0, "sigma": float("nan"),
                     "psnr": float(np.mean(zf["psnr"])), "ssim": float(np.mean(zf["ssim"]))})
        omega = model.omegas[ids[spec]]
        trained = float(np.asarray(omega))
        base = sigma_omega(model, ids[spec])
        try:
            for f in sorted({1.0, *factors}):
                s = f * base
                if not 0.0 < s < 1.0:
                    raise ValueError(f"--factors: {f} x sigma(omega) = {s:.4f} of task {spec} is outside (0, 1)")
                omega.assign(trained if f == 1.0 else _logit(s))  # f = 1: the trained omega itself
                r = evaluate_model(model_reconstruct_fn(model), images, one, task_ids={spec: ids[spec]})[spec]
                rows.append({"task": spec, "factor": f, "sigma": s,
                             "psnr": float(np.mean(r["psnr"])), "ssim": float(np.mean(r["ssim"]))})
        finally:
            omega.assign(trained)
    return rows


def main(argv):
    del argv
    if not (FLAGS.model and FLAGS.data_dir and FLAGS.output):
        raise app.UsageError("--model, --data_dir and --output are required")
    try:
        factors = [float(f) for f in FLAGS.factors]
    except ValueError:
        raise app.UsageError(f"--factors must be numbers, but received: {FLAGS.factors}") from None
    if any(f <= 0 for f in factors):
        raise app.UsageError(f"--factors must be positive, but received: {FLAGS.factors}")
    model = common.load_model(common.resolve_model_path("model", FLAGS.model))
    specs = [str(s) for s in (getattr(model, "task_specs", None) or [])]
    if not specs or not getattr(model, "use_task_weights", False):
        raise app.UsageError(f"--model: {FLAGS.model} has no task weights omega (a meta-learned LOANet is needed)")
    images = load_split(FLAGS.data_dir, FLAGS.split)
    tasks = [parse_task_spec(s) for s in specs]
    masks, _ = common.load_task_masks(tasks, images.shape[1:], FLAGS.mask_dir, FLAGS.mask_seed)
    rows = scan(model, images, {str(t): masks[t.name] for t in tasks}, factors)
    for r in rows:
        logging.info("%s factor %.2f sigma %.4f PSNR %.2f SSIM %.4f", r["task"], r["factor"], r["sigma"],
                     r["psnr"], r["ssim"])
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=["task", "factor", "sigma", "psnr", "ssim"], lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(FLAGS.output, buf.getvalue())
    print(buf.getvalue(), end="")


if __name__ == "__main__":
    app.run(main)
