"""One Algorithm 2 cycle (line 8 theta step + line 10 omega step) of a preset's network, timed in one process.

Usage:

  python benchmarks/bench_meta_cycle.py --preset=quickstart --size=64,64 --repeats=8
  python benchmarks/bench_meta_cycle.py --preset=quickstart --size=160,180 --repeats=5 --jit=1

The network is the preset's meta-learning LOANet (its phases, kernels, safeguard, eps_0 floor, step
sizes) on a synthetic cross-task batch (4 tasks x J = 2 for B_tr and for B_val, smooth images,
random masks of density 0.1-0.4). Three computations are timed, interleaved round by round after
one warm-up (trace) call each, so that all of them see the same machine load:

* ``full``: the exact Eq. 18 gradient w.r.t. theta and omega (``penalty_objective_and_grads``), what
  every step computed before the omega-only kernel;
* ``omega``: the same with ``wrt="omega"`` (Algorithm 2's line 10 needs nothing else);
* ``cycle_before`` = 2 x full and ``cycle_after`` = full + omega: one theta and one omega update
  (K = 1, the presets' ``theta_steps``), without the Adam updates (microseconds here).

Prints one JSON line: medians in wall seconds, process CPU seconds, the ratios and the trace times.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="quickstart")
    ap.add_argument("--size", default="64,64", help="H,W of the synthetic slices")
    ap.add_argument("--repeats", type=int, default=8)
    ap.add_argument("--jit", type=int, default=0, help="1: XLA kernels (TrainConfig.jit_compile)")
    ap.add_argument("--phases", type=int, default=None, help="override the preset's number of phases")
    ap.add_argument("--reduction", default=None, help="loss reduction (default: the preset's)")
    a = ap.parse_args()

    import numpy as np
    import tensorflow as tf

    from _timing import synthetic_meta_batch
    from experiments.presets import get_preset
    from loa_meta.models.loa_net import LOANet
    from loa_meta.physics.fft import fft2c
    from loa_meta.training.algorithm2 import penalty_objective_and_grads

    preset = get_preset(a.preset)
    h, w = (int(v) for v in a.size.split(","))
    phases = a.phases or preset.num_phases
    reduction = a.reduction or preset.loss_reduction
    c = dict(h=h, w=w, tasks=4, per_task=preset.per_task_batch)
    rng = np.random.default_rng(0)
    bt, bv = synthetic_meta_batch(c, rng, fft2c), synthetic_meta_batch(c, rng, fft2c)
    tf.keras.utils.set_random_seed(0)
    model = LOANet(num_phases=phases, num_tasks=4, **preset.model_kwargs())
    lam = tf.constant(preset.lambda0, tf.float32)

    def grad(wrt):
        def fn():
            m, gt, go = penalty_objective_and_grads(model, bt, bv, lam, reduction, jit_compile=bool(a.jit), wrt=wrt)
            return float(m["objective"]) + sum(float(tf.reduce_sum(g)) for g in gt + go)
        return fn

    fns = {"full": grad("all"), "omega": grad("omega")}
    first = {}
    for k, fn in fns.items():
        t0 = time.perf_counter()
        fn()
        first[k] = round(time.perf_counter() - t0, 2)
    wall = {k: [] for k in fns}
    cpu = {k: [] for k in fns}
    for _ in range(a.repeats):
        for k, fn in fns.items():
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            wall[k].append(time.perf_counter() - t0)
            cpu[k].append(time.process_time() - c0)
    med = {k: float(np.median(v)) for k, v in wall.items()}
    med_cpu = {k: float(np.median(v)) for k, v in cpu.items()}
    # per-round ratios (the same round sees the same load)
    round_ratio = [o / f for o, f in zip(wall["omega"], wall["full"])]
    out = dict(preset=a.preset, size=[h, w], phases=phases, filters=preset.filters, safeguard=preset.safeguard,
               jit=a.jit, reduction=reduction, batch=[c["tasks"] * c["per_task"]] * 2, repeats=a.repeats,
               first_call_s=first,
               full_s=round(med["full"], 3), omega_s=round(med["omega"], 3),
               full_cpu_s=round(med_cpu["full"], 2), omega_cpu_s=round(med_cpu["omega"], 2),
               omega_over_full=round(med["omega"] / med["full"], 3),
               omega_over_full_per_round_median=round(float(np.median(round_ratio)), 3),
               cycle_before_s=round(2 * med["full"], 3), cycle_after_s=round(med["full"] + med["omega"], 3),
               cycle_after_over_before=round((med["full"] + med["omega"]) / (2 * med["full"]), 3),
               load_avg_1min=round(os.getloadavg()[0], 1))
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
