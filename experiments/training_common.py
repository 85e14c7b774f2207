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

from experiments import cli, common
from experiments.presets import Preset, delta_tol_after, get_preset

COMPLETE = "COMPLETE.json"
MODEL_FILE = "model.keras"
KEEP_CHECKPOINTS = 3  # checkpoints a training app keeps at least (TrainConfig.keep_checkpoints; average_checkpoints + 1 when larger)
# = loa_meta.training.losses.REDUCTIONS (tests/test_experiments_train.py checks it); not imported from there so
# that flag errors do not wait for TensorFlow to load
LOSS_REDUCTIONS = ("sum", "mean", "task_norm", "task_norm_sqrt", "task_norm_075")

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
    flags.DEFINE_float("eps0", None, "Override: initial smoothing eps_0 of r_eps (learned; paper: 1e-3).")
    flags.DEFINE_float("learning_rate", None, "Override: Adam learning rate.")
    flags.DEFINE_float("epochs", None, "Override: epochs (meta: per stage; conventional: total; adapt: total).")
    flags.DEFINE_integer("max_steps", None, "Override: cap on optimizer steps of the run.")
    flags.DEFINE_integer("max_train", None, "Override: use only the first N training slices (0 = all).")
    flags.DEFINE_integer("summary_every", None, "Override: TensorBoard scalars of the current batch (PSNR/SSIM per "
                         "task, eps_t and line-search branches per phase: one extra forward pass) every N steps.")
    flags.DEFINE_integer("eval_every", None, "Override: score the held-out slices every N outer iterations "
                         "(TensorBoard eval/*; with stair-wise training also the plateau rule; 0 = never).")
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
    flags.DEFINE_boolean("safeguard", None, "Override: Algorithm 1's safeguard, lines 5-16 (paper: on; "
                         "--nosafeguard is beyond the paper: every phase takes the learned update u).")
    flags.DEFINE_enum("loss_reduction", None, list(LOSS_REDUCTIONS), "Override: reduction of the loss "
                      "over a batch: sum (paper, Eqs. 13-14), mean, or task_norm (beyond the paper: each sample's "
                      "term divided by its zero-filled error ||A^H y - x*||^2, weights of mean 1 per batch, so that "
                      "low-ratio tasks do not decide theta alone; docs/benchmarks_quality.md 5.10-5.11), or task_norm_sqrt "
                      "(beyond the paper: divided by ||A^H y - x*||, between sum and task_norm; 5.13), or task_norm_075 "
                      "(divided by ||A^H y - x*||^1.5; 5.28).")
    flags.DEFINE_boolean("jit_compile", None, "Override: compile the training kernels with XLA (speed only; "
                         "docs/benchmarks_training.md measures when it pays off).")
    flags.DEFINE_integer("average_checkpoints", None, "Override: meta-learning and conventional training save the "
                         "average of the run's last N checkpoints (checkpoint_every outer iterations apart; paper: 1 = "
                         "the last iterate; beyond the paper). Adaptation keeps its last iterate.")
    flags.DEFINE_string("init_weights", None, "Start meta-learning / conventional LOA training from this saved LOA "
                        "network (.keras file or pretrained:NAME) instead of Xavier kernels (beyond the paper; "
                        "conventional training fixes kappa at that model's sigmoid(omega) for its task; "
                        "docs/training.md). Same --filters required.")


def define_distribute_flags() -> None:
    """Flags of multi-worker training (train_meta, train_conventional, train_istanet; docs/training.md)."""
    flags.DEFINE_enum("distribute", "none", ["none", "multi_worker"], "none: this process alone; multi_worker: "
                      "one of several workers (machines) described by the environment variable TF_CONFIG "
                      "(tf.distribute.MultiWorkerMirroredStrategy); run the same command on every worker.")
    flags.DEFINE_integer("cluster_timeout", 600, "multi_worker: seconds to wait for every worker to join (and "
                         "for each collective operation).")


