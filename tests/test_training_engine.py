"""The fast exact training engine (issue 10): Algorithm 1 planned, then replayed straight-line.

The sequential implementation (``LOAPhase.step`` with its ``tf.cond`` / ``tf.while_loop``, used by
inference) is the reference: the replay must give the same x_T and the same first- and
second-order gradients in a case where every branch of Algorithm 1 occurs (u, v after many
backtracks, x kept after an exhausted line search, eps reductions, inactive samples), and the
compiled kernels must not retrace during a stage.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from loa_meta.layers.loa_phase import BRANCH_INACTIVE, BRANCH_KEPT, BRANCH_U, BRANCH_V
from loa_meta.models import LOANet
from loa_meta.training.algorithm2 import gradient_kernels, penalty_objective_and_grads
from loa_meta.training.losses import reconstruction_loss
from tests.test_loa_net import data, inputs


def _mixed_model():
    """2 phases whose step sizes make every branch occur in a batch of 4 (checked by the tests): phase 0
    takes u for samples 0 and 2 and v (3-4 backtracks) for 1 and 3; phase 1 takes v (5-7 backtracks)
    for 0 and 2 and keeps x after 12 failed backtracks for 1 and 3; eps is reduced for 0 and 2 only.
    Two phases are the cheapest case with every branch, so the second-order tests stay short."""
    keras.utils.set_random_seed(0)
    model = LOANet(num_phases=2, num_tasks=2, eps0=0.01, max_backtracks=12, eps_tol=1e-3)
    for p, (a, t) in zip(model.phases, [(0.5, 0.5), (3.0, 12.0)]):
        p.alpha.assign(a)
        p.tau.assign(t)
    model.omegas[0].assign(-3.0)
    model.omegas[1].assign(2.0)
    return model


def _mixed_inputs():
    y, m, target = data(4, seed=3)
    return inputs(y, m, [0, 1, 0, 1]), tf.constant(np.real(target.numpy()), tf.float32)


def _rel(a, b):
    a = np.concatenate([np.ravel(x) for x in a])
    b = np.concatenate([np.ravel(x) for x in b])
    return np.linalg.norm(a - b) / np.linalg.norm(b)


def test_mixed_case_exercises_every_branch():
    model, (inp, _) = _mixed_model(), _mixed_inputs()
    plan = model.plan(inp)
    branch, bt, red = plan["branch"].numpy(), plan["backtracks"].numpy(), plan["reduce_eps"].numpy()
    assert {BRANCH_U, BRANCH_V, BRANCH_KEPT} <= set(branch.ravel().tolist()), branch
    assert bt[branch == BRANCH_V].max() >= 5, bt
    assert (bt[branch == BRANCH_KEPT] == model.max_backtracks).all(), bt  # kept only after an exhausted search
    assert red.any() and not red.all(), red


def test_replay_forward_equals_sequential():
    model, (inp, _) = _mixed_model(), _mixed_inputs()
    x_seq = model(inp).numpy()
    plan = model.plan(inp)
    np.testing.assert_array_equal(plan["x"].numpy(), x_seq)
    x_rep = model.replay(inp, plan).numpy()
    assert np.max(np.abs(x_rep - x_seq)) <= 1e-6 * np.max(np.abs(x_seq))
    np.testing.assert_allclose(model(inp, training=True).numpy(), x_seq, rtol=0, atol=1e-6 * np.abs(x_seq).max())


def test_replay_matches_sequential_with_inactive_samples():
    """Line 16 terminates samples early (eps_tol above sigma eps_0 gamma^k): they must stay fixed."""
    keras.utils.set_random_seed(1)
    model = LOANet(num_phases=5, num_tasks=2, eps0=1.0, eps_tol=850.0, alpha0=0.5, tau0=0.5)
    model.omegas[1].assign(3.0)
    y, m, _ = data(3, seed=2)
    inp = inputs(y, m, [0, 1, 1])
    plan = model.plan(inp)
    assert (plan["branch"].numpy() == BRANCH_INACTIVE).any(), plan["branch"].numpy()
    x_seq = model(inp).numpy()
    assert np.max(np.abs(model.replay(inp, plan).numpy() - x_seq)) <= 1e-6 * np.abs(x_seq).max()


def _grads(model, inp, target, training):
    params = model.theta_variables + model.omega_variables
    with tf.GradientTape() as outer:
        with tf.GradientTape() as inner:
            out = model(inp, training=training)
            loss = 0.5 * tf.reduce_sum((tf.abs(out) - target) ** 2)
        g = inner.gradient(loss, params, unconnected_gradients="zero")
        gn = tf.add_n([tf.reduce_sum(v**2) for v in g])
    hv = outer.gradient(gn, params, unconnected_gradients="zero")
    return [v.numpy() for v in g], [v.numpy() for v in hv]


def test_replay_first_and_second_order_gradients_equal_sequential():
    model, (inp, target) = _mixed_model(), _mixed_inputs()
    g_rep, h_rep = _grads(model, inp, target, training=True)  # plan + replay
    g_seq, h_seq = _grads(model, inp, target, training=False)  # differentiates tf.cond/while_loop
    assert _rel(g_rep, g_seq) < 1e-5
    assert _rel(h_rep, h_seq) < 1e-5
    assert all(np.isfinite(v).all() for v in g_rep + h_rep)
    assert np.linalg.norm(g_rep[-1]) > 0 and np.linalg.norm(h_rep[-1]) > 0  # omega_1 is reached


def _meta_batches(seed=0):
    y, m, target = data(4, seed=seed)
    b = {"kspace": y, "mask": m, "target": tf.constant(np.real(target.numpy()), tf.float32), "task_id": tf.constant([0, 1, 0, 1])}
    return b


@pytest.mark.slow
def test_kernels_match_sequential_penalty_gradient_and_do_not_retrace():
    model = _mixed_model()
    bt, bv = _meta_batches(3), _meta_batches(4)
    lam = tf.constant(0.3, tf.float32)  # a large lambda so that the Hessian-vector term matters
    ref = _sequential_penalty(model, bt, bv, 0.3)
    kern = gradient_kernels(model, model.theta_variables, model.omega_variables, "sum")
    n0 = kern.tracing_count()
    for mb in (None, 2):
        m, gt, go = penalty_objective_and_grads(model, bt, bv, lam, microbatch_size=mb)
        assert _rel([v.numpy() for v in gt + go], ref[1]) < 1e-5, mb
        np.testing.assert_allclose(float(m["objective"]), ref[0], rtol=1e-5)
    traced = kern.tracing_count() - n0
    for mb in (None, 2):  # same shapes again: no new trace
        penalty_objective_and_grads(model, _meta_batches(5), _meta_batches(6), tf.constant(0.1), microbatch_size=mb)
    assert kern.tracing_count() - n0 == traced
    assert traced == 2 + 3  # plan + whole-batch kernel at batch 4; plan, loss and hvp kernels at micro-batch 2


@pytest.mark.slow
def test_xla_kernels_match_graph_kernels():
    """``jit_compile=True`` (``--jit_compile``) computes the same exact Eq. 18 gradient as the graph kernels."""
    keras.utils.set_random_seed(1)
    model = LOANet(num_phases=2, num_tasks=2, filters=4, safeguard=False, eps0_floor=1e-3)
    bt, bv = _meta_batches(3), _meta_batches(4)
    lam = tf.constant(0.3, tf.float32)
    m0, gt0, go0 = penalty_objective_and_grads(model, bt, bv, lam, "task_norm")
    m1, gt1, go1 = penalty_objective_and_grads(model, bt, bv, lam, "task_norm", jit_compile=True)
    assert gradient_kernels(model, model.theta_variables, model.omega_variables, "task_norm", True).jit_compile
    np.testing.assert_allclose(float(m1["objective"]), float(m0["objective"]), rtol=1e-5)
    assert _rel([v.numpy() for v in gt1 + go1], [v.numpy() for v in gt0 + go0]) < 1e-4
    assert np.linalg.norm(go0[0].numpy()) > 0


@pytest.mark.slow
def test_omega_only_gradient_equals_the_omega_block_of_the_full_gradient():
    """Algorithm 2's line 10 from ``wrt="omega"``: the same omega gradient and metrics as the full Eq. 18
    gradient, compiled (whole batch and micro-batches) and op by op, at a lambda where the penalty matters."""
    model = _mixed_model()
    bt, bv = _meta_batches(3), _meta_batches(4)
    lam = tf.constant(0.3, tf.float32)
    for compiled in (True, False):
        for mb in (None, 2):
            m_all, gt, go = penalty_objective_and_grads(model, bt, bv, lam, microbatch_size=mb, compiled=compiled)
            m_om, gt_om, go_om = penalty_objective_and_grads(model, bt, bv, lam, microbatch_size=mb, compiled=compiled,
                                                             wrt="omega")
            assert gt_om == [] and len(go_om) == len(go) == len(model.omega_variables)
            assert _rel([v.numpy() for v in go_om], [v.numpy() for v in go]) < 1e-5, (compiled, mb)
            assert min(np.linalg.norm(v.numpy()) for v in go) > 0
            for k in ("objective", "loss_val", "loss_train", "penalty"):
                np.testing.assert_allclose(float(m_om[k]), float(m_all[k]), rtol=1e-5)
    with pytest.raises(ValueError, match="wrt"):
        penalty_objective_and_grads(model, bt, bv, lam, wrt="theta")


def _sequential_penalty(model, bt, bv, lam):
    """Eq. 18 and its gradient through the sequential reference (tf.cond / while_loop differentiated)."""
    params = model.theta_variables + model.omega_variables
    theta = model.theta_variables

    def loss(b):
        out = model({"kspace": b["kspace"], "mask": b["mask"], "task_id": b["task_id"]}, training=False)
        return reconstruction_loss(out, b["target"])

    with tf.GradientTape() as outer:
        with tf.GradientTape() as inner:
            l_tr = loss(bt)
        g = inner.gradient(l_tr, theta, unconnected_gradients="zero")
        obj = loss(bv) + lam / 2 * tf.add_n([tf.reduce_sum(v**2) for v in g])
    grads = outer.gradient(obj, params, unconnected_gradients="zero")
    return float(obj), [v.numpy() for v in grads]


@pytest.mark.slow
def test_first_order_kernel_matches_sequential():
    wrt = "all"  # one kernel serves every block; "theta"/"omega" are slices of this result
    model = _mixed_model()
    b = _meta_batches(3)
    variables = model.theta_variables + (model.omega_variables if wrt == "all" else [])
    with tf.GradientTape() as tape:
        out = model({"kspace": b["kspace"], "mask": b["mask"], "task_id": b["task_id"]}, training=False)
        loss = reconstruction_loss(out, b["target"])
    ref = tape.gradient(loss, variables, unconnected_gradients="zero")
    kern = gradient_kernels(model, model.theta_variables, model.omega_variables, "sum")
    l, g = kern.loss_grads(b, tf.constant(4), wrt)
    np.testing.assert_allclose(float(l), float(loss), rtol=1e-6)
    assert _rel([v.numpy() for v in g], [v.numpy() for v in ref]) < 1e-5


def test_first_order_kernel_of_a_model_without_task_weights():
    """Conventional training (kappa fixed): the model's unused omega gets a zero gradient, theta the
    sequential one (this kernel used to fail on the unconnected Keras variable)."""
    keras.utils.set_random_seed(0)
    model = LOANet(num_phases=1, num_tasks=1, use_task_weights=False)
    b = dict(_meta_batches(4), task_id=tf.zeros((4,), tf.int32))
    with tf.GradientTape() as tape:
        loss = reconstruction_loss(model({"kspace": b["kspace"], "mask": b["mask"], "task_id": b["task_id"]},
                                         training=False), b["target"])
    ref = tape.gradient(loss, model.theta_variables)
    kern = gradient_kernels(model, model.theta_variables, model.omega_variables, "sum")
    l, g = kern.loss_grads(b, tf.constant(4), "all")
    assert len(model.omega_variables) == 1 and float(g[-1]) == 0.0
    np.testing.assert_allclose(float(l), float(loss), rtol=1e-6)
    assert _rel([v.numpy() for v in g[:-1]], [v.numpy() for v in ref]) < 1e-5


def test_branch_statistics_per_phase():
    from loa_meta.training.loop import branch_statistics, branch_summary_line

    branch = np.array([[0, 0, 0, 0], [0, 1, 2, -1], [2, 2, -1, -1]])
    bt = np.array([[0, 0, 0, 0], [0, 3, 20, 0], [20, 20, 0, 0]])
    st = branch_statistics(branch, bt)
    assert st[0] == {"u": 1.0, "v": 0.0, "kept": 0.0, "backtracks": 0.0}
    assert st[1]["u"] == pytest.approx(1 / 3) and st[1]["kept"] == pytest.approx(1 / 3)
    assert st[1]["backtracks"] == pytest.approx(11.5) and st[2]["kept"] == 1.0
    assert branch_summary_line(st) == "phases u*k bt 15.8"


@pytest.mark.slow
def test_a_training_stage_traces_each_kernel_once(tmp_path):
    """Algorithm 2 with a real LOANet: after the first outer iteration nothing is traced again."""
    from loa_meta.training import MetaConfig, train_meta
    from loa_meta.training.api import default_loa_builder
    from tests.training_helpers import make_arrays, make_dataset

    tr, va = make_arrays(2, num_tasks=2, seed=0), make_arrays(2, num_tasks=2, seed=50)
    data = {"train": make_dataset(tr, 2, 0), "val": make_dataset(va, 2, 1)}
    counts = []
    cfg = MetaConfig(max_steps=9, theta_steps=2, max_inner_iterations=1, delta0=1e-12, delta_tol=1e-13,
                     log_every=100, image_every=0, summary_every=100, checkpoint_every=100,
                     stairwise={"enabled": False, "max_phases": 2}, model={"num_tasks": 2})
    build = default_loa_builder({"num_tasks": 2, "alpha0": 0.5, "tau0": 0.5})
    seen = {}

    def model_fn(p):
        m = build(p)
        seen["model"] = m
        return m

    import loa_meta.training.modes as loop_mod  # the meta mode runs Algorithm 2 from here

    original = loop_mod.run_algorithm2_iteration

    def counting(*args, **kwargs):
        out = original(*args, **kwargs)
        m = seen["model"]
        counts.append(gradient_kernels(m, m.theta_variables, m.omega_variables, "sum").tracing_count())
        return out

    loop_mod.run_algorithm2_iteration = counting
    try:
        train_meta(cfg, str(tmp_path), data, model_fn=model_fn)
    finally:
        loop_mod.run_algorithm2_iteration = original
    assert len(counts) >= 3, counts
    assert counts[0] == 2 and counts[-1] == counts[0], counts  # the plan and the whole-batch kernel, never retraced
