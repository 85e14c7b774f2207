r"""Meta-learning (Algorithm 2, paper Section 5.2) on several tasks; saves ``<workdir>/model.keras``.

Example::

  python -m experiments.train_meta --data_dir=data/demo_t1 \
    --tasks=radial:0.1,radial:0.2,radial:0.3,radial:0.4 --workdir=runs/meta --preset=cpu

The task masks are built once (``--mask_seed``) and saved to ``<workdir>/masks/<task.name>.npy``
(+ PNG) so that evaluation and adaptation reuse exactly the same masks. Re-running with the same
``--workdir`` resumes from the last checkpoint; a finished run (``COMPLETE.json``) is skipped.
"""

from __future__ import annotations

from absl import flags

from experiments import cli, common, training_common as tc

FLAGS = flags.FLAGS

tc.define_common_flags()
tc.define_distribute_flags()
flags.DEFINE_list("tasks", list(("radial:0.1", "radial:0.2", "radial:0.3", "radial:0.4")),
                  "Comma list of task specs (one task = one mask), e.g. radial:0.1,radial:0.2.")
flags.DEFINE_integer("per_task_batch", None, "Override: J, samples per task in a cross-task batch (paper: 2 x 4 = 8).")
flags.DEFINE_float("delta0", None, "Override: Algorithm 2 delta_0 (paper 1e-3).")
flags.DEFINE_float("lambda0", None, "Override: Algorithm 2 lambda_0 (paper 1e-5).")
flags.DEFINE_float("delta_tol", None, "Override: Algorithm 2 delta_tol (paper 4.35e-6).")
flags.DEFINE_float("omega_learning_rate", None, "Override: Adam learning rate of omega in Algorithm 2 (not stated in "
                   "the paper; the paper preset uses 1e-3).")
flags.DEFINE_integer("theta_steps", None, "Override: K, theta steps per omega step in Algorithm 2 (lines 7-10; not "
                     "stated in the paper; every preset uses 1). Each step counts against --max_steps.")


def _main():
    tasks = common.parse_tasks(FLAGS.tasks)
    for n in ("per_task_batch", "theta_steps"):
        v = FLAGS[n].value
        if v is not None and v < 1:
            raise common.usage_error(n, f"must be a positive integer, but received: {v}")
    for n in ("delta0", "lambda0", "delta_tol", "omega_learning_rate"):
        v = FLAGS[n].value
        if v is not None and not v > 0:
            raise common.usage_error(n, f"must be a positive number, but received: {v}")
    preset = tc.preset_from_flags(dict(per_task_batch=FLAGS.per_task_batch, delta0=FLAGS.delta0,
                                       lambda0=FLAGS.lambda0, delta_tol=FLAGS.delta_tol,
                                       omega_learning_rate=FLAGS.omega_learning_rate,
                                       theta_steps=FLAGS.theta_steps))
    common.require_dir("data_dir", FLAGS.data_dir)
    workdir, strategy = tc.start_run(_OWN, resolved_preset=preset.to_dict())
    info = tc.run_meta(FLAGS.data_dir, tasks, workdir, preset, seed=FLAGS.seed, mask_seed=FLAGS.mask_seed,
                       data_fraction=FLAGS.data_fraction, mask_dir=FLAGS.mask_dir, epochs=FLAGS.epochs,
                       max_steps=FLAGS.max_steps, strategy=strategy)
    print(f"model: {info['model']}\nsigma(omega): {info.get('sigma_omega')}\n"
          f"TensorBoard: tensorboard --logdir {workdir}")


_OWN = ("data_dir", "workdir", "preset", "seed", "mask_seed", "mask_dir", "num_phases", "stairwise", "alpha0", "eps0",
        "learning_rate", "epochs", "max_steps", "max_train", "data_fraction", "tasks", "per_task_batch", "delta0",
        "lambda0", "delta_tol", "omega_learning_rate", "theta_steps")


def main(argv):
    tc.run_app(_main, argv)


if __name__ == "__main__":
    flags.mark_flags_as_required(["data_dir", "workdir"])
    cli.run(main)