def start_run(own_flags: Sequence[str], **extra) -> tuple:
    """The run directory and the strategy of a training app: ``(workdir, strategy or None)``.

    With ``--distribute=multi_worker`` the strategy is created first (before TensorFlow initialises
    its devices; it waits for every worker of ``TF_CONFIG``). The chief creates ``--workdir`` and
    writes ``flags.json``; another worker only checks the flag and writes nothing there.
    """
    f = flags.FLAGS
    strategy, chief = None, True
    if f.distribute == "multi_worker":
        from loa_meta import distribute

        if f.cluster_timeout < 1:
            raise common.usage_error("cluster_timeout", f"must be a positive integer, but received: {f.cluster_timeout}")
        try:
            info = distribute.worker_info()
        except ValueError as e:
            raise common.usage_error("distribute", str(e)) from None
        chief = info.is_chief
        logging.info("multi-worker training as %s: waiting up to %d s for the others", info.describe(),
                     f.cluster_timeout)
        strategy = cli.start_tensorflow(lambda: distribute.multi_worker_strategy(f.cluster_timeout, cli.real_stderr()))
        logging.info("all %d workers joined", info.num_workers)
    if not chief:
        common.require("workdir", f.workdir)
        return os.path.abspath(os.path.expanduser(f.workdir)), strategy
    workdir = common.prepare_workdir(f.workdir)
    common.write_config_json(workdir, dict(common.flag_values_dict(tuple(own_flags) + ("distribute",)), **extra),
                             name="flags.json")
    return workdir, strategy


def _writes(strategy) -> bool:
    """False on a non-chief worker of a multi-worker strategy (it writes nothing to the run directory)."""
    from loa_meta import distribute

    return distribute.is_chief(strategy)


def _all_done(strategy) -> None:
    """Under a multi-worker strategy, wait until every worker is done (the chief's files are written):
    a worker still busy when the chief exits loses TensorFlow's coordination service."""
    from loa_meta import distribute

    distribute.barrier(strategy)


def _mask_dir_out(workdir: str, strategy) -> Optional[str]:
    """Where the masks are saved: ``workdir/masks``; nowhere on a non-chief worker."""
    return os.path.join(workdir, "masks") if _writes(strategy) else None


def model_option_overrides() -> Dict[str, object]:
    """The preset fields set by :func:`define_model_option_flags` (None = not given), validated."""
    f = flags.FLAGS
    if f.filters is not None and f.filters < 1:
        raise common.usage_error("filters", f"must be a positive integer, but received: {f.filters}")
    if f.eps0_floor is not None and not (f.eps0_floor >= 0 and math.isfinite(f.eps0_floor)):
        raise common.usage_error("eps0_floor", f"must be a number >= 0, but received: {f.eps0_floor}")
    if f.global_clipnorm is not None and not (f.global_clipnorm > 0 and math.isfinite(f.global_clipnorm)):
        raise common.usage_error("global_clipnorm", f"must be a positive number, but received: {f.global_clipnorm}")
    if f.average_checkpoints is not None and not 1 <= f.average_checkpoints <= KEEP_CHECKPOINTS:
        raise common.usage_error("average_checkpoints", f"must be an integer from 1 to {KEEP_CHECKPOINTS} (the "
                                 f"checkpoints a run keeps), but received: {f.average_checkpoints}")
    init = None if f.init_weights is None else common.check_model_file(f.init_weights, flag="init_weights")
    return dict(filters=f.filters, eps0_floor=f.eps0_floor, regularizer_init=f.regularizer_init,
                global_clipnorm=f.global_clipnorm, safeguard=f.safeguard, loss_reduction=f.loss_reduction,
                jit_compile=f.jit_compile, average_checkpoints=f.average_checkpoints, init_weights=init)


