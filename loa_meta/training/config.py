"""Training configurations (paper Sections 4.2, 5.2, 5.4) as plain dataclasses.

Every field is a JSON-serialisable scalar, list or dict so that ``to_dict()`` / ``from_dict()``
round-trip exactly and the resolved config can be written next to the results. The library never
reads absl flags: apps build a config and pass it in.

Defaults follow the paper where it states a value (Section 5.2): Adam(lr=1e-3, beta1=0.9,
beta2=0.999), delta_0=1e-3, nu_delta=0.95, delta_tol=4.35e-6, lambda_0=1e-5, nu_lambda=1.001,
meta batch 8 (= ``per_task_batch`` 2 x 4 tasks), conventional batch 25, 11 phases.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, Optional

from loa_meta.fileio import write_json_atomic
from loa_meta.training.losses import REDUCTIONS
from loa_meta.validation import check_in_range, check_one_of, check_positive, check_positive_int


@dataclasses.dataclass
class TrainConfig:
    """Fields shared by every training mode.

    Args:
      learning_rate: Adam learning rate for theta (paper: 1e-3).
      beta_1, beta_2, adam_epsilon: Adam hyperparameters (paper: 0.9, 0.999; epsilon unstated,
        Keras default 1e-7).
      loss_reduction: ``"sum"`` (paper Eqs. 13-14: sum over tasks and samples of
        1/2 ||F(y) - x*||^2), ``"mean"`` (the same divided by the global batch size) or
        ``"task_norm"`` (beyond the paper: each sample's term weighted by 1 / its zero-filled error
        ||A^H y - x*||^2, weights of mean 1 over the batch; :mod:`loa_meta.training.losses`) or
        ``"task_norm_sqrt"`` (beyond the paper: weights 1 / ||A^H y - x*||) or ``"task_norm_075"``
        (beyond the paper: weights 1 / ||A^H y - x*||^1.5).
      max_steps: budget of optimizer steps (gradient evaluations that update weights); ``None``
        means no step budget.
      seed: seed of every random choice made by the training code (tf.random.Generator state is
        checkpointed); the data pipeline takes its own seed.
      deterministic: call ``tf.config.experimental.enable_op_determinism()`` (needed for
        bit-identical resume) and run the training with TensorFlow's graph optimizer off
        (``loop.graph_rewrites_off``; two processes of the same run then agree bit for bit).
      checkpoint_every: save a checkpoint every this many outer iterations (batch or batch pair).
      keep_checkpoints: how many checkpoints the CheckpointManager keeps.
      summary_every: write TensorBoard scalars every this many steps.
      image_every: write TensorBoard images every this many steps (0 disables).
      log_every: absl.logging progress line every this many steps.
      eval_every: evaluate on the eval set every this many outer iterations (0 disables).
      compile_steps: compute the gradients in compiled kernels (default): Algorithm 1 is planned
        and replayed straight-line (``LOANet.plan`` / ``replay``), each micro-batch runs through one
        ``tf.function`` traced once per stair-wise stage (``algorithm2.GradientKernels``). False
        runs the same computation op by op (eager), which only pays off for a handful of steps
        on tiny images (the ``tiny`` preset used by the tests). Multi-replica strategies always
        run op by op. Measured in docs/benchmarks_training.md.
      jit_compile: compile the gradient kernels with XLA (see docs/benchmarks_training.md for the
        measured speed of both settings).
      microbatch_size: samples per micro-batch when computing a step's gradient: a positive int,
        ``None`` (each replica's whole batch at once) or ``"auto"`` (default): the largest m with
        m * H * W * num_phases <= ``microbatch_pixel_budget`` (at least 1). Gradients are
        accumulated exactly (the loss of Eqs. 13-14 is a sum over samples; for Eq. 18 see
        ``penalty_objective_and_grads``), so this only trades speed for memory. With the default
        budget the paper configuration (160x180, 11 phases, B_tr = B_val = 8) runs whole batches
        (4.8 GB peak RSS with the compiled engine, within the paper's 11 GB and the 7 GB target;
        docs/benchmarks_training.md), and so do smaller images.
      microbatch_pixel_budget: the ``"auto"`` budget in pixels x phases per micro-batch (default
        eight 160x180 images through 11 phases).
      model: keyword arguments of the default model builder (``LOANet`` / ``ISTANetPlus``).
      global_clipnorm: if set, Adam rescales each step's gradients so that their global norm is at
        most this (Keras ``global_clipnorm``; beyond the paper, which states no clipping; None = off).
      average_checkpoints: the returned (and saved) model's weights are the uniform average of the
        last this many checkpoints of the final stage: the final one and the latest on the
        ``checkpoint_every`` cadence before it (Polyak-style averaging of the iterates,
        ``checkpoint_every`` outer iterations apart; beyond the paper, which keeps the last iterate:
        1, the default). At most ``keep_checkpoints``; the checkpoints keep the last iterate, so a
        resumed run continues from it.
      init_weights: ``None`` (the paper: Xavier kernels and the configured initial values) or a saved
        LOA network (``.keras`` path or ``pretrained:NAME``) whose learned parameters start the run
        (beyond the paper; :mod:`loa_meta.training.warm_start` lists what is copied). Meta-learning
        and conventional training only; a resumed run restores its checkpoint instead.
    """

    learning_rate: float = 1e-3
    beta_1: float = 0.9
    beta_2: float = 0.999
    adam_epsilon: float = 1e-7
    loss_reduction: str = "sum"
    max_steps: Optional[int] = None
    seed: int = 0
    deterministic: bool = True
    checkpoint_every: int = 10
    keep_checkpoints: int = 3
    summary_every: int = 10
    image_every: int = 100
    log_every: int = 10
    eval_every: int = 0
    compile_steps: bool = True
    jit_compile: bool = False
    microbatch_size: Any = "auto"
    microbatch_pixel_budget: int = 8 * 160 * 180 * 11
    model: Dict[str, Any] = dataclasses.field(default_factory=dict)
    global_clipnorm: Optional[float] = None
    average_checkpoints: int = 1
    init_weights: Optional[str] = None

    def validate(self) -> "TrainConfig":
        check_positive(self.learning_rate, "learning_rate")
        check_in_range(self.beta_1, "beta_1", 0.0, 1.0, high_inclusive=False)
        check_in_range(self.beta_2, "beta_2", 0.0, 1.0, high_inclusive=False)
        check_positive(self.adam_epsilon, "adam_epsilon")
        if self.global_clipnorm is not None:
            check_positive(self.global_clipnorm, "global_clipnorm")
        check_one_of(self.loss_reduction, "loss_reduction", list(REDUCTIONS))
        if self.max_steps is not None:
            check_positive_int(self.max_steps, "max_steps")
        check_positive_int(self.checkpoint_every, "checkpoint_every")
        check_positive_int(self.keep_checkpoints, "keep_checkpoints")
        check_positive_int(self.average_checkpoints, "average_checkpoints")
        if self.average_checkpoints > self.keep_checkpoints:
            raise ValueError(f"Argument `average_checkpoints` ({self.average_checkpoints}) must be at most "
                             f"`keep_checkpoints` ({self.keep_checkpoints}): only kept checkpoints can be averaged.")
        check_positive_int(self.summary_every, "summary_every")
        check_positive_int(self.image_every, "image_every", minimum=0)
        check_positive_int(self.log_every, "log_every")
        check_positive_int(self.eval_every, "eval_every", minimum=0)
        if not isinstance(self.jit_compile, bool):
            raise ValueError(f"Argument `jit_compile` must be a bool, but received: {self.jit_compile!r}")
        if self.microbatch_size is not None and self.microbatch_size != "auto":
            if isinstance(self.microbatch_size, str):
                raise ValueError(
                    f"Argument `microbatch_size` must be a positive int, None or 'auto', but received: {self.microbatch_size!r}")
            check_positive_int(self.microbatch_size, "microbatch_size")
        check_positive_int(self.microbatch_pixel_budget, "microbatch_pixel_budget")
        if not isinstance(self.model, dict):
            raise ValueError(f"Argument `model` must be a dict of model kwargs, but received: {self.model!r}")
        if self.init_weights is not None and not (isinstance(self.init_weights, str) and self.init_weights):
            raise ValueError("Argument `init_weights` must be None or a model path / 'pretrained:NAME', "
                             f"but received: {self.init_weights!r}")
        return self

    def resolve_microbatch_size(self, batch_shape, num_phases) -> Optional[int]:
        """The micro-batch size for a batch of shape ``(B, H, W)`` and a ``num_phases``-phase model.

        ``"auto"``: max(1, microbatch_pixel_budget // (H * W * max(num_phases, 1))), or ``None``
        (whole batch) when H or W is unknown.
        """
        if self.microbatch_size != "auto":
            return self.microbatch_size
        h, w = (list(batch_shape)[-2:] + [None, None])[:2] if batch_shape is not None else (None, None)
        if h is None or w is None:
            return None
        return max(1, int(self.microbatch_pixel_budget) // (int(h) * int(w) * max(int(num_phases or 1), 1)))

    def to_dict(self) -> Dict[str, Any]:
        d = dataclasses.asdict(self)
        d["kind"] = type(self).__name__
        return d

    @classmethod
    def from_dict(cls, d: Dict[str, Any]):
        d = dict(d)
        kind = d.pop("kind", cls.__name__)
        if kind != cls.__name__:
            raise ValueError(f"Config of kind {kind!r} cannot be loaded as {cls.__name__}.")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"Unknown {cls.__name__} field(s): {unknown}; expected a subset of {sorted(names)}")
        return cls(**d).validate()

    def write_json(self, path: str) -> str:
        """Write the resolved config atomically (temp file + rename) and return the path."""
        write_json_atomic(path, self.to_dict())
        return path


@dataclasses.dataclass
class StairwiseConfig:
    """Section 4.2 stair training: grow the network one phase at a time.

    Args:
      enabled: if False train directly with ``max_phases`` phases.
      initial_phases: phases of the first stage (paper: 1).
      max_phases: T, the largest number of phases (paper: 11).
      stage_max_iterations: budget of outer iterations per stage, or ``None`` for no such budget
        (meta-learning: a stage ends when Algorithm 2's delta reaches delta_tol, see ``MetaConfig``).
      patience: stop a stage after this many evaluations without improving the best validation
        loss by more than ``min_delta`` (relative). Evaluations happen every ``eval_every`` outer
        iterations (on ``data.eval``, else on the EMA of the B_val loss); with ``eval_every=0`` the
        plateau rule is off and a stage ends at ``stage_max_iterations`` (or delta <= delta_tol).
      min_delta: relative improvement that counts as progress, for the plateau rule within a stage
        and for accepting a new phase.
    """

    enabled: bool = True
    initial_phases: int = 1
    max_phases: int = 11
    stage_max_iterations: Optional[int] = 100
    patience: int = 3
    min_delta: float = 1e-3

    def validate(self):
        check_positive_int(self.initial_phases, "stairwise.initial_phases")
        check_positive_int(self.max_phases, "stairwise.max_phases")
        if self.initial_phases > self.max_phases:
            raise ValueError(
                f"Argument `stairwise.initial_phases` must be <= max_phases={self.max_phases}, "
                f"but received: {self.initial_phases}"
            )
        if self.stage_max_iterations is not None:
            check_positive_int(self.stage_max_iterations, "stairwise.stage_max_iterations")
        check_positive_int(self.patience, "stairwise.patience")
        check_in_range(self.min_delta, "stairwise.min_delta", 0.0)
        return self


def _stairwise_field():
    return dataclasses.field(default_factory=lambda: dataclasses.asdict(StairwiseConfig()))


@dataclasses.dataclass
class MetaConfig(TrainConfig):
    """Algorithm 2 (bilevel meta-learning, Eqs. 13-18) and its schedule (Section 5.2).

    Args:
      delta0, nu_delta, delta_tol: tolerance of the inner stopping test (Algorithm 2 line 6),
        its decay (line 12) and the outer stopping tolerance (line 3).
      lambda0, nu_lambda: penalty weight of Eq. 18 and its growth factor (line 12).
      theta_steps: K, theta steps per omega step (Algorithm 2 line 7; not stated in the paper).
      max_inner_iterations: cap on (K theta + 1 omega)-cycles per batch pair (line 6 loop).
      omega_learning_rate: Adam learning rate of the separate omega optimizer (rho_omega).
      per_task_batch_train, per_task_batch_val: J_tr and J_val (documentation only; the data
        pipeline does the batching).
      max_outer_iterations: budget of batch pairs in addition to ``delta <= delta_tol``.
      outer_iterations_per_epoch: batch pairs per epoch; line 12 (delta, lambda decay) runs once
        per epoch, so a stage (line 3: delta <= delta_tol) lasts a fixed number of epochs (the
        paper's constants: 107).
      stairwise: a :class:`StairwiseConfig` as a dict.
    """

    delta0: float = 1e-3
    nu_delta: float = 0.95
    delta_tol: float = 4.35e-6
    lambda0: float = 1e-5
    nu_lambda: float = 1.001
    theta_steps: int = 1
    max_inner_iterations: int = 10
    omega_learning_rate: float = 1e-3
    per_task_batch_train: int = 2
    per_task_batch_val: int = 2
    max_outer_iterations: Optional[int] = None
    outer_iterations_per_epoch: int = 1
    stairwise: Dict[str, Any] = _stairwise_field()

    def validate(self):
        super().validate()
        check_positive(self.delta0, "delta0")
        check_in_range(self.nu_delta, "nu_delta", 0.0, 1.0, low_inclusive=False, high_inclusive=False)
        check_positive(self.delta_tol, "delta_tol")
        check_positive(self.lambda0, "lambda0")
        check_in_range(self.nu_lambda, "nu_lambda", 1.0, low_inclusive=False)
        check_positive_int(self.theta_steps, "theta_steps")
        check_positive_int(self.max_inner_iterations, "max_inner_iterations")
        check_positive(self.omega_learning_rate, "omega_learning_rate")
        check_positive_int(self.per_task_batch_train, "per_task_batch_train")
        check_positive_int(self.per_task_batch_val, "per_task_batch_val")
        if self.max_outer_iterations is not None:
            check_positive_int(self.max_outer_iterations, "max_outer_iterations")
        check_positive_int(self.outer_iterations_per_epoch, "outer_iterations_per_epoch")
        self.stairwise_config()
        return self

    def stairwise_config(self) -> StairwiseConfig:
        names = {f.name for f in dataclasses.fields(StairwiseConfig)}
        unknown = sorted(set(self.stairwise) - names)
        if unknown:
            raise ValueError(f"Unknown stairwise field(s): {unknown}; expected a subset of {sorted(names)}")
        return StairwiseConfig(**self.stairwise).validate()


@dataclasses.dataclass
class ConventionalConfig(TrainConfig):
    """Conventional supervised training (Section 5.2): one task, theta only, no penalty.

    Args:
      batch_size: documentation of the pipeline batch (paper: 25).
      epochs: documentation of the paper's budget (2000); the loop is driven by ``max_steps``.
      model_type: ``"loa"`` (LOANet with ``use_task_weights=False``) or ``"ista_net_plus"``.
      symmetry_weight: weight of ISTA-Net+'s symmetry loss when the model exposes one (0.01).
      stairwise: a :class:`StairwiseConfig` as a dict (the paper trains conventional with the
        same phase schedule as meta-learning).
    """

    batch_size: int = 25
    epochs: int = 2000
    model_type: str = "loa"
    symmetry_weight: float = 0.01
    stairwise: Dict[str, Any] = dataclasses.field(
        default_factory=lambda: dataclasses.asdict(StairwiseConfig(enabled=False))
    )

    def validate(self):
        super().validate()
        check_positive_int(self.batch_size, "batch_size")
        check_positive_int(self.epochs, "epochs")
        check_one_of(self.model_type, "model_type", ["loa", "ista_net_plus"])
        check_in_range(self.symmetry_weight, "symmetry_weight", 0.0)
        self.stairwise_config()
        return self

    stairwise_config = MetaConfig.stairwise_config


@dataclasses.dataclass
class AdaptConfig(TrainConfig):
    """Adaptation to an unseen task (Section 5.4): theta frozen, only the new omega is learned.

    Args:
      initial_omega: initial value of the new task's omega (the apps pass the omega of the
        nearest trained task, see ``loa_meta.sampling.nearest_task``).
      task_spec: the new task's spec (e.g. ``"radial:0.15"``), recorded in the adapted model's
        ``task_specs``; ``None`` = unknown.
      batch_size: documentation of the pipeline batch.
      epochs: documentation of the paper's budget (50 epochs on 100 images).
    """

    initial_omega: float = 0.0
    task_spec: Optional[str] = None
    batch_size: int = 8
    epochs: int = 50

    def validate(self):
        super().validate()
        if self.init_weights is not None:
            raise ValueError("Argument `init_weights` does not apply to adaptation, which starts from the trained "
                             f"model passed to adapt_omega; received: {self.init_weights!r}")
        check_in_range(self.initial_omega, "initial_omega")
        if self.task_spec is not None:
            from loa_meta.sampling.task_spec import parse_task_spec

            self.task_spec = str(parse_task_spec(self.task_spec))
        check_positive_int(self.batch_size, "batch_size")
        check_positive_int(self.epochs, "epochs")
        return self
