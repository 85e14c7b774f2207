"""experiments.quickstart --smoke: the README's main job end to end at seconds scale (demo data,
preparation, meta-learning, conventional, adaptation, evaluation, verdict)."""

from __future__ import annotations

import csv
import json
import os

import pytest

from tests.test_experiments_train import run_app


def test_quickstart_bad_flags(tmp_path):
    proc = run_app("experiments.quickstart", f"--workdir={tmp_path}/q", "--crop=4,abc")
    assert proc.returncode != 0 and "--crop" in proc.stderr
    proc = run_app("experiments.quickstart", f"--workdir={tmp_path}/q", "--margin_db=-1")
    assert proc.returncode != 0 and "--margin_db" in proc.stderr
    proc = run_app("experiments.quickstart", f"--workdir={tmp_path}/q", "--min_slice_fraction=1.5")
    assert proc.returncode != 0 and "--min_slice_fraction" in proc.stderr
    proc = run_app("experiments.quickstart", f"--workdir={tmp_path}/q", "--workers=0")
    assert proc.returncode != 0 and "--workers" in proc.stderr


@pytest.mark.slow
def test_quickstart_smoke_runs_whole_pipeline(tmp_path):
    # one process (the worker pool and resuming are tested once, in test_experiments_reproduce.py)
    wd = str(tmp_path / "q")
    proc = run_app("experiments.quickstart", f"--workdir={wd}", "--smoke", "--workers=1")
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "meta-learning vs zero-filled" in proc.stdout and "tensorboard --logdir" in proc.stdout
    for stage in ("data/demo_tree", "data/prepared", "meta", "conv/radial_0.10", "conv/radial_0.40",
                  "adapt/radial_0.25", "evaluation"):
        assert os.path.isfile(os.path.join(wd, stage, "COMPLETE.json")), stage
    rows = list(csv.DictReader(open(os.path.join(wd, "evaluation", "table_seen.csv"))))
    psnr = {(r["task"], r["method"]): float(r["psnr_mean"]) for r in rows}
    verdict = json.load(open(os.path.join(wd, "verdict.json")))
    # PASS iff, at every seen ratio, the table's meta - zero-filled gap >= the margin and meta-learning
    # wins on at least min_slice_fraction of the test slices.
    gaps = {t: psnr[(t, "Meta-learning")] - psnr[(t, "Zero-filled")] for t in ("radial_0.10", "radial_0.40")}
    wins = verdict["claims"]["meta_above_zero_filled_seen_slice_fraction"]
    assert set(wins) == set(gaps) and all(0.0 <= w <= 1.0 for w in wins.values())
    assert verdict["margin_db"] == 0.1 and verdict["min_slice_fraction"] == 1.0
    assert verdict["pass"] == all(gaps[t] >= 0.1 and wins[t] >= 1.0 for t in gaps)
    assert ("PASS" if verdict["pass"] else "FAIL") in proc.stdout
    assert os.path.isfile(os.path.join(wd, "evaluation", "table_unseen.md"))
    assert os.path.isfile(os.path.join(wd, "evaluation", "figure_seen.png"))