_POSITIVE_INT = ("num_phases", "max_steps")
_POSITIVE_FLOAT = ("alpha0", "eps0", "learning_rate", "epochs")


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
    if f.summary_every is not None and f.summary_every < 1:
        raise common.usage_error("summary_every", f"must be a positive integer, but received: {f.summary_every}")
    if f.eval_every is not None and f.eval_every < 0:
        raise common.usage_error("eval_every", f"must be >= 0, but received: {f.eval_every}")
    if not (0.0 < f.data_fraction <= 1.0):
        raise common.usage_error("data_fraction", f"must be in (0, 1], but received: {f.data_fraction}")
    over = dict(num_phases=f.num_phases, stairwise=f.stairwise, alpha0=f.alpha0, eps0=f.eps0, learning_rate=f.learning_rate,
                max_train=f.max_train, summary_every=f.summary_every, eval_every=f.eval_every, **model_option_overrides())
    over.update(extra or {})
    preset = preset.override(**over)
    if preset.initial_phases > preset.num_phases:
        preset = preset.override(initial_phases=preset.num_phases)
    check_init_weights(preset)
    return preset


def check_init_weights(preset: Preset) -> None:
    """Flag error on ``--init_weights`` unless it loads as an LOA network that fits the preset's (the
    check runs before any output is written)."""
    if preset.init_weights is None:
        return
    from loa_meta.models.loa_net import LOANet
    from loa_meta.training.warm_start import WarmStartError, check_compatible, load_source

    try:
        check_compatible(LOANet(num_phases=1, **preset.model_kwargs()), load_source(preset.init_weights))
    except WarmStartError as e:
        raise common.usage_error("init_weights", str(e)) from None


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


def split_data(data_dir: str, preset: Preset, fraction: float = 1.0, flag: str = "data_dir") -> Dict[str, np.ndarray]:
    """The slices of every training mode, from the prepared train and val splits.

    * ``heldout``: the last ``preset.eval_slices`` slices of the val split. No mode trains on them;
      they judge the stair-wise plateau rule and phase acceptance (Section 4.2) and adaptation.
    * ``pool``: the train split (first ``max_train``) followed by the other val slices (first
      ``max_val``), each cut to ``fraction`` (the reduced-data runs): conventional training's
      merged train + val set (Section 5.2).
    * ``train`` / ``val``: the pool split ``1 - val_fraction : val_fraction`` in order, i.e.
      Algorithm 2's D^tr and D^val (paper: 300 : 150 = 2 : 1).
    """
    train = load_images(data_dir, "train", preset.max_train, fraction, flag)
    val = load_images(data_dir, "val", 0, 1.0, flag)
    k = int(preset.eval_slices)
    if k < 1 or k >= len(val):
        raise common.usage_error(flag, f"{data_dir}: the val split has {len(val)} slices; {k} are held out for "
                                       f"the stair-wise rule (preset eval_slices), which must leave at least one")
    heldout, val = val[-k:], val[:-k]
    if preset.max_val:
        val = val[: preset.max_val]
    if fraction < 1.0:
        val = val[: max(1, int(round(fraction * len(val))))]
    pool = np.concatenate([train, val], axis=0)
    n_val = min(max(1, int(round(preset.val_fraction * len(pool)))), len(pool) - 1)
    if n_val < 1:
        raise common.usage_error(flag, f"{data_dir}: {len(pool)} training slice(s) cannot be split into D^tr and D^val")
    return {"train": pool[:-n_val], "val": pool[-n_val:], "pool": pool, "heldout": heldout}


def task_masks(tasks: Sequence, shape, mask_seed: int, out_dir: Optional[str],
               mask_dir: Optional[str] = None) -> Dict[str, np.ndarray]:
    """The masks of ``tasks``: loaded from ``mask_dir`` or ``out_dir`` if saved before, otherwise
    built once with ``spec.build_mask(shape, mask_seed)``; always saved to ``out_dir`` as
    ``<task.name>.npy`` and ``.png`` so every later stage uses exactly the same masks
    (``out_dir=None``: nothing is saved)."""
    from loa_meta.sampling import load_mask, render_mask_png, save_mask

    if out_dir is not None:
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
        npy = None if out_dir is None else os.path.join(out_dir, t.name + ".npy")
        if npy is not None and not os.path.isfile(npy):
            save_mask(npy, m)
            render_mask_png(m, os.path.join(out_dir, t.name + ".png"), scale=2)
        out[t.name] = m.astype(np.float32)
    return out


