"""Speed of the LOA-induced network on 160x180 slices (a script, not a test).

  PYTHONPATH=. TF_CPP_MIN_LOG_LEVEL=2 python benchmarks/bench_network.py --repeats 5

Reports medians (seconds) of: inference per slice with T=11 (safeguard on / off), one
forward+backward training step at batch 8, each with and without reuse of grad phi(x_{t+1})
(line 15) as line 5 of the next phase; inference through ``reconstruct(jit_compile=True)``;
optionally (``--autodiff``) the explicit grad r_eps (Eq. A2) vs nested autodiff. Variants that
are compared are timed in the same run with their repeats interleaved (the machine is shared).
"""

import json

import numpy as np
import tensorflow as tf
from absl import app, flags

from loa_meta.models import LOANet
from benchmarks._timing import median_times

flags.DEFINE_integer("repeats", 5, "timed runs per measurement (median reported)")
flags.DEFINE_integer("phases", 11, "number of phases T")
flags.DEFINE_integer("train_batch", 8, "batch size of the training step")
flags.DEFINE_boolean("train", True, "also time the forward+backward training step")
flags.DEFINE_boolean("autodiff", False, "also compare grad_mode='autodiff'")
FLAGS = flags.FLAGS


def _data(batch, h=160, w=180, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.exp(-(((yy - h / 2) / 50) ** 2 + ((xx - w / 2) / 60) ** 2)) + 0.05 * rng.random((batch, h, w))
    img = img / img.max(axis=(1, 2), keepdims=True)
    mask = (rng.random((batch, h, w)) < 0.3).astype(np.float32)
    k = np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(img, axes=(1, 2)), norm="ortho"), axes=(1, 2)) * mask
    return tf.constant(k.astype(np.complex64)), tf.constant(mask), tf.constant(img.astype(np.complex64))


def _model(T, reuse=True, **kw):
    tf.keras.utils.set_random_seed(0)
    model = LOANet(num_phases=T, **kw)
    model._reuse_energy_grad = reuse
    return model


def main(_):
    r, T, B = FLAGS.repeats, FLAGS.phases, FLAGS.train_batch
    results = {}
    y1, m1, _ = _data(1)
    yb, mb, xb = _data(B, seed=1)
    feed = {"kspace": y1, "mask": m1, "task_id": tf.zeros([1], tf.int32)}
    feed_b = {"kspace": yb, "mask": mb, "task_id": tf.zeros([B], tf.int32)}
    modes = ("explicit", "autodiff") if FLAGS.autodiff else ("explicit",)
    for mode in modes:
        for safeguard in (True, False):
            infer, train = {}, {}
            for reuse in (False, True):
                model = _model(T, reuse, safeguard=safeguard, grad_mode=mode)
                fwd = tf.function(lambda d, model=model: model(d))
                infer[f"infer_T{T}_{mode}_safeguard={safeguard}_reuse={reuse}"] = lambda fwd=fwd: fwd(feed)
                params = model.trainable_variables

                @tf.function
                def train_step(d, model=model, params=params):
                    with tf.GradientTape() as tape:
                        loss = tf.reduce_mean(tf.abs(model(d, training=True) - xb) ** 2)
                    return loss, tape.gradient(loss, params)

                train[f"train_step_B{B}_T{T}_{mode}_safeguard={safeguard}_reuse={reuse}"] = (
                    lambda train_step=train_step: train_step(feed_b)
                )
            results.update(median_times(infer, r))
            if FLAGS.train:
                results.update(median_times(train, r))
            print(json.dumps(results, indent=1), flush=True)
    for safeguard in (True, False):
        model = _model(T, safeguard=safeguard)
        fns = {
            f"reconstruct_T{T}_safeguard={safeguard}": lambda model=model: model.reconstruct(y1, m1),
            f"reconstruct_T{T}_safeguard={safeguard}_jit": lambda model=model: model.reconstruct(y1, m1, jit_compile=True),
        }
        try:
            results.update(median_times(fns, r))
        except Exception as exc:  # XLA may reject an op; report it instead of failing the benchmark
            results[f"reconstruct_T{T}_safeguard={safeguard}_jit"] = f"failed: {type(exc).__name__}: {str(exc)[:200]}"
    print(json.dumps(results, indent=1), flush=True)


if __name__ == "__main__":
    app.run(main)
