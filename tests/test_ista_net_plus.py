"""Tests of the complex-valued ISTA-Net+ baseline (loa_meta/models/ista_net_plus.py)."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from loa_meta.models.ista_net_plus import (
    SYMMETRY_LOSS_WEIGHT,
    ISTANetPlus,
    complex_relu,
    complex_soft_threshold,
)
from loa_meta.physics.operators import SingleCoilOperator

H, W, B = 12, 14, 2


# ---------------------------------------------------------------- independent NumPy references
def np_fft2c(x):
    return np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(x, axes=(-2, -1)), norm="ortho"), axes=(-2, -1))


def np_ifft2c(k):
    return np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(k, axes=(-2, -1)), norm="ortho"), axes=(-2, -1))


def np_gd_chain(y, mask, rhos):
    """x_0 = F^H P y, x_k = x_{k-1} - rho_k F^H P (P F x_{k-1} - y), all in NumPy complex128."""
    x = np_ifft2c(mask * y)
    xs = [x]
    for rho in rhos:
        x = x - rho * np_ifft2c(mask * (mask * np_fft2c(x) - y))
        xs.append(x)
    return xs


def np_conv(x, layer):
    """'SAME' cross-correlation of complex x (B, H, W, Cin) with the layer's complex kernel."""
    w = layer.kernel_real.numpy().astype(np.float64) + 1j * layer.kernel_imag.numpy().astype(np.float64)
    k = w.shape[0]
    p = (k - 1) // 2
    xp = np.pad(x, ((0, 0), (p, k - 1 - p), (p, k - 1 - p), (0, 0)))
    out = np.zeros(x.shape[:3] + (w.shape[-1],), np.complex128)
    for a in range(k):
        for b in range(k):
            out += np.einsum("bhwi,ij->bhwj", xp[:, a : a + x.shape[1], b : b + x.shape[2], :], w[a, b])
    return out


def np_relu_c(z):
    return np.maximum(z.real, 0) + 1j * np.maximum(z.imag, 0)


def np_ista_net_plus(model, y, mask):
    """Independent NumPy forward pass of ISTA-Net+ (Zhang & Ghanem 2018, Fig. 3) incl. symmetry loss."""
    x = np_ifft2c(mask * y)
    sym_total = 0.0
    for k in range(model.num_phases):
        rho, theta = float(model.rho[k]), float(model.theta[k])
        r = x - rho * np_ifft2c(mask * (mask * np_fft2c(x) - y))
        xd = np_conv(r[..., None], model.conv_d[k])
        xf = np_conv(np_relu_c(np_conv(xd, model.conv_f1[k])), model.conv_f2[k])
        mag = np.abs(xf)
        z = np.where(mag > theta, xf * (mag - theta) / np.maximum(mag, 1e-30), 0)
        xb = np_conv(np_relu_c(np_conv(z, model.conv_b1[k])), model.conv_b2[k])
        x = r + np_conv(xb, model.conv_g[k])[..., 0]
        sym = np_conv(np_relu_c(np_conv(xf, model.conv_b1[k])), model.conv_b2[k]) - xd
        sym_total = sym_total + np.mean(np.abs(sym) ** 2, axis=(1, 2, 3))
    return x, sym_total


