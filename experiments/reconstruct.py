r"""Reconstruct images from k-space files or simulate-and-reconstruct a NIfTI volume.

Examples:

  # measured (or simulated) k-space, .npz/.mat (see loa_meta.data.load_kspace) -> .npy / .png
  python -m experiments.reconstruct --input=scan.npz --model=runs/meta/model.keras --task_id=1 \
      --output=recon.png

  # fully sampled NIfTI volume: undersample with a task mask, reconstruct, write a NIfTI
  python -m experiments.reconstruct --input=BraTS_t1.nii.gz --mask=radial:0.2 --crop=160,180 \
      --num_slices=10 --model=runs/meta/model.keras --task_id=1 --output=recon.nii.gz

--mask is a task spec (``radial:0.2``) or a mask file (.npy/.npz/.mat/.png); for k-space files it
overrides a mask stored in the file. Without --model the zero-filled image A^H y is written
(or the TV baseline with --tv_lambda). Outputs are written atomically; a ``<output>.json`` records
the resolved flags.
"""

from __future__ import annotations

import os

from absl import app, flags, logging

from experiments import cli, common

FLAGS = flags.FLAGS

flags.DEFINE_string("input", None, "k-space file (.npz/.mat) or fully sampled NIfTI volume (.nii/.nii.gz).")
flags.DEFINE_string("mask", None, "Task spec (e.g. radial:0.2) or mask file; required for NIfTI input.")
flags.DEFINE_integer("mask_seed", 0, "Seed of a mask built from a task spec (use the training seed).")
flags.DEFINE_string("model", None, "Trained .keras model, or pretrained:NAME (a model shipped with the package, "
                    "loa_meta.pretrained); if omitted, the zero-filled (or TV) image is written.")
flags.DEFINE_integer("task_id", None, "Task id (index of omega_i) passed to the model; default: the id of "
                     "--mask's task spec among the model's tasks (0 for a single-task model).", lower_bound=0)
flags.DEFINE_float("tv_lambda", None, "Without --model: TV baseline with this weight instead of zero filling.")
flags.DEFINE_integer("tv_iters", 1000, "TV iterations (classical.TV_ITERS, as in the quality tables; "
                     "docs/benchmarks_classical.md).", lower_bound=1)
flags.DEFINE_string("output", None, "Output: .npy (complex images), .png (magnitude) or .nii/.nii.gz (NIfTI input).")
flags.DEFINE_integer("batch_size", 8, "Slices per model call.", lower_bound=1)
flags.DEFINE_list("crop", None, "NIfTI input: in-plane centred crop H,W (e.g. 160,180); default the full plane.")
flags.DEFINE_integer("num_slices", None, "NIfTI input: number of adjacent central slices; default all.", lower_bound=1)
flags.DEFINE_float("noise_sigma", 0.0, "NIfTI input: k-space noise std per component (Eq. 1).", lower_bound=0.0)
flags.DEFINE_integer("noise_seed", 0, "NIfTI input: noise seed.")
flags.DEFINE_string("num_iterations", None, "LOA model: run this many Algorithm 1 iterations instead of its trained "
                    "phases T (more than T reuses the last phase's step sizes; beyond the paper, see "
                    "docs/benchmarks_quality.md 5.31); 'recommended': the count its model card states for the task "
                    "(--model=pretrained:NAME; loa_meta.pretrained.recommended_iterations).")

_OWN_FLAGS = ("input", "mask", "mask_seed", "model", "task_id", "tv_lambda", "tv_iters", "output", "batch_size",
              "crop", "num_slices", "noise_sigma", "noise_seed", "num_iterations")
_NIFTI = (".nii", ".nii.gz")
_KSPACE = (".npz", ".mat")
_IMAGE_OUT = (".npy", ".png")


def _resolve_mask(shape, nifti: bool = False):
    """The centred float32 mask from --mask (task spec or file), or None if not given."""
    import numpy as np

    from loa_meta.sampling import load_mask, parse_task_spec

    value = FLAGS.mask
    if not value:
        return None
    if os.path.isfile(value):
        try:
            return load_mask(value, shape=tuple(shape)).astype(np.float32)
        except ValueError as e:
            hint = ""
            if "does not match the expected shape" in str(e):
                hint = (f"; the images are {tuple(shape)}" + (" (pass --crop=H,W to crop the volume to the mask's "
                                                               "shape)" if nifti and not FLAGS.crop else ""))
            raise common.usage_error("mask", f"{e}{hint}") from None
    try:
        return parse_task_spec(value).build_mask(tuple(shape), seed=FLAGS.mask_seed).astype(np.float32)
    except ValueError as e:
        hint = "" if ":" in value else " (and no such mask file exists)"
        raise common.usage_error("mask", f"{e}{hint}") from None


