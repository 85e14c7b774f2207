"""loa_meta.pretrained: models shipped by name with a model card; ``--model=pretrained:NAME`` in the apps."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from loa_meta import pretrained
from tests.test_experiments_reconstruct import _kspace_file
from tests.test_experiments_train import ROOT


def _card(name="demo-x", tasks=("radial:0.2",)):
    table = []
    for t in tasks:
        task = t.replace(":", "_").replace("0.2", "0.20").replace("0.4", "0.40")
        table += [{"task": task, "method": "Zero-filled", "psnr_mean": 25.0},
                  {"task": task, "method": "TV", "psnr_mean": 28.0},
                  {"task": task, "method": "Meta-learning", "psnr_mean": 28.5}]
    return {"name": name, "description": "test model", "data": "synthetic", "command": "python -m x",
            "commit": "abc1234", "training_seconds": 1.0, "machine": "2 CPU cores", "tasks": list(tasks),
            "image_shape": [12, 14], "table": table}


def _install_tiny(where, name="demo-x", tasks=("radial:0.2",)):
    from loa_meta.models import LOANet

    tf.keras.utils.set_random_seed(0)
    model = LOANet(num_phases=1, num_tasks=len(tasks), alpha0=1.0, tau0=0.3)
    model.omega_0.assign(0.7)
    src = os.path.join(str(where), "src.keras")
    model.save(src)
    return model, pretrained.install(name, src, _card(name, tasks), where=str(where / "models"))


def test_install_load_and_card_round_trip(tmp_path):
    model, path = _install_tiny(tmp_path)
    where = str(tmp_path / "models")
    assert pretrained.available(where) == ["demo-x"]
    assert pretrained.resolve("pretrained:demo-x", where) == path and path.endswith("demo-x.keras")
    assert pretrained.resolve("runs/meta/model.keras", where) == "runs/meta/model.keras"
    assert pretrained.card("demo-x", where)["command"] == "python -m x"
    loaded = pretrained.load("demo-x", where)
    assert float(loaded.omega_0.numpy()) == pytest.approx(0.7)
    rng = np.random.default_rng(0)
    k = tf.constant((rng.standard_normal((2, 12, 14)) + 1j * rng.standard_normal((2, 12, 14))).astype(np.complex64))
    m = tf.constant((rng.random((12, 14)) < 0.4).astype(np.float32))
    feed = {"kspace": k * tf.cast(m, tf.complex64), "mask": m, "task_id": tf.zeros([2], tf.int32)}
    np.testing.assert_allclose(loaded(feed).numpy(), model(feed).numpy(), atol=1e-6)


def test_unknown_name_lists_the_known_names(tmp_path):
    with pytest.raises(pretrained.UnknownPretrainedModel, match=r"known names: none"):
        pretrained.model_path("demo-t1-radial", str(tmp_path))
    _install_tiny(tmp_path, name="demo-a")
    with pytest.raises(pretrained.UnknownPretrainedModel, match=r"'demo-b'.*known names: demo-a\."):
        pretrained.resolve("pretrained:demo-b", str(tmp_path / "models"))
    # a .keras file without its card is not a shipped model
    open(tmp_path / "models" / "orphan.keras", "wb").close()
    assert pretrained.available(str(tmp_path / "models")) == ["demo-a"]


def test_card_must_state_data_command_and_a_table_with_tv(tmp_path):
    card = _card()
    del card["commit"]
    with pytest.raises(ValueError, match=r"lacks the field\(s\) \['commit'\]"):
        pretrained.validate_card(card)
    card = _card()
    card["table"] = [r for r in card["table"] if r["method"] != "TV"]
    with pytest.raises(ValueError, match="Zero-filled, TV and the model's rows for task radial_0.20"):
        pretrained.validate_card(card)
    with pytest.raises(ValueError, match="differs from the model name"):
        pretrained.install("other", str(tmp_path / "x.keras"), _card())
    assert not os.path.exists(tmp_path / "models")  # nothing written on a bad card


def test_optional_inference_iterations_field_is_checked(tmp_path):
    card = _card(tasks=("radial:0.2", "radial:0.4"))
    tasks = card["tasks"]
    card["inference_iterations"] = {"chosen": {t: 2 for t in tasks}, "selection": "held-out slices",
                                    "table": [{"task": "radial_0.20", "method": "m (N iterations)", "psnr_mean": 30.0}]}
    pretrained.validate_card(card)
    for bad in ({"chosen": {tasks[0]: 2}, "selection": "s", "table": []},        # a task without a count
                {"chosen": {t: 0 for t in tasks}, "selection": "s", "table": []},  # not a positive count
                {"chosen": {t: 2 for t in tasks}, "table": []},                    # how it was chosen is missing
                {"chosen": {t: 2 for t in tasks}, "selection": "s", "table": [{"task": "x"}]}):
        card["inference_iterations"] = bad
        with pytest.raises(ValueError, match="inference_iterations"):
            pretrained.validate_card(card)


def _run(module, *args, env_dir=None):
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    if env_dir:
        env[pretrained.ENV_DIR] = env_dir
    return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)


@pytest.mark.slow
def test_apps_load_pretrained_by_name(tmp_path):
    model, _ = _install_tiny(tmp_path)
    where = str(tmp_path / "models")
    x, mask, k = _kspace_file(str(tmp_path / "scan.npz"), np.random.default_rng(0))
    out = str(tmp_path / "rec.npy")
    proc = _run("experiments.reconstruct", f"--input={tmp_path / 'scan.npz'}", f"--output={out}",
                "--model=pretrained:demo-x", env_dir=where)
    assert proc.returncode == 0, proc.stderr[-3000:]
    feed = {"kspace": tf.constant(k.astype(np.complex64)), "mask": tf.constant(mask.astype(np.float32)),
            "task_id": tf.zeros([2], tf.int32)}
    np.testing.assert_allclose(np.load(out), model(feed).numpy(), atol=1e-5)
    assert json.load(open(out + ".json"))["method"] == "model"
    # --num_iterations=recommended: the card's count for the task (none stated: a flag error)
    bad = _run("experiments.reconstruct", f"--input={tmp_path / 'scan.npz'}", f"--output={tmp_path / 'r.npy'}",
               "--model=pretrained:demo-x", "--num_iterations=recommended", env_dir=where)
    assert bad.returncode != 0 and "--num_iterations" in bad.stderr and "states no inference iterations" in bad.stderr
    card = pretrained.card("demo-x", where)
    card["inference_iterations"] = {"chosen": {"radial:0.2": 4}, "selection": "test", "table": []}
    pretrained.install("demo-x", pretrained.model_path("demo-x", where), card, where=str(tmp_path / "models2"))
    rec = str(tmp_path / "rec4.npy")
    proc = _run("experiments.reconstruct", f"--input={tmp_path / 'scan.npz'}", f"--output={rec}",
                "--model=pretrained:demo-x", "--num_iterations=recommended", env_dir=str(tmp_path / "models2"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    want = model.reconstruct(feed["kspace"], feed["mask"], feed["task_id"], num_iterations=4).numpy()
    np.testing.assert_allclose(np.load(rec), want, atol=1e-5)
    assert json.load(open(rec + ".json"))["num_iterations"] == 4
    # an unknown name is a one-line flag error listing the known names, in every app
    for module, args in (("experiments.reconstruct", (f"--input={tmp_path / 'scan.npz'}", f"--output={out}",
                                                      "--model=pretrained:nope")),
                         ("experiments.adapt", ("--model=pretrained:nope", f"--data_dir={tmp_path}",
                                                f"--workdir={tmp_path / 'a'}", "--task=radial:0.3")),
                         ("experiments.evaluate", (f"--data_dir={tmp_path}", "--tasks=radial:0.2",
                                                   "--models=meta=pretrained:nope", f"--workdir={tmp_path / 'e'}"))):
        proc = _run(module, *args, env_dir=where)
        assert proc.returncode != 0, module
        assert "--model" in proc.stderr and "'nope'" in proc.stderr and "known names: demo-x." in proc.stderr, module
        assert "Traceback" not in proc.stderr, module


def test_shipped_demo_model_loads_and_its_card_states_tv():
    """The model shipped in the package (docs/experiments.md): loads by name; its card has the recipe's
    command and, per task, zero-filled, TV and the model, the model above zero filling."""
    from experiments.pretrained_recipes import DEMO_T1_RADIAL_TRAIN

    assert "demo-t1-radial" in pretrained.available()
    card = pretrained.card("demo-t1-radial")
    assert all(flag in card["command"] for flag in DEMO_T1_RADIAL_TRAIN if not flag.startswith("--mask_seed"))
    assert card["image_shape"] == [160, 180] and len(card["tasks"]) == 4
    rows = {(r["task"], r["method"]): r["psnr_mean"] for r in card["table"]}
    for task in {t for t, _ in rows}:
        assert rows[(task, "Meta-learning")] > rows[(task, "Zero-filled")] + 1.0
        assert (task, "TV") in rows
    model = pretrained.load("demo-t1-radial")
    assert model.num_phases == 3 and model.filters == 16 and model.num_tasks == 4
    # the shipped model runs Algorithm 1 as it was trained: the recipe's --nosafeguard is kept in the model
    assert model.safeguard == ("--nosafeguard" not in DEMO_T1_RADIAL_TRAIN)
    # the card's claim (docs/benchmarks_quality.md 5.35, against the converged 1000-iteration TV): PSNR above
    # TV at every seen ratio: +0.29 / +0.49 / +0.52 / +0.55 dB with the 3 trained phases
    for task in {t for t, _ in rows}:
        margin = rows[(task, "Meta-learning")] - rows[(task, "TV")]
        assert margin >= (0.25 if task == "radial_0.10" else 0.45), (task, margin)
    # beyond the paper (quality 5.31, 5.35): the counts chosen on new subjects by evaluate --iterations=auto, and
    # the card's table at those counts is what reconstruct(num_iterations=N) gives on the test split; +0.95 dB
    # over TV at radial 10 % with 30 iterations
    assert pretrained.recommended_iterations("demo-t1-radial") == [30, 3, 3, 3]
    entry = card["inference_iterations"]
    assert "never chosen on the evaluated split" in entry["selection"] and "--iterations=auto" in entry["command"]
    at_n = {r["task"]: r["psnr_mean"] for r in entry["table"]}
    for task, n in zip(("radial_0.10", "radial_0.20", "radial_0.30", "radial_0.40"), (30, 3, 3, 3)):
        assert at_n[task] - rows[(task, "TV")] >= (0.9 if n == 30 else 0.45), task
        if n == model.num_phases:  # the trained phases: the same row as the main table
            assert at_n[task] == pytest.approx(rows[(task, "Meta-learning")], abs=1e-4)


def test_publish_rejects_a_bad_name_as_a_name_error_before_reading_anything(tmp_path):
    """An invalid model name is a one-line --name error (not an --eval_dir one), nothing is written."""
    with pytest.raises(ValueError, match="must match"):
        pretrained.check_model_name("Bad Name")
    assert pretrained.check_model_name("demo-t1-radial") == "demo-t1-radial"
    where = tmp_path / "models"
    proc = _run("experiments.publish_pretrained", "--name=Bad Name", f"--model={tmp_path / 'm.keras'}",
                f"--eval_dir={tmp_path / 'missing'}", "--description=x", "--data=x", "--command=x",
                "--training_seconds=1", f"--where={where}")
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "--name" in proc.stderr and "'Bad Name'" in proc.stderr and "--eval_dir" not in proc.stderr
    assert not where.exists()


def _eval_dir(path, zf=(25.0, 30.0), model=(28.5, 33.0), method="Meta-learning", chosen=None, split="test",
              tasks=("radial:0.2", "radial:0.4"), slices=20, tv=True):
    """A minimal experiments.evaluate workdir (table.csv, config.json) for publish_pretrained."""
    os.makedirs(path, exist_ok=True)
    names = ["radial_0.20", "radial_0.40"][: len(tasks)]
    lines = ["task,method,n,psnr_mean,psnr_std,ssim_mean,ssim_std,nmse_mean,nmse_std"]
    for i, t in enumerate(names):
        lines.append(f"{t},Zero-filled,{slices},{zf[i]},0.1,0.5,0.01,0.02,0.001")
        if tv:
            lines.append(f"{t},TV,{slices},{zf[i] + 3},0.1,0.7,0.01,0.01,0.001")
        lines.append(f"{t},{method},{slices},{model[i]},0.1,0.8,0.01,0.005,0.001")
    with open(os.path.join(path, "table.csv"), "w") as f:
        f.write("\n".join(lines) + "\n")
    cfg = {"data_dir": "data/demo160", "split": split, "tasks": list(tasks), "mask_dir": "runs/x/masks",
           "image_shape": [160, 180], "num_slices": slices, "classical": tv, "iterations": ["auto"] if chosen else None,
           "iterations_data_dir": "data/p160", "iterations_split": "test", "iterations_slices": 20,
           "iterations_grid": [1, 3, 30], "iterations_chosen": {method: chosen} if chosen else {}}
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(cfg, f)
    return str(path)


def test_publish_takes_inference_iterations_from_an_auto_evaluation_and_refuses_other_slices(tmp_path):
    """--iterations_eval_dir: the counts an `evaluate --iterations=auto` run chose, how, and its rows become the
    card's inference_iterations entry (read back by recommended_iterations); an evaluation of other slices or
    masks (other zero-filled rows), another split, fewer slices or a run without counts chosen for the model is
    a one-line --iterations_eval_dir error, and nothing is written."""
    src = tmp_path / "m.keras"
    from loa_meta.models import LOANet

    LOANet(num_phases=1, num_tasks=2).save(str(src))
    main = _eval_dir(tmp_path / "main")
    good = _eval_dir(tmp_path / "iters", model=(29.25, 33.5), tv=False,
                     chosen={"radial_0.20": 30, "radial_0.40": 3})
    where = tmp_path / "models"
    common = ["--name=demo-it", f"--model={src}", f"--eval_dir={main}", "--description=x", "--data=x",
              "--command=python -m experiments.train_meta ...", "--training_seconds=1", f"--where={where}"]
    proc = _run("experiments.publish_pretrained", *common, f"--iterations_eval_dir={good}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    card = pretrained.card("demo-it", str(where))
    entry = card["inference_iterations"]
    assert entry["chosen"] == {"radial:0.2": 30, "radial:0.4": 3}
    assert pretrained.recommended_iterations("demo-it", str(where)) == [30, 3]
    at_n = {r["task"]: (r["method"], r["psnr_mean"]) for r in entry["table"]}
    assert at_n == {"radial_0.20": ("Meta-learning (N iterations)", 29.25),
                    "radial_0.40": ("Meta-learning (N iterations)", 33.5)}
    # the note's margins are over the main table's TV rows (28.0 and 33.0)
    assert "+1.25 / +0.50 dB" in entry["note"], entry["note"]
    assert "'test' split of data/p160" in entry["selection"] and "{1,3,30}" in entry["selection"]
    assert "--iterations=auto" in entry["command"] and "--iterations_data_dir=data/p160" in entry["command"]
    assert "--noclassical" in entry["command"] and "--mask_dir=runs/x/masks" in entry["command"]
    assert "inference_iterations" in proc.stdout
    bad = {"other slices": dict(zf=(25.5, 30.0), chosen={"radial_0.20": 30, "radial_0.40": 3}),
           "other split": dict(split="val", chosen={"radial_0.20": 30, "radial_0.40": 3}),
           "no counts": dict(chosen=None),
           "other model": dict(method="Other", chosen={"radial_0.20": 30, "radial_0.40": 3}),
           "fewer slices": dict(slices=8, chosen={"radial_0.20": 30, "radial_0.40": 3})}
    expect = {"other slices": "Zero-filled rows", "other split": "split='val'", "no counts": "--iterations=auto",
              "other model": "no iteration counts chosen for 'Meta-learning'", "fewer slices": "num_slices=8"}
    from absl import app

    from experiments.pretrained_cards import read_iterations, read_table

    rows, tasks, _, method = read_table(main)
    for case, kw in bad.items():
        d = _eval_dir(tmp_path / case.replace(" ", "_"), **kw)
        with pytest.raises(app.UsageError) as err:
            read_iterations(d, main, method, rows, tasks)
        assert str(err.value).startswith("--iterations_eval_dir: ") and expect[case] in str(err.value), case
    # through the app: a non-zero exit, a one-line error and no second model
    proc = _run("experiments.publish_pretrained", *[c.replace("demo-it", "demo-bad") for c in common],
                f"--iterations_eval_dir={tmp_path / 'other_slices'}")
    assert proc.returncode != 0 and "--iterations_eval_dir" in proc.stderr and "Traceback" not in proc.stderr
    assert pretrained.available(str(where)) == ["demo-it"]
