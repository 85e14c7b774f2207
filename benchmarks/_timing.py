"""Timing helpers shared by the benchmark scripts."""

import time

import numpy as np
import tensorflow as tf


def sync(out):
    """Force evaluation of every tensor in ``out`` (so timings include the work)."""
    tf.nest.map_structure(lambda t: t.numpy() if hasattr(t, "numpy") else t, out)


def median_times(fns, repeats):
    """Median wall seconds of each callable: one warm-up (trace) each, then the repeats interleaved."""
    for fn in fns.values():
        sync(fn())
    times = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            sync(fn())
            times[k].append(time.perf_counter() - t0)
    return {k: float(np.median(v)) for k, v in times.items()}


def synthetic_meta_batch(c, rng, fft2c):
    """A cross-task batch of smooth synthetic images: ``c`` has h, w, tasks, per_task; task i samples
    random masks of density 0.1 ... 0.4; ``fft2c`` is the centred FFT of the code under test."""
    n = c["tasks"] * c["per_task"]
    yy, xx = np.mgrid[0 : c["h"], 0 : c["w"]]
    mh, mw = min(20, c["h"] // 3), min(20, c["w"] // 3)  # blob centres 20 px from the border (less below 60 px)
    imgs = np.stack([np.exp(-((yy - rng.uniform(mh, c["h"] - mh)) ** 2 + (xx - rng.uniform(mw, c["w"] - mw)) ** 2)
                            / (2 * 15.0**2)) + 0.1 * rng.uniform(size=(c["h"], c["w"])) for _ in range(n)])
    imgs = (imgs / imgs.max(axis=(1, 2), keepdims=True)).astype(np.float32)
    task = np.repeat(np.arange(c["tasks"]), c["per_task"]).astype(np.int32)
    dens = np.linspace(0.1, 0.4, c["tasks"])[task]
    masks = (rng.uniform(size=imgs.shape) < dens[:, None, None]).astype(np.float32)
    k = masks * fft2c(tf.constant(imgs.astype(np.complex64))).numpy()
    return {"kspace": tf.constant(k.astype(np.complex64)), "mask": tf.constant(masks),
            "target": tf.constant(imgs), "task_id": tf.constant(task)}


def rss_watchdog(limit_gb, state, key="max_rss_gb", report=None):
    """Background thread: track the peak RSS in ``state[key]`` and exit the process (status 3) above
    ``limit_gb``, printing ``report()`` (a dict; default ``state``) as a JSON line with the reason."""
    import json
    import os
    import threading

    page = os.sysconf("SC_PAGE_SIZE")

    def run():
        while True:
            with open("/proc/self/statm") as f:
                rss = int(f.read().split()[1]) * page / 2**30
            state[key] = max(state.get(key, 0.0), rss)
            if rss > limit_gb:
                info = report() if report is not None else dict(state)
                print(json.dumps({**info, "aborted": f"RSS {rss:.1f} GB > {limit_gb} GB"}), flush=True)
                os._exit(3)
            time.sleep(0.2)

    threading.Thread(target=run, daemon=True).start()
