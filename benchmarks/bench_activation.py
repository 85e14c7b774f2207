"""Does a Relu-only smoothed ReLU make the exact Eq. 18 gradient faster? Timed A/B in one process.

  python benchmarks/bench_activation.py --size=160,180 --repeats=6
  python benchmarks/bench_activation.py --size=64,64 --repeats=8

``loa_meta.layers.smoothed_relu`` computes Eq. 20 and its derivative with ``tf.where`` / ``maximum`` /
``clip_by_value``, whose gradients (and the gradients of those gradients, which Eq. 18 needs) are
``SelectV2`` ops. The same functions can be written with ``Relu`` alone:

    u       = 1 - relu(1 - relu(x + d) / (2 d))      (= clip((x + d) / (2 d), 0, 1), exactly 0 and 1 outside)
    phi'(x) = u
    phi(x)  = relu(x - d) + d u^2

whose gradients are fused ``ReluGrad`` ops. This script builds the quickstart preset's meta-learning
network (the shipped model's: 3 phases, 16 kernels, no safeguard) twice, once with each form (the
library's functions are swapped before the second network is traced), checks that both give the same
objective and gradients, and times the full exact gradient (``penalty_objective_and_grads``) of both,
interleaved round by round, with TensorFlow's graph optimizer off as in the training loop. It prints one
JSON line: medians, the per-round ratios, the largest relative gradient difference. Results:
docs/benchmarks_training.md ("A Relu-only smoothed ReLU").
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def relu_form(sr, tf):
    """Eq. 20 and its derivative from Relu alone (same values as the library's, to rounding)."""

    # (relu(x + d) - relu(x - d)) / (2 d) would be shorter, but for |x| >> d its rounding error is
    # ulp(x) / d (6e-5 at x = 1, d = 1e-3): the slope above d would not be exactly 1
    def derivative(x, delta):
        d = sr.cast_like(delta, x.dtype)
        return 1.0 - tf.nn.relu(1.0 - tf.nn.relu(x + d) / (2.0 * d))

    def value(x, delta):
        d = sr.cast_like(delta, x.dtype)
        return tf.nn.relu(x - d) + d * tf.square(derivative(x, delta))

    return value, derivative


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="64,64", help="H,W of the synthetic slices")
    ap.add_argument("--repeats", type=int, default=6)
    ap.add_argument("--preset", default="quickstart")
    ap.add_argument("--reduction", default="task_norm_075")
    a = ap.parse_args()

    import numpy as np
    import tensorflow as tf
    from _timing import synthetic_meta_batch

    import loa_meta.training.loop as loop
    from experiments.presets import get_preset
    from loa_meta.models.loa_net import LOANet
    from loa_meta.physics.fft import fft2c
    from loa_meta.training.algorithm2 import penalty_objective_and_grads

    sr = importlib.import_module("loa_meta.layers.smoothed_relu")
    forms = {"where": (sr._real_smoothed_relu, sr._real_smoothed_relu_derivative), "relu": relu_form(sr, tf)}
    preset = get_preset(a.preset)
    h, w = (int(v) for v in a.size.split(","))
    c = dict(h=h, w=w, tasks=4, per_task=preset.per_task_batch)
    rng = np.random.default_rng(0)
    bt, bv = synthetic_meta_batch(c, rng, fft2c), synthetic_meta_batch(c, rng, fft2c)
    lam = tf.constant(preset.lambda0, tf.float32)
    fns, first, outs = {}, {}, {}
    for name, (value, derivative) in forms.items():
        sr._real_smoothed_relu, sr._real_smoothed_relu_derivative = value, derivative
        tf.keras.utils.set_random_seed(0)
        model = LOANet(num_phases=preset.num_phases, num_tasks=4, **preset.model_kwargs())

        def fn(model=model):
            m, gt, go = penalty_objective_and_grads(model, bt, bv, lam, a.reduction, jit_compile=False, wrt="all")
            return float(m["objective"]), [g.numpy() for g in gt + go]

        with loop.graph_rewrites_off():
            t0 = time.perf_counter()
            outs[name] = fn()
            first[name] = round(time.perf_counter() - t0, 1)
        fns[name] = fn
    sr._real_smoothed_relu, sr._real_smoothed_relu_derivative = forms["where"]
    (o1, g1), (o2, g2) = outs["where"], outs["relu"]
    rel = max(float(np.max(np.abs(x - y)) / (np.max(np.abs(x)) + 1e-30)) for x, y in zip(g1, g2))
    wall = {k: [] for k in fns}
    with loop.graph_rewrites_off():
        for _ in range(a.repeats):
            for k, fn in fns.items():
                t0 = time.perf_counter()
                fn()
                wall[k].append(time.perf_counter() - t0)
    med = {k: round(float(np.median(v)), 3) for k, v in wall.items()}
    print(json.dumps({"size": [h, w], "preset": a.preset, "reduction": a.reduction, "repeats": a.repeats,
                      "first_call_s": first, "median_s": med, "relu_over_where": round(med["relu"] / med["where"], 3),
                      "per_round": [round(r / q, 3) for q, r in zip(wall["where"], wall["relu"])],
                      "objective": [o1, o2], "max_rel_grad_diff": rel,
                      "load_avg_1min": round(os.getloadavg()[0], 1)}), flush=True)


if __name__ == "__main__":
    main()
