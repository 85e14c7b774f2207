"""Warm start (``init_weights``): what is copied from a saved LOA network, what is kept, the errors,
and that meta-learning / conventional training really start from the copied weights."""

import json
import math
import os

import numpy as np
import pytest
import tensorflow as tf

from loa_meta.models.ista_net_plus import ISTANetPlus
from loa_meta.models.loa_net import LOANet
from loa_meta.training import AdaptConfig, ConventionalConfig, MetaConfig, train_conventional, train_meta
from loa_meta.training.warm_start import WarmStartError, check_compatible, load_source, source_kappa, warm_start
from tests.training_helpers import make_arrays

COMMON = dict(compile_steps=False, log_every=100, image_every=0, summary_every=5)
THREE = {"enabled": False, "max_phases": 3}  # 3 phases from the start (the source has 2)


def _source(tmp_path, filters=4, phases=2, specs=("radial:0.1", "radial:0.3")):
    """A saved LOANet whose every parameter differs from its initial value (seeded), as after training."""
    m = LOANet(num_phases=phases, num_tasks=len(specs), filters=filters, task_specs=list(specs), alpha0=0.5, tau0=0.1)
    rng = np.random.default_rng(7)
    for v in m.regularizer.weights:
        v.assign(_arr(v) + 0.05 * rng.normal(size=v.shape).astype(np.float32))
    for t, p in enumerate(m.phases):
        p.alpha.assign(0.4 + 0.1 * t)
        p.tau.assign(0.2 + 0.05 * t)
    for i, w in enumerate(m.omegas):
        w.assign(-2.0 - 0.5 * i)
    m.eps0_var.assign(0.02)
    path = str(tmp_path / "source.keras")
    m.save(path)
    return m, path


def _arr(v):
    return np.asarray(v.numpy() if hasattr(v, "numpy") else v)


def test_warm_start_copies_theta_by_phase_and_omega_by_task_spec(tmp_path):
    src, path = _source(tmp_path)
    loaded = load_source(path)
    tgt = LOANet(num_phases=3, num_tasks=3, filters=4, initial_omega=-4.0,
                 task_specs=["radial:0.3", "radial:0.2", "radial:0.1"])
    report = warm_start(tgt, loaded)
    for a, b in zip(tgt.regularizer.weights, src.regularizer.weights):
        np.testing.assert_array_equal(_arr(a), _arr(b))
    assert float(tgt.eps0_var.numpy()) == float(src.eps0_var.numpy())
    # phases 0, 1 from the source's; the extra phase 2 from the source's last (as add_phase does)
    for t, s in ((0, 0), (1, 1), (2, 1)):
        assert float(tgt.phases[t].alpha.numpy()) == float(src.phases[s].alpha.numpy())
        assert float(tgt.phases[t].tau.numpy()) == float(src.phases[s].tau.numpy())
    # omega by canonical task spec, not by index; radial:0.2 is unknown to the source: kept at -4
    assert float(tgt.omegas[0].numpy()) == float(src.omegas[1].numpy())
    assert float(tgt.omegas[2].numpy()) == float(src.omegas[0].numpy())
    assert float(tgt.omegas[1].numpy()) == -4.0
    assert report["kept"] == [tgt.omegas[1].path] and len(report["copied"]) == 6 + 1 + 6 + 2
    # a shorter target takes the first phases
    short = LOANet(num_phases=1, num_tasks=1, filters=4)
    warm_start(short, loaded)
    assert float(short.phases[0].alpha.numpy()) == float(src.phases[0].alpha.numpy())
    assert float(short.omegas[0].numpy()) == 0.0  # no task spec: nothing to match


def test_source_kappa_is_sigmoid_of_the_matching_task_omega(tmp_path):
    src, path = _source(tmp_path)
    loaded = load_source(path)
    w = float(src.omegas[1].numpy())
    assert source_kappa(loaded, "radial:0.30") == pytest.approx(1 / (1 + math.exp(-w)), rel=1e-7)
    assert source_kappa(loaded, "radial:0.2") is None
    assert source_kappa(loaded, "cartesian:0.1") is None