def _steps(epochs: float, n_images: int, batch: int) -> int:
    return max(1, int(math.ceil(epochs * math.ceil(n_images / batch))))


def conventional_steps(preset: Preset, n_images: int, model_type: str = "loa", epochs: Optional[float] = None,
                       max_steps: Optional[int] = None) -> int:
    """Optimizer steps of a conventional run: ``epochs`` over ``n_images`` in batches of
    ``conv_batch``, capped by ``conv_max_steps``; ISTA-Net+ gets ``ista_steps_factor`` times that.
    An explicit ``max_steps`` (the apps' ``--max_steps``) is taken as given."""
    if max_steps is not None:
        return int(max_steps)
    epochs = preset.conv_epochs if epochs is None else epochs
    total = _steps(epochs, n_images, min(preset.conv_batch, n_images))
    total = min(total, preset.conv_max_steps) if preset.conv_max_steps else total
    if model_type != "loa":
        total = max(1, int(round(total * preset.ista_steps_factor)))
    return total


def adapt_steps(preset: Preset, n_images: int, batch: int, epochs: Optional[float] = None,
                max_steps: Optional[int] = None) -> int:
    """Optimizer steps of an adaptation: ``epochs`` over ``n_images`` in batches of ``batch``, capped
    by ``max_steps`` (the app's ``--max_steps``) or else ``preset.adapt_max_steps``."""
    total = _steps(preset.adapt_epochs if epochs is None else epochs, n_images, batch)
    cap = max_steps if max_steps is not None else preset.adapt_max_steps
    return min(total, cap) if cap else total


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


def _stair(preset: Preset, stage_iters: Optional[int]) -> dict:
    return dict(enabled=bool(preset.stairwise and preset.num_phases > preset.initial_phases),
                initial_phases=preset.initial_phases, max_phases=preset.num_phases,
                stage_max_iterations=None if stage_iters is None else max(1, int(stage_iters)),
                patience=preset.patience, min_delta=preset.min_delta)


def _common_cfg(preset: Preset, seed: int, max_steps: Optional[int], learning_rate: Optional[float] = None) -> dict:
    lr = preset.learning_rate if learning_rate is None else learning_rate
    return dict(learning_rate=lr, seed=seed, max_steps=max_steps, eval_every=preset.eval_every,
                global_clipnorm=preset.global_clipnorm, loss_reduction=preset.loss_reduction,
                checkpoint_every=preset.checkpoint_every, log_every=preset.log_every,
                summary_every=preset.summary_every, image_every=preset.image_every,
                compile_steps=preset.compile_steps, jit_compile=bool(preset.jit_compile and preset.compile_steps),
                average_checkpoints=preset.average_checkpoints, keep_checkpoints=max(KEEP_CHECKPOINTS, preset.average_checkpoints + 1),
                init_weights=preset.init_weights)


# ----------------------------------------------------------------------------- runs


