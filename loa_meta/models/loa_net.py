"""The LOA-induced network F_Theta (Eqs. 11-12): T phases of Algorithm 1 with kappa = sigmoid(omega_i)."""

from __future__ import annotations

import contextlib
import os
from typing import Any, NamedTuple, Optional

import keras
import tensorflow as tf
from absl import logging
from tensorflow.python.eager import record as _record  # no public API pauses every active tape

from loa_meta.fileio import atomic_dir
from loa_meta.layers.algorithm1_config import Algorithm1Config, Algorithm1Constants
from loa_meta.layers.learned_regularizer import LearnedRegularizer
from loa_meta.layers.loa_phase import LOAPhase
from loa_meta.physics.operators import SingleCoilOperator, check_kspace_mask
from loa_meta.sampling.task_spec import canonical_task_specs
from loa_meta.validation import check_in_range, check_positive, check_positive_int

DIAGNOSTIC_KEYS = ("phi", "phi_next", "branch", "backtracks", "eps", "grad_norm")
# The decisions of Algorithm 1 recorded by the plan and replayed by the differentiable update.
PLAN_KEYS = ("branch", "backtracks", "reduce_eps")


class _LoopState(NamedTuple):
    """What one iteration of Algorithm 1 hands to the next in :meth:`LOANet._phase_loop`."""

    x: tf.Tensor  # x_t, complex (B, H, W)
    eps: tf.Tensor  # eps_t, (B,)
    active: tf.Tensor  # bool (B,): not terminated by line 16
    carry: Any  # phi, grad phi at x_t from line 15 (LOAPhase.step's carry), or None
    op: SingleCoilOperator  # A (fixed)
    kappa: tf.Tensor  # (B,) (fixed)


def _stack(records, keys):
    """``{key: (T_run, ...) tensor}`` stacked over the iterations' records."""
    return {k: tf.stack([r[k] for r in records]) for k in keys}


@contextlib.contextmanager
def stop_recording():
    """Pause every active GradientTape (the planning pass needs no gradients).

    ``GradientTape.stop_recording`` pauses one tape that the caller owns; the plan runs under tapes
    opened by whoever differentiates the model, so it pauses all of them. The decisions are
    non-differentiable (bool/int), so this only saves the tapes' memory and time.
    """
    with _record.stop_recording():
        yield


