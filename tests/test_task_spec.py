"""Task specs: one reconstruction task = one sampling mask (paper Section 5.2)."""

import json
import re

import numpy as np
import pytest

from loa_meta.sampling import TaskSpec, build_masks, make_mask, parse_task_spec, parse_task_specs, save_mask


@pytest.mark.parametrize(
    "text, kind, ratio, options, canonical, name",
    [
        ("radial:0.2", "radial", 0.2, {}, "radial:0.2", "radial_0.20"),
        ("radial:0.20", "radial", 0.2, {}, "radial:0.2", "radial_0.20"),
        (" Radial:0.15:golden=1 ", "radial", 0.15, {"golden": 1}, "radial:0.15:golden=1", "radial_0.15_golden-1"),
        ("cartesian:0.3:center_fraction=0.04", "cartesian", 0.3, {"center_fraction": 0.04},
         "cartesian:0.3:center_fraction=0.04", "cartesian_0.30_center_fraction-0.04"),
        ("poisson:0.25:slope=1.5:calib=10", "poisson", 0.25, {"calib": 10, "slope": 1.5},
         "poisson:0.25:calib=10:slope=1.5", "poisson_0.25_calib-10_slope-1.5"),
        ("gaussian:0.125", "gaussian", 0.125, {}, "gaussian:0.125", "gaussian_0.125"),
        ("equispaced:1", "equispaced", 1.0, {}, "equispaced:1", "equispaced_1.00"),
    ],
)
def test_parse_round_trip_and_name(text, kind, ratio, options, canonical, name):
    spec = parse_task_spec(text)
    assert (spec.kind, spec.ratio, spec.options, spec.path) == (kind, ratio, options, None)
    assert str(spec) == canonical
    assert parse_task_spec(str(spec)) == spec
    assert spec.name == name and re.fullmatch(r"[A-Za-z0-9._-]+", spec.name)
    assert TaskSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    assert len({spec, parse_task_spec(canonical)}) == 1


def test_file_spec_with_colons_and_options(tmp_path):
    spec = parse_task_spec("file:C:/masks/mask_10.mat:key=mask_10:centred=0")
    assert spec.kind == "file" and spec.ratio is None
    assert spec.path == "C:/masks/mask_10.mat"
    assert spec.options == {"key": "mask_10", "centred": False}
    assert parse_task_spec(str(spec)) == spec
    assert spec.name == "file_mask_10_centred-0_key-mask_10"


def test_build_mask_matches_make_mask():
    spec = parse_task_spec("cartesian:0.3:center_fraction=0.04")
    np.testing.assert_array_equal(
        spec.build_mask((40, 50), seed=5), make_mask("cartesian", (40, 50), 0.3, seed=5, center_fraction=0.04)
    )
    spec = parse_task_spec("radial:0.2:golden=true")
    np.testing.assert_array_equal(spec.build_mask((40, 50)), make_mask("radial", (40, 50), 0.2, golden=True))


def test_file_spec_builds_checks_shape_and_resolves_relative_paths(tmp_path):
    m = make_mask("radial", (40, 50), 0.1)
    save_mask(tmp_path / "mask_10.mat", m, centred=False)
    spec = parse_task_spec("file:mask_10.mat")
    np.testing.assert_array_equal(spec.build_mask((40, 50), base_dir=str(tmp_path)), m)
    abs_spec = parse_task_spec(f"file:{tmp_path / 'mask_10.mat'}")
    np.testing.assert_array_equal(abs_spec.build_mask((40, 50)), m)
    with pytest.raises(ValueError) as e:
        abs_spec.build_mask((40, 52))
    assert str(abs_spec) in str(e.value) and "(40, 52)" in str(e.value)
    missing = parse_task_spec(f"file:{tmp_path / 'nope.mat'}")
    with pytest.raises(ValueError) as e:
        missing.build_mask((40, 50))
    assert str(missing) in str(e.value) and "does not exist" in str(e.value)
    (tmp_path / "junk.mat").write_bytes(b"junk" * 10)
    junk = parse_task_spec(f"file:{tmp_path / 'junk.mat'}")
    with pytest.raises(ValueError, match=re.escape(str(junk))):
        junk.build_mask((40, 50))


@pytest.mark.parametrize(
    "bad",
    [
        "spiral:0.2",
        "radial:1.5",
        "radial:0",
        "radial:-0.1",
        "radial:abc",
        "radial:nan",
        "radial",
        "radial:",
        "radial:0.2:golden",
        "radial:0.2:bogus=1",
        "radial:0.2:golden=1:golden=0",
        "cartesian:0.3:axis=2",
        "cartesian:0.3:center_fraction=1.5",
        "gaussian:0.3:sigma=-1",
        "file:",
        "file:m.mat:flip=1",
    ],
)
def test_bad_specs_name_the_full_spec(bad):
    with pytest.raises(ValueError) as e:
        parse_task_spec(bad)
    assert bad in str(e.value)


