"""tf.data pipelines: simulated undersampled k-space y = P F x + n (paper Eq. 1) in batches.

Two kinds of batch, both dicts ``{"kspace": complex64 (B, H, W), "mask": float32 (B, H, W),
"target": complex64 (B, H, W), "task_id": int32 (B,)}``:

* :func:`task_dataset` -- single-task batches (conventional training, evaluation, inference);
* :func:`cross_task_dataset` -- cross-task mini-batches of Algorithm 2 (lines 4-5): ``J`` samples
  of each of the ``N`` tasks, ``N * J`` samples per batch, task-major order.

Only integer *indices* are shuffled (``Dataset.shuffle`` with a seed); images are gathered from
a constant inside a ``map``. The iterator state is therefore a few integers plus a shuffle buffer
of indices, and ``tf.train.Checkpoint(iterator=iter(ds))`` saves/restores it exactly.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import tensorflow as tf

from loa_meta.physics.operators import SingleCoilOperator, add_kspace_noise
from loa_meta.validation import check_in_range, check_positive_int

__all__ = ["simulate_kspace", "task_dataset", "cross_task_dataset"]

_SEED_MOD = 2**31 - 1


def simulate_kspace(images, mask, noise_sigma: float = 0.0, seed: int = 0) -> tf.Tensor:
    """Undersampled k-space y = P F x (+ n) of Eq. 1 on the full centred grid.

    Args:
      images: real or complex images ``(B, H, W)`` (real input is cast to complex64).
      mask: 0/1 mask ``(H, W)`` or ``(B, H, W)``, centred.
      noise_sigma: standard deviation of each real component of the complex Gaussian noise added
        at sampled locations (``loa_meta.physics.add_kspace_noise``); 0 for noiseless data.
      seed: integer noise seed.

    Returns:
      complex64 ``(B, H, W)``, zero where the mask is 0.
    """
    check_in_range(noise_sigma, "noise_sigma", low=0.0)
    x = tf.convert_to_tensor(images)
    if not x.dtype.is_complex:
        x = tf.complex(tf.cast(x, tf.float32), tf.zeros_like(tf.cast(x, tf.float32)))
    x = tf.cast(x, tf.complex64)
    m = tf.cast(tf.convert_to_tensor(mask), tf.float32)
    y = SingleCoilOperator(m).forward(x)
    if noise_sigma > 0:
        y = add_kspace_noise(y, m, sigma=float(noise_sigma), seed=int(seed))
    return y


def _noise(shape, mask, sigma: float, seed_pair: tf.Tensor) -> tf.Tensor:
    """Complex Gaussian noise with the model of ``add_kspace_noise`` but a tensor seed.

    ``add_kspace_noise`` takes a Python integer seed; inside a ``tf.data`` map the seed must vary
    per batch, so the batch counter is folded into a stateless seed pair here.
    """
    nr = tf.random.stateless_normal(shape, seed=seed_pair, dtype=tf.float32)
    ni = tf.random.stateless_normal(shape, seed=seed_pair + tf.constant([0, 1], tf.int64), dtype=tf.float32)
    s = tf.constant(sigma, tf.float32)
    return tf.complex(s * mask * nr, s * mask * ni)


def _check_images(images, name: str) -> np.ndarray:
    arr = np.asarray(images)
    if arr.ndim != 3 or arr.shape[0] < 1:
        raise ValueError(f"Argument `{name}` must have shape (N, H, W) with N >= 1, but received shape: {arr.shape}")
    if np.iscomplexobj(arr):
        arr = arr.astype(np.complex64)
    else:
        arr = arr.astype(np.float32)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"Argument `{name}` contains NaN or Inf values")
    return arr


def _check_mask(mask, shape_hw, name: str) -> np.ndarray:
    m = np.asarray(mask)
    if m.shape != tuple(shape_hw):
        raise ValueError(f"Argument `{name}` must have shape {tuple(shape_hw)} (H, W), but received shape: {m.shape}")
    if np.iscomplexobj(m) or not np.all((m == 0) | (m == 1)):
        raise ValueError(f"Argument `{name}` must be binary (0/1 or bool)")
    return m.astype(np.float32)


def _to_complex(x: tf.Tensor) -> tf.Tensor:
    if x.dtype.is_complex:
        return tf.cast(x, tf.complex64)
    return tf.complex(x, tf.zeros_like(x))


def _index_dataset(n: int, batch: int, seed: int, shuffle: bool, repeat: bool, drop_remainder: bool):
    ds = tf.data.Dataset.range(n)
    if shuffle:
        ds = ds.shuffle(n, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    return ds.batch(batch, drop_remainder=drop_remainder)


def _options() -> tf.data.Options:
    opts = tf.data.Options()
    opts.deterministic = True
    # Checkpoint iterator positions (and the shuffle buffer of indices) only, not the prefetched
    # or in-flight batches: those are recomputed on restore, which is exact because every batch
    # is a pure function of (indices, step).
    opts.experimental_symbolic_checkpoint = True
    return opts


def task_dataset(
    images,
    mask,
    task_id: int,
    batch_size: int,
    seed: int = 0,
    shuffle: bool = True,
    repeat: bool = True,
    noise_sigma: float = 0.0,
    drop_remainder: bool = True,
) -> tf.data.Dataset:
    """Single-task batches of (k-space, mask, target, task id).

    Args:
      images: ``(N, H, W)`` real (float32, e.g. from ``load_split``) or complex images.
      mask: ``(H, W)`` binary centred mask of this task.
      task_id: integer task index (``task_id`` entries of the batch).
      batch_size: samples per batch.
      seed: shuffle and noise seed.
      shuffle: reshuffle the sample order every epoch (deterministically from ``seed``).
      repeat: repeat forever (training); use ``repeat=False, shuffle=False,
        drop_remainder=False`` for evaluation.
      noise_sigma: k-space noise standard deviation (Eq. 1), 0 for none.
      drop_remainder: drop a last incomplete batch.

    Returns:
      A ``tf.data.Dataset`` of dicts (see module docstring).
    """
    imgs = _check_images(images, "images")
    m = _check_mask(mask, imgs.shape[1:], "mask")
    batch_size = check_positive_int(batch_size, "batch_size")
    check_in_range(noise_sigma, "noise_sigma", low=0.0)
    if drop_remainder and not repeat and batch_size > imgs.shape[0]:
        raise ValueError(
            f"Argument `batch_size` ({batch_size}) exceeds the number of images ({imgs.shape[0]}) "
            "with drop_remainder=True and repeat=False: the dataset would be empty"
        )
    table = tf.constant(imgs)
    mask_t = tf.constant(m)
    tid = int(task_id)
    sigma = float(noise_sigma)
    seed = int(seed)

    def make(step, idx):
        x = _to_complex(tf.gather(table, idx))
        b = tf.shape(idx)[0]
        mb = tf.broadcast_to(mask_t, tf.concat([[b], tf.shape(mask_t)], 0))
        y = SingleCoilOperator(mb).forward(x)
        if sigma > 0:
            pair = tf.stack([tf.constant(seed, tf.int64), step])
            y = y + _noise(tf.shape(y), mb, sigma, pair)
        return {"kspace": y, "mask": mb, "target": x, "task_id": tf.fill([b], tf.constant(tid, tf.int32))}

    ds = _index_dataset(imgs.shape[0], batch_size, seed, shuffle, repeat, drop_remainder)
    ds = ds.enumerate().map(make, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE).with_options(_options())


def cross_task_dataset(
    images_per_task: Sequence,
    masks: Sequence,
    per_task_batch: int,
    seed: int = 0,
    task_ids: Optional[Sequence[int]] = None,
    shuffle: bool = True,
    noise_sigma: float = 0.0,
) -> tf.data.Dataset:
    """Cross-task mini-batches of Algorithm 2: ``J`` samples from each of ``N`` tasks per batch.

    Each task draws from its own image set with its own shuffled, repeated index stream
    (seed ``seed + i`` for task ``i``), so every batch contains each task exactly ``J`` times,
    task-major: samples ``i*J .. i*J + J - 1`` belong to task ``task_ids[i]`` and carry its mask.

    Args:
      images_per_task: list of ``N`` arrays ``(N_i, H, W)`` (the same array may be repeated).
      masks: list of ``N`` binary ``(H, W)`` masks.
      per_task_batch: ``J``.
      seed: base seed.
      task_ids: task index of each entry (default ``0 .. N-1``).
      shuffle: shuffle each task's samples every epoch.
      noise_sigma: k-space noise standard deviation (Eq. 1).

    Returns:
      An infinite ``tf.data.Dataset`` of dicts with ``N * J`` samples per batch.
    """
    n_tasks = len(images_per_task)
    if n_tasks < 1:
        raise ValueError("Argument `images_per_task` must hold at least one image array")
    if len(masks) != n_tasks:
        raise ValueError(
            f"Argument `masks` must have one mask per task ({n_tasks}), but received {len(masks)}"
        )
    task_ids = list(range(n_tasks)) if task_ids is None else [int(t) for t in task_ids]
    if len(task_ids) != n_tasks:
        raise ValueError(f"Argument `task_ids` must have {n_tasks} entries, but received {len(task_ids)}")
    j = check_positive_int(per_task_batch, "per_task_batch")
    check_in_range(noise_sigma, "noise_sigma", low=0.0)
    # One constant per distinct array (tasks often share the same images).
    tables, table_of_task = [], []
    seen = {}
    hw = None
    for i, arr in enumerate(images_per_task):
        key = id(arr)
        if key not in seen:
            seen[key] = len(tables)
            tables.append(tf.constant(_check_images(arr, f"images_per_task[{i}]")))
        table_of_task.append(seen[key])
        shape_i = tuple(tables[seen[key]].shape[1:])
        if hw is None:
            hw = shape_i
        elif shape_i != hw:
            raise ValueError(
                f"Argument `images_per_task[{i}]` has image shape {shape_i}, but task 0 has {hw}"
            )
    if len({t.dtype for t in tables}) > 1:
        tables = [tf.cast(_to_complex(t) if not t.dtype.is_complex else t, tf.complex64) for t in tables]
    mask_t = tf.constant(np.stack([_check_mask(m, hw, f"masks[{i}]") for i, m in enumerate(masks)]))
    mask_b = tf.repeat(mask_t, j, axis=0)  # (N*J, H, W)
    tid_b = tf.constant(np.repeat(np.asarray(task_ids, np.int32), j))
    sigma = float(noise_sigma)
    seed = int(seed)

    streams = tuple(
        _index_dataset(int(tables[table_of_task[i]].shape[0]), j, (seed + i) % _SEED_MOD, shuffle, True, True)
        for i in range(n_tasks)
    )

    def make(step, idxs):
        x = tf.concat([_to_complex(tf.gather(tables[table_of_task[i]], idxs[i])) for i in range(n_tasks)], 0)
        y = SingleCoilOperator(mask_b).forward(x)
        if sigma > 0:
            pair = tf.stack([tf.constant(seed, tf.int64), step])
            y = y + _noise(tf.shape(y), mask_b, sigma, pair)
        return {"kspace": y, "mask": mask_b, "target": x, "task_id": tid_b}

    ds = tf.data.Dataset.zip(streams).enumerate()
    ds = ds.map(lambda step, idxs: make(step, idxs), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE).with_options(_options())
