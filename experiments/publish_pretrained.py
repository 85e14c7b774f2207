r"""Turn a trained model and its evaluation into a shipped pretrained model (``loa_meta.pretrained``).

  python -m experiments.publish_pretrained --name=demo-t1-radial \
      --model=runs/pre/model.keras --eval_dir=runs/pre_eval \
      --description="LOA meta-learned on the demo T1 slices, radial 10-40 %" \
      --data="demo tree, data_prep.brats --crop=160,180, 80/20/20 slices" \
      --command="python -m experiments.train_meta ..." --training_seconds=5400

The model card (``loa_meta.pretrained.CARD_FIELDS``) is built from the flags and from the evaluation
directory written by ``experiments.evaluate`` (``table.csv``: the test-split rows, which must include
Zero-filled and TV, and ``config.json``: tasks and image shape). The commit is the checkout's
``git rev-parse --short HEAD`` unless ``--commit`` is given. Nothing is written when a check fails;
both files are written atomically (``pretrained.install``).

Optionally (beyond the paper) ``--iterations_eval_dir`` names a second ``experiments.evaluate`` workdir
of the same model on the same slices and masks, run with ``--iterations=auto`` (an Algorithm 1
iteration count per task chosen off the evaluated split, ``loa_meta.evaluation.iterations``); its
chosen counts, how they were chosen and its rows become the card's ``inference_iterations`` entry,
read back by ``loa_meta.pretrained.recommended_iterations``. The two evaluations must agree on the
split, tasks, image shape, slice count and zero-filled rows (the same slices and masks), or nothing
is written.
"""

from __future__ import annotations

import os
import subprocess

from absl import app, flags

from experiments import cli
from experiments.common import require_file, usage_error
from experiments.pretrained_cards import read_iterations, read_table

flags.DEFINE_string("name", None, "Name of the shipped model (lower case, digits, '.', '_', '-').")
flags.DEFINE_string("model", None, "Trained .keras model to ship.")
flags.DEFINE_string("eval_dir", None, "experiments.evaluate workdir of that model (table.csv, config.json).")
flags.DEFINE_string("method", None, "Method label of the model in table.csv (default: the one row that is "
                    "neither Zero-filled nor a TV row).")
flags.DEFINE_string("description", None, "One sentence: what the model reconstructs.")
flags.DEFINE_string("data", None, "The training data and how to rebuild it.")
flags.DEFINE_string("command", None, "The command that trained the model.")
flags.DEFINE_float("training_seconds", None, "Wall time of the training command.", lower_bound=0.0)
flags.DEFINE_string("machine", "2 CPU cores (no GPU)", "Where it was trained.")
flags.DEFINE_string("commit", None, "loa-meta commit that trained it (default: git rev-parse --short HEAD).")
flags.DEFINE_string("iterations_eval_dir", None, "Optional: an experiments.evaluate workdir of the same model, split "
                    "and masks run with --iterations=auto; its chosen counts and rows become the card's "
                    "inference_iterations entry (beyond the paper).")
flags.DEFINE_string("where", None, "Target directory (default: the loa_meta/pretrained package directory).")
FLAGS = flags.FLAGS


def _commit() -> str:
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() or "unknown"


def main(argv):
    del argv
    from loa_meta import pretrained

    try:
        pretrained.check_model_name(FLAGS.name)
    except ValueError as e:
        raise usage_error("name", str(e)) from None
    require_file("model", FLAGS.model)
    rows, tasks, shape, method = read_table(FLAGS.eval_dir, FLAGS.method)
    card = {"name": FLAGS.name, "description": FLAGS.description, "data": FLAGS.data, "command": FLAGS.command,
            "commit": FLAGS.commit or _commit(), "training_seconds": float(FLAGS.training_seconds),
            "machine": FLAGS.machine, "tasks": tasks, "image_shape": shape, "method": method, "table": rows}
    if FLAGS.iterations_eval_dir:
        card["inference_iterations"] = read_iterations(FLAGS.iterations_eval_dir, FLAGS.eval_dir, method, rows, tasks)
    try:
        path = pretrained.install(FLAGS.name, FLAGS.model, card, where=FLAGS.where)
    except ValueError as e:  # the name is valid (checked above): a table without the Zero-filled / TV rows
        raise usage_error("eval_dir", str(e)) from None
    print(f"installed {path} and its card {os.path.splitext(path)[0]}.json")
    from loa_meta.sampling import parse_task_spec

    for t in tasks:
        r = {x["method"]: x["psnr_mean"] for x in rows if x["task"] == parse_task_spec(t).name}
        print(f"  {t}: zero-filled {r.get('Zero-filled', float('nan')):.2f}, TV {r.get('TV', float('nan')):.2f}, "
              f"{method} {r.get(method, float('nan')):.2f} dB (model - TV {r.get(method, 0) - r.get('TV', 0):+.2f})")
    if "inference_iterations" in card:
        ii = card["inference_iterations"]
        print(f"  inference_iterations: {ii['chosen']}; {ii['note']}")


if __name__ == "__main__":
    flags.mark_flags_as_required(["name", "model", "eval_dir", "description", "data", "command", "training_seconds"])
    cli.run(main)
