"""Figs. 1-6: valid PNGs of the expected size ratio; pixel-level properties of the panels."""

import os

import numpy as np
import pytest

from loa_meta.evaluation import figures

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _read_png(path):
    import matplotlib.image as mpimg

    with open(path, "rb") as f:
        assert f.read(8) == PNG_MAGIC
    return mpimg.imread(path)  # (rows, cols, 4) float in [0, 1]


def _phantom(h=24, w=28):
    x = np.zeros((h, w))
    x[5:19, 6:22] = 0.6
    x[9:14, 10:16] = 1.0
    return x


def _interior(img, bbox, pad=3):
    x0, y0, x1, y1 = bbox
    return img[y0 + pad : y1 - pad, x0 + pad : x1 - pad, :3]


def test_comparison_figure(tmp_path, rng):
    gt = _phantom()
    tasks = {"radial:0.1": rng.random(gt.shape) < 0.1, "radial:0.3": rng.random(gt.shape) < 0.3}
    noisy = {t: gt + 0.1 * rng.normal(size=gt.shape) for t in tasks}
    recons = {"perfect": {t: gt.copy() for t in tasks}, "noisy": noisy}
    path = str(tmp_path / "fig.png")
    info = figures.comparison_figure(path, gt, recons, tasks, zoom_box=(4, 5, 10, 12), dpi=60)
    assert os.listdir(tmp_path) == ["fig.png"]
    img = _read_png(path)
    # Size: 3 rows per method + mask row, one column per task + ground truth, plus margins.
    assert (img.shape[1], img.shape[0]) == info["size"]
    cell_w, cell_h = 1.6 * 60, 1.6 * 60 * gt.shape[0] / gt.shape[1]
    assert img.shape[0] == pytest.approx(7 * cell_h + 0.3 * 60, abs=2)
    assert img.shape[1] == pytest.approx(3 * cell_w + 0.95 * 60, abs=2)
    # The error map of a perfect reconstruction is uniform; of a noisy one it is not.
    for t in tasks:
        perfect = _interior(img, info["axes"][("error", "perfect", t)])
        assert perfect.size > 0
        assert np.ptp(perfect.reshape(-1, 3), axis=0).max() == 0.0
        noisy_px = _interior(img, info["axes"][("error", "noisy", t)])
        assert np.ptp(noisy_px.reshape(-1, 3), axis=0).max() > 0.2
    # The zoom box is drawn in red on the full reconstruction and on the ground truth.
    for key in [("recon", "perfect", "radial:0.1"), ("recon", None, "ground_truth")]:
        px = _interior(img, info["axes"][key], pad=0)
        red = (px[..., 0] > 0.8) & (px[..., 1] < 0.3) & (px[..., 2] < 0.3)
        assert red.sum() > 20
    # ... and not on the zoomed detail or the masks.
    px = _interior(img, info["axes"][("mask", None, "radial:0.1")], pad=0)
    assert not ((px[..., 0] > 0.8) & (px[..., 1] < 0.3)).any()
    # The mask panel shows the mask: white fraction close to the sampling ratio.
    mask_px = _interior(img, info["axes"][("mask", None, "radial:0.3")], pad=2)[..., 0]
    assert abs((mask_px > 0.5).mean() - tasks["radial:0.3"].mean()) < 0.1


def test_comparison_figure_errors(tmp_path):
    gt = _phantom()
    with pytest.raises(ValueError, match="zoom_box"):
        figures.comparison_figure(str(tmp_path / "f.png"), gt, {"m": {"t": gt}}, {"t": gt > 0}, zoom_box=(20, 0, 10, 5))
    with pytest.raises(ValueError, match="lacks"):
        figures.comparison_figure(str(tmp_path / "f.png"), gt, {"m": {}}, {"t": gt > 0})
    assert not os.listdir(tmp_path)


def test_convergence_figure(tmp_path):
    phi = {"radial:0.1": [5.0, 3.0, 2.0, 1.5], "radial:0.2": [4.0, 2.0, 1.0, 0.9]}
    psnr = {"radial:0.1": [20.0, 22.0, 23.0, 23.5], "radial:0.2": [22.0, 25.0, 26.0, 26.2]}
    path = str(tmp_path / "conv.png")
    info = figures.convergence_figure(path, phi, psnr, dpi=50)
    img = _read_png(path)
    assert (img.shape[1], img.shape[0]) == info["size"] == (400, 160)
    # two coloured curves are drawn (default colour cycle: blue C0 and orange C1)
    rgb = img[..., :3]
    blue = (np.abs(rgb - np.array([0.12, 0.47, 0.71])).max(-1) < 0.08).sum()
    orange = (np.abs(rgb - np.array([1.0, 0.5, 0.05])).max(-1) < 0.08).sum()
    assert blue > 50 and orange > 50
    with pytest.raises(ValueError, match="empty"):
        figures.convergence_figure(path, {"a": []}, {"a": [1.0]})
