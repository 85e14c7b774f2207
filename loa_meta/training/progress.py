"""Training progress: one line (or a Keras progress bar) with loss, images/s and one ETA.

The ETA covers all the work left, including stair-wise stages not started yet. Their cost is known
from their step counts; one step with ``p`` phases costs about ``p`` times a one-phase step (every
phase is one Algorithm 1 iteration, forward and backward), so the rate measured so far, in seconds
per phase-step, prices the rest:

    ETA = seconds_per_phase_step * sum over remaining stages s of (steps_s * phases_s).

The remaining work comes from :func:`remaining_work`: the rest of the current stage, then one stage
per phase still to add, each with the stage budget, within the run's caps (outer iterations and
optimizer steps). A stage that ends early on its plateau rule only shortens it.

An app that runs many trainings (``experiments.reproduce``) shows one ETA for all of them instead:
:func:`set_eta_hook` installs a function that turns this run's ETA into that one (its label is
shown next to it), and each run writes its numbers to ``status_path`` (``progress.json`` in its
run directory) for the other processes of the app to read.

Where a terminal is attached (``sys.stdout.isatty()``) the same numbers drive a
``keras.utils.Progbar`` whose ETA is this one; otherwise (logs, files, CI, or
``LOA_META_PROGRESS=lines``) one absl line every ``every`` steps.
"""

from __future__ import annotations

import math
import os
import sys
import time
from typing import Callable, List, Optional, Sequence, Tuple

from absl import logging

# "lines": log lines even on a terminal (set in worker processes that share their parent's terminal)
PROGRESS_ENV = "LOA_META_PROGRESS"
Plan = Sequence[Tuple[int, int]]  # (outer iterations, phases) per remaining stage, the current one first

STATUS_EVERY = 1.0  # seconds between two writes of the status file (and at the first and last step)
# fn(this run's ETA in seconds or None) -> (ETA to show or None, label); see set_eta_hook
_ETA_HOOK: List[Callable[[Optional[float]], Tuple[Optional[float], str]]] = []


def set_eta_hook(fn: Optional[Callable[[Optional[float]], Tuple[Optional[float], str]]]) -> None:
    """Show ``fn(run_eta) -> (eta, label)`` instead of each run's own ETA (``None``: the runs' own again).

    The progress line then reads ``ETA 1h02m03s (label)``: one ETA per line, for the whole job.
    """
    _ETA_HOOK[:] = [] if fn is None else [fn]


def remaining_work(stairwise, schedule, config, num_phases: int, stage_iter: int, outer: int) -> List[Tuple[int, int]]:
    """The outer iterations left per stage, ``[(iterations, phases), ...]``, the current stage first.

    Args:
      stairwise: the run's ``StairwiseConfig`` (or None): ``enabled``, ``stage_max_iterations``, ``max_phases``.
      schedule: the Algorithm 2 schedule (or None); a stage also ends when delta reaches delta_tol,
        after ``schedule.outer_iterations_to_tol()`` iterations at most.
      config: the training config; ``max_outer_iterations`` (if any) caps the whole run.
      num_phases, stage_iter, outer: where the run is (phases now, iterations done in this stage and in all).
    """
    sw = stairwise if stairwise is not None and getattr(stairwise, "enabled", False) else None
    caps = [c for c in (sw.stage_max_iterations if sw is not None else None,
                        schedule.outer_iterations_to_tol() if schedule is not None else None) if c is not None]
    max_outer = getattr(config, "max_outer_iterations", None)
    left_total = None if max_outer is None else max(int(max_outer) - int(outer), 0)
    budget = min(caps) if caps else None
    if budget is None:  # no per-stage budget: the run's cap is the only one
        return [(left_total, int(num_phases))] if left_total is not None else []
    plan = [(max(budget - int(stage_iter), 0), int(num_phases))]
    if sw is not None:
        plan += [(budget, p) for p in range(int(num_phases) + 1, int(sw.max_phases) + 1)]
    if left_total is not None:
        capped = []
        for n, p in plan:
            n = min(n, left_total)
            left_total -= n
            capped.append((n, p))
        plan = capped
    return [(n, p) for n, p in plan if n > 0] or [(0, int(num_phases))]


