r"""Adaptation to an unseen task (paper Section 5.4): theta frozen, only the new task's omega is learned.

Example::

  python -m experiments.adapt --model=runs/meta/model.keras --data_dir=data/demo_t1 \
    --task=radial:0.15 --workdir=runs/adapt_radial_0.15 --num_images=100 --epochs=50

The new omega starts from the omega of the model's nearest trained task (same mask kind, nearest
sampling ratio; e.g. radial 10 % for radial 15 %) and is trained with the preset's
``adapt_learning_rate``. Saves the adapted model (one more task, id = old number of tasks, its spec
recorded in ``model.task_specs``) as ``<workdir>/model.keras`` and reports sigma(omega) of the new
task (also in ``<workdir>/COMPLETE.json``, with the start task and omega). Resumable.
"""

from __future__ import annotations

from absl import flags

from experiments import cli, common, training_common as tc

FLAGS = flags.FLAGS

tc.define_common_flags()
flags.DEFINE_string("model", None, "Meta-learning model (.keras) written by experiments.train_meta, or "
                    "pretrained:NAME for a model shipped with the package (loa_meta.pretrained).")
flags.DEFINE_string("task", None, "The unseen task spec, e.g. radial:0.15 or cartesian:0.2.")
flags.DEFINE_integer("num_images", None, "Training slices used for adaptation (paper 100; default from --preset).")


def _main():
    tasks = common.parse_tasks(FLAGS.task, flag="task")
    if len(tasks) != 1:
        raise common.usage_error("task", f"expected exactly one task spec, but received {len(tasks)}: {FLAGS.task}")
    if FLAGS.num_images is not None and FLAGS.num_images < 1:
        raise common.usage_error("num_images", f"must be a positive integer, but received: {FLAGS.num_images}")
    if FLAGS.init_weights is not None:
        raise common.usage_error("init_weights", "does not apply to adaptation, which starts from --model")
    preset = tc.preset_from_flags()
    model_path = common.check_model_file(FLAGS.model, flag="model")
    common.require_dir("data_dir", FLAGS.data_dir)
    workdir = common.prepare_workdir(FLAGS.workdir)
    common.write_config_json(workdir, dict(common.flag_values_dict(_OWN), resolved_preset=preset.to_dict()),
                             name="flags.json")
    info = tc.run_adapt(model_path, FLAGS.data_dir, tasks[0], workdir, preset, seed=FLAGS.seed,
                        mask_seed=FLAGS.mask_seed, mask_dir=FLAGS.mask_dir, num_images=FLAGS.num_images,
                        epochs=FLAGS.epochs, max_steps=FLAGS.max_steps)
    print(f"adapted model: {info['model']}\ntask id: {info['task_id']}\n"
          f"sigma(omega) for {tasks[0]}: {info['sigma_omega']}")


_OWN = ("data_dir", "workdir", "preset", "seed", "mask_seed", "mask_dir", "epochs", "max_steps", "model", "task",
        "num_images")


def main(argv):
    tc.run_app(_main, argv)


if __name__ == "__main__":
    flags.mark_flags_as_required(["model", "data_dir", "workdir", "task"])
    cli.run(main)
