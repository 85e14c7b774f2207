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
    proc = run_app("experiments.quickstart", f"--workdir={tmp_path}/q", "--workers=0")
    assert proc.returncode != 0 and "--workers" in proc.stderr
    for value in ("0,2", "x"):
        proc = run_app("experiments.quickstart", f"--workdir={tmp_path}/q", f"--inference_iterations={value}")
        assert proc.returncode != 0 and "--inference_iterations" in proc.stderr, value
    assert not os.path.exists(tmp_path / "q")


def test_inference_iterations_flag_overrides_the_preset(monkeypatch):
    from types import SimpleNamespace

    from experiments import reproduce
    from experiments.presets import get_preset

    quick = get_preset("quickstart")
    for value, want in ((None, quick.inference_iterations), (["none"], ()), (["5", "1", "5"], (1, 5))):
        monkeypatch.setattr(reproduce, "FLAGS", SimpleNamespace(inference_iterations=value))
        assert reproduce.inference_iterations_override(quick).inference_iterations == want


def _summary(meta_tv, meta_zf, meta_conv):
    return {"claims": {"meta_minus_tv_seen_per_task_db": meta_tv, "meta_minus_zero_filled_seen_per_task_db": meta_zf,
                       "meta_minus_conventional_seen_db": meta_conv}}


def test_quickstart_verdict_needs_tv_at_every_ratio_and_conventional_on_average():
    from loa_meta.evaluation.verdict import quickstart_verdict as verdict  # no absl flags imported

    zf = {"radial_0.10": 1.0, "radial_0.20": 2.0}
    ok, lines = verdict(_summary({"radial_0.10": 0.02, "radial_0.20": 0.5}, zf, 0.3))
    assert ok
    assert "  radial_0.10: meta-learning - TV = +0.02 dB (ok); meta-learning - zero-filled = +1.00 dB" in lines
    assert any("mean meta-learning - conventional = +0.30 dB" in ln for ln in lines)
    # one ratio below TV fails, even with a large mean and a large gain over conventional
    ok, lines = verdict(_summary({"radial_0.10": -0.01, "radial_0.20": 3.0}, zf, 2.0))
    assert not ok and "  radial_0.10: meta-learning - TV = -0.01 dB (BELOW); meta-learning - zero-filled = +1.00 dB" in lines
    # above TV everywhere but not above conventional on average fails
    ok, lines = verdict(_summary({"radial_0.10": 0.5, "radial_0.20": 0.5}, zf, -0.05))
    assert not ok and any("-0.05 dB over the seen ratios (NOT above 0" in ln for ln in lines)
    # the margin is applied to meta - TV
    assert verdict(_summary({"radial_0.10": 0.4, "radial_0.20": 0.6}, zf, 0.1), margin_db=0.5)[0] is False
    assert verdict(_summary({"radial_0.10": 0.5, "radial_0.20": 0.6}, zf, 0.1), margin_db=0.5)[0] is True
    # no TV rows (or no conventional) is not a pass
    assert verdict(_summary({}, zf, 0.3))[0] is False
    assert verdict(_summary({"radial_0.10": 0.5}, zf, None))[0] is False


def test_quickstart_verdict_judges_the_rows_at_the_chosen_iterations_when_the_run_has_them():
    from loa_meta.evaluation.verdict import quickstart_verdict as verdict

    zf = {"radial_0.10": 1.0, "radial_0.20": 2.0}
    # trained T phases below TV at 10 %, the chosen-count rows above TV and above conventional at its count
    s = _summary({"radial_0.10": -0.3, "radial_0.20": 0.5}, zf, 0.2)
    s["claims"].update({"meta_n_minus_tv_seen_per_task_db": {"radial_0.10": 0.6, "radial_0.20": 0.5},
                        "meta_n_minus_zero_filled_seen_per_task_db": {"radial_0.10": 1.9, "radial_0.20": 2.0},
                        "meta_n_minus_conventional_n_seen_db": 0.1,
                        "inference_iterations": {"chosen": {"Meta-learning (N on held-out)":
                                                            {"radial_0.10": 30, "radial_0.20": 3}}}})
    ok, lines = verdict(s)
    assert ok
    assert ("  radial_0.10: meta-learning (N on held-out) - TV = +0.60 dB (ok); meta-learning (N on held-out) - "
            "zero-filled = +1.90 dB") in lines
    assert "  iterations chosen on the held-out slices, Meta-learning (N on held-out): radial_0.10 30, radial_0.20 3" \
        in lines
    # the trained-T margins are printed for reference, unjudged
    assert ("  radial_0.10: meta-learning (trained T phases) - TV = -0.30 dB; meta-learning (trained T phases) - "
            "zero-filled = +1.00 dB") in lines
    assert verdict(s, margin_db=0.55)[0] is False  # the margin applies to the judged rows
    s["claims"]["meta_n_minus_conventional_n_seen_db"] = -0.01
    assert verdict(s)[0] is False


@pytest.mark.xdist_group("quickstart_smoke")
@pytest.mark.slow
def test_quickstart_smoke_runs_whole_pipeline(quickstart_smoke):
    # the run's tables, claims and resuming are checked in test_experiments_reproduce.py
    wd, proc = quickstart_smoke
    assert "meta-learning vs TV" in proc.stdout and "tensorboard --logdir" in proc.stdout
    assert "worker processes" in proc.stderr  # the training stages ran in the worker pool (--workers=2)
    for stage in ("data/demo_tree", "data/prepared", "meta", "conv/radial_0.10", "conv/radial_0.40",
                  "adapt/radial_0.25", "evaluation"):
        assert os.path.isfile(os.path.join(wd, stage, "COMPLETE.json")), stage
    rows = list(csv.DictReader(open(os.path.join(wd, "evaluation", "table_seen.csv"))))
    psnr = {(r["task"], r["method"]): float(r["psnr_mean"]) for r in rows}
    verdict = json.load(open(os.path.join(wd, "verdict.json")))
    # PASS iff, at every seen ratio, the table's meta - TV gap >= the margin (0) and meta-learning
    # beats conventional on average; the TV row is in the printed table and both margins are printed.
    seen = ("radial_0.10", "radial_0.40")
    # the tiny preset, like the quickstart's, also scores the LOA models at the iteration count chosen on the
    # held-out slices; the verdict judges those rows
    meta, conv_row = "Meta-learning (N on held-out)", "Conventional (N on held-out)"
    gaps = {t: psnr[(t, meta)] - psnr[(t, "TV")] for t in seen}
    conv = sum(psnr[(t, meta)] - psnr[(t, conv_row)] for t in seen) / len(seen)
    assert verdict["margin_db"] == 0.0
    assert verdict["pass"] == (all(g >= 0.0 for g in gaps.values()) and conv > 0)
    assert ("PASS" if verdict["pass"] else "FAIL") in proc.stdout
    assert f"radial_0.10: meta-learning (N on held-out) - TV = {gaps['radial_0.10']:+.2f} dB" in proc.stdout
    assert f"mean meta-learning (N on held-out) - conventional = {conv:+.2f} dB" in proc.stdout
    trained = psnr[("radial_0.10", "Meta-learning")] - psnr[("radial_0.10", "TV")]
    assert f"radial_0.10: meta-learning (trained T phases) - TV = {trained:+.2f} dB" in proc.stdout
    assert "| TV |" in proc.stdout
    assert os.path.isfile(os.path.join(wd, "evaluation", "table_unseen.md"))
    assert os.path.isfile(os.path.join(wd, "evaluation", "figure_seen.png"))
