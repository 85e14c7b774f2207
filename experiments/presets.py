"""Presets of the training apps, ``reproduce`` and ``quickstart``: ``paper``, ``cpu``, ``tiny``.

A :class:`Preset` holds every knob of the paper's protocol (Section 5.2-5.4). ``paper`` is the
paper's setting; ``cpu`` is the quickstart's recipe for every stage of ``reproduce --preset=cpu
--workers=2`` (all 29 stages in 86 min on 2 CPU cores, session 20; docs/benchmarks_quality.md section 2);
``tiny`` runs in seconds (tests); ``quickstart`` is the README's main job.
Command-line flags override single fields (``Preset.override``).

Budgets are given in *epochs* (passes over the training images of one task) and converted to
optimizer steps or Algorithm 2 outer iterations by :mod:`experiments.training_common`; a
``*_max_steps`` value, when set, caps the total number of optimizer steps on top of that. A
meta-learning stage lasts until Algorithm 2's delta reaches ``delta_tol``, with one delta/lambda
update per epoch (:attr:`Preset.meta_stage_epochs`; the paper's constants give 107 epochs).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Dict, Optional, Tuple

SEEN_RADIAL = ("radial:0.1", "radial:0.2", "radial:0.3", "radial:0.4")
UNSEEN_RADIAL = ("radial:0.15", "radial:0.25", "radial:0.35")
CARTESIAN = ("cartesian:0.1", "cartesian:0.2", "cartesian:0.3", "cartesian:0.4")

# Start of the scaled-down presets: omega_0 = -4, i.e. kappa_0 = sigmoid(-4) = 0.018 (see QUICKSTART).
SMALL_OMEGA0 = -4.0
SMALL_KAPPA0 = 1.0 / (1.0 + math.exp(-SMALL_OMEGA0))
QUICKSTART_LOSS = "task_norm"  # beyond the paper (its sum: "sum"); measured in docs/benchmarks_quality.md 5.11

# Inference iteration counts the quality presets choose among (= loa_meta.evaluation.iterations.DEFAULT_GRID,
# tests/test_experiments_train.py; kept here so that the presets import no TensorFlow).
INFERENCE_GRID = (1, 2, 3, 4, 5, 7, 9, 11, 15, 20, 30)

# Algorithm 2 schedule of Section 5.2 (every preset).
DELTA0, NU_DELTA = 1e-3, 0.95


def delta_tol_after(epochs: float, delta0: float = DELTA0, nu_delta: float = NU_DELTA) -> float:
    """The delta_tol at which Algorithm 2's line 3 ends a stage after ``ceil(epochs)`` epochs
    (one delta update per epoch): ``delta0 * nu_delta ** n`` plus a relative 1e-9 so that float
    rounding of the repeated products cannot add an epoch."""
    if not (epochs > 0 and math.isfinite(epochs)):
        raise ValueError(f"epochs must be a positive number, but received: {epochs}")
    return delta0 * nu_delta ** math.ceil(epochs) * (1.0 + 1e-9)


@dataclasses.dataclass(frozen=True)
class Preset:
    """All settings of one protocol run.

    Args:
      name: preset name.
      num_phases: T, the number of phases (paper: 11).
      initial_phases: phases of the first stair-wise stage (paper: 1).
      stairwise: Section 4.2 stair training on/off.
      alpha0, tau0: initial step sizes of Algorithm 1 (paper: 0.01, 0.01).
      eps0: initial smoothing parameter of r_eps (paper: 0.001).
      a: the constant of Algorithm 1 lines 5 and 9 (paper: 1e5).
      max_backtracks: cap on the line-9 step reductions alpha <- rho alpha (not stated in the paper).
      initial_omega: initial omega_i of every task in meta-learning; kappa_i = sigmoid(omega_i)
        (not stated in the paper; 0 gives kappa = 0.5). An adapted task starts from the omega of
        the nearest trained task (same kind, nearest ratio; ``loa_meta.sampling.nearest_task``).
      conv_kappa: the fixed kappa of conventional learning (no omega; the paper's is 1). The
        scaled-down presets use sigmoid(initial_omega), so conventional and meta-learning start
        from the same network and differ only in how they are trained.
      filters: kernels per convolution in g (paper: 4; 16 or 32 is a wider regulariser, beyond the
        paper, docs/benchmarks_quality.md).
      eps0_floor: lower bound of eps_0 (LOANet ``eps0_floor``; paper: none = 0). Beyond the paper:
        without it training drives the learned eps_0 to 0 (docs/benchmarks_quality.md).
      regularizer_init, tv_scale: start of g (LOANet ``regularizer_init``): ``"random"`` (paper,
        Xavier) or ``"tv"`` (beyond the paper: r_eps starts as a smoothed TV of scale tv_scale).
      global_clipnorm: Adam global gradient-norm clipping (paper: none).
      average_checkpoints: the saved model of meta-learning and conventional training is the average
        of the last this many checkpoints of its run (``TrainConfig.average_checkpoints``; paper: 1,
        the last iterate); adaptation keeps its last iterate.
      init_weights: ``None`` (paper: training starts from Xavier kernels) or a saved LOA network
        (``.keras`` path or ``pretrained:NAME``) whose learned parameters start meta-learning and
        conventional LOA training (beyond the paper; ``loa_meta.training.warm_start``); conventional
        training then fixes kappa at that model's sigmoid(omega) for its task, so both start from
        the same network. ISTA-Net+ and adaptation ignore it.
      safeguard: run Algorithm 1's safeguard (lines 5-16; paper: on). Off is beyond the paper: every
        phase takes the learned update u (docs/benchmarks_quality.md section 5 measures both).
      loss_reduction: ``TrainConfig.loss_reduction``: ``"sum"`` (paper, Eqs. 13-14) or, beyond the
        paper, ``"task_norm"`` (each sample's term weighted by 1 / its zero-filled error) or
        ``"task_norm_sqrt"`` (by 1 / the error's norm) or ``"task_norm_075"`` (by 1 / the norm^1.5).
      learning_rate: Adam learning rate of theta (paper: 1e-3).
      omega_learning_rate: Adam learning rate of omega in Algorithm 2 (rho_omega; not stated).
      adapt_learning_rate: Adam learning rate of the new omega in adaptation (not stated; paper
        preset 1e-2: its 650 steps can move omega by up to ~6.5, more than the 2.3 between the
        sigma(omega) = 0.66 and 0.95 that Tables 3-5 report).
      per_task_batch: J, samples per task in a cross-task batch (paper: 8 = 2 x 4 tasks).
      meta_max_steps: optional cap of optimizer steps of the whole meta run.
      delta0, nu_delta, delta_tol, lambda0, nu_lambda: Algorithm 2 schedule (paper: 1e-3, 0.95,
        4.35e-6, 1e-5, 1.001). delta and lambda are updated once per epoch and a meta-learning
        stage ends at delta <= delta_tol (:attr:`meta_stage_epochs` epochs; paper 107).
      theta_steps, max_inner_iterations: Algorithm 2 inner loop (not stated in the paper).
      conv_batch, conv_epochs, conv_max_steps: conventional training (paper: 25, 2000 epochs on the
        merged train+val set).
      adapt_images, adapt_epochs, adapt_batch, adapt_max_steps: adaptation (paper: 100 images,
        50 epochs; batch not stated).
      ista_steps_factor: ISTA-Net+ trains for this multiple of the conventional step budget
        (paper: same data, phases and kernels; budget not stated). ISTA-Net+ starts from its
        original Xavier initialisation far below zero filling (about -11 dB at 64x64) and a step
        costs ~10x less than an LOA step with the safeguard, so short presets give it more steps.
      max_train, max_val, max_test: use only the first N slices of a split (0 = all); max_val
        applies to the val slices left after the held-out ones.
      tv_iters: Chambolle-Pock iterations of the TV rows of ``reproduce`` and ``quickstart`` (lambda tuning
        on the val split and the test split; ``loa_meta.evaluation.classical.TV_ITERS``, measured to
        converge in docs/benchmarks_classical.md). The ``tiny`` preset (tests) uses fewer.
      eval_slices: held-out slices, the last ones of the val split: never trained on by any mode,
        they judge the stair-wise plateau rule and phase acceptance (and adaptation's eval).
      inference_iterations: iteration counts among which ``reproduce`` and the quickstart choose, per
        LOA model and task on the held-out slices, how many Algorithm 1 iterations the model runs at
        inference (``loa_meta.evaluation.iterations``); their tables then add the rows "Meta-learning
        (N on held-out)" and "Conventional (N on held-out)" next to the trained T phases. Empty
        (paper): the T trained phases only. Beyond the paper (docs/benchmarks_quality.md 5.31).
      val_fraction: share of the remaining train + val slices that forms Algorithm 2's D^val
        (paper: 150 of 300 + 150, i.e. D^tr : D^val = 2 : 1); conventional training merges both.
      eval_every: evaluate the held-out slices every this many outer iterations (plateau rule).
      reduced_fraction: the "meta-learning*" / "conventional*" runs use this fraction of the data
        (paper: two thirds).
      seen_tasks, unseen_tasks, cartesian_tasks: task specs of Tables 1-2, 3-4 and 5.
      checkpoint_every, log_every, summary_every, image_every: bookkeeping intervals.
      patience, min_delta: stair-wise plateau rule (a stage ends after ``patience``
        evaluations without a relative improvement of ``min_delta``).
      compile_steps: run the gradients in compiled kernels (``TrainConfig.compile_steps``); the
        ``tiny`` preset (a handful of steps on tiny images, used by the tests) runs them eagerly,
        where tracing would cost more than it saves.
      jit_compile: compile those kernels with XLA (``TrainConfig.jit_compile``); measured in
        docs/benchmarks_training.md.
    """

    name: str
    num_phases: int = 11
    initial_phases: int = 1
    stairwise: bool = True
    alpha0: float = 0.01
    tau0: float = 0.01
    eps0: float = 1e-3
    a: float = 1e5
    max_backtracks: int = 20
    initial_omega: float = 0.0
    conv_kappa: float = 1.0
    filters: int = 4
    eps0_floor: float = 0.0
    regularizer_init: str = "random"
    tv_scale: float = 1.0
    global_clipnorm: Optional[float] = None
    average_checkpoints: int = 1
    init_weights: Optional[str] = None
    safeguard: bool = True
    loss_reduction: str = "sum"
    learning_rate: float = 1e-3
    omega_learning_rate: float = 1e-3
    per_task_batch: int = 2
    meta_max_steps: Optional[int] = None
    delta0: float = DELTA0
    nu_delta: float = NU_DELTA
    delta_tol: float = 4.35e-6
    lambda0: float = 1e-5
    nu_lambda: float = 1.001
    theta_steps: int = 1
    max_inner_iterations: int = 10
    conv_batch: int = 25
    conv_epochs: float = 2000.0
    conv_max_steps: Optional[int] = None
    adapt_images: int = 100
    adapt_epochs: float = 50.0
    adapt_batch: int = 8
    adapt_max_steps: Optional[int] = None
    adapt_learning_rate: float = 1e-2
    ista_steps_factor: float = 1.0
    max_train: int = 0
    max_val: int = 0
    max_test: int = 0
    tv_iters: int = 1000  # = loa_meta.evaluation.classical.TV_ITERS (tests/test_evaluation_classical.py)
    eval_slices: int = 16
    inference_iterations: Tuple[int, ...] = ()
    val_fraction: float = 1.0 / 3.0
    eval_every: int = 150
    reduced_fraction: float = 2.0 / 3.0
    seen_tasks: Tuple[str, ...] = SEEN_RADIAL
    unseen_tasks: Tuple[str, ...] = UNSEEN_RADIAL
    cartesian_tasks: Tuple[str, ...] = CARTESIAN
    checkpoint_every: int = 50
    log_every: int = 10
    summary_every: int = 10
    image_every: int = 200
    patience: int = 3
    min_delta: float = 1e-3
    compile_steps: bool = True
    jit_compile: bool = False

    def override(self, **kwargs: Any) -> "Preset":
        """A copy with the given fields replaced; ``None`` values are ignored (flag not given)."""
        names = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(kwargs) - names)
        if unknown:
            raise ValueError(f"Unknown preset field(s) {unknown}; expected a subset of {sorted(names)}")
        return dataclasses.replace(self, **{k: v for k, v in kwargs.items() if v is not None})

    def to_dict(self) -> Dict[str, Any]:
        d = dataclasses.asdict(self)
        for k in ("seen_tasks", "unseen_tasks", "cartesian_tasks", "inference_iterations"):
            d[k] = list(d[k])
        return d

    @property
    def meta_stage_epochs(self) -> int:
        """Epochs per meta-learning stage: line-12 updates until delta <= delta_tol (paper: 107)."""
        return int(math.ceil(math.log(self.delta_tol / self.delta0) / math.log(self.nu_delta) - 1e-12))

    def model_kwargs(self) -> Dict[str, Any]:
        """Keyword arguments of ``LOANet`` (besides ``num_phases``)."""
        return {"alpha0": self.alpha0, "tau0": self.tau0, "eps0": self.eps0, "a": self.a,
                "max_backtracks": self.max_backtracks, "initial_omega": self.initial_omega,
                "filters": self.filters, "eps0_floor": self.eps0_floor, "regularizer_init": self.regularizer_init,
                "tv_scale": self.tv_scale, "safeguard": self.safeguard}

    def conventional_kwargs(self) -> Dict[str, Any]:
        """``LOANet`` kwargs of conventional learning: no omega, kappa fixed to ``conv_kappa``."""
        kw = self.model_kwargs()
        kw.pop("initial_omega")
        kw["fixed_kappa"] = self.conv_kappa
        return kw

    def ista_kwargs(self) -> Dict[str, Any]:
        """Keyword arguments of ``ISTANetPlus``: same kernels and kernel count as LOANet."""
        return {"filters": self.filters}


PAPER = Preset(name="paper")

TINY = Preset(
    name="tiny",
    num_phases=2,
    initial_phases=1,
    stairwise=True,
    alpha0=1.0,
    tau0=0.3,  # with initial_omega = -4: same line-4 step as the quickstart (see QUICKSTART)
    initial_omega=SMALL_OMEGA0,
    conv_kappa=SMALL_KAPPA0,  # = sigmoid(initial_omega): conventional starts from meta's network
    per_task_batch=1,
    delta_tol=delta_tol_after(1),
    meta_max_steps=4,
    max_inner_iterations=1,
    conv_batch=2,
    conv_epochs=1.0,
    conv_max_steps=2,
    adapt_images=2,
    adapt_epochs=1.0,
    adapt_batch=2,
    adapt_max_steps=1,
    omega_learning_rate=5e-2,
    adapt_learning_rate=5e-2,
    max_train=4,
    max_val=2,
    max_test=2,
    tv_iters=100,  # tests only: a TV row on 2 tiny slices; the quality presets use the converged 1000
    eval_slices=2,
    inference_iterations=(1, 2, 4),  # tests run the "(N on held-out)" rows
    eval_every=1,
    checkpoint_every=2,
    log_every=1,
    summary_every=2,
    image_every=0,
    patience=1,
    compile_steps=False,
)

# The README's main job (experiments.quickstart): small crop, few phases, larger initial step, and
# the options that the 160x180 probes and the shipped demo-t1-radial recipe measured (beyond the paper,
# docs/benchmarks_quality.md 5.5-5.11; FIDELITY lists each): 16 kernels, eps_0 floored at 1e-3,
# lambda_0 = 1e-8, Algorithm 1 without its safeguard, the per-sample normalised loss (task_norm).
QUICKSTART = Preset(
    name="quickstart",
    num_phases=3,
    initial_phases=3,
    stairwise=False,  # all 3 phases from the start: one graph trace per run instead of one per stage
    # The energy phi = f + sigmoid(omega) r must not be dominated by the untrained r (with the
    # safeguard on, the line-8 step v = x - alpha grad phi (alpha ~ 1) would descend r far into the
    # null space of A: measured meta below zero-filled). So kappa starts small (omega0 = -4,
    # kappa = 0.018) and tau0 = 0.3 keeps the line-4 step tau * kappa ~ 0.005 (the paper's 0.01 * 0.5).
    alpha0=1.0,  # alpha = 1 makes the data-consistency step a projection; the paper's 0.01 is inert in 3 phases
    tau0=0.3,
    initial_omega=SMALL_OMEGA0,
    conv_kappa=SMALL_KAPPA0,  # = sigmoid(initial_omega): conventional starts from meta's network
    filters=16,  # beyond the paper (4): learns faster and more stably (5.2, 5.7)
    eps0_floor=1e-3,  # beyond the paper: the learned eps_0 otherwise collapses to 0 (section 4)
    lambda0=1e-8,  # beyond the paper (1e-5): the penalty gradient grows with the pixel count (5.5)
    safeguard=False,  # beyond the paper: the u -> v switch cost 1.5-4 dB in training (5.5-5.8)
    loss_reduction=QUICKSTART_LOSS,
    # beyond the paper: the saved models (meta-learning and conventional) average the last 3 checkpoints;
    # at 64x64 the last iterate is noisy: +0.06 to +0.38 dB on new subjects, two seeds (quality 5.18)
    average_checkpoints=3,
    learning_rate=3e-3,  # 1e-2 diverged (loss 70 -> 1200 within 50 meta steps)
    per_task_batch=2,
    # 1000 steps: 700 ended at TV's level at radial 10 %; continuing the same run to 1000 gained +0.19 /
    # +0.13 / +0.15 / +0.06 dB at 10-40 % on new subjects (docs/benchmarks_quality.md 5.26); 17 epochs of
    # 31 batch pairs (527 outer iterations), so the step cap ends the stage at 500
    delta_tol=delta_tol_after(17),
    meta_max_steps=1000,
    max_inner_iterations=1,
    conv_batch=8,
    conv_epochs=23.0,
    conv_max_steps=250,  # 4 x 250 x 8 = 8000 images = meta-learning's 500 x (8 + 8): equal budgets
    adapt_images=16,
    adapt_epochs=2.0,
    adapt_batch=4,
    adapt_max_steps=8,
    omega_learning_rate=5e-2,
    adapt_learning_rate=5e-2,
    max_train=0,
    max_val=0,
    max_test=0,
    eval_slices=8,
    # beyond the paper: also score each LOA model at the iteration count chosen on the 8 held-out slices
    # (quality 5.31: the demo model gains ~1 dB at radial 10 % from 30 iterations, the trained 3 are best above)
    inference_iterations=INFERENCE_GRID,
    # bookkeeping only (no stair-wise plateau rule here): the batch summaries and held-out scores every 5
    # steps / 10 outer iterations cost about 7 % of a meta-learning stage (docs/benchmarks_training.md,
    # "Bookkeeping of the training loop"); the trained weights do not depend on them
    eval_every=25,
    checkpoint_every=25,
    summary_every=25,
    image_every=50,
    patience=2,
)

# The whole reproduce protocol (29 stages, Tables 1-5 and Fig. 6) on 2 CPU cores with --workers=2: the
# quickstart's data (64x64 crop, 80/20/20 slices) and its measured recipe for every training stage, so
# the seen-ratio meta-learning and conventional rows of Tables 1-2 and the adapted radial 25 % row are
# the quickstart's, bit for bit (same data, seeds and masks); beyond them the protocol adds the reduced
# data runs (meta-learning*, conventional*), ISTA-Net+, and the unseen radial and Cartesian tasks.
# Until session 20 this preset kept the paper's 4 kernels, the safeguard, the summed loss and no eps_0
# floor, grown stair-wise from 1 phase in 480 steps: meta-learning ended 1.2-1.8 dB below TV at every
# seen ratio (docs/benchmarks_quality.md section 2 keeps that table as history). Stair-wise growth
# (Section 4.2) stays in the paper preset (and the tiny one, which the tests run).
CPU = dataclasses.replace(
    QUICKSTART,
    name="cpu",
    # ISTA-Net+ (same 3 phases and 16 kernels) starts ~11 dB below zero filling from its Xavier start; it
    # gets meta-learning's 1000 steps, 4x conventional training's 250 (a 64x64 ISTA-Net+ step of 8
    # slices costs about 0.7 s on 2 cores, more than an LOA step without the safeguard)
    ista_steps_factor=4.0,
)

PRESETS: Dict[str, Preset] = {p.name: p for p in (PAPER, CPU, TINY, QUICKSTART)}


def get_preset(name: str) -> Preset:
    """The preset called ``name``; ``ValueError`` naming the choices otherwise."""
    if name not in PRESETS:
        raise ValueError(f"Unknown preset {name!r}; expected one of {sorted(PRESETS)}")
    return PRESETS[name]
