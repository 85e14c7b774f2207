r"""Conventional supervised training (paper Section 5.2): one task, kappa = 1, train+val merged.

Example::

  python -m experiments.train_conventional --data_dir=data/demo_t1 --task=radial:0.2 \
    --workdir=runs/conv_radial_0.20 --preset=cpu

Paper setting (``--preset=paper``): batch 25, 2000 epochs, 11 phases. Writes
``<workdir>/model.keras``, ``masks/``, ``config.json``, ``run_config.json``; resumable.
"""

from __future__ import annotations

from absl import flags

from experiments import cli, common, training_common as tc

FLAGS = flags.FLAGS

tc.define_common_flags()
tc.define_distribute_flags()
flags.DEFINE_string("task", None, "One task spec, e.g. radial:0.2 (conventional learning trains one task per run).")
flags.DEFINE_integer("batch_size", None, "Override: batch size (paper 25).")

MODEL_TYPE = "loa"
APP = "train_conventional"


def _main():
    tasks = common.parse_tasks(FLAGS.task, flag="task")
    if len(tasks) != 1:
        raise common.usage_error("task", f"expected exactly one task spec, but received {len(tasks)}: {FLAGS.task}")
    if FLAGS.batch_size is not None and FLAGS.batch_size < 1:
        raise common.usage_error("batch_size", f"must be a positive integer, but received: {FLAGS.batch_size}")
    if MODEL_TYPE != "loa" and FLAGS.init_weights is not None:
        raise common.usage_error("init_weights", "starts an LOA network; ISTA-Net+ is trained from its initialiser")
    preset = tc.preset_from_flags(dict(conv_batch=FLAGS.batch_size))
    common.require_dir("data_dir", FLAGS.data_dir)
    workdir, strategy = tc.start_run(_OWN, app=APP, resolved_preset=preset.to_dict())
    info = tc.run_conventional(FLAGS.data_dir, tasks[0], workdir, preset, model_type=MODEL_TYPE, seed=FLAGS.seed,
                               mask_seed=FLAGS.mask_seed, data_fraction=FLAGS.data_fraction, mask_dir=FLAGS.mask_dir,
                               epochs=FLAGS.epochs, max_steps=FLAGS.max_steps, strategy=strategy)
    print(f"model: {info['model']}\nTensorBoard: tensorboard --logdir {workdir}")


_OWN = ("data_dir", "workdir", "preset", "seed", "mask_seed", "mask_dir", "num_phases", "stairwise", "alpha0", "eps0",
        "learning_rate", "epochs", "max_steps", "max_train", "data_fraction", "task", "batch_size")


def main(argv):
    tc.run_app(_main, argv)


if __name__ == "__main__":
    flags.mark_flags_as_required(["data_dir", "workdir", "task"])
    cli.run(main)
