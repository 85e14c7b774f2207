"""pyproject.toml is the package's build system and metadata (PEP 517/621); setup.py is only a shim."""

from __future__ import annotations

import os
import subprocess
import sys

import loa_meta

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_standard_build_backend_reads_metadata_from_pyproject(tmp_path):
    # What pip does for `pip install -e .`: ask the PEP 517 backend named in pyproject.toml for the metadata.
    script = (
        "import sys, setuptools.build_meta as backend\n"
        "print(backend.prepare_metadata_for_build_wheel(sys.argv[1]))\n"
    )
    proc = subprocess.run([sys.executable, "-c", script, str(tmp_path)], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    dist_info = proc.stdout.strip().splitlines()[-1]
    meta = (tmp_path / dist_info / "METADATA").read_text()
    lines = meta.splitlines()
    assert "Name: loa-meta" in lines and f"Version: {loa_meta.__version__}" in lines
    assert "Requires-Python: <3.14,>=3.10" in lines
    for req in ("tensorflow>=2.16", "numpy>=1.23", "nibabel>=5.0", "scikit-image>=0.21", "absl-py>=1.4",
                "tensorboard>=2.16", "matplotlib>=3.6"):
        assert f"Requires-Dist: {req}" in lines, req
    assert 'Requires-Dist: nilearn>=0.10; extra == "demo"' in lines
    assert 'Requires-Dist: pytest>=7; extra == "test"' in lines
    assert 'Requires-Dist: pytest-xdist>=3; extra == "test"' in lines  # the README test command's -n 2
    assert not any("addons" in line for line in lines if line.startswith("Requires-Dist"))  # no tensorflow-addons
    assert meta.split("\n\n", 1)[1].startswith("# loa-meta")  # README as the long description
    pyproject = open(os.path.join(ROOT, "pyproject.toml"), encoding="utf-8").read()
    assert 'build-backend = "setuptools.build_meta"' in pyproject
    setup_py = open(os.path.join(ROOT, "setup.py"), encoding="utf-8").read()
    assert "setup()" in setup_py and "install_requires" not in setup_py  # one source of metadata
