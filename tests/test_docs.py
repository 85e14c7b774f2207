"""The documentation promises that must not rot: README commands, CI command, fidelity links."""

import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _readme_commands():
    text = (ROOT / "README.md").read_text()
    block = re.search(r"```bash\n(.*?)```", text, re.S)
    assert block, "README.md must start with a bash block of set-up commands"
    return [line.strip() for line in block.group(1).splitlines() if line.strip()]


def test_readme_starts_with_exactly_two_setup_commands():
    text = (ROOT / "README.md").read_text()
    first_block_start = text.index("```bash")
    # Only the title precedes the commands.
    assert text[:first_block_start].strip().startswith("# loa-meta")
    assert len(text[:first_block_start].strip().splitlines()) == 1
    commands = _readme_commands()
    assert len(commands) == 2, commands
    assert "experiments.quickstart" in commands[0]
    assert "pytest" in commands[1]


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    assert _readme_commands()[1] in ci


def _referenced_paths(text):
    # Backticked repository paths such as `loa_meta/layers/loa_phase.py` or
    # `tests/test_loa_phase.py::test_energy_descent`.
    for token in re.findall(r"`([^`\s]+)`", text):
        path = token.split("::")[0]
        if re.match(r"^test_\w+\.py$", path):  # bare test file names live in tests/
            token, path = "tests/" + token, "tests/" + path
        if re.match(r"^(loa_meta|tests|experiments|data_prep|benchmarks|docs)/[\w./-]+\.(py|md)$", path):
            yield token, path


@pytest.mark.parametrize("doc", ["docs/FIDELITY.md", "README.md", "BENCHMARKS.md", "docs/ARCHITECTURE.md"])
def test_docs_reference_existing_files_and_tests(doc):
    text = (ROOT / doc).read_text()
    missing = []
    for token, path in _referenced_paths(text):
        if "*" in path:
            continue
        if not (ROOT / path).exists():
            missing.append(token)
            continue
        if "::" in token and path.endswith(".py"):
            name = token.split("::")[-1].split("[")[0]
            if not re.search(rf"def {re.escape(name)}\b|class {re.escape(name)}\b", (ROOT / path).read_text()):
                missing.append(token)
    assert not missing, f"{doc} references missing files or tests: {missing}"


def test_assembled_fidelity_and_benchmarks_are_up_to_date():
    import subprocess
    import sys

    result = subprocess.run([sys.executable, str(ROOT / "docs" / "build_docs.py"), "--check"], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("doc", ["BENCHMARKS.md", "docs/FIDELITY.md", "README.md", "docs/benchmarks_quality.md",
                                 "docs/benchmarks_classical.md"])
def test_relative_markdown_links_resolve(doc):
    """Every relative link or image of a document points at an existing file from where that document is
    (BENCHMARKS.md is assembled at the root from docs/benchmarks_*.md: build_docs re-roots their links)."""
    path = ROOT / doc
    targets = re.findall(r"\]\((?!https?://|#|mailto:)([^)\s]+)\)", path.read_text())
    missing = [t for t in targets if not (path.parent / t.split("#")[0]).exists()]
    assert not missing, f"{doc} links to missing files: {missing}"
