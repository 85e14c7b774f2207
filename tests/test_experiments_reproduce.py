"""experiments.reproduce: the protocol at smoke scale completes, writes the tables, and a re-run skips
every completed stage; stage bookkeeping, the worker pool and the paper-claims summary in process."""

from __future__ import annotations

import csv
import json
import os
import time

import numpy as np
import pytest

from tests.test_experiments_train import run_app, write_prepared


def _fake(psnr_by_task):
    return {t: {"psnr": np.asarray(v, float), "ssim": np.zeros(len(v)), "nmse": np.zeros(len(v))}
            for t, v in psnr_by_task.items()}


def test_claims_are_psnr_differences_of_the_table_entries():
    from experiments.reproduce import CONV, ISTA, META, TV, ZF, claims

    seen = ["radial_0.10", "radial_0.20"]
    res = {ZF: _fake({"radial_0.10": [20, 22], "radial_0.20": [25, 25]}),
           CONV: _fake({"radial_0.10": [23, 23], "radial_0.20": [27, 29]}),
           ISTA: _fake({"radial_0.10": [22, 22], "radial_0.20": [28, 28]}),
           META: _fake({"radial_0.10": [24, 26], "radial_0.20": [29, 29]}),
           TV: _fake({"radial_0.10": [24, 24], "radial_0.20": [29.5, 29.5]})}
    res[META]["radial_0.10"]["sigma_omega"] = 0.9
    res[META]["radial_0.20"]["sigma_omega"] = 0.8
    c = claims({"seen": res}, seen, [], [])
    assert c["meta_minus_conventional_seen_per_task_db"] == {"radial_0.10": 2.0, "radial_0.20": 1.0}
    assert c["meta_minus_conventional_seen_db"] == pytest.approx(1.5)
    assert c["meta_minus_zero_filled_seen_per_task_db"] == {"radial_0.10": 4.0, "radial_0.20": 4.0}
    assert c["conventional_minus_ista_per_task_db"] == {"radial_0.10": 1.0, "radial_0.20": 0.0}
    assert c["meta_minus_tv_seen_per_task_db"] == {"radial_0.10": 1.0, "radial_0.20": -0.5}
    assert c["meta_minus_tv_seen_db"] == pytest.approx(0.25)
    assert c["conventional_minus_tv_seen_per_task_db"] == {"radial_0.10": -1.0, "radial_0.20": -1.5}
    assert c["sigma_omega_decreasing_with_ratio"] is True
    res[META]["radial_0.20"]["sigma_omega"] = 0.95
    assert claims({"seen": res}, seen, [], [])["sigma_omega_decreasing_with_ratio"] is False
    assert c["meta_minus_conventional_unseen_db"] is None  # not run -> None, not a number
    assert c["meta_above_zero_filled_seen_slice_fraction"] == {"radial_0.10": 1.0, "radial_0.20": 1.0}
    res[META]["radial_0.10"]["psnr"] = np.asarray([24.0, 21.0])  # loses on the second slice
    res[META]["radial_0.20"]["psnr"] = np.asarray([25.0, 25.0])  # ties do not count as wins
    c = claims({"seen": res}, seen, [], [])
    assert c["meta_above_zero_filled_seen_slice_fraction"] == {"radial_0.10": 0.5, "radial_0.20": 0.0}


def test_stage_runner_skips_complete_stages_and_counts(tmp_path):
    from experiments.reproduce import StageRunner

    calls = []

    def stage(d):
        os.makedirs(d, exist_ok=True)
        calls.append(d)
        return {"value": len(calls)}

    r = StageRunner(str(tmp_path), 2)
    assert r.run("a", stage)["value"] == 1 and r.run("b/c", stage)["value"] == 2
    r2 = StageRunner(str(tmp_path), 2)
    assert r2.run("a", stage)["value"] == 1 and r2.run("b/c", stage)["value"] == 2
    assert len(calls) == 2 and r2.skipped == ["a", "b/c"] and r2.ran == []


def _pid_stage(d):
    """A picklable stage for the worker-pool test: records the process that ran it."""
    os.makedirs(d, exist_ok=True)
    if os.path.basename(d) == "boom":
        raise ValueError(f"stage {d} failed on purpose")
    return {"pid": os.getpid(), "dir": d}


