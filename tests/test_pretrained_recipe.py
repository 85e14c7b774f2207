"""The shipped model's recipe at seconds scale: train_meta with its flags -> evaluate -> publish -> load."""

import json
import os

import numpy as np
import pytest

from experiments.pretrained_recipes import DEMO_T1_RADIAL_TRAIN, TASKS
from loa_meta import pretrained
from tests.test_experiments_train import run_app


def _ok(proc):
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


@pytest.mark.slow
@pytest.mark.xdist_group("quickstart_smoke")
def test_recipe_trains_publishes_and_beats_zero_filled(quickstart_smoke, tmp_path):
    wd, _ = quickstart_smoke
    # the documented data step on the smoke demo tree (4 subjects): 12 slices per subject so that the
    # val split keeps slices beside the quickstart preset's 8 held-out ones; 32x32 crops
    data = str(tmp_path / "data")
    _ok(run_app("data_prep.brats", f"--brats_dir={os.path.join(wd, 'data', 'demo_tree', 'tree')}",
                f"--output_dir={data}", "--num_train=2", "--num_val=1", "--num_test=1", "--num_slices=12",
                "--crop=32,32"))
    run = str(tmp_path / "train")
    flags = [f for f in DEMO_T1_RADIAL_TRAIN if not f.startswith(("--max_steps", "--epochs"))]
    _ok(run_app("experiments.train_meta", f"--data_dir={data}", f"--workdir={run}", *flags,
                "--max_steps=40", "--epochs=20"))
    ev = str(tmp_path / "eval")
    _ok(run_app("experiments.evaluate", f"--data_dir={data}", f"--tasks={TASKS}", f"--mask_dir={run}/masks",
                f"--models=Meta-learning={run}/model.keras", f"--workdir={ev}", "--tv_iters=20",
                "--tv_lambda_grid=1e-3,4e-3"))
    # the documented second evaluation: iteration counts chosen on another split, the same test slices and masks
    ev_n = str(tmp_path / "eval_n")
    _ok(run_app("experiments.evaluate", f"--data_dir={data}", f"--tasks={TASKS}", f"--mask_dir={run}/masks",
                f"--models=Meta-learning={run}/model.keras", f"--workdir={ev_n}", "--iterations=auto",
                "--iterations_split=val", "--iterations_slices=4", "--iterations_grid=1,3,5", "--noclassical",
                "--noconvergence"))
    where = str(tmp_path / "models")
    proc = _ok(run_app("experiments.publish_pretrained", "--name=demo-smoke", f"--model={run}/model.keras",
                       f"--eval_dir={ev}", "--description=smoke", "--data=smoke demo slices",
                       "--command=python -m experiments.train_meta ...", "--training_seconds=1",
                       f"--where={where}", f"--iterations_eval_dir={ev_n}"))
    assert "installed" in proc.stdout
    card = pretrained.card("demo-smoke", where)
    counts = pretrained.recommended_iterations("demo-smoke", where)
    assert len(counts) == 4 and set(counts) <= {1, 3, 5}, counts
    main = {r["task"]: r["psnr_mean"] for r in card["table"] if r["method"] == "Meta-learning"}
    at_n = {r["task"]: r["psnr_mean"] for r in card["inference_iterations"]["table"]}
    for task, n in zip(sorted(main), counts):  # task ids follow the ratios, as the names sort
        if n == 3:  # the trained phases: the main table's row
            assert at_n[task] == pytest.approx(main[task], abs=1e-4), task
    assert card["tasks"] == TASKS.split(",") and card["image_shape"] == [32, 32]
    rows = {(r["task"], r["method"]): r["psnr_mean"] for r in card["table"]}
    tasks = sorted({t for t, _ in rows})
    assert len(tasks) == 4 and all((t, "TV") in rows for t in tasks)
    gain = np.mean([rows[(t, "Meta-learning")] - rows[(t, "Zero-filled")] for t in tasks])
    assert gain > 0.05, rows  # the short recipe already beats zero filling on the test split
    model = pretrained.load("demo-smoke", where)
    assert model.filters == 16 and model.eps0_floor == pytest.approx(1e-3)
    # publishing again with a card that lacks the TV rows is refused and leaves the model in place
    bad = str(tmp_path / "bad")
    os.makedirs(bad)
    with open(os.path.join(ev, "table.csv")) as f:
        lines = [ln for ln in f if ",TV," not in ln]
    with open(os.path.join(bad, "table.csv"), "w") as f:
        f.writelines(lines)
    with open(os.path.join(ev, "config.json")) as f, open(os.path.join(bad, "config.json"), "w") as g:
        json.dump(json.load(f), g)
    proc = run_app("experiments.publish_pretrained", "--name=demo-smoke2", f"--model={run}/model.keras",
                   f"--eval_dir={bad}", "--description=smoke", "--data=x", "--command=x", "--training_seconds=1",
                   f"--where={where}")
    assert proc.returncode != 0 and "TV" in proc.stderr and "Traceback" not in proc.stderr
    assert pretrained.available(where) == ["demo-smoke"]
