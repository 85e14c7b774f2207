"""Probe: does averaging the weights of a run's last checkpoints beat its last iterate? (issue 11)

  PYTHONPATH=. python benchmarks/probe_averaging.py --run=RUN_DIR --ckpts=750,775,800 --output=AVG.keras

Restores the LOANet of a ``train_meta`` / ``train_conventional`` run from ``RUN_DIR/ckpt/ckpt-N`` for each
N in ``--ckpts`` (the model only; the optimizer state is not restored), averages every variable
uniformly over the checkpoints (Polyak-style averaging of the iterates, beyond the paper) and saves the
result as a ``.keras`` model that ``experiments.evaluate`` scores like any other. The averaged model
keeps the run's architecture and task specs (``RUN_DIR/config.json``).

Checks before writing: the last checkpoint's weights equal ``RUN_DIR/model.keras``'s when that file
exists and the run ended at that checkpoint (``--check_final``), so the restore is the one the run used.
The averaged weights are a paired comparison with the last iterate: the training trajectory is the same,
so the difference is free of the run-to-run spread of the draw (BENCHMARKS quality 5.17).
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import tensorflow as tf
from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from experiments.training_common import save_model_atomic  # noqa: E402
from loa_meta.models import LOANet  # noqa: E402

flags.DEFINE_string("run", None, "train_meta or train_conventional workdir (config.json, run_config.json, ckpt/).")
flags.DEFINE_list("ckpts", None, "Checkpoint numbers to average (ckpt-N), e.g. 750,775,800.")
flags.DEFINE_string("output", None, "Averaged model (.keras).")
flags.DEFINE_boolean("check_final", True, "Check that the last listed checkpoint equals RUN/model.keras.")
FLAGS = flags.FLAGS


def _dummy(h: int, w: int):
    return {"kspace": tf.zeros((1, h, w), tf.complex64), "mask": tf.zeros((h, w), tf.float32),
            "task_id": tf.zeros((1,), tf.int32)}


def restore(run: str, number: int, shape) -> LOANet:
    cfg = json.load(open(os.path.join(run, "config.json"), encoding="utf-8"))
    kw = dict(cfg["model"])
    if "fixed_kappa" in kw:  # a conventional run: the training app builds LOANet without task weights
        kw.setdefault("use_task_weights", False)
    model = LOANet(num_phases=cfg["stairwise"]["max_phases"], **kw)
    model(_dummy(*shape), training=False)
    path = os.path.join(run, "ckpt", f"ckpt-{number}")
    if not tf.io.gfile.exists(path + ".index"):
        raise FileNotFoundError(f"--ckpts: no checkpoint {path} (.index missing)")
    tf.train.Checkpoint(model=model).restore(path).expect_partial().assert_existing_objects_matched()
    return model


def main(_):
    if not (FLAGS.run and FLAGS.ckpts and FLAGS.output):
        raise app.UsageError("--run, --ckpts and --output are required")
    rc = json.load(open(os.path.join(FLAGS.run, "run_config.json"), encoding="utf-8"))
    shape = tuple(rc["image_shape"])
    numbers = [int(n) for n in FLAGS.ckpts]
    models = [restore(FLAGS.run, n, shape) for n in numbers]
    final = os.path.join(FLAGS.run, "model.keras")
    if FLAGS.check_final and os.path.isfile(final):
        import keras

        ref = keras.models.load_model(final)
        diff = max(float(np.max(np.abs(a - b))) for a, b in zip(ref.get_weights(), models[-1].get_weights()))
        if diff > 0:
            raise ValueError(f"ckpt-{numbers[-1]} differs from {final} (max |diff| {diff:g}): not the run's last iterate")
        print(f"ckpt-{numbers[-1]} equals {final}")
    kappa_last = [float(tf.sigmoid(v).numpy().ravel()[0]) for v in models[-1].omega_variables]
    weights = [m.get_weights() for m in models]
    avg = [np.mean(np.stack(ws), axis=0).astype(ws[0].dtype) for ws in zip(*weights)]
    out = models[-1]
    out.set_weights(avg)
    spread = max(float(np.max(np.abs(w[-1] - a))) for w, a in zip(zip(*weights), avg))
    save_model_atomic(out, FLAGS.output)
    print(json.dumps({"run": FLAGS.run, "ckpts": numbers, "output": FLAGS.output,
                      "max_abs_change_vs_last": spread,
                      "kappa_last": kappa_last,
                      "kappa_avg": [float(tf.sigmoid(v).numpy().ravel()[0]) for v in out.omega_variables]}))


if __name__ == "__main__":
    app.run(main)
