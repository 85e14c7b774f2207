"""The README's "Using it" examples run as written against the quickstart's outputs.

The quickstart's outputs are built at smoke scale in the quickstart's own layout
(``runs/quickstart/data/demo_tree/tree``, ``runs/quickstart/data/prepared/data``,
``runs/quickstart/meta/model.keras`` + ``meta/masks``) by the quickstart's own functions; then every
command of the README block runs verbatim (two at a time) from a directory holding that ``runs/``.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shlex
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEEN = ("radial:0.1", "radial:0.2", "radial:0.3", "radial:0.4")  # the quickstart's tasks, in its order


def readme_commands():
    """The commands of the first bash block after "## Using it" (continuation lines joined)."""
    text = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    section = text[text.index("## Using it"):]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    joined = re.sub(r"\\\n\s*", " ", block)
    return [line.strip() for line in joined.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def test_readme_block_uses_every_app_and_only_quickstart_outputs():
    cmds = readme_commands()
    modules = [shlex.split(c)[2] for c in cmds]
    assert all(shlex.split(c)[:2] == ["python", "-m"] for c in cmds), cmds
    assert set(modules) == {"data_prep.brats", "experiments.train_meta", "experiments.adapt",
                            "experiments.evaluate", "experiments.reconstruct", "experiments.reproduce"}, modules
    # inputs come from the quickstart's workdir (or are a model shipped with the package), outputs go below runs/
    for c in cmds:
        for arg in shlex.split(c)[3:]:
            name, _, value = arg.partition("=")
            if name in ("--data_dir", "--brats_dir", "--model", "--mask_dir", "--input", "--init_weights"):
                assert value.startswith("runs/quickstart/") or (name in ("--model", "--init_weights")
                                                                and value.startswith("pretrained:")), arg
            if name in ("--workdir", "--output_dir", "--output"):
                assert value.startswith("runs/") and not value.startswith("runs/quickstart"), arg


# Run in a subprocess: experiments.quickstart defines absl flags when imported, which must not clash
# with the flags of other modules imported by the test session.
_BUILD = """
import os, sys
import tensorflow as tf
from experiments import training_common as tc
from experiments.presets import get_preset
from experiments.quickstart import prepare_demo_data
from experiments.reproduce import StageRunner
from loa_meta.models import LOANet
from loa_meta.sampling import parse_task_specs

wd, seen = sys.argv[1], sys.argv[2]
prepare_demo_data(wd, (32, 32), True, 0, StageRunner(wd, 2))  # the quickstart's stages 1-2 (--smoke scale)
# stage 3's outputs: a model of the quickstart preset's architecture with its four tasks (training it
# is what train_meta does; here only the files matter) and the task masks next to it
tf.keras.utils.set_random_seed(0)
preset, tasks, meta = get_preset("quickstart"), parse_task_specs(seen), os.path.join(wd, "meta")
tc.save_model_atomic(LOANet(num_phases=preset.num_phases, num_tasks=len(tasks), task_specs=[str(t) for t in tasks],
                            **preset.model_kwargs()),
                     os.path.join(meta, "model.keras"))
tc.task_masks(tasks, (32, 32), 0, os.path.join(meta, "masks"))
"""


@pytest.fixture(scope="module")
def quickstart_outputs(tmp_path_factory):
    base = tmp_path_factory.mktemp("readme")
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-c", _BUILD, str(base / "runs" / "quickstart"), ",".join(SEEN)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return base


@pytest.mark.slow
def test_readme_examples_run_as_written(quickstart_outputs):
    base = str(quickstart_outputs)
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))

    def run(cmd):
        argv = shlex.split(cmd)
        return cmd, subprocess.run([sys.executable, *argv[1:]], cwd=base, env=env, capture_output=True, text=True,
                                   timeout=600)

    cmds = readme_commands()
    # the longest first; two at a time (the machine has two cores)
    cmds.sort(key=lambda c: ("reproduce" not in c, "train_meta" not in c))
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(run, cmds))
    for cmd, proc in results:
        assert proc.returncode == 0, (cmd, proc.stderr[-3000:])
        assert "Traceback" not in proc.stderr, (cmd, proc.stderr[-3000:])
    runs = os.path.join(base, "runs")
    for path in ("demo_t1/manifest.json", "meta/model.keras", "meta/COMPLETE.json", "adapt_cart30/model.keras",
                 "meta_finetuned/model.keras",
                 "eval/table.md", "recon_radial20.nii.gz", "recon_pretrained.nii.gz", "reproduce_tiny/evaluation/table_seen.md",
                 "reproduce_tiny/evaluation/table_unseen.md"):
        assert os.path.isfile(os.path.join(runs, path)), path
    assert json.load(open(os.path.join(runs, "meta_finetuned", "config.json")))["init_weights"].endswith(
        "demo-t1-radial.keras")
    table = open(os.path.join(runs, "eval", "table.md"), encoding="utf-8").read()
    assert "radial" in table and "meta" in table
    # the reproduce app's flags reach the protocol: one seen and one unseen task, no reduced-data or
    # ISTA-Net+ stages, and (unlike the quickstart) conventional learning on the unseen task too
    rep = os.path.join(runs, "reproduce_tiny")
    summary = json.load(open(os.path.join(rep, "reproduce_summary.json")))
    assert sorted(summary["stages_run"]) == ["adapt/radial_0.25", "conv/radial_0.20", "conv/radial_0.25", "evaluation",
                                             "meta"]
    unseen = {(r["task"], r["method"]) for r in csv.DictReader(open(os.path.join(rep, "evaluation", "table_unseen.csv")))}
    assert unseen == {("radial_0.25", m) for m in ("Zero-filled", "TV", "Conventional", "Meta-learning",
                                                   "Conventional (N on held-out)", "Meta-learning (N on held-out)")}
    chosen = json.load(open(os.path.join(rep, "evaluation", "inference_iterations.json")))["chosen"]
    assert set(chosen["Conventional (N on held-out)"]) == {"radial_0.20", "radial_0.25"}
