"""Shared helpers for the training tests: a tiny *real* Keras model with the loa-meta call
convention (not a mock) and tiny seeded datasets. No tests live here."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from loa_meta.physics.fft import fft2c
from loa_meta.physics.operators import SingleCoilOperator

H, W = 12, 14


class ToyUnrolled(keras.Model):
    """x_{t+1} = x_t - a_t A^H(A x_t - y) - sigmoid(omega_task) * conv2(tanh(conv1(x_t))).

    Shares conv weights across phases (per-phase step sizes a_t), like LOANet; omega is one scalar
    per task; ``add_phase`` copies the last step size; ``add_task`` appends an omega.
    """

    def __init__(self, num_phases=1, num_tasks=2, use_task_weights=True, dtype="float32", **kwargs):
        super().__init__(**kwargs)
        self._dt = dtype
        self.use_task_weights = use_task_weights
        init = keras.initializers.GlorotUniform(seed=3)
        self.w1 = self.add_weight(shape=(3, 3, 2, 3), initializer=init, dtype=dtype, name="w1")
        self.w2 = self.add_weight(shape=(3, 3, 3, 2), initializer=init, dtype=dtype, name="w2")
        self.steps = []
        for _ in range(num_phases):
            self.add_phase()
        self.omegas = []
        if use_task_weights:
            for i in range(num_tasks):
                self.add_task(0.3 * i - 0.2)

    @property
    def num_phases(self):
        return len(self.steps)

    @property
    def num_tasks(self):
        return len(self.omegas) if self.use_task_weights else 1

    def add_phase(self):
        init = 0.5 if not self.steps else float(self.steps[-1].numpy())
        self._tracker.unlock()
        v = self.add_weight(shape=(), initializer=keras.initializers.Constant(init), dtype=self._dt,
                            name=f"step_{len(self.steps)}")
        self.steps = self.steps + [v]
        return v

    def add_task(self, initial_omega=0.0):
        self._tracker.unlock()
        v = self.add_weight(shape=(), initializer=keras.initializers.Constant(initial_omega), dtype=self._dt,
                            name=f"omega_{len(self.omegas)}")
        self.omegas = self.omegas + [v]
        return len(self.omegas) - 1

    @property
    def theta_variables(self):
        return [self.w1, self.w2] + list(self.steps)

    @property
    def omega_variables(self):
        return list(self.omegas) if self.use_task_weights else []

    def kappa(self, task_id):
        if not self.use_task_weights:
            return tf.ones_like(tf.cast(task_id, self._dt))
        return tf.sigmoid(tf.gather(tf.stack([tf.convert_to_tensor(o) for o in self.omegas]), task_id))

    def call(self, inputs, training=False):
        y, m, t = inputs["kspace"], inputs["mask"], inputs["task_id"]
        cdt = tf.complex128 if self._dt == "float64" else tf.complex64
        y = tf.cast(y, cdt)
        op = SingleCoilOperator(m)
        x = op.zero_filled(y)
        k = tf.cast(self.kappa(t), self._dt)[:, None, None, None]
        for a in self.steps:
            z = x - tf.cast(a, cdt) * op.data_grad(x, y)
            feat = tf.stack([tf.math.real(z), tf.math.imag(z)], -1)
            h = tf.tanh(tf.nn.conv2d(feat, self.w1, 1, "SAME"))
            u = k * tf.nn.conv2d(h, self.w2, 1, "SAME")
            x = z - tf.complex(u[..., 0], u[..., 1])
        return x


def make_images(n, seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:H, 0:W]
    out = []
    for _ in range(n):
        cy, cx = rng.uniform(3, H - 3), rng.uniform(3, W - 3)
        r = rng.uniform(2, 4)
        img = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r)) + 0.2 * rng.uniform(size=(H, W))
        out.append(img / img.max())
    return np.asarray(out, dtype)


def make_masks(num_tasks, seed=0):
    rng = np.random.default_rng(seed + 100)
    masks = []
    for i in range(num_tasks):
        m = rng.uniform(size=(H, W)) < 0.25 + 0.15 * i
        m[H // 2 - 1 : H // 2 + 2, W // 2 - 1 : W // 2 + 2] = True
        masks.append(m.astype(np.float32))
    return np.asarray(masks)


def make_arrays(n_per_task, num_tasks=2, seed=0, cdtype=np.complex64):
    imgs = make_images(n_per_task * num_tasks, seed)
    masks = make_masks(num_tasks, seed)
    task = np.repeat(np.arange(num_tasks), n_per_task).astype(np.int32)
    m = masks[task]
    k = (m * fft2c(tf.constant(imgs.astype(np.complex64))).numpy()).astype(cdtype)
    return {"kspace": k, "mask": m, "target": imgs.astype(np.float32), "task_id": task}


def make_dataset(arrays, batch, seed=0, shuffle=True, repeat=True):
    ds = tf.data.Dataset.from_tensor_slices(arrays)
    if shuffle:
        ds = ds.shuffle(len(arrays["task_id"]), seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    return ds.batch(batch, drop_remainder=True)


def fixed_batch(arrays, idx):
    return {k: tf.constant(v[idx]) for k, v in arrays.items()}