def run_meta(data_dir: str, tasks: Sequence, workdir: str, preset: Preset, seed: int = 0, mask_seed: int = 0,
             data_fraction: float = 1.0, mask_dir: Optional[str] = None, epochs: Optional[float] = None,
             max_steps: Optional[int] = None, extra_config: Optional[dict] = None, strategy=None) -> dict:
    """Meta-learning (Algorithm 2, Section 5.2) on ``tasks``; writes ``workdir/model.keras``.

    Each stair-wise stage lasts ``preset.meta_stage_epochs`` epochs (``epochs`` overrides it):
    delta and lambda decay once per epoch and line 3 (delta <= delta_tol) ends the stage, unless
    the plateau rule on the held-out slices ends it first. The model records the task specs.
    Returns the completion info (``model``, ``sigma_omega`` per task, timings). Under a
    multi-worker ``strategy`` only the chief writes ``workdir``.
    """
    from loa_meta.data import cross_task_dataset
    from loa_meta.training import MetaConfig, train_meta

    if is_complete(workdir) and os.path.isfile(os.path.join(workdir, MODEL_FILE)):
        return _log_skip(workdir)
    t0 = time.time()
    split = split_data(data_dir, preset, data_fraction)
    train, val, ev = split["train"], split["val"], split["heldout"]
    shape = train.shape[1:]
    masks = task_masks(tasks, shape, mask_seed, _mask_dir_out(workdir, strategy), mask_dir)
    mlist = [masks[t.name] for t in tasks]
    j = preset.per_task_batch
    if epochs is not None:
        preset = preset.override(delta_tol=delta_tol_after(epochs, preset.delta0, preset.nu_delta))
    epoch_iters = _steps(1, len(train), j)
    stage_iters = epoch_iters * preset.meta_stage_epochs
    max_steps = max_steps if max_steps is not None else preset.meta_max_steps
    cfg = MetaConfig(
        **_common_cfg(preset, seed, max_steps),
        delta0=preset.delta0, nu_delta=preset.nu_delta, delta_tol=preset.delta_tol, lambda0=preset.lambda0,
        nu_lambda=preset.nu_lambda, theta_steps=preset.theta_steps, max_inner_iterations=preset.max_inner_iterations,
        omega_learning_rate=preset.omega_learning_rate, per_task_batch_train=j, per_task_batch_val=j,
        outer_iterations_per_epoch=epoch_iters, stairwise=_stair(preset, None),
        model=dict(preset.model_kwargs(), num_tasks=len(tasks), task_specs=[str(t) for t in tasks]),
        **(extra_config or {}),
    )
    data = {
        "train": cross_task_dataset([train] * len(tasks), mlist, j, seed=seed),
        "val": cross_task_dataset([val] * len(tasks), mlist, j, seed=seed + 1000),
        "eval": _eval_dataset(ev, mlist, list(range(len(tasks))), 8),
    }
    run_info = {"app": "train_meta", "data_dir": os.path.abspath(data_dir), "tasks": [str(t) for t in tasks],
                "task_names": [t.name for t in tasks], "task_ids": list(range(len(tasks))), "seed": seed,
                "mask_seed": mask_seed, "data_fraction": data_fraction, "num_train": int(len(train)),
                "num_val": int(len(val)), "num_heldout": int(len(ev)), "image_shape": list(map(int, shape)),
                "stage_epochs": preset.meta_stage_epochs, "stage_iterations": stage_iters, "preset": preset.to_dict()}
    if _writes(strategy):
        common.write_run_config(workdir, run_info)
    logging.info("meta-learning on %s: %d D^tr / %d D^val / %d held-out slices of %s, %d phases, stages of %d "
                 "epochs (%d iterations)", [str(t) for t in tasks], len(train), len(val), len(ev), shape,
                 preset.num_phases, preset.meta_stage_epochs, stage_iters)
    model, hist = train_meta(cfg, workdir, data, strategy=strategy)
    path = os.path.join(workdir, MODEL_FILE)
    sig = {t.name: _sigma(model, i) for i, t in enumerate(tasks)}
    info = dict(run_info, model=path, sigma_omega=sig, num_phases=int(getattr(model, "num_phases", 0)),
                steps=len(hist["steps"]), stages=hist["stages"], seconds=time.time() - t0)
    if _writes(strategy):
        save_model_atomic(model, path)
        mark_complete(workdir, info)
    _all_done(strategy)
    logging.info("meta-learning done in %.0f s: %s; sigma(omega) %s", info["seconds"], path, sig)
    return info


