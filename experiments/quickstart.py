r"""The README's main job: demo data -> meta-learning -> adaptation -> evaluation, in one command.

Example::

  python -m experiments.quickstart --workdir=runs/quickstart

Steps (each resumable: re-running the command skips finished stages):

1. ``data/demo_tree``  BraTS-layout demo tree from the MNI152 template (``data_prep.demo``);
2. ``data/prepared``   prepared slices (``data_prep.brats``: 8/2/2 subjects, 10 slices, a 64x64
                       centre crop so that the job fits in 15 minutes on 2 CPU cores);
3. ``meta``            meta-learning on radial 10/20/30/40 % (preset ``quickstart``);
4. ``conv/<task>``     conventional learning per ratio (cheap budget), in a second process next to
                       stage 3 (``--workers=2``);
5. ``adapt/radial_0.25`` adaptation of omega to the unseen ratio 25 %;
6. ``evaluation``      tables against zero-filled, TV (lambda chosen on the val split) and
                       conventional, figures, Fig. 6; every LOA model with its 3 trained phases and, beyond
                       the paper, at the iteration count chosen per task on the 8 held-out val slices
                       (rows "(N on held-out)"; ``--inference_iterations``, docs/experiments.md).

The job then checks that, at every seen ratio, meta-learning's mean test PSNR is at least TV's
(plus ``--margin_db``, default 0) and that meta-learning beats conventional learning on average over
the seen ratios (judged on the "(N on held-out)" rows when they exist); it prints both margins and a
verdict (exit status 1 if it does not hold; ``--smoke`` runs a seconds-scale version of the same
pipeline and only reports the verdict).
"""

from __future__ import annotations

import os
import sys
import time

from absl import flags, logging

from experiments import cli, common, training_common as tc
from experiments.presets import get_preset
from experiments.reproduce import (StageRunner, define_inference_iterations_flag, inference_iterations_override,
                                   run_protocol)
from loa_meta.evaluation.verdict import quickstart_verdict as verdict

FLAGS = flags.FLAGS

flags.DEFINE_string("workdir", "runs/quickstart", "Output directory (re-running resumes).")
flags.DEFINE_boolean("smoke", False, "Seconds-scale run of the same pipeline (tests): tiny preset, 4 small subjects.")
flags.DEFINE_float("margin_db", 0.0, "Required mean test PSNR margin (dB) of meta-learning over TV (lambda chosen on "
                   "the val split) at every seen ratio; PASS also needs meta-learning > conventional on average.")
flags.DEFINE_integer("workers", 2, "Training stages run at once in separate processes (meta-learning next to "
                     "conventional; the numbers do not depend on it). 1 = one after the other.")
flags.DEFINE_string("crop", None, "In-plane crop H,W of the prepared slices (default 64,64; smoke 32,32).")
flags.DEFINE_integer("seed", 0, "Seed of the demo data, training and masks.")
flags.DEFINE_string("preset", None, "Preset (default: quickstart, or tiny with --smoke).")
define_inference_iterations_flag()

SEEN = ("radial:0.1", "radial:0.2", "radial:0.3", "radial:0.4")
UNSEEN = ("radial:0.25",)
SMOKE_SEEN = ("radial:0.1", "radial:0.4")  # --smoke: two seen ratios keep the test short


def _crop():
    text = FLAGS.crop or ("32,32" if FLAGS.smoke else "64,64")
    try:
        h, w = (int(v) for v in text.split(","))
    except ValueError:
        raise common.usage_error("crop", f"expected two positive integers H,W, but received: {text!r}") from None
    if h < 8 or w < 8:
        raise common.usage_error("crop", f"expected H,W >= 8, but received: {text!r}")
    return h, w


