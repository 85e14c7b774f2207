"""The reproduce protocol's one ETA: measured rates of the work left, stages not started included."""

from __future__ import annotations

import json

import pytest

from experiments.protocol_eta import ProtocolProgress, StageWork, list_schedule, protocol_eta, stair_plan
from loa_meta.training import progress

# meta: 10 + 10 outer iterations at 1 and 2 phases, 8 images per step (derivative order 3: unit 24)
META = StageWork("meta", "meta", 0, ((10, 1), (10, 2)), 8, steps_per_outer=2.0)
META_R = StageWork("meta_reduced", "meta", 0, ((10, 1), (10, 2)), 8, steps_per_outer=2.0)
CONV = StageWork("conv/a", "conventional", 0, ((20, 1), (20, 2)), 4)  # unit 4
ISTA = StageWork("ista/a", "ista", 0, ((30, 3),), 4)  # 90 phase-steps, unit 4
ADAPT = StageWork("adapt/b", "adapt", 1, ((5, 2),), 2)  # 10 phase-steps, unit 2, after the training group
STATUS = {"meta": {"seconds_per_phase_step": 0.5, "phase_steps_left": 40.0, "steps_per_outer": 3.0},
          "conv/a": {"seconds_per_phase_step": 0.1, "phase_steps_left": 0.0}}


def test_stair_plan_splits_the_step_budget_over_the_stages():
    assert stair_plan(10, 1, 3, True) == ((3, 1), (3, 2), (3, 3))  # even split; the rest is never run
    assert stair_plan(10, 1, 3, True, stage_steps=4) == ((4, 1), (4, 2), (2, 3))  # the budget cuts the last
    assert stair_plan(10, 1, 3, False) == ((10, 3),)
    assert list_schedule([5, 3, 4], 2) == 7  # 5 | 3 + 4
    assert list_schedule([5, 3, 4], 1) == 12 and list_schedule([], 2) == 0


def test_eta_prices_running_and_unstarted_stages_from_the_measured_rates():
    stages = [META, CONV, ISTA, ADAPT]
    # meta: measured 0.5 s per phase-step, 40 left -> 20 s. conv: complete.
    # ista, never run: seconds per unit measured = mean(0.5 / 24, 0.1 / 4) -> x 4 per phase-step, 90 of them.
    per_unit = (0.5 / 24 + 0.1 / 4) / 2
    ista = 90 * per_unit * 4
    adapt = 10 * per_unit * 2
    assert ista == pytest.approx(8.25) and adapt == pytest.approx(0.4583333)
    assert protocol_eta(stages, ["conv/a"], STATUS, workers=1) == pytest.approx(20 + ista + adapt)
    # two workers: meta and ISTA-Net+ side by side, then the adaptation
    assert protocol_eta(stages, ["conv/a"], STATUS, workers=2) == pytest.approx(max(20, ista) + adapt)
    # the asking stage's live ETA replaces its file's numbers
    assert protocol_eta(stages, ["conv/a"], STATUS, 2, current=("meta", 12.0)) == pytest.approx(max(12, ista) + adapt)
    # nothing measured yet: no ETA rather than a guess
    assert protocol_eta(stages, [], {}, workers=1) is None


def test_a_meta_stage_not_started_is_priced_by_the_measured_steps_per_outer_iteration():
    stages = [META, META_R, CONV]
    # meta_reduced: (10 x 1 + 10 x 2) phase-outer-iterations x 3 measured steps each x 0.5 s
    assert protocol_eta(stages, ["conv/a"], STATUS, workers=1) == pytest.approx(20 + 30 * 3 * 0.5)
    no_spo = {"meta": dict(STATUS["meta"], steps_per_outer=None), "conv/a": STATUS["conv/a"]}
    assert protocol_eta(stages, ["conv/a"], no_spo, workers=1) == pytest.approx(20 + 30 * 2 * 0.5)  # the guess K + 1


def test_progress_lines_of_a_stage_show_the_protocol_eta_from_the_files(tmp_path):
    for name, st in STATUS.items():
        (tmp_path / name).mkdir(parents=True)
        (tmp_path / name / "progress.json").write_text(json.dumps(st))
    (tmp_path / "conv/a" / "COMPLETE.json").write_text("{}")
    pp = ProtocolProgress(str(tmp_path), [META, CONV, ISTA, ADAPT], workers=2)
    assert pp.eta() == pytest.approx(20 + 0.4583333)  # max(meta 20 s, ista 8.25 s) + adapt
    t = [0.0]
    logger = progress.ProgressLogger(every=1, total_steps=10, clock=lambda: t[0], bar=False)
    logger.start(0)
    progress.set_eta_hook(pp.hook("meta"))
    try:
        for step in (1, 2, 3):
            t[0] += 1.0
            line = logger.update(step, 4, 0.5, num_phases=1)
    finally:
        progress.set_eta_hook(None)
    # this run: 1 s per step, 7 steps left -> 7 s in place of the file's 20 s; the ISTA-Net+ stage is longer
    assert line.count("ETA") == 1 and "ETA 0m09s (all stages)" in line  # max(7, 8.25) + 0.46 = 8.7 s
    logger.update(4, 4, 0.5, num_phases=1)
    assert "(all stages)" not in logger.last_line  # the hook is gone: the run's own ETA again
