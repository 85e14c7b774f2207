"""Timing helpers shared by the benchmark scripts."""

import time

import numpy as np
import tensorflow as tf


def _sync(out):
    """Force evaluation of every tensor in ``out`` (so timings include the work)."""
    tf.nest.map_structure(lambda t: t.numpy() if hasattr(t, "numpy") else t, out)


def median_times(fns, repeats):
    """Median wall seconds of each callable: one warm-up (trace) each, then the repeats interleaved."""
    for fn in fns.values():
        _sync(fn())
    times = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            _sync(fn())
            times[k].append(time.perf_counter() - t0)
    return {k: float(np.median(v)) for k, v in times.items()}
