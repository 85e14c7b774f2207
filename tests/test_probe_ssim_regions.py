"""benchmarks/probe_ssim_regions.py: SSIM split into air and tissue windows adds up to the SSIM."""

import numpy as np
import pytest

from benchmarks.probe_ssim_regions import region_scores, window_max
from loa_meta.metrics import psnr, ssim


def _phantom(rng, n=2, h=32, w=36):
    ref = np.zeros((n, h, w))
    ref[:, 10:22, 11:25] = 0.6 + 0.4 * rng.random((n, 12, 14))  # "tissue" in a zero background ("air")
    return ref


def test_window_max_matches_a_loop(rng):
    a = rng.random((2, 9, 11))
    got = window_max(a, 3)
    assert got.shape == (2, 7, 9)
    for i in range(7):
        for j in range(9):
            np.testing.assert_array_equal(got[:, i, j], a[:, i : i + 3, j : j + 3].max(axis=(1, 2)))


def test_regions_add_up_to_ssim_and_noise_in_air_is_charged_to_air(rng):
    ref = _phantom(rng)
    x = ref + 0.02 * rng.standard_normal(ref.shape)
    s = region_scores(x, ref, air=0.05, win=7)
    assert s["psnr"] == pytest.approx(float(np.mean(psnr(x, ref))))
    assert s["ssim"] == pytest.approx(float(np.mean(ssim(x, ref))), abs=1e-12)
    share = s["share_air"]
    assert 0.0 < share < 1.0
    assert share * s["ssim_air"] + (1 - share) * s["ssim_tissue"] == pytest.approx(s["ssim"], abs=1e-12)
    # Zeroing the air pixels (ground truth 0 there) raises SSIM only in windows that contain air; the
    # windows of the air region reach 1 and the RMS left in air is 0.
    clean = np.where(ref > 0, x, 0.0)
    c = region_scores(clean, ref, air=0.05, win=7)
    assert c["ssim_air"] == pytest.approx(1.0) and s["ssim_air"] < 0.5
    assert c["rms_air_pct"] == 0.0 and s["rms_air_pct"] == pytest.approx(2.0, rel=0.15)  # noise 0.02 of peak ~1
    assert c["ssim"] > s["ssim"]
