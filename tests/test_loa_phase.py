"""LOAPhase (Algorithm 1, lines 3-16): energy descent per sample, v-branch with backtracking,
batch independence with mixed branches, eps update, inactive samples, graph mode and nested tapes."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from loa_meta.layers import LearnedRegularizer, LOAPhase
from loa_meta.layers.algorithm1_config import Algorithm1Config
from loa_meta.physics.operators import SingleCoilOperator


def phantom_batch(batch, h=12, w=14, seed=0, ratio=0.35):
    """Smooth phantoms normalised to max 1 and random masks with a fully sampled centre."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    imgs, masks = [], []
    for _ in range(batch):
        img = np.zeros((h, w))
        for _ in range(3):
            cy, cx = rng.uniform(3, h - 3), rng.uniform(3, w - 3)
            s = rng.uniform(1.5, 3.5)
            img += rng.uniform(0.3, 1.0) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s * s))
        imgs.append(img / img.max())
        m = rng.random((h, w)) < ratio
        m[h // 2 - 1 : h // 2 + 2, w // 2 - 1 : w // 2 + 2] = True
        masks.append(m)
    return np.stack(imgs).astype(np.complex64), np.stack(masks).astype(np.float32)


def setup(batch=3, seed=0, dtype=tf.complex64, **phase_kwargs):
    keras.utils.set_random_seed(seed)  # seeded Glorot kernels
    img, mask = phantom_batch(batch, seed=seed)
    op = SingleCoilOperator(tf.constant(mask))
    y = op.forward(tf.constant(img, dtype))
    reg = LearnedRegularizer(dtype="float64" if dtype == tf.complex128 else "float32")
    reg.build(None)
    phase = LOAPhase(**phase_kwargs)
    phase.build(None)
    return img, mask, op, y, reg, phase


def energy(op, reg, x, y, kappa, eps):
    return (op.data_term(x, y) + kappa * reg.value(x, eps)).numpy()


def run_phases(phase, reg, op, y, kappa, eps, n, x=None):
    x = op.zero_filled(y) if x is None else x
    b = y.shape[0]
    eps = tf.fill([b], eps)
    active = tf.ones([b], tf.bool)
    out = []
    for _ in range(n):
        x_new, eps_new, active, d = phase.step(reg, op, x, y, kappa, eps, active)
        out.append((x, x_new, eps, d))
        x, eps = x_new, eps_new
    return out


@pytest.mark.parametrize("kwargs", [{}, {"tau0": 5.0}, {"alpha0": 3.0, "tau0": 3.0}])
def test_energy_descent_every_phase_every_sample(kwargs):
    img, mask, op, y, reg, phase = setup(batch=3, **kwargs)
    kappa = tf.constant([0.5, 0.9, 0.2])
    branches = []
    for x, x_new, eps, d in run_phases(phase, reg, op, y, kappa, 1e-3, 4):
        phi0 = energy(op, reg, x, y, kappa, eps)
        phi1 = energy(op, reg, x_new, y, kappa, eps)
        assert np.all(phi1 <= phi0 + 1e-6 * np.abs(phi0)), (phi0, phi1, d["branch"].numpy())
        np.testing.assert_allclose(d["phi"].numpy(), phi0, rtol=1e-5)
        np.testing.assert_allclose(d["phi_next"].numpy(), phi1, rtol=1e-5)
        branches.append(d["branch"].numpy())
    assert np.all(np.isin(np.concatenate(branches), [0, 1, 2]))


def test_v_branch_with_backtracking_is_exercised_and_descends():
    # a huge tau makes u overshoot (line 5 fails) and a huge alpha forces line-search reductions
    img, mask, op, y, reg, phase = setup(batch=2, alpha0=5.0, tau0=50.0, max_backtracks=60)
    kappa = tf.constant([1.0, 1.0])
    runs = run_phases(phase, reg, op, y, kappa, 5e-2, 2)
    x, x_new, eps, d = runs[0]
    bt = d["backtracks"].numpy()
    print("branches", d["branch"].numpy(), "backtracks", bt)
    assert np.all(d["branch"].numpy() == 1)
    assert np.all(bt > 0)
    # the accepted step is alpha rho^k and satisfies the line-9 test
    alpha = 5.0 * 0.9 ** bt
    grad_phi = op.data_grad(x, y) + reg.grad(x, eps)
    v = x.numpy() - alpha[:, None, None] * grad_phi.numpy()
    np.testing.assert_allclose(x_new.numpy(), v, rtol=1e-4, atol=1e-5)
    phi0 = energy(op, reg, x, y, kappa, eps)
    phi1 = energy(op, reg, x_new, y, kappa, eps)
    assert np.all(phi1 - phi0 <= -np.sum(np.abs(v - x.numpy()) ** 2, axis=(1, 2)) / 1e5 + 1e-5 * np.abs(phi0))
    # alpha rho^(k-1) failed the test (k is the first acceptable reduction)
    alpha_prev = 5.0 * 0.9 ** (bt - 1)
    v_prev = x - tf.constant(alpha_prev[:, None, None].astype(np.complex64)) * grad_phi
    phi_prev = energy(op, reg, v_prev, y, kappa, eps)
    assert np.all(phi_prev - phi0 > -np.sum(np.abs(v_prev.numpy() - x.numpy()) ** 2, axis=(1, 2)) / 1e5)


def test_exhausted_line_search_keeps_iterate():
    img, mask, op, y, reg, phase = setup(batch=2, alpha0=1e4, tau0=1e4, max_backtracks=1)
    kappa = tf.constant([1.0, 1.0])
    x, x_new, eps, d = run_phases(phase, reg, op, y, kappa, 1e-3, 1)[0]
    assert np.all(d["branch"].numpy() == 2)
    np.testing.assert_array_equal(x_new.numpy(), x.numpy())
    np.testing.assert_array_equal(d["backtracks"].numpy(), [1, 1])


def test_batch_independence_with_mixed_branches():
    img, mask, op, y, reg, phase = setup(batch=3, alpha0=2.0, tau0=2.0)
    kappa = tf.constant([0.01, 1.0, 0.3])  # different kappas -> different branches
    eps = tf.constant([1e-3, 5e-2, 1e-2])
    x0 = op.zero_filled(y)
    active = tf.constant([True, True, True])
    xb, eb, ab, db = phase.step(reg, op, x0, y, kappa, eps, active)
    xb, eb, ab, db2 = phase.step(reg, op, xb, y, kappa, eb, ab)
    for i in range(3):
        opi = SingleCoilOperator(tf.constant(mask[i : i + 1]))
        xi, ei, ai, di = phase.step(reg, opi, x0[i : i + 1], y[i : i + 1], kappa[i : i + 1], eps[i : i + 1], active[i : i + 1])
        xi, ei, ai, di2 = phase.step(reg, opi, xi, y[i : i + 1], kappa[i : i + 1], ei, ai)
        np.testing.assert_allclose(xi.numpy()[0], xb.numpy()[i], atol=1e-5)
        np.testing.assert_allclose(ei.numpy()[0], eb.numpy()[i], rtol=1e-6)
        for key in ("branch", "backtracks"):
            assert di[key].numpy()[0] == db[key].numpy()[i] and di2[key].numpy()[0] == db2[key].numpy()[i]
    print(db["branch"].numpy(), db2["branch"].numpy())


def test_eps_reduction_and_termination_rules():
    img, mask, op, y, reg, phase = setup(batch=3, sigma=1e3, eps_tol=1e-3)
    x0 = op.zero_filled(y)
    kappa = tf.constant([0.5, 0.5, 0.5])
    # huge eps: sigma*gamma*eps is larger than any gradient norm -> reduced by gamma;
    # tiny eps (below eps_tol/sigma): not reduced and the sample becomes inactive; 2e-6: stays active
    eps = tf.constant([1e3, 1e-9, 2e-6])
    active = tf.constant([True, True, True])
    x1, e1, a1, d = phase.step(reg, op, x0, y, kappa, eps, active)
    _, grad_phi_next = (None, op.data_grad(x1, y) + tf.cast(kappa, tf.complex64)[:, None, None] * reg.grad(x1, eps))
    gn = np.sqrt(np.sum(np.abs(grad_phi_next.numpy()) ** 2, axis=(1, 2)))
    expect = np.where(gn < 1e3 * 0.9 * eps.numpy(), 0.9 * eps.numpy(), eps.numpy())
    np.testing.assert_allclose(e1.numpy(), expect, rtol=1e-6)
    assert e1.numpy()[0] == pytest.approx(900.0) and e1.numpy()[1] == pytest.approx(1e-9)
    np.testing.assert_array_equal(a1.numpy(), [True, False, True])
    # an inactive sample stays fixed, keeps eps and is reported as branch -1
    x2, e2, a2, d2 = phase.step(reg, op, x1, y, kappa, e1, a1)
    np.testing.assert_array_equal(x2.numpy()[1], x1.numpy()[1])
    assert e2.numpy()[1] == e1.numpy()[1] and d2["branch"].numpy()[1] == -1


def test_safeguard_off_is_plain_u_update():
    img, mask, op, y, reg, phase = setup(batch=2, safeguard=False, alpha0=0.3, tau0=0.2)
    kappa = tf.constant([0.4, 0.8])
    x = op.zero_filled(y)
    x1, e1, a1, d = phase.step(reg, op, x, y, kappa, tf.constant([1e-3, 1e-3]), tf.constant([True, True]))
    z = x - 0.3 * op.data_grad(x, y)
    u = z - 0.2 * tf.cast(kappa, tf.complex64)[:, None, None] * reg.grad(z, 1e-3)
    np.testing.assert_allclose(x1.numpy(), u.numpy(), atol=1e-6)
    np.testing.assert_array_equal(e1.numpy(), np.float32([1e-3, 1e-3]))
    assert np.all(d["branch"].numpy() == 0)


@pytest.mark.parametrize(
    "grad_mode,graph",
    [("explicit", False), ("autodiff", False), pytest.param("explicit", True, marks=pytest.mark.slow)],
)
def test_nested_tapes_through_v_branch(grad_mode, graph):
    img, mask, op, y, reg, phase = setup(batch=2, alpha0=20.0, tau0=30.0, grad_mode=grad_mode, max_backtracks=40)
    if graph:  # tracing second-order gradients of the while_loop is slow: use a smaller g
        reg = LearnedRegularizer(num_layers=2, filters=2)
        reg.build(None)
    kappa = tf.constant([1.0, 0.05])
    target = tf.constant(img)
    params = reg.trainable_variables + phase.trainable_variables

    def second_order():
        with tf.GradientTape() as outer:
            with tf.GradientTape() as inner:
                x1, e1, a1, d = phase.step(reg, op, op.zero_filled(y), y, kappa, tf.constant([1e-3, 1e-3]), tf.constant([True, True]))
                loss = tf.reduce_mean(tf.abs(x1 - target) ** 2)
            grads = inner.gradient(loss, params)
            gnorm = tf.add_n([tf.reduce_sum(g**2) for g in grads])
        hv = outer.gradient(gnorm, params)
        return loss, grads, hv, d["branch"]

    loss, grads, hv, branch = (tf.function(second_order) if graph else second_order)()
    assert 1 in branch.numpy()  # the gradient went through the line-search while_loop
    assert all(g is not None and np.all(np.isfinite(g.numpy())) for g in grads)
    assert all(h is not None and np.all(np.isfinite(h.numpy())) for h in hv)
    assert set(branch.numpy().tolist()) <= {0, 1, 2}
    eager = phase.step(reg, op, op.zero_filled(y), y, kappa, tf.constant([1e-3, 1e-3]), tf.constant([True, True]))
    np.testing.assert_allclose(float(loss), float(tf.reduce_mean(tf.abs(eager[0] - target) ** 2)), rtol=1e-5)


def test_explicit_and_autodiff_agree():
    img, mask, op, y, reg, p1 = setup(batch=2, alpha0=0.5, tau0=0.5)
    p2 = LOAPhase(alpha0=0.5, tau0=0.5, grad_mode="autodiff")
    kappa = tf.constant([0.7, 0.7])
    args = (op, op.zero_filled(y), y, kappa, tf.constant([1e-2, 1e-2]), tf.constant([True, True]))
    np.testing.assert_allclose(p1.step(reg, *args)[0].numpy(), p2.step(reg, *args)[0].numpy(), atol=1e-5)


def test_config_and_errors():
    p = LOAPhase(alpha0=0.02, max_backtracks=7, safeguard=False, grad_mode="autodiff")
    q = LOAPhase.from_config(p.get_config())
    assert (q.alpha0, q.max_backtracks, q.safeguard, q.grad_mode) == (0.02, 7, False, "autodiff")
    assert q.algorithm1_config == p.algorithm1_config == Algorithm1Config(max_backtracks=7, safeguard=False, grad_mode="autodiff")
    config = Algorithm1Config(rho=0.5)
    assert LOAPhase(config=config).algorithm1_config is config
    with pytest.raises(ValueError, match="`config` must be an Algorithm1Config"):
        LOAPhase(config={"rho": 0.5})
    with pytest.raises(ValueError, match="grad_mode"):
        LOAPhase(grad_mode="numeric")
    with pytest.raises(ValueError, match="rho"):
        LOAPhase(rho=1.0)


def test_carry_reuses_line15_gradient_per_sample():
    # sample 0 has a huge eps (reduced at line 15 -> its carry is stale), samples 1-2 keep eps
    img, mask, op, y, reg, phase = setup(batch=3, alpha0=0.5, tau0=1.0)
    kappa = tf.constant([0.5, 0.9, 0.2])
    eps = tf.constant([1e3, 1e-3, 2e-3])
    active = tf.constant([True, True, True])
    x0 = op.zero_filled(y)
    x1, e1, a1, d1, c1 = phase.step(reg, op, x0, y, kappa, eps, active, return_carry=True)
    assert e1.numpy()[0] < 1e3 and np.all(e1.numpy()[1:] == eps.numpy()[1:])
    # the carry is phi_{eps_t} and grad phi_{eps_t} at x_{t+1}
    phi_c, grad_c, eps_c = c1
    np.testing.assert_allclose(phi_c.numpy(), energy(op, reg, x1, y, kappa, eps), rtol=1e-5)
    grad_ref = op.data_grad(x1, y) + tf.cast(kappa, tf.complex64)[:, None, None] * reg.grad(x1, eps)
    np.testing.assert_allclose(grad_c.numpy(), grad_ref.numpy(), atol=1e-5 * np.abs(grad_ref.numpy()).max())
    with_carry = phase.step(reg, op, x1, y, kappa, e1, a1, carry=c1)
    without = phase.step(reg, op, x1, y, kappa, e1, a1)
    np.testing.assert_allclose(with_carry[0].numpy(), without[0].numpy(), atol=1e-6)
    for key in ("phi", "grad_norm", "phi_next"):
        np.testing.assert_allclose(with_carry[3][key].numpy(), without[3][key].numpy(), rtol=1e-6)
    # a stale carry (wrong values) is ignored only where eps changed: a deliberately wrong carry
    # for sample 0 must not matter, while samples 1-2 use it
    bad = (c1[0] + tf.constant([1e6, 0.0, 0.0]), c1[1], c1[2])
    x2b = phase.step(reg, op, x1, y, kappa, e1, a1, carry=bad)
    np.testing.assert_allclose(x2b[0].numpy()[0], without[0].numpy()[0], atol=1e-6)
    np.testing.assert_allclose(x2b[3]["phi"].numpy()[0], without[3]["phi"].numpy()[0], rtol=1e-6)
