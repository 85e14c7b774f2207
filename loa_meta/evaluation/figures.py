"""Figures in the layout of the paper's Figs. 1-5 (comparison grids) and Fig. 6 (convergence).

Figs. 1-5: one column per task (CS ratio); for each method three rows -- the reconstruction with
the zoom box drawn as a red rectangle, the zoomed-in detail, and the point-wise absolute error map
with a colour bar -- then one row with the sampling masks. The ground truth (and its zoom) sits in
an extra right-most column, at the top right as in the paper.

Fig. 6: objective phi and PSNR versus phase number, one curve per task.

All figures are written as PNG with the matplotlib Agg backend, atomically.
"""

from __future__ import annotations

from typing import Dict, Mapping, Optional, Sequence, Tuple

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from loa_meta.evaluation.tables import atomic_path, task_label  # noqa: E402

Box = Tuple[int, int, int, int]


def default_zoom_box(shape: Sequence[int], fraction: float = 0.3) -> Box:
    """A centred box ``(row, col, height, width)`` covering ``fraction`` of each side."""
    h, w = int(shape[0]), int(shape[1])
    bh, bw = max(2, int(round(h * fraction))), max(2, int(round(w * fraction)))
    return ((h - bh) // 2, (w - bw) // 2, bh, bw)


def _check_box(box: Box, shape) -> Box:
    try:
        r, c, bh, bw = (int(v) for v in box)
    except (TypeError, ValueError):
        raise ValueError(f"Argument `zoom_box` must be (row, col, height, width), but received: {box!r}") from None
    h, w = shape
    if bh < 1 or bw < 1 or r < 0 or c < 0 or r + bh > h or c + bw > w:
        raise ValueError(f"Argument `zoom_box` must lie inside the {h}x{w} image, but received: {box!r}")
    return r, c, bh, bw


def _save(fig, path: str, dpi: int) -> str:
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    plt.close(fig)
    return path


def _bbox_pixels(fig, ax, dpi) -> Tuple[int, int, int, int]:
    """Axes extent in PNG pixel coordinates ``(x0, y0, x1, y1)`` with the origin at the top left (the
    figure drawn once before: a draw per panel cost 12 s of the quickstart's evaluation)."""
    bb = ax.get_window_extent()
    height = fig.get_figheight() * dpi
    scale = dpi / fig.dpi
    return (
        int(round(bb.x0 * scale)),
        int(round(height - bb.y1 * scale)),
        int(round(bb.x1 * scale)),
        int(round(height - bb.y0 * scale)),
    )


def comparison_figure(
    path: str,
    ground_truth: np.ndarray,
    reconstructions: Mapping[str, Mapping[str, np.ndarray]],
    masks: Mapping[str, np.ndarray],
    zoom_box: Optional[Box] = None,
    error_vmax: Optional[float] = None,
    cell_inches: float = 1.6,
    dpi: int = 100,
    title: Optional[str] = None,
) -> Dict[str, object]:
    """Write a Figs. 1-5 style comparison grid.

    Args:
      path: output PNG path.
      ground_truth: magnitude ground truth ``(H, W)``.
      reconstructions: ``reconstructions[method][task]`` magnitude images ``(H, W)``; methods are
        drawn top to bottom, tasks left to right in the order of ``masks``.
      masks: task name -> 0/1 mask ``(H, W)``; defines the columns.
      zoom_box: ``(row, col, height, width)`` of the zoomed-in detail; default a centred box.
      error_vmax: upper limit of the error colour scale; default the largest error shown, so that all
        error maps share one scale.
      cell_inches: width of one panel in inches (height follows the image aspect ratio).
      dpi: resolution of the PNG.
      title: optional figure title.

    Returns:
      ``{"path", "size": (width_px, height_px), "axes": {(row_kind, method, task): pixel bbox}}`` where
      ``row_kind`` is ``"recon"``, ``"zoom"``, ``"error"`` or ``"mask"`` (method None for masks, task
      ``"ground_truth"`` for the ground-truth panels). Useful for tests and annotations.
    """
    gt = np.abs(np.asarray(ground_truth, np.float64))
    if gt.ndim != 2:
        raise ValueError(f"Argument `ground_truth` must have shape (H, W), but received: {gt.shape}")
    tasks = list(masks)
    methods = list(reconstructions)
    if not tasks or not methods:
        raise ValueError("Arguments `masks` and `reconstructions` must be non-empty.")
    for m in methods:
        for t in tasks:
            if t not in reconstructions[m]:
                raise ValueError(f"Argument `reconstructions` lacks method {m!r}, task {t!r}.")
            if np.shape(reconstructions[m][t]) != gt.shape:
                raise ValueError(
                    f"Reconstruction {m!r}/{t!r} has shape {np.shape(reconstructions[m][t])}, expected {gt.shape}."
                )
        for t in tasks:
            if np.shape(masks[t]) != gt.shape:
                raise ValueError(f"Mask {t!r} has shape {np.shape(masks[t])}, expected {gt.shape}.")
    box = _check_box(zoom_box if zoom_box is not None else default_zoom_box(gt.shape), gt.shape)
    r, c, bh, bw = box
    h, w = gt.shape
    vmax_img = float(gt.max()) if gt.max() > 0 else 1.0
    errors = {(m, t): np.abs(np.abs(np.asarray(reconstructions[m][t], np.float64)) - gt) for m in methods for t in tasks}
    if error_vmax is None:
        error_vmax = max(float(e.max()) for e in errors.values())
    error_vmax = error_vmax if error_vmax > 0 else 1.0

    nrows = 3 * len(methods) + 1
    ncols = len(tasks) + 1
    cell_w = cell_inches
    cell_h = cell_inches * h / w
    margin_right = 0.7  # room for colour bars
    margin_left = 0.25  # room for the method names
    margin_top = 0.3 + (0.3 if title else 0.0)
    fig_w = margin_left + ncols * cell_w + margin_right
    fig_h = nrows * cell_h + margin_top
    fig = plt.figure(figsize=(fig_w, fig_h), dpi=dpi)
    if title:
        fig.suptitle(title, fontsize=9)
    axes_info: Dict[tuple, tuple] = {}

    def add_ax(row, col):
        left = (margin_left + col * cell_w) / fig_w
        bottom = 1.0 - (margin_top + (row + 1) * cell_h) / fig_h
        ax = fig.add_axes([left, bottom, cell_w / fig_w, cell_h / fig_h])
        ax.set_xticks([])
        ax.set_yticks([])
        return ax

    panels = []
    for i, m in enumerate(methods):
        for j, t in enumerate(tasks):
            rec = np.abs(np.asarray(reconstructions[m][t], np.float64))
            ax = add_ax(3 * i, j)
            ax.imshow(rec, cmap="gray", vmin=0.0, vmax=vmax_img, interpolation="nearest")
            ax.add_patch(Rectangle((c - 0.5, r - 0.5), bw, bh, fill=False, edgecolor="red", linewidth=1.0))
            if i == 0:
                ax.set_title(task_label(t), fontsize=8)
            if j == 0:
                ax.set_ylabel(m, fontsize=8)
            panels.append((("recon", m, t), ax))
            ax = add_ax(3 * i + 1, j)
            ax.imshow(rec[r : r + bh, c : c + bw], cmap="gray", vmin=0.0, vmax=vmax_img,
                      interpolation="nearest", aspect="auto")
            panels.append((("zoom", m, t), ax))
            ax = add_ax(3 * i + 2, j)
            im = ax.imshow(errors[(m, t)], cmap="jet", vmin=0.0, vmax=error_vmax, interpolation="nearest")
            panels.append((("error", m, t), ax))
            if j == len(tasks) - 1:
                cax = ax.inset_axes([1.04, 0.0, 0.06, 1.0])
                cb = fig.colorbar(im, cax=cax)
                cb.ax.tick_params(labelsize=6)
    for j, t in enumerate(tasks):
        ax = add_ax(nrows - 1, j)
        ax.imshow(np.asarray(masks[t], np.float64), cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
        if j == 0:
            ax.set_ylabel("mask", fontsize=8)
        panels.append((("mask", None, t), ax))
    # Ground truth at the top right, its zoom below it.
    ax = add_ax(0, ncols - 1)
    ax.imshow(gt, cmap="gray", vmin=0.0, vmax=vmax_img, interpolation="nearest")
    ax.add_patch(Rectangle((c - 0.5, r - 0.5), bw, bh, fill=False, edgecolor="red", linewidth=1.0))
    ax.set_title("ground truth", fontsize=8)
    panels.append((("recon", None, "ground_truth"), ax))
    ax = add_ax(1, ncols - 1)
    ax.imshow(gt[r : r + bh, c : c + bw], cmap="gray", vmin=0.0, vmax=vmax_img, interpolation="nearest", aspect="auto")
    panels.append((("zoom", None, "ground_truth"), ax))

    fig.canvas.draw()  # lays out every panel once; the extents below read that layout
    for key, ax in panels:
        axes_info[key] = _bbox_pixels(fig, ax, dpi)
    size = (int(round(fig_w * dpi)), int(round(fig_h * dpi)))
    _save(fig, path, dpi)
    return {"path": path, "size": size, "axes": axes_info, "zoom_box": box, "error_vmax": error_vmax}


def convergence_figure(
    path: str,
    phi: Mapping[str, Sequence[float]],
    psnr: Mapping[str, Sequence[float]],
    dpi: int = 100,
    title: Optional[str] = None,
) -> Dict[str, object]:
    """Write a Fig. 6 style plot: phi (left) and PSNR (right) versus phase number, one curve per task.

    Args:
      path: output PNG path.
      phi: task -> objective value after each phase (length T).
      psnr: task -> mean test PSNR after each phase (length T).
      dpi: resolution of the PNG.
      title: optional title.

    Returns:
      ``{"path", "size": (width_px, height_px)}``.
    """
    if not phi or not psnr:
        raise ValueError("Arguments `phi` and `psnr` must each hold at least one task curve.")
    fig_w, fig_h = 8.0, 3.2
    fig, (ax_phi, ax_psnr) = plt.subplots(1, 2, figsize=(fig_w, fig_h), dpi=dpi)
    for name, values, ax in [(t, phi[t], ax_phi) for t in phi] + [(t, psnr[t], ax_psnr) for t in psnr]:
        v = np.asarray(values, np.float64).ravel()
        if v.size == 0:
            raise ValueError(f"Curve for task {name!r} is empty.")
        ax.plot(np.arange(1, v.size + 1), v, marker="o", markersize=3, label=task_label(name))
    ax_phi.set_xlabel("phase")
    ax_phi.set_ylabel("objective φ")
    ax_psnr.set_xlabel("phase")
    ax_psnr.set_ylabel("PSNR (dB)")
    for ax in (ax_phi, ax_psnr):
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
        ax.xaxis.get_major_locator().set_params(integer=True)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    _save(fig, path, dpi)
    return {"path": path, "size": (int(round(fig_w * dpi)), int(round(fig_h * dpi)))}