def prepare_demo_data(workdir: str, crop, smoke: bool, seed: int, runner: StageRunner) -> str:
    """Stages 1-2: the demo tree and the prepared dataset; returns the prepared directory."""
    from data_prep.brats import PrepConfig, prepare_brats
    from data_prep.demo import BRATS_SHAPE, build_demo_tree

    n_sub = 4 if smoke else 12
    shape = (96, 96, 40) if smoke else BRATS_SHAPE
    tree = os.path.join(workdir, "data", "demo_tree", "tree")
    prepared = os.path.join(workdir, "data", "prepared", "data")

    def build(d):
        os.makedirs(d, exist_ok=True)
        return build_demo_tree(tree, num_subjects=n_sub, seed=seed, overwrite=True, shape=shape, workers=2)

    def prep(d):
        os.makedirs(d, exist_ok=True)
        splits = (2, 1, 1) if smoke else (8, 2, 2)
        cfg = PrepConfig(brats_dir=tree, output_dir=prepared, num_train=splits[0], num_val=splits[1],
                         num_test=splits[2], crop=tuple(crop), num_slices=3 if smoke else 10, seed=seed,
                         overwrite=True)
        return prepare_brats(cfg)

    runner.run("data/demo_tree", build)
    runner.run("data/prepared", prep)
    return prepared


def _main():
    crop = _crop()
    if FLAGS.margin_db < 0:
        raise common.usage_error("margin_db", f"must be >= 0, but received: {FLAGS.margin_db}")
    if FLAGS.workers < 1:
        raise common.usage_error("workers", f"must be a positive integer, but received: {FLAGS.workers}")
    try:
        preset = get_preset(FLAGS.preset or ("tiny" if FLAGS.smoke else "quickstart"))
    except ValueError as e:
        raise common.usage_error("preset", str(e)) from None
    preset = inference_iterations_override(preset)
    workdir = common.prepare_workdir(FLAGS.workdir)
    t0 = time.time()
    common.write_config_json(workdir, dict(common.flag_values_dict(_OWN), resolved_crop=list(crop),
                                           resolved_preset=preset.to_dict()), name="config.json")
    data_runner = StageRunner(workdir, 2)
    data_dir = prepare_demo_data(workdir, crop, FLAGS.smoke, FLAGS.seed, data_runner)
    seen = SMOKE_SEEN if FLAGS.smoke else SEEN
    summary = run_protocol(data_dir, workdir, preset, seed=FLAGS.seed, mask_seed=FLAGS.seed, seen=seen,
                           unseen=UNSEEN, cartesian=(), reduced=False, ista=False, conventional_unseen=False,
                           figures=True, title="quickstart, demo data",
                           workers=FLAGS.workers)
    seconds = time.time() - t0
    ok, lines = verdict(summary, FLAGS.margin_db)
    out = summary["outputs"]
    print(open(out["table_seen"], encoding="utf-8").read())
    if "table_unseen" in out:
        print(open(out["table_unseen"], encoding="utf-8").read())
    print(("PASS" if ok else "FAIL") + f": meta-learning vs TV (mean test PSNR >= TV + {FLAGS.margin_db:g} dB at every "
          "seen ratio, TV's lambda chosen on the val split) and vs conventional (higher on average)")
    print("\n".join(lines))
    print(f"wall time this invocation: {seconds:.0f} s (stages run: {len(data_runner.ran) + len(summary['stages_run'])})")
    print(f"tables and figures: {os.path.join(workdir, 'evaluation')}")
    print(f"TensorBoard logs:   tensorboard --logdir {workdir}")
    common.write_config_json(workdir, {"pass": ok, "margin_db": FLAGS.margin_db, "lines": lines,
                                       "seconds_this_invocation": seconds, "claims": summary["claims"]},
                             name="verdict.json")
    if not ok and not FLAGS.smoke:
        logging.error("quickstart verdict: FAIL")
        sys.exit(1)


_OWN = ("workdir", "smoke", "margin_db", "workers", "crop", "seed", "preset", "inference_iterations")


def main(argv):
    tc.run_app(_main, argv)


if __name__ == "__main__":
    cli.run(main)
