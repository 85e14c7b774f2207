"""Library entry points called by the absl apps: ``train_meta``, ``train_conventional``.

Both write the resolved config to ``workdir/config.json`` (atomically), resume from
``workdir/ckpt`` if a checkpoint exists, and return ``(model, history)``. They never read flags.
"""

from __future__ import annotations

import os
from typing import Callable, Optional

import keras
import tensorflow as tf

from loa_meta import distribute
from loa_meta.training.config import ConventionalConfig, MetaConfig
from loa_meta.training.loop import MetaMode, SupervisedMode, TrainingRun


def prepare_workdir(config, workdir, strategy=None):
    """Validate ``config``, write it to ``workdir/config.json`` (the chief only, under a multi-worker
    strategy), enable op determinism if asked and seed Keras."""
    config.validate()
    if distribute.is_chief(strategy):
        os.makedirs(workdir, exist_ok=True)
        config.write_json(os.path.join(workdir, "config.json"))
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()
    keras.utils.set_random_seed(config.seed)


def default_loa_builder(model_kwargs, use_task_weights=True) -> Callable[[int], keras.Model]:
    """``num_phases -> LOANet(num_phases=..., **model_kwargs)``."""

    def build(num_phases):
        from loa_meta.models.loa_net import LOANet

        kw = dict(model_kwargs)
        kw.setdefault("use_task_weights", use_task_weights)
        return LOANet(num_phases=num_phases, **kw)

    return build


def default_ista_builder(model_kwargs) -> Callable[[int], keras.Model]:
    def build(num_phases):
        from loa_meta.models.ista_net_plus import ISTANetPlus

        return ISTANetPlus(num_phases=num_phases, **dict(model_kwargs))

    return build


def run_history(run):
    return {"steps": run.history, "stages": run.stage_history, "averaged_checkpoints": list(run.averaged_checkpoints)}


def warm_start_hook(config) -> Optional[Callable]:
    """``prepare_model(model, resuming)`` that copies ``config.init_weights`` into a new run's model
    (:mod:`loa_meta.training.warm_start`), or None. The source is loaded (and checked) here, before
    any training starts."""
    if config.init_weights is None:
        return None
    from loa_meta.training.warm_start import check_compatible, load_source, warm_start

    source = load_source(config.init_weights)

    def prepare(model, resuming):
        check_compatible(model, source)
        if not resuming:
            warm_start(model, source)

    return prepare


def train_meta(config: MetaConfig, workdir: str, data, model_fn: Optional[Callable] = None,
               strategy: Optional[tf.distribute.Strategy] = None, summaries: bool = True):
    """Meta-learning with Algorithm 2 (Eqs. 13-18) and stair-wise phase growth (Section 4.2).

    Args:
      config: :class:`MetaConfig`.
      workdir: run directory (created); holds ``config.json``, ``ckpt/``, ``tb/``.
      data: :class:`~loa_meta.training.loop.TrainingData` or dict with ``train`` (cross-task
        B_tr batches), ``val`` (cross-task B_val batches) and optional finite ``eval``.
      model_fn: ``num_phases -> model``; default builds ``LOANet(**config.model)``.
        ``config.init_weights`` (a saved LOA network) replaces its initial weights.
      strategy: optional ``tf.distribute.Strategy``.
      summaries: write TensorBoard summaries.

    Returns:
      ``(model, history)`` with ``history = {"steps": [...], "stages": [...]}``.
    """
    config.validate()
    hook = warm_start_hook(config)
    prepare_workdir(config, workdir, strategy)
    sw = config.stairwise_config()
    p0 = sw.initial_phases if sw.enabled else sw.max_phases
    run = TrainingRun(MetaMode(config), config, workdir, data,
                      model_fn or default_loa_builder(config.model, True), p0, sw, strategy, summaries=summaries,
                      prepare_model=hook)
    model = run.run()
    return model, run_history(run)


def train_conventional(config: ConventionalConfig, workdir: str, data, model_fn: Optional[Callable] = None,
                       strategy: Optional[tf.distribute.Strategy] = None, summaries: bool = True):
    """Conventional training (Section 5.2) of LOANet (kappa = 1) or ISTA-Net+: theta only, Eq. 13.

    Same arguments as :func:`train_meta`; ``data.train`` holds one task's merged train+val set.
    ISTA-Net+'s symmetry loss is added with weight ``config.symmetry_weight`` when exposed.
    """
    config.validate()
    hook = warm_start_hook(config)
    prepare_workdir(config, workdir, strategy)
    sw = config.stairwise_config()
    p0 = sw.initial_phases if sw.enabled else sw.max_phases
    if model_fn is None:
        model_fn = (default_loa_builder(config.model, False) if config.model_type == "loa"
                    else default_ista_builder(config.model))
    sym = config.symmetry_weight if config.model_type == "ista_net_plus" else 0.0
    run = TrainingRun(SupervisedMode(config, sym), config, workdir, data, model_fn, p0, sw, strategy,
                      summaries=summaries, prepare_model=hook)
    model = run.run()
    return model, run_history(run)
