"""One ETA per line from measured rates of all the work left, stages not started included."""

from __future__ import annotations

import types

import pytest

from loa_meta.training.progress import ProgressLogger, format_seconds, remaining_work


def sw(max_phases, stage_max_iterations, enabled=True):
    return types.SimpleNamespace(enabled=enabled, max_phases=max_phases, stage_max_iterations=stage_max_iterations)


def test_remaining_work_counts_the_stages_not_started():
    cfg = types.SimpleNamespace(max_outer_iterations=None)
    # phase 2 of 4, stage budget 10, 3 iterations done in this stage
    assert remaining_work(sw(4, 10), None, cfg, 2, 3, 13) == [(7, 2), (10, 3), (10, 4)]
    # Algorithm 2's delta_tol ends a stage earlier than its budget
    sched = types.SimpleNamespace(outer_iterations_to_tol=lambda: 6)
    assert remaining_work(sw(3, 10), sched, cfg, 2, 1, 7) == [(5, 2), (6, 3)]
    # the run's cap on outer iterations trims the last stages
    cfg_cap = types.SimpleNamespace(max_outer_iterations=30)
    assert remaining_work(sw(4, 10), None, cfg_cap, 2, 3, 13) == [(7, 2), (10, 3)]
    # no stair-wise growth: the current stage only
    assert remaining_work(sw(4, 10, enabled=False), None, cfg_cap, 4, 3, 13) == [(17, 4)]
    assert remaining_work(None, None, cfg_cap, 1, 0, 25) == [(5, 1)]


def test_eta_prices_future_stages_by_their_phases_and_matches_the_real_remaining_time():
    """A run of 3 stages (1, 2, 3 phases; 4 outer iterations of 2 steps each); a step with p phases
    takes p seconds and the first step 10 s more (tracing). At every step, after the first outer
    iteration, the ETA equals the time the rest of the run really takes."""
    t = [0.0]
    p = ProgressLogger(every=1, clock=lambda: t[0], bar=False)
    p.start(0, 0)
    stage_sw, cfg = sw(3, 4), types.SimpleNamespace(max_outer_iterations=None)
    schedule = [(phases, it) for phases in (1, 2, 3) for it in range(4)]
    total = 10 + sum(2 * ph for ph, _ in schedule)
    step, etas = 0, []
    for outer, (phases, it) in enumerate(schedule):
        for _ in range(2):
            step += 1
            t[0] += phases + (10 if step == 1 else 0)
            plan = remaining_work(stage_sw, None, cfg, phases, it, outer)
            line = p.update(step, 8, 0.5, stage=phases - 1, num_phases=phases, outer=outer, plan=plan)
            assert line.count("ETA") == 1
            if outer >= 1:
                etas.append((p.eta_seconds(step, phases, plan), total - t[0]))
    for got, truth in etas:
        assert got == pytest.approx(truth, abs=1e-6)
    assert etas[0][0] == pytest.approx(2 * 1 * 3 + 2 * 4 * (2 + 3) - 1, abs=1e-6)  # not just this stage's 6 s
    assert "ETA 0m00s" in p.last_line


def test_total_steps_cap_and_format():
    t = [0.0]
    p = ProgressLogger(every=5, total_steps=12, clock=lambda: t[0], bar=False)
    p.start(0, 0)
    for step in range(1, 6):
        t[0] += 3.0
        p.update(step, 1, 1.0, num_phases=2, outer=step - 1,
                 plan=[(100, 2), (100, 3)])  # a plan far beyond the step cap
    assert p.eta_seconds(5, 2, [(100, 2), (100, 3)]) == pytest.approx(7 * 3.0)
    assert format_seconds(3725) == "1h02m05s" and format_seconds(65) == "1m05s" and format_seconds(None) == "?"


def test_terminal_progress_bar_is_keras_progbar_showing_the_same_eta(capsys, caplog):
    import logging

    caplog.set_level(logging.INFO)
    import keras

    t = [0.0]
    p = ProgressLogger(every=100, clock=lambda: t[0], bar=True)
    p.start(0, 0)
    plan = None
    for step in range(1, 5):
        t[0] += 2.0 + (5 if step == 1 else 0)
        plan = [(10 - step, 1)]
        p.update(step, 2, 0.25, num_phases=1, outer=step - 1, plan=plan)
        if step == 1:  # the bar draws its first update at once (later ones every 0.05 s of real time)
            eta1 = p.eta_seconds(1, 1, plan)
            assert eta1 == pytest.approx(7.0 * 8)
            first = capsys.readouterr().out
            assert "56s" in first and "loss: 0.2500" in first
    bar = p._bar
    assert isinstance(bar, keras.utils.Progbar)
    # 6 outer iterations of one step left, the current one included (its step is done): 5 steps to go
    assert bar.target == 4 + 5
    eta = p.eta_seconds(4, 1, plan)
    assert eta == pytest.approx(2.0 * 5)  # 2 s per step measured after the first (slow) one
    assert bar._estimate_step_duration(4, 0.0) * (bar.target - 4) == pytest.approx(eta)
    assert not [r for r in caplog.records if "ETA" in r.getMessage()]  # no log line competes with the bar


def test_conventional_run_without_a_stage_budget_gets_its_eta_from_the_step_cap():
    """Conventional training has no Algorithm 2 schedule and no stair stage budget: ``remaining_work``
    is empty and the ETA is the step cap at the measured rate (it used to print ``ETA 0m00s``)."""
    cfg = types.SimpleNamespace(max_outer_iterations=None)
    assert remaining_work(sw(3, None, enabled=False), None, cfg, 3, 5, 5) == []
    t = [0.0]
    p = ProgressLogger(every=1, total_steps=250, clock=lambda: t[0], bar=False)
    p.start(0, 0)
    for step in range(1, 11):
        t[0] += 2.0 + (10.0 if step == 1 else 0.0)  # 2 s per step after a 10 s first step (tracing)
        line = p.update(step, 8, 0.5, num_phases=3, outer=step - 1,
                        plan=remaining_work(sw(3, None, enabled=False), None, cfg, 3, step, step))
    assert p.eta_seconds(10, 3, []) == pytest.approx(240 * 2.0)
    assert "ETA 8m00s" in line
