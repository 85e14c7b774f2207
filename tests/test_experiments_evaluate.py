"""experiments.evaluate end to end on tiny data (subprocess, real absl flag parsing) and common helpers."""

import csv
import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from absl import app

from experiments import common

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
H, W = 12, 14


def write_prepared(data_dir, rng, n=3):
    """A minimal prepared dataset (manifest + float32 shards in [0, 1])."""
    os.makedirs(data_dir, exist_ok=True)
    splits = {}
    for split in ("val", "test"):
        x = np.zeros((n, H, W), np.float32)
        for i in range(n):
            x[i, 2 + i : 10, 3:12] = 0.6
            x[i, 5:8, 5 + i : 9] = 1.0
        x = np.clip(x + 0.05 * rng.random(x.shape), 0, 1).astype(np.float32)
        path = os.path.join(data_dir, f"{split}.npy")
        np.save(path, x)
        splits[split] = {"file": f"{split}.npy", "shape": list(x.shape),
                         "sha256": hashlib.sha256(open(path, "rb").read()).hexdigest()}
    with open(os.path.join(data_dir, "manifest.json"), "w") as f:
        json.dump({"splits": splits}, f)


def run_app(module, *args, timeout=600):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="",
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def _save_models(tmp_path):
    import tensorflow as tf

    from loa_meta.models import LOANet

    tf.keras.utils.set_random_seed(0)
    # task ids in the opposite order of --tasks: evaluate must look each spec up (issue 12.4)
    meta = LOANet(num_phases=2, num_tasks=2, task_specs=["radial:0.4", "radial:0.2"])
    meta.omegas[1].assign(1.5)
    meta.omegas[0].assign(0.5)
    meta_path = str(tmp_path / "meta" / "model.keras")
    os.makedirs(os.path.dirname(meta_path))
    meta.save(meta_path)
    for name in ("radial_0.20", "radial_0.40"):
        conv = LOANet(num_phases=1, num_tasks=1, use_task_weights=False)
        os.makedirs(tmp_path / f"conv_{name}")
        conv.save(str(tmp_path / f"conv_{name}" / "model.keras"))
    return meta_path