def format_seconds(seconds: Optional[float]) -> str:
    """``1h02m03s`` / ``4m05s`` / ``?``."""
    if seconds is None or not math.isfinite(seconds):
        return "?"
    s = int(round(seconds))
    h, m = s // 3600, (s % 3600) // 60
    return "%dh%02dm%02ds" % (h, m, s % 60) if h else "%dm%02ds" % (m, s % 60)


class ProgressLogger:
    """Logs one line every ``every`` steps (or drives a progress bar on a terminal).

    Args:
      every: logging interval in optimizer steps.
      total_steps: cap on optimizer steps of the run (``None``: none); bounds the remaining work.
      clock: time source (seconds), injectable for tests.
      bar: ``True``/``False`` to force the Keras progress bar on or off; default: when stdout is a terminal.
      status_path: a JSON file rewritten (atomically) at every update with the measured rate and the
        work left (``seconds_per_phase_step``, ``phase_steps_left``, ``eta_seconds``, ``step``, ``time``).
    """

    def __init__(self, every: int, total_steps: Optional[int] = None, clock=time.monotonic,
                 bar: Optional[bool] = None, status_path: Optional[str] = None):
        self.status_path = status_path
        self._status_time = None
        self.every = max(1, int(every))
        self.total_steps = total_steps
        self.clock = clock
        self.use_bar = bar
        self._bar = None
        self._t0 = None
        self._step0 = 0
        self._outer0 = None
        self._outer_seen = None
        self._steps_in_outers = 0  # optimizer steps of the outer iterations completed since start
        self._images = 0
        self._work = 0.0  # phase-steps done since start
        self._first = None  # (time, work) after the first step
        self._phases = 1
        self.last_line = ""

    def start(self, step: int, outer: Optional[int] = None):
        self._t0 = self.clock()
        self._step0 = int(step)
        self._outer0 = self._outer_seen = None if outer is None else int(outer)
        self._steps_in_outers = 0
        self._images = 0
        self._work = 0.0
        self._first = None

    # -- rates ----------------------------------------------------------------------------------

    def elapsed(self) -> float:
        return max(self.clock() - self._t0, 1e-9)

    def images_per_second(self) -> float:
        return self._images / self.elapsed()

    def seconds_per_phase_step(self) -> Optional[float]:
        """Measured seconds per phase-step; the first step (graph tracing, warm-up) is left out once
        later steps exist."""
        if self._work <= 0:
            return None
        if self._first is not None and self._work > self._first[1]:
            t1, w1 = self._first
            return max(self.clock() - t1, 1e-9) / (self._work - w1)
        return self.elapsed() / self._work

    def steps_per_outer(self, step: int) -> float:
        """Optimizer steps per outer iteration, measured on the completed ones (1 until one completed)."""
        n = (self._outer_seen or 0) - (self._outer0 or 0)
        if n > 0:
            return self._steps_in_outers / n
        return float(max(step - self._step0, 1))

    def remaining_steps(self, step: int, num_phases: int, plan: Optional[Plan] = None) -> List[Tuple[float, int]]:
        """``[(optimizer steps, phases), ...]`` left, within ``total_steps``. An empty ``plan`` (no
        per-stage budget, e.g. conventional training) counts as none: ``total_steps`` bounds the work."""
        plan = plan or None
        if plan is not None:
            spo = self.steps_per_outer(step)
            left = [(n * spo, p) for n, p in plan]
            if self._outer_seen is not None:  # the steps already made in the current outer iteration
                done_here = step - self._step0 - self._steps_in_outers
                if left:
                    left[0] = (max(left[0][0] - done_here, 0.0), left[0][1])
        elif self.total_steps is not None:
            left = [(float(max(self.total_steps - step, 0)), int(num_phases))]
        else:
            return []
        if self.total_steps is not None:
            cap, capped = float(max(self.total_steps - step, 0)), []
            for n, p in left:
                n = min(n, cap)
                cap -= n
                capped.append((n, p))
            left = capped
        return left

    def eta_seconds(self, step: int, num_phases: Optional[int] = None, plan: Optional[Plan] = None) -> Optional[float]:
        """Seconds left: measured seconds per phase-step times the phase-steps left (``None`` before a step).

        ``num_phases`` of the current stage defaults to that of the last update."""
        num_phases = self._phases if num_phases is None else num_phases
        plan = plan or None  # [] = no per-stage budget (see remaining_steps)
        rate = self.seconds_per_phase_step()
        if rate is None or (plan is None and self.total_steps is None):
            return None
        return rate * sum(n * max(p, 1) for n, p in self.remaining_steps(step, num_phases, plan))

    # -- updates --------------------------------------------------------------------------------

    def update(self, step: int, images: int, loss: float, stage: int = 0, num_phases: int = 0, extra: str = "",
               outer: Optional[int] = None, plan: Optional[Plan] = None):
        """Record optimizer step ``step`` (``num_phases`` phases, ``images`` images); log/draw every ``every``.

        ``outer`` is the index of the outer iteration this step belongs to and ``plan`` the work left
        (:func:`remaining_work`, in outer iterations); without them the ETA is ``total_steps`` at the
        current rate.
        """
        if self._t0 is None:
            self.start(step - 1, outer)
        if outer is not None:
            outer = int(outer)
            if self._outer_seen is None:
                self._outer0 = self._outer_seen = outer
            elif outer > self._outer_seen:  # this step opens a new outer iteration
                self._steps_in_outers = step - 1 - self._step0
                self._outer_seen = outer
        self._images += int(images)
        self._phases = max(int(num_phases), 1)
        self._work += self._phases
        first = self._first is None
        if first:
            self._first = (self.clock(), self._work)
        eta = self.eta_seconds(step, num_phases, plan)
        if self.status_path is not None and (first or self.clock() - self._status_time >= STATUS_EVERY or not eta):
            self._status_time = self.clock()
            self._write_status(step, eta, num_phases, plan)
        label = ""
        if _ETA_HOOK:
            eta, label = _ETA_HOOK[0](eta)
            label = " (%s)" % label if label else ""
        if self._want_bar():
            self._draw(step, eta, loss, num_phases, plan)
        if step % self.every and not first:  # the first step is shown at once (it may take long: tracing)
            return None
        self.last_line = "step %d | stage %d | phases %d | loss %.6g | %.2f img/s | ETA %s%s %s" % (
            step, stage, num_phases, loss, self.images_per_second(), format_seconds(eta), label, extra)
        self.last_line = self.last_line.rstrip()
        if self._bar is None:
            logging.info("%s", self.last_line)
        return self.last_line

    def _write_status(self, step: int, eta: Optional[float], num_phases: int, plan: Optional[Plan]) -> None:
        from loa_meta.fileio import write_json_atomic

        left = self.remaining_steps(step, num_phases, plan)
        write_json_atomic(self.status_path, {
            "step": int(step), "seconds_per_phase_step": self.seconds_per_phase_step(),
            "phase_steps_left": float(sum(n * max(p, 1) for n, p in left)) if left or plan is not None else None,
            "eta_seconds": eta, "steps_per_outer": self.steps_per_outer(step) if plan is not None else None,
            "time": time.time()})

    # -- terminal progress bar --------------------------------------------------------------------

    def _want_bar(self) -> bool:
        if self.use_bar is None:
            self.use_bar = (bool(getattr(sys.stdout, "isatty", lambda: False)())
                            and os.environ.get(PROGRESS_ENV, "") != "lines")
        return self.use_bar

    def _draw(self, step, eta, loss, num_phases, plan):
        import keras

        left = sum(n for n, _ in self.remaining_steps(step, num_phases, plan)) if eta is not None else None
        target = None if left is None else int(step + math.ceil(left))
        if self._bar is None:
            logger = self

            class _Bar(keras.utils.Progbar):
                """Keras' bar with this logger's ETA (remaining work at the measured rates)."""

                def _estimate_step_duration(self, current, now):
                    if logger._bar_eta is None or self.target is None or self.target <= current:
                        return super()._estimate_step_duration(current, now)
                    return logger._bar_eta / (self.target - current)

            self._bar = _Bar(target, stateful_metrics=["loss", "img/s"], unit_name="step")
        self._bar_eta = eta
        self._bar.target = target
        self._bar.update(step, [("loss", float(loss)), ("img/s", self.images_per_second())])

    _bar_eta: Optional[float] = None
