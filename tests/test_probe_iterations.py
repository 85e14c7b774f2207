"""benchmarks/probe_iterations.py (the app) and model_reconstruct_fn(num_iterations); the scoring and the choice
rule it applies are tested in tests/test_evaluation_iterations.py."""

import numpy as np
import pytest
import tensorflow as tf

from loa_meta.evaluation.iterations import choose_iterations
from loa_meta.models import LOANet
from loa_meta.physics.operators import SingleCoilOperator
from loa_meta.sampling import make_mask


def test_probe_app_writes_the_choice_and_refuses_a_non_loa_model(tmp_path, rng):
    import json
    import os

    from tests.test_experiments_evaluate import run_app, write_prepared

    data = str(tmp_path / "data")
    write_prepared(data, rng)
    tf.keras.utils.set_random_seed(0)
    path = str(tmp_path / "m.keras")
    LOANet(num_phases=2, num_tasks=1, task_specs=["radial:0.3"], filters=4).save(path)
    out = str(tmp_path / "iters.json")
    res = run_app("benchmarks.probe_iterations", f"--data_dir={data}", "--split=val", "--tasks=radial:0.3",
                  f"--model={path}", "--grid=1,2,3", f"--output={out}")
    assert res.returncode == 0, res.stderr[-2000:]
    result = json.load(open(out))
    scores = {int(n): v["psnr"] for n, v in result["scores"]["radial_0.30"].items()}
    assert set(scores) == {1, 2, 3} and result["chosen"]["radial_0.30"] == choose_iterations(scores, 0.01)
    assert result["evaluate_flag"] == f"--iterations={result['chosen']['radial_0.30']}" and result["trained_phases"] == 2
    from loa_meta.models import ISTANetPlus

    ista = str(tmp_path / "ista.keras")
    ISTANetPlus(num_phases=1, filters=4).save(ista)
    bad = run_app("benchmarks.probe_iterations", f"--data_dir={data}", "--tasks=radial:0.3", f"--model={ista}",
                  f"--output={tmp_path / 'x.json'}")
    assert bad.returncode != 0 and "--model" in bad.stderr and "not a LOA network" in bad.stderr
    assert not os.path.exists(tmp_path / "x.json")


def test_model_reconstruct_fn_with_iterations_is_reconstruct_and_checks_the_count(rng):
    from loa_meta.evaluation.evaluate import model_reconstruct_fn

    tf.keras.utils.set_random_seed(1)
    model = LOANet(num_phases=2, num_tasks=1, filters=4, safeguard=False, alpha0=1.0, tau0=0.3, initial_omega=-1.0)
    mask = tf.constant(make_mask("radial", (16, 18), 0.3, seed=0).astype(np.float32))
    y = SingleCoilOperator(mask).forward(tf.constant(rng.random((2, 16, 18)).astype(np.complex64)))
    m, t = tf.broadcast_to(mask, y.shape), tf.zeros((2,), tf.int32)
    np.testing.assert_allclose(model_reconstruct_fn(model, num_iterations=5)(y, m, t).numpy(),
                               model.reconstruct(y, m, t, num_iterations=5).numpy(), atol=1e-6)
    np.testing.assert_allclose(model_reconstruct_fn(model)(y, m, t).numpy(), model.reconstruct(y, m, t).numpy(), atol=1e-5)
    with pytest.raises(ValueError, match="num_iterations"):
        model_reconstruct_fn(model, num_iterations=0)
