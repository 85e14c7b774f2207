"""experiments.reconstruct end to end: k-space file -> .npy/.png, NIfTI -> NIfTI; bad flags exit non-zero."""

import json
import os

import numpy as np
import pytest

from tests.test_experiments_evaluate import H, W, run_app


def _kspace_file(path, rng):
    from loa_meta.sampling import make_mask

    x = np.zeros((2, H, W), np.float32)
    x[:, 3:9, 4:11] = 1.0
    x[1, 5:7, 5:7] = 0.3
    mask = make_mask("radial", (H, W), 0.4, seed=0)
    k = np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(x, axes=(-2, -1)), norm="ortho"), axes=(-2, -1)) * mask
    np.savez(path, kspace=k.astype(np.complex64), mask=mask.astype(np.float32), target=x.astype(np.complex64))
    return x, mask, k


@pytest.mark.slow
def test_reconstruct_kspace_zero_filled_and_model(tmp_path, rng):
    x, mask, k = _kspace_file(str(tmp_path / "scan.npz"), rng)
    out = str(tmp_path / "out" / "zf.npy")
    res = run_app("experiments.reconstruct", f"--input={tmp_path / 'scan.npz'}", f"--output={out}")
    assert res.returncode == 0, res.stderr[-2000:]
    rec = np.load(out)
    expected = np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(k, axes=(-2, -1)), norm="ortho"), axes=(-2, -1))
    np.testing.assert_allclose(rec, expected, atol=1e-5)
    info = json.load(open(out + ".json"))
    assert info["method"] == "zero_filled" and info["mask_source"] == "file"

    # A tiny untrained LOANet from a .keras file, to PNG (one panel per slice, side by side).
    import tensorflow as tf

    from loa_meta.models import LOANet

    tf.keras.utils.set_random_seed(0)
    model_path = str(tmp_path / "m.keras")
    LOANet(num_phases=1, num_tasks=2, task_specs=["radial:0.2", "radial:0.4"]).save(model_path)
    png = str(tmp_path / "rec.png")
    # the task id comes from --mask's spec (radial 40 % is task 1 of the model)
    res = run_app("experiments.reconstruct", f"--input={tmp_path / 'scan.npz'}", f"--output={png}",
                  f"--model={model_path}", "--mask=radial:0.4")
    assert res.returncode == 0, res.stderr[-2000:]
    import matplotlib.image as mpimg

    img = mpimg.imread(png)
    assert img.shape[:2] == (H, 2 * W)
    assert json.load(open(png + ".json"))["resolved_task_id"] == 1
    res = run_app("experiments.reconstruct", f"--input={tmp_path / 'scan.npz'}", f"--output={tmp_path / 'x.png'}",
                  f"--model={model_path}", "--mask=radial:0.3")
    assert res.returncode != 0 and not os.path.exists(tmp_path / "x.png")
    assert "--mask" in res.stderr and "(0=radial:0.2, 1=radial:0.4)" in res.stderr
    # --num_iterations runs the LOA network past its trained phases: the .npy equals reconstruct(num_iterations=4)
    npy = str(tmp_path / "it4.npy")
    res = run_app("experiments.reconstruct", f"--input={tmp_path / 'scan.npz'}", f"--output={npy}",
                  f"--model={model_path}", "--mask=radial:0.4", "--num_iterations=4")
    assert res.returncode == 0, res.stderr[-2000:]
    loaded = tf.keras.models.load_model(model_path)
    kk = tf.constant(k.astype(np.complex64))
    mm = tf.constant(np.broadcast_to(mask, k.shape).astype(np.float32))
    want = loaded.reconstruct(kk, mm, tf.ones((2,), tf.int32), num_iterations=4).numpy()
    np.testing.assert_allclose(np.load(npy), want, atol=1e-5)
    assert np.abs(want - loaded.reconstruct(kk, mm, tf.ones((2,), tf.int32)).numpy()).max() > 1e-4
    assert json.load(open(npy + ".json"))["num_iterations"] == 4
    res = run_app("experiments.reconstruct", f"--input={tmp_path / 'scan.npz'}", f"--output={tmp_path / 'y.npy'}",
                  "--num_iterations=4")
    assert res.returncode != 0 and "--num_iterations" in res.stderr and not os.path.exists(tmp_path / "y.npy")
    for value, message in (("0", "positive integer"), ("many", "positive integer"),
                           ("recommended", "needs --model=pretrained:NAME")):
        res = run_app("experiments.reconstruct", f"--input={tmp_path / 'scan.npz'}", f"--output={tmp_path / 'z.npy'}",
                      f"--model={model_path}", "--mask=radial:0.4", f"--num_iterations={value}")
        assert res.returncode != 0 and "--num_iterations" in res.stderr and message in res.stderr, value
        assert not os.path.exists(tmp_path / "z.npy")


@pytest.mark.slow
def test_reconstruct_nifti_volume(tmp_path):
    import nibabel as nib

    from tests.data_fixtures import ras_volume, write_nifti

    vol = ras_volume(7, shape=(16, 18, 6))
    src = str(tmp_path / "vol.nii.gz")
    write_nifti(src, vol)
    out = str(tmp_path / "rec.nii.gz")
    res = run_app("experiments.reconstruct", f"--input={src}", "--mask=radial:0.5", "--crop=12,14",
                  "--num_slices=2", "--tv_lambda=0.001", "--tv_iters=10", f"--output={out}")
    assert res.returncode == 0, res.stderr[-2000:]
    rec = np.asarray(nib.load(out).dataobj)
    assert rec.shape == vol.shape
    assert np.count_nonzero(rec.any(axis=(0, 1))) == 2  # two slices written
    written = rec[..., rec.any(axis=(0, 1))]
    ref = vol[..., rec.any(axis=(0, 1))]
    inside = written != 0
    # the reconstruction approximates the source inside the crop (relative error well below 1)
    rel = np.linalg.norm(written[inside] - ref[inside]) / np.linalg.norm(ref[inside])
    assert rel < 0.3
    assert json.load(open(out + ".json"))["method"] == "tv"


def test_reconstruct_bad_flags(tmp_path, rng):
    _kspace_file(str(tmp_path / "scan.npz"), rng)
    res = run_app("experiments.reconstruct", f"--input={tmp_path / 'nope.npz'}", f"--output={tmp_path / 'o.npy'}")
    assert res.returncode != 0 and "--input: file does not exist" in res.stderr
    res = run_app("experiments.reconstruct", f"--input={tmp_path / 'scan.npz'}", f"--output={tmp_path / 'o.jpg'}")
    assert res.returncode != 0 and "--output" in res.stderr and ".npy or .png" in res.stderr
    res = run_app("experiments.reconstruct", f"--input={tmp_path / 'scan.npz'}", "--mask=radial:7",
                  f"--output={tmp_path / 'o.npy'}")
    assert res.returncode != 0 and "--mask" in res.stderr
    assert not os.path.exists(tmp_path / "o.npy")
