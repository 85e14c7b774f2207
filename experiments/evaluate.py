r"""Evaluate trained models on a prepared split: paper Tables 1-5, Figs. 1-5 and Fig. 6.

Example (meta-learning model shared by all tasks, one conventional model per task):

  python -m experiments.evaluate \
    --data_dir=data/brats_t1 --split=test \
    --tasks=radial:0.1,radial:0.2,radial:0.3,radial:0.4 \
    --mask_dir=runs/meta/masks \
    --models='meta=runs/meta/model.keras,conventional=runs/conv_{task}/model.keras' \
    --workdir=runs/eval_t1

The TV row (lambda chosen per task on the val split) is on by default; ``--noclassical`` drops it.

Outputs in --workdir: ``table.md``/``table.csv`` (mean ± std per task and method), ``per_slice.csv``,
``figure.png`` (comparison grid), ``convergence_<method>.png`` (Fig. 6, LOANet models),
``masks.json`` (where each mask came from) and ``config.json`` (the resolved flags).
"""

from __future__ import annotations

import csv
import io
import json
import os

from absl import app, flags, logging

from experiments import cli, common

FLAGS = flags.FLAGS

flags.DEFINE_string("data_dir", None, "Prepared dataset directory (manifest.json + shards, see data_prep.brats).")
flags.DEFINE_string("split", "test", "Split to evaluate (train, val or test).")
flags.DEFINE_list("tasks", None, "Comma list of task specs, e.g. radial:0.1,radial:0.2 (see loa_meta.sampling).")
flags.DEFINE_string("mask_dir", None, "Directory with the masks used in training, <task.name>.npy "
                    "(e.g. radial_0.10.npy); tasks without a file use spec.build_mask(shape, --mask_seed).")
flags.DEFINE_integer("mask_seed", 0, "Seed of masks built from task specs (must equal the training seed).")
flags.DEFINE_list("models", [], "Comma list METHOD=PATH of .keras models; '{task}' in PATH is replaced by each "
                  "task's name (one model per task, e.g. conventional=runs/conv_{task}/model.keras); PATH may be "
                  "pretrained:NAME (a model shipped with the package, loa_meta.pretrained).")
flags.DEFINE_list("task_ids", None, "Task ids fed to shared (non-{task}) models, one per task; default: each "
                  "task's id among the task specs the model was trained on (an unknown spec is an error).")
flags.DEFINE_list("iterations", None, "Iterations of Algorithm 1 run by LOA models, one per task (0 = the model's "
                  "trained phases T): more than T runs the learned algorithm on with its last phase's step sizes "
                  "(LOANet.reconstruct(num_iterations=...); beyond the paper). 'auto': chosen per LOA model and task "
                  "on --iterations_split (highest mean PSNR over --iterations_grid, ties within 0.01 dB to the "
                  "smallest; loa_meta.evaluation.iterations), never on the evaluated split. Default: T for every task.")
flags.DEFINE_string("iterations_split", "val", "With --iterations=auto: the selection split (must differ from --split "
                    "unless --iterations_data_dir names other data).")
flags.DEFINE_string("iterations_data_dir", None, "With --iterations=auto: prepared data of the selection split "
                    "(e.g. new subjects); default --data_dir.")
flags.DEFINE_integer("iterations_slices", 20, "With --iterations=auto: the first N slices of --iterations_split.",
                     lower_bound=1)
flags.DEFINE_list("iterations_grid", ["1", "2", "3", "4", "5", "7", "9", "11", "15", "20", "30"],
                  "With --iterations=auto: the counts tried (loa_meta.evaluation.iterations.DEFAULT_GRID).")
flags.DEFINE_string("workdir", None, "Output directory for tables, figures and config.json.")
flags.DEFINE_integer("batch_size", 8, "Slices per model call.", lower_bound=1)
flags.DEFINE_integer("max_slices", 0, "If > 0, evaluate only the first N slices (smoke tests).", lower_bound=0)
flags.DEFINE_boolean("zero_filled", True, "Add the zero-filled reference row A^H y.")
flags.DEFINE_boolean("classical", True, "Add the TV compressed-sensing rows (--tv_iters Chambolle-Pock iterations, "
                     "lambda chosen per task on the 'val' split); --noclassical drops them.")
flags.DEFINE_float("tv_lambda", None, "TV weight; default: tuned per task on the 'val' split over --tv_lambda_grid.")
flags.DEFINE_list("tv_lambda_grid", ["1e-4", "2e-4", "5e-4", "1e-3", "2e-3", "4e-3", "8e-3", "1.6e-2"],
                  "Candidate TV weights (loa_meta.evaluation.classical.TV_LAMBDA_GRID).")
