"""Training on two machines (MultiWorkerMirroredStrategy, TF_CONFIG) == one process with the same global batch.

Two worker processes on 127.0.0.1 (free ports picked at run time, so parallel test runs do not
collide) run a few Algorithm 2 steps, stop, and resume from the chief's checkpoint with a larger
budget; one process without a strategy runs the same sequence. Weights, objectives and penalties
must agree to 1e-5; only the chief writes the run directory; the non-chief's scratch files are gone.
"""

import json
import os
import socket
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from loa_meta import distribute

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# One run = two calls of train_meta in the same directory: 2 steps (whole batches), then resume to 3
# steps (micro-batches of 1), so both Eq. 18 all-reduce paths and checkpoint restore are exercised.
# Op by op (compile_steps=False) everywhere: a multi-replica step runs op by op anyway, and tracing
# the single process's kernels would cost more than these few steps.
SCRIPT = textwrap.dedent(r'''
    import json, os, sys
    import numpy as np
    workdir, out = sys.argv[1], sys.argv[2]
    from absl import logging
    logging.set_verbosity(logging.INFO)
    from loa_meta import distribute
    strategy = distribute.multi_worker_strategy(timeout_seconds=300) if os.environ.get("TF_CONFIG") else None
    import tensorflow as tf
    from loa_meta.training import MetaConfig, train_meta
    from tests.training_helpers import ToyUnrolled, make_arrays, make_dataset

    tr, va = make_arrays(4, seed=0), make_arrays(4, seed=50)
    res = {"obj": [], "pen": [], "resumed": []}
    for max_steps, micro in ((2, None), (3, 1)):
        tf.random.set_seed(0)  # the shuffle order depends on the global seed as well as the op seed
        data = {"train": make_dataset(tr, 4, 0), "val": make_dataset(va, 4, 1)}
        cfg = MetaConfig(max_steps=max_steps, learning_rate=1e-2, omega_learning_rate=1e-2, delta0=1e-12,
                         delta_tol=1e-13, max_inner_iterations=3, log_every=100, image_every=0, summary_every=2,
                         loss_reduction="mean", stairwise={"enabled": False, "max_phases": 2},
                         microbatch_size=micro, checkpoint_every=1, compile_steps=False)
        model, hist = train_meta(cfg, workdir, data, model_fn=lambda p: ToyUnrolled(p), strategy=strategy)
        res["obj"] += [h["objective"] for h in hist["steps"]]
        res["pen"] += [h["penalty"] for h in hist["steps"]]
    res["w"] = [np.asarray(v.numpy()).ravel().tolist() for v in model.theta_variables + model.omega_variables]
    res["replicas"] = 1 if strategy is None else strategy.num_replicas_in_sync
    res["chief"] = distribute.is_chief(strategy)
    with open(out, "w") as fh:
        json.dump(res, fh)
''')


def free_ports(n):
    """``n`` distinct ports that were free on 127.0.0.1 a moment ago (chosen by the OS)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def start(args, env, log):
    return subprocess.Popen([sys.executable, "-c", SCRIPT, *map(str, args)], cwd=ROOT, env=env,
                            stdout=log, stderr=subprocess.STDOUT)


def wait_all(procs, logs, timeout):
    """Wait for every process; on a failure or the timeout kill the others and report each log's tail."""
    deadline = time.monotonic() + timeout
    try:
        while any(p.poll() is None for p in procs):
            if time.monotonic() > deadline or any(p.poll() not in (None, 0) for p in procs):
                break
            time.sleep(0.2)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()  # SIGKILL: a worker blocked in TensorFlow's collective start ignores SIGTERM
            p.wait()
    if any(p.returncode != 0 for p in procs):
        tails = []
        for i, (p, path) in enumerate(zip(procs, logs)):
            with open(path, errors="replace") as fh:
                tails.append(f"--- process {i} (exit {p.returncode}) ---\n" + fh.read()[-3000:])
        pytest.fail("multi-worker run failed (timeout %d s or a worker error):\n%s" % (timeout, "\n".join(tails)))


