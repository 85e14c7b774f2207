"""The shared training loop: meta (Algorithm 2), conventional, ISTA-Net+ and omega adaptation.

One loop drives every mode; a *mode* object supplies the per-replica gradient computation
(``replica_fn``), which variable blocks exist (theta, omega) and how one outer iteration uses them:

* :class:`MetaMode` -- Eq. 18 penalty objective and Algorithm 2 (K theta steps + 1 omega step
  while ||grad L~||^2 > delta, then delta/lambda decay) on cross-task (B_tr, B_val) pairs;
* :class:`SupervisedMode` -- plain Eq. 13 loss on theta only (conventional LOA training and
  ISTA-Net+, optionally + symmetry loss);
* :class:`AdaptMode` -- Eq. 13 loss on the new task's omega only, theta frozen (Section 5.4).

The loop itself handles tf.distribute (``strategy.run``; gradients summed over replicas, losses
per replica scaled by the *global* batch when ``loss_reduction="mean"``), stair-wise phase growth
(Section 4.2), checkpoints (resume after kill -9), NaN/Inf guards, TensorBoard and progress logs.
Gradients are computed in one ``tf.function`` and applied in another, so the host can test them
for NaN/Inf (and the Algorithm 2 line-6 condition) *before* the weights change.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import shutil
from typing import Dict, List, Optional

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from loa_meta import distribute
from loa_meta.training import checkpointing
from loa_meta.training.algorithm2 import model_inputs
from loa_meta.fileio import atomic_path
from loa_meta.training.config import TrainConfig
from loa_meta.training.losses import WEIGHT_POWERS, per_sample_loss, relative_sample_loss
from loa_meta.training.modes import AdaptMode, MetaMode, SupervisedMode  # noqa: F401 (public re-export)
from loa_meta.training.progress import ProgressLogger, remaining_work
from loa_meta.training.summaries import Summaries, batch_psnr, batch_ssim

_ZERO = tf.UnconnectedGradients.ZERO


@dataclasses.dataclass
class TrainingData:
    """Datasets for a run (dicts {"kspace", "mask", "target", "task_id"}, already batched).

    Args:
      train: repeated training dataset (B_tr for meta-learning).
      val: repeated validation dataset (B_val; required for meta-learning).
      eval: optional *finite* dataset used for the plateau rule, stage acceptance and the
        per-task PSNR summaries.
    """

    train: tf.data.Dataset
    val: Optional[tf.data.Dataset] = None
    eval: Optional[tf.data.Dataset] = None

    @classmethod
    def coerce(cls, data) -> "TrainingData":
        if isinstance(data, TrainingData):
            return data
        if isinstance(data, dict):
            unknown = set(data) - {"train", "val", "eval"}
            if unknown or "train" not in data:
                raise ValueError(
                    f"Argument `data` must have key 'train' and optionally 'val', 'eval', but received keys: {sorted(data)}"
                )
            return cls(**data)
        if isinstance(data, tf.data.Dataset):
            return cls(train=data)
        raise ValueError(f"Argument `data` must be a TrainingData, dict or tf.data.Dataset, but received: {type(data)}")


class NonFiniteError(FloatingPointError):
    """A loss or gradient became NaN/Inf; the run stops before applying it."""


# ----------------------------------------------------------------------------- helpers


def _dummy_inputs(spec) -> Dict[str, tf.Tensor]:
    ks = spec["kspace"]
    h, w = ks.shape[-2], ks.shape[-1]
    if h is None or w is None:
        raise ValueError("The training dataset must have a static image shape (H, W) in its element_spec.")
    out = {"kspace": tf.zeros((1, h, w), ks.dtype)}
    mspec = spec["mask"]
    out["mask"] = tf.zeros((1, h, w) if mspec.shape.rank == 3 else (h, w), mspec.dtype)
    out["task_id"] = tf.zeros((1,), tf.int32)
    return out


def _num_phases(model) -> int:
    return int(getattr(model, "num_phases", 0) or 0)


def _num_tasks(model) -> int:
    return int(getattr(model, "num_tasks", 0) or 0)


def _make_adam(config: TrainConfig, lr: float):
    return keras.optimizers.Adam(
        learning_rate=lr, beta_1=config.beta_1, beta_2=config.beta_2, epsilon=config.adam_epsilon,
        global_clipnorm=config.global_clipnorm,
    )


def _save_weights_atomic(model, path: str):
    with atomic_path(path, suffix=".weights.h5") as tmp:
        model.save_weights(tmp)


def branch_statistics(branch, backtracks) -> List[Dict[str, float]]:
    """Per phase: fractions of the active samples that took u, took v or kept x, and mean backtracks.

    Args:
      branch, backtracks: ``(T, B)`` arrays from ``LOANet.reconstruct(..., return_diagnostics=True)``
        (branch codes 0 u, 1 v, 2 kept, -1 inactive).

    Returns:
      One dict per phase with ``u``, ``v``, ``kept`` (fractions of active samples; 0 when none is
      active) and ``backtracks`` (mean over the samples that took v or kept x).
    """
    branch, backtracks = np.asarray(branch), np.asarray(backtracks)
    out = []
    for b, k in zip(branch, backtracks):
        act = b >= 0
        n = max(int(act.sum()), 1)
        searched = (b == 1) | (b == 2)
        out.append({"u": float((b == 0).sum() / n), "v": float((b == 1).sum() / n), "kept": float((b == 2).sum() / n),
                    "backtracks": float(k[searched].mean()) if searched.any() else 0.0})
    return out


def branch_summary_line(stats: List[Dict[str, float]]) -> str:
    """Compact progress-line text: per-phase branch letters (u, v, k = kept, mixed '*') and mean backtracks."""
    def letter(st):
        top = max(("u", "v", "kept"), key=lambda k: st[k])
        return ("u", "v", "k")[("u", "v", "kept").index(top)] if st[top] == 1.0 else "*"
    bts = [st["backtracks"] for st in stats if st["v"] + st["kept"] > 0]
    return "phases %s bt %.1f" % ("".join(letter(st) for st in stats), float(np.mean(bts)) if bts else 0.0)


# ----------------------------------------------------------------------------- loop


@contextlib.contextmanager
def graph_rewrites_off(enabled: bool = True):
    """Run the block with TensorFlow's graph optimizer (Grappler) off, then restore the previous setting.

    Grappler rewrites each ``tf.function`` graph when it is first run in a process (constant folding,
    arithmetic regrouping, layout and remapper passes), and some of its choices differ between
    processes, which changes the order of floating-point operations: with op determinism on, two
    processes of the same training command still parted in the last bits after a few steps and
    ended 0.2 apart in the weights. Without it they agree bit for bit, at the same speed
    (docs/benchmarks_training.md, "Bit-reproducibility on CPU"). The setting is process-wide
    (``tf.config.optimizer.set_experimental_options``); the previous setting is restored when the
    block ends, so code that runs after training (evaluation, TV) gets TensorFlow's default again.
    """
    if not enabled:
        yield
        return
    before = bool(tf.config.optimizer.get_experimental_options().get("disable_meta_optimizer", False))
    tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})
    try:
        yield
    finally:
        tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": before})


class TrainingRun:
    """Runs one training job (all stages) in ``workdir``; resumes from ``workdir/ckpt``.

    Args:
      mode: a :class:`MetaMode`, :class:`SupervisedMode` or :class:`AdaptMode`.
      config: the mode's config (``MetaConfig`` / ``ConventionalConfig`` / ``AdaptConfig``).
      workdir: run directory (``ckpt/``, ``tb/``, ``best.weights.h5``).
      data: :class:`TrainingData` (or dict / dataset).
      build_model: ``build_model(num_phases) -> model``; called under the strategy scope.
      initial_phases: phases of the first stage.
      stairwise: :class:`StairwiseConfig` or None (single stage).
      strategy: a ``tf.distribute.Strategy`` (default: the default strategy).
      prepare_model: optional ``prepare_model(model, resuming) -> None`` hook called after the model
        is built and before optimizers/checkpoints are created (adaptation adds its task here).
    """

    STATE = ("step", "outer", "stage", "stage_iter", "num_phases", "num_tasks", "best_val",
             "best_phases", "stage_best", "bad_evals", "monitor_ema", "finished")

    def __init__(self, mode, config, workdir, data, build_model, initial_phases=None, stairwise=None,
                 strategy=None, prepare_model=None, summaries=True):
        self.mode, self.config, self.workdir = mode, config, workdir
        self.data = TrainingData.coerce(data)
        if mode.needs_val and self.data.val is None:
            raise ValueError("Meta-learning needs `data.val` (the cross-task B_val batches).")
        self.build_model, self.prepare_model = build_model, prepare_model
        self.stairwise = stairwise
        self.initial_phases = initial_phases
        self.strategy = strategy or tf.distribute.get_strategy()
        # Under a multi-worker strategy only the chief writes the run directory; the other workers
        # write what they must (checkpoints: saving is collective) to a scratch directory, removed.
        self.chief = distribute.is_chief(self.strategy)
        self.write_dir = workdir if self.chief else distribute.worker_scratch_dir()
        self.summaries = Summaries(workdir, enabled=summaries and self.chief)
        self.progress = ProgressLogger(config.log_every, config.max_steps,
                                       status_path=os.path.join(workdir, "progress.json") if self.chief else None)
        self.history: List[Dict[str, float]] = []
        self.stage_history: List[Dict[str, float]] = []
        self.schedule = mode.make_schedule()
        s = {}
        for n in self.STATE:
            if n in ("best_val", "stage_best", "monitor_ema"):
                s[n] = tf.Variable(math.inf if n != "monitor_ema" else math.nan, dtype=tf.float64, trainable=False, name=n)
            else:
                s[n] = tf.Variable(0, dtype=tf.int64, trainable=False, name=n)
        self.state = s
        self.rng = tf.random.Generator.from_seed(config.seed)
        self.it_tr = iter(self.data.train)
        self.it_val = iter(self.data.val) if mode.needs_val else None
        self.best_path = os.path.join(self.write_dir, "best.weights.h5")
        self._data_checked = False
        self.averaged_checkpoints: List[str] = []

    # -- model / optimizer / checkpoint construction (per stage) --------------------------------

    def _setup_stage(self, model):
        """(Re)create optimizers, step functions and the checkpoint for the current model."""
        self.model = model
        with self.strategy.scope():
            self.theta, self.omega = self.mode.variables(model)
            # Keras 3 optimizers are built for a fixed variable set; after add_phase() a new stage
            # gets fresh Adam optimizers (moments restart), built here *before* any restore.
            self.opt_theta = _make_adam(self.config, self.config.learning_rate)
            self.opt_omega = _make_adam(self.config, self.mode.omega_learning_rate)
            if self.theta:
                self.opt_theta.build(self.theta)
            if self.omega:
                self.opt_omega.build(self.omega)
        strategy, mode, theta, omega = self.strategy, self.mode, self.theta, self.omega

        # The gradient computation runs on the host; its heavy parts are compiled kernels
        # (algorithm2.GradientKernels, traced once per stage) when config.compile_steps.
        def compute(batch_tr, batch_val, lam):
            out = strategy.run(lambda a, b, c: mode.replica_fn(model, theta, omega, a, b, c), args=(batch_tr, batch_val, lam))
            return tf.nest.map_structure(lambda v: strategy.experimental_local_results(v)[0], out)

        def replica_apply(opt, variables):
            # The host passes the already summed gradients; Keras optimizers all-reduce (SUM) in
            # replica context, so only replica 0 contributes them (exact: g + 0 + ...).
            def fn(grads):
                ctx = tf.distribute.get_replica_context()
                if ctx.num_replicas_in_sync > 1:
                    keep = tf.cast(tf.equal(ctx.replica_id_in_sync_group, 0), grads[0].dtype)
                    grads = [g * tf.cast(keep, g.dtype) for g in grads]
                opt.apply_gradients(zip(grads, variables))

            return fn

        apply_t, apply_o = replica_apply(self.opt_theta, theta), replica_apply(self.opt_omega, omega)

        @tf.function
        def apply_theta(grads):
            strategy.run(apply_t, args=(grads,))

        @tf.function
        def apply_omega(grads):
            strategy.run(apply_o, args=(grads,))

        maybe_function = tf.function if self.config.compile_steps else (lambda f: f)
        weight_power = WEIGHT_POWERS.get(self.config.loss_reduction)

        @maybe_function
        def eval_fn(batch):
            pred = model(model_inputs(batch), training=False)
            ref = tf.cast(batch["target"], pred.dtype)
            if weight_power is not None:  # the held-out loss in the training loss's own terms (relative to zero filling)
                loss = relative_sample_loss(pred, batch["kspace"], batch["mask"], batch["target"], weight_power)
            else:
                loss = per_sample_loss(pred, batch["target"])
            return loss, batch_psnr(pred, ref), batch_ssim(pred, ref)

        self.compute, self.apply_theta, self.apply_omega = compute, apply_theta, apply_omega
        self._eval_fn = eval_fn
        objs = dict(model=model, opt_theta=self.opt_theta, opt_omega=self.opt_omega, rng=self.rng,
                    iterator_train=self.it_tr, **self.state)
        if self.it_val is not None:
            objs["iterator_val"] = self.it_val
        if self.schedule is not None:
            objs["delta"], objs["lam"] = self.schedule.delta, self.schedule.lam
            objs["since_decay"] = self.schedule.since_decay
        self.ckpt = tf.train.Checkpoint(**objs)
        # The same objects without the input iterators, for reading weights back (checkpoint averaging
        # needs no iterator state; restoring one used to wait out tf.data's autotuning thread, 30-50 s
        # idle in some runs, which loa_meta/data/pipeline.py now switches off).
        self._ckpt_weights = tf.train.Checkpoint(**{k: v for k, v in objs.items() if not k.startswith("iterator")})
        self.manager = tf.train.CheckpointManager(
            self.ckpt, checkpointing.checkpoint_dir(self.write_dir), max_to_keep=self.config.keep_checkpoints
        )

    def _new_model(self, num_phases, num_tasks=None, resuming=False):
        with self.strategy.scope():
            model = self.build_model(self.initial_phases or max(num_phases, 1))
            model(_dummy_inputs(self.data.train.element_spec), training=False)
            while _num_phases(model) < num_phases:
                model.add_phase()
            if self.prepare_model is not None:
                self.prepare_model(model, resuming)
            while num_tasks is not None and _num_tasks(model) < num_tasks:
                model.add_task()
            model(_dummy_inputs(self.data.train.element_spec), training=False)
        return model

    def save(self):
        path = self.manager.save(checkpoint_number=int(self.state["outer"].numpy()))
        if not self.chief:  # a non-chief worker's copy is not kept (the usual tf.distribute pattern)
            shutil.rmtree(checkpointing.checkpoint_dir(self.write_dir), ignore_errors=True)
        return path

    def _best_weights(self) -> str:
        """The stage-acceptance weights to roll back to: this process's, else (a non-chief worker
        that resumed) the chief's in the run directory."""
        if os.path.exists(self.best_path):
            return self.best_path
        return os.path.join(self.workdir, os.path.basename(self.best_path))

    # -- per-step callbacks ----------------------------------------------------------------------

    def _on_step(self, m, which):
        step = int(self.state["step"].numpy())
        for k, v in m.items():
            if not math.isfinite(v):
                raise NonFiniteError(
                    f"Non-finite {k}={v} at step {step + 1} (outer iteration {int(self.state['outer'].numpy()) + 1}, "
                    f"stage {int(self.state['stage'].numpy())}, mode {self.mode.name}); nothing was applied. "
                    f"Last good checkpoint: {self.manager.latest_checkpoint}"
                )
        if which == "none":
            return
        step += 1
        self.state["step"].assign(step)
        rec = dict(m, step=step, block=which)
        if self.schedule is not None:
            rec["delta"], rec["lambda"] = float(self.schedule.delta.numpy()), float(self.schedule.lam.numpy())
        self.history.append(rec)
        monitor = m.get("loss_val", m.get("loss_train"))
        ema = float(self.state["monitor_ema"].numpy())
        self.state["monitor_ema"].assign(monitor if math.isnan(ema) else 0.9 * ema + 0.1 * monitor)
        if step % self.config.summary_every == 0:
            sc = {k: v for k, v in rec.items() if isinstance(v, float) and k not in ("loss_val",)}
            self.summaries.scalars("train", sc, step)
            if "loss_val" in m:
                self.summaries.scalars("val", {"loss": m["loss_val"]}, step)
            self.summaries.model_scalars(self.model, step)
            self._batch_summaries(step)
        if self.config.image_every and step % self.config.image_every == 0 and self.summaries.enabled:
            batch = self._last_batch_val or self._last_batch_tr
            self.summaries.images(batch, self.model(model_inputs(batch), training=False), step)
        extra = ""
        if self.schedule is not None:
            extra = "| delta %.3g lambda %.3g | %s" % (rec["delta"], rec["lambda"], self._outer_eta())
        if getattr(self, "_branch_line", ""):
            extra = (extra + " | " if extra else "| ") + self._branch_line
        outer, p = int(self.state["outer"].numpy()), _num_phases(self.model)
        self.progress.update(step, self._images_per_step, monitor, int(self.state["stage"].numpy()), p, extra,
                             outer=outer, plan=remaining_work(self.stairwise, self.schedule, self.config, p,
                                                              int(self.state["stage_iter"].numpy()), outer))

    def _outer_eta(self) -> str:
        """Algorithm 2 progress of this stage: outer iteration i of N (until delta <= delta_tol)."""
        n_total = self.schedule.outer_iterations_to_tol()
        mo = self.mode.max_outer_iterations
        done = int(self.state["stage_iter"].numpy())
        if mo is not None:
            n_total = min(n_total, max(mo - int(self.state["outer"].numpy()) + done, done))
        return "outer %d/%d" % (done + 1, n_total)

    def _batch_summaries(self, step: int):
        """Per-task PSNR/SSIM on the current B_val (B_tr without one) and eps_t per phase (LOANet)."""
        if not self.summaries.enabled:
            return
        batch = self._last_batch_val or self._last_batch_tr
        if batch is None:
            return
        vals = {}
        if hasattr(self.model, "eps0_var") and hasattr(self.model, "reconstruct"):
            pred, diag = self.model.reconstruct(batch["kspace"], batch["mask"], batch.get("task_id"),
                                                return_diagnostics=True)
            for t, e in enumerate(np.asarray(diag["eps"])):
                vals[f"eps/phase_{t}"] = float(np.mean(e))
            stats = branch_statistics(diag["branch"], diag["backtracks"])
            for t, st in enumerate(stats):
                for k, v in st.items():
                    vals[f"branch_{k}/phase_{t}"] = v
            self._branch_line = branch_summary_line(stats)
        else:
            pred = self.model(model_inputs(batch), training=False)
        ref = tf.cast(batch["target"], pred.dtype)
        psnr, ssim = batch_psnr(pred, ref).numpy(), batch_ssim(pred, ref).numpy()
        tasks = np.zeros(len(psnr), int) if batch.get("task_id") is None else batch["task_id"].numpy()
        for t in np.unique(tasks):
            vals[f"batch_psnr/task_{int(t)}"] = float(psnr[tasks == t].mean())
            vals[f"batch_ssim/task_{int(t)}"] = float(ssim[tasks == t].mean())
        self.summaries.scalars("val", vals, step)

    def on_step(self, m, which):
        """Per-step callback of the modes (see :meth:`_on_step`)."""
        return self._on_step(m, which)

    def steps_left(self) -> bool:
        """False once the ``max_steps`` budget is spent."""
        return self._steps_left()

    def _steps_left(self):
        ms = self.config.max_steps
        return ms is None or int(self.state["step"].numpy()) < ms

    # -- evaluation ----------------------------------------------------------------------------

    def evaluate(self) -> Dict[str, float]:
        """Mean per-sample loss and per-task PSNR on ``data.eval`` (or the monitor EMA).

        The loss is Eq. 14 per sample, or with a weighted ``loss_reduction`` (``"task_norm"``,
        ``"task_norm_sqrt"``, ``"task_norm_075"``) the sample's error relative to its zero-filled error
        raised to the reduction's power (1, 0.5, 0.75; ``losses.relative_sample_loss``).
        """
        if self.data.eval is None:
            return {"loss": float(self.state["monitor_ema"].numpy())}
        ev = self._eval_fn
        losses, psnrs, ssims, tasks = [], [], [], []
        for batch in self.data.eval:
            l, p, s = ev(batch)
            losses.append(l.numpy()); psnrs.append(p.numpy()); ssims.append(s.numpy())
            t = batch.get("task_id")
            tasks.append(np.zeros(len(l.numpy()), int) if t is None else t.numpy())
        losses, psnrs, ssims, tasks = map(np.concatenate, (losses, psnrs, ssims, tasks))
        out = {"loss": float(losses.mean())}
        for t in np.unique(tasks):
            out[f"psnr/task_{int(t)}"] = float(psnrs[tasks == t].mean())
            out[f"ssim/task_{int(t)}"] = float(ssims[tasks == t].mean())
        return out

    # -- outer iterations ------------------------------------------------------------------------

    def _outer_iteration(self):
        """One outer iteration: the mode's step on the next batch (pair)."""
        bt = next(self.it_tr)
        bv = next(self.it_val) if self.mode.needs_val else None
        self._last_batch_tr, self._last_batch_val = bt, bv
        self._images_per_step = int(bt["target"].shape[0]) + (int(bv["target"].shape[0]) if bv is not None else 0)
        if not self._data_checked:  # every worker must read the same global batches
            self._data_checked = True
            distribute.check_agreement(self.strategy, {
                "the training batches": distribute.fingerprint(bt["kspace"]),
                "the validation batches": distribute.fingerprint(bv["kspace"] if bv is not None else 0)})
        return self.mode.outer_iteration(self, bt, bv)

    def _stage_over(self) -> Optional[str]:
        sw = self.stairwise
        if not self._steps_left():
            return "max_steps"
        mo = self.mode.max_outer_iterations
        if mo is not None and int(self.state["outer"].numpy()) >= mo:
            return "max_outer_iterations"
        if self.schedule is not None and self.schedule.done():
            return "delta_tol"
        if sw is not None and sw.enabled:
            smi = sw.stage_max_iterations
            if smi is not None and int(self.state["stage_iter"].numpy()) >= smi:
                return "stage_max_iterations"
            if int(self.state["bad_evals"].numpy()) >= sw.patience:
                return "plateau"
        return None

    def _budget_exhausted(self) -> bool:
        mo = self.mode.max_outer_iterations
        return (not self._steps_left()) or (mo is not None and int(self.state["outer"].numpy()) >= mo)

    def _end_stage(self, reason: str) -> bool:
        """Stage acceptance (Section 4.2). Returns True when another stage starts."""
        sw = self.stairwise
        ev = self.evaluate()
        v = ev["loss"]
        stage = int(self.state["stage"].numpy())
        p = _num_phases(self.model)
        best = float(self.state["best_val"].numpy())
        self.summaries.scalars("val", {f"stage_end/{k}": x for k, x in ev.items()}, int(self.state["step"].numpy()))
        rec = dict(stage=stage, num_phases=p, reason=reason, **ev)
        self.stage_history.append(rec)
        logging.info("Stage %d (%d phases) ended (%s): eval %s", stage, p, reason, ev)
        if sw is None or not sw.enabled:
            return False
        min_delta = sw.min_delta
        if stage == 0 or v < best * (1 - min_delta):
            self.state["best_val"].assign(v)
            self.state["best_phases"].assign(p)
            _save_weights_atomic(self.model, self.best_path)
        else:
            bp = int(self.state["best_phases"].numpy())
            logging.info("Adding phase %d did not improve the validation loss (%.6g >= %.6g): rolling back to %d phases.",
                         p, v, best, bp)
            model = self._new_model(bp, _num_tasks(self.model))
            model.load_weights(self._best_weights())
            self._setup_stage(model)
            self.state["num_phases"].assign(bp)
            rec["rolled_back_to"] = bp
            return False
        if p >= sw.max_phases or self._budget_exhausted():
            return False
        with self.strategy.scope():
            self.model.add_phase()
        self.state["stage"].assign(stage + 1)
        self.state["num_phases"].assign(_num_phases(self.model))
        self.state["stage_iter"].assign(0)
        self.state["bad_evals"].assign(0)
        self.state["stage_best"].assign(math.inf)
        if self.schedule is not None:
            self.schedule.reset()  # each stage runs Algorithm 2 from delta_0, lambda_0
        self._setup_stage(self.model)
        self.save()
        return True

    def run(self):
        """Train until every stage is over; returns the (possibly rolled back) model.

        With ``config.deterministic`` (the default) TensorFlow's graph optimizer (Grappler) is off
        while the run lasts (:func:`graph_rewrites_off`): two processes then train bit-identically.

        Under a multi-worker strategy every worker first checks that all see the same checkpoint
        and config, and waits for the others at the end (so the chief's last checkpoint is on disk
        when any worker returns); a non-chief worker's scratch directory is removed.
        """
        try:
            with graph_rewrites_off(self.config.deterministic):
                return self._run()
        finally:
            if not self.chief:
                shutil.rmtree(self.write_dir, ignore_errors=True)

    def _run(self):
        path = checkpointing.latest_checkpoint(self.workdir)
        distribute.check_agreement(self.strategy, {
            "the checkpoint to resume from": distribute.fingerprint(None if path is None else os.path.basename(path)),
            "the training config": distribute.fingerprint(self.config.to_dict())})
        if path is not None:
            vals = checkpointing.read_checkpoint_values(path, ["num_phases", "num_tasks", "stage"])
            if "num_phases" not in vals:
                raise checkpointing.CheckpointError(f"Checkpoint {path} has no `num_phases`: not written by loa_meta.training.")
            model = self._new_model(int(vals["num_phases"]), int(vals.get("num_tasks", 0)) or None, resuming=True)
            self._setup_stage(model)
            checkpointing.restore(self.ckpt, path)
            logging.info("Resumed from %s (step %d, stage %d, %d phases).", path, int(self.state["step"].numpy()),
                         int(self.state["stage"].numpy()), int(self.state["num_phases"].numpy()))
            if int(self.state["finished"].numpy()) and self._stage_over() is None:
                # the run had stopped on a budget that the new config raises: continue it
                logging.info("Finished run in %s continues with the larger budget.", self.workdir)
                self.state["finished"].assign(0)
        else:
            p0 = self.initial_phases or 0
            model = self._new_model(p0)
            self.state["num_phases"].assign(_num_phases(model))
            self.state["num_tasks"].assign(_num_tasks(model))
            self._setup_stage(model)
            self.save()
        self.progress.start(int(self.state["step"].numpy()), int(self.state["outer"].numpy()))
        self._last_batch_tr = self._last_batch_val = None
        self._images_per_step = 0
        while not int(self.state["finished"].numpy()):
            reason = self._stage_over()
            if reason is not None:
                if not self._end_stage(reason):
                    self.state["finished"].assign(1)
                    self.save()
                continue
            self._outer_iteration()
            self.state["outer"].assign_add(1)
            self.state["stage_iter"].assign_add(1)
            self.state["num_tasks"].assign(_num_tasks(self.model))
            ee = self.config.eval_every
            if ee and int(self.state["outer"].numpy()) % ee == 0:
                ev = self.evaluate()
                self.summaries.scalars("val", {f"eval/{k}": v for k, v in ev.items()}, int(self.state["step"].numpy()))
                sb = float(self.state["stage_best"].numpy())
                mind = self.stairwise.min_delta if self.stairwise is not None else 0.0
                if ev["loss"] < sb * (1 - mind) or math.isinf(sb):
                    self.state["stage_best"].assign(ev["loss"])
                    self.state["bad_evals"].assign(0)
                else:
                    self.state["bad_evals"].assign_add(1)
            if int(self.state["outer"].numpy()) % self.config.checkpoint_every == 0:
                self.save()
        self.summaries.flush()
        distribute.barrier(self.strategy)
        if self.config.average_checkpoints > 1:
            self.averaged_checkpoints = self._average_checkpoints(self.config.average_checkpoints)
        return self.model

    def _average_checkpoints(self, k: int) -> List[str]:
        """Set the model's weights to the uniform average of the last ``k`` checkpoints of the
        current stage (same phases and stage, after at least one outer iteration;
        TrainConfig.average_checkpoints): the final checkpoint and the ``k - 1`` latest ones on the
        ``checkpoint_every`` cadence before it. Read from the run directory (the chief's), after the
        final checkpoint is written; returns their paths.

        Off-cadence checkpoints other than the final one are skipped: a finished run continued with a
        larger budget keeps the checkpoint its first budget ended on (say outer 5 with a checkpoint
        every 2), which one uninterrupted run of the larger budget never writes; skipping it makes the
        window, and so the saved model, the uninterrupted run's (the apps keep ``k + 1`` checkpoints
        so that it cannot push a needed one out; ``test_training_loop.py``). A stair-wise stage's
        start-of-stage checkpoint (the new phase untrained) is off-cadence too and skipped."""
        d = checkpointing.checkpoint_dir(self.workdir)
        state = tf.train.get_checkpoint_state(d)
        paths = list(state.all_model_checkpoint_paths) if state is not None else []
        stage, phases = int(self.state["stage"].numpy()), _num_phases(self.model)
        final_outer, every = int(self.state["outer"].numpy()), int(self.config.checkpoint_every)
        chosen = []
        for path in reversed(paths):
            v = checkpointing.read_checkpoint_values(path, ["stage", "num_phases", "outer"])
            outer = int(v.get("outer", 0))
            # the start-of-run checkpoint (outer 0) holds the initial weights: never averaged in
            if (int(v.get("stage", -1)) == stage and int(v.get("num_phases", -1)) == phases and outer > 0
                    and (outer == final_outer or outer % every == 0)):
                chosen.append(path)
            if len(chosen) == k:
                break
        chosen.reverse()
        if not chosen:
            raise checkpointing.CheckpointError(f"No checkpoint of the final stage in {d} to average.")
        # Each checkpoint is read whole but for the input iterators (the run's own objects: a model
        # variable may be tracked through the optimizer only; the iterators are not changed by reading
        # and stay at the run's end); the last one read is the newest, so the loop state afterwards is
        # the run's final state again.
        current = self.manager.latest_checkpoint
        total = None
        for path in chosen:
            self._ckpt_weights.read(path).expect_partial()
            w = [v.numpy().astype(np.float64) for v in self.model.weights]
            total = w if total is None else [a + b for a, b in zip(total, w)]
        if current is not None and current != chosen[-1] and tf.io.gfile.exists(current + ".index"):
            self._ckpt_weights.read(current).expect_partial()  # (a non-chief worker's own copy is already removed)
        with self.strategy.scope():
            for v, t in zip(self.model.weights, total):
                v.assign(tf.cast(t / len(chosen), v.dtype))
        if len(chosen) < k:
            logging.warning("average_checkpoints=%d: only %d checkpoint(s) of the final stage were kept; averaged those.",
                            k, len(chosen))
        logging.info("Model weights: the average of %d checkpoints (%s).", len(chosen),
                     ", ".join(os.path.basename(p) for p in chosen))
        return chosen
