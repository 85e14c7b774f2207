"""Shared pytest configuration: quiet TensorFlow, CPU only, deterministic seeds."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import numpy as np  # noqa: E402
import pytest  # noqa: E402


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: integration tests that take more than a few seconds")


def pytest_collection_modifyitems(config, items):
    """Slow tests first, otherwise in collection order: under pytest-xdist (``-n``) the long tests
    start at once on the workers, so the run does not end with one worker finishing a long test."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture(scope="session")
def quickstart_smoke(tmp_path_factory):
    """One ``experiments.quickstart --smoke --workers=2`` run (the Section 5 protocol at seconds scale on
    demo data, training stages in two worker processes), shared by the quickstart and protocol tests;
    its users are in xdist group "quickstart_smoke", so it runs once per test session."""
    from tests.test_experiments_train import run_app

    wd = str(tmp_path_factory.mktemp("quickstart") / "q")
    proc = run_app("experiments.quickstart", f"--workdir={wd}", "--smoke", "--workers=2")
    assert proc.returncode == 0, proc.stderr[-4000:]
    return wd, proc


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
