"""Benchmark: the cost of choosing TV's lambda (``classical.tune_lambda``), the step every quality table pays.

Times, interleaved in one process, ``tune_lambda`` on the val split of ``--data_dir`` at one radial
ratio (the grid ``TV_LAMBDA_GRID``, ``TV_ITERS`` iterations) in up to three ways:

* ``grid``: the library as it is (the whole grid as one batch, each copy with its own lambda and step,
  the loop compiled by XLA since session 23);
* ``graph``: the same grid batch with ``jit_compile=False`` (the loop as a TensorFlow graph, as before);
* ``per_lambda``: one call per lambda and chunk of 16 slices (the previous
  tuning loop, with the current solver);
* ``old``: ``tune_lambda`` of another version of ``classical.py`` given by ``--old`` (for example
  ``git show 117e67d:loa_meta/evaluation/classical.py > /tmp/classical_old.py``).

Each round runs every variant once (order rotated per round); the script prints every time, the medians,
the per-round ratios, the chosen lambdas and the largest difference of the val PSNRs between variants.

    python benchmarks/bench_tv_tuning.py --data_dir=DATA --ratio=0.1 --rounds=3 --variants=grid,graph
    python benchmarks/bench_tv_tuning.py --data_dir=DATA --ratio=0.1 --rounds=3 [--old=/tmp/classical_old.py] \
        [--grid_pixels=524288,4194304]    # the grid batch with other pixel budgets per call

Results: docs/benchmarks_classical.md ("Choosing lambda: the grid as one batch").
"""

from __future__ import annotations

import importlib.util
import json
import resource
import time

import numpy as np
from absl import app, flags

from loa_meta.data.prepared import load_split
from loa_meta.evaluation import classical
from loa_meta.sampling import make_mask

FLAGS = flags.FLAGS
flags.DEFINE_string("data_dir", None, "Prepared data directory (data_prep.brats output).", required=True)
flags.DEFINE_float("ratio", 0.1, "Radial sampling ratio.")
flags.DEFINE_integer("val_slices", 20, "Val slices (first N).")
flags.DEFINE_integer("iters", classical.TV_ITERS, "Chambolle-Pock iterations.")
flags.DEFINE_integer("rounds", 3, "Rounds; each times every variant once.")
flags.DEFINE_integer("mask_seed", 0, "Mask seed.")
flags.DEFINE_string("old", None, "Optional path of another classical.py whose tune_lambda is timed as 'old'.")
flags.DEFINE_list("variants", ["grid", "graph", "per_lambda", "old"], "Variants to time (old only with --old).")
flags.DEFINE_list("grid_pixels", [], "Also time the grid batch with these pixel budgets per call (variants "
                  "'grid@N'; the library's is classical.TV_GRID_PIXELS).")


def _per_lambda(val, mask, grid, iters):
    """The tuning loop before the grid batch: one call per lambda and chunk of 16 slices (the library's
    tune_lambda with a one-value grid, so the scoring is the same code)."""
    scores = {lam: classical.tune_lambda(val, mask, [lam], iters, batch_size=16)[1][lam] for lam in grid}
    return max(scores, key=scores.get), scores


def _with_budget(pixels, val, mask, grid):
    saved = classical.TV_GRID_PIXELS
    classical.TV_GRID_PIXELS = pixels
    try:
        return classical.tune_lambda(val, mask, grid, FLAGS.iters)
    finally:
        classical.TV_GRID_PIXELS = saved


def main(argv):
    del argv
    val = load_split(FLAGS.data_dir, "val")[: FLAGS.val_slices]
    mask = make_mask("radial", val.shape[-2:], FLAGS.ratio, seed=FLAGS.mask_seed)
    grid = list(classical.TV_LAMBDA_GRID)
    fns = {"grid": lambda: classical.tune_lambda(val, mask, grid, FLAGS.iters),
           "graph": lambda: classical.tune_lambda(val, mask, grid, FLAGS.iters, jit_compile=False),
           "per_lambda": lambda: _per_lambda(val, mask, grid, FLAGS.iters)}
    for px in FLAGS.grid_pixels:
        fns[f"grid@{int(px)}"] = (lambda px_: lambda: _with_budget(px_, val, mask, grid))(int(px))
    if FLAGS.old:
        spec = importlib.util.spec_from_file_location("classical_old", FLAGS.old)
        old = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(old)
        fns["old"] = lambda: old.tune_lambda(val, mask, grid, FLAGS.iters)
    fns = {k: v for k, v in fns.items() if k in FLAGS.variants or k.startswith("grid@")}
    names = list(fns)
    for name in names:  # trace every variant once, outside the timing
        fns[name]()
    times = {k: [] for k in names}
    results = {}
    for r in range(FLAGS.rounds):
        order = names[r % len(names):] + names[: r % len(names)]
        for name in order:
            t = time.perf_counter()
            results[name] = fns[name]()
            times[name].append(time.perf_counter() - t)
        print(f"round {r}: " + ", ".join(f"{k} {times[k][-1]:.1f} s" for k in names), flush=True)
    ref = names[0]
    out = {
        "data_dir": FLAGS.data_dir, "ratio": FLAGS.ratio, "val_slices": int(len(val)),
        "shape": list(val.shape[-2:]), "iters": FLAGS.iters,
        "times": times, "median": {k: float(np.median(v)) for k, v in times.items()},
        "ratio_to_" + ref: {k: [float(a / b) for a, b in zip(times[k], times[ref])] for k in names},
        "chosen": {k: results[k][0] for k in names},
        "max_psnr_diff_db": {k: max(abs(results[k][1][g] - results[ref][1][g]) for g in grid) for k in names},
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    app.run(main)
