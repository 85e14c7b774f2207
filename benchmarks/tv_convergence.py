"""Benchmark: is the TV baseline converged? Tuned TV PSNR against the number of Chambolle-Pock iterations.

For each radial ratio, the TV weight is chosen on the val split (as every quality table does) once per
iteration count, and the chosen lambda's mean PSNR is reported on val (the choice) and on test (for the
record). The last count of ``--iters`` is the reference; a count is "converged" at a ratio when its tuned
val PSNR is within ``--tol_db`` of the reference's. Seconds are wall time of the tuning (all lambdas).

    python benchmarks/tv_convergence.py --data_dir=DATA --iters=200,500,1000,3000 [--val_slices=20]
"""

from __future__ import annotations

import json
import time

import numpy as np
from absl import app, flags

from loa_meta.data.prepared import load_split
from loa_meta.evaluation import classical
from loa_meta.sampling import make_mask

FLAGS = flags.FLAGS
flags.DEFINE_string("data_dir", None, "Prepared data directory (data_prep.brats output).", required=True)
flags.DEFINE_list("ratios", ["0.1", "0.2", "0.3", "0.4"], "Radial sampling ratios.")
flags.DEFINE_list("iters", ["200", "500", "1000", "3000"], "Iteration counts; the last is the reference.")
flags.DEFINE_list("grid", [str(g) for g in classical.TV_LAMBDA_GRID], "Candidate lambdas.")
flags.DEFINE_integer("val_slices", 20, "Val slices on which lambda is chosen (first N).")
flags.DEFINE_integer("test_slices", 20, "Test slices scored (first N; 0 = skip test).")
flags.DEFINE_integer("mask_seed", 0, "Mask seed (the quality tables use 0).")
flags.DEFINE_float("tol_db", 0.02, "Tolerance (dB) of 'converged' against the reference count.")
flags.DEFINE_string("output", None, "Optional JSON file for the results.")


def main(argv):
    del argv
    iters = [int(v) for v in FLAGS.iters]
    grid = [float(g) for g in FLAGS.grid]
    val = load_split(FLAGS.data_dir, "val")[: FLAGS.val_slices]
    test = load_split(FLAGS.data_dir, "test")[: FLAGS.test_slices] if FLAGS.test_slices else None
    out = {"data_dir": FLAGS.data_dir, "shape": list(val.shape[1:]), "iters": iters, "grid": grid, "ratios": {}}
    for r in FLAGS.ratios:
        mask = make_mask("radial", val.shape[1:], float(r), seed=FLAGS.mask_seed).astype(np.float32)
        rows = {}
        for n in iters:
            t0 = time.perf_counter()
            lam, scores = classical.tune_lambda(val, mask, grid, n)
            secs = time.perf_counter() - t0
            row = {"lambda": lam, "val": scores[lam], "val_all": scores, "seconds": secs}
            if test is not None:
                row["test"] = classical.tune_lambda(test, mask, [lam], n)[1][lam]  # the chosen lambda's mean PSNR
            rows[n] = row
            print(f"radial {r} iters {n:5d}: lambda {lam:g} val {scores[lam]:.3f} "
                  f"test {row.get('test', float('nan')):.3f} ({secs:.0f} s)", flush=True)
        ref = rows[iters[-1]]
        for n in iters:
            rows[n]["val_minus_ref"] = rows[n]["val"] - ref["val"]
            rows[n]["converged"] = abs(rows[n]["val_minus_ref"]) <= FLAGS.tol_db
        out["ratios"][r] = {str(n): rows[n] for n in iters}
    print("\n| radial | " + " | ".join(f"{n} it.: lambda, val (- ref), test" for n in iters) + " |")
    print("|---|" + "---|" * len(iters))
    for r, rows in out["ratios"].items():
        cells = [f"{v['lambda']:g}, {v['val']:.2f} ({v['val_minus_ref']:+.2f}), {v.get('test', float('nan')):.2f}"
                 for v in rows.values()]
        print(f"| {float(r):.0%} | " + " | ".join(cells) + " |")
    if FLAGS.output:
        with open(FLAGS.output, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    app.run(main)
