"""Probe: where in the image does a reconstruction lose SSIM against TV? (issue 11)

  PYTHONPATH=. python benchmarks/probe_ssim_regions.py --data_dir=DATA160 --split=test \
      --tasks=radial:0.1,radial:0.2,radial:0.3,radial:0.4 --mask_seed=0 \
      --models=Meta-learning=pretrained:demo-t1-radial --tv_config=EVAL/config.json --output=SSIM.json

SSIM (paper Eq. 22, ``loa_meta.metrics``) is the mean of a map over every 7x7 window
(``loa_meta.metrics.ssim_map``). This probe splits that mean into two regions by the ground truth:
*air*, the windows whose ground-truth maximum is below ``--air`` x the slice's peak (outside the head,
where TV's reconstruction is flat), and *tissue*, every other window. A method's SSIM is then
share_air x SSIM_air + share_tissue x SSIM_tissue, so its gap to TV is the sum of two contributions,
share x (method - TV) per region, which the table prints with the PSNR of each method and the RMS
magnitude each leaves in air pixels (ground truth below ``--air`` x peak), in % of the peak.

TV's lambda per task is read from an ``experiments.evaluate`` run's ``config.json`` (``--tv_config``:
tuned on the val split there, never here) or given as ``--tv_lambdas=TASK=LAMBDA,...``. The probe
reconstructs with the same masks, operator and metrics as ``evaluate`` (``evaluate_model``), so its
overall PSNR/SSIM equal that run's table. Results: docs/benchmarks_quality.md 5.30.
"""

from __future__ import annotations

import json
import os
import sys
import time

import numpy as np
from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from experiments import common  # noqa: E402


def define_flags() -> None:
    """The app's flags; defined only when it runs, so that tests can import the functions beside other probes."""
    flags.DEFINE_string("data_dir", None, "Prepared dataset directory (data_prep.brats output).")
    flags.DEFINE_string("split", "test", "Split to score.")
    flags.DEFINE_list("tasks", None, "Task specs, e.g. radial:0.1,radial:0.2.")
    flags.DEFINE_string("mask_dir", None, "Directory of saved masks <task.name>.npy (else built from --mask_seed).")
    flags.DEFINE_integer("mask_seed", 0, "Seed of masks built from the task specs.")
    flags.DEFINE_list("models", [], "METHOD=PATH of .keras models (pretrained:NAME allowed); '{task}' in PATH: one "
                      "model per task (conventional training), as in experiments.evaluate.")
    flags.DEFINE_string("tv_config", None, "config.json of an experiments.evaluate run: its tuned tv_lambdas.")
    flags.DEFINE_list("tv_lambdas", None, "TASK=LAMBDA per task (task names as radial_0.10), instead of --tv_config.")
    flags.DEFINE_integer("tv_iters", 1000, "Chambolle-Pock iterations of TV (evaluate's default).", lower_bound=1)
    flags.DEFINE_float("air", 0.05, "A window (a pixel) is air if the ground truth's maximum over it (its value) "
                       "is below this fraction of the slice's peak.", lower_bound=0.0, upper_bound=1.0)
    flags.DEFINE_string("output", None, "JSON file of the results (written atomically).")


FLAGS = flags.FLAGS


def window_max(a: np.ndarray, k: int) -> np.ndarray:
    """Maximum over every k x k window that fits: (N, H, W) -> (N, H-k+1, W-k+1), aligned with ssim_map."""
    return np.lib.stride_tricks.sliding_window_view(a, (k, k), axis=(-2, -1)).max(axis=(-2, -1))


def region_scores(recon: np.ndarray, target: np.ndarray, air: float, win: int) -> dict:
    """SSIM over air / tissue windows and their shares, PSNR, RMS in air pixels (in % of the peak)."""
    from loa_meta.metrics import psnr, ssim_map

    maps = ssim_map(recon, target, win_size=win)
    peak = target.max(axis=(-2, -1), keepdims=True)
    air_win = window_max(target, win) < air * peak
    air_pix = target < air * peak
    share = air_win.mean()
    rms = np.sqrt(np.sum(np.where(air_pix, (recon / peak) ** 2, 0.0)) / max(air_pix.sum(), 1))  # each slice's peak
    return {
        "psnr": float(np.mean(psnr(recon, target))),
        "ssim": float(maps.mean()),
        "ssim_air": float(maps[air_win].mean()) if air_win.any() else float("nan"),
        "ssim_tissue": float(maps[~air_win].mean()),
        "share_air": float(share),
        "rms_air_pct": 100.0 * float(rms),
    }


