"""loa_meta.evaluation.iterations: per-task inference iteration counts of a LOA network, chosen on selection slices."""

import numpy as np
import pytest
import tensorflow as tf

from loa_meta.evaluation.evaluate import evaluate_model, model_reconstruct_fn
from loa_meta.evaluation.iterations import choose_iterations, score_iterations, select_iterations
from loa_meta.metrics import psnr
from loa_meta.models import LOANet
from loa_meta.physics.operators import SingleCoilOperator
from loa_meta.sampling import make_mask


def test_choose_takes_the_smallest_count_within_the_tie():
    assert choose_iterations({3: 30.0, 5: 30.2, 9: 30.205}, tie_db=0.01) == 5
    assert choose_iterations({3: 30.0, 5: 30.2, 9: 30.205}, tie_db=0.0) == 9
    assert choose_iterations({1: 20.0, 3: 19.0}, tie_db=0.01) == 1


def test_scores_are_those_of_reconstruct_with_that_many_iterations(rng):
    tf.keras.utils.set_random_seed(0)
    model = LOANet(num_phases=2, num_tasks=2, filters=4, safeguard=False, alpha0=1.0, tau0=0.3, initial_omega=-1.0)
    images = np.zeros((3, 16, 18), np.float32)
    images[:, 4:12, 5:14] = 0.5 + 0.5 * rng.random((3, 8, 9))
    masks = {"radial_0.20": make_mask("radial", (16, 18), 0.2, seed=0),
             "radial_0.40": make_mask("radial", (16, 18), 0.4, seed=0)}
    ids = {"radial_0.20": 1, "radial_0.40": 0}
    scores = score_iterations(model, images, masks, ids, grid=[1, 2, 4], batch_size=2)
    assert set(scores) == set(masks) and all(set(s) == {1, 2, 4} for s in scores.values())
    for task, mask in masks.items():
        m = tf.constant(np.broadcast_to(mask, images.shape).astype(np.float32))
        y = SingleCoilOperator(tf.constant(mask.astype(np.float32))).forward(tf.constant(images.astype(np.complex64)))
        for n in (1, 2, 4):
            x = model.reconstruct(y, m, tf.fill((3,), ids[task]), num_iterations=n)
            assert scores[task][n]["psnr"] == pytest.approx(float(np.mean(psnr(np.abs(x.numpy()), images))), abs=1e-4)
        # different counts give different reconstructions (the probe measures something)
        assert len({round(scores[task][n]["psnr"], 6) for n in (1, 2, 4)}) == 3




def _model_and_data(rng, seed=0):
    tf.keras.utils.set_random_seed(seed)
    model = LOANet(num_phases=2, num_tasks=2, filters=4, safeguard=False, alpha0=1.0, tau0=0.3, initial_omega=-1.0)
    images = np.zeros((5, 16, 18), np.float32)
    images[:, 4:12, 5:14] = 0.5 + 0.5 * rng.random((5, 8, 9))
    masks = {"radial_0.10": make_mask("radial", (16, 18), 0.1, seed=0),
             "radial_0.40": make_mask("radial", (16, 18), 0.4, seed=0)}
    return model, images, masks


def test_select_picks_the_count_of_the_best_mean_psnr_as_evaluate_model_scores_it(rng):
    model, images, masks = _model_and_data(rng)
    ids = {"radial_0.10": 0, "radial_0.40": 1}
    chosen, scores = select_iterations(model, images, masks, ids, grid=[3, 1, 2, 6, 3], tie_db=0.0, batch_size=2)
    for task in masks:
        assert sorted(scores[task]) == [1, 2, 3, 6]  # duplicates dropped, sorted
        best = max(scores[task], key=lambda n: scores[task][n]["psnr"])
        assert chosen[task] == best
        # the chosen count, scored by evaluate_model on the same slices, gives the same mean PSNR and SSIM
        res = evaluate_model(model_reconstruct_fn(model, num_iterations=best), images, {task: masks[task]},
                             task_ids={task: ids[task]}, batch_size=3)[task]
        assert float(np.mean(res["psnr"])) == pytest.approx(scores[task][best]["psnr"], abs=1e-4)
        assert float(np.mean(res["ssim"])) == pytest.approx(scores[task][best]["ssim"], abs=1e-5)


def test_select_with_a_tie_tolerance_prefers_fewer_iterations(rng):
    model, images, masks = _model_and_data(rng, seed=2)
    _, scores = select_iterations(model, images, masks, grid=[1, 2, 3, 4])
    for task, s in scores.items():
        ps = {n: v["psnr"] for n, v in s.items()}
        spread = max(ps.values()) - min(ps.values())
        chosen, _ = select_iterations(model, images, {task: masks[task]}, {task: list(masks).index(task)},
                                      grid=[1, 2, 3, 4], tie_db=spread + 1e-6)
        assert chosen[task] == 1  # everything ties: the smallest count


def test_iteration_selection_rejects_bad_arguments(rng):
    model, images, masks = _model_and_data(rng)
    with pytest.raises(ValueError, match="grid"):
        score_iterations(model, images, masks, grid=[0, 2])
    with pytest.raises(ValueError, match="grid"):
        score_iterations(model, images, masks, grid=[])
    with pytest.raises(ValueError, match="shape"):
        score_iterations(model, images, {"m": np.ones((8, 8))})
    with pytest.raises(ValueError, match="task_ids"):
        score_iterations(model, images, masks, task_ids={"radial_0.10": 0})
    from loa_meta.models import ISTANetPlus

    for not_loa in (object(), ISTANetPlus(num_phases=1, filters=4)):  # ISTA-Net+ has phases but no Algorithm 1
        with pytest.raises(TypeError, match="LOA network"):
            score_iterations(not_loa, images, masks)
    with pytest.raises(ValueError, match="scores"):
        choose_iterations({})
    with pytest.raises(ValueError, match="tie_db"):
        choose_iterations({1: 2.0}, tie_db=-1.0)