def run_conventional(data_dir: str, task, workdir: str, preset: Preset, model_type: str = "loa", seed: int = 0,
                     mask_seed: int = 0, data_fraction: float = 1.0, mask_dir: Optional[str] = None,
                     epochs: Optional[float] = None, max_steps: Optional[int] = None, strategy=None) -> dict:
    """Conventional training (Section 5.2) of one task on train+val merged, kappa = 1 (LOANet
    without task weights) or ISTA-Net+ (``model_type="ista_net_plus"``); writes ``model.keras``
    (under a multi-worker ``strategy``: the chief only)."""
    from loa_meta.data import task_dataset
    from loa_meta.training import ConventionalConfig, train_conventional

    if is_complete(workdir) and os.path.isfile(os.path.join(workdir, MODEL_FILE)):
        return _log_skip(workdir)
    t0 = time.time()
    split = split_data(data_dir, preset, data_fraction)
    merged, ev = split["pool"], split["heldout"]
    masks = task_masks([task], merged.shape[1:], mask_seed, _mask_dir_out(workdir, strategy), mask_dir)
    m = masks[task.name]
    batch = min(preset.conv_batch, len(merged))
    epochs = preset.conv_epochs if epochs is None else epochs
    total = conventional_steps(preset, len(merged), model_type, epochs, max_steps)
    sw = _stair(preset, total)
    if sw["enabled"]:
        sw["stage_max_iterations"] = max(1, total // (preset.num_phases - preset.initial_phases + 1))
    model_kwargs = (dict(preset.conventional_kwargs(), task_specs=[str(task)]) if model_type == "loa"
                    else preset.ista_kwargs())
    common_cfg = _common_cfg(preset, seed, total)
    if model_type != "loa":
        common_cfg["init_weights"] = None  # an LOA network cannot start ISTA-Net+
    elif preset.init_weights is not None:
        model_kwargs["fixed_kappa"] = _init_kappa(preset.init_weights, task, model_kwargs["fixed_kappa"])
    cfg = ConventionalConfig(**common_cfg, batch_size=batch, epochs=max(1, int(math.ceil(epochs))),
                             model_type=model_type, stairwise=sw if model_type == "loa" else _stair(
                                 preset.override(stairwise=False), total), model=model_kwargs)
    data = {"train": task_dataset(merged, m, 0, batch, seed=seed), "eval": _eval_dataset(ev, [m], [0], 8)}
    run_info = {"app": "train_istanet" if model_type != "loa" else "train_conventional",
                "data_dir": os.path.abspath(data_dir), "task": str(task), "task_name": task.name, "seed": seed,
                "mask_seed": mask_seed, "data_fraction": data_fraction, "num_train": int(len(merged)),
                "image_shape": list(map(int, merged.shape[1:])), "max_steps": total, "model_type": model_type,
                "preset": preset.to_dict()}
    if _writes(strategy):
        common.write_run_config(workdir, run_info)
    logging.info("%s training on %s: %d slices (train+val), batch %d, %d steps",
                 model_type, task, len(merged), batch, total)
    model, hist = train_conventional(cfg, workdir, data, strategy=strategy)
    path = os.path.join(workdir, MODEL_FILE)
    info = dict(run_info, model=path, num_phases=int(getattr(model, "num_phases", 0)), steps=len(hist["steps"]),
                stages=hist["stages"], seconds=time.time() - t0)
    if _writes(strategy):
        save_model_atomic(model, path)
        mark_complete(workdir, info)
    _all_done(strategy)
    logging.info("%s done in %.0f s: %s", model_type, info["seconds"], path)
    return info


def _init_kappa(init_weights: str, task, default: float) -> float:
    """Conventional training from ``init_weights``: kappa fixed at that model's sigmoid(omega) for
    ``task`` (same network as meta-learning's start), else ``default`` (logged)."""
    from loa_meta.training.warm_start import WarmStartError, load_source, source_kappa

    try:
        kappa = source_kappa(load_source(init_weights), str(task))
    except WarmStartError as e:
        raise common.usage_error("init_weights", str(e)) from None
    if kappa is None:
        logging.info("init_weights %s has no task %s: conventional kappa stays %.4g", init_weights, task, default)
        return default
    logging.info("conventional kappa fixed at %.4g = sigmoid(omega) of %s in %s", kappa, task, init_weights)
    return float(kappa)


def run_adapt(model_path: str, data_dir: str, task, workdir: str, preset: Preset, seed: int = 0, mask_seed: int = 0,
              mask_dir: Optional[str] = None, num_images: Optional[int] = None, epochs: Optional[float] = None,
              max_steps: Optional[int] = None, model_flag: str = "model") -> dict:
    """Adaptation (Section 5.4): load a meta model, add ``task``, learn only its omega on
    ``num_images`` training slices; writes the adapted ``model.keras`` and sigma(omega).

    The new omega starts from the omega of the nearest trained task (same kind, nearest ratio;
    :func:`loa_meta.sampling.nearest_task`) and is trained with ``preset.adapt_learning_rate``.
    """
    from loa_meta.data import task_dataset
    from loa_meta.training import AdaptConfig, adapt_omega

    if is_complete(workdir) and os.path.isfile(os.path.join(workdir, MODEL_FILE)):
        return _log_skip(workdir)
    t0 = time.time()
    model = common.load_model(model_path, flag=model_flag)
    if not hasattr(model, "add_task"):
        raise common.usage_error(model_flag, f"{model_path} is not a meta-learning model (no add_task)")
    from loa_meta.sampling import nearest_task

    trained = [str(t) for t in getattr(model, "task_specs", [])]
    if str(task) in trained:
        raise common.usage_error("task", f"{model_path} was already trained on {task} (task id {trained.index(str(task))}); "
                                         f"adapt learns the omega of an unseen task (trained: {', '.join(trained)})")
    try:
        start = nearest_task(getattr(model, "task_specs", []), task)
    except ValueError as e:
        raise common.usage_error(model_flag, f"{model_path}: {e}") from None
    omega0 = float(np.asarray(model.omega_variables[start]))
    n = preset.adapt_images if num_images is None else num_images
    images = load_images(data_dir, "train", n)
    val = split_data(data_dir, preset)["heldout"]
    masks = task_masks([task], images.shape[1:], mask_seed, os.path.join(workdir, "masks"), mask_dir)
    m = masks[task.name]
    batch = min(preset.adapt_batch, len(images))
    epochs = preset.adapt_epochs if epochs is None else epochs
    total = adapt_steps(preset, len(images), batch, epochs, max_steps)
    # Only omega is trained: its optimizer uses the config's learning rate = the adaptation learning rate.
    # adaptation keeps its last iterate (a few steps on one scalar omega: nothing to average)
    cfg = AdaptConfig(**dict(_common_cfg(preset, seed, total, preset.adapt_learning_rate), average_checkpoints=1),
                      batch_size=batch,
                      epochs=max(1, int(math.ceil(epochs))), initial_omega=omega0, task_spec=str(task))
    tid = int(model.num_tasks)
    data = {"train": task_dataset(images, m, tid, batch, seed=seed), "eval": _eval_dataset(val, [m], [tid], 8)}
    run_info = {"app": "adapt", "model_in": os.path.abspath(model_path), "data_dir": os.path.abspath(data_dir),
                "task": str(task), "task_name": task.name, "num_images": int(len(images)), "max_steps": total,
                "seed": seed, "mask_seed": mask_seed, "start_task_id": int(start),
                "start_task": model.task_specs[start], "initial_omega": omega0, "preset": preset.to_dict()}
    common.write_run_config(workdir, run_info)
    logging.info("adapting to %s from the omega of trained task %d (%s): sigma(omega) = %.4f",
                 task, start, model.task_specs[start], 1.0 / (1.0 + math.exp(-omega0)))
    adapted, index, hist = adapt_omega(model, cfg, workdir, data)
    path = save_model_atomic(adapted, os.path.join(workdir, MODEL_FILE))
    sig = _sigma(adapted, index)
    info = dict(run_info, model=path, task_id=int(index), sigma_omega=sig,
                sigma_omega_initial=1.0 / (1.0 + math.exp(-omega0)), steps=len(hist["steps"]),
                seconds=time.time() - t0)
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
