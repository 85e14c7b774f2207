"""Probe of training stability and width (issue 11 item 3): a plain compiled supervised loop.

  PYTHONPATH=. TF_CPP_MIN_LOG_LEVEL=2 nice -n 5 python benchmarks/probe_stability.py \
      --data_dir=/work/data11/prepared --steps=600 --eps0_floor=1e-3 --out=/tmp/p.json

LOANet (safeguard off, T = 11, fixed kappa) trained with Adam on |x_T| (mean squared error) at one
task (radial 20 % by default, mask seed 0), batch 8 drawn from the train split by a seeded
permutation per epoch; every ``--eval_every`` steps the mean PSNR over the whole val split is
recorded with eps_0 and the global gradient norm (before clipping). At the end the weights with the
best val PSNR (chosen on val only) and the final weights are evaluated on the test split.
``--tasks=SPEC,SPEC,...`` trains on cross-task batches instead (batch/N slices of each task, each with
its own mask, as Algorithm 2 lines 4-5); PSNRs are lists with one entry per task (one entry for --task); ``--loss=sum`` uses
Eqs. 13-14 (1/2 ||x_T - x*||^2 summed, complex) instead of the mean squared error of |x_T|.
``--baselines`` instead prints zero-filled and TV (lambda chosen on val over ``--tv_grid``) on val
and test. Results go to ``--out`` as JSON; the numbers are recorded in docs/benchmarks_quality.md.
"""

import json
import time

import numpy as np
import tensorflow as tf
from absl import app, flags

from loa_meta.data import load_split
from loa_meta.metrics import psnr
from loa_meta.models import LOANet
from loa_meta.physics.operators import SingleCoilOperator
from loa_meta.sampling import parse_task_spec
from loa_meta.training.losses import zero_filled_loss_weights

flags.DEFINE_string("data_dir", None, "prepared dataset (data_prep.brats output)")
flags.DEFINE_string("task", "radial:0.2", "task spec of the mask (seed --mask_seed)")
flags.DEFINE_list("tasks", [], "cross-task probe: several task specs (overrides --task); every batch has "
                  "batch/len(tasks) slices of each task (the meta-learning batch of Algorithm 2 lines 4-5), "
                  "val/test PSNR is reported per task and as the mean over tasks")
flags.DEFINE_enum("loss", "mean", ["mean", "sum", "task_norm"],
                  "mean: mean squared error on |x_T|; sum: Eq. 13-14, sum over the batch of 1/2 ||x_T - x*||^2 "
                  "(complex); task_norm (beyond the paper): the sum with each sample's term divided by its "
                  "zero-filled error ||A^H y - x*||^2 (weights scaled to mean 1 in the batch), so that a low-ratio "
                  "slice does not outweigh a high-ratio one")
flags.DEFINE_float("task_norm_power", 1.0, "task_norm weights are (||A^H y - x*||^2)^-power (1: the relative "
                   "error; 0.5: divided by the zero-filled error's norm, between task_norm and sum)")
flags.DEFINE_integer("mask_seed", 0, "mask seed")
flags.DEFINE_integer("steps", 600, "Adam steps")
flags.DEFINE_integer("batch", 8, "batch size")
flags.DEFINE_integer("eval_every", 50, "val PSNR every N steps")
flags.DEFINE_integer("seed", 0, "seed of the initial weights and of the batch order")
flags.DEFINE_integer("phases", 11, "T")
flags.DEFINE_integer("filters", 4, "kernels per convolution (paper 4)")
flags.DEFINE_float("kappa", 0.01, "fixed kappa")
flags.DEFINE_float("alpha0", 1.0, "initial alpha")
flags.DEFINE_float("tau0", 0.3, "initial tau")
flags.DEFINE_float("eps0", 1e-3, "initial eps_0")
flags.DEFINE_float("eps0_floor", 0.0, "LOANet eps0_floor (0 = the paper's |eps_0|)")
flags.DEFINE_boolean("train_eps0", True, "train eps_0 (False: keep it at its initial value)")
flags.DEFINE_string("init", "random", "regulariser start: random (Xavier) or tv")
flags.DEFINE_float("tv_scale", 1.0, "scale s of the tv start")
flags.DEFINE_float("lr", 1e-3, "Adam learning rate")
flags.DEFINE_enum("lr_schedule", "constant", ["constant", "cosine"],
                  "constant, or cosine decay from --lr to 0 over --steps")
