"""data_prep.brats on a tiny synthetic BraTS tree: splits, crop, slices, normalisation, manifest,
idempotence and every bad-input case (library and command line)."""

import json
import os
import shutil
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest

from data_prep.brats import PrepConfig, prepare_brats
from data_prep.nifti_io import DataPrepError
from loa_meta.data.prepared import PreparedDataError, load_manifest, load_split, sha256_file
from tests.data_fixtures import CROP, NUM_SLICES, SHAPE, make_tree, ras_volume, write_nifti

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return make_tree(str(tmp_path_factory.mktemp("brats")))


def _cfg(tree, out, **kw):
    args = dict(
        brats_dir=tree["train"], output_dir=str(out), val_dir=tree["val"], modality="t1", grade="HGG",
        num_train=4, num_val=2, num_test=2, crop=CROP, num_slices=NUM_SLICES, seed=0,
    )
    args.update(kw)
    return PrepConfig(**args)


@pytest.fixture(scope="module")
def prepared(tree, tmp_path_factory):
    out = tmp_path_factory.mktemp("prep") / "out"
    summary = prepare_brats(_cfg(tree, out))
    return out, summary


def _expected(vol):
    x0, y0 = (SHAPE[0] - CROP[0]) // 2, (SHAPE[1] - CROP[1]) // 2
    c = SHAPE[2] // 2 - NUM_SLICES // 2
    idx = list(range(c, c + NUM_SLICES))
    s = np.moveaxis(vol[x0:x0 + CROP[0], y0:y0 + CROP[1], idx], 2, 0)
    return s / s.max(axis=(1, 2), keepdims=True), idx


def test_splits_counts_disjoint_and_sources(prepared):
    out, summary = prepared
    m = load_manifest(out)
    pats = {s: [p["patient"] for p in m["splits"][s]["patients"]] for s in ("train", "val", "test")}
    assert [len(pats[s]) for s in ("train", "val", "test")] == [4, 2, 2]
    assert summary["splits"]["train"] == {"patients": 4, "slices": 4 * NUM_SLICES}
    all_p = sum(pats.values(), [])
    assert len(set(all_p)) == len(all_p)
    # Paper: validation from the BraTS validation set, test (and train) from HGG training patients.
    assert all("VAL" in p for p in pats["val"])
    assert all("TCIA" in p for p in pats["train"] + pats["test"])
    for s in ("train", "val", "test"):
        arr = load_split(out, s)
        assert arr.dtype == np.float32 and arr.shape == (len(pats[s]) * NUM_SLICES, *CROP)


def test_crop_slices_normalisation_match_source_voxels(prepared, tree):
    out, _ = prepared
    m = load_manifest(out)
    arr = load_split(out, "train")
    np.testing.assert_allclose(arr.reshape(arr.shape[0], -1).max(axis=1), 1.0, rtol=0, atol=1e-6)
    for j, p in enumerate(m["splits"]["train"]["patients"]):
        exp, idx = _expected(tree["volumes"][p["patient"]])
        assert p["slice_indices"] == idx == [9, 10, 11]
        assert p["crop_box"] == [8, 8, 24, 28]
        np.testing.assert_allclose(arr[j * NUM_SLICES:(j + 1) * NUM_SLICES], exp, rtol=1e-6)
    # Both stored orientations (LPS and RAS) occur and give the same RAS slices.
    assert {p["stored_orientation"] for p in m["splits"]["train"]["patients"] + m["splits"]["val"]["patients"]} == {"LPS", "RAS"}


def test_manifest_provenance(prepared, tree):
    out, _ = prepared
    m = load_manifest(out)
    import loa_meta

    assert m["tool_version"] == loa_meta.__version__
    assert m["flags"]["num_train"] == 4 and m["flags"]["crop"] == list(CROP) and m["seed"] == 0
    for s in ("train", "val", "test"):
        e = m["splits"][s]
        assert e["sha256"] == sha256_file(os.path.join(out, e["file"]))
        assert len(e["slices"]) == e["shape"][0]
        for p in e["patients"]:
            assert p["sha256"] == sha256_file(p["file"]) and os.path.basename(p["file"]).startswith(p["patient"] + "_t1")
        arr = load_split(out, s)
        for i, sl in enumerate(e["slices"]):  # scale * image reproduces the source voxels
            vol = tree["volumes"][sl["patient"]]
            x0, y0 = (SHAPE[0] - CROP[0]) // 2, (SHAPE[1] - CROP[1]) // 2
            np.testing.assert_allclose(arr[i] * sl["scale"], vol[x0:x0 + 24, y0:y0 + 28, sl["slice_index"]], rtol=1e-5)


