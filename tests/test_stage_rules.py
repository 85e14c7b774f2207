"""How a training stage ends (Section 4.2 stair training, Algorithm 2 line 3): the plateau rule on
held-out data, and Algorithm 2's delta schedule counted in epochs. Uses the tiny real Keras model
of tests/training_helpers.py."""

import numpy as np
import pytest

from experiments.presets import PAPER, PRESETS, delta_tol_after
from loa_meta.training import MetaConfig, train_meta
from loa_meta.training.algorithm2 import Algorithm2Schedule
from tests.training_helpers import ToyUnrolled, make_arrays, make_dataset


def _data(seed=0):
    tr, va, ho = (make_arrays(4, num_tasks=2, seed=seed + k) for k in (0, 50, 90))
    return {"train": make_dataset(tr, 4, seed), "val": make_dataset(va, 4, seed + 1),
            "eval": make_dataset(ho, 4, shuffle=False, repeat=False)}


def _outer_per_stage(hist):
    """Outer iterations per stage from the step records (delta restarts at delta_0 in each stage)."""
    per, last = [], None
    for h in hist["steps"]:
        if h["block"] == "omega":  # one omega step per outer iteration (max_inner_iterations = 1)
            if last is None or h["delta"] > last:
                per.append(0)
            per[-1] += 1
            last = h["delta"]
    return per


def test_schedule_decays_once_per_epoch_and_the_paper_stage_lasts_107_epochs():
    assert PAPER.meta_stage_epochs == 107  # 1e-3 * 0.95^106 = 4.36e-6 > 4.35e-6 >= 1e-3 * 0.95^107
    s = Algorithm2Schedule(PAPER.delta0, PAPER.nu_delta, PAPER.delta_tol, PAPER.lambda0, PAPER.nu_lambda,
                           decay_every=3)
    assert s.outer_iterations_to_tol() == 3 * 107
    for _ in range(3 * 107 - 1):
        s.decay()
    assert not s.done() and s.delta.numpy() == pytest.approx(1e-3 * 0.95**106, rel=1e-12)
    s.decay()
    assert s.done()
    np.testing.assert_allclose(s.lam.numpy(), 1e-5 * 1.001**107, rtol=1e-12)
    # every preset's stage length in epochs is exactly what its delta_tol says
    for epochs in (1, 2, 3, 107):
        assert PAPER.override(delta_tol=delta_tol_after(epochs)).meta_stage_epochs == epochs
    assert {p.name: p.meta_stage_epochs for p in PRESETS.values()} == {"paper": 107, "cpu": 17, "tiny": 1,
                                                                        "quickstart": 17}


def test_meta_stage_ends_on_delta_tol_after_its_epochs(tmp_path):
    # 2 epochs of 3 batch pairs per stage; delta far below any gradient norm so line 6 never stops a cycle
    cfg = MetaConfig(learning_rate=1e-3, delta0=1e-12, nu_delta=0.5, delta_tol=delta_tol_after(2, 1e-12, 0.5),
                     max_inner_iterations=1, outer_iterations_per_epoch=3, eval_every=0, log_every=50,
                     image_every=0, stairwise={"enabled": True, "initial_phases": 1, "max_phases": 2,
                                               "stage_max_iterations": None, "min_delta": 0.0})
    _, hist = train_meta(cfg, str(tmp_path), _data(), model_fn=lambda p: ToyUnrolled(p))
    assert [s["reason"] for s in hist["stages"]] == ["delta_tol", "delta_tol"]
    assert _outer_per_stage(hist) == [6, 6]


@pytest.mark.slow
def test_meta_stage_ends_on_the_heldout_plateau(tmp_path):
    # lr 1e-12: the held-out loss cannot improve, so after the first evaluation (the stage's best)
    # `patience` = 2 further evaluations without improvement end the stage at outer iteration 3,
    # long before its delta budget (100 epochs of 2 batch pairs)
    sw = {"enabled": True, "initial_phases": 1, "max_phases": 2, "stage_max_iterations": None, "patience": 2,
          "min_delta": 1e-3}
    cfg = MetaConfig(learning_rate=1e-12, omega_learning_rate=1e-12, delta0=1e-12, nu_delta=0.5,
                     delta_tol=delta_tol_after(100, 1e-12, 0.5), max_inner_iterations=1,
                     outer_iterations_per_epoch=2, eval_every=1, max_steps=40, log_every=50, image_every=0,
                     stairwise=sw)
    _, hist = train_meta(cfg, str(tmp_path / "flat"), _data(), model_fn=lambda p: ToyUnrolled(p))
    assert hist["stages"][0]["reason"] == "plateau" and _outer_per_stage(hist)[0] == 3
    # with a learning rate that helps, the held-out loss keeps improving and no plateau ends stage 0
    cfg = MetaConfig.from_dict({**cfg.to_dict(), "learning_rate": 1e-2, "omega_learning_rate": 1e-2,
                                "max_steps": 12})
    _, hist = train_meta(cfg, str(tmp_path / "learns"), _data(), model_fn=lambda p: ToyUnrolled(p))
    assert hist["stages"][0]["reason"] == "max_steps" and _outer_per_stage(hist) == [6]
