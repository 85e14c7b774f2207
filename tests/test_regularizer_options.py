"""Options beyond the paper (issue 11): the TV start of g, the eps_0 floor, gradient clipping, wider g."""

import os

import numpy as np
import pytest
import tensorflow as tf

from loa_meta.evaluation.classical import _grad
from loa_meta.layers.learned_regularizer import LearnedRegularizer
from loa_meta.models import LOANet
from loa_meta.training import MetaConfig


def _image(rng, b=2, h=12, w=10):
    return tf.constant((rng.standard_normal((b, h, w)) + 1j * rng.standard_normal((b, h, w))).astype(np.complex64))


@pytest.mark.parametrize("num_layers", [1, 2, 3, 4])
def test_tv_start_makes_g_the_scaled_finite_differences(num_layers):
    rng = np.random.default_rng(num_layers)
    x = _image(rng)
    reg = LearnedRegularizer(num_layers=num_layers, filters=4, init_mode="tv", tv_scale=0.3)
    reg.build(None)
    g = reg.features(x).numpy()
    dv, dh = (d.numpy() for d in _grad(x))
    # forward differences in the interior (the last row/column differ only by the zero padding)
    np.testing.assert_allclose(g[:, :-1, :-1, 0], 0.3 * dh[:, :-1, :-1], atol=1e-5)
    np.testing.assert_allclose(g[:, :-1, :-1, 1], 0.3 * dv[:, :-1, :-1], atol=1e-5)
    np.testing.assert_array_equal(g[..., 2:], 0.0)
    # hence r_eps is the smoothed isotropic TV sum_j sqrt(s^2 |D x|_j^2 + eps^2) - eps
    eps = 1e-2
    s2 = np.sum(np.abs(g) ** 2, axis=-1)
    np.testing.assert_allclose(reg.value(x, eps).numpy(), np.sum(np.sqrt(s2 + eps ** 2) - eps, axis=(1, 2)), rtol=1e-5)
    interior = np.sum(np.sqrt(0.09 * (np.abs(dh) ** 2 + np.abs(dv) ** 2) + eps ** 2)[:, :-1, :-1] - eps, axis=(1, 2))
    np.testing.assert_allclose(np.sum(np.sqrt(s2 + eps ** 2)[:, :-1, :-1] - eps, axis=(1, 2)), interior, rtol=1e-5)


def test_tv_start_with_wider_g_and_config_round_trip():
    rng = np.random.default_rng(0)
    x = _image(rng)
    tf.keras.utils.set_random_seed(0)
    reg = LearnedRegularizer(filters=16, init_mode="tv", tv_scale=1.0)
    reg.build(None)
    g = reg.features(x).numpy()
    dv, dh = (d.numpy() for d in _grad(x))
    # the 12 extra kernels start small (0.1 x Xavier) and non-zero: g_0 is close to, not equal to, D_h x
    err = np.abs(g[:, :-1, :-1, 0] - dh[:, :-1, :-1]).max()
    assert 0 < err < 0.1 * np.abs(dh).max()
    assert np.abs(g[..., 4:]).max() > 0
    cfg = reg.get_config()
    assert cfg["init_mode"] == "tv" and cfg["filters"] == 16
    with pytest.raises(ValueError, match="init_mode='tv' needs filters >= 4"):
        LearnedRegularizer(filters=3, init_mode="tv")
    with pytest.raises(ValueError, match="init_mode"):
        LearnedRegularizer(init_mode="sobel")


