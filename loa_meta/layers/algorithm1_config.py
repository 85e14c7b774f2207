"""The fixed (not learned) constants of Algorithm 1, validated once and shared by every phase."""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, Optional

from loa_meta.validation import check_in_range, check_one_of, check_positive, check_positive_int

GRAD_MODES = ("explicit", "autodiff")


@dataclasses.dataclass(frozen=True)
class Algorithm1Config:
    """The constants of Algorithm 1, checked once on construction (frozen: they never change).

    A :class:`~loa_meta.models.LOANet` builds one from its constructor arguments and passes the same
    object to each of its :class:`~loa_meta.layers.LOAPhase` layers.

    Args:
      a: line-5/9 constant (paper: 1e5).
      sigma: line-15/16 constant (paper: 1e3).
      rho: line-12 reduction of the step size, in (0, 1) (paper: 0.9).
      gamma: line-15 reduction of eps, in (0, 1) (paper: 0.9).
      eps_tol: termination tolerance of line 16, >= 0 (paper: 1e-3).
      max_backtracks: bound on the line-search reductions of line 12 (not in the paper, whose line
        search is unbounded); a sample that exhausts it keeps x_{t+1} = x_t.
      safeguard: run lines 5-16 (True) or, as the authors' released script, take x_{t+1} = u always
        with eps fixed (False).
      grad_mode: gradient of r_eps by the explicit chain rule of Eq. A2 (``"explicit"``) or by
        ``tf.GradientTape`` (``"autodiff"``).
    """

    a: float = 1e5
    sigma: float = 1e3
    rho: float = 0.9
    gamma: float = 0.9
    eps_tol: float = 1e-3
    max_backtracks: int = 20
    safeguard: bool = True
    grad_mode: str = "explicit"

    def __post_init__(self):
        checked = {
            "a": check_positive(self.a, "a"),
            "sigma": check_positive(self.sigma, "sigma"),
            "rho": check_in_range(self.rho, "rho", 0.0, 1.0, low_inclusive=False, high_inclusive=False),
            "gamma": check_in_range(self.gamma, "gamma", 0.0, 1.0, low_inclusive=False, high_inclusive=False),
            "eps_tol": check_in_range(self.eps_tol, "eps_tol", 0.0),
            "max_backtracks": check_positive_int(self.max_backtracks, "max_backtracks", minimum=0),
            "safeguard": bool(self.safeguard),
            "grad_mode": check_one_of(self.grad_mode, "grad_mode", GRAD_MODES),
        }
        for name, value in checked.items():
            object.__setattr__(self, name, value)  # the normalised value (float, int, bool)

    def as_dict(self) -> Dict[str, Any]:
        """The constants by name (the keys of ``LOANet.get_config`` and ``LOAPhase.get_config``)."""
        return dataclasses.asdict(self)

    @classmethod
    def resolve(cls, config: Optional["Algorithm1Config"] = None, **constants) -> "Algorithm1Config":
        """``config`` itself, or a new config from ``constants`` (the older keyword form); not both.

        Raises:
          ValueError: ``config`` is not an :class:`Algorithm1Config`, or both forms were given.
          TypeError: a keyword is not a field of :class:`Algorithm1Config`.
        """
        if config is None:
            return cls(**constants)
        if not isinstance(config, cls):
            raise ValueError(f"Argument `config` must be an Algorithm1Config, but received: {config!r}")
        if constants:
            raise ValueError(f"Pass either `config` or the constants {sorted(constants)}, not both.")
        return config


FIELD_NAMES = tuple(f.name for f in dataclasses.fields(Algorithm1Config))


class Algorithm1Constants:
    """Read-only attributes ``a``, ``sigma``, ... of the object's ``algorithm1_config``."""

    algorithm1_config: Algorithm1Config

    @property
    def a(self) -> float:
        return self.algorithm1_config.a

    @property
    def sigma(self) -> float:
        return self.algorithm1_config.sigma

    @property
    def rho(self) -> float:
        return self.algorithm1_config.rho

    @property
    def gamma(self) -> float:
        return self.algorithm1_config.gamma

    @property
    def eps_tol(self) -> float:
        return self.algorithm1_config.eps_tol

    @property
    def max_backtracks(self) -> int:
        return self.algorithm1_config.max_backtracks

    @property
    def safeguard(self) -> bool:
        return self.algorithm1_config.safeguard

    @property
    def grad_mode(self) -> str:
        return self.algorithm1_config.grad_mode
