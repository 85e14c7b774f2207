"""Mistakes a new user makes get a message naming the real problem, a non-zero exit and no traceback.

Each case runs the app as a subprocess (real flag parsing); see issue 12, item 6.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_app(module, *args, timeout=300):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


def assert_clean_error(proc, *fragments):
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr and "\x1b[" not in proc.stderr, proc.stderr[-3000:]
    for f in fragments:
        assert f in proc.stderr, (f, proc.stderr[-3000:])


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("usage")
    rng = np.random.default_rng(0)
    k = (rng.standard_normal((1, 12, 14)) + 1j * rng.standard_normal((1, 12, 14))).astype(np.complex64)
    np.savez(str(d / "scan.npz"), kspace=k, mask=np.ones((12, 14), np.float32))
    truncated = d / "truncated.keras"
    truncated.write_bytes(b"PK\x03\x04" + bytes(40))  # the first bytes of a zip archive, then nothing
    (d / "model_dir.keras").mkdir()
    from loa_meta.sampling import make_mask, save_mask

    save_mask(str(d / "mask64.npy"), make_mask("radial", (64, 64), 0.3, seed=0))
    from tests.data_fixtures import ras_volume, write_nifti

    write_nifti(str(d / "vol.nii.gz"), ras_volume(7, shape=(16, 18, 4)))
    return d


def test_model_that_is_a_directory_or_truncated(files):
    proc = run_app("experiments.reconstruct", f"--input={files / 'scan.npz'}", f"--output={files / 'o.npy'}",
                   f"--model={files / 'model_dir.keras'}")
    assert_clean_error(proc, f"--model: {files / 'model_dir.keras'} is a directory, expected a file")
    proc = run_app("experiments.reconstruct", f"--input={files / 'scan.npz'}", f"--output={files / 'o.npy'}",
                   f"--model={files / 'truncated.keras'}")
    assert_clean_error(proc, f"--model: {files / 'truncated.keras'} is not a valid .keras file",
                       "truncated, corrupt or of another format")
    assert not os.path.exists(files / "o.npy")


@pytest.mark.slow
def test_task_id_out_of_range_lists_the_valid_ids(files):
    import tensorflow as tf

    from loa_meta.models import LOANet

    tf.keras.utils.set_random_seed(0)
    path = str(files / "m.keras")
    LOANet(num_phases=1, num_tasks=2).save(path)
    proc = run_app("experiments.reconstruct", f"--input={files / 'scan.npz'}", f"--output={files / 'o.npy'}",
                   f"--model={path}", "--task_id=9")
    assert_clean_error(proc, f"--task_id: 9 is out of range: the model {path} has 2 task(s), ids 0..1")
    assert len(proc.stderr.splitlines()) == 2
    assert not os.path.exists(files / "o.npy")


def test_mask_file_of_another_shape_and_crop_with_one_number(files):
    proc = run_app("experiments.reconstruct", f"--input={files / 'vol.nii.gz'}", f"--mask={files / 'mask64.npy'}",
                   f"--output={files / 'o.nii.gz'}")
    assert_clean_error(proc, "--mask: ", "mask shape (64, 64) does not match the expected shape (16, 18)",
                       "the images are (16, 18) (pass --crop=H,W to crop the volume to the mask's shape)")
    assert "not an existing file" not in proc.stderr
    proc = run_app("experiments.reconstruct", f"--input={files / 'vol.nii.gz'}", "--mask=radial:0.3",
                   "--crop=64", f"--output={files / 'o.nii.gz'}")
    assert_clean_error(proc, "--crop: expected 2 integers (H,W), but received 1")
    assert "task" not in proc.stderr
    proc = run_app("experiments.reconstruct", f"--input={files / 'vol.nii.gz'}", "--mask=mask_not_there.npy",
                   f"--output={files / 'o.nii.gz'}")
    assert_clean_error(proc, "--mask: ", "(and no such mask file exists)")


@pytest.mark.parametrize("module,extra", [("data_prep.demo", []), ("data_prep.brats", ["--brats_dir=."])])
def test_data_prep_output_location_not_writable(files, module, extra):
    a_file = files / "a_file"
    a_file.write_text("x")
    proc = run_app(module, *extra, f"--output_dir={a_file / 'out'}")
    assert_clean_error(proc, f"{module}: error: --output_dir {a_file / 'out'} cannot be created: {a_file} is a "
                             "file, not a directory")
    assert len(proc.stderr.splitlines()) == 1
    # a location where even root cannot create a directory
    proc = run_app(module, *extra, "--output_dir=/proc/loa_meta_test/out")
    assert_clean_error(proc, "--output_dir /proc/loa_meta_test/out cannot be written: creating a directory in "
                             "/proc/loa_meta_test failed")
    if os.geteuid() != 0:  # permissions bind only non-root users
        ro = files / "read_only"
        ro.mkdir(exist_ok=True)
        os.chmod(ro, 0o500)
        try:
            proc = run_app(module, *extra, f"--output_dir={ro / 'out'}")
            assert_clean_error(proc, f"--output_dir {ro / 'out'} cannot be written", "Permission denied")
        finally:
            os.chmod(ro, 0o700)
