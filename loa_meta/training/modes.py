"""Training modes: what one outer iteration of the shared loop does (:mod:`loa_meta.training.loop`).

Each mode supplies the per-replica gradient computation (``replica_fn``), its variable blocks
(theta, omega), its Algorithm 2 schedule (or none) and its own outer-iteration step:

* :class:`MetaMode` -- Eq. 18 penalty objective and Algorithm 2 (K theta steps + 1 omega step while
  ||grad L~||^2 > delta, then delta/lambda decay; :func:`algorithm2.run_algorithm2_iteration`) on
  cross-task (B_tr, B_val) pairs; the stage ends when delta <= delta_tol;
* :class:`SupervisedMode` -- plain Eq. 13 loss on theta (conventional LOA training and ISTA-Net+,
  optionally + symmetry loss), one Adam step per batch;
* :class:`AdaptMode` -- Eq. 13 loss on the new task's omega only, theta frozen (Section 5.4).

The loop calls ``mode.outer_iteration(run, batch_tr, batch_val)``; ``run`` provides ``compute``,
``apply_theta``, ``apply_omega``, ``schedule``, ``on_step`` and ``steps_left``.
"""

from __future__ import annotations

from typing import Dict, Optional

import numpy as np
import tensorflow as tf

from loa_meta.training.algorithm2 import (
    Algorithm2Schedule,
    accumulate_loss_gradients,
    all_reduce,
    global_batch_size,
    penalty_objective_and_grads,
    replica_slice,
    run_algorithm2_iteration,
    sum_sq,
)
from loa_meta.training.losses import with_loss_weights


def _microbatch(config, batch, model):
    """``config.microbatch_size`` with ``"auto"`` resolved for this batch's image size and the model's phases."""
    return config.resolve_microbatch_size(batch["kspace"].shape, getattr(model, "num_phases", 1))


class _Mode:
    """Defaults shared by the modes: no schedule, one Adam step per batch."""

    name = "mode"
    needs_val = False

    def __init__(self, config):
        self.config = config

    def make_schedule(self) -> Optional[Algorithm2Schedule]:
        return None

    @property
    def omega_learning_rate(self) -> float:
        """Learning rate of the omega optimizer (the config's ``learning_rate`` unless overridden)."""
        return float(self.config.learning_rate)

    @property
    def max_outer_iterations(self) -> Optional[int]:
        """Budget of outer iterations (batch pairs) on top of ``max_steps``; None: unbounded."""
        return None

    def outer_iteration(self, run, batch_tr, batch_val) -> Dict[str, float]:
        """One gradient evaluation on ``batch_tr`` and one Adam step on each non-empty block."""
        lam = tf.constant(0.0, tf.float32)
        metrics, g_theta, g_omega = run.compute(batch_tr, batch_tr, lam)
        m = {k: float(v) for k, v in metrics.items()}
        m["grad_theta_norm2"] = float(sum_sq(g_theta))
        m["grad_omega_norm2"] = float(sum_sq(g_omega))
        run.on_step(m, "theta" if g_theta else "omega")  # raises on NaN/Inf before the update
        if g_theta:
            run.apply_theta(g_theta)
        if g_omega:
            run.apply_omega(g_omega)
        return m


class MetaMode(_Mode):
    """Algorithm 2 on the Eq. 18 penalty objective (theta and omega)."""

    name = "meta"
    needs_val = True

    def make_schedule(self) -> Algorithm2Schedule:
        c = self.config
        return Algorithm2Schedule(c.delta0, c.nu_delta, c.delta_tol, c.lambda0, c.nu_lambda,
                                  c.outer_iterations_per_epoch)

    @property
    def omega_learning_rate(self) -> float:
        return float(self.config.omega_learning_rate)

    @property
    def max_outer_iterations(self) -> Optional[int]:
        return self.config.max_outer_iterations

    def outer_iteration(self, run, batch_tr, batch_val) -> Dict[str, float]:
        """Lines 4-12 of Algorithm 2 on one (B_tr, B_val) pair."""
        c = self.config
        return run_algorithm2_iteration(run.compute, run.apply_theta, run.apply_omega, batch_tr, batch_val,
                                        run.schedule, c.theta_steps, c.max_inner_iterations, run.on_step,
                                        run.steps_left)

    def variables(self, model):
        return list(model.theta_variables), list(model.omega_variables)

    def replica_fn(self, model, theta, omega, batch_tr, batch_val, lam):
        return penalty_objective_and_grads(model, batch_tr, batch_val, lam, self.config.loss_reduction, theta, omega,
                                           microbatch_size=_microbatch(self.config, batch_tr, model),
                                           jit_compile=self.config.jit_compile, compiled=self.config.compile_steps)