def test_loanet_tv_start_and_eps0_floor_survive_save_and_load(tmp_path):
    tf.keras.utils.set_random_seed(0)
    model = LOANet(num_phases=2, filters=4, regularizer_init="tv", tv_scale=0.5, eps0=1e-3, eps0_floor=1e-2)
    path = str(tmp_path / "m.keras")
    model.eps0_var.assign(0.0)
    model.save(path)
    import keras

    loaded = keras.saving.load_model(path, compile=False)
    assert loaded.eps0_floor == 1e-2 and loaded.regularizer_init == "tv" and loaded.tv_scale == 0.5
    for a, b in zip(model.weights, loaded.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert float(loaded.eps0_value()) == pytest.approx(1e-2)


def test_eps0_floor_bounds_eps0_and_keeps_its_gradient():
    model = LOANet(num_phases=1, eps0=3e-3)
    assert float(model.eps0_value()) == pytest.approx(3e-3)  # the paper's |eps_0|
    model.eps0_var.assign(-1e-6)
    assert float(model.eps0_value()) == pytest.approx(1e-6)  # nothing stops the collapse
    floored = LOANet(num_phases=1, eps0=3e-3, eps0_floor=1e-3)
    assert float(floored.eps0_value()) == pytest.approx(np.sqrt(9e-6 + 1e-6))
    for v in (0.0, -1e-6, 1e-9):
        floored.eps0_var.assign(v)
        assert float(floored.eps0_value()) >= 1e-3
    floored.eps0_var.assign(2e-3)
    with tf.GradientTape() as tape:
        e = floored.eps0_value()
    np.testing.assert_allclose(tape.gradient(e, floored.eps0_var).numpy(), 2e-3 / np.sqrt(4e-6 + 1e-6), rtol=1e-5)
    # Algorithm 1 starts from the floored eps: the first phase's eps_t (diagnostics) equals it
    rng = np.random.default_rng(0)
    k = _image(rng, b=1, h=8, w=8)
    _, diag = floored.reconstruct(k, tf.ones((8, 8)), return_diagnostics=True)
    assert diag["eps"][0, 0] == pytest.approx(float(floored.eps0_value()), rel=1e-6)
    with pytest.raises(ValueError, match="eps0_floor"):
        LOANet(num_phases=1, eps0_floor=-1.0)


def test_eps0_floor_is_used_by_plan_and_replay():
    """The training engine (plan, then replay) and inference start Algorithm 1 from the floored eps_0."""
    from tests.test_loa_net import data, inputs

    y, m, _ = data(2, seed=1)
    inp = inputs(y, m, [0, 0])
    tf.keras.utils.set_random_seed(0)
    floored = LOANet(num_phases=2, eps0=5e-3, eps0_floor=1e-2)
    floored.eps0_var.assign(5e-3)
    eps = float(floored.eps0_value())
    assert eps == pytest.approx(np.sqrt(25e-6 + 1e-4))
    # the same network without a floor whose eps0_var holds the floored value: identical x_T
    same = LOANet(num_phases=2, eps0=5e-3)
    same.set_weights(floored.get_weights())
    same.eps0_var.assign(eps)
    # without a floor and the raw eps0_var the result differs (so the comparison can fail)
    raw = LOANet(num_phases=2, eps0=5e-3)
    raw.set_weights(floored.get_weights())
    ref = same(inp).numpy()
    assert np.max(np.abs(raw(inp).numpy() - ref)) > 1e-4 * np.max(np.abs(ref))
    plan = floored.plan(inp)
    np.testing.assert_allclose(plan["x"].numpy(), ref, rtol=0, atol=1e-6 * np.abs(ref).max())
    np.testing.assert_array_equal(plan["branch"].numpy(), same.plan(inp)["branch"].numpy())
    np.testing.assert_allclose(floored.replay(inp, plan).numpy(), ref, rtol=0, atol=1e-6 * np.abs(ref).max())
    np.testing.assert_allclose(floored(inp, training=True).numpy(), ref, rtol=0, atol=1e-6 * np.abs(ref).max())


def test_global_clipnorm_reaches_adam_and_is_validated():
    from loa_meta.training.config import ConventionalConfig
    from loa_meta.training.loop import _make_adam

    opt = _make_adam(ConventionalConfig(global_clipnorm=0.5).validate(), 1e-3)
    assert opt.global_clipnorm == 0.5
    assert _make_adam(ConventionalConfig().validate(), 1e-3).global_clipnorm is None
    with pytest.raises(ValueError, match="global_clipnorm"):
        ConventionalConfig(global_clipnorm=-1.0).validate()
    # the clipping acts on the gradient Adam sees: with a large Adam epsilon the first step is
    # ~ proportional to the gradient, lr * sqrt(1 - b2) g / (sqrt(1 - b2) |g| + epsilon) (Keras' Adam)
    g = np.array([3.0, 4.0], np.float32)  # norm 5
    for clip, g_seen in ((0.5, g / 10.0), (None, g)):
        v = tf.Variable([0.0, 0.0])
        _make_adam(ConventionalConfig(global_clipnorm=clip, adam_epsilon=1e3), 1e-1).apply_gradients([(tf.constant(g), v)])
        c = np.sqrt(1e-3)
        np.testing.assert_allclose(v.numpy(), -0.1 * c * g_seen / (c * np.abs(g_seen) + 1e3), rtol=1e-4)


def test_preset_fields_reach_the_model_and_the_training_config():
    from experiments.presets import get_preset

    p = get_preset("paper")
    assert (p.filters, p.eps0_floor, p.regularizer_init, p.global_clipnorm, p.safeguard) == (4, 0.0, "random", None, True)
    assert LOANet(num_phases=1, **p.model_kwargs()).safeguard is True
    wide = p.override(filters=16, eps0_floor=1e-3, regularizer_init="tv", tv_scale=0.2, global_clipnorm=1.0,
                      safeguard=False)
    model = LOANet(num_phases=1, **wide.model_kwargs())
    assert model.filters == 16 and model.eps0_floor == 1e-3 and model.regularizer.init_mode == "tv"
    assert model.safeguard is False
    assert LOANet(num_phases=1, **wide.conventional_kwargs()).safeguard is False
    assert model.regularizer.convs[0].kernel_real.shape == (3, 3, 1, 16)
    from experiments.training_common import _common_cfg

    assert _common_cfg(wide, 0, 10)["global_clipnorm"] == 1.0
    assert p.loss_reduction == "sum" and _common_cfg(p, 0, 10)["loss_reduction"] == "sum"
    cfg = MetaConfig(**_common_cfg(p.override(loss_reduction="task_norm"), 0, 10))
    assert cfg.loss_reduction == "task_norm" and MetaConfig.from_dict(cfg.to_dict()).loss_reduction == "task_norm"


def test_loss_reduction_flag_offers_exactly_the_library_reductions(monkeypatch):
    """The apps' --loss_reduction choices are a literal list (training_common does not import TensorFlow at
    import time); they must equal loa_meta.training.losses.REDUCTIONS."""
    from experiments import training_common
    from loa_meta.training.losses import REDUCTIONS

    defined = {}

    class Recorder:  # stands in for absl.flags while the app's flags are defined
        def __getattr__(self, kind):
            return lambda name, default, *args, **kwargs: defined.setdefault(name, (kind, args))

    monkeypatch.setattr(training_common, "flags", Recorder())
    training_common.define_model_option_flags()
    kind, args = defined["loss_reduction"]
    assert kind == "DEFINE_enum" and list(args[0]) == list(REDUCTIONS)


def test_option_flags_are_validated_in_the_apps(tmp_path):
    from tests.test_experiments_train import run_app

    for args, flag in ((["--filters=0"], "--filters"), (["--eps0_floor=-1"], "--eps0_floor"), (["--eps0=0"], "--eps0"),
                       (["--global_clipnorm=0"], "--global_clipnorm"), (["--regularizer_init=sobel"], "regularizer_init"),
                       (["--omega_learning_rate=0"], "--omega_learning_rate"),
                       (["--average_checkpoints=4"], "--average_checkpoints"),
                       (["--loss_reduction=avg"], "loss_reduction")):
        proc = run_app("experiments.train_meta", f"--data_dir={tmp_path}", f"--workdir={tmp_path}/w",
                       "--tasks=radial:0.2", *args)
        assert proc.returncode != 0 and flag in proc.stderr, (args, proc.stderr[-2000:])
    proc = run_app("experiments.reproduce", f"--data_dir={tmp_path}", f"--workdir={tmp_path}/r", "--filters=-4")
    assert proc.returncode != 0 and "--filters" in proc.stderr
    assert not os.path.exists(tmp_path / "w") and not os.path.exists(tmp_path / "r")


@pytest.mark.slow
def test_init_weights_flag_errors_and_conventional_kappa(tmp_path):
    import json
    import math

    from tests.test_experiments_train import run_app, write_prepared

    data = write_prepared(str(tmp_path / "data"))
    src = LOANet(num_phases=2, num_tasks=2, filters=4, task_specs=["radial:0.2", "radial:0.4"])
    src.omegas[1].assign(-1.5)
    path = str(tmp_path / "src.keras")
    src.save(path)
    # conventional training from the saved network: kappa = its sigmoid(omega) for the task, recorded
    wd = str(tmp_path / "conv")
    proc = run_app("experiments.train_conventional", f"--data_dir={data}", f"--workdir={wd}", "--preset=tiny",
                   "--task=radial:0.4", "--max_steps=1", f"--init_weights={path}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    cfg = json.load(open(os.path.join(wd, "config.json")))
    assert cfg["init_weights"] == path
    assert cfg["model"]["fixed_kappa"] == pytest.approx(1 / (1 + math.exp(1.5)), rel=1e-6)
    # errors name --init_weights and what was expected; nothing is written
    for module, args, text in (
            ("experiments.train_meta", [f"--init_weights={tmp_path}/missing.keras"], "missing.keras"),
            ("experiments.train_meta", [f"--init_weights={path}", "--filters=8"], "filters 4 (this run: 8)"),
            ("experiments.train_meta", ["--init_weights=pretrained:nope"], "nope"),
            ("experiments.train_istanet", [f"--init_weights={path}", "--task=radial:0.2"], "ISTA-Net+"),
            ("experiments.adapt", [f"--init_weights={path}", f"--model={path}", "--task=radial:0.3"], "adaptation"),
            ("experiments.reproduce", [f"--init_weights={path}", "--filters=16"], "filters 4 (this run: 16)")):
        out = str(tmp_path / "bad")
        proc = run_app(module, f"--data_dir={data}", f"--workdir={out}", "--preset=tiny", *args)
        assert proc.returncode != 0 and "--init_weights" in proc.stderr and text in proc.stderr, (args, proc.stderr[-2000:])
        assert "Traceback" not in proc.stderr and not os.path.exists(out), args