flags.DEFINE_float("clipnorm", 0.0, "Adam global_clipnorm (0 = none)")
flags.DEFINE_boolean("safeguard", False, "run Algorithm 1 lines 5-16")
flags.DEFINE_boolean("baselines", False, "only compute zero-filled and TV rows")
flags.DEFINE_list("tv_grid", ["1e-4", "2e-4", "5e-4", "1e-3", "2e-3", "4e-3", "8e-3", "1.6e-2"], "TV lambdas tried on val")
flags.DEFINE_integer("tv_iters", 200, "TV iterations")
flags.DEFINE_string("out", None, "JSON output path")
FLAGS = flags.FLAGS


def _kspace(images, mask):
    return SingleCoilOperator(tf.constant(mask)).forward(tf.constant(images.astype(np.complex64)))


def _mean_psnr(rec, images):
    return float(np.mean(psnr(np.abs(np.asarray(rec)).astype(np.float64), np.abs(images).astype(np.float64))))


def _model_and_optimizer():
    """The probed LOANet (fixed kappa, seeded), its trained variables and the Adam optimizer."""
    tf.keras.utils.set_random_seed(FLAGS.seed)
    model = LOANet(num_phases=FLAGS.phases, filters=FLAGS.filters, alpha0=FLAGS.alpha0, tau0=FLAGS.tau0,
                   eps0=FLAGS.eps0, safeguard=FLAGS.safeguard, use_task_weights=False, fixed_kappa=FLAGS.kappa,
                   eps0_floor=FLAGS.eps0_floor, regularizer_init=FLAGS.init, tv_scale=FLAGS.tv_scale)
    variables = [v for v in model.theta_variables if FLAGS.train_eps0 or v is not model.eps0_var]
    kw = {"global_clipnorm": FLAGS.clipnorm} if FLAGS.clipnorm > 0 else {}
    lr = FLAGS.lr
    if FLAGS.lr_schedule == "cosine":
        lr = tf.keras.optimizers.schedules.CosineDecay(FLAGS.lr, decay_steps=FLAGS.steps)
    return model, variables, tf.keras.optimizers.Adam(learning_rate=lr, **kw)


def _zero_filled_weights(y, imgs, masks):
    """Per-sample (||A^H y - x*||^2)^-power, scaled to mean 1 (the task_norm loss; ones for the other losses)."""
    if FLAGS.loss != "task_norm":
        return tf.ones([len(imgs)], tf.float32)
    return zero_filled_loss_weights(y, masks, tf.constant(imgs.astype(np.complex64)), FLAGS.task_norm_power)


def baselines(val, test, mask):
    from loa_meta.evaluation.classical import tune_lambda, tv_reconstruct

    out = {"zero_filled": {}, "tv": {}}
    for name, imgs in (("val", val), ("test", test)):
        y = _kspace(imgs, mask)
        out["zero_filled"][name] = _mean_psnr(SingleCoilOperator(tf.constant(mask)).zero_filled(y), imgs)
    lam, scores = tune_lambda(val, mask, [float(g) for g in FLAGS.tv_grid], FLAGS.tv_iters)
    out["tv"] = {"lambda": lam, "val_scores": {str(k): v for k, v in scores.items()}, "val": scores[lam],
                 "test": _mean_psnr(tv_reconstruct(_kspace(test, mask), mask, lam, FLAGS.tv_iters), test)}
    return out


def main(_):
    train, val, test = (load_split(FLAGS.data_dir, s) for s in ("train", "val", "test"))
    shape = train.shape[1:]
    specs = FLAGS.tasks or [FLAGS.task]
    masks = [parse_task_spec(t).build_mask(shape, seed=FLAGS.mask_seed).astype(np.float32) for t in specs]
    if FLAGS.baselines:
        res = {t: baselines(val, test, m) for t, m in zip(specs, masks)}
        res = res[specs[0]] if len(specs) == 1 else res
        print(json.dumps(res, indent=1))
        if FLAGS.out:
            json.dump(res, open(FLAGS.out, "w"), indent=1)
        return
    return train_probe(train, val, test, specs, masks)


