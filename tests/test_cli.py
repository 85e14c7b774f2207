"""App start-up (experiments/cli.py): quiet TensorFlow, one log format, short usage errors.

The apps run as subprocesses in the environment of a new user: no ``TF_CPP_MIN_LOG_LEVEL`` and no
``CUDA_VISIBLE_DEVICES`` (the test suite's conftest sets both; they are removed here).
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from experiments import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ABSL_LINE = re.compile(r"^[IWEF]\d{4} \d\d:\d\d:\d\d\.\d{6} +\d+ \S+:\d+\] ")


def fresh_env():
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "CUDA_VISIBLE_DEVICES")}
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return env


def run(args, timeout=300):
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=fresh_env(), capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def kspace_file(tmp_path_factory):
    rng = np.random.default_rng(0)
    k = (rng.standard_normal((2, 16, 16)) + 1j * rng.standard_normal((2, 16, 16))).astype(np.complex64)
    path = str(tmp_path_factory.mktemp("k") / "scan.npz")
    np.savez(path, kspace=k, mask=np.ones((16, 16), np.float32))
    return path


def test_app_starts_quietly_and_verbosity_restores_tensorflow_detail(kspace_file, tmp_path):
    out = str(tmp_path / "r.npy")
    quiet = run(["-m", "experiments.reconstruct", f"--input={kspace_file}", "--mask=radial:0.3", f"--output={out}"])
    assert quiet.returncode == 0, quiet.stderr
    lines = quiet.stderr.splitlines()
    # one line, in absl's format: the app's own "wrote ..." (no banner, no cuInit error, no oneDNN note)
    assert len(lines) == 1 and ABSL_LINE.match(lines[0]) and "wrote " + out in lines[0], quiet.stderr
    assert np.load(out).shape == (2, 16, 16)
    loud = run(["-m", "experiments.reconstruct", f"--input={kspace_file}", "--mask=radial:0.3", f"--output={out}",
                "--verbosity=1"])
    assert loud.returncode == 0, loud.stderr
    hidden = [line for line in loud.stderr.splitlines() if cli.STARTUP_NOISE.search(line) and line.strip()]
    assert len(hidden) >= 1, loud.stderr  # TensorFlow's C++ start-up lines are back
    assert len(loud.stderr.splitlines()) > len(lines) + len(hidden)  # and its Python INFO/DEBUG lines


def test_worker_process_logs_in_the_app_format():
    # a worker started by reproduce/quickstart (spawn): no absl.app.run, yet the same format and filter
    script = (
        "import logging as pylog\n"
        "from experiments import cli\n"
        "cli.init_worker(0)\n"
        "from absl import logging\n"
        "logging.info('worker says hello')\n"
        "pylog.getLogger('absl').handle(pylog.LogRecord('absl', pylog.INFO, '/x/tensorflow/python/y.py', 1,\n"
        "                               'Sharding callback duration: 41 microseconds', None, None))\n"
        "logging.warning('worker warns')\n"
    )
    proc = run(["-c", script])
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 2 and all(ABSL_LINE.match(line) for line in lines), proc.stderr
    assert lines[0].startswith("I") and lines[0].endswith("worker says hello")
    assert lines[1].startswith("W") and lines[1].endswith("worker warns")


def test_third_party_info_filter_and_startup_line_filter():
    def rec(path, level):
        return logging.LogRecord("absl", level, path, 1, "m", None, None)

    tf_file = os.path.join("x", "site-packages", "tensorflow", "python", "checkpoint", "functional_saver.py")
    f = cli._ThirdPartyInfoFilter()
    assert not f.filter(rec(tf_file, logging.INFO))
    assert f.filter(rec(tf_file, logging.WARNING))
    assert f.filter(rec(os.path.join(ROOT, "loa_meta", "training", "loop.py"), logging.INFO))
    text = ("WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
            "I0000 00:00:1.0  1 cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU will not be used.\n"
            "E0000 00:00:1.0  1 cuda_platform.cc:52] failed call to cuInit: UNKNOWN ERROR (303)\n"
            "E0000 00:00:1.0  1 some_kernel.cc:9] a real problem\n")
    assert cli.filter_startup_lines(text) == "E0000 00:00:1.0  1 some_kernel.cc:9] a real problem\n"


@pytest.mark.parametrize("module,args,flag", [
    ("experiments.evaluate", ["--data_dir=/nonexistent", "--tasks=radial:0.1", "--workdir=W",
                              "--models=meta=m.keras"], "--data_dir"),
    ("experiments.train_meta", ["--data_dir=/nonexistent", "--workdir=W", "--tasks=spiral:0.1"], "--tasks"),
    ("experiments.reconstruct", ["--input=/nonexistent.npz", "--output=o.npy"], "--input"),
])
def test_usage_error_is_first_names_the_flag_and_points_to_helpfull(module, args, flag, tmp_path):
    args = [a.replace("=W", f"={tmp_path}/w") for a in args]
    proc = run(["-m", module, *args], timeout=120)
    assert proc.returncode == 1
    lines = proc.stderr.splitlines()
    assert len(lines) == 2, proc.stderr  # no module docstring, no flag list, no traceback
    assert lines[0].startswith(f"{module}: error: {flag}: "), proc.stderr
    assert "--helpfull" in lines[1] and f"python -m {module} --helpshort" in lines[1]


@pytest.mark.parametrize("module", ["experiments." + m for m in (
    "adapt", "evaluate", "quickstart", "reconstruct", "reproduce", "train_conventional", "train_istanet",
    "train_meta")] + ["data_prep.brats", "data_prep.demo"])
def test_no_app_imports_tensorflow_when_its_module_is_imported(module):
    # TensorFlow must first be imported after cli.run has configured logging (and the quiet import hook)
    script = (f"import importlib, os, sys\nimportlib.import_module({module!r})\n"
              "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras')))\n"
              "print(os.environ.get('TF_CPP_MIN_LOG_LEVEL'))\n")
    proc = run(["-c", script])
    assert proc.returncode == 0, proc.stderr
    # experiments.* import cli at the top (TF's C++ level set at once); data_prep.* in their __main__ block
    expected_level = "2" if module.startswith("experiments.") else "None"
    assert proc.stdout.splitlines() == ["[]", expected_level]