flags.DEFINE_integer("tv_iters", 1000, "TV iterations for tuning and scoring (classical.TV_ITERS).", lower_bound=1)
flags.DEFINE_integer("tv_tune_slices", 20, "Validation slices used to tune the TV weight.", lower_bound=1)
flags.DEFINE_boolean("sigpy", False, "Also add SigPy TV rows (needs the optional SigPy package).")
flags.DEFINE_float("noise_sigma", None, "Optional k-space noise std per component (Eq. 1).", lower_bound=0.0)
flags.DEFINE_integer("noise_seed", 0, "Seed of the k-space noise.")
flags.DEFINE_integer("figure_slice", 0, "Index of the slice shown in the comparison figure.", lower_bound=0)
flags.DEFINE_list("zoom_box", None, "Zoom box row,col,height,width in pixels; default a centred box.")
flags.DEFINE_boolean("convergence", True, "Write the Fig. 6 plot for models with reconstruct(return_diagnostics).")
flags.DEFINE_string("title", None, "Optional caption for the table and figure.")


def _per_slice_csv(results) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["method", "task", "slice", "psnr", "ssim", "nmse"])
    for method, per_task in results.items():
        for task, r in per_task.items():
            for i in range(len(r["psnr"])):
                w.writerow([method, task, i, repr(float(r["psnr"][i])), repr(float(r["ssim"][i])), repr(float(r["nmse"][i]))])
    return buf.getvalue()


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected positional arguments: {argv[1:]}")
    import numpy as np

    common.require_dir("data_dir", FLAGS.data_dir)
    tasks = common.parse_tasks(FLAGS.tasks)
    models = common.parse_model_specs(FLAGS.models)
    if not models and not FLAGS.zero_filled and not FLAGS.classical and not FLAGS.sigpy:
        raise common.usage_error("models", "nothing to evaluate: give --models, --classical or --zero_filled")
    common.check_model_files(models, tasks)
    task_ids = common.parse_int_list(FLAGS.task_ids, "task_ids", length=len(tasks))
    auto = FLAGS.iterations is not None and [v.strip().lower() for v in FLAGS.iterations] == ["auto"]
    iterations = None if auto else common.parse_int_list(FLAGS.iterations, "iterations", length=len(tasks))
    grid = common.parse_int_list(FLAGS.iterations_grid, "iterations_grid")
    if not grid or min(grid) < 1:
        raise common.usage_error("iterations_grid", f"expected positive integers, but received: {FLAGS.iterations_grid!r}")
    sel_dir = FLAGS.iterations_data_dir or FLAGS.data_dir
    if auto and FLAGS.iterations_split == FLAGS.split and os.path.realpath(sel_dir) == os.path.realpath(FLAGS.data_dir):
        raise common.usage_error("iterations_split", f"must differ from --split={FLAGS.split}: the iteration counts "
                                 "are chosen on a selection split, never on the evaluated one")
    if auto and FLAGS.iterations_data_dir:
        common.require_dir("iterations_data_dir", FLAGS.iterations_data_dir)
    zoom_box = common.parse_int_list(FLAGS.zoom_box, "zoom_box", length=4)
    tv_grid = []
    for g in FLAGS.tv_lambda_grid:
        try:
            tv_grid.append(float(g))
        except ValueError:
            raise common.usage_error("tv_lambda_grid", f"expected numbers, but received: {g!r}") from None
    from loa_meta.evaluation import classical

    if FLAGS.sigpy and not classical.sigpy_available():
        raise common.usage_error("sigpy", "SigPy is not installed (pip install sigpy); drop --sigpy")
    workdir = common.prepare_workdir(FLAGS.workdir)

    from loa_meta.data import load_split
    from loa_meta.evaluation.evaluate import evaluate_model, zero_filled_fn
    from loa_meta.evaluation.figures import comparison_figure, convergence_figure
    from loa_meta.evaluation.tables import atomic_write_text, write_tables

    images = common.load_split_images(FLAGS.data_dir, FLAGS.split, FLAGS.max_slices)
    n, h, w = images.shape
    if FLAGS.figure_slice >= n:
        raise common.usage_error("figure_slice", f"must be < the number of slices ({n})")
    masks, sources = common.load_task_masks(tasks, (h, w), FLAGS.mask_dir, FLAGS.mask_seed)
    names = [t.name for t in tasks]
    kw = dict(batch_size=FLAGS.batch_size, noise_sigma=FLAGS.noise_sigma, noise_seed=FLAGS.noise_seed,
              keep=(FLAGS.figure_slice,))

    results, tv_lambdas, loaded, task_ids_of, applied = {}, {}, {}, {}, set()
    chosen: dict = {}
    selection = None
    if auto:
        sel_flag = "iterations_data_dir" if FLAGS.iterations_data_dir else "iterations_split"
        selection = common.load_split_images(sel_dir, FLAGS.iterations_split, FLAGS.iterations_slices, flag=sel_flag)
        if selection.shape[1:] != (h, w):
            raise common.usage_error(sel_flag, f"the selection slices of {sel_dir} [{FLAGS.iterations_split}] are "
                                     f"{selection.shape[1]}x{selection.shape[2]}, the evaluated ones {h}x{w}")

    def count(model, method, t, tid):
        """The iteration count of ``model`` on task ``t``: the flag's, or chosen on the selection split."""
        if not auto:
            return iterations[tasks.index(t)] if iterations else 0
        from loa_meta.evaluation.iterations import select_iterations
        from loa_meta.models import LOANet

        if not isinstance(model, LOANet):
            return 0
        n_t = select_iterations(model, selection, {t.name: masks[t.name]}, {t.name: tid}, grid)[0][t.name]
        chosen.setdefault(method, {})[t.name] = n_t
        logging.info("%s %s: %d iterations chosen on %d %s slices", method, t.name, n_t, len(selection),
                     FLAGS.iterations_split)
        return n_t
    if FLAGS.zero_filled:
        results["Zero-filled"] = evaluate_model(zero_filled_fn, images, masks, **kw)
    for spec in models:
        if spec.per_task:
            per_task = {}
            for t in tasks:
                model = common.load_model(spec.path_for(t), flag="models")
                loaded[(spec.method, t.name)] = model
                fn = _recon_fn(model, count(model, spec.method, t, 0), spec.method, applied)
                per_task.update(evaluate_model(fn, images, {t.name: masks[t.name]}, task_ids=[0], model=model, **kw))
            results[spec.method] = per_task
        else:
            model = common.load_model(spec.path, flag="models")
            loaded[(spec.method, None)] = model
            n_tasks = getattr(model, "num_tasks", None)
            if task_ids is None:
                from loa_meta.sampling import model_task_ids

                try:
                    task_ids_of[spec.method] = model_task_ids(model, tasks)
                except ValueError as e:
                    raise common.usage_error("tasks", f"model {spec.path}: {e} (or give --task_ids)") from None
            else:
                task_ids_of[spec.method] = task_ids
            if n_tasks is not None and int(n_tasks) > 0 and max(task_ids_of[spec.method]) >= int(n_tasks):
                raise common.usage_error(
                    "task_ids", f"model {spec.path} has {int(n_tasks)} tasks but task id "
                                f"{max(task_ids_of[spec.method])} was requested"
                )
            fns = {t.name: _recon_fn(model, count(model, spec.method, t, task_ids_of[spec.method][i]), spec.method,
                                     applied) for i, t in enumerate(tasks)}
            results[spec.method] = evaluate_model(fns, images, masks, task_ids=task_ids_of[spec.method], model=model, **kw)
    if FLAGS.classical or FLAGS.sigpy:
        val = None
        if FLAGS.tv_lambda is None:
            try:
                val = load_split(FLAGS.data_dir, "val")[: FLAGS.tv_tune_slices]
            except ValueError as e:
                raise common.usage_error("tv_lambda", f"not given and the 'val' split cannot be read to tune it: {e}; "
                                         "give --tv_lambda or drop the TV row with --noclassical") from None
        variants = ([("TV", False)] if FLAGS.classical else []) + ([("TV (SigPy)", True)] if FLAGS.sigpy else [])
        for label, use_sigpy in variants:
            per_task = {}
            for t in tasks:
                lam = FLAGS.tv_lambda
                if lam is None:
                    lam, scores = classical.tune_lambda(val, masks[t.name], tv_grid, FLAGS.tv_iters, use_sigpy=use_sigpy)
                    logging.info("%s %s: tuned lambda %g (%s)", label, t.name, lam, scores)
                tv_lambdas[f"{label}/{t.name}"] = lam
                if use_sigpy:
                    fn = (lambda lam_: (lambda y, m, tid: classical.sigpy_tv_reconstruct(y.numpy(), m.numpy()[0], lam_, FLAGS.tv_iters)))(lam)
                else:
                    fn = classical.tv_reconstruct_fn(lam, FLAGS.tv_iters)
                per_task.update(evaluate_model(fn, images, {t.name: masks[t.name]}, **kw))
            results[label] = per_task

    # Tables (Markdown + CSV), per-slice CSV.
    strip = {m: {t: {k: v for k, v in r.items() if k != "examples"} for t, r in pt.items()} for m, pt in results.items()}
    baselines = [m for m in ("Zero-filled", "TV", "TV (SigPy)") if m in results]  # reference rows first
    outputs = write_tables(strip, os.path.join(workdir, "table"), title=FLAGS.title, task_order=names,
                           method_order=baselines + [m for m in results if m not in baselines])
    outputs["per_slice"] = atomic_write_text(os.path.join(workdir, "per_slice.csv"), _per_slice_csv(results))

    # Figs. 1-5: comparison grid for one slice.
    k = FLAGS.figure_slice
    recons = {m: {t: results[m][t]["examples"][k] for t in names} for m in results if m != "Zero-filled"}
    if not recons:
        recons = {"Zero-filled": {t: results["Zero-filled"][t]["examples"][k] for t in names}}
    fig = comparison_figure(os.path.join(workdir, "figure.png"), np.abs(images[k]), recons, masks,
                            zoom_box=zoom_box, title=FLAGS.title)
    outputs["figure"] = fig["path"]

    # Fig. 6: phi and PSNR versus phase for LOANet models.
    if FLAGS.convergence:
        from loa_meta.evaluation.evaluate import convergence_curves

        for spec in models:
            phi, psnr = {}, {}
            for i, t in enumerate(tasks):
                model = loaded[(spec.method, t.name if spec.per_task else None)]
                if not hasattr(model, "reconstruct"):
                    break
                tid = 0 if spec.per_task else task_ids_of[spec.method][i]
                curves = convergence_curves(model, images[: FLAGS.batch_size], masks[t.name], tid)
                if curves is None:
                    break
                phi[t.name], psnr[t.name] = curves["phi"], curves["psnr"]
            if phi and len(phi) == len(tasks):
                path = os.path.join(workdir, f"convergence_{_safe(spec.method)}.png")
                outputs[f"convergence_{spec.method}"] = convergence_figure(path, phi, psnr, title=spec.method)["path"]

    atomic_write_text(os.path.join(workdir, "masks.json"), json.dumps(sources, indent=2) + "\n")
    config = _resolved_flags()
    config.update({"resolved_tasks": [str(t) for t in tasks], "task_names": names, "task_ids": task_ids_of,
                   "num_slices": int(n), "image_shape": [int(h), int(w)], "mask_sources": sources,
                   "tv_lambdas": tv_lambdas, "iterations_applied_to": sorted(applied),
                   "iterations_chosen": chosen,
                   "outputs": {k: os.path.relpath(v, workdir) for k, v in outputs.items()}})
    common.write_config_json(workdir, config)
    logging.info("wrote %s", sorted(outputs.values()))
    print(open(outputs["markdown"], encoding="utf-8").read())
    for method, per_task in chosen.items():
        print(f"{method}: iterations chosen on {len(selection)} {FLAGS.iterations_split} slices: "
              + ", ".join(f"{t} {n_t}" for t, n_t in per_task.items()))