def _check_task_id(model, path):
    """--task_id must index one of the model's task weights omega_i."""
    n = getattr(model, "num_tasks", None)
    if n is None or not getattr(model, "use_task_weights", True):
        return
    n = int(n)
    if FLAGS.task_id >= n:
        raise common.usage_error("task_id", f"{FLAGS.task_id} is out of range: the model {path} has {n} task(s), "
                                            f"ids 0..{n - 1}")


def _task_id(model) -> int:
    """--task_id, else the id of --mask's task spec among the model's tasks (a file mask: 0 for a
    single-task model); a spec the model was not trained on is an error listing its tasks."""
    from loa_meta.sampling import model_task_ids

    if model is not None and FLAGS.task_id is not None:
        _check_task_id(model, FLAGS.model)
    if FLAGS.task_id is not None or model is None:
        return FLAGS.task_id or 0
    spec = FLAGS.mask if FLAGS.mask and not os.path.isfile(FLAGS.mask) else None
    try:
        return model_task_ids(model, [spec])[0]
    except ValueError as e:
        raise common.usage_error("mask" if spec else "task_id", f"model {FLAGS.model}: {e}") from None


def _num_iterations(task_id: int) -> int:
    """--num_iterations as a count: a positive integer, or the model card's count for ``task_id``."""
    text = FLAGS.num_iterations.strip()
    if text.lower() == "recommended":
        from loa_meta import pretrained

        if not FLAGS.model.startswith(pretrained.PREFIX):
            raise common.usage_error("num_iterations", "'recommended' needs --model=pretrained:NAME (a model card)")
        name = FLAGS.model[len(pretrained.PREFIX):]
        counts = pretrained.recommended_iterations(name)
        if counts is None:
            raise common.usage_error("num_iterations", f"the model card of {name} states no inference iterations; "
                                     "give a number")
        n = counts[task_id]
        logging.info("--num_iterations=recommended: %d iterations for task id %d (model card of %s)", n, task_id, name)
    else:
        try:
            n = int(text)
        except ValueError:
            n = 0
        if n < 1:
            raise common.usage_error("num_iterations", f"expected a positive integer or 'recommended', but received: "
                                     f"{FLAGS.num_iterations!r}")
    return n


def _recon_fn():
    """``(fn(kspace, mask, task_id) -> (B, H, W), method, task id, resolved)`` for the chosen method;
    ``resolved`` holds values worked out from the flags (``num_iterations``) for the output's ``.json``."""
    from loa_meta.evaluation import classical
    from loa_meta.evaluation.evaluate import model_reconstruct_fn, zero_filled_fn

    if FLAGS.model:
        model = common.load_model(FLAGS.model, flag="model")
        if FLAGS.num_iterations is None:
            return model_reconstruct_fn(model), "model", _task_id(model), {}
        from loa_meta.models import LOANet

        if not isinstance(model, LOANet):
            raise common.usage_error("num_iterations", f"applies to LOA networks only; {FLAGS.model} is a "
                                     f"{type(model).__name__}")
        task_id = _task_id(model)
        n = _num_iterations(task_id)
        return model_reconstruct_fn(model, num_iterations=n), "model", task_id, {"num_iterations": n}
    if FLAGS.num_iterations is not None:
        raise common.usage_error("num_iterations", "needs --model (a LOA network)")
    if FLAGS.tv_lambda is not None:
        if FLAGS.tv_lambda < 0:
            raise common.usage_error("tv_lambda", f"must be >= 0, but received: {FLAGS.tv_lambda}")
        return classical.tv_reconstruct_fn(FLAGS.tv_lambda, FLAGS.tv_iters), "tv", 0, {}
    return zero_filled_fn, "zero_filled", 0, {}


def _write_images(images, path):
    import numpy as np

    from loa_meta.evaluation.tables import atomic_path

    if path.endswith(".npy"):
        with atomic_path(path, suffix=".npy") as tmp:
            with open(tmp, "wb") as f:
                np.save(f, np.asarray(images, np.complex64))
    else:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        mags = np.abs(np.asarray(images))
        tile = np.concatenate(list(mags), axis=1) if mags.ndim == 3 else mags
        peak = float(tile.max()) or 1.0
        with atomic_path(path, suffix=".png") as tmp:
            plt.imsave(tmp, tile, cmap="gray", vmin=0.0, vmax=peak, format="png")


