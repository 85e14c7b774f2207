"""Micro-batched gradients (MetaConfig/ConventionalConfig/AdaptConfig.microbatch_size) equal the
full-batch gradients: Eq. 18 (second order) and Eq. 13 (first order), toy float64 and real LOANet."""

import numpy as np
import pytest
import tensorflow as tf

from loa_meta.models.loa_net import LOANet
from loa_meta.training import AdaptConfig, ConventionalConfig, MetaConfig, penalty_objective_and_grads
from loa_meta.training.algorithm2 import split_microbatches
from loa_meta.training.loop import AdaptMode, MetaMode, SupervisedMode
from tests.training_helpers import ToyUnrolled, fixed_batch, make_arrays


def _rel_err(a_list, b_list):
    a = np.concatenate([np.ravel(x.numpy()) for x in a_list])
    b = np.concatenate([np.ravel(x.numpy()) for x in b_list])
    return np.linalg.norm(a - b) / np.linalg.norm(b)


def _toy_batches():
    arr = make_arrays(3, num_tasks=2, seed=4, cdtype=np.complex128)
    return fixed_batch(arr, [0, 3, 1, 4, 2]), fixed_batch(arr, [5, 2, 0])


def test_split_microbatches_slices_per_sample_tensors_and_keeps_shared_mask():
    arr = make_arrays(3, num_tasks=2, seed=0)
    b = fixed_batch(arr, [0, 1, 2, 3, 4])
    parts = split_microbatches(b, 2)
    assert [int(p["kspace"].shape[0]) for p in parts] == [2, 2, 1]
    np.testing.assert_array_equal(np.concatenate([p["task_id"].numpy() for p in parts]), b["task_id"].numpy())
    shared = dict(b, mask=b["mask"][0])
    parts = split_microbatches(shared, 3)
    assert all(p["mask"].shape.rank == 2 for p in parts)
    assert split_microbatches(b, None)[0] is b and split_microbatches(b, 9)[0] is b


@pytest.mark.parametrize("mb", [1, 2, 4])
@pytest.mark.parametrize("reduction", ["sum", "mean", "task_norm", "task_norm_sqrt"])
def test_penalty_gradient_microbatched_equals_full_batch_float64(mb, reduction):
    model = ToyUnrolled(num_phases=2, num_tasks=2, dtype="float64")
    btr, bval = _toy_batches()
    lam = 0.8
    m_full, gt_full, go_full = penalty_objective_and_grads(model, btr, bval, lam, reduction)
    m_mb, gt_mb, go_mb = penalty_objective_and_grads(model, btr, bval, lam, reduction, microbatch_size=mb)
    assert _rel_err(gt_mb, gt_full) < 1e-12
    assert _rel_err(go_mb, go_full) < 1e-12
    for k in m_full:
        np.testing.assert_allclose(float(m_mb[k]), float(m_full[k]), rtol=1e-6)
    # the penalty's second-order part is really present (lambda changes the omega gradient)
    _, _, go0 = penalty_objective_and_grads(model, btr, bval, 0.0, reduction, microbatch_size=mb)
    assert _rel_err(go0, go_mb) > 1e-6


@pytest.mark.slow
def test_penalty_gradient_microbatched_equals_full_batch_loanet_float32():
    tr, va = make_arrays(2, seed=0), make_arrays(2, seed=50)
    bt, bv = fixed_batch(tr, [0, 2, 1, 3]), fixed_batch(va, [1, 3, 0])
    model = LOANet(num_phases=2, num_tasks=2)
    # op by op (the compiled kernels are checked against this path in test_training_engine.py)
    _, gt_full, go_full = penalty_objective_and_grads(model, bt, bv, 1.0, compiled=False)
    # micro-batches of 2: B_tr splits 2 + 2, B_val 2 + 1 (one uneven split); sizes 1 and 4 on the toy model above
    _, gt_mb, go_mb = penalty_objective_and_grads(model, bt, bv, 1.0, microbatch_size=2, compiled=False)
    # float32 summation order only
    assert _rel_err(gt_mb, gt_full) < 1e-5
    assert _rel_err(go_mb, go_full) < 1e-5


@pytest.mark.parametrize("kind", ["meta", "conventional", "adapt"])
def test_mode_gradients_do_not_depend_on_microbatch_size(kind):
    btr, bval = _toy_batches()
    outs = []
    for mb in (None, 2):
        if kind == "meta":
            mode = MetaMode(MetaConfig(microbatch_size=mb).validate())
        elif kind == "conventional":
            mode = SupervisedMode(ConventionalConfig(microbatch_size=mb).validate())
        else:
            mode = AdaptMode(AdaptConfig(microbatch_size=mb).validate(), task_index=1)
        model = ToyUnrolled(num_phases=2, num_tasks=2, dtype="float64")
        theta, omega = mode.variables(model)
        m, gt, go = mode.replica_fn(model, theta, omega, btr, bval, tf.constant(0.5, tf.float64))
        outs.append((m, gt + go))
    (m0, g0), (m1, g1) = outs
    assert len(g0) > 0
    assert _rel_err(g1, g0) < 1e-12
    np.testing.assert_allclose(float(m1["objective"]), float(m0["objective"]), rtol=1e-6)


def test_microbatch_size_validation_names_the_argument():
    with pytest.raises(ValueError, match="microbatch_size"):
        MetaConfig(microbatch_size=0).validate()
    assert MetaConfig(microbatch_size=None).validate().microbatch_size is None
    assert MetaConfig.from_dict(MetaConfig(microbatch_size=3).to_dict()).microbatch_size == 3


def test_auto_microbatch_size_bounds_pixels_times_phases():
    cfg = MetaConfig().validate()
    assert cfg.microbatch_size == "auto"
    # paper configuration: whole batches of 8 (4.8 GB peak RSS measured, docs/benchmarks_training.md)
    assert cfg.resolve_microbatch_size((8, 160, 180), 11) == 8
    assert cfg.resolve_microbatch_size((16, 160, 180), 11) == 8
    assert cfg.resolve_microbatch_size((8, 160, 180), 5) == 17
    assert cfg.resolve_microbatch_size((8, 64, 64), 3) == 206  # >= batch: whole batch
    assert cfg.resolve_microbatch_size((None, None, None), 3) is None
    assert MetaConfig(microbatch_size=3).resolve_microbatch_size((8, 160, 180), 11) == 3
    with pytest.raises(ValueError, match="microbatch_size"):
        MetaConfig(microbatch_size="half").validate()
    with pytest.raises(ValueError, match="microbatch_pixel_budget"):
        MetaConfig(microbatch_pixel_budget=0).validate()
