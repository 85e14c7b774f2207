"""One ETA for the whole ``reproduce`` protocol, from measured step rates and known step counts.

Every training stage of the protocol (meta-learning, conventional, ISTA-Net+, adaptation) has a
step budget known before it starts (:mod:`experiments.training_common`), and every step with ``p``
phases costs about ``p`` times a one-phase step (as in :mod:`loa_meta.training.progress`). So the
work left is priced in *phase-steps*:

* a finished stage (``COMPLETE.json``) costs nothing;
* a stage that has run (its ``progress.json``: measured seconds per phase-step and phase-steps left)
  costs its phase-steps left at the measured rate of its kind (the live numbers for the stage of the
  process that asks);
* a stage not started costs its whole budget (:class:`StageWork`) at the measured rate of its kind,
  or, before any stage of that kind has run, at the rate measured on the other kinds scaled by the
  images per step and the derivative order (a meta-learning step, Eq. 18, is priced at 3 first-order
  passes over its B_tr + B_val images).

The stages of a group (the training stages, then the adaptations) run ``workers`` at a time, in
order, each taken by the first free worker; the groups run one after the other, so the ETA is the
time at which a list schedule of the remaining stages ends. The evaluation stage (no step count)
is not included. A meta-learning stage may end before its budget on the plateau rule, so the ETA
is an upper bound in that respect.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from typing import Dict, List, Optional, Sequence, Tuple

COMPLETE = "COMPLETE.json"
STATUS = "progress.json"
ORDER = {"meta": 3.0, "conventional": 1.0, "ista": 1.0, "adapt": 1.0}  # cost of a step per image and phase


@dataclasses.dataclass(frozen=True)
class StageWork:
    """The budget of one stage: ``plan`` = ``((optimizer steps, phases), ...)`` over its stair-wise stages.

    Args:
      name: the stage's sub-directory of the protocol's run directory (e.g. ``conv/radial_0.20``).
      kind: ``meta``, ``conventional``, ``ista`` or ``adapt`` (stages of a kind share a measured rate).
      group: stages of one group run ``workers`` at a time; groups run one after the other.
      plan: the optimizer steps and phases of each of its stair-wise stages.
      images_per_step: images of one optimizer step (prices a kind not measured yet).
      steps_per_outer: for meta-learning, ``plan`` counts Algorithm 2's outer iterations, each of a
        varying number of optimizer steps (the line-6 test): this is the guess (K + 1) used until a
        meta-learning stage has measured it (``steps_per_outer`` in its progress file).
    """

    name: str
    kind: str
    group: int
    plan: Tuple[Tuple[int, int], ...]
    images_per_step: int
    steps_per_outer: Optional[float] = None

    def phase_steps(self, steps_per_outer: Optional[float] = None) -> float:
        """The phase-steps of the whole stage (outer iterations x ``steps_per_outer`` for meta-learning)."""
        spo = 1.0 if self.steps_per_outer is None else (steps_per_outer or self.steps_per_outer)
        return float(sum(n * max(p, 1) for n, p in self.plan)) * spo

    @property
    def unit(self) -> float:
        """Relative cost of one phase-step of this kind: images per step x derivative order."""
        return float(self.images_per_step) * ORDER[self.kind]


def stair_plan(total_steps: int, initial_phases: int, num_phases: int, stairwise: bool,
               stage_steps: Optional[int] = None) -> Tuple[Tuple[int, int], ...]:
    """Steps per stair-wise stage within ``total_steps``: ``stage_steps`` each (default: an even split)
    from ``initial_phases`` to ``num_phases`` phases, or all at ``num_phases`` without stair-wise growth."""
    if not stairwise or num_phases <= initial_phases:
        return ((int(total_steps), int(num_phases)),)
    phases = list(range(int(initial_phases), int(num_phases) + 1))
    per = int(stage_steps) if stage_steps is not None else max(1, int(total_steps) // len(phases))
    plan, left = [], int(total_steps)
    for p in phases:
        n = min(per, left)
        left -= n
        if n > 0:
            plan.append((n, p))
    return tuple(plan)


def _mean(xs: List[float]) -> Optional[float]:
    return sum(xs) / len(xs) if xs else None


def measured_steps_per_outer(stages: Sequence[StageWork], status: Dict[str, dict]) -> Dict[str, float]:
    """Mean measured optimizer steps per outer iteration of each kind whose plan counts outer iterations."""
    out: Dict[str, List[float]] = {}
    for st in stages:
        v = (status.get(st.name) or {}).get("steps_per_outer")
        if st.steps_per_outer is not None and v is not None and v > 0:
            out.setdefault(st.kind, []).append(float(v))
    return {k: _mean(v) for k, v in out.items()}


def kind_rates(stages: Sequence[StageWork], status: Dict[str, dict]) -> Dict[str, float]:
    """Seconds per phase-step of each kind: the mean over its stages with a measured rate; a kind not
    measured yet gets the measured seconds per unit (:attr:`StageWork.unit`) of the others times its unit.
    Empty when nothing has been measured."""
    by_kind: Dict[str, List[float]] = {}
    per_unit: List[float] = []
    for st in stages:
        r = (status.get(st.name) or {}).get("seconds_per_phase_step")
        if r is not None and math.isfinite(r) and r > 0:
            by_kind.setdefault(st.kind, []).append(float(r))
            per_unit.append(float(r) / st.unit)
    if not per_unit:
        return {}
    rates = {k: sum(v) / len(v) for k, v in by_kind.items()}
    mean_unit = sum(per_unit) / len(per_unit)
    for st in stages:
        rates.setdefault(st.kind, mean_unit * st.unit)
    return rates


def list_schedule(durations: Sequence[float], workers: int) -> float:
    """Wall time of running ``durations`` in order on ``workers`` slots, each taken by the first free one."""
    slots = [0.0] * max(1, min(int(workers), len(durations) or 1))
    for d in durations:
        i = slots.index(min(slots))
        slots[i] += float(d)
    return max(slots) if durations else 0.0


def protocol_eta(stages: Sequence[StageWork], complete: Sequence[str], status: Dict[str, dict], workers: int,
                 current: Optional[Tuple[str, Optional[float]]] = None) -> Optional[float]:
    """Seconds until every stage of ``stages`` is done (``None`` before any rate is measured).

    Args:
      stages: the protocol's stages, in the order they are started.
      complete: names of the finished stages.
      status: ``progress.json`` contents by stage name (stages that have run).
      workers: stages of a group run at a time.
      current: ``(name, seconds left)`` of the stage of the asking process (its live ETA).
    """
    rates = kind_rates(stages, status)
    if not rates:
        return None
    spo = measured_steps_per_outer(stages, status)
    done = set(complete)
    total = 0.0
    for group in sorted({st.group for st in stages}):
        durations = []
        for st in (s for s in stages if s.group == group and s.name not in done):
            if current is not None and st.name == current[0] and current[1] is not None:
                durations.append(float(current[1]))
                continue
            left = (status.get(st.name) or {}).get("phase_steps_left")
            left = st.phase_steps(spo.get(st.kind)) if left is None else float(left)
            durations.append(left * rates[st.kind])
        total += list_schedule(durations, workers)
    return total


class ProtocolProgress:
    """The protocol's stages and where their progress files are; picklable (sent to worker processes).

    :meth:`eta` reads ``COMPLETE.json`` and ``progress.json`` of every stage under ``workdir``;
    :meth:`hook` is the :func:`loa_meta.training.progress.set_eta_hook` function of one stage.
    """

    LABEL = "all stages"

    def __init__(self, workdir: str, stages: Sequence[StageWork], workers: int = 1):
        # stage order = start order: the stages that run now are the first ones not complete
        self.workdir, self.stages, self.workers = workdir, list(stages), max(1, int(workers))
        self._read_at, self._files = -math.inf, ([], {})

    def _read(self) -> Tuple[List[str], Dict[str, dict]]:
        complete, status = [], {}
        for st in self.stages:
            d = os.path.join(self.workdir, st.name)
            if os.path.isfile(os.path.join(d, COMPLETE)):
                complete.append(st.name)
            try:
                with open(os.path.join(d, STATUS), "r", encoding="utf-8") as fh:
                    status[st.name] = json.load(fh)
            except (OSError, ValueError):
                pass
        return complete, status

    def eta(self, current: Optional[Tuple[str, Optional[float]]] = None) -> Optional[float]:
        """Seconds until every training stage is done (the files are read at most once a second)."""
        if time.monotonic() - self._read_at >= 1.0:
            self._files, self._read_at = self._read(), time.monotonic()
        return protocol_eta(self.stages, *self._files, self.workers, current)

    def hook(self, name: str) -> "StageHook":
        """``run_eta -> (protocol ETA, label)`` for the progress lines of stage ``name`` (picklable)."""
        return StageHook(self, name)


class StageHook:
    """The :func:`loa_meta.training.progress.set_eta_hook` function of one stage of a protocol."""

    def __init__(self, protocol: ProtocolProgress, name: str):
        self.protocol, self.name = protocol, name

    def __call__(self, run_eta: Optional[float]) -> Tuple[Optional[float], str]:
        return self.protocol.eta((self.name, run_eta)), self.protocol.LABEL
