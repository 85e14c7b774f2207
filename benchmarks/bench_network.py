"""Speed of the LOA-induced network on 160x180 slices (a script, not a test).

  TF_CPP_MIN_LOG_LEVEL=2 python benchmarks/bench_network.py --repeats 5

Reports medians (seconds) of: inference per slice with T=11 (safeguard on / off), one
forward+backward training step at batch 8, the explicit grad r_eps (Eq. A2) vs nested autodiff
inside the phase, and the forward with jit_compile=True.
"""

import json
import time

import numpy as np
import tensorflow as tf
from absl import app, flags

from loa_meta.models import LOANet

FLAGS = flags.DEFINE_integer("repeats", 5, "timed runs per measurement (median reported)")
flags.DEFINE_integer("phases", 11, "number of phases T")
flags.DEFINE_integer("train_batch", 8, "batch size of the training step")


def _data(batch, h=160, w=180, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.exp(-(((yy - h / 2) / 50) ** 2 + ((xx - w / 2) / 60) ** 2)) + 0.05 * rng.random((batch, h, w))
    img = img / img.max(axis=(1, 2), keepdims=True)
    mask = (rng.random((batch, h, w)) < 0.3).astype(np.float32)
    k = np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(img, axes=(1, 2)), norm="ortho"), axes=(1, 2)) * mask
    return tf.constant(k.astype(np.complex64)), tf.constant(mask), tf.constant(img.astype(np.complex64))


def _median_time(fn, repeats):
    fn()  # trace / warm up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        tf.nest.map_structure(lambda t: t.numpy() if hasattr(t, "numpy") else t, out)
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def main(_):
    r, T, B = FLAGS.value, flags.FLAGS.phases, flags.FLAGS.train_batch
    results = {}
    y1, m1, _ = _data(1)
    yb, mb, xb = _data(B, seed=1)
    for mode in ("explicit", "autodiff"):
        for safeguard in (True, False):
            tf.keras.utils.set_random_seed(0)
            model = LOANet(num_phases=T, safeguard=safeguard, grad_mode=mode)
            fwd = tf.function(lambda d, model=model: model(d))
            feed = {"kspace": y1, "mask": m1, "task_id": tf.zeros([1], tf.int32)}
            results[f"infer_T{T}_{mode}_safeguard={safeguard}"] = _median_time(lambda: fwd(feed), r)

            feed_b = {"kspace": yb, "mask": mb, "task_id": tf.zeros([B], tf.int32)}
            params = model.trainable_variables

            @tf.function
            def train_step(d, model=model, params=params):
                with tf.GradientTape() as tape:
                    loss = tf.reduce_mean(tf.abs(model(d, training=True) - xb) ** 2)
                return loss, tape.gradient(loss, params)

            results[f"train_step_B{B}_T{T}_{mode}_safeguard={safeguard}"] = _median_time(lambda: train_step(feed_b), r)
            print(json.dumps(results, indent=1), flush=True)
    tf.keras.utils.set_random_seed(0)
    model = LOANet(num_phases=T)
    feed = {"kspace": y1, "mask": m1, "task_id": tf.zeros([1], tf.int32)}
    jit = tf.function(lambda d: model(d), jit_compile=True)
    try:
        results[f"infer_T{T}_explicit_safeguard=True_jit"] = _median_time(lambda: jit(feed), r)
    except Exception as exc:  # XLA may reject an op; report it instead of failing the benchmark
        results[f"infer_T{T}_explicit_safeguard=True_jit"] = f"failed: {type(exc).__name__}: {str(exc)[:200]}"
    model_off = LOANet(num_phases=T, safeguard=False)
    jit_off = tf.function(lambda d: model_off(d), jit_compile=True)
    try:
        results[f"infer_T{T}_explicit_safeguard=False_jit"] = _median_time(lambda: jit_off(feed), r)
    except Exception as exc:
        results[f"infer_T{T}_explicit_safeguard=False_jit"] = f"failed: {type(exc).__name__}: {str(exc)[:200]}"
    print(json.dumps(results, indent=1), flush=True)


if __name__ == "__main__":
    app.run(main)
