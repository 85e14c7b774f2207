"""How many Algorithm 1 iterations a trained LOA network runs at inference, chosen per task (beyond the paper).

A LOA network of T phases is T iterations of Algorithm 1 with learned step sizes;
``LOANet.reconstruct(num_iterations=N)`` runs N of them, reusing the last phase's step sizes after
T. The paper always runs the T trained phases. Measured in docs/benchmarks_quality.md 5.31: at
radial 10 % the demo model gains ~1 dB from running on (N = 30), at 20-40 % the trained T is best.

:func:`select_iterations` scores every N of a grid on *selection* slices (held-out slices or new
subjects, never the test split the results are reported on) and picks, per task, the N of the
highest mean PSNR; an N within ``tie_db`` of the best counts as a tie and the smallest such N wins
(cheaper, closer to the trained network). ``experiments.reproduce`` and the quickstart use it for
their "(N on held-out)" rows (preset ``inference_iterations``); ``benchmarks/probe_iterations.py``
prints the whole score table.
"""

from __future__ import annotations

from typing import Dict, Mapping, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from loa_meta.evaluation.evaluate import slice_metrics
from loa_meta.physics.operators import SingleCoilOperator
from loa_meta.validation import check_positive_int

# Iteration counts tried by default (docs/benchmarks_quality.md 5.31 chose among these).
DEFAULT_GRID: Tuple[int, ...] = (1, 2, 3, 4, 5, 7, 9, 11, 15, 20, 30)
TIE_DB = 0.01  # counts within this many dB of the best mean PSNR tie; the smallest wins

Scores = Dict[str, Dict[int, Dict[str, float]]]


def choose_iterations(scores: Mapping[int, float], tie_db: float = TIE_DB) -> int:
    """The smallest N whose mean PSNR (``scores[N]``) is within ``tie_db`` of the best."""
    if not scores:
        raise ValueError("Argument `scores` must hold at least one iteration count, but received none.")
    if tie_db < 0:
        raise ValueError(f"Argument `tie_db` must be >= 0, but received: {tie_db}")
    best = max(scores.values())
    return min(int(n) for n, v in scores.items() if v >= best - tie_db)


def _check_grid(grid: Sequence[int]) -> Tuple[int, ...]:
    grid = tuple(sorted({check_positive_int(n, "grid") for n in grid}))
    if not grid:
        raise ValueError("Argument `grid` must hold at least one iteration count, but received none.")
    return grid


def score_iterations(model, images: np.ndarray, masks: Mapping[str, np.ndarray],
                     task_ids: Optional[Mapping[str, int]] = None, grid: Sequence[int] = DEFAULT_GRID,
                     batch_size: int = 10) -> Scores:
    """``{task: {N: {"psnr": mean, "ssim": mean}}}`` of ``model.reconstruct(num_iterations=N)``.

    One pass of ``max(grid)`` iterations per batch (``return_iterates``): iterate t of that pass is
    ``reconstruct(num_iterations=t)``. Images are undersampled noise-free with each task's mask and
    scored on magnitudes with :func:`loa_meta.evaluation.evaluate.slice_metrics`, as in
    :func:`loa_meta.evaluation.evaluate.evaluate_model`.

    Args:
      model: a LOA network (``LOANet``).
      images: selection ground truths ``(N, H, W)``, real or complex.
      masks: task name -> 0/1 mask ``(H, W)``.
      task_ids: task name -> the model's task id (default 0, 1, ... in mask order).
      grid: iteration counts to score (positive integers).
      batch_size: slices per reconstruction call.
    """
    grid = _check_grid(grid)
    batch_size = check_positive_int(batch_size, "batch_size")
    images = np.asarray(images)
    if images.ndim != 3 or images.shape[0] == 0:
        raise ValueError(f"Argument `images` must have shape (N, H, W) with N >= 1, but received: {images.shape}")
    from loa_meta.models import LOANet

    if not isinstance(model, LOANet):
        raise TypeError(f"Argument `model` must be a LOA network (LOANet), but received: {type(model).__name__}")
    n, h, w = images.shape
    ids = {t: i for i, t in enumerate(masks)} if task_ids is None else dict(task_ids)
    targets = tf.constant(images.astype(np.complex64))
    out: Scores = {}
    for name, mask in masks.items():
        mask = np.asarray(mask, np.float32)
        if mask.shape != (h, w):
            raise ValueError(f"Mask of task {name!r} has shape {mask.shape}, but the images have shape {(h, w)}.")
        if name not in ids:
            raise ValueError(f"Argument `task_ids` lacks the task {name!r}.")
        op = SingleCoilOperator(tf.constant(mask))
        recons = {k: [] for k in grid}
        for start in range(0, n, batch_size):
            x = targets[start : start + batch_size]
            b = int(x.shape[0])
            _, diag = model.reconstruct(op.forward(x), tf.broadcast_to(tf.constant(mask), (b, h, w)),
                                        tf.fill((b,), tf.constant(int(ids[name]), tf.int32)),
                                        num_iterations=grid[-1], return_diagnostics=True, return_iterates=True)
            for k in grid:
                recons[k].append(np.abs(diag["iterates"][k]))
        out[name] = {}
        for k in grid:
            m = slice_metrics(np.concatenate(recons[k], axis=0), np.abs(images))
            out[name][k] = {"psnr": float(np.mean(m["psnr"])), "ssim": float(np.mean(m["ssim"]))}
    return out


def select_iterations(model, images: np.ndarray, masks: Mapping[str, np.ndarray],
                      task_ids: Optional[Mapping[str, int]] = None, grid: Sequence[int] = DEFAULT_GRID,
                      tie_db: float = TIE_DB, batch_size: int = 10) -> Tuple[Dict[str, int], Scores]:
    """``(chosen, scores)``: per task the iteration count of :func:`choose_iterations` on the scores
    of :func:`score_iterations` over ``images`` (selection slices, never the reported test split)."""
    scores = score_iterations(model, images, masks, task_ids, grid, batch_size)
    chosen = {t: choose_iterations({k: v["psnr"] for k, v in s.items()}, tie_db) for t, s in scores.items()}
    return chosen, scores