def test_rerun_is_byte_identical_and_seed_changes_split(prepared, tree, tmp_path):
    out, _ = prepared
    out2 = tmp_path / "again"
    prepare_brats(_cfg(tree, out2))
    for f in ("train.npy", "val.npy", "test.npy", "manifest.json"):
        assert sha256_file(os.path.join(out, f)) == sha256_file(os.path.join(out2, f))
    out3 = tmp_path / "seed1"
    prepare_brats(_cfg(tree, out3, seed=1))
    p0 = [p["patient"] for p in load_manifest(out)["splits"]["train"]["patients"]]
    p1 = [p["patient"] for p in load_manifest(out3)["splits"]["train"]["patients"]]
    assert p0 != p1


def test_no_val_dir_draws_validation_from_training_tree(tree, tmp_path):
    out = tmp_path / "o"
    prepare_brats(_cfg(tree, out, val_dir=None, num_train=4, num_val=2, num_test=2, grade="ALL"))
    m = load_manifest(out)
    pats = [p["patient"] for s in ("train", "val", "test") for p in m["splits"][s]["patients"]]
    assert len(set(pats)) == 8 and not any("VAL" in p for p in pats)
    assert m["validation_source"] == "brats_dir"


def test_refuses_non_empty_output_unless_overwrite(prepared, tree):
    out, _ = prepared
    before = sha256_file(os.path.join(out, "manifest.json"))
    with pytest.raises(DataPrepError, match="not empty.*--overwrite"):
        prepare_brats(_cfg(tree, out))
    prepare_brats(_cfg(tree, out, overwrite=True))
    assert sha256_file(os.path.join(out, "manifest.json")) == before
    assert not [d for d in os.listdir(os.path.dirname(out)) if d.startswith(".")]


def test_too_few_patients_message(tree, tmp_path):
    with pytest.raises(DataPrepError, match=r"found 8 patients in the training tree, but 9 were requested"):
        prepare_brats(_cfg(tree, tmp_path / "o", num_train=8, num_test=1))
    with pytest.raises(DataPrepError, match=r"found 3 patients in --val_dir, but num_val=4"):
        prepare_brats(_cfg(tree, tmp_path / "o", num_val=4))
    assert not os.path.exists(tmp_path / "o")


# ---- bad input -------------------------------------------------------------------------------

def _copy_tree(tree, tmp_path):
    root = tmp_path / "tree"
    shutil.copytree(os.path.dirname(tree["train"]), root)
    return {"train": str(root / "train"), "val": str(root / "val")}


def _first_train_patient(tree, seed=0):
    """The first candidate of the permutation, i.e. the patient that will be read first."""
    pats = sorted(os.listdir(os.path.join(tree["train"], "HGG")))
    return pats[np.random.default_rng(seed).permutation(len(pats))[0]]


def _t1(t, pid):
    return os.path.join(t["train"], "HGG", pid, f"{pid}_t1.nii.gz")


