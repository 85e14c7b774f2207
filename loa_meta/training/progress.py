"""absl.logging progress lines: loss, images/s, ETA, stage and phase count."""

from __future__ import annotations

import time
from typing import Optional

from absl import logging


class ProgressLogger:
    """Logs one line every ``every`` steps.

    Args:
      every: logging interval in steps.
      total_steps: step budget used for the ETA (``None``: no ETA).
      clock: time source (seconds), injectable for tests.
    """

    def __init__(self, every: int, total_steps: Optional[int] = None, clock=time.monotonic):
        self.every = int(every)
        self.total_steps = total_steps
        self.clock = clock
        self._t0 = None
        self._step0 = 0
        self._images = 0
        self.last_line = ""

    def start(self, step: int):
        self._t0 = self.clock()
        self._step0 = int(step)
        self._images = 0

    def images_per_second(self) -> float:
        dt = max(self.clock() - self._t0, 1e-9)
        return self._images / dt

    def eta_seconds(self, step: int) -> Optional[float]:
        if self.total_steps is None or step <= self._step0:
            return None
        rate = (self.clock() - self._t0) / (step - self._step0)
        return max(self.total_steps - step, 0) * rate

    def update(self, step: int, images: int, loss: float, stage: int = 0, num_phases: int = 0, extra: str = ""):
        if self._t0 is None:
            self.start(step - 1)
        self._images += int(images)
        if step % self.every:
            return None
        eta = self.eta_seconds(step)
        eta_s = "?" if eta is None else "%dm%02ds" % (eta // 60, eta % 60)
        self.last_line = "step %d | stage %d | phases %d | loss %.6g | %.2f img/s | ETA %s %s" % (
            step, stage, num_phases, loss, self.images_per_second(), eta_s, extra)
        logging.info("%s", self.last_line)
        return self.last_line