def test_parse_task_specs_and_build_masks():
    specs = parse_task_specs("radial:0.1, radial:0.2,radial:0.3,radial:0.4")
    assert [s.ratio for s in specs] == [0.1, 0.2, 0.3, 0.4]
    masks = build_masks(specs, (40, 50))
    assert masks.shape == (4, 40, 50) and masks.dtype == bool
    assert np.all(np.diff(masks.mean(axis=(1, 2))) > 0)
    # A task's mask does not depend on its position in the list.
    np.testing.assert_array_equal(build_masks(specs[::-1], (40, 50))[::-1], masks)
    with pytest.raises(ValueError, match="radial:0.2.*twice"):
        parse_task_specs("radial:0.2,radial:0.20")
    with pytest.raises(ValueError, match="at least one"):
        parse_task_specs(" , ")


# ----------------------------------------------------------------------------- task specs of a model (issue 12.4)

SEEN = ["radial:0.1", "radial:0.2", "radial:0.3", "radial:0.4"]


def test_match_and_nearest_task():
    from loa_meta.sampling import canonical_task_specs, match_task, nearest_task

    specs = canonical_task_specs(["radial:0.10", "radial:0.2", "radial:0.3", "cartesian:0.4"], 4)
    assert specs == ["radial:0.1", "radial:0.2", "radial:0.3", "cartesian:0.4"]
    assert match_task(specs, "radial:0.20") == 1 and match_task(specs, "cartesian:0.4") == 3
    with pytest.raises(ValueError, match=re.escape("task 'radial:0.25' is not among the model's tasks "
                                                   "(0=radial:0.1, 1=radial:0.2, 2=radial:0.3, 3=cartesian:0.4)")):
        match_task(specs, "radial:0.25")
    # same kind first, then the nearest ratio; a tie (0.25 between 0.2 and 0.3) goes to the lower id
    assert [nearest_task(specs, s) for s in ("radial:0.15", "radial:0.25", "radial:0.35", "radial:0.9")] == [0, 1, 2, 2]
    assert nearest_task(specs, "cartesian:0.1") == 3  # the only Cartesian task, though radial 0.1 is closer in ratio
    assert nearest_task(specs, "poisson:0.28") == 2  # no Poisson task: nearest ratio of any kind
    for bad in (["radial:0.1"], ["radial:0.1", "radial:0.10"], "radial:0.1"):
        with pytest.raises(ValueError, match="task_specs"):
            canonical_task_specs(bad, 2)
    for fn in (match_task, nearest_task):
        with pytest.raises(ValueError, match="records no task specs"):
            fn([None, None], "radial:0.1")


def test_loanet_carries_task_specs_through_save_load_and_add_task(tmp_path):
    import keras

    from loa_meta.models import LOANet
    from loa_meta.sampling import model_task_ids

    model = LOANet(num_phases=1, num_tasks=4, task_specs=list(reversed(SEEN)))
    assert model.add_task(0.5, spec="radial:0.150") == 4
    assert model.task_specs == ["radial:0.4", "radial:0.3", "radial:0.2", "radial:0.1", "radial:0.15"]
    with pytest.raises(ValueError, match="twice"):
        model.add_task(0.0, spec="radial:0.3")
    assert model.num_tasks == 5  # the refused task was not added
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert loaded.task_specs == model.task_specs and loaded.get_config()["task_specs"] == model.task_specs
    assert model_task_ids(loaded, ["radial:0.1", "radial:0.15", "radial:0.4"]) == [3, 4, 0]
    with pytest.raises(ValueError, match="not among the model's tasks"):
        model_task_ids(loaded, ["cartesian:0.1"])
    with pytest.raises(ValueError, match="has 5 tasks"):
        model_task_ids(loaded, [None])  # a mask file names no task
    # a model without task weights (conventional) and a single-task model without specs: id 0
    assert model_task_ids(LOANet(num_phases=1, use_task_weights=False, task_specs=["radial:0.2"]),
                          ["radial:0.4", None]) == [0, 0]
    assert model_task_ids(LOANet(num_phases=1), ["radial:0.4"]) == [0]
    # a several-task model saved without specs cannot be mapped
    with pytest.raises(ValueError, match="records no task specs"):
        model_task_ids(LOANet(num_phases=1, num_tasks=2), ["radial:0.1"])
