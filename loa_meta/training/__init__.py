"""Training (paper Sections 3.3, 4.2, 5.2, 5.4).

* :mod:`~loa_meta.training.algorithm2` -- Eq. 18 penalty objective, its exact gradient and
  Algorithm 2's inner loop / delta-lambda schedule.
* :mod:`~loa_meta.training.losses` -- Eqs. 13-14.
* :mod:`~loa_meta.training.loop` -- the one training loop (modes, stair-wise phases, checkpoints,
  NaN guard, tf.distribute, summaries, progress).
* :mod:`~loa_meta.training.api` / :mod:`~loa_meta.training.adaptation` -- entry points.
"""

from loa_meta.training.adaptation import adapt_omega
from loa_meta.training.algorithm2 import (
    Algorithm2Schedule,
    penalty_objective_and_grads,
    penalty_objective_value,
    run_algorithm2_iteration,
)
from loa_meta.training.api import train_conventional, train_meta
from loa_meta.training.checkpointing import CheckpointError
from loa_meta.training.config import AdaptConfig, ConventionalConfig, MetaConfig, StairwiseConfig
from loa_meta.training.losses import per_sample_loss, reconstruction_loss
from loa_meta.training.loop import NonFiniteError, TrainingData

__all__ = [
    "adapt_omega", "train_meta", "train_conventional", "Algorithm2Schedule", "penalty_objective_and_grads",
    "penalty_objective_value", "run_algorithm2_iteration", "CheckpointError", "AdaptConfig",
    "ConventionalConfig", "MetaConfig", "StairwiseConfig", "per_sample_loss", "reconstruction_loss",
    "NonFiniteError", "TrainingData",
]