class SupervisedMode(_Mode):
    """Plain Eq. 13 loss on theta (conventional training, ISTA-Net+)."""

    name = "conventional"
    needs_val = False

    def __init__(self, config, symmetry_weight: float = 0.0):
        super().__init__(config)
        self.symmetry_weight = float(symmetry_weight)

    def variables(self, model):
        return list(model.theta_variables), []

    def replica_fn(self, model, theta, omega, batch_tr, batch_val, lam):
        n = global_batch_size(batch_tr)
        b = replica_slice(with_loss_weights(batch_tr, self.config.loss_reduction))
        use_sym = self.symmetry_weight > 0 and hasattr(model, "reconstruct")
        extra_fn = None
        if use_sym:
            def extra_fn(model, mb):
                # ISTA-Net+: per-sample symmetry constraint sum_k mean|F~F D r - D r|^2. The original
                # loss is mean_b(mse) + gamma mean_b(sym); ours is sum_b 1/2 H W mse_b, so the
                # constraint is scaled by H W / 2 to keep the original's relative weighting.
                pred, sym = model.reconstruct(mb["kspace"], mb["mask"], mb.get("task_id"), return_symmetry_loss=True)
                hw = tf.cast(tf.shape(mb["kspace"])[-1] * tf.shape(mb["kspace"])[-2], tf.float32)
                sym = 0.5 * hw * tf.reduce_sum(tf.cast(sym, tf.float32))
                if self.config.loss_reduction == "mean":
                    sym = sym / tf.cast(n, tf.float32)
                return pred, self.symmetry_weight * sym
        loss, wsym, grads = accumulate_loss_gradients(model, b, theta, self.config.loss_reduction, n,
                                                      _microbatch(self.config, b, model), extra_fn,
                                                      jit_compile=self.config.jit_compile, compiled=self.config.compile_steps)
        total = loss + tf.cast(wsym, loss.dtype)
        sym = wsym / self.symmetry_weight if use_sym else wsym
        grads = all_reduce(grads)
        loss, total, sym = all_reduce([loss, total, sym])
        m = {"loss_train": tf.cast(loss, tf.float32), "objective": tf.cast(total, tf.float32)}
        if use_sym:
            m["symmetry_loss"] = tf.cast(sym, tf.float32)
        return m, list(grads), []


class AdaptMode(SupervisedMode):
    """Section 5.4: Eq. 13 loss on one task's omega only; theta is not even given to an optimizer."""

    name = "adapt"

    def __init__(self, config, task_index: int):
        super().__init__(config)
        self.task_index = int(task_index)

    def variables(self, model):
        omegas = list(model.omega_variables)
        n = int(model.num_tasks)
        if len(omegas) == n and all(int(np.prod(v.shape)) == 1 for v in omegas):
            return [], [omegas[self.task_index]]
        raise ValueError(
            "AdaptMode needs one scalar omega variable per task (model.omega_variables), but the "
            f"model has {len(omegas)} omega variables for {n} tasks."
        )

    def replica_fn(self, model, theta, omega, batch_tr, batch_val, lam):
        n = global_batch_size(batch_tr)
        b = replica_slice(with_loss_weights(batch_tr, self.config.loss_reduction))
        loss, _, grads = accumulate_loss_gradients(model, b, omega, self.config.loss_reduction, n,
                                                   _microbatch(self.config, b, model),
                                                   jit_compile=self.config.jit_compile, compiled=self.config.compile_steps)
        grads = all_reduce(grads)
        loss = all_reduce(loss)
        m = {"loss_train": tf.cast(loss, tf.float32), "objective": tf.cast(loss, tf.float32)}
        return m, [], list(grads)