_OWN_FLAGS = ("data_dir", "split", "tasks", "mask_dir", "mask_seed", "models", "task_ids", "iterations",
              "iterations_split", "iterations_data_dir", "iterations_slices", "iterations_grid", "workdir", "batch_size",
              "max_slices", "zero_filled", "classical", "tv_lambda", "tv_lambda_grid", "tv_iters", "tv_tune_slices",
              "sigpy", "noise_sigma", "noise_seed", "figure_slice", "zoom_box", "convergence", "title")


def _recon_fn(model, iterations: int, method: str, applied: set):
    """The model's reconstruction, run for ``iterations`` Algorithm 1 iterations if > 0 and it is a LOANet
    (``reconstruct(num_iterations=...)``); ``applied`` collects the methods it changed."""
    from loa_meta.evaluation.evaluate import model_reconstruct_fn
    from loa_meta.models import LOANet

    if iterations <= 0 or not isinstance(model, LOANet):
        return model_reconstruct_fn(model)
    if iterations != model.num_phases:
        applied.add(method)
    return model_reconstruct_fn(model, num_iterations=iterations)


def _resolved_flags():
    return common.flag_values_dict(_OWN_FLAGS)


def _safe(name: str) -> str:
    import re

    return re.sub(r"[^A-Za-z0-9._-]", "_", name)


if __name__ == "__main__":
    flags.mark_flags_as_required(["data_dir", "tasks", "workdir"])
    cli.run(main)
