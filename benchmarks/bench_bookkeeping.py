"""Benchmark: what the training loop's bookkeeping (batch summaries, held-out evaluations) costs a run.

Runs the same training app twice per round in fresh processes, alternately (order rotated per round):
``base`` with the flags of ``--base_args`` (default: none, the preset's intervals) and ``new`` with those
of ``--new_args``, for example other ``--summary_every`` / ``--eval_every`` values. Reports the app's
own training time ("done in N s") and the wall time per run, their medians and the per-round ratios
new / base, and checks that every run saved the same model (bookkeeping only reads the weights, so any
difference is a bug):

    python benchmarks/bench_bookkeeping.py --data_dir=DATA64 --workdir=/tmp/bk --rounds=3 \\
        --base_args=--summary_every=5,--eval_every=10 --new_args=--summary_every=25,--eval_every=25 -- \\
        --preset=quickstart --max_steps=150 --seed=0 --mask_seed=0 \\
        --tasks=radial:0.1,radial:0.2,radial:0.3,radial:0.4

Results: docs/benchmarks_training.md ("Bookkeeping of the training loop").
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time

import numpy as np
from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run as a script, like the others

FLAGS = flags.FLAGS
flags.DEFINE_string("data_dir", None, "Prepared dataset directory.", required=True)
flags.DEFINE_string("workdir", None, "Scratch directory (one run directory per variant and round).", required=True)
flags.DEFINE_string("app", "train_meta", "Training app (experiments.<app>).")
flags.DEFINE_integer("rounds", 3, "Rounds; each runs both variants once.")
flags.DEFINE_list("base_args", [], "Flags of the 'base' variant (comma-separated; default: the preset's intervals).")
flags.DEFINE_list("new_args", [], "Flags of the 'new' variant (comma-separated).")

_DONE = re.compile(r"done in (\d+) s")


def _run(name: str, extra, rest, r: int) -> dict:
    wd = os.path.join(FLAGS.workdir, f"{name}_{r}")
    shutil.rmtree(wd, ignore_errors=True)
    cmd = [sys.executable, "-m", f"experiments.{FLAGS.app}", f"--data_dir={FLAGS.data_dir}", f"--workdir={wd}",
           *rest, *extra]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"{name} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    done = _DONE.findall(proc.stderr)
    return {"wall": wall, "train": float(done[-1]) if done else float("nan"), "model": os.path.join(wd, "model.keras")}


def _weights(path: str):
    from experiments.common import load_model

    return [np.asarray(w) for w in load_model(path).weights]


def main(argv):
    rest = argv[1:]
    variants = {"base": list(FLAGS.base_args), "new": list(FLAGS.new_args)}
    names = list(variants)
    runs = {k: [] for k in names}
    for r in range(FLAGS.rounds):
        order = names[r % 2:] + names[: r % 2]
        for name in order:
            runs[name].append(_run(name, variants[name], rest, r))
        print(f"round {r}: " + ", ".join(f"{k} {runs[k][-1]['train']:.0f} s ({runs[k][-1]['wall']:.0f} s wall)"
                                         for k in names), flush=True)
    ref = _weights(runs["base"][0]["model"])  # every run of either variant must save the same model
    same = all(all(np.array_equal(a, b) for a, b in zip(ref, _weights(x["model"]))) for v in runs.values() for x in v)
    out = {
        "app": FLAGS.app, "args": rest, "base_args": list(FLAGS.base_args), "new_args": list(FLAGS.new_args),
        "train_s": {k: [x["train"] for x in v] for k, v in runs.items()},
        "wall_s": {k: [round(x["wall"], 1) for x in v] for k, v in runs.items()},
        "median_train_s": {k: float(np.median([x["train"] for x in v])) for k, v in runs.items()},
        "ratio_new_to_base_per_round": [round(n["train"] / b["train"], 3) for n, b in zip(runs["new"], runs["base"])],
        "models_identical": bool(same),
    }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    app.run(main)
