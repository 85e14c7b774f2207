"""Whole-volume support: slices as prepared, write back into the source grid, reconstruct_volume."""

import os

import nibabel as nib
import numpy as np
import pytest
import tensorflow as tf

from loa_meta.data.volume import VolumeError, load_volume_slices, reconstruct_volume, write_volume
from loa_meta.physics import SingleCoilOperator
from tests.data_fixtures import CROP, SHAPE, ras_volume, write_nifti


@pytest.fixture(params=["lps", "ras"])
def source(request, tmp_path):
    vol = ras_volume(11)
    p = str(tmp_path / f"src_{request.param}.nii.gz")
    write_nifti(p, vol, lps=request.param == "lps")
    return p, vol


def test_slices_match_prepared_convention(source):
    p, vol = source
    vs = load_volume_slices(p, crop=CROP, num_slices=3)
    assert vs.slice_indices == [9, 10, 11] and vs.crop_box == (8, 8, 24, 28) and vs.ras_shape == SHAPE
    raw = np.moveaxis(vol[8:32, 8:36, 9:12], 2, 0)
    np.testing.assert_allclose(vs.images * vs.scales[:, None, None], raw, rtol=1e-6)
    np.testing.assert_allclose(vs.images.max(axis=(1, 2)), 1.0)
    full = load_volume_slices(p)
    assert full.images.shape == (SHAPE[2], SHAPE[0], SHAPE[1])


def test_write_volume_round_trip_full_and_cropped(source, tmp_path):
    p, vol = source
    ref = nib.load(p)
    full = load_volume_slices(p)
    out = str(tmp_path / "sub" / "rt.nii.gz")
    write_volume(full.images, p, out, full.slice_indices, full.crop_box, full.scales)
    img = nib.load(out)
    np.testing.assert_allclose(img.affine, ref.affine)
    assert img.get_data_dtype() == np.float32
    np.testing.assert_allclose(np.asarray(img.dataobj), np.asarray(ref.dataobj), rtol=1e-6)
    # Crop and a subset of slices go back to exactly their voxels; the rest is fill_value.
    vs = load_volume_slices(p, crop=CROP, num_slices=3)
    out2 = str(tmp_path / "crop.nii")
    write_volume(vs.images, p, out2, vs.slice_indices, vs.crop_box, vs.scales, fill_value=-1.0)
    ras = np.asarray(nib.as_closest_canonical(nib.load(out2)).dataobj)
    np.testing.assert_allclose(ras[8:32, 8:36, 9:12], vol[8:32, 8:36, 9:12], rtol=1e-6)
    inside = np.zeros(SHAPE, bool)
    inside[8:32, 8:36, 9:12] = True
    assert np.all(ras[~inside] == -1.0)
    assert sorted(os.listdir(tmp_path / "sub")) == ["rt.nii.gz"]  # no temp file left
    with pytest.raises(ValueError, match=r"`recon_slices` has shape"):
        write_volume(vs.images[:2], p, out2, vs.slice_indices, vs.crop_box)


def test_reconstruct_volume_with_zero_filling_model(source, tmp_path, rng):
    p, vol = source
    zero_filled = lambda b: SingleCoilOperator(b["mask"]).adjoint(b["kspace"])  # noqa: E731
    out = str(tmp_path / "rec.nii.gz")
    # Full sampling: the zero-filled model is exact, so the volume is reproduced in the crop.
    res = reconstruct_volume(p, np.ones(CROP), zero_filled, out, batch_size=2, crop=CROP, num_slices=5)
    ras = np.asarray(nib.as_closest_canonical(nib.load(out)).dataobj)
    np.testing.assert_allclose(ras[8:32, 8:36, 8:13], vol[8:32, 8:36, 8:13], rtol=1e-4)
    assert res.images.shape == (5, *CROP)
    # Undersampling: the written slice is |A^H A x| times the slice scale.
    m = rng.random(CROP) < 0.3
    reconstruct_volume(p, m, zero_filled, out, batch_size=4, crop=CROP, num_slices=1)
    ras = np.asarray(nib.as_closest_canonical(nib.load(out)).dataobj)
    x = vol[8:32, 8:36, 10]
    s = x.max()
    op = SingleCoilOperator(m.astype(np.float32))
    expected = np.abs(op.adjoint(op.forward(tf.constant((x / s).astype(np.complex64)[None]))).numpy()[0]) * s
    np.testing.assert_allclose(ras[8:32, 8:36, 10], expected, rtol=1e-4, atol=1e-3)
    assert np.all(ras[:, :, 9] == 0)
    with pytest.raises(ValueError, match=r"`mask` has shape \(3, 3\)"):
        reconstruct_volume(p, np.ones((3, 3)), zero_filled, out, crop=CROP)


def test_bad_volumes(tmp_path):
    with pytest.raises(VolumeError, match=r"not found: .*none.nii.gz"):
        load_volume_slices(str(tmp_path / "none.nii.gz"))
    p = str(tmp_path / "small.nii.gz")
    write_nifti(p, ras_volume(1, shape=(10, 10, 4)))
    with pytest.raises(VolumeError, match=r"small.nii.gz: in-plane shape \(10, 10\) is smaller than the crop"):
        load_volume_slices(p, crop=CROP)
    with pytest.raises(VolumeError, match=r"small.nii.gz has 4 slices, fewer than the 5"):
        load_volume_slices(p, num_slices=5)