@pytest.mark.slow
def test_stage_runner_worker_pool_runs_stages_in_other_processes_and_resumes(tmp_path):
    """Stages run in spawned workers, resume, report failures; a training stage gives bit-identical
    weights in this process and in each worker, so ``--workers`` cannot change the tables (checked
    on the cheapest training stage, ISTA-Net+ tiny)."""
    from experiments.common import load_model
    from experiments.presets import TINY
    from experiments.reproduce import Stage, StageRunner
    from loa_meta.sampling import parse_task_spec

    prepared = write_prepared(str(tmp_path / "p"))
    train = Stage("run_conventional", (prepared, parse_task_spec("radial:0.2")), (TINY, "ista_net_plus"), seed=3,
                  max_steps=2)
    StageRunner(str(tmp_path), 1).run_all([("here", train)], workers=1)
    names = ["a", "b", "c/d"]
    r = StageRunner(str(tmp_path), 5)
    out = r.run_all([("w1", train), ("w2", train)] + [(n, _pid_stage) for n in names], workers=2)
    assert list(out) == ["w1", "w2"] + names and sorted(r.ran) == sorted(["w1", "w2"] + names)
    assert all(out[n]["dir"] == os.path.join(str(tmp_path), n) for n in names)
    assert all(out[n]["pid"] != os.getpid() for n in names)  # ran in worker processes
    assert all(os.path.isfile(os.path.join(str(tmp_path), n, "COMPLETE.json")) for n in names)
    ref = load_model(os.path.join(str(tmp_path), "here", "model.keras")).get_weights()
    for name in ("w1", "w2"):
        assert out[name]["steps"] == 2
        got = load_model(os.path.join(str(tmp_path), name, "model.keras")).get_weights()
        assert len(got) == len(ref) and all(np.array_equal(a, b) for a, b in zip(got, ref))
    r2 = StageRunner(str(tmp_path), 3)
    out2 = r2.run_all([(n, _pid_stage) for n in names], workers=2)
    assert r2.skipped == names and r2.ran == [] and {n: out2[n]["pid"] for n in names} == {n: out[n]["pid"] for n in names}
    # a failing stage's error reaches the caller; it is not marked complete
    r3 = StageRunner(str(tmp_path), 1)
    with pytest.raises(ValueError, match="failed on purpose"):
        r3.run_all([("e", _pid_stage), ("boom", _pid_stage)], workers=2)
    assert not os.path.isfile(os.path.join(str(tmp_path), "boom", "COMPLETE.json"))


