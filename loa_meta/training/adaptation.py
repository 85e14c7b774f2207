"""Adaptation to an unseen task (Section 5.4): theta frozen, only a new omega is learned.

``adapt_omega`` calls ``model.add_task(initial_omega, spec=task_spec)`` and trains that single scalar with Adam on
the Eq. 13 loss of the new task's images (paper: 100 images, 50 epochs). Theta is never handed to
an optimizer, so it stays bit-identical; the other tasks' omegas are not touched either, so their
reconstructions are unchanged.
"""

from __future__ import annotations

from typing import Optional

import tensorflow as tf

from loa_meta.training.api import run_history, prepare_workdir
from loa_meta.training.config import AdaptConfig
from loa_meta.training.loop import AdaptMode, TrainingRun


def adapt_omega(model, config: AdaptConfig, workdir: str, data, strategy: Optional[tf.distribute.Strategy] = None,
                summaries: bool = True):
    """Learn the omega of a new task with theta frozen.

    Args:
      model: a trained model with ``add_task``, ``num_tasks`` and scalar ``omega_variables``. It is
        modified in place (one task added). On resume from ``workdir/ckpt`` pass the same trained
        model again (before the task was added); the task is re-added and the omega restored.
      config: :class:`AdaptConfig`.
      workdir: run directory.
      data: batches of the new task (their ``task_id`` is overwritten with the new task's index).

    Returns:
      ``(model, task_index, history)``.
    """
    prepare_workdir(config, workdir, strategy)
    task_index = model.num_tasks  # index the new task will get
    state = {"added": False}

    def build(_num_phases):
        return model

    def prepare(m, resuming):
        if not state["added"]:
            spec = {} if config.task_spec is None else {"spec": config.task_spec}
            idx = m.add_task(config.initial_omega, **spec)
            if idx != task_index:
                raise RuntimeError(f"add_task returned {idx}, expected {task_index}")
            state["added"] = True

    def set_task(batch):
        batch = dict(batch)
        batch["task_id"] = tf.fill(tf.shape(batch["kspace"])[:1], tf.constant(task_index, tf.int32))
        return batch

    if isinstance(data, dict):
        data = dict(data)
        data["train"] = data["train"].map(set_task)
        if data.get("eval") is not None:
            data["eval"] = data["eval"].map(set_task)
    else:
        data = data.map(set_task)
    run = TrainingRun(AdaptMode(config, task_index), config, workdir, data, build, None, None, strategy,
                      prepare_model=prepare, summaries=summaries)
    out = run.run()
    return out, task_index, run_history(run)
