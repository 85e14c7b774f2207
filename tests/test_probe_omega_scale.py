"""benchmarks/probe_omega_scale.py: the scan scores kappa_i = f sigma(omega_i) per task and restores omega."""

import math

import numpy as np
import pytest
import tensorflow as tf

from benchmarks.probe_omega_scale import scan
from loa_meta.evaluation import evaluate as ev
from loa_meta.models import LOANet
from loa_meta.sampling import make_mask


def _setup():
    tf.keras.utils.set_random_seed(3)
    rng = np.random.default_rng(0)
    x = np.zeros((3, 12, 14), np.float32)
    x[:, 3:9, 4:11] = 0.7
    x += 0.05 * rng.random(x.shape).astype(np.float32)
    model = LOANet(num_phases=2, num_tasks=2, task_specs=["radial:0.2", "radial:0.4"])
    model.omegas[0].assign(-0.5)
    model.omegas[1].assign(-1.0)
    # the masks are given in the opposite order of the model's task ids: the scan must match by spec
    masks = {"radial:0.4": make_mask("radial", (12, 14), 0.4, seed=0),
             "radial:0.2": make_mask("radial", (12, 14), 0.2, seed=0)}
    return model, x, masks


def test_scan_rows_match_direct_evaluation_and_omega_is_restored():
    model, x, masks = _setup()
    rows = scan(model, x, masks, [0.5, 2.0])
    assert [float(np.asarray(w)) for w in model.omegas] == [-0.5, -1.0]
    assert [(r["task"], r["factor"]) for r in rows] == [
        ("radial:0.4", 0.0), ("radial:0.4", 0.5), ("radial:0.4", 1.0), ("radial:0.4", 2.0),
        ("radial:0.2", 0.0), ("radial:0.2", 0.5), ("radial:0.2", 1.0), ("radial:0.2", 2.0)]
    by = {(r["task"], r["factor"]): r for r in rows}
    s1 = 1 / (1 + math.exp(1.0))  # task id 1 = radial:0.4
    assert by[("radial:0.4", 2.0)]["sigma"] == pytest.approx(2 * s1, rel=1e-6)
    direct = ev.evaluate_model(ev.model_reconstruct_fn(model), x, {"radial:0.4": masks["radial:0.4"]},
                               task_ids={"radial:0.4": 1})["radial:0.4"]
    assert by[("radial:0.4", 1.0)]["psnr"] == float(np.mean(direct["psnr"]))  # the trained omega itself
    zf = ev.evaluate_zero_filled(x, {"radial:0.2": masks["radial:0.2"]})["radial:0.2"]
    assert by[("radial:0.2", 0.0)]["psnr"] == pytest.approx(float(np.mean(zf["psnr"])), abs=1e-9)
    # changing kappa changes the reconstruction (the scan is not scoring the same model twice)
    assert by[("radial:0.4", 2.0)]["psnr"] != pytest.approx(by[("radial:0.4", 1.0)]["psnr"], abs=1e-4)
    # scoring with omega set by hand gives the scan's row for that factor
    model.omegas[1].assign(math.log(2 * s1 / (1 - 2 * s1)))
    by_hand = ev.evaluate_model(ev.model_reconstruct_fn(model), x, {"radial:0.4": masks["radial:0.4"]},
                                task_ids={"radial:0.4": 1})["radial:0.4"]
    assert by[("radial:0.4", 2.0)]["psnr"] == pytest.approx(float(np.mean(by_hand["psnr"])), abs=1e-6)


def test_scan_refuses_a_weight_outside_0_1_and_still_restores_omega():
    model, x, masks = _setup()
    model.omegas[0].assign(0.5)
    s0 = 1 / (1 + math.exp(-0.5))  # 0.62: a factor of 2 gives 1.24
    with pytest.raises(ValueError, match=r"--factors: 2.0 x sigma\(omega\)"):
        scan(model, x, {"radial:0.2": masks["radial:0.2"]}, [2.0])
    assert 2 * s0 > 1 and float(np.asarray(model.omegas[0])) == 0.5
