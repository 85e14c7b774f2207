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
    if not tf.is_tensor(images) and not tf.is_tensor(mask):
        # NumPy input (the usual case): validate eagerly so errors name the argument.
        arr = np.asarray(images)
        if arr.ndim not in (2, 3) or not np.issubdtype(arr.dtype, np.number):
            raise ValueError(
                f"Argument `images` must be a numeric array (H, W) or (B, H, W), but received "
                f"shape {arr.shape} and dtype {arr.dtype}"
            )
        if not np.all(np.isfinite(arr)):
            raise ValueError("Argument `images` contains NaN or Inf values")
        mask_arr = np.asarray(mask)
        if mask_arr.ndim == 2:
            _check_mask(mask_arr, arr.shape[-2:], "mask")
        elif mask_arr.shape != arr.shape:
            raise ValueError(
                f"Argument `mask` must have shape {arr.shape[-2:]} (H, W) or {arr.shape} (B, H, W), "
                f"but received shape: {mask_arr.shape}"
            )
        elif np.iscomplexobj(mask_arr) or not np.all((mask_arr == 0) | (mask_arr == 1)):
            raise ValueError("Argument `mask` must be binary (0/1 or bool)")
    x = tf.convert_to_tensor(images)
    if not x.dtype.is_complex:
        x = tf.complex(tf.cast(x, tf.float32), tf.zeros_like(tf.cast(x, tf.float32)))
    x = tf.cast(x, tf.complex64)
    m = tf.cast(tf.convert_to_tensor(mask), tf.float32)
    y = SingleCoilOperator(m).forward(x)
    if noise_sigma > 0:
        y = add_kspace_noise(y, m, sigma=float(noise_sigma), seed=int(seed))
    return y


def _batch_seed(seed: int, step: tf.Tensor) -> tf.Tensor:
    """Int64 scalar noise seed of batch ``step``: ``(seed mod (2**31 - 1)) * 2**32 + step`` (distinct per batch).

    ``add_kspace_noise`` accepts this tensor seed, so the pipeline uses the same noise model as the
    rest of the code base (one noise model); the batch counter makes the noise fresh per batch.
    """
    return tf.constant(seed % _SEED_MOD, tf.int64) * tf.constant(2**32, tf.int64) + tf.cast(step, tf.int64)


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


def _as_task_id(value, name: str) -> int:
    try:
        tid = int(value)
        ok = not isinstance(value, (bool, str, bytes)) and float(value) == tid and tid >= 0
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"Argument `{name}` must be an integer task index >= 0, but received: {value!r}")
    return tid


def _to_complex(x: tf.Tensor) -> tf.Tensor:
    if x.dtype.is_complex:
        return tf.cast(x, tf.complex64)
    return tf.complex(x, tf.zeros_like(x))


def _index_dataset(n: int, batch: int, seed: int, shuffle: bool, repeat: bool, drop_remainder: bool):
    """Batches of slice indices; with ``shuffle``, epoch e is the permutation stateless_shuffle(seed, e).

    Stateless so that the order depends on ``seed`` only, not on TensorFlow's global seed or on
    what ran earlier in the process (``Dataset.shuffle(seed=...)`` combines its seed with the
    global one, so a stage run after another in the same process saw a different order than the
    same stage in a fresh process).
    """
    if not shuffle:
        ds = tf.data.Dataset.range(n)
        return (ds.repeat() if repeat else ds).batch(batch, drop_remainder=drop_remainder)
    epochs = tf.data.Dataset.counter() if repeat else tf.data.Dataset.range(1)
    seed_t = tf.constant(int(seed) % _SEED_MOD, tf.int64)

    def permutation(epoch):
        perm = tf.random.experimental.stateless_shuffle(tf.range(n, dtype=tf.int64),
                                                        seed=tf.stack([seed_t, tf.cast(epoch, tf.int64)]))
        return tf.data.Dataset.from_tensor_slices(perm)

    return epochs.flat_map(permutation).batch(batch, drop_remainder=drop_remainder)


def _options() -> tf.data.Options:
    opts = tf.data.Options()
    opts.deterministic = True
    # Checkpoint iterator positions (and the shuffle buffer of indices) only, not the prefetched
    # or in-flight batches: those are recomputed on restore, which is exact because every batch
    # is a pure function of (indices, step).
    opts.experimental_symbolic_checkpoint = True
    # No autotuning: its background thread waits with a timeout that grows to a minute, and destroying
    # or restoring an iterator waited for it, idle, 30-50 s in 6 of 16 measured runs (session 23,
    # docs/benchmarks_training.md "Bookkeeping of the training loop"); fixed parallelism instead (a
    # batch's FFTs are cheap next to a training step, so 2 parallel calls keep the step fed).
    opts.autotune.enabled = False
    return opts


# Batches built in parallel and kept ready by the input pipelines (fixed: autotuning is off, above).
_PARALLEL_CALLS = 2
_PREFETCH = 2


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
    tid = _as_task_id(task_id, "task_id")
    sigma = float(noise_sigma)
    seed = int(seed)

    def make(step, idx):
        x = _to_complex(tf.gather(table, idx))
        b = tf.shape(idx)[0]
        mb = tf.broadcast_to(mask_t, tf.concat([[b], tf.shape(mask_t)], 0))
        y = SingleCoilOperator(mb).forward(x)
        if sigma > 0:
            y = add_kspace_noise(y, mb, sigma=sigma, seed=_batch_seed(seed, step))
        return {"kspace": y, "mask": mb, "target": x, "task_id": tf.fill([b], tf.constant(tid, tf.int32))}

    ds = _index_dataset(imgs.shape[0], batch_size, seed, shuffle, repeat, drop_remainder)
    ds = ds.enumerate().map(make, num_parallel_calls=_PARALLEL_CALLS, deterministic=True)
    return ds.prefetch(_PREFETCH).with_options(_options())


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
    task_ids = list(range(n_tasks)) if task_ids is None else [
        _as_task_id(t, f"task_ids[{i}]") for i, t in enumerate(task_ids)]
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
            y = add_kspace_noise(y, mask_b, sigma=sigma, seed=_batch_seed(seed, step))
        return {"kspace": y, "mask": mask_b, "target": x, "task_id": tid_b}

    ds = tf.data.Dataset.zip(streams).enumerate()
    ds = ds.map(lambda step, idxs: make(step, idxs), num_parallel_calls=_PARALLEL_CALLS, deterministic=True)
    return ds.prefetch(_PREFETCH).with_options(_options())