@pytest.mark.slow
def test_two_workers_on_localhost_match_one_process_and_resume_from_the_chief(tmp_path):
    ports = free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    base = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    base.pop("TF_CONFIG", None)
    procs, logs = [], []
    for i in range(2):
        scratch = tmp_path / f"tmp{i}"
        scratch.mkdir()
        env = dict(base, TMPDIR=str(scratch),
                   TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}}))
        logs.append(tmp_path / f"worker{i}.log")
        procs.append(start([tmp_path / "multi", tmp_path / f"w{i}.json"], env, open(logs[-1], "w")))
    logs.append(tmp_path / "single.log")
    procs.append(start([tmp_path / "single", tmp_path / "single.json"], base, open(logs[-1], "w")))
    wait_all(procs, logs, timeout=600)  # a loaded machine; CI: ~20 s

    one = json.loads((tmp_path / "single.json").read_text())
    w0, w1 = (json.loads((tmp_path / f"w{i}.json").read_text()) for i in range(2))
    assert (w0["replicas"], w0["chief"], w1["chief"], one["replicas"]) == (2, True, False, 1)
    assert len(one["obj"]) == 3 and one["obj"][-1] < one["obj"][0]  # training moved the weights
    for w in (w0, w1):
        np.testing.assert_allclose(w["obj"], one["obj"], rtol=1e-5)
        np.testing.assert_allclose(w["pen"], one["pen"], rtol=1e-4, atol=1e-12)
        for a, b in zip(one["w"], w["w"]):
            np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)
    # the second call resumed from the chief's checkpoint of the first (outer iteration numbering)
    assert "Resumed from" in logs[0].read_text() and "Resumed from" in logs[1].read_text()
    # only the chief wrote the run directory; the non-chief's scratch directory was removed
    multi = tmp_path / "multi"
    assert sorted(p.name for p in multi.iterdir()) == sorted(p.name for p in (tmp_path / "single").iterdir())
    assert (multi / "ckpt" / "checkpoint").is_file() and (multi / "tb" / "train").is_dir()
    assert list((tmp_path / "tmp1").iterdir()) == []


def test_tf_config_is_validated_with_clear_messages():
    ok = '{"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 1}}'
    info = distribute.parse_tf_config(ok)
    assert (info.num_workers, info.is_chief, info.address) == (2, False, "b:2")
    chief = distribute.parse_tf_config('{"cluster": {"chief": ["c:1"], "worker": ["a:1"]}, '
                                       '"task": {"type": "worker", "index": 0}}')
    assert (chief.num_workers, chief.is_chief) == (2, False)  # with a chief task, worker 0 is not the chief
    bad = {
        None: "is not set",
        "{not json": "not valid JSON",
        '{"task": {"type": "worker", "index": 0}}': "\"cluster\"",
        '{"cluster": {"ps": ["a:1"]}, "task": {"type": "ps", "index": 0}}': "not used by MultiWorkerMirroredStrategy",
        '{"cluster": {"worker": ["a"]}, "task": {"type": "worker", "index": 0}}': "host:port",
        '{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 3}}': "task index 3",
        '{"cluster": {"worker": ["a:1"]}}': "\"task\"",
    }
    for text, words in bad.items():
        with pytest.raises(ValueError, match="TF_CONFIG") as e:
            distribute.parse_tf_config(text)
        assert words in str(e.value), (text, str(e.value))


def test_cluster_watcher_kills_a_process_that_waits_too_long_and_spares_one_that_started(tmp_path):
    sleeper = subprocess.Popen(["sleep", "30"])
    log = open(tmp_path / "watch.log", "w+")
    watcher = distribute.start_watcher("the cluster did not form", 0.3, pid=sleeper.pid, stderr=log)
    assert sleeper.wait(timeout=20) == -9
    watcher.wait(timeout=20)
    log.seek(0)
    assert log.read() == "error: the cluster did not form\n"
    sleeper = subprocess.Popen(["sleep", "30"])
    watcher = distribute.start_watcher("not shown", 0.3, pid=sleeper.pid, stderr=log)
    watcher.stdin.close()  # the cluster formed in time
    assert watcher.wait(timeout=20) == 0
    time.sleep(0.5)
    assert sleeper.poll() is None
    sleeper.kill()
    sleeper.wait()


def test_app_without_tf_config_is_a_usage_error_before_tensorflow_starts(tmp_path):
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    env.pop("TF_CONFIG", None)
    proc = subprocess.run([sys.executable, "-m", "experiments.train_meta", "--distribute=multi_worker",
                           f"--data_dir={tmp_path}", f"--workdir={tmp_path / 'run'}"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.startswith("experiments.train_meta: error: --distribute: the environment variable TF_CONFIG "
                                  "is not set"), proc.stderr
    assert not (tmp_path / "run").exists()  # nothing written
