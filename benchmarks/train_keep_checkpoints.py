"""Probe helper: run a training app with a checkpoint every N outer iterations, all of them kept (issue 11).

  PYTHONPATH=. CKPT_EVERY=5 python benchmarks/train_keep_checkpoints.py train_meta --data_dir=... --workdir=RUN \
      --preset=quickstart ... --average_checkpoints=1

The first argument names the app (``train_meta`` or ``train_conventional``); the other arguments are its
flags. Before the app starts, every preset's ``checkpoint_every`` becomes ``CKPT_EVERY`` (default 5)
and the apps keep every checkpoint (``training_common.KEEP_CHECKPOINTS``), so that
``benchmarks/probe_averaging.py --run=RUN --ckpts=...`` can average any window of the trajectory
afterwards (docs/benchmarks_quality.md 5.19). Saving checkpoints does not change the trajectory: a
checkpoint only reads the variables. The training loop runs with TensorFlow's graph optimizer
(Grappler) off since session 16 (``loa_meta.training.loop.graph_rewrites_off``); ``GRAPPLER_ON=1``
keeps it on, as before (the control of benchmarks/determinism.py).
"""

from __future__ import annotations

import importlib
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import experiments.presets as presets  # noqa: E402
import experiments.training_common as tc  # noqa: E402


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in ("train_meta", "train_conventional"):
        sys.exit("usage: train_keep_checkpoints.py train_meta|train_conventional --flag=value ...")
    every = int(os.environ.get("CKPT_EVERY", "5"))
    if every < 1:
        sys.exit(f"CKPT_EVERY must be a positive integer, but received: {every}")
    tc.KEEP_CHECKPOINTS = 1_000_000
    for name, preset in list(presets.PRESETS.items()):
        presets.PRESETS[name] = preset.override(checkpoint_every=every)
    if os.environ.get("GRAPPLER_ON") == "1":  # control (benchmarks/determinism.py): graph rewriting as before
        import contextlib

        import loa_meta.training.loop as loop

        loop.graph_rewrites_off = lambda enabled=True: contextlib.nullcontext()
    app = importlib.import_module(f"experiments.{sys.argv.pop(1)}")
    from absl import flags

    from experiments import cli

    flags.mark_flags_as_required(["data_dir", "workdir"])
    cli.run(app.main)


if __name__ == "__main__":
    main()