@pytest.mark.slow
def test_evaluate_end_to_end(tmp_path, rng):
    from loa_meta import metrics
    from loa_meta.physics.operators import SingleCoilOperator
    from loa_meta.sampling import make_mask, save_mask

    data_dir = str(tmp_path / "data")
    write_prepared(data_dir, rng)
    meta_path = _save_models(tmp_path)
    mask_dir = tmp_path / "masks"
    os.makedirs(mask_dir)
    saved = make_mask("cartesian", (H, W), 0.5, seed=5)  # deliberately not what radial:0.2 would build
    save_mask(str(mask_dir / "radial_0.20.npy"), saved)
    workdir = str(tmp_path / "eval")
    res = run_app("experiments.evaluate", f"--data_dir={data_dir}", "--tasks=radial:0.2,radial:0.4",
                  f"--mask_dir={mask_dir}", "--mask_seed=3",
                  f"--models=meta={meta_path},conventional={tmp_path}/conv_{{task}}/model.keras",
                  f"--workdir={workdir}", "--classical", "--tv_lambda=0.003", "--tv_iters=20",
                  "--batch_size=2", "--zoom_box=2,3,6,7")
    assert res.returncode == 0, res.stderr[-3000:]
    files = set(os.listdir(workdir))
    assert {"table.md", "table.csv", "per_slice.csv", "figure.png", "config.json", "masks.json",
            "convergence_meta.png", "convergence_conventional.png"} <= files
    assert not [f for f in files if f.startswith(".")]  # no temporary files left
    rows = list(csv.DictReader(open(os.path.join(workdir, "table.csv"))))
    assert [(r["task"], r["method"]) for r in rows] == [
        (t, m) for t in ("radial_0.20", "radial_0.40") for m in ("Zero-filled", "TV", "meta", "conventional")]
    by = {(r["task"], r["method"]): r for r in rows}
    # sigma(omega_i) of the meta model, none for the others
    assert float(by[("radial_0.20", "meta")]["sigma_omega"]) == pytest.approx(1 / (1 + np.exp(-1.5)), rel=1e-5)
    assert float(by[("radial_0.40", "meta")]["sigma_omega"]) == pytest.approx(1 / (1 + np.exp(-0.5)), rel=1e-5)
    assert by[("radial_0.20", "conventional")]["sigma_omega"] == ""
    # the zero-filled row used the SAME saved mask from --mask_dir for radial:0.2, and the built one for 0.4
    test = np.load(os.path.join(data_dir, "test.npy"))
    import tensorflow as tf

    for task, mask in (("radial_0.20", saved), ("radial_0.40", make_mask("radial", (H, W), 0.4, seed=3))):
        op = SingleCoilOperator(tf.constant(mask.astype(np.float32)))
        zf = np.abs(op.zero_filled(op.forward(tf.constant(test.astype(np.complex64)))).numpy())
        p = metrics.psnr(zf, test)
        assert float(by[(task, "Zero-filled")]["psnr_mean"]) == pytest.approx(p.mean(), rel=1e-4)
        assert float(by[(task, "Zero-filled")]["psnr_std"]) == pytest.approx(p.std(), rel=1e-3)
    sources = json.load(open(os.path.join(workdir, "masks.json")))
    assert sources["radial_0.20"].endswith("radial_0.20.npy") and "seed 3" in sources["radial_0.40"]
    md = open(os.path.join(workdir, "table.md")).read()
    assert "radial 20%" in md and "σ(ω_i)" in md and " ± " in md
    cfg = json.load(open(os.path.join(workdir, "config.json")))
    assert cfg["tasks"] == ["radial:0.2", "radial:0.4"] and cfg["task_ids"] == {"meta": [1, 0]}
    assert cfg["num_slices"] == 3 and cfg["image_shape"] == [H, W]
    with open(os.path.join(workdir, "figure.png"), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def _evaluate_meta_and_conventional(tmp_path, rng, *flags):
    """evaluate a shared meta model and per-task conventional models on radial 20/40 % with ``flags``:
    ``(data_dir, meta_path, workdir, {(task, method): mean PSNR}, process)``."""
    data_dir = str(tmp_path / "data")
    write_prepared(data_dir, rng)
    meta_path = _save_models(tmp_path)
    workdir = str(tmp_path / "eval")
    res = run_app("experiments.evaluate", f"--data_dir={data_dir}", "--tasks=radial:0.2,radial:0.4",
                  f"--models=meta={meta_path},conventional={tmp_path}/conv_{{task}}/model.keras", *flags,
                  f"--workdir={workdir}", "--noclassical", "--noconvergence", "--batch_size=2")
    assert res.returncode == 0, res.stderr[-3000:]
    by = {(r["task"], r["method"]): float(r["psnr_mean"]) for r in csv.DictReader(open(os.path.join(workdir, "table.csv")))}
    return data_dir, meta_path, workdir, by, res


def test_evaluate_iterations_runs_loa_models_past_their_phases(tmp_path, rng):
    """--iterations: per task, LOA models run that many Algorithm 1 iterations (0 = their trained T)."""
    import tensorflow as tf

    from loa_meta import metrics
    from loa_meta.physics.operators import SingleCoilOperator
    from loa_meta.sampling import make_mask

    data_dir, meta_path, workdir, by, _ = _evaluate_meta_and_conventional(tmp_path, rng, "--iterations=5,0")
    test = np.load(os.path.join(data_dir, "test.npy"))
    meta = common.load_model(meta_path)
    conv = common.load_model(str(tmp_path / "conv_radial_0.20" / "model.keras"))
    got = {}
    for task, ratio, tid, n in (("radial_0.20", 0.2, 1, 5), ("radial_0.40", 0.4, 0, None)):
        mask = tf.constant(make_mask("radial", (H, W), ratio, seed=0).astype(np.float32))
        y = SingleCoilOperator(mask).forward(tf.constant(test.astype(np.complex64)))
        m = tf.broadcast_to(mask, y.shape)
        x = meta.reconstruct(y, m, tf.fill((len(test),), tid), num_iterations=n)
        got[(task, "meta")] = metrics.psnr(np.abs(x.numpy()), test).mean()
        if n:
            x = conv.reconstruct(y, m, tf.zeros((len(test),), tf.int32), num_iterations=n)
            got[(task, "conventional")] = metrics.psnr(np.abs(x.numpy()), test).mean()
            # the longer run differs from the trained phases' result: the flag did something
            t_phases = metrics.psnr(np.abs(meta.reconstruct(y, m, tf.fill((len(test),), tid)).numpy()), test).mean()
            assert abs(got[(task, "meta")] - t_phases) > 1e-3
    for key, value in got.items():
        assert by[key] == pytest.approx(value, abs=1e-3), key
    cfg = json.load(open(os.path.join(workdir, "config.json")))
    assert cfg["iterations"] == ["5", "0"] and cfg["iterations_applied_to"] == ["conventional", "meta"]
    bad = run_app("experiments.evaluate", f"--data_dir={data_dir}", "--tasks=radial:0.2,radial:0.4",
                  f"--models=meta={meta_path}", "--iterations=5", f"--workdir={tmp_path / 'w'}")
    assert bad.returncode != 0 and "--iterations: expected 2 integers" in bad.stderr
    assert not os.path.exists(tmp_path / "w")


def test_evaluate_iterations_auto_chooses_on_the_selection_split(tmp_path, rng):
    """--iterations=auto: per LOA model and task, the count select_iterations picks on --iterations_split."""
    from loa_meta.evaluation.evaluate import evaluate_model, model_reconstruct_fn
    from loa_meta.evaluation.iterations import select_iterations
    from loa_meta.sampling import make_mask

    data_dir, meta_path, workdir, by, res = _evaluate_meta_and_conventional(tmp_path, rng, "--iterations=auto",
                                                                            "--iterations_grid=1,2,6")
    cfg = json.load(open(os.path.join(workdir, "config.json")))
    val, test = np.load(os.path.join(data_dir, "val.npy")), np.load(os.path.join(data_dir, "test.npy"))
    meta = common.load_model(meta_path)
    for task, ratio, tid in (("radial_0.20", 0.2, 1), ("radial_0.40", 0.4, 0)):
        mask = make_mask("radial", (H, W), ratio, seed=0)
        n, _ = select_iterations(meta, val, {task: mask}, {task: tid}, [1, 2, 6])
        assert cfg["iterations_chosen"]["meta"][task] == n[task]
        r = evaluate_model(model_reconstruct_fn(meta, num_iterations=n[task]), test, {task: mask}, task_ids=[tid])
        assert by[(task, "meta")] == pytest.approx(float(np.mean(r[task]["psnr"])), abs=1e-3)
        assert cfg["iterations_chosen"]["conventional"][task] in (1, 2, 6)
    assert "iterations chosen on" in res.stdout
    # choosing on the evaluated split is refused
    bad = run_app("experiments.evaluate", f"--data_dir={data_dir}", "--tasks=radial:0.2", f"--models=meta={meta_path}",
                  "--iterations=auto", "--iterations_split=test", f"--workdir={tmp_path / 'w'}")
    assert bad.returncode != 0 and "--iterations_split" in bad.stderr and not os.path.exists(tmp_path / "w")
    # another dataset's split (new subjects) may select, if its slices have the evaluated size
    other = str(tmp_path / "other")
    write_prepared(other, np.random.default_rng(7))
    res = run_app("experiments.evaluate", f"--data_dir={data_dir}", "--tasks=radial:0.2", f"--models=meta={meta_path}",
                  "--iterations=auto", f"--iterations_data_dir={other}", "--iterations_split=test", "--iterations_grid=1,6",
                  f"--workdir={tmp_path / 'w2'}", "--noclassical", "--noconvergence")
    assert res.returncode == 0, res.stderr[-3000:]
    n, _ = select_iterations(meta, np.load(os.path.join(other, "test.npy")),
                             {"radial_0.20": make_mask("radial", (H, W), 0.2, seed=0)}, {"radial_0.20": 1}, [1, 6])
    assert json.load(open(tmp_path / "w2" / "config.json"))["iterations_chosen"]["meta"] == n


def test_evaluate_bad_flags(tmp_path, rng):
    data_dir = str(tmp_path / "data")
    write_prepared(data_dir, rng)
    res = run_app("experiments.evaluate", f"--data_dir={data_dir}", "--tasks=radial:1.5",
                  f"--workdir={tmp_path / 'w'}")
    assert res.returncode != 0
    assert "--tasks" in res.stderr and "radial:1.5" in res.stderr
    res = run_app("experiments.evaluate", f"--data_dir={data_dir}", "--tasks=radial:0.2",
                  f"--models=meta={tmp_path}/missing.keras", f"--workdir={tmp_path / 'w'}")
    assert res.returncode != 0
    assert "--models" in res.stderr and "missing.keras" in res.stderr
    assert not os.path.exists(tmp_path / "w")  # failed before creating outputs
    # a task the meta model was not trained on is an error that lists the model's tasks
    meta_path = _save_models(tmp_path)
    res = run_app("experiments.evaluate", f"--data_dir={data_dir}", "--tasks=radial:0.3",
                  f"--models=meta={meta_path}", f"--workdir={tmp_path / 'w'}")
    assert res.returncode != 0
    assert "--tasks" in res.stderr and "'radial:0.3' is not among the model's tasks (0=radial:0.4, 1=radial:0.2)" in res.stderr


def test_parse_model_specs():
    specs = common.parse_model_specs("meta=runs/m.keras,conventional:runs/conv_{task}/model.keras")
    assert [(s.method, s.per_task) for s in specs] == [("meta", False), ("conventional", True)]
    from loa_meta.sampling import parse_task_spec

    assert specs[1].path_for(parse_task_spec("radial:0.1")) == "runs/conv_radial_0.10/model.keras"
    for bad, msg in [("meta", "METHOD=PATH"), ("1x=a.keras", "method name"), ("m=a_{ratio}.keras", "placeholder"),
                     ("m=a.keras,m=b.keras", "twice"), ("m=", "empty path")]:
        with pytest.raises(app.UsageError, match=msg):
            common.parse_model_specs(bad)


def test_common_helpers(tmp_path):
    assert common.parse_int_list("0, 2,5", "task_ids", length=3) == [0, 2, 5]
    assert common.parse_int_list(None, "task_ids") is None
    with pytest.raises(app.UsageError, match="--task_ids: expected 2 integers"):
        common.parse_int_list("1", "task_ids", length=2)
    with pytest.raises(app.UsageError, match="--zoom_box: expected a comma list"):
        common.parse_int_list("a,b", "zoom_box")
    with pytest.raises(app.UsageError, match="--tasks"):
        common.parse_tasks("spiral:0.2")
    with pytest.raises(app.UsageError, match="--data_dir"):
        common.load_split_images(str(tmp_path / "no_data"), "test")
    write_prepared(str(tmp_path / "d"), np.random.default_rng(0), n=3)
    assert common.load_split_images(str(tmp_path / "d"), "test").shape == (3, H, W)
    assert common.load_split_images(str(tmp_path / "d"), "test", max_slices=2).shape == (2, H, W)
    assert [str(t) for t in common.parse_tasks(["radial:0.1", "cartesian:0.2"])] == ["radial:0.1", "cartesian:0.2"]
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(app.UsageError, match="not a directory"):
        common.prepare_workdir(str(f))
    with pytest.raises(app.UsageError, match="--model: file does not exist"):
        common.load_model(str(tmp_path / "nope.keras"))
    with pytest.raises(app.UsageError, match="'.keras'"):
        common.load_model(str(f))
    path = common.write_config_json(str(tmp_path), {"a": 1, "b": np.arange(2)})
    assert json.load(open(path)) == {"a": 1, "b": [0, 1]}
