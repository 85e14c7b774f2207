"""Benchmark of one bilevel (Algorithm 2) step: gradient of Eq. 18 + one Adam update.

Usage:
  python benchmarks/bench_training.py --config=small --runs=3
  python benchmarks/bench_training.py --config=paper --runs=3

"paper": 160x180 images, 11 phases, 4 tasks, J_tr = J_val = 2 per task (B_tr = B_val = 8 images,
the paper's "batch size 8"). "small": 64x64, 3 phases, 2 tasks, J_tr = J_val = 2 per task.
``--microbatch=m`` accumulates the exact gradient over micro-batches of m samples (0: whole batch).
Reports the median wall time of ``--runs`` steps after one warm-up step, and the peak resident
set size of the process (resource.getrusage ru_maxrss). Prints one JSON line.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from _timing import rss_watchdog, synthetic_meta_batch  # noqa: E402
from loa_meta.models.loa_net import LOANet  # noqa: E402
from loa_meta.physics.fft import fft2c  # noqa: E402
from loa_meta.training.algorithm2 import penalty_objective_and_grads  # noqa: E402

from loa_meta.training.config import MetaConfig  # noqa: E402

FLAGS = flags.DEFINE_string("config", "small", "small | paper")
RUNS = flags.DEFINE_integer("runs", 3, "timed steps (median reported)")
COMPILE = flags.DEFINE_bool("compile", False, "wrap the step in tf.function (tracing is slow)")
SEED = flags.DEFINE_integer("seed", 0, "seed of the synthetic data")
PHASES = flags.DEFINE_integer("phases", None, "override the number of phases")
PER_TASK = flags.DEFINE_integer("per_task", None, "override J_tr = J_val per task")
TASKS = flags.DEFINE_integer("tasks", None, "override the number of tasks")
MAX_RSS_GB = flags.DEFINE_float("max_rss_gb", 8.0, "abort (exit 3) when the process RSS exceeds this")
MICRO = flags.DEFINE_integer("microbatch", 0, "micro-batch size of the exact gradient accumulation (0: whole batch)")
FIRST_ORDER = flags.DEFINE_bool("first_order", False, "time a conventional (first-order) step instead")

CONFIGS = {
    "small": dict(h=64, w=64, phases=3, tasks=2, per_task=2),
    "paper": dict(h=160, w=180, phases=11, tasks=4, per_task=2),
}


def main(argv):
    del argv
    c = dict(CONFIGS[FLAGS.value])
    for k, fl in (("phases", PHASES), ("per_task", PER_TASK), ("tasks", TASKS)):
        if fl.value is not None:
            c[k] = fl.value
    state = {"c": dict(c, microbatch=MICRO.value, compiled=COMPILE.value)}
    rss_watchdog(MAX_RSS_GB.value, state, key="max", report=lambda: {"config": FLAGS.value, **state.get("c", {})})
    rng = np.random.default_rng(SEED.value)
    bt, bv = synthetic_meta_batch(c, rng, fft2c), synthetic_meta_batch(c, rng, fft2c)
    model = LOANet(num_phases=c["phases"], num_tasks=c["tasks"])
    theta = model.theta_variables
    cfg = MetaConfig()
    opt = tf.keras.optimizers.Adam(cfg.learning_rate)
    opt.build(theta)

    from loa_meta.training.algorithm2 import accumulate_loss_gradients

    mb = MICRO.value or None

    def step(a, b, lam):
        if FIRST_ORDER.value:
            loss, _, gt = accumulate_loss_gradients(model, a, theta, "sum", None, mb)
            opt.apply_gradients(zip(gt, theta))
            return loss
        m, gt, go = penalty_objective_and_grads(model, a, b, lam, microbatch_size=mb)
        opt.apply_gradients(zip(gt, theta))
        return m["objective"]

    if COMPILE.value:
        step = tf.function(step)
    lam = tf.constant(1e-5)
    t0 = time.perf_counter()
    step(bt, bv, lam)  # warm-up (and tracing when compiled)
    warm = time.perf_counter() - t0
    times = []
    for _ in range(RUNS.value):
        t0 = time.perf_counter()
        float(step(bt, bv, lam))
        times.append(time.perf_counter() - t0)
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(json.dumps({"config": FLAGS.value, **c, "batch_tr": c["tasks"] * c["per_task"],
                      "compiled": COMPILE.value, "microbatch": MICRO.value, "first_order": FIRST_ORDER.value, "watchdog_max_rss_gb": round(state.get("max", 0), 2), "warmup_s": round(warm, 2),
                      "step_s_median": round(float(np.median(times)), 3),
                      "step_s_all": [round(t, 3) for t in times], "peak_rss_mb": round(rss_mb, 1),
                      "cpus": os.cpu_count(), "load_avg_1min": os.getloadavg()[0]}))


if __name__ == "__main__":
    app.run(main)