def train_probe(train, val, test, specs, masks):
    """The supervised loop: batches of batch/N slices of each of the N tasks, one mask each (N = 1: one task)."""
    n = len(specs)
    per = FLAGS.batch // n
    if per < 1 or per * n != FLAGS.batch:
        raise ValueError(f"--batch={FLAGS.batch} must be a positive multiple of the number of --tasks ({n})")
    model, variables, opt = _model_and_optimizer()
    batch_masks = tf.constant(np.repeat(np.stack(masks), per, axis=0))

    @tf.function(reduce_retracing=True)
    def step(y, target, weights):
        with tf.GradientTape() as tape:
            x = model({"kspace": y, "mask": batch_masks}, training=True)
            if FLAGS.loss == "sum":
                loss = 0.5 * tf.reduce_sum(tf.square(tf.abs(x - target)))
            elif FLAGS.loss == "task_norm":
                loss = 0.5 * tf.reduce_sum(weights * tf.reduce_sum(tf.square(tf.abs(x - target)), axis=[1, 2]))
            else:
                loss = tf.reduce_mean(tf.square(tf.abs(x) - tf.abs(target)))
        grads = tape.gradient(loss, variables)
        norm = tf.linalg.global_norm(grads)
        opt.apply_gradients(zip(grads, variables))
        return loss, norm

    fwd = tf.function(lambda y, m: model({"kspace": y, "mask": m}, training=False), reduce_retracing=True)

    def evaluate(imgs):
        out = []
        for m in masks:
            y = _kspace(imgs, m)
            rec = np.concatenate([fwd(y[s:s + 10], tf.constant(np.repeat(m[None], len(y[s:s + 10]), 0))).numpy()
                                  for s in range(0, len(imgs), 10)])
            out.append(_mean_psnr(rec, imgs))
        return out

    rng = np.random.default_rng(FLAGS.seed)
    orders = [rng.permutation(len(train)) for _ in specs]
    pos = [0] * n
    norms, curve = [], []
    v0 = evaluate(val)
    best = (float(np.mean(v0)), 0, [w.numpy() for w in model.weights])
    curve.append({"step": 0, "val_psnr": v0, "eps0": float(model.eps0_value())})
    print(f"step 0: val {' '.join(f'{v:.2f}' for v in v0)}", flush=True)
    t0 = time.time()
    for s in range(1, FLAGS.steps + 1):
        idx = []
        for i in range(n):  # each task draws its own slices, as Algorithm 2 samples each D_tau_i
            if pos[i] + per > len(orders[i]):
                orders[i], pos[i] = rng.permutation(len(train)), 0
            idx.append(orders[i][pos[i]:pos[i] + per])
            pos[i] += per
        imgs = np.concatenate([train[j] for j in idx])
        y = tf.concat([_kspace(train[j], m) for j, m in zip(idx, masks)], axis=0)
        loss, norm = step(y, tf.constant(imgs.astype(np.complex64)), _zero_filled_weights(y, imgs, batch_masks))
        norms.append(float(norm))
        if not np.isfinite(float(loss)):
            curve.append({"step": s, "note": "non-finite loss"})
            break
        if s % FLAGS.eval_every == 0 or s == FLAGS.steps:
            v = evaluate(val)
            curve.append({"step": s, "val_psnr": v, "eps0": float(model.eps0_value()),
                          "grad_norm_median": float(np.median(norms)), "grad_norm_max": float(np.max(norms[-FLAGS.eval_every:]))})
            print(f"step {s}: val {' '.join(f'{x:.2f}' for x in v)} (mean {np.mean(v):.3f}), eps0 "
                  f"{float(model.eps0_value()):.3g}, |g| median {np.median(norms):.3g} max(last) "
                  f"{np.max(norms[-FLAGS.eval_every:]):.3g}, {time.time() - t0:.0f} s", flush=True)
            if np.mean(v) > best[0]:
                best = (float(np.mean(v)), s, [w.numpy() for w in model.weights])
    seconds = time.time() - t0
    final_test = evaluate(test)
    for w, b in zip(model.weights, best[2]):
        w.assign(b)
    best_test = evaluate(test)
    med = float(np.median(norms))
    res = {"flags": {k: FLAGS[k].value for k in ("task", "tasks", "loss", "steps", "batch", "seed", "phases", "filters", "kappa",
                                                  "alpha0", "tau0", "eps0", "eps0_floor", "train_eps0", "init", "tv_scale",
                                                  "lr", "clipnorm", "safeguard")},
           "seconds": seconds, "s_per_step": seconds / max(1, len(norms)), "val_init": v0,
           "final_test": final_test, "best_val_mean": best[0], "best_step": best[1], "best_val_test": best_test,
           "grad_norm_median": med, "grad_norm_max_over_median": float(np.max(norms) / med),
           "steps_above_10x_median": int(np.sum(np.asarray(norms) > 10 * med)), "eps0_final": float(model.eps0_value()),
           "curve": curve}
    print(json.dumps({k: v for k, v in res.items() if k != "curve"}, indent=1))
    if FLAGS.out:
        json.dump(res, open(FLAGS.out, "w"), indent=1)


if __name__ == "__main__":
    flags.mark_flags_as_required(["data_dir"])
    app.run(main)
