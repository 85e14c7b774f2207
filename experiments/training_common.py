"""Shared flag and data helpers of the training apps, ``reproduce`` and ``quickstart``.

The ``run_*`` functions are the whole job of one training app (data, masks, configs, library call,
model file, completion marker) with plain arguments, so that ``reproduce`` and ``quickstart`` call
them directly and the absl apps stay thin. Every run directory gets:

* ``run_config.json`` -- the resolved app settings (preset + overrides + derived budgets);
* ``config.json``     -- the library's resolved ``MetaConfig``/``ConventionalConfig``/``AdaptConfig``;
* ``masks/<task.name>.npy`` and ``.png`` -- the exact masks used (reused by evaluation/adaptation);
* ``ckpt/``, ``tb/`` (TensorBoard), ``model.keras``;
* ``COMPLETE.json``   -- written atomically last; a run with this marker is skipped on re-run.

Bad input raises :class:`absl.app.UsageError` naming the flag (see :mod:`experiments.common`).
"""

from __future__ import annotations

import json
import math
import os
import time
from typing import Dict, List, Optional, Sequence

import numpy as np
from absl import app, flags, logging

from experiments import common
from experiments.presets import Preset, get_preset

COMPLETE = "COMPLETE.json"
MODEL_FILE = "model.keras"

# ----------------------------------------------------------------------------- flags


def define_common_flags(data: bool = True) -> None:
    """Flags shared by the training apps (preset and hyperparameter overrides)."""
    if data:
        flags.DEFINE_string("data_dir", None, "Prepared dataset directory (data_prep.brats output).")
    flags.DEFINE_string("workdir", None, "Run directory (created; re-running with the same one resumes).")
    flags.DEFINE_string("preset", "paper", "Settings preset: paper, cpu, tiny or quickstart (experiments/presets.py).")
    flags.DEFINE_integer("seed", 0, "Seed of training (weights, tf.data shuffling).")
    flags.DEFINE_integer("mask_seed", 0, "Seed of the task masks built from the task specs.")
    flags.DEFINE_string("mask_dir", None, "Optional directory of existing masks <task.name>.npy to reuse.")
    flags.DEFINE_integer("num_phases", None, "Override: T, number of phases.")
    flags.DEFINE_boolean("stairwise", None, "Override: stair-wise training (one phase added per stage).")
    flags.DEFINE_float("alpha0", None, "Override: initial step size alpha_0 of Algorithm 1.")
    flags.DEFINE_float("learning_rate", None, "Override: Adam learning rate.")
    flags.DEFINE_float("epochs", None, "Override: epochs (meta: per stage; conventional: total; adapt: total).")
    flags.DEFINE_integer("max_steps", None, "Override: cap on optimizer steps of the run.")
    flags.DEFINE_integer("max_train", None, "Override: use only the first N training slices (0 = all).")
    flags.DEFINE_float("data_fraction", 1.0, "Use this fraction of the (train, val) slices, e.g. 0.6667 for "
                       "the paper's reduced-data runs.")
    define_model_option_flags()


def define_model_option_flags() -> None:
    """Override flags of the regulariser and optimizer options beyond the paper (docs/training.md)."""
    flags.DEFINE_integer("filters", None, "Override: kernels per convolution of g (paper 4; 16 or 32 = a wider "
                         "regulariser, beyond the paper).")
    flags.DEFINE_float("eps0_floor", None, "Override: lower bound of the learned eps_0 (paper: none = 0).")
    flags.DEFINE_enum("regularizer_init", None, ["random", "tv"], "Override: start of g: random (paper, Xavier) "
                      "or tv (beyond the paper: r_eps starts as a smoothed total variation).")
    flags.DEFINE_float("global_clipnorm", None, "Override: Adam global gradient-norm clipping (paper: none).")


def model_option_overrides() -> Dict[str, object]:
    """The preset fields set by :func:`define_model_option_flags` (None = not given), validated."""
    f = flags.FLAGS
    if f.filters is not None and f.filters < 1:
        raise common.usage_error("filters", f"must be a positive integer, but received: {f.filters}")
    if f.eps0_floor is not None and not (f.eps0_floor >= 0 and math.isfinite(f.eps0_floor)):
        raise common.usage_error("eps0_floor", f"must be a number >= 0, but received: {f.eps0_floor}")
    if f.global_clipnorm is not None and not (f.global_clipnorm > 0 and math.isfinite(f.global_clipnorm)):
        raise common.usage_error("global_clipnorm", f"must be a positive number, but received: {f.global_clipnorm}")
    return dict(filters=f.filters, eps0_floor=f.eps0_floor, regularizer_init=f.regularizer_init,
                global_clipnorm=f.global_clipnorm)


