"""Which variables carry the growth of the Eq. 18 theta gradient? (issue 11 probe)

  PYTHONPATH=. python benchmarks/probe_penalty.py --run=RUN_DIR --data_dir=DATA --ckpt=75

Restores the model of a ``train_meta`` run from ``RUN_DIR/ckpt/ckpt-N``, draws cross-task batches
(J = 2 per task, seeded) from the prepared train split with the run's masks, and prints, per theta
variable, the norm of the validation-loss gradient grad L(B_val) and of the penalty gradient
lambda H_theta(L(B_tr)) grad L(B_tr) (Eq. 18; lambda = --lam), each as the median over --batches
batch pairs. Restored variables only; the optimizer state is not needed.
"""
import json
import os

import numpy as np
import tensorflow as tf
from absl import app, flags

from loa_meta.data import load_split
from loa_meta.models import LOANet
from loa_meta.physics.operators import SingleCoilOperator
from loa_meta.sampling import parse_task_spec
from loa_meta.training.algorithm2 import gradient_kernels

flags.DEFINE_string("run", None, "train_meta workdir")
flags.DEFINE_string("data_dir", None, "prepared data")
flags.DEFINE_integer("ckpt", 75, "checkpoint number")
flags.DEFINE_float("lam", 1e-5, "lambda of Eq. 18")
flags.DEFINE_integer("batches", 3, "batch pairs")
FLAGS = flags.FLAGS


def main(_):
    cfg = json.load(open(os.path.join(FLAGS.run, "config.json")))
    specs = cfg["model"]["task_specs"]
    model = LOANet(num_phases=cfg["stairwise"]["max_phases"], **cfg["model"])
    tf.train.Checkpoint(model=model).restore(os.path.join(FLAGS.run, "ckpt", f"ckpt-{FLAGS.ckpt}")).expect_partial()
    masks = [np.load(os.path.join(FLAGS.run, "masks", parse_task_spec(s).name + ".npy")).astype(np.float32)
             for s in specs]
    train = load_split(FLAGS.data_dir, "train")
    rng = np.random.default_rng(0)
    theta = model.theta_variables
    names = [v.path if hasattr(v, "path") else v.name for v in theta]
    # the compiled kernels Algorithm 2 itself runs (loss of Eqs. 13-14, reverse-over-reverse HVP of Eq. 18)
    kernels = gradient_kernels(model, theta, model.omega_variables, reduction=cfg.get("loss_reduction", "sum"))

    def batch():
        idx = rng.choice(len(train), 2 * len(masks), replace=False)
        imgs = train[idx].astype(np.complex64)
        m = np.repeat(np.stack(masks), 2, axis=0)
        y = SingleCoilOperator(tf.constant(m)).forward(tf.constant(imgs))
        return {"kspace": y, "mask": tf.constant(m), "task_id": tf.constant(np.repeat(np.arange(len(masks)), 2), tf.int32),
                "target": tf.constant(imgs)}

    rows = []
    for _ in range(FLAGS.batches):
        btr, bval = batch(), batch()
        n = tf.constant(float(2 * len(masks)))
        _, gval = kernels.loss_grads(bval, n, "theta")
        _, g_tr = kernels.loss_grads(btr, n, "theta")
        # lambda H g of Eq. 18: the gradient of lambda <grad L(B_tr), stop_gradient(g_tr)> w.r.t. theta
        _, _, hvp = kernels.penalty_hvp(btr, [tf.stop_gradient(g) for g in g_tr], FLAGS.lam, n)
        rows.append([(float(tf.norm(a)), float(tf.norm(h)), float(tf.norm(gg)))
                     for a, h, gg in zip(gval, hvp[:len(theta)], g_tr)])
    med = np.median(np.asarray(rows), axis=0)
    print(f"ckpt {FLAGS.ckpt}, eps0 used {float(model.eps0_value()):.3g}, eps0 variable {float(model.eps0_var.numpy()):.3g}")
    print(f"{'variable':40s} {'|grad L_val|':>14s} {'lam|H g_tr|':>14s} {'|g_tr|':>12s}")
    for n, (a, h, gg) in zip(names, med):
        print(f"{n:40s} {a:14.4g} {h:14.4g} {gg:12.4g}")


if __name__ == "__main__":
    flags.mark_flags_as_required(["run", "data_dir"])
    app.run(main)