@pytest.mark.xdist_group("quickstart_smoke")
@pytest.mark.slow
def test_protocol_writes_tables_and_claims_and_resumes(quickstart_smoke):
    """The protocol (``run_protocol``) as the quickstart runs it at smoke scale: seen radial 10/40 %,
    unseen 25 %, training stages in two worker processes; a re-run skips every stage. The reproduce
    app's own flags and its conventional run on the unseen task are run by tests/test_readme.py."""
    from experiments import reproduce
    from experiments.common import load_model
    from experiments.presets import get_preset

    wd, _ = quickstart_smoke
    ev = os.path.join(wd, "evaluation")
    for f in ("table_seen.md", "table_seen.csv", "table_unseen.md", "table_unseen.csv", "claims.json",
              "summary.md", "figure_seen.png", "COMPLETE.json"):
        assert os.path.isfile(os.path.join(ev, f)), f
    for stage in ("meta", "conv/radial_0.10", "conv/radial_0.40", "adapt/radial_0.25"):
        assert os.path.isfile(os.path.join(wd, stage, "COMPLETE.json")), stage
        assert os.path.isfile(os.path.join(wd, stage, "model.keras")), stage
    seen = (("radial_0.10", "radial:0.1"), ("radial_0.40", "radial:0.4"))
    rows = list(csv.DictReader(open(os.path.join(ev, "table_seen.csv"))))
    meta_n, conv_n = "Meta-learning (N on held-out)", "Conventional (N on held-out)"
    assert {(r["task"], r["method"]) for r in rows} == {(t, m) for t, _ in seen for m in (
        "Zero-filled", "TV", "Conventional", "Meta-learning", conv_n, meta_n)}
    assert [r["method"] for r in rows[:2]] == ["Zero-filled", "TV"]  # TV next to zero-filled
    psnr = {(r["task"], r["method"]): float(r["psnr_mean"]) for r in rows}
    claims = json.load(open(os.path.join(ev, "claims.json")))
    meta = load_model(os.path.join(wd, "meta", "model.keras"))
    for t, spec in seen:
        assert claims["meta_minus_zero_filled_seen_per_task_db"][t] == pytest.approx(
            psnr[(t, "Meta-learning")] - psnr[(t, "Zero-filled")], abs=1e-9)
        assert claims["meta_minus_tv_seen_per_task_db"][t] == pytest.approx(
            psnr[(t, "Meta-learning")] - psnr[(t, "TV")], abs=1e-9)
        assert claims["tv_lambda"][t] in (1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 4e-3, 8e-3, 1.6e-2)
        # the table's sigma(omega_i) is the meta model's own, looked up by task spec
        omega = float(np.asarray(meta.omegas[meta.task_specs.index(spec)]))
        sigma = [float(r["sigma_omega"]) for r in rows if r["task"] == t and r["method"] == "Meta-learning"][0]
        assert sigma == pytest.approx(1 / (1 + np.exp(-omega)), rel=1e-6)
    adapted = load_model(os.path.join(wd, "adapt", "radial_0.25", "model.keras"))
    assert adapted.task_specs == ["radial:0.1", "radial:0.4", "radial:0.25"]
    unseen = {(r["task"], r["method"]) for r in csv.DictReader(open(os.path.join(ev, "table_unseen.csv")))}
    assert unseen == {("radial_0.25", m) for m in ("Zero-filled", "TV", "Meta-learning", meta_n)}  # no conventional
    # the "(N on held-out)" rows: the count chosen per model and task on the held-out val slices (never the test
    # split) by select_iterations, then the model run for that many iterations on the test split
    from experiments.training_common import load_images, split_data
    from loa_meta.evaluation.evaluate import evaluate_model, model_reconstruct_fn
    from loa_meta.evaluation.iterations import select_iterations

    prep = os.path.join(wd, "data", "prepared", "data")
    tiny = get_preset("tiny")
    sel = json.load(open(os.path.join(ev, "inference_iterations.json")))
    assert sel["grid"] == [1, 2, 4] and sel["selection_slices"] == tiny.eval_slices
    assert claims["inference_iterations"]["chosen"] == sel["chosen"]
    assert "chosen per task on 2 held-out val slices, beyond the paper" in open(os.path.join(ev, "table_seen.md")).read()
    heldout = split_data(prep, tiny)["heldout"]
    test = load_images(prep, "test", tiny.max_test)
    for t, spec in seen:
        mask = np.load(os.path.join(wd, "masks", f"{t}.npy"))
        tid = meta.task_specs.index(spec)
        chosen, _ = select_iterations(meta, heldout, {t: mask}, {t: tid}, [1, 2, 4])
        assert sel["chosen"][meta_n][t] == chosen[t]
        r = evaluate_model(model_reconstruct_fn(meta, num_iterations=chosen[t]), test, {t: mask}, task_ids=[tid])[t]
        assert psnr[(t, meta_n)] == pytest.approx(float(np.mean(r["psnr"])), abs=1e-3)
        assert claims["meta_n_minus_tv_seen_per_task_db"][t] == pytest.approx(
            psnr[(t, meta_n)] - psnr[(t, "TV")], abs=1e-9)
        assert sel["chosen"][conv_n][t] in (1, 2, 4)
    # More samples -> a better zero-filled image (sanity of the masks/evaluation wiring).
    assert psnr[("radial_0.40", "Zero-filled")] > psnr[("radial_0.10", "Zero-filled")]
    # every stage used the one mask set in <workdir>/masks
    m = np.load(os.path.join(wd, "masks", "radial_0.25.npy"))
    np.testing.assert_array_equal(m, np.load(os.path.join(wd, "adapt", "radial_0.25", "masks", "radial_0.25.npy")))
    summary = json.load(open(os.path.join(wd, "reproduce_summary.json")))
    assert len(summary["stages_run"]) == 5 and summary["stages_skipped"] == []
    # one ETA for the whole protocol on the training lines and after each stage, from step budgets
    # known in advance: the adaptation runs exactly its budget, a stair-wise stage at most its own
    first = quickstart_smoke[1]
    assert "(all stages)" in first.stderr and "more stage(s) | ETA" in first.stderr
    seen, new = reproduce._parse(["radial:0.1", "radial:0.4"]), reproduce._parse(["radial:0.25"])
    prepared = os.path.join(wd, "data", "prepared", "data")
    work = {w.name: w for w in reproduce.protocol_work(prepared, get_preset("tiny"), seen, seen, new, False, False)}
    assert sorted(work) == sorted(["meta", "conv/radial_0.10", "conv/radial_0.40", "adapt/radial_0.25"])
    steps = {n: json.load(open(os.path.join(wd, n, "COMPLETE.json")))["steps"] for n in work}
    assert steps["adapt/radial_0.25"] == sum(n for n, _ in work["adapt/radial_0.25"].plan)
    for n in ("conv/radial_0.10", "conv/radial_0.40"):
        assert 0 < steps[n] <= sum(k for k, _ in work[n].plan), n

    before = os.path.getmtime(os.path.join(ev, "table_seen.md"))
    t0 = time.time()
    proc = run_app("experiments.quickstart", f"--workdir={wd}", "--smoke", "--workers=2")
    assert proc.returncode == 0, proc.stderr[-4000:]
    summary = json.load(open(os.path.join(wd, "reproduce_summary.json")))
    assert summary["stages_run"] == [] and len(summary["stages_skipped"]) == 5
    assert os.path.getmtime(os.path.join(ev, "table_seen.md")) == before
    assert "already complete" in proc.stderr and time.time() - t0 < 120