_POSITIVE_INT = ("num_phases", "max_steps")
_POSITIVE_FLOAT = ("alpha0", "learning_rate", "epochs")


def preset_from_flags(extra: Optional[Dict[str, object]] = None) -> Preset:
    """The preset named by ``--preset`` with the override flags applied; validates each override."""
    f = flags.FLAGS
    try:
        preset = get_preset(f.preset)
    except ValueError as e:
        raise common.usage_error("preset", str(e)) from None
    for n in _POSITIVE_INT:
        v = f[n].value
        if v is not None and v < 1:
            raise common.usage_error(n, f"must be a positive integer, but received: {v}")
    for n in _POSITIVE_FLOAT:
        v = f[n].value
        if v is not None and not (v > 0 and math.isfinite(v)):
            raise common.usage_error(n, f"must be a positive number, but received: {v}")
    if f.max_train is not None and f.max_train < 0:
        raise common.usage_error("max_train", f"must be >= 0, but received: {f.max_train}")
    if not (0.0 < f.data_fraction <= 1.0):
        raise common.usage_error("data_fraction", f"must be in (0, 1], but received: {f.data_fraction}")
    over = dict(num_phases=f.num_phases, stairwise=f.stairwise, alpha0=f.alpha0, learning_rate=f.learning_rate,
                max_train=f.max_train, **model_option_overrides())
    over.update(extra or {})
    preset = preset.override(**over)
    if preset.initial_phases > preset.num_phases:
        preset = preset.override(initial_phases=preset.num_phases)
    return preset


# ----------------------------------------------------------------------------- files


def is_complete(workdir: str) -> bool:
    """True when ``workdir`` holds the completion marker of a finished run or stage."""
    return os.path.isfile(os.path.join(workdir, COMPLETE))


def read_complete(workdir: str) -> dict:
    with open(os.path.join(workdir, COMPLETE), "r", encoding="utf-8") as fh:
        return json.load(fh)


def mark_complete(workdir: str, info: dict) -> str:
    """Write the completion marker atomically (temp file + rename)."""
    info = dict(info)
    info.setdefault("finished_at", time.strftime("%Y-%m-%dT%H:%M:%S"))
    common.write_config_json(workdir, info, name=COMPLETE)
    return os.path.join(workdir, COMPLETE)