def test_warm_start_errors_name_the_file_and_the_mismatch(tmp_path):
    _, path = _source(tmp_path, filters=8)
    with pytest.raises(WarmStartError, match=r"filters 8 \(this run: 4\)"):
        warm_start(LOANet(num_phases=1, filters=4), load_source(path))
    with pytest.raises(WarmStartError, match="no model file .*missing.keras"):
        load_source(str(tmp_path / "missing.keras"))
    bad = tmp_path / "bad.keras"
    bad.write_bytes(b"not a zip archive")
    with pytest.raises(WarmStartError, match="cannot load .*bad.keras"):
        load_source(str(bad))
    ista = ISTANetPlus(num_phases=1)
    ipath = str(tmp_path / "ista.keras")
    ista.save(ipath)
    with pytest.raises(WarmStartError, match="holds a ISTANetPlus"):
        load_source(ipath)
    with pytest.raises(WarmStartError, match="unknown|Unknown"):
        load_source("pretrained:no-such-model")
    with pytest.raises(WarmStartError, match="supports the LOA network only"):
        check_compatible(ista, load_source(path))
    with pytest.raises(ValueError, match="does not apply to adaptation"):
        AdaptConfig(init_weights=path).validate()
    with pytest.raises(ValueError, match="init_weights"):
        MetaConfig(init_weights="").validate()


def _restore_start(workdir, model):
    """Load the run's start-of-run checkpoint (outer iteration 0) into ``model``."""
    ckpt = os.path.join(workdir, "ckpt", "ckpt-0")
    tf.train.Checkpoint(model=model).restore(ckpt).expect_partial()
    return model


@pytest.mark.slow
def test_meta_and_conventional_runs_start_from_the_init_weights(tmp_path):
    src, path = _source(tmp_path, specs=("radial:0.1", "radial:0.3"))
    tr, va = make_arrays(2, seed=3), make_arrays(2, seed=4)
    fixed = lambda a: tf.data.Dataset.from_tensors({k: tf.constant(v) for k, v in a.items()}).repeat()  # noqa: E731
    # delta0 tiny: line 6's stopping test never skips the update (one theta + one omega step per pair)
    cfg = MetaConfig(learning_rate=1e-3, max_steps=2, checkpoint_every=1, init_weights=path, stairwise=THREE,
                     delta0=1e-12, delta_tol=1e-13, max_inner_iterations=1,
                     model=dict(num_tasks=2, filters=4, task_specs=["radial:0.3", "radial:0.5"]), **COMMON)
    wd = str(tmp_path / "meta")
    model, _ = train_meta(cfg, wd, {"train": fixed(tr), "val": fixed(va)})
    start = _restore_start(wd, LOANet(num_phases=3, num_tasks=2, filters=4))
    for a, b in zip(start.regularizer.weights, src.regularizer.weights):
        np.testing.assert_array_equal(_arr(a), _arr(b))
    assert float(start.omegas[0].numpy()) == -2.5 and float(start.omegas[1].numpy()) == 0.0
    assert json.load(open(os.path.join(wd, "config.json")))["init_weights"] == path
    # the trained kernels moved from the copied ones by at most Adam's first step (lr per entry)
    k0 = _arr(src.regularizer.weights[0])
    d = np.abs(_arr(model.regularizer.weights[0]) - k0).max()
    assert 0 < d <= 1e-3 * 1.01
    # a resumed run restores its checkpoint and does not copy again
    cfg2 = MetaConfig.from_dict(dict(cfg.to_dict(), max_steps=4))
    again, _ = train_meta(cfg2, wd, {"train": fixed(tr), "val": fixed(va)})
    assert np.abs(_arr(again.regularizer.weights[0]) - _arr(model.regularizer.weights[0])).max() <= 2 * 1e-3 * 1.01
    assert np.abs(_arr(again.regularizer.weights[0]) - k0).max() > 0
    # conventional training from the same file: theta copied, one supervised step away after training
    ccfg = ConventionalConfig(learning_rate=1e-3, max_steps=1, batch_size=2, checkpoint_every=1, init_weights=path,
                              stairwise=THREE,
                              model=dict(filters=4, use_task_weights=False, fixed_kappa=0.05), **COMMON)
    cwd = str(tmp_path / "conv")
    conv, _ = train_conventional(ccfg, cwd, {"train": fixed(tr)})
    cstart = _restore_start(cwd, LOANet(num_phases=3, filters=4, use_task_weights=False, fixed_kappa=0.05))
    np.testing.assert_array_equal(_arr(cstart.regularizer.weights[3]), _arr(src.regularizer.weights[3]))
    assert float(cstart.phases[2].alpha.numpy()) == pytest.approx(0.5)  # the source's last phase
    assert 0 < np.abs(_arr(conv.regularizer.weights[0]) - k0).max() <= 1e-3 * 1.01
