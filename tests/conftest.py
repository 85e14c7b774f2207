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


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
