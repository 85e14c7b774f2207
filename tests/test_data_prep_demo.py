"""data_prep.demo: BraTS-grid NIfTI volumes from the bundled MNI152 template, T1w/T2w contrast."""

import os
import sys

import nibabel as nib
import numpy as np
import pytest

pytest.importorskip("nilearn")

from data_prep import demo  # noqa: E402
from data_prep.brats import PrepConfig, prepare_brats  # noqa: E402
from data_prep.nifti_io import DataPrepError  # noqa: E402
from loa_meta.data.prepared import load_split  # noqa: E402


def test_spin_echo_model_orders_tissues():
    s = {t: demo.spin_echo(v) for t, v in demo.TISSUES.items()}
    # T2-weighted spin echo (TR 4000, TE 100): CSF bright, WM darkest.
    assert s["csf"] > s["gm"] > s["wm"] > 0
    np.testing.assert_allclose(s["wm"], 0.70 * (1 - np.exp(-4000 / 884)) * np.exp(-100 / 72), rtol=1e-12)


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "tree"
    summary = demo.build_demo_tree(str(out), num_subjects=2, seed=3, workers=1)
    return out, summary


@pytest.mark.xdist_group("demo_tree")  # the three share one demo tree (module fixture)
@pytest.mark.slow
def test_demo_volumes_grid_affine_and_contrast(tree):
    out, summary = tree
    assert summary["subjects"] == ["Demo_MNI_000", "Demo_MNI_001"]
    vols = {}
    for pid in summary["subjects"]:
        for mod in ("t1", "t2", "seg"):
            img = nib.load(os.path.join(out, "HGG", pid, f"{pid}_{mod}.nii.gz"))
            assert img.shape == (240, 240, 155)
            np.testing.assert_allclose(img.affine, demo.BRATS_AFFINE)
            assert nib.aff2axcodes(img.affine) == ("L", "P", "S")
            vols[pid, mod] = np.asarray(img.dataobj)
        seg, t1, t2 = vols[pid, "seg"], vols[pid, "t1"].astype(float), vols[pid, "t2"].astype(float)
        gm, wm, csf = seg == 2, seg == 3, seg == 1
        assert gm.sum() > 1e5 and wm.sum() > 1e5
        # Inverted grey/white contrast between the weightings.
        assert t1[wm].mean() > 1.1 * t1[gm].mean()
        assert t2[wm].mean() < 0.9 * t2[gm].mean() and t2[csf].mean() > t2[gm].mean()
        assert np.all(t1[seg == 0] == 0)  # skull-stripped like BraTS
    # Subjects differ (deformation, bias, noise) but share anatomy.
    a, b = vols["Demo_MNI_000", "seg"] > 0, vols["Demo_MNI_001", "seg"] > 0
    dice = 2 * (a & b).sum() / (a.sum() + b.sum())
    assert 0.8 < dice < 0.995


@pytest.mark.xdist_group("demo_tree")  # the three share one demo tree (module fixture)
@pytest.mark.slow
def test_demo_tree_prepares_like_brats(tree, tmp_path):
    out, _ = tree
    prep = tmp_path / "prep"
    prepare_brats(PrepConfig(brats_dir=str(out), output_dir=str(prep), num_train=1, num_val=1, num_test=0))
    x = load_split(prep, "train")
    assert x.shape == (10, 160, 180)
    np.testing.assert_allclose(x.reshape(10, -1).max(1), 1.0, atol=1e-6)
    assert 0.2 < (x > 0).mean() < 0.95  # brain inside the crop, background outside


def test_missing_nilearn_message(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "nilearn", None)
    monkeypatch.setattr(demo, "_TEMPLATE_CACHE", {})
    with pytest.raises(DataPrepError, match=r"pip install 'loa-meta\[demo\]'"):
        demo.build_demo_tree(str(tmp_path / "x"), num_subjects=1)
    assert not (tmp_path / "x").exists()


@pytest.mark.xdist_group("demo_tree")  # the three share one demo tree (module fixture)
@pytest.mark.slow
def test_demo_is_seeded_and_independent_of_workers(tree, tmp_path):
    out, _ = tree
    other = tmp_path / "again"
    demo.build_demo_tree(str(other), num_subjects=2, seed=3, workers=2)
    for pid in ("Demo_MNI_000", "Demo_MNI_001"):
        for mod in ("t1", "t2", "seg"):
            a = np.asarray(nib.load(os.path.join(out, "HGG", pid, f"{pid}_{mod}.nii.gz")).dataobj)
            b = np.asarray(nib.load(os.path.join(other, "HGG", pid, f"{pid}_{mod}.nii.gz")).dataobj)
            np.testing.assert_array_equal(a, b)
    # A tree starting at subject 1 holds the same subject 1 (held-out sets of new subjects, first_subject).
    part = tmp_path / "from1"
    summary = demo.build_demo_tree(str(part), num_subjects=1, seed=3, workers=1, first_subject=1)
    assert summary["subjects"] == ["Demo_MNI_001"]
    assert sorted(os.listdir(part / "HGG")) == ["Demo_MNI_001"]
    for mod in ("t1", "t2", "seg"):
        a = np.asarray(nib.load(os.path.join(out, "HGG", "Demo_MNI_001", f"Demo_MNI_001_{mod}.nii.gz")).dataobj)
        b = np.asarray(nib.load(os.path.join(part, "HGG", "Demo_MNI_001", f"Demo_MNI_001_{mod}.nii.gz")).dataobj)
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="first_subject"):
        demo.build_demo_tree(str(tmp_path / "bad"), num_subjects=1, first_subject=-1)