# ---------------------------------------------------------------- fixtures / helpers
def make_data(seed=0, batch=B, per_sample_mask=True, dtype=np.complex64):
    rng = np.random.default_rng(seed)
    img = rng.random((batch, H, W)) + 1j * 0.3 * rng.standard_normal((batch, H, W))
    mshape = (batch, H, W) if per_sample_mask else (H, W)
    mask = (rng.random(mshape) < 0.45).astype(np.float32)
    mask[..., H // 2, W // 2] = 1.0
    y = (mask * np_fft2c(img)).astype(dtype)
    return y, mask, img


def all_convs(model):
    return [
        layer
        for k in range(model.num_phases)
        for layer in (
            model.conv_d[k],
            model.conv_f1[k],
            model.conv_f2[k],
            model.conv_b1[k],
            model.conv_b2[k],
            model.conv_g[k],
        )
    ]


def zero_kernels(layers):
    for layer in layers:
        layer.kernel_real.assign(np.zeros(layer.kernel_real.shape, np.float32))
        layer.kernel_imag.assign(np.zeros(layer.kernel_imag.shape, np.float32))


def identity_kernels(layer):
    """Delta kernels: output channel j copies input channel min(j, C_in - 1)."""
    kr = np.zeros(layer.kernel_real.shape, np.float32)
    k, _, cin, cout = kr.shape
    for j in range(cout):
        kr[k // 2, k // 2, min(j, cin - 1), j] = 1.0
    layer.kernel_real.assign(kr)
    layer.kernel_imag.assign(np.zeros_like(kr))


def model_inputs(y, mask):
    return {"kspace": tf.constant(y), "mask": tf.constant(mask), "task_id": tf.zeros([y.shape[0]], tf.int32)}


# ---------------------------------------------------------------- building blocks
def test_complex_soft_threshold_matches_formula_and_original_real_case():
    rng = np.random.default_rng(3)
    z = rng.standard_normal((5, 7)) + 1j * rng.standard_normal((5, 7))
    z[0, 0] = 0.0
    theta = 0.6
    mag = np.abs(z)
    expected = np.where(mag > 0, z * np.maximum(mag - theta, 0) / np.where(mag > 0, mag, 1), 0)
    got = complex_soft_threshold(tf.constant(z.astype(np.complex64)), tf.constant(theta)).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-6)
    # Real input: reduces to the original ISTA-Net+ sign(x) * relu(|x| - theta).
    xr = rng.standard_normal(50)
    got_r = complex_soft_threshold(tf.constant(xr.astype(np.complex64)), theta).numpy()
    np.testing.assert_allclose(got_r.real, np.sign(xr) * np.maximum(np.abs(xr) - theta, 0), atol=1e-6)
    np.testing.assert_array_equal(got_r.imag, 0.0)
    # Commutes with a global phase rotation (MR images have arbitrary phase).
    phase = np.exp(1j * 0.7)
    rot = complex_soft_threshold(tf.constant((phase * z).astype(np.complex64)), theta).numpy()
    np.testing.assert_allclose(rot, phase * got, atol=1e-6)


def test_complex_soft_threshold_gradient_finite_at_zero():
    z = tf.Variable(tf.zeros([4], tf.complex64))
    with tf.GradientTape() as tape:
        out = complex_soft_threshold(z, 0.1)
        loss = tf.reduce_sum(tf.math.real(out) + tf.math.imag(out))
    g = tape.gradient(loss, z).numpy()
    assert np.all(np.isfinite(g.real)) and np.all(np.isfinite(g.imag))


def test_complex_relu_acts_on_parts():
    z = np.array([1 - 2j, -1 + 3j, -0.5 - 0.5j, 2 + 0j], np.complex64)
    got = complex_relu(tf.constant(z)).numpy()
    np.testing.assert_array_equal(got, np.maximum(z.real, 0) + 1j * np.maximum(z.imag, 0))


# ---------------------------------------------------------------- model
def test_output_shape_dtype_and_variables():
    keras.utils.set_random_seed(0)
    model = ISTANetPlus(num_phases=3, filters=4)
    for per_sample in (True, False):
        y, mask, _ = make_data(per_sample_mask=per_sample)
        out = model(model_inputs(y, mask))
        assert out.shape == (B, H, W)
        assert out.dtype == tf.complex64
        assert np.all(np.isfinite(out.numpy()))
    # Per phase: 6 complex convs (2 real kernels each) + rho + theta; nothing shared.
    assert len(model.theta_variables) == 3 * (6 * 2 + 2)
    assert len({id(v) for v in model.theta_variables}) == len(model.theta_variables)
    assert model.omega_variables == []
    shapes = sorted(tuple(v.shape) for v in model.theta_variables if len(v.shape) == 4)
    assert shapes.count((3, 3, 1, 4)) == 2 * 3  # D_k
    assert shapes.count((3, 3, 4, 1)) == 2 * 3  # G_k
    assert shapes.count((3, 3, 4, 4)) == 2 * 4 * 3  # F_k, F~_k
    np.testing.assert_allclose([float(v) for v in model.rho], 0.5)
    np.testing.assert_allclose([float(v) for v in model.theta], 0.01)


def test_forward_and_symmetry_loss_match_numpy_reference():
    keras.utils.set_random_seed(7)
    model = ISTANetPlus(num_phases=2, filters=3)
    for v, t in zip(model.theta, (0.3, 0.5)):  # thresholds that actually zero some features
        v.assign(t)
    model.rho[0].assign(0.6)
    y, mask, _ = make_data(seed=10)
    out, sym = model.reconstruct(tf.constant(y), tf.constant(mask), return_symmetry_loss=True)
    ref_x, ref_sym = np_ista_net_plus(model, y.astype(np.complex128), mask.astype(np.float64))
    np.testing.assert_allclose(out.numpy(), ref_x, atol=1e-5 * np.abs(ref_x).max())
    np.testing.assert_allclose(sym.numpy(), ref_sym, rtol=1e-4)
    assert np.abs(ref_x - np_ifft2c(mask * y)).max() > 1e-2  # the network changes the image


def test_zero_kernels_give_gradient_descent_chain():
    """With zero conv kernels every phase is a plain gradient step x - rho A^H(A x - y).

    Started from x_0 = A^H y that chain is stationary (A x_0 = y), so phase 1 keeps random
    kernels to move the iterate away from x_0; phases 2-3 (zero kernels) must then match the
    NumPy gradient-descent chain started from x_1.
    """
    keras.utils.set_random_seed(6)
    model = ISTANetPlus(num_phases=3)
    convs = all_convs(model)
    zero_kernels(convs[6:])
    rhos = [0.5, 0.7, 1.3]
    for v, r in zip(model.rho, rhos):
        v.assign(r)
    y, mask, _ = make_data(seed=1)
    out, xs = model.reconstruct(tf.constant(y), tf.constant(mask), return_intermediates=True)
    assert len(xs) == 4
    np.testing.assert_allclose(xs[0].numpy(), np_ifft2c(mask * y), atol=1e-5)  # x_0 = A^H y
    x1 = xs[1].numpy().astype(np.complex128)
    assert np.abs(x1 - xs[0].numpy()).max() > 1e-2  # phase 1 moved the iterate
    ref = [x1]
    for rho in rhos[1:]:
        x = ref[-1]
        ref.append(x - rho * np_ifft2c(mask * (mask * np_fft2c(x) - y)))
    for got, exp in zip(xs[2:], ref[1:]):
        np.testing.assert_allclose(got.numpy(), exp, atol=2e-5 * np.abs(exp).max())
    np.testing.assert_allclose(out.numpy(), ref[-1], atol=2e-5 * np.abs(ref[-1]).max())
    assert np.abs(ref[-1] - ref[0]).max() > 1e-2  # the gradient steps really move it
    # All kernels zero: the whole network is the (stationary) chain, i.e. zero filling.
    zero_kernels(convs)
    out0 = model.reconstruct(tf.constant(y), tf.constant(mask)).numpy()
    np.testing.assert_allclose(out0, np_gd_chain(y, mask, rhos)[-1], atol=1e-5)


def test_data_consistency_step_matches_operator():
    keras.utils.set_random_seed(1)
    model = ISTANetPlus(num_phases=2)
    zero_kernels([model.conv_g[1]])  # phase 2 is a pure gradient step
    model.rho[1].assign(0.8)
    y, mask, _ = make_data(seed=2)
    _, xs = model.reconstruct(tf.constant(y), tf.constant(mask), return_intermediates=True)
    x1, x2 = xs[1], xs[2]
    op = SingleCoilOperator(tf.constant(mask))
    np.testing.assert_allclose(x2.numpy(), (x1 - 0.8 * op.data_grad(x1, tf.constant(y))).numpy(), atol=1e-5)
    # With rho = 1 a gradient step on f enforces exact data consistency: P F r = y, and keeps
    # the unsampled k-space of the previous iterate.
    model.rho[1].assign(1.0)
    _, xs = model.reconstruct(tf.constant(y), tf.constant(mask), return_intermediates=True)
    k1, k2 = np_fft2c(xs[1].numpy()), np_fft2c(xs[2].numpy())
    scale = np.abs(y).max()
    np.testing.assert_allclose(mask * k2, y, atol=1e-5 * scale)
    np.testing.assert_allclose((1 - mask) * k2, (1 - mask) * k1, atol=1e-5 * scale)
    assert np.abs((1 - mask) * k1).max() > 1e-3 * scale  # phase 1 filled in unsampled k-space


def test_symmetry_loss_with_identity_kernels():
    """D, F, F~ = identity convolutions: F~(F(D r)) = relu(r) per part, so the symmetry residual is
    the negative part of r_k and the loss is sum_k mean(min(Re r_k, 0)^2 + min(Im r_k, 0)^2)."""
    model = ISTANetPlus(num_phases=2)
    for k in range(2):
        for layer in (model.conv_d[k], model.conv_f1[k], model.conv_f2[k], model.conv_b1[k], model.conv_b2[k]):
            identity_kernels(layer)
    zero_kernels(model.conv_g)
    rhos = [0.6, 0.9]
    for v, r in zip(model.rho, rhos):
        v.assign(r)
    y, mask, _ = make_data(seed=4)
    out, sym = model.reconstruct(tf.constant(y), tf.constant(mask), return_symmetry_loss=True)
    xs = np_gd_chain(y.astype(np.complex128), mask.astype(np.float64), rhos)
    expected = sum(
        np.mean(np.minimum(r.real, 0) ** 2 + np.minimum(r.imag, 0) ** 2, axis=(1, 2)) for r in xs[1:]
    )
    assert sym.shape == (B,)
    assert np.all(expected > 1e-4)  # r_k has negative parts, so this can fail
    np.testing.assert_allclose(sym.numpy(), expected, rtol=1e-4)
    # Non-negative images (real and imaginary parts) satisfy the constraint exactly.
    model.rho[0].assign(0.0)
    model.rho[1].assign(0.0)
    img = np.abs(make_data(seed=5)[2]) * (1 + 1j)
    y_full = np_fft2c(img).astype(np.complex64)
    ones = np.ones((H, W), np.float32)
    _, sym0 = model.reconstruct(tf.constant(y_full), tf.constant(ones), return_symmetry_loss=True)
    np.testing.assert_allclose(sym0.numpy(), 0.0, atol=1e-10)
    assert 0 < SYMMETRY_LOSS_WEIGHT < 1


def test_gradients_exist_and_match_finite_differences():
    keras.utils.set_random_seed(2)
    model = ISTANetPlus(num_phases=2, dtype="float64")
    y, mask, img = make_data(seed=6, dtype=np.complex128)
    y_t, m_t, target = tf.constant(y), tf.constant(mask.astype(np.float64)), tf.constant(img)

    def loss_fn():
        x, sym = model.reconstruct(y_t, m_t, return_symmetry_loss=True)
        d = x - target
        mse = tf.reduce_mean(tf.math.real(d) ** 2 + tf.math.imag(d) ** 2)
        return mse + SYMMETRY_LOSS_WEIGHT * tf.reduce_mean(sym)

    with tf.GradientTape() as tape:
        loss = loss_fn()
    grads = tape.gradient(loss, model.theta_variables)
    assert all(g is not None for g in grads)
    assert all(np.all(np.isfinite(g.numpy())) for g in grads)
    assert sum(float(np.abs(g.numpy()).sum()) > 0 for g in grads) == len(grads)

    by_var = {id(v): g for v, g in zip(model.theta_variables, grads)}
    eps = 1e-6
    idx = (1, 2, 0, 3)
    checks = [
        (model.rho[1], None),  # not rho_0: grad f(x_0 = A^H y) = 0, so d loss / d rho_0 = 0
        (model.theta[1], None),
        (model.conv_f1[0].kernel_imag, idx),
        (model.conv_g[1].kernel_real, (0, 1, 2, 0)),
    ]
    for var, index in checks:
        base = var.numpy().copy()
        analytic = by_var[id(var)].numpy() if index is None else by_var[id(var)].numpy()[index]
        vals = []
        for sgn in (1.0, -1.0):
            pert = base.copy()
            if index is None:
                pert = pert + sgn * eps
            else:
                pert[index] += sgn * eps
            var.assign(pert)
            vals.append(float(loss_fn()))
        var.assign(base)
        numeric = (vals[0] - vals[1]) / (2 * eps)
        assert abs(float(analytic)) > 1e-8, var.path
        np.testing.assert_allclose(float(analytic), numeric, rtol=1e-5, atol=1e-10, err_msg=var.path)


def test_batch_independence():
    keras.utils.set_random_seed(3)
    model = ISTANetPlus(num_phases=2)
    y, mask, _ = make_data(seed=7, batch=3)
    out = model(model_inputs(y, mask)).numpy()
    for i in range(3):
        single = model(model_inputs(y[i : i + 1], mask[i : i + 1])).numpy()
        np.testing.assert_allclose(single[0], out[i], atol=1e-5)
    # Changing sample 2 leaves samples 0 and 1 untouched.
    y2 = y.copy()
    y2[2] *= 3.0
    out2 = model(model_inputs(y2, mask)).numpy()
    np.testing.assert_allclose(out2[:2], out[:2], atol=1e-6)
    assert np.abs(out2[2] - out[2]).max() > 1e-3


def test_config_round_trip_and_keras_save_load(tmp_path):
    keras.utils.set_random_seed(4)
    model = ISTANetPlus(num_phases=2, filters=3, kernel_size=3, rho0=0.4, theta0=0.02, name="ista")
    model.rho[1].assign(0.9)  # a trained-looking value, not the initial one
    y, mask, _ = make_data(seed=8)
    inputs = model_inputs(y, mask)
    out = model(inputs).numpy()

    config = model.get_config()
    assert config["num_phases"] == 2 and config["filters"] == 3 and config["rho0"] == 0.4
    clone = ISTANetPlus.from_config(config)
    assert clone.get_config() == config
    assert np.abs(clone(inputs).numpy() - out).max() > 1e-4  # fresh weights differ
    clone.set_weights(model.get_weights())
    np.testing.assert_allclose(clone(inputs).numpy(), out, atol=1e-6)

    path = os.path.join(tmp_path, "ista.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded, ISTANetPlus)
    assert loaded.num_phases == 2 and loaded.filters == 3
    np.testing.assert_allclose(loaded(inputs).numpy(), out, atol=1e-6)
    np.testing.assert_allclose(float(loaded.rho[1]), 0.9)


def test_works_inside_tf_function():
    keras.utils.set_random_seed(5)
    model = ISTANetPlus(num_phases=2)
    y, mask, img = make_data(seed=9)
    inputs = model_inputs(y, mask)
    target = tf.constant(img.astype(np.complex64))

    @tf.function
    def step(inp):
        with tf.GradientTape() as tape:
            x, sym = model.reconstruct(inp["kspace"], inp["mask"], inp["task_id"], return_symmetry_loss=True)
            d = x - target
            loss = tf.reduce_mean(tf.math.real(d) ** 2 + tf.math.imag(d) ** 2) + 0.01 * tf.reduce_mean(sym)
        return x, tape.gradient(loss, model.theta_variables)

    x_graph, grads = step(inputs)
    np.testing.assert_allclose(x_graph.numpy(), model(inputs).numpy(), atol=1e-5)
    assert all(g is not None for g in grads)
    compiled = tf.function(lambda inp: model(inp))
    np.testing.assert_allclose(compiled(inputs).numpy(), x_graph.numpy(), atol=1e-5)


def test_bad_input_errors():
    with pytest.raises(ValueError, match="num_phases"):
        ISTANetPlus(num_phases=0)
    with pytest.raises(ValueError, match="filters"):
        ISTANetPlus(filters=-1)
    with pytest.raises(ValueError, match="rho0"):
        ISTANetPlus(rho0=0.0)
    with pytest.raises(ValueError, match="theta0"):
        ISTANetPlus(theta0=-0.1)
    model = ISTANetPlus(num_phases=1)
    y, mask, _ = make_data()
    with pytest.raises(TypeError, match="dict"):
        model(tf.constant(y))
    with pytest.raises(KeyError, match="mask"):
        model({"kspace": tf.constant(y)})
    with pytest.raises(TypeError, match="kspace"):
        model({"kspace": tf.constant(np.abs(y)), "mask": tf.constant(mask)})
    with pytest.raises(ValueError, match="kspace"):
        model({"kspace": tf.constant(y[0]), "mask": tf.constant(mask[0])})
    with pytest.raises(ValueError, match="mask"):
        model({"kspace": tf.constant(y), "mask": tf.constant(mask[:, :-1])})


def test_tf_checkpoint_saves_and_restores_every_weight(tmp_path):
    """Training checkpoints use tf.train.Checkpoint, which does not look inside Keras lists."""
    y, mask, _ = make_data(seed=3)
    inputs = {"kspace": tf.constant(y), "mask": tf.constant(mask), "task_id": tf.zeros((B,), tf.int32)}
    keras.utils.set_random_seed(10)
    a = ISTANetPlus(num_phases=2, filters=3)
    keras.utils.set_random_seed(11)
    b = ISTANetPlus(num_phases=2, filters=3)
    out_a = a(inputs).numpy()
    assert np.abs(out_a - b(inputs).numpy()).max() > 1e-4
    path = tf.train.Checkpoint(model=a).save(str(tmp_path / "ckpt"))
    saved = [name for name, _ in tf.train.list_variables(path) if "model/" in name]
    assert len(saved) == len(a.trainable_variables)
    tf.train.Checkpoint(model=b).restore(path).assert_existing_objects_matched()
    np.testing.assert_allclose(b(inputs).numpy(), out_a, atol=1e-6)
