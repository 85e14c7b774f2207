"""Trace and first-run time of the compiled training kernels vs the number of phases; JSON lines on stdout.

For each T in ``--phases`` (a fresh model each), at a small image size so that compute does not
hide the graph-building cost, it times for each :class:`~loa_meta.training.algorithm2.GradientKernels`
kernel separately:

Each time is a pair (wall s, CPU s of the process; the CPU time is the better measure on a shared
machine, and about the wall time of a quiet one for the single-threaded tracing).

* ``trace_s``: building the graph in Python (``get_concrete_function``: tracing + the
  gradient-of-gradient construction);
* ``first_run_s``: the first execution of that graph (graph optimisation by Grappler + one run);
* ``run_s``: a second execution (the steady-state cost);
* ``nodes``: graph nodes, counting the bodies of ``tf.cond`` / ``tf.while_loop`` functions too.

Kernels: ``plan`` (Algorithm 1's decisions, traced once and shared by the others; before
issue 10's trace work each kernel planned inside), ``first_order`` (``loss_grads``, gradient w.r.t. theta and omega), ``hvp``
(``penalty_hvp``, the micro-batched reverse-over-reverse Hessian-vector product) and ``whole``
(``penalty_whole``, all of Eq. 18 for whole batches).

    python benchmarks/bench_trace.py --phases=1,2,3,5 --size=32 --batch=2 [--kernels=hvp] [--grappler=off]
"""

from __future__ import annotations

import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _flag(name, default):
    for a in sys.argv[1:]:
        if a.startswith(f"--{name}="):
            return a.split("=", 1)[1]
    return default


ROOT = _flag("root", os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from _timing import synthetic_meta_batch  # noqa: E402


def graph_nodes(concrete) -> int:
    """Nodes of a concrete function's graph including its function library (cond/while bodies)."""
    gd = concrete.graph.as_graph_def()
    return len(gd.node) + sum(len(f.node_def) for f in gd.library.function)


def _timed(fn):
    """(wall s, process CPU s) of ``fn()`` including the evaluation of its outputs."""
    t0, c0 = time.perf_counter(), time.process_time()
    tf.nest.map_structure(lambda t: t.numpy() if hasattr(t, "numpy") else t, fn())
    return round(time.perf_counter() - t0, 2), round(time.process_time() - c0, 2)


def _measure_kernel(fn, args):
    trace = _timed(lambda: fn.get_concrete_function(*args) and ())
    first, run = _timed(lambda: fn(*args)), _timed(lambda: fn(*args))
    return {"trace_s": trace, "first_run_s": first, "run_s": run, "nodes": graph_nodes(fn.get_concrete_function(*args))}


def measure(phases: int, size: int, batch: int, kernels):
    from loa_meta.models.loa_net import LOANet
    from loa_meta.physics.fft import fft2c
    from loa_meta.training.algorithm2 import GradientKernels

    c = dict(h=size, w=size, phases=phases, tasks=batch, per_task=1)
    rng = np.random.default_rng(0)
    bt, bv = synthetic_meta_batch(c, rng, fft2c), synthetic_meta_batch(c, rng, fft2c)
    model = LOANet(num_phases=phases, num_tasks=batch)
    kern = GradientKernels(model, model.theta_variables, model.omega_variables)
    n = tf.constant(batch)
    lam = tf.constant(1e-5, tf.float64)
    g_stop = [tf.zeros_like(v) for v in model.theta_variables]
    out = {"phases": phases, "size": size, "batch": batch}
    if hasattr(kern, "plan"):  # the plan is a kernel of its own, the others take it as an input
        out["plan"] = _measure_kernel(kern._plan, (bt,))
        plan_tr, plan_val = kern.plan(bt), kern.plan(bv)
        calls = {
            "first_order": (kern._loss_grads_all, (bt, n, plan_tr)),
            "hvp": (kern._hvp, (bt, g_stop, lam, n, plan_tr)),
            "whole": (kern._whole, (bt, bv, lam, n, n, plan_tr, plan_val)),
        }
    else:  # the engine before it (commit 914ecd0): every kernel plans inside
        calls = {
            "first_order": (kern._loss_grads_all, (bt, n)),
            "hvp": (kern.penalty_hvp, (bt, g_stop, lam, n)),
            "whole": (kern.penalty_whole, (bt, bv, lam, n, n)),
        }
    for name in [k for k in kernels if k in calls]:
        out[name] = _measure_kernel(*calls[name])
    out["load_avg_1min"] = round(os.getloadavg()[0], 1)
    return out


def main():
    if _flag("grappler", "on") == "off":  # graph optimisation off: how much of first_run_s it is
        tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})
    phases = [int(p) for p in _flag("phases", "1,2,3").split(",")]
    kernels = _flag("kernels", "plan,first_order,hvp,whole").split(",")
    for t in phases:
        out = measure(t, int(_flag("size", 32)), int(_flag("batch", 2)), kernels)
        print(json.dumps({**out, "grappler": _flag("grappler", "on")}), flush=True)


if __name__ == "__main__":
    main()