def _truncate(path):
    with open(path, "rb") as f:
        b = f.read()
    with open(path, "wb") as f:
        f.write(b[: len(b) // 2])


def _garbage(path):
    with open(path, "wb") as f:
        f.write(b"this is not a nifti file" * 10)


def _nan(path):
    v = ras_volume(5)
    v[3, 4, 5] = np.nan
    write_nifti(path, v)


def _small(path):
    write_nifti(path, ras_volume(5, shape=(20, 44, 20)))


def _two_d(path):
    nib.save(nib.Nifti1Image(np.ones((40, 44), np.float32), np.eye(4)), path)


def _four_d(path):
    nib.save(nib.Nifti1Image(np.ones((40, 44, 20, 2), np.float32), np.eye(4)), path)


def _empty_slice(path):
    v = ras_volume(5)
    v[:, :, SHAPE[2] // 2] = 0.0
    write_nifti(path, v)


def _missing(path):
    os.remove(path)


BAD = {
    "truncated": (_truncate, r"Cannot read NIfTI file"),
    "garbage": (_garbage, r"Cannot read NIfTI file"),
    "nan": (_nan, r"1 NaN/Inf voxels"),
    "small": (_small, r"smaller than the crop \(24, 28\)"),
    "2d": (_two_d, r"must hold a 3D volume"),
    "4d": (_four_d, r"must hold a 3D volume"),
    "empty": (_empty_slice, r"slice\(s\) \[10\] are empty"),
    "missing": (_missing, r"missing modality file"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_patient_fail_and_skip(case, tree, tmp_path):
    t = _copy_tree(tree, tmp_path)
    pid = _first_train_patient(t)
    path = _t1(t, pid)
    BAD[case][0](path)
    out = tmp_path / "out"
    with pytest.raises(DataPrepError, match=BAD[case][1]) as err:
        prepare_brats(_cfg(t, out, on_error="fail"))
    assert path in str(err.value) and pid in str(err.value)
    assert not out.exists() and not [d for d in os.listdir(tmp_path) if d.startswith(".")]
    summary = prepare_brats(_cfg(t, out, on_error="skip"))
    assert summary["skipped"] == 1 and summary["splits"]["train"]["patients"] == 4
    m = load_manifest(out)
    assert m["skipped"][0]["file"] == path and pid not in [p["patient"] for p in m["splits"]["train"]["patients"]]


def test_singleton_4d_is_squeezed(tree, tmp_path):
    t = _copy_tree(tree, tmp_path)
    pid = _first_train_patient(t)
    vol = ras_volume(77)
    nib.save(nib.Nifti1Image(vol[..., None], np.eye(4)), _t1(t, pid))
    prepare_brats(_cfg(t, tmp_path / "out"))
    m = load_manifest(tmp_path / "out")
    j = [p["patient"] for p in m["splits"]["train"]["patients"]].index(pid)
    exp, _ = _expected(vol)
    np.testing.assert_allclose(load_split(tmp_path / "out", "train")[j * 3:(j + 1) * 3], exp, rtol=1e-6)


def test_skip_exhausting_candidates_reports_counts(tree, tmp_path):
    t = _copy_tree(tree, tmp_path)
    for pid in sorted(os.listdir(os.path.join(t["train"], "HGG")))[:3]:
        _garbage(_t1(t, pid))
    with pytest.raises(DataPrepError, match=r"found only 0 usable patients for split 'test', but 2 were requested \(3 patients skipped"):
        prepare_brats(_cfg(t, tmp_path / "out", num_train=5, num_test=2, on_error="skip"))
    assert not (tmp_path / "out").exists()


def test_load_split_detects_corruption(prepared, tmp_path):
    out, _ = prepared
    bad = tmp_path / "bad"
    shutil.copytree(out, bad)
    with open(bad / "val.npy", "r+b") as f:
        f.seek(-8, 2)
        f.write(b"\x00\x00\xc0\x7f\x00\x00\xc0\x7f")  # two float32 NaNs
    with pytest.raises(PreparedDataError, match=r"Checksum mismatch for .*val.npy"):
        load_split(bad, "val")
    with pytest.raises(PreparedDataError, match=r"val.npy contains NaN"):
        load_split(bad, "val", verify_checksum=False)
    os.remove(bad / "test.npy")
    with pytest.raises(PreparedDataError, match=r"not found: .*test.npy"):
        load_split(bad, "test")
    with pytest.raises(PreparedDataError, match=r"`split` must be one of"):
        load_split(bad, "training")
    with pytest.raises(PreparedDataError, match=r"Manifest not found"):
        load_split(tmp_path, "train")


# ---- command line ----------------------------------------------------------------------------

def _run(args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=REPO)
    return subprocess.run([sys.executable, "-m", "data_prep.brats", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)


def test_cli_success_and_failures(tree, tmp_path):
    t = _copy_tree(tree, tmp_path)
    out = tmp_path / "cli"
    common = ["--brats_dir", t["train"], "--val_dir", t["val"], "--num_train", "3", "--num_val", "1",
              "--num_test", "1", "--crop", "24,28", "--num_slices", "3"]
    r = _run(common + ["--output_dir", str(out)])
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["splits"]["train"]["slices"] == 9
    assert load_split(out, "train").shape == (9, 24, 28)
    # Corrupt file with --on_error=fail: non-zero exit, message names the file, no output dir (the CLI
    # path of a bad input; every kind of bad file is checked in process by test_bad_patient_fail_and_skip).
    pid = _first_train_patient(t)
    _truncate(_t1(t, pid))
    out2 = tmp_path / "cli2"
    r = _run(common + ["--output_dir", str(out2), "--on_error", "fail"])
    assert r.returncode != 0 and _t1(t, pid) in r.stderr
    assert not out2.exists() and not [d for d in os.listdir(tmp_path) if d.startswith(".cli2")]
    # Too few patients: message with found vs requested.
    r = _run(common[:4] + ["--num_train", "30", "--output_dir", str(out2)])
    assert r.returncode != 0 and "found 8 patients in the training tree, but 36 were requested (num_train=30 + num_test=6)" in r.stderr
    assert not out2.exists()
    # Bad flag value.
    r = _run(common + ["--output_dir", str(out2), "--crop", "24x28"])
    assert r.returncode != 0 and "--crop" in r.stderr
