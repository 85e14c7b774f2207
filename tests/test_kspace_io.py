"""load_kspace: .npz/.mat round trips with the simulated k-space, centring, validation errors."""

import numpy as np
import pytest
import scipy.io

from loa_meta.data.kspace_io import KSpaceFileError, load_kspace
from loa_meta.data.pipeline import simulate_kspace
from loa_meta.physics import ifft2c


@pytest.fixture
def sample(rng):
    x = rng.random((2, 12, 14)).astype(np.float32)
    m = rng.random((12, 14)) < 0.5
    y = simulate_kspace(x, m).numpy()
    return x, m, y


@pytest.mark.parametrize("ext", ["npz", "mat"])
def test_round_trip_centred(ext, sample, tmp_path):
    x, m, y = sample
    p = str(tmp_path / f"k.{ext}")
    if ext == "npz":
        np.savez(p, kspace=y, mask=m.astype(np.uint8), target=x)
    else:
        scipy.io.savemat(p, {"kspace": y, "mask": m.astype(np.double), "target": x})
    d = load_kspace(p)
    assert d.kspace.dtype == np.complex64 and d.kspace.shape == (2, 12, 14)
    np.testing.assert_array_equal(d.kspace, y)
    np.testing.assert_array_equal(d.mask, m.astype(np.float32))
    np.testing.assert_allclose(d.target.real, x)
    # Fully sampled part is consistent: the zero-filled image of the loaded data equals A^H y.
    np.testing.assert_allclose(ifft2c(d.kspace).numpy(), ifft2c(y).numpy(), atol=1e-6)


def test_uncentred_input_is_shifted(sample, tmp_path):
    x, m, y = sample
    k_unc = np.fft.ifftshift(y, axes=(-2, -1))  # DC at (0, 0)
    np.testing.assert_allclose(k_unc[0, 0, 0], y[0, 6, 7])
    p = str(tmp_path / "u.npz")
    np.savez(p, kspace=k_unc, mask=np.fft.ifftshift(m))
    d = load_kspace(p, centred=False)
    np.testing.assert_array_equal(d.kspace, y)
    np.testing.assert_array_equal(d.mask, m)


def test_samples_outside_mask_are_zeroed(sample, tmp_path):
    x, m, y = sample
    full = simulate_kspace(x, np.ones_like(m)).numpy()
    p = str(tmp_path / "f.npz")
    np.savez(p, kspace=full, mask=m)
    np.testing.assert_allclose(load_kspace(p).kspace, y, atol=1e-6)


def _save(tmp_path, **arrays):
    p = str(tmp_path / "bad.npz")
    np.savez(p, **arrays)
    return p


def test_errors_name_file_and_problem(sample, tmp_path):
    x, m, y = sample
    cases = [
        (dict(kspace=y.real, mask=m), r"'kspace' must be complex"),
        (dict(kspace=y, mask=m * 2.0), r"'mask' must be binary"),
        (dict(kspace=y, mask=m[:, :13]), r"'mask' has shape \(12, 13\), expected \(12, 14\)"),
        (dict(kspace=np.where(m, np.nan, y), mask=m), r"contains NaN"),
        (dict(kspace=y), r"has no array 'mask'"),
        (dict(kspace=y, mask=m, target=x[:, :5]), r"'target' has shape"),
        (dict(kspace=y[0, 0], mask=m[0]), r"must have shape \(H, W\) or \(N, H, W\)"),
    ]
    for arrays, msg in cases:
        p = _save(tmp_path, **arrays)
        with pytest.raises(KSpaceFileError, match=msg) as e:
            load_kspace(p)
        assert p in str(e.value)
    with pytest.raises(KSpaceFileError, match=r"not found: .*nope.npz"):
        load_kspace(str(tmp_path / "nope.npz"))
    bad = tmp_path / "trunc.npz"
    np.savez(bad, kspace=y, mask=m)
    bad.write_bytes(bad.read_bytes()[:100])
    with pytest.raises(KSpaceFileError, match=r"Cannot read k-space file .*trunc.npz"):
        load_kspace(str(bad))
    txt = tmp_path / "k.txt"
    txt.write_text("x")
    with pytest.raises(KSpaceFileError, match=r"must end in .npz or .mat"):
        load_kspace(str(txt))