@keras.saving.register_keras_serializable(package="loa_meta")
class LOANet(Algorithm1Constants, keras.Model):
    """LOA-induced reconstruction network: ``num_phases`` iterations of Algorithm 1 (Section 3.2).

    Learnable parameters: theta = the conv kernels of ONE :class:`LearnedRegularizer` shared by all
    phases (Section 5.2: "the parameters of each phase are shared except for the step sizes"), the
    per-phase step sizes alpha_t, tau_t (:class:`LOAPhase`) and the initial smoothing eps_0
    (Section 4.2, learned; used as |eps_0|); omega = one scalar variable per task, kappa_i =
    sigmoid(omega_i) (Section 3.3). x_0 is the zero-filled image A^H y (Section 4.2).

    Args:
      num_phases: T, number of unrolled phases (paper: 11).
      num_tasks: number of task weights omega_i.
      filters, num_layers, kernel_size, delta: the feature extractor g (Eqs. 19-20).
      alpha0, tau0, eps0: initial learnable step sizes and smoothing (paper: 0.01, 0.01, 1e-3).
      eps0_floor: lower bound of the smoothing eps_0 (beyond the paper; 0 = the paper's |eps_0|):
        eps_0 is used as sqrt(eps0_var^2 + eps0_floor^2), smooth in the variable and >= the floor,
        so training cannot drive eps_0 to 0 and make r_eps non-smooth (docs/benchmarks_quality.md).
      regularizer_init, tv_scale: ``init_mode`` and ``tv_scale`` of :class:`LearnedRegularizer`
        (``"random"`` = the paper's Xavier kernels; ``"tv"`` = start as a smoothed TV, beyond the paper).
      a, sigma, rho, gamma, eps_tol: fixed constants of Algorithm 1 (paper: 1e5, 1e3, 0.9, 0.9, 1e-3).
      max_backtracks: bound on the line search of lines 8-13.
      safeguard: run lines 5-16 (True) or the plain u-update of the authors' script (False).
        These constants and ``grad_mode`` form one frozen :class:`Algorithm1Config`
        (``model.algorithm1_config``, validated once), shared by every phase.
      use_task_weights: if False, kappa is the constant ``fixed_kappa`` (conventional learning
        without omega; the paper's conventional network has kappa = 1, the default).
      fixed_kappa: kappa used when ``use_task_weights=False``, in (0, inf).
      initial_omega: initial value of every omega_i.
      grad_mode: ``"explicit"`` or ``"autodiff"`` gradient of r_eps.
      task_specs: the task spec of each task id (e.g. ``["radial:0.1", "radial:0.2"]``), stored in
        the config so that apps map a task spec to its task id; ``None`` (default) = unknown.
      **kwargs: standard model arguments.

    Call arguments:
      inputs: dict with ``"kspace"`` complex64 ``(B, H, W)``, ``"mask"`` float32 ``(B, H, W)`` or
        ``(H, W)``, ``"task_id"`` int32 ``(B,)`` (optional when ``num_tasks == 1``).

    Returns:
      x_T, complex64 ``(B, H, W)``.
    """

    def __init__(
        self,
        num_phases: int = 11,
        num_tasks: int = 1,
        filters: int = 4,
        num_layers: int = 3,
        kernel_size: int = 3,
        delta: float = 1e-3,
        alpha0: float = 0.01,
        tau0: float = 0.01,
        eps0: float = 1e-3,
        a: float = 1e5,
        sigma: float = 1e3,
        rho: float = 0.9,
        gamma: float = 0.9,
        eps_tol: float = 1e-3,
        max_backtracks: int = 20,
        safeguard: bool = True,
        use_task_weights: bool = True,
        initial_omega: float = 0.0,
        fixed_kappa: float = 1.0,
        grad_mode: str = "explicit",
        task_specs=None,
        eps0_floor: float = 0.0,
        regularizer_init: str = "random",
        tv_scale: float = 1.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        check_positive_int(num_phases, "num_phases")
        check_positive_int(num_tasks, "num_tasks")
        self.filters = check_positive_int(filters, "filters")
        self.num_layers = check_positive_int(num_layers, "num_layers")
        self.kernel_size = check_positive_int(kernel_size, "kernel_size")
        self.delta = check_positive(delta, "delta")
        self.alpha0 = check_positive(alpha0, "alpha0")
        self.tau0 = check_positive(tau0, "tau0")
        self.eps0 = check_positive(eps0, "eps0")
        self.algorithm1_config = Algorithm1Config(
            a=a, sigma=sigma, rho=rho, gamma=gamma, eps_tol=eps_tol, max_backtracks=max_backtracks,
            safeguard=safeguard, grad_mode=grad_mode,
        )
        self.use_task_weights = bool(use_task_weights)
        self.initial_omega = check_in_range(initial_omega, "initial_omega")
        self.fixed_kappa = check_positive(fixed_kappa, "fixed_kappa")
        self._task_specs = canonical_task_specs(task_specs, num_tasks)
        self.eps0_floor = check_in_range(eps0_floor, "eps0_floor", 0.0)
        self.regularizer_init = regularizer_init
        self.tv_scale = tv_scale

        self.regularizer = LearnedRegularizer(
            num_layers=self.num_layers,
            filters=self.filters,
            kernel_size=self.kernel_size,
            delta=self.delta,
            init_mode=regularizer_init,
            tv_scale=tv_scale,
            name="regularizer",
        )
        self.regularizer.build(None)
        # Phases and omegas are stored as numbered attributes (phase_0, omega_0, ...) rather than
        # Python lists: Keras 3 tracked lists are not seen by tf.train.Checkpoint.
        self._num_phases = 0
        self._num_tasks = 0
        for _ in range(int(num_phases)):
            self._append_phase(self.alpha0, self.tau0)
        self.eps0_var = self.add_weight(
            name="eps0", shape=(), initializer=keras.initializers.Constant(self.eps0), trainable=True
        )
        for _ in range(int(num_tasks)):
            self._append_task(self.initial_omega)
        self._compiled_steps = {}
        # Reuse phi/grad phi of x_{t+1} (line 15) for line 5 of the next phase when eps is
        # unchanged. The same results either way (to float32 rounding, tests/test_loa_net.py);
        # False only exists so benchmarks can compare.
        self._reuse_energy_grad = True
        self.built = True  # every variable exists now (none depends on the input shape)

    # -- structure -----------------------------------------------------------------------
    def _append_phase(self, alpha0: float, tau0: float) -> LOAPhase:
        phase = LOAPhase(alpha0=alpha0, tau0=tau0, config=self.algorithm1_config, name=f"phase_{self._num_phases}")
        phase.build(None)
        setattr(self, f"phase_{self._num_phases}", phase)
        self._num_phases += 1
        return phase

    def _append_task(self, initial_omega: float):
        var = self.add_weight(
            name=f"omega_{self._num_tasks}",
            shape=(),
            initializer=keras.initializers.Constant(float(initial_omega)),
            trainable=True,
        )
        setattr(self, f"omega_{self._num_tasks}", var)
        self._num_tasks += 1
        return var

    @property
    def phases(self):
        """The phases (LOAPhase layers) in order."""
        return [getattr(self, f"phase_{t}") for t in range(self._num_phases)]

    @property
    def omegas(self):
        """The task weights omega_i (scalar variables) in task-id order."""
        return [getattr(self, f"omega_{i}") for i in range(self._num_tasks)]

    def add_phase(self) -> int:
        """Append a phase whose alpha/tau start from the last phase's values (stair training, 4.2).

        Returns the new number of phases. A ``tf.function`` wrapping the model must be re-created.
        """
        last = self.phases[-1]
        phase = self._append_phase(self.alpha0, self.tau0)
        phase.alpha.assign(last.alpha)
        phase.tau.assign(last.tau)
        self._compiled_steps = {}
        logging.info("LOANet: added phase %d", len(self.phases))
        return len(self.phases)

    def add_task(self, initial_omega: float = 0.0, spec=None) -> int:
        """Append a task weight omega (e.g. for an unseen task, Section 5.4); returns its task id.

        ``spec`` (a task spec such as ``"radial:0.15"``) is recorded in :attr:`task_specs`.
        """
        specs = canonical_task_specs(self._task_specs + [spec], self._num_tasks + 1)
        self._append_task(check_in_range(initial_omega, "initial_omega"))
        self._task_specs = specs
        return len(self.omegas) - 1

    @property
    def task_specs(self):
        """The canonical task spec of each task id (``None`` where unknown)."""
        return list(self._task_specs)

    @property
    def num_phases(self) -> int:
        return self._num_phases

    @property
    def num_tasks(self) -> int:
        return self._num_tasks

    @property
    def theta_variables(self):
        """Task-invariant parameters: conv kernels, per-phase alpha/tau, eps_0."""
        out = list(self.regularizer.trainable_variables)
        for p in self.phases:
            out += list(p.trainable_variables)
        return out + [self.eps0_var]

    @property
    def omega_variables(self):
        """Task-specific parameters: one scalar omega per task."""
        return list(self.omegas)

    def kappa(self, task_id) -> tf.Tensor:
        """kappa = sigmoid(omega[task_id]) (or ``fixed_kappa`` when ``use_task_weights=False``), float32."""
        task_id = tf.convert_to_tensor(task_id, tf.int32)
        if not self.use_task_weights:
            return tf.fill(tf.shape(task_id), tf.constant(self.fixed_kappa, tf.float32))
        tf.debugging.assert_less(task_id, len(self.omegas), message="`task_id` must be < num_tasks")
        tf.debugging.assert_non_negative(task_id, message="`task_id` must be >= 0")
        omega = tf.stack([tf.convert_to_tensor(w) for w in self.omegas])
        return tf.sigmoid(tf.gather(omega, task_id))

    def eps0_value(self) -> tf.Tensor:
        """The eps_0 used by Algorithm 1: |eps0_var| (paper), or sqrt(eps0_var^2 + floor^2) with a floor."""
        v = tf.convert_to_tensor(self.eps0_var)
        if self.eps0_floor > 0:
            return tf.sqrt(v * v + tf.constant(self.eps0_floor * self.eps0_floor, v.dtype))
        return tf.abs(v)

    # -- forward -------------------------------------------------------------------------
    def _prepare(self, kspace, mask, task_id):
        y = tf.convert_to_tensor(kspace)
        if not y.dtype.is_complex:
            raise TypeError(f"Argument `kspace` must be complex64 (B, H, W), but received dtype: {y.dtype.name}")
        if y.shape.rank is not None and y.shape.rank != 3:
            raise ValueError(f"Argument `kspace` must have shape (B, H, W), but received shape: {y.shape}")
        mask = tf.convert_to_tensor(mask)
        check_kspace_mask(y, mask, "kspace")
        batch = tf.shape(y)[0]
        if task_id is None:
            if self.use_task_weights and len(self.omegas) != 1:
                raise ValueError("Argument `task_id` is required when the model has several tasks.")
            task_id = tf.zeros([batch], tf.int32)
        task_id = tf.broadcast_to(tf.cast(task_id, tf.int32), [batch])
        return y, mask, task_id

    def _phase_loop(self, y, mask, task_id, iteration, num_iterations: Optional[int] = None, carry=None):
        """The one loop of Algorithm 1 over the phases, behind :meth:`call`, :meth:`plan`,
        :meth:`replay` and :meth:`reconstruct`.

        Line 1: x_0 = A^H y (zero filling), eps_0, every sample active. Line 2: for t = 0, 1, ...,
        ``iteration(t, phase_t, state) -> (state, record)`` runs lines 3-16 in one of three ways
        (sequential :meth:`LOAPhase.step`, replayed :meth:`LOAPhase.update`, or the compiled step of
        :meth:`reconstruct`). ``num_iterations`` defaults to T; iterations t >= T reuse the last
        phase and stop once every sample has terminated by line 16 (the solver mode of
        :meth:`reconstruct`, which runs eagerly).

        Returns:
          ``(state, records)``: the :class:`_LoopState` after the last iteration and the list of
          each iteration's ``record``.
        """
        op = SingleCoilOperator(mask)
        x0 = op.zero_filled(y)
        batch = tf.shape(y)[0]
        eps = tf.fill([batch], self.eps0_value())
        state = _LoopState(x=x0, eps=eps, active=tf.ones([batch], tf.bool), carry=carry, op=op, kappa=self.kappa(task_id))
        records = []
        for t in range(self.num_phases if num_iterations is None else num_iterations):
            if t >= self.num_phases and not bool(tf.reduce_any(state.active)):
                break
            state, record = iteration(t, self.phases[min(t, self.num_phases - 1)], state)
            records.append(record)
        return state, records

    def call(self, inputs, training=None):
        """x_T. With ``training=True``: :meth:`plan` (recording no gradients), then :meth:`replay`.

        Both give the same x_T; the replay is the straight-line differentiable form (no
        ``tf.cond`` / ``tf.while_loop``), so first- and second-order gradients are cheap to trace
        and to run. Inference runs the sequential Algorithm 1 directly.
        """
        y, mask, task_id = self._prepare(inputs["kspace"], inputs["mask"], inputs.get("task_id"))
        if training:
            return self._replay(y, mask, task_id, self._plan(y, mask, task_id))
        return self._sequential(y, mask, task_id, record_decisions=False)["x"]

    def _sequential(self, y, mask, task_id, record_decisions: bool):
        """Algorithm 1 run sequentially (:meth:`LOAPhase.step`, the reference): ``{"x": x_T}``, plus
        the ``(T, B)`` decisions ``PLAN_KEYS`` if ``record_decisions``."""
        kernels = self.regularizer.block_kernels(y.dtype.real_dtype)  # built once for all phases
        reuse = self._reuse_energy_grad

        def iteration(t, phase, s):
            x, eps, active, diag, carry = phase.step(
                self.regularizer, s.op, s.x, y, s.kappa, s.eps, s.active, compute_diagnostics=False,
                carry=s.carry if reuse else None, return_carry=True, kernels=kernels,
            )
            record = {k: diag[k] for k in PLAN_KEYS} if record_decisions else {}
            return s._replace(x=x, eps=eps, active=active, carry=carry), record

        state, records = self._phase_loop(y, mask, task_id, iteration)
        return {"x": state.x, **(_stack(records, PLAN_KEYS) if record_decisions else {})}

    def _plan(self, y, mask, task_id):
        with stop_recording():
            out = self._sequential(y, mask, task_id, record_decisions=True)
            return {k: tf.stop_gradient(v) for k, v in out.items()}

    def plan(self, inputs):
        """Algorithm 1's branch decisions for ``inputs``, computed without recording gradients.

        Returns a dict of ``(T, B)`` tensors ``branch`` (0 u, 1 v, 2 kept, -1 inactive),
        ``backtracks`` (line-12 reductions) and ``reduce_eps`` (line 15), plus ``x`` = x_T
        (gradient-free). :meth:`replay` turns them into a differentiable x_T.
        """
        y, mask, task_id = self._prepare(inputs["kspace"], inputs["mask"], inputs.get("task_id"))
        return self._plan(y, mask, task_id)

    def _replay(self, y, mask, task_id, plan):
        """x_T by :meth:`LOAPhase.update` with ``plan``'s decisions (straight-line, differentiable)."""
        kernels = self.regularizer.block_kernels(y.dtype.real_dtype)  # built (and differentiated) once

        def iteration(t, phase, s):
            decision = {k: plan[k][t] for k in PLAN_KEYS}
            x, eps = phase.update(self.regularizer, s.op, s.x, y, s.kappa, s.eps, decision, kernels=kernels)
            return s._replace(x=x, eps=eps), {}

        return self._phase_loop(y, mask, task_id, iteration)[0].x

    def replay(self, inputs, plan):
        """x_T as a straight-line differentiable function of the weights, with ``plan``'s decisions.

        Equals ``plan["x"]`` (and :meth:`call`) when ``plan`` was made for the same inputs and
        weights.
        """
        y, mask, task_id = self._prepare(inputs["kspace"], inputs["mask"], inputs.get("task_id"))
        return self._replay(y, mask, task_id, plan)

    def _initial_carry(self, y):
        """A carry that forces line 5 to evaluate phi and grad phi (eps_c = NaN != eps); x_0 = A^H y
        has the shape and dtype of ``y``."""
        batch = tf.shape(y)[0]
        return (tf.zeros([batch], tf.float32), tf.zeros_like(y), tf.fill([batch], float("nan")))

    def _forward_fn(self, jit_compile: bool = False):
        """``call`` compiled once per model structure (reset by ``add_phase``), optionally with XLA."""
        key = ("forward", bool(jit_compile), bool(self._reuse_energy_grad))
        if key not in self._compiled_steps:

            def forward(y, mask, task_id):
                return self.call({"kspace": y, "mask": mask, "task_id": task_id}, training=False)

            self._compiled_steps[key] = tf.function(forward, reduce_retracing=True, jit_compile=bool(jit_compile))
        return self._compiled_steps[key]

    def _step_fn(self, diagnostics: bool, jit_compile: bool = False):
        """One compiled Algorithm-1 step shared by all phases (step sizes are passed as tensors)."""
        key = (bool(diagnostics), bool(jit_compile), bool(self._reuse_energy_grad))
        if key not in self._compiled_steps:
            phase = self.phases[0]  # every phase shares one Algorithm1Config
            reuse = self._reuse_energy_grad

            def step(y, mask, x, kappa, eps, active, eps_tol, alpha, tau, carry):
                op = SingleCoilOperator(mask)
                out = phase.step(
                    self.regularizer, op, x, y, kappa, eps, active,
                    compute_diagnostics=diagnostics, eps_tol=eps_tol, step_sizes=(alpha, tau),
                    carry=carry if reuse else None, return_carry=True,
                )
                # keep the carry's structure fixed so that the function is traced once
                return out[:4] + ((carry if out[4] is None else out[4]),)

            self._compiled_steps[key] = tf.function(step, reduce_retracing=True, jit_compile=bool(jit_compile))
        return self._compiled_steps[key]

    def reconstruct(
        self,
        kspace,
        mask,
        task_id=None,
        return_diagnostics: bool = False,
        num_iterations: Optional[int] = None,
        tol: Optional[float] = None,
        return_iterates: bool = False,
        jit_compile: bool = False,
    ):
        """Reconstruct, optionally with per-phase diagnostics, optionally as a solver (Fig. 6).

        Args:
          kspace: complex64 ``(B, H, W)``.
          mask: float ``(B, H, W)`` or ``(H, W)``.
          task_id: int ``(B,)``; may be omitted with a single task.
          return_diagnostics: also return a dict of ``(T_run, B)`` arrays: ``phi`` (phi_eps_t(x_t)),
            ``phi_next`` (phi_eps_t(x_{t+1})), ``branch`` (0 u, 1 v, 2 kept, -1 inactive),
            ``backtracks``, ``eps`` (eps_t), ``grad_norm`` (||grad phi_eps_t(x_t)||) and
            ``active`` (whether the sample was still running at iteration t).
          num_iterations: iterations to run; more than ``num_phases`` runs the learned algorithm as
            an optimiser, reusing the last phase's step sizes for t >= T. Defaults to ``num_phases``,
            or 1000 when ``tol`` is given.
          tol: line-16 tolerance eps_tol for this run; iteration stops as soon as every sample has
            terminated (sigma eps_t < tol) or ``num_iterations`` is reached.
          return_iterates: also put ``iterates``, complex64 ``(T_run + 1, B, H, W)`` = x_0 (zero
            filling), x_1, ..., x_T_run, in the diagnostics dict (e.g. PSNR per phase for Fig. 6 in
            one pass; ``iterates[t]`` equals ``reconstruct(..., num_iterations=t)``). Requires
            ``return_diagnostics=True``.
          jit_compile: compile with XLA (the whole T-phase forward for plain inference, else the
            per-iteration step); same results up to float32 rounding (< 1e-5 in the tests, ~1e-7
            at the paper's step sizes). Inference only: training calls the model directly and is
            not affected. See docs/benchmarks_network.md for the measured speed.

        Returns:
          ``x`` complex64 ``(B, H, W)``, and the diagnostics dict if requested.
        """
        if return_iterates and not return_diagnostics:
            raise ValueError("Argument `return_iterates=True` requires `return_diagnostics=True`.")
        y, mask, task_id = self._prepare(kspace, mask, task_id)
        if num_iterations is None:
            num_iterations = self.num_phases if tol is None else 1000
        num_iterations = check_positive_int(num_iterations, "num_iterations")
        eps_tol = tf.constant(self.eps_tol if tol is None else check_in_range(tol, "tol", 0.0), tf.float32)
        if not return_diagnostics and tol is None and num_iterations == self.num_phases:
            # plain inference: the whole T-phase forward as one compiled graph (no per-step overhead)
            return self._forward_fn(jit_compile)(y, tf.cast(mask, tf.float32), task_id)
        step_fn = self._step_fn(return_diagnostics, jit_compile)
        mask_f = tf.cast(mask, tf.float32)

        def iteration(t, phase, s):
            alpha, tau = phase.step_sizes(tf.float32)
            x, eps, active, diag, carry = step_fn(y, mask_f, s.x, s.kappa, s.eps, s.active, eps_tol, alpha, tau, s.carry)
            record = {**diag, "active": s.active} if return_diagnostics else {}
            if return_iterates:
                record["x_t"] = s.x
            return s._replace(x=x, eps=eps, active=active, carry=carry), record

        state, records = self._phase_loop(y, mask, task_id, iteration, num_iterations, self._initial_carry(y))
        if not return_diagnostics:
            return state.x
        out = {k: v.numpy() for k, v in _stack(records, DIAGNOSTIC_KEYS + ("active",)).items()}
        if return_iterates:
            out["iterates"] = tf.stack([r["x_t"] for r in records] + [state.x]).numpy()
        return state.x, out

    def get_config(self):
        return {
            **super().get_config(),
            "num_phases": self.num_phases,
            "num_tasks": self.num_tasks,
            "filters": self.filters,
            "num_layers": self.num_layers,
            "kernel_size": self.kernel_size,
            "delta": self.delta,
            "alpha0": self.alpha0,
            "tau0": self.tau0,
            "eps0": self.eps0,
            **self.algorithm1_config.as_dict(),
            "use_task_weights": self.use_task_weights,
            "initial_omega": self.initial_omega,
            "fixed_kappa": self.fixed_kappa,
            "task_specs": self.task_specs,
            "eps0_floor": self.eps0_floor,
            "regularizer_init": self.regularizer_init,
            "tv_scale": self.tv_scale,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key in ("trainable", "dtype"):
            config.pop(key, None)
        return cls(**config)


SERVING_SIGNATURE = [
    tf.TensorSpec([None, None, None], tf.complex64, name="kspace"),
    tf.TensorSpec([None, None, None], tf.float32, name="mask"),
    tf.TensorSpec([None], tf.int32, name="task_id"),
]


def export_serving(model: LOANet, export_dir: str) -> str:
    """Write a SavedModel whose ``serve`` signature maps (kspace, mask, task_id) to |x_T|.

    The directory is written next to ``export_dir`` under a temporary name and then renamed, so a
    crash never leaves a half-written export (an existing export is replaced).

    Args:
      model: a :class:`LOANet` (or any model with the same call convention).
      export_dir: target directory.

    Returns:
      ``export_dir``.
    """
    export_dir = os.path.abspath(export_dir)
    archive = keras.export.ExportArchive()
    archive.track(model)

    def serve(kspace, mask, task_id):
        x = model({"kspace": kspace, "mask": mask, "task_id": task_id}, training=False)
        return tf.abs(x)

    archive.add_endpoint(name="serve", fn=serve, input_signature=SERVING_SIGNATURE)
    with atomic_dir(export_dir) as tmp:
        archive.write_out(tmp, verbose=False)
    logging.info("Exported LOANet serving SavedModel to %s", export_dir)
    return export_dir
