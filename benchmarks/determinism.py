"""Probe: are two runs of the same training command bit-identical on this CPU? (session 13)

Starts ``--runs`` copies of ``experiments.train_meta`` with the same flags at the same time (each in its
own process and workdir, a checkpoint after every outer iteration, all kept), then reports, for each
copy against the first, the first checkpoint in which any saved value differs (model, optimizer
moments, counters; ``None``: none differs) and the largest difference of the final model weights. Threads per process come from the
environment (``TF_NUM_INTRAOP_THREADS`` / ``TF_NUM_INTEROP_THREADS``), as for the apps.

  PYTHONPATH=. python benchmarks/determinism.py --data_dir=QS/data/prepared/data --workdir=/tmp/det \
      --steps=100 -- --preset=quickstart --seed=0

The copies run as the apps do: with op determinism and, since session 16, Grappler off during
training. ``GRAPPLER_ON=1`` in the environment keeps Grappler on in the copies (the control).

Results: docs/benchmarks_training.md ("Bit-reproducibility on CPU").
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
from absl import app, flags

flags.DEFINE_string("data_dir", None, "Prepared dataset (data_prep.brats output).")
flags.DEFINE_string("workdir", None, "Output directory (run_<k>/ per copy).")
flags.DEFINE_integer("steps", 100, "--max_steps of every copy.")
flags.DEFINE_integer("runs", 2, "Copies started at the same time.")
FLAGS = flags.FLAGS
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _values(path):
    import tensorflow as tf

    reader = tf.train.load_checkpoint(path)
    out = {}
    for name in reader.get_variable_to_shape_map():
        try:
            out[name] = np.asarray(reader.get_tensor(name))
        except Exception:  # noqa: BLE001 - string/resource entries (iterator state) are not compared
            continue
    return out


def _max_diff(a, b, prefix=""):
    worst = 0.0
    for k in a.keys() & b.keys():
        if not k.startswith(prefix):
            continue
        x, y = a[k], b[k]
        if x.dtype.kind in "fiu" and x.shape == y.shape and x.size:
            worst = max(worst, float(np.max(np.abs(x.astype(np.float64) - y.astype(np.float64)))))
    return worst


def main(argv):
    extra = list(argv[1:])
    dirs = [os.path.join(FLAGS.workdir, f"run_{k}") for k in range(FLAGS.runs)]
    env = dict(os.environ, PYTHONPATH=ROOT, CKPT_EVERY="1")
    os.makedirs(FLAGS.workdir, exist_ok=True)
    procs = [subprocess.Popen([sys.executable, os.path.join(ROOT, "benchmarks", "train_keep_checkpoints.py"),
                               "train_meta", f"--data_dir={FLAGS.data_dir}", f"--workdir={d}",
                               f"--max_steps={FLAGS.steps}", "--average_checkpoints=1", *extra],
                              env=env, stdout=subprocess.DEVNULL, stderr=open(d + ".log", "w"))
             for d in dirs]
    if any(p.wait() != 0 for p in procs):
        raise SystemExit(f"a training copy failed; see {FLAGS.workdir}/run_*.log")

    def ckpts(d):
        n = sorted(int(f[5:-6]) for f in os.listdir(os.path.join(d, "ckpt")) if f.endswith(".index"))
        return {k: os.path.join(d, "ckpt", f"ckpt-{k}") for k in n}

    ref = ckpts(dirs[0])
    report = {"threads": {k: os.environ.get(k) for k in ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS")},
              "steps": FLAGS.steps, "flags": extra, "copies": []}
    for d in dirs[1:]:
        other, first = ckpts(d), None
        for k in sorted(ref.keys() & other.keys()):
            if _max_diff(_values(ref[k]), _values(other[k])) > 0:
                first = k
                break
        last = max(ref.keys() & other.keys())
        report["copies"].append({"run": d, "first_differing_outer_iteration": first,
                                 "final_weights_max_abs_diff": _max_diff(_values(ref[last]), _values(other[last]), "model/")})
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    flags.mark_flags_as_required(["data_dir", "workdir"])
    app.run(main)