def main(argv):
    del argv
    from loa_meta.evaluation import classical
    from loa_meta.evaluation.evaluate import evaluate_model, model_reconstruct_fn, zero_filled_fn
    from loa_meta.evaluation.tables import atomic_write_text
    from loa_meta.metrics import SSIM_WIN
    from loa_meta.sampling import model_task_ids, parse_task_specs

    common.require("data_dir", FLAGS.data_dir)
    common.require("tasks", FLAGS.tasks)
    common.require("output", FLAGS.output)
    tasks = parse_task_specs(FLAGS.tasks)
    if FLAGS.tv_config:
        try:
            with open(FLAGS.tv_config) as f:
                tv = {k.split("/", 1)[1]: float(v) for k, v in json.load(f)["tv_lambdas"].items() if k.startswith("TV/")}
        except (OSError, ValueError, KeyError, IndexError) as e:
            raise common.usage_error("tv_config", f"cannot read the tuned TV lambdas from {FLAGS.tv_config}: {e}")
    elif FLAGS.tv_lambdas:
        try:
            tv = {k: float(v) for k, v in (item.split("=", 1) for item in FLAGS.tv_lambdas)}
        except ValueError:
            raise common.usage_error("tv_lambdas", f"expected TASK=LAMBDA items, but received: {FLAGS.tv_lambdas}")
    else:
        raise common.usage_error("tv_config", "give --tv_config (an evaluate run's config.json) or --tv_lambdas")
    missing = [t.name for t in tasks if t.name not in tv]
    if missing:
        raise common.usage_error("tv_config" if FLAGS.tv_config else "tv_lambdas", f"no TV lambda for the tasks {missing}")

    images = common.load_split_images(FLAGS.data_dir, FLAGS.split)
    n, h, w = images.shape
    target = np.abs(images).astype(np.float64)
    masks, _ = common.load_task_masks(tasks, (h, w), FLAGS.mask_dir, FLAGS.mask_seed)
    keep = tuple(range(n))
    recons = {"Zero-filled": evaluate_model(zero_filled_fn, images, masks, keep=keep)}
    specs = common.parse_model_specs(FLAGS.models)  # METHOD=PATH, '{task}' and pretrained:NAME as in evaluate
    common.check_model_files(specs, tasks)
    for spec in specs:
        if spec.per_task:  # one model per task (conventional training)
            recons[spec.method] = {}
            for t in tasks:
                model = common.load_model(spec.path_for(t), flag="models")
                recons[spec.method].update(evaluate_model(model_reconstruct_fn(model), images, {t.name: masks[t.name]},
                                                          task_ids=[0], keep=keep))
        else:
            model = common.load_model(spec.path, flag="models")
            recons[spec.method] = evaluate_model(model_reconstruct_fn(model), images, masks,
                                                 task_ids=model_task_ids(model, tasks), keep=keep)
    start = time.time()
    recons["TV"] = {}
    for t in tasks:
        recons["TV"].update(evaluate_model(classical.tv_reconstruct_fn(tv[t.name], FLAGS.tv_iters), images,
                                           {t.name: masks[t.name]}, keep=keep))
    print(f"TV: {time.time() - start:.0f} s for {len(tasks)} tasks x {n} slices")

    results = {}
    for t in tasks:
        results[t.name] = {m: region_scores(np.stack([r[t.name]["examples"][i] for i in keep]), target,
                                            FLAGS.air, SSIM_WIN) for m, r in recons.items()}
    lines = [f"air: ground truth below {FLAGS.air:g} x peak (windows: their maximum); TV lambdas {tv}", "",
             "| task | method | PSNR | SSIM | SSIM air | SSIM tissue | air share | RMS in air (% peak) "
             "| SSIM - TV | of which air | of which tissue |", "|" + "---|" * 11]
    for t in tasks:
        ref = results[t.name]["TV"]
        for m, s in results[t.name].items():
            a = s["share_air"]
            d_air = a * (s["ssim_air"] - ref["ssim_air"])
            d_tis = (1 - a) * (s["ssim_tissue"] - ref["ssim_tissue"])
            s.update({"ssim_minus_tv": s["ssim"] - ref["ssim"], "from_air": d_air, "from_tissue": d_tis})
            lines.append(f"| {t.name} | {m} | {s['psnr']:.2f} | {s['ssim']:.4f} | {s['ssim_air']:.4f} | "
                         f"{s['ssim_tissue']:.4f} | {a:.3f} | {s['rms_air_pct']:.2f} | {s['ssim'] - ref['ssim']:+.4f} | "
                         f"{d_air:+.4f} | {d_tis:+.4f} |")
    print("\n".join(lines))
    config = {"flags": {k: FLAGS[k].value for k in ("data_dir", "split", "tasks", "mask_dir", "mask_seed", "models",
                                                     "tv_config", "tv_lambdas", "tv_iters", "air")},
              "tv_lambdas": tv, "results": results}
    atomic_write_text(FLAGS.output, json.dumps(config, indent=1, sort_keys=True))


if __name__ == "__main__":
    define_flags()
    app.run(main)