def _load_kspace(path):
    """(kspace complex64 (S, H, W), mask (H, W) or None) from a k-space file."""
    import numpy as np

    from loa_meta.data import load_kspace

    try:
        data = load_kspace(path)
    except (ValueError, OSError) as e:
        raise common.usage_error("input", str(e)) from None
    if isinstance(data, tuple):
        kspace, mask = data[0], (data[1] if len(data) > 1 else None)
    elif isinstance(data, dict):
        kspace, mask = data["kspace"], data.get("mask")
    else:
        kspace, mask = data.kspace, getattr(data, "mask", None)
    kspace = np.asarray(kspace, np.complex64)
    if kspace.ndim == 2:
        kspace = kspace[None]
    if kspace.ndim != 3:
        raise common.usage_error("input", f"k-space in {path} must be (H, W) or (S, H, W), but has shape {kspace.shape}")
    if mask is not None:
        mask = np.asarray(mask, np.float32)
    return kspace, mask


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected positional arguments: {argv[1:]}")
    import json

    import numpy as np

    from loa_meta.evaluation.tables import atomic_write_text

    path = common.require_file("input", FLAGS.input)
    common.require("output", FLAGS.output)
    out = FLAGS.output
    lower = path.lower()
    is_nifti = lower.endswith(_NIFTI)
    if not is_nifti and not lower.endswith(_KSPACE):
        raise common.usage_error("input", f"expected a .npz/.mat k-space file or a .nii/.nii.gz volume, but received: {path}")
    if is_nifti and not out.lower().endswith(_NIFTI + _IMAGE_OUT):
        raise common.usage_error("output", f"for NIfTI input expected .nii/.nii.gz/.npy/.png, but received: {out}")
    if not is_nifti and not out.lower().endswith(_IMAGE_OUT):
        raise common.usage_error("output", f"for k-space input expected .npy or .png, but received: {out}")
    if FLAGS.model:
        common.check_model_file(FLAGS.model, flag="model")
    crop = common.parse_int_list(FLAGS.crop, "crop", length=2, what="H,W")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    info = {}

    if is_nifti:
        from loa_meta.data import load_volume_slices, reconstruct_volume

        try:
            vs = load_volume_slices(path, crop=crop, num_slices=FLAGS.num_slices)
        except ValueError as e:
            raise common.usage_error("input", str(e)) from None
        mask = _resolve_mask(vs.images.shape[1:], nifti=True)
        if mask is None:
            raise common.usage_error("mask", "is required for NIfTI input (a task spec like radial:0.2 or a mask file)")
        fn, method, task_id, resolved = _recon_fn()

        def batch_fn(batch):
            return fn(batch["kspace"], batch["mask"], batch["task_id"])

        if out.lower().endswith(_NIFTI):
            res = reconstruct_volume(path, mask, batch_fn, out, batch_size=FLAGS.batch_size, crop=crop,
                                     num_slices=FLAGS.num_slices, task_id=task_id,
                                     noise_sigma=FLAGS.noise_sigma, seed=FLAGS.noise_seed)
            images = res.images
        else:
            from loa_meta.data import simulate_kspace

            y = simulate_kspace(vs.images, mask, noise_sigma=FLAGS.noise_sigma, seed=FLAGS.noise_seed)
            images = _run(fn, y, mask, task_id, FLAGS.batch_size)
            _write_images(images, out)
        info.update(num_slices=int(len(vs.slice_indices)), slice_indices=[int(i) for i in vs.slice_indices])
    else:
        kspace, file_mask = _load_kspace(path)
        mask = _resolve_mask(kspace.shape[1:])
        if mask is None:
            mask = file_mask if file_mask is not None else (np.abs(kspace).sum(axis=0) > 0).astype(np.float32)
            info["mask_source"] = "file" if file_mask is not None else "non-zero k-space samples"
        if mask.shape[-2:] != kspace.shape[1:] or (mask.ndim == 3 and mask.shape[0] != kspace.shape[0]):
            raise common.usage_error("mask", f"mask shape {mask.shape} does not match the k-space shape {kspace.shape[1:]}")
        fn, method, task_id, resolved = _recon_fn()
        images = _run(fn, kspace, mask, task_id, FLAGS.batch_size)
        _write_images(images, out)

    config = common.flag_values_dict(_OWN_FLAGS)
    config.update(info, method=method, resolved_task_id=task_id, output_shape=list(np.shape(images)), **resolved)
    atomic_write_text(out + ".json", json.dumps(config, indent=2, sort_keys=True, default=str) + "\n")
    logging.info("wrote %s (%s, %d slices)", out, method, np.shape(images)[0])


def _run(fn, kspace, mask, task_id, batch_size):
    import numpy as np
    import tensorflow as tf

    kspace = tf.convert_to_tensor(kspace, tf.complex64)
    n, h, w = kspace.shape
    mask = np.asarray(mask, np.float32)
    masks = np.broadcast_to(mask, (n, h, w))  # one mask for all slices, or one per slice
    outs = []
    for s in range(0, n, batch_size):
        y = kspace[s : s + batch_size]
        b = int(y.shape[0])
        mb = tf.constant(np.ascontiguousarray(masks[s : s + b]))
        y = y * tf.cast(mb, tf.complex64)
        outs.append(np.asarray(fn(y, mb, tf.fill((b,), tf.constant(task_id, tf.int32)))))
    return np.concatenate(outs).reshape(n, h, w)


if __name__ == "__main__":
    flags.mark_flags_as_required(["input", "output"])
    cli.run(main)
