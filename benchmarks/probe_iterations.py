"""Probe: how many Algorithm 1 iterations should a trained LOA network run at inference, per task? (issue 11)

  PYTHONPATH=. python benchmarks/probe_iterations.py --data_dir=P160 --split=test \
      --tasks=radial:0.1,radial:0.2,radial:0.3,radial:0.4 --mask_seed=0 \
      --model=pretrained:demo-t1-radial --grid=1,2,3,4,5,7,9,11,15,20,30 --output=ITERS.json

A LOA network of T phases is T iterations of Algorithm 1 with learned step sizes;
``LOANet.reconstruct(num_iterations=N)`` runs N iterations, reusing the last phase's step sizes
after T (the learned algorithm run on as an optimiser; ``experiments.evaluate --iterations``
scores a model that way). This probe reconstructs the slices of one split for every N of
``--grid`` and task, with the masks, operator and metrics of ``experiments.evaluate``
(``loa_meta.evaluation.iterations.score_iterations``), prints mean PSNR / SSIM per (task, N) and
picks, per task, the N of the highest mean PSNR; an N within ``--tie_db`` of the best counts as a
tie and the smallest such N wins (``select_iterations``, the rule ``reproduce`` and the quickstart
apply on their held-out slices). The split must be a *selection* set (new subjects
or held-out slices), never the test split the numbers are reported on. Results:
docs/benchmarks_quality.md 5.31.
"""

from __future__ import annotations

import json
import os
import sys
import time

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from experiments import common  # noqa: E402
from loa_meta.evaluation.iterations import DEFAULT_GRID, TIE_DB  # noqa: E402


def define_flags() -> None:
    """The app's flags; defined only when it runs, so that tests can import the functions beside other probes."""
    flags.DEFINE_string("data_dir", None, "Prepared dataset directory (data_prep.brats output).")
    flags.DEFINE_string("split", "val", "Split to score: a selection split, never the one results are reported on.")
    flags.DEFINE_list("tasks", None, "Task specs, e.g. radial:0.1,radial:0.2.")
    flags.DEFINE_string("mask_dir", None, "Directory of saved masks <task.name>.npy (else built from --mask_seed).")
    flags.DEFINE_integer("mask_seed", 0, "Seed of masks built from the task specs.")
    flags.DEFINE_string("model", None, "A LOA .keras model or pretrained:NAME.")
    flags.DEFINE_list("grid", [str(n) for n in DEFAULT_GRID], "Iteration counts to score.")
    flags.DEFINE_float("tie_db", TIE_DB, "Counts within this many dB of the best tie; the smallest wins.", lower_bound=0.0)
    flags.DEFINE_integer("max_slices", 0, "If > 0, only the first N slices.", lower_bound=0)
    flags.DEFINE_string("output", None, "JSON file of the results (written atomically).")


FLAGS = flags.FLAGS


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected positional arguments: {argv[1:]}")
    common.require_dir("data_dir", FLAGS.data_dir)
    tasks = common.parse_tasks(FLAGS.tasks)
    grid = common.parse_int_list(FLAGS.grid, "grid")
    if not grid or min(grid) < 1:
        raise common.usage_error("grid", f"expected positive integers, but received: {FLAGS.grid!r}")
    common.require("model", FLAGS.model)
    path = common.resolve_model_path("model", FLAGS.model)
    common.check_model_file(path, flag="model")
    from loa_meta.evaluation.iterations import select_iterations
    from loa_meta.models import LOANet
    from loa_meta.sampling import model_task_ids

    model = common.load_model(path, flag="model")
    if not isinstance(model, LOANet):
        raise common.usage_error("model", f"{FLAGS.model} is not a LOA network (LOANet)")
    images = common.load_split_images(FLAGS.data_dir, FLAGS.split, FLAGS.max_slices)
    masks, sources = common.load_task_masks(tasks, images.shape[1:], FLAGS.mask_dir, FLAGS.mask_seed)
    try:
        ids = dict(zip([t.name for t in tasks], model_task_ids(model, tasks)))
    except ValueError as e:
        raise common.usage_error("tasks", f"model {FLAGS.model}: {e}") from None
    t0 = time.time()
    chosen, scores = select_iterations(model, images, masks, ids, grid, FLAGS.tie_db)
    print(f"{FLAGS.model} on {FLAGS.data_dir} [{FLAGS.split}], {len(images)} slices, trained phases T = "
          f"{model.num_phases}; mean PSNR (SSIM) per iteration count N:")
    print("| N | " + " | ".join(scores) + " |")
    print("|---|" + "---|" * len(scores))
    for n in grid:
        print(f"| {n} | " + " | ".join(f"{scores[t][n]['psnr']:.2f} ({scores[t][n]['ssim']:.3f})" for t in scores) + " |")
    print("chosen (highest mean PSNR, ties within %g dB to the smallest N): %s" % (FLAGS.tie_db, chosen))
    print("as experiments.evaluate flag: --iterations=" + ",".join(str(chosen[t.name]) for t in tasks))
    print(f"{time.time() - t0:.0f} s")
    if FLAGS.output:
        from loa_meta.evaluation.tables import atomic_write_text

        result = {"model": FLAGS.model, "data_dir": FLAGS.data_dir, "split": FLAGS.split, "num_slices": len(images),
                  "trained_phases": model.num_phases, "mask_sources": sources, "grid": grid, "tie_db": FLAGS.tie_db,
                  "scores": {t: {str(n): v for n, v in s.items()} for t, s in scores.items()}, "chosen": chosen,
                  "evaluate_flag": "--iterations=" + ",".join(str(chosen[t.name]) for t in tasks)}
        atomic_write_text(FLAGS.output, json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    define_flags()
    app.run(main)
