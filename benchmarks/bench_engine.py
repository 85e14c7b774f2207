"""One training step (or inference) of a loa-meta checkout, timed in a fresh process; JSON on stdout.

Used by ``benchmarks/compare_engines.py`` to time the present engine against an earlier commit in the
same run (``--root`` points at either checkout; the code is imported from there). The step is the one
the training loop runs with its defaults:

* ``--mode=bilevel``: exact Eq. 18 gradient (``penalty_objective_and_grads``) + one Adam update on theta;
* ``--mode=first_order``: the conventional step (``accumulate_loss_gradients`` on theta) + Adam;
* ``--mode=inference``: ``model.reconstruct`` of one batch (safeguard on, T phases), plus the TV baseline
  (100 Chambolle-Pock iterations, ``tv_reconstruct``) of the same batch for comparison.

``small``: 64x64, 3 phases, 4 tasks x 2 (B_tr = B_val = 8); ``paper``: 160x180, 11 phases, 4 tasks x 2.
``--phases``, ``--filters``, ``--tasks``, ``--per_task`` override the named configuration.
Reports the first call (trace/compile + one step), the median of ``--runs`` further steps (wall
seconds, and process CPU seconds, a bound on the wall time of a quiet machine) and the peak RSS (``ru_maxrss``, plus a watchdog that aborts above ``--max_rss_gb``).
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _flag(name, default):
    for a in sys.argv[1:]:
        if a.startswith(f"--{name}="):
            return type(default)(a.split("=", 1)[1]) if default is not None else a.split("=", 1)[1]
    return default


ROOT = _flag("root", os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from _timing import rss_watchdog, synthetic_meta_batch  # noqa: E402

CONFIGS = {
    "small": dict(h=64, w=64, phases=3, tasks=4, per_task=2),
    "paper": dict(h=160, w=180, phases=11, tasks=4, per_task=2),
}


def main():
    from loa_meta.models.loa_net import LOANet
    from loa_meta.physics.fft import fft2c
    from loa_meta.training import algorithm2

    c = dict(CONFIGS[_flag("config", "small")])
    for key in ("phases", "tasks", "per_task", "filters"):  # overrides of the named configuration
        if _flag(key, None) is not None:
            c[key] = int(_flag(key, None))
    mode, runs = _flag("mode", "bilevel"), _flag("runs", 3)
    mb = _flag("microbatch", "auto")
    jit = _flag("jit", 0)
    state = {"root": ROOT, "mode": mode, "config": _flag("config", "small"), "microbatch": mb, "jit": jit,
             "shape": c}
    rss_watchdog(_flag("max_rss_gb", 12.0), state)
    rng = np.random.default_rng(0)
    bt, bv = synthetic_meta_batch(c, rng, fft2c), synthetic_meta_batch(c, rng, fft2c)
    model = LOANet(num_phases=c["phases"], num_tasks=c["tasks"], filters=c.get("filters", 4))
    theta = model.theta_variables
    import keras

    opt = keras.optimizers.Adam(1e-3)
    opt.build(theta)
    if mb == "auto":
        from loa_meta.training.config import MetaConfig

        mb = MetaConfig().resolve_microbatch_size(bt["kspace"].shape, c["phases"])
    else:
        mb = int(mb) or None
    state["microbatch_resolved"] = mb
    kw = {"jit_compile": bool(jit)} if jit else {}

    if mode == "inference":
        from loa_meta.evaluation.classical import tv_reconstruct

        def step():
            return model.reconstruct(bt["kspace"], bt["mask"], bt["task_id"])

        def tv():
            return tv_reconstruct(bt["kspace"], bt["mask"], lam=1e-3, num_iters=100)
    elif mode == "first_order":
        def step():
            loss, _, g = algorithm2.accumulate_loss_gradients(model, bt, theta, "sum", None, mb, **kw)
            opt.apply_gradients(zip(g, theta))
            return loss
    else:
        lam = tf.constant(1e-5)

        def step():
            m, g, _ = algorithm2.penalty_objective_and_grads(model, bt, bv, lam, microbatch_size=mb, **kw)
            opt.apply_gradients(zip(g, theta))
            return m["objective"]

    t0, c0 = time.perf_counter(), time.process_time()
    np.asarray(step())
    first, first_cpu = time.perf_counter() - t0, time.process_time() - c0
    times, cpu = [], []
    for _ in range(runs):
        t0, c0 = time.perf_counter(), time.process_time()
        np.asarray(step())
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    # process CPU seconds (all threads): on a quiet machine the wall time is at most this
    out = dict(state, first_s=round(first, 2), first_cpu_s=round(first_cpu, 1),
               step_s_median=round(float(np.median(times)), 3), step_cpu_s_median=round(float(np.median(cpu)), 1),
               step_s_all=[round(t, 3) for t in times],
               peak_rss_gb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
               load_avg_1min=round(os.getloadavg()[0], 1))
    if mode == "inference":
        np.asarray(tv())
        tt = []
        for _ in range(runs):
            t0 = time.perf_counter()
            np.asarray(tv())
            tt.append(time.perf_counter() - t0)
        out["tv100_s_median"] = round(float(np.median(tt)), 3)
        out["per_slice_s"] = round(out["step_s_median"] / bt["kspace"].shape[0], 4)
        out["tv100_per_slice_s"] = round(out["tv100_s_median"] / bt["kspace"].shape[0], 4)
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