def save_model_atomic(model, path: str) -> str:
    """``model.save`` to a temp ``.keras`` file in the same directory, then rename."""
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    tmp = os.path.join(d, ".tmp_" + os.path.basename(path))
    try:
        model.save(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def load_images(data_dir: str, split: str, limit: int = 0, fraction: float = 1.0, flag: str = "data_dir") -> np.ndarray:
    """``load_split`` with a clear flag error, the first ``limit`` slices (0 = all), then a fraction."""
    from loa_meta.data import load_split

    common.require_dir(flag, data_dir)
    try:
        x = load_split(data_dir, split)
    except ValueError as e:
        raise common.usage_error(flag, str(e)) from None
    if limit:
        x = x[:limit]
    if fraction < 1.0:
        x = x[: max(1, int(round(fraction * len(x))))]
    return x


def task_masks(tasks: Sequence, shape, mask_seed: int, out_dir: str, mask_dir: Optional[str] = None) -> Dict[str, np.ndarray]:
    """The masks of ``tasks``: loaded from ``mask_dir`` or ``out_dir`` if saved before, otherwise
    built once with ``spec.build_mask(shape, mask_seed)``; always saved to ``out_dir`` as
    ``<task.name>.npy`` and ``.png`` so every later stage uses exactly the same masks."""
    from loa_meta.sampling import load_mask, render_mask_png, save_mask

    os.makedirs(out_dir, exist_ok=True)
    out = {}
    for t in tasks:
        src = None
        for d in (mask_dir, out_dir):
            if d and os.path.isfile(os.path.join(d, t.name + ".npy")):
                src = os.path.join(d, t.name + ".npy")
                break
        try:
            m = load_mask(src, shape=tuple(shape)) if src else t.build_mask(tuple(shape), seed=mask_seed)
        except ValueError as e:
            raise common.usage_error("mask_dir" if src else "tasks", str(e)) from None
        m = np.asarray(m, bool)
        npy = os.path.join(out_dir, t.name + ".npy")
        if not os.path.isfile(npy):
            save_mask(npy, m)
            render_mask_png(m, os.path.join(out_dir, t.name + ".png"), scale=2)
        out[t.name] = m.astype(np.float32)
    return out


def _steps(epochs: float, n_images: int, batch: int) -> int:
    return max(1, int(math.ceil(epochs * math.ceil(n_images / batch))))


def _eval_dataset(images, masks: List[np.ndarray], task_ids: List[int], batch: int):
    from loa_meta.data import task_dataset

    ds = None
    for m, t in zip(masks, task_ids):
        d = task_dataset(images, m, t, min(batch, len(images)), shuffle=False, repeat=False, drop_remainder=False)
        ds = d if ds is None else ds.concatenate(d)
    return ds


def _log_skip(workdir: str) -> dict:
    info = read_complete(workdir)
    logging.info("%s is complete (marker %s): skipped.", workdir, COMPLETE)
    return info


def _stair(preset: Preset, stage_iters: int) -> dict:
    return dict(enabled=bool(preset.stairwise and preset.num_phases > preset.initial_phases),
                initial_phases=preset.initial_phases, max_phases=preset.num_phases,
                stage_max_iterations=max(1, int(stage_iters)), patience=preset.patience, min_delta=preset.min_delta)


def _common_cfg(preset: Preset, seed: int, max_steps: Optional[int], learning_rate: Optional[float] = None) -> dict:
    lr = preset.learning_rate if learning_rate is None else learning_rate
    return dict(learning_rate=lr, seed=seed, max_steps=max_steps, global_clipnorm=preset.global_clipnorm,
                checkpoint_every=preset.checkpoint_every, log_every=preset.log_every,
                summary_every=preset.summary_every, image_every=preset.image_every)


# ----------------------------------------------------------------------------- runs


def run_meta(data_dir: str, tasks: Sequence, workdir: str, preset: Preset, seed: int = 0, mask_seed: int = 0,
             data_fraction: float = 1.0, mask_dir: Optional[str] = None, epochs: Optional[float] = None,
             max_steps: Optional[int] = None, extra_config: Optional[dict] = None) -> dict:
    """Meta-learning (Algorithm 2, Section 5.2) on ``tasks``; writes ``workdir/model.keras``.

    Returns the completion info (``model``, ``sigma_omega`` per task, timings).
    """
    from loa_meta.data import cross_task_dataset
    from loa_meta.training import MetaConfig, train_meta

    if is_complete(workdir) and os.path.isfile(os.path.join(workdir, MODEL_FILE)):
        return _log_skip(workdir)
    t0 = time.time()
    train = load_images(data_dir, "train", preset.max_train, data_fraction)
    val = load_images(data_dir, "val", preset.max_val, data_fraction)
    shape = train.shape[1:]
    masks = task_masks(tasks, shape, mask_seed, os.path.join(workdir, "masks"), mask_dir)
    mlist = [masks[t.name] for t in tasks]
    j = preset.per_task_batch
    epochs = preset.meta_epochs if epochs is None else epochs
    stage_iters = _steps(epochs, len(train), j)
    max_steps = max_steps if max_steps is not None else preset.meta_max_steps
    sw = _stair(preset, stage_iters)
    n_stages = preset.num_phases - preset.initial_phases + 1 if sw["enabled"] else 1
    cfg = MetaConfig(
        **_common_cfg(preset, seed, max_steps),
        delta0=preset.delta0, nu_delta=preset.nu_delta, delta_tol=preset.delta_tol, lambda0=preset.lambda0,
        nu_lambda=preset.nu_lambda, theta_steps=preset.theta_steps, max_inner_iterations=preset.max_inner_iterations,
        omega_learning_rate=preset.omega_learning_rate, per_task_batch_train=j, per_task_batch_val=j,
        max_outer_iterations=stage_iters * n_stages, stairwise=sw,
        model=dict(preset.model_kwargs(), num_tasks=len(tasks)), **(extra_config or {}),
    )
    ev = val[: preset.eval_slices] if preset.eval_slices else val
    data = {
        "train": cross_task_dataset([train] * len(tasks), mlist, j, seed=seed),
        "val": cross_task_dataset([val] * len(tasks), mlist, j, seed=seed + 1000),
        "eval": _eval_dataset(ev, mlist, list(range(len(tasks))), 8),
    }
    run_info = {"app": "train_meta", "data_dir": os.path.abspath(data_dir), "tasks": [str(t) for t in tasks],
                "task_names": [t.name for t in tasks], "task_ids": list(range(len(tasks))), "seed": seed,
                "mask_seed": mask_seed, "data_fraction": data_fraction, "num_train": int(len(train)),
                "num_val": int(len(val)), "image_shape": list(map(int, shape)), "stage_iterations": stage_iters,
                "preset": preset.to_dict()}
    common.write_config_json(workdir, run_info, name="run_config.json")
    logging.info("meta-learning on %s: %d train / %d val slices of %s, %d phases, stage budget %d iterations",
                 [str(t) for t in tasks], len(train), len(val), shape, preset.num_phases, stage_iters)
    model, hist = train_meta(cfg, workdir, data)
    path = save_model_atomic(model, os.path.join(workdir, MODEL_FILE))
    sig = {t.name: _sigma(model, i) for i, t in enumerate(tasks)}
    info = dict(run_info, model=path, sigma_omega=sig, num_phases=int(getattr(model, "num_phases", 0)),
                steps=len(hist["steps"]), stages=hist["stages"], seconds=time.time() - t0)
    mark_complete(workdir, info)
    logging.info("meta-learning done in %.0f s: %s; sigma(omega) %s", info["seconds"], path, sig)
    return info


def run_conventional(data_dir: str, task, workdir: str, preset: Preset, model_type: str = "loa", seed: int = 0,
                     mask_seed: int = 0, data_fraction: float = 1.0, mask_dir: Optional[str] = None,
                     epochs: Optional[float] = None, max_steps: Optional[int] = None) -> dict:
    """Conventional training (Section 5.2) of one task on train+val merged, kappa = 1 (LOANet
    without task weights) or ISTA-Net+ (``model_type="ista_net_plus"``); writes ``model.keras``."""
    from loa_meta.data import task_dataset
    from loa_meta.training import ConventionalConfig, train_conventional

    if is_complete(workdir) and os.path.isfile(os.path.join(workdir, MODEL_FILE)):
        return _log_skip(workdir)
    t0 = time.time()
    train = load_images(data_dir, "train", preset.max_train, data_fraction)
    val = load_images(data_dir, "val", preset.max_val, data_fraction)
    merged = np.concatenate([train, val], axis=0)
    masks = task_masks([task], merged.shape[1:], mask_seed, os.path.join(workdir, "masks"), mask_dir)
    m = masks[task.name]
    batch = min(preset.conv_batch, len(merged))
    epochs = preset.conv_epochs if epochs is None else epochs
    total = _steps(epochs, len(merged), batch)
    cap = max_steps if max_steps is not None else preset.conv_max_steps
    total = min(total, cap) if cap else total
    if model_type != "loa" and max_steps is None:
        total = max(1, int(round(total * preset.ista_steps_factor)))
    sw = _stair(preset, total)
    if sw["enabled"]:
        sw["stage_max_iterations"] = max(1, total // (preset.num_phases - preset.initial_phases + 1))
    model_kwargs = preset.conventional_kwargs() if model_type == "loa" else preset.ista_kwargs()
    cfg = ConventionalConfig(**_common_cfg(preset, seed, total), batch_size=batch, epochs=max(1, int(math.ceil(epochs))),
                             model_type=model_type, stairwise=sw if model_type == "loa" else _stair(
                                 preset.override(stairwise=False), total), model=model_kwargs)
    ev = val[: preset.eval_slices] if preset.eval_slices else val
    data = {"train": task_dataset(merged, m, 0, batch, seed=seed), "eval": _eval_dataset(ev, [m], [0], 8)}
    run_info = {"app": "train_istanet" if model_type != "loa" else "train_conventional",
                "data_dir": os.path.abspath(data_dir), "task": str(task), "task_name": task.name, "seed": seed,
                "mask_seed": mask_seed, "data_fraction": data_fraction, "num_train": int(len(merged)),
                "image_shape": list(map(int, merged.shape[1:])), "max_steps": total, "model_type": model_type,
                "preset": preset.to_dict()}
    common.write_config_json(workdir, run_info, name="run_config.json")
    logging.info("%s training on %s: %d slices (train+val), batch %d, %d steps",
                 model_type, task, len(merged), batch, total)
    model, hist = train_conventional(cfg, workdir, data)
    path = save_model_atomic(model, os.path.join(workdir, MODEL_FILE))
    info = dict(run_info, model=path, num_phases=int(getattr(model, "num_phases", 0)), steps=len(hist["steps"]),
                stages=hist["stages"], seconds=time.time() - t0)
    mark_complete(workdir, info)
    logging.info("%s done in %.0f s: %s", model_type, info["seconds"], path)
    return info


def run_adapt(model_path: str, data_dir: str, task, workdir: str, preset: Preset, seed: int = 0, mask_seed: int = 0,
              mask_dir: Optional[str] = None, num_images: Optional[int] = None, epochs: Optional[float] = None,
              max_steps: Optional[int] = None, model_flag: str = "model") -> dict:
    """Adaptation (Section 5.4): load a meta model, add ``task``, learn only its omega on
    ``num_images`` training slices; writes the adapted ``model.keras`` and sigma(omega)."""
    from loa_meta.data import task_dataset
    from loa_meta.training import AdaptConfig, adapt_omega

    if is_complete(workdir) and os.path.isfile(os.path.join(workdir, MODEL_FILE)):
        return _log_skip(workdir)
    t0 = time.time()
    model = common.load_model(model_path, flag=model_flag)
    if not hasattr(model, "add_task"):
        raise common.usage_error(model_flag, f"{model_path} is not a meta-learning model (no add_task)")
    n = preset.adapt_images if num_images is None else num_images
    images = load_images(data_dir, "train", n)
    val = load_images(data_dir, "val", preset.eval_slices)
    masks = task_masks([task], images.shape[1:], mask_seed, os.path.join(workdir, "masks"), mask_dir)
    m = masks[task.name]
    batch = min(preset.adapt_batch, len(images))
    epochs = preset.adapt_epochs if epochs is None else epochs
    total = _steps(epochs, len(images), batch)
    cap = max_steps if max_steps is not None else preset.adapt_max_steps
    total = min(total, cap) if cap else total
    # Only omega is trained: its optimizer uses the config's learning rate = the omega learning rate.
    cfg = AdaptConfig(**_common_cfg(preset, seed, total, preset.omega_learning_rate), batch_size=batch,
                      epochs=max(1, int(math.ceil(epochs))), initial_omega=preset.initial_omega)
    tid = int(model.num_tasks)
    data = {"train": task_dataset(images, m, tid, batch, seed=seed), "eval": _eval_dataset(val, [m], [tid], 8)}
    run_info = {"app": "adapt", "model_in": os.path.abspath(model_path), "data_dir": os.path.abspath(data_dir),
                "task": str(task), "task_name": task.name, "num_images": int(len(images)), "max_steps": total,
                "seed": seed, "mask_seed": mask_seed, "preset": preset.to_dict()}
    common.write_config_json(workdir, run_info, name="run_config.json")
    sig0 = None
    adapted, index, hist = adapt_omega(model, cfg, workdir, data)
    path = save_model_atomic(adapted, os.path.join(workdir, MODEL_FILE))
    sig = _sigma(adapted, index)
    info = dict(run_info, model=path, task_id=int(index), sigma_omega=sig, sigma_omega_initial=sig0,
                steps=len(hist["steps"]), seconds=time.time() - t0)
    mark_complete(workdir, info)
    logging.info("adaptation to %s done in %.0f s: task id %d, sigma(omega) = %s", task, info["seconds"], index, sig)
    return info


def _sigma(model, task_id: int) -> Optional[float]:
    from loa_meta.evaluation.evaluate import sigma_omega

    try:
        s = sigma_omega(model, task_id)
    except Exception:  # noqa: BLE001 - sigma is informational
        return None
    return None if s is None else float(s)


def run_app(main_fn, argv) -> None:
    """Run an app body, turning ``ValueError`` from the library into a clean non-zero exit."""
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected positional arguments: {argv[1:]}")
    main_fn()
