"""Per-slice evaluation of reconstruction methods on a test split (paper Section 5, Eqs. 21-23).

Protocol (recorded in docs/fidelity/evaluation.md): for every task (sampling mask) the fully
sampled test images x* are undersampled as y = P F x* (optionally plus noise, Eq. 1), reconstructed,
and PSNR / SSIM / NMSE are computed per slice on magnitude images with :mod:`loa_meta.metrics`.
Tables report mean ± std over slices. The zero-filled reconstruction A^H y is evaluated the same way
as a reference row.
"""

from __future__ import annotations

from typing import Callable, Dict, Mapping, Optional, Sequence, Union

import numpy as np
import tensorflow as tf
from absl import logging

from loa_meta.physics.operators import SingleCoilOperator, add_kspace_noise
from loa_meta.validation import check_positive_int

ReconFn = Callable[[tf.Tensor, tf.Tensor, tf.Tensor], tf.Tensor]


def model_reconstruct_fn(model, num_iterations: Optional[int] = None) -> ReconFn:
    """Wrap a Keras reconstruction model into ``fn(kspace, mask, task_id) -> complex image``.

    Uses the model call convention of docs/ARCHITECTURE.md:
    ``model({"kspace": y, "mask": m, "task_id": t}, training=False)``; with ``num_iterations`` (a LOA
    network) ``model.reconstruct(y, m, t, num_iterations=...)`` instead: that many Algorithm 1
    iterations, the last phase's step sizes after its T phases (beyond the paper).
    """
    if num_iterations is not None:
        n = check_positive_int(num_iterations, "num_iterations")
        return lambda kspace, mask, task_id: model.reconstruct(kspace, mask, task_id, num_iterations=n)

    def fn(kspace, mask, task_id):
        return model({"kspace": kspace, "mask": mask, "task_id": task_id}, training=False)

    return fn


def zero_filled_fn(kspace, mask, task_id):  # noqa: ARG001 - same signature as a model
    """The zero-filled reconstruction A^H y (the network input x_0)."""
    return SingleCoilOperator(mask).zero_filled(kspace)


def sigma_omega(model, task_id: int) -> Optional[float]:
    """sigma(omega_i) of a LOANet-like model for ``task_id``, or None if the model has no task weights."""
    if model is None or not getattr(model, "omega_variables", None):
        return None
    if getattr(model, "use_task_weights", True) is False:
        return None
    if hasattr(model, "kappa"):
        return float(np.asarray(model.kappa(task_id)).reshape(-1)[0])
    omegas = np.concatenate([np.asarray(v).reshape(-1) for v in model.omega_variables])
    return float(1.0 / (1.0 + np.exp(-omegas[task_id])))


def _metric_fns():
    from loa_meta import metrics  # imported lazily: tables/figures do not need it

    return {"psnr": metrics.psnr, "ssim": metrics.ssim, "nmse": metrics.nmse}


def slice_metrics(recon_mag: np.ndarray, target_mag: np.ndarray) -> Dict[str, np.ndarray]:
    """PSNR, SSIM, NMSE per slice of magnitude images ``(N, H, W)`` (reconstruction, ground truth)."""
    recon_mag = np.asarray(recon_mag, np.float64)
    target_mag = np.asarray(target_mag, np.float64)
    if recon_mag.shape != target_mag.shape or recon_mag.ndim != 3:
        raise ValueError(
            "Reconstructions and targets must both have shape (N, H, W), but received "
            f"{recon_mag.shape} and {target_mag.shape}."
        )
    return {name: np.asarray(fn(recon_mag, target_mag), np.float64).reshape(-1) for name, fn in _metric_fns().items()}


def _as_task_masks(masks, shape) -> Dict[str, np.ndarray]:
    if isinstance(masks, Mapping):
        items = list(masks.items())
    else:
        items = [(f"task{i}", m) for i, m in enumerate(masks)]
    if not items:
        raise ValueError("Argument `masks` must hold at least one task mask, but received none.")
    out = {}
    for name, m in items:
        m = np.asarray(m)
        if m.shape != tuple(shape):
            raise ValueError(f"Mask of task {name!r} has shape {m.shape}, but the images have shape {tuple(shape)}.")
        out[str(name)] = m.astype(np.float32)
    return out


def evaluate_model(
    model_fn: Union[ReconFn, Mapping[str, ReconFn]],
    images: np.ndarray,
    masks: Union[Mapping[str, np.ndarray], Sequence[np.ndarray]],
    task_ids: Optional[Union[Mapping[str, int], Sequence[int]]] = None,
    batch_size: int = 8,
    model=None,
    noise_sigma: Optional[float] = None,
    noise_seed: int = 0,
    keep: Sequence[int] = (),
) -> Dict[str, Dict[str, object]]:
    """Reconstruct every test image under every task mask and compute per-slice metrics.

    Args:
      model_fn: ``fn(kspace (B,H,W) complex64, mask (B,H,W) float32, task_id (B,) int32) -> (B,H,W)``,
        or a mapping task name -> such a function (one conventionally trained model per task).
        Use :func:`model_reconstruct_fn` for a Keras model and :func:`zero_filled_fn` for A^H y.
      images: ground-truth images, real or complex, shape ``(N, H, W)``.
      masks: mapping task name -> 0/1 mask ``(H, W)`` (centred), or a sequence (named ``task0``...).
      task_ids: task id fed to the model per task (mapping or sequence aligned with ``masks``);
        default ``0, 1, 2, ...`` in task order.
      batch_size: slices per model call.
      model: optional model whose ``omega_variables`` give sigma(omega_i) per task.
      noise_sigma: if given, complex Gaussian k-space noise of this std per component is added (Eq. 1).
      noise_seed: seed of that noise.
      keep: indices of slices whose magnitude reconstructions are returned (for figures).

    Returns:
      ``{task: {"psnr": (N,), "ssim": (N,), "nmse": (N,), "sigma_omega": float | None,
      "task_id": int, "examples": {index: (H, W) magnitude}}}``.
    """
    batch_size = check_positive_int(batch_size, "batch_size")
    images = np.asarray(images)
    if images.ndim != 3 or images.shape[0] == 0:
        raise ValueError(f"Argument `images` must have shape (N, H, W) with N >= 1, but received: {images.shape}")
    n, h, w = images.shape
    task_masks = _as_task_masks(masks, (h, w))
    names = list(task_masks)
    if task_ids is None:
        ids = {t: i for i, t in enumerate(names)}
    elif isinstance(task_ids, Mapping):
        missing = [t for t in names if t not in task_ids]
        if missing:
            raise ValueError(f"Argument `task_ids` lacks the tasks {missing}.")
        ids = {t: int(task_ids[t]) for t in names}
    else:
        task_ids = list(task_ids)
        if len(task_ids) != len(names):
            raise ValueError(
                f"Argument `task_ids` must have one id per task ({len(names)}), but received {len(task_ids)}."
            )
        ids = {t: int(i) for t, i in zip(names, task_ids)}
    for k in keep:
        if not 0 <= int(k) < n:
            raise ValueError(f"Argument `keep` must index the {n} images, but received: {k}")

    targets = tf.constant(images.astype(np.complex64))
    results: Dict[str, Dict[str, object]] = {}
    for name in names:
        fn = model_fn[name] if isinstance(model_fn, Mapping) else model_fn
        mask = tf.constant(task_masks[name])
        op = SingleCoilOperator(mask)
        recons = []
        for start in range(0, n, batch_size):
            x = targets[start : start + batch_size]
            b = int(x.shape[0])
            y = op.forward(x)
            if noise_sigma is not None:
                y = add_kspace_noise(y, mask, sigma=noise_sigma, seed=noise_seed + start)
            mb = tf.broadcast_to(mask, (b, h, w))
            tid = tf.fill((b,), tf.constant(ids[name], tf.int32))
            out = fn(y, mb, tid)
            recons.append(np.abs(np.asarray(out)).reshape(b, h, w))
        rec = np.concatenate(recons, axis=0)
        entry: Dict[str, object] = dict(slice_metrics(rec, np.abs(images)))
        entry["sigma_omega"] = sigma_omega(model, ids[name])
        entry["task_id"] = ids[name]
        entry["examples"] = {int(k): rec[int(k)] for k in keep}
        logging.info(
            "task %s: PSNR %.4f SSIM %.4f NMSE %.4f over %d slices",
            name, np.mean(entry["psnr"]), np.mean(entry["ssim"]), np.mean(entry["nmse"]), n,
        )
        results[name] = entry
    return results


def evaluate_zero_filled(images, masks, batch_size: int = 8, **kwargs) -> Dict[str, Dict[str, object]]:
    """The zero-filled reference rows, computed exactly like :func:`evaluate_model`."""
    return evaluate_model(zero_filled_fn, images, masks, batch_size=batch_size, **kwargs)


def evaluate_tv(
    images: np.ndarray,
    masks: Mapping[str, np.ndarray],
    val_images: np.ndarray,
    grid: Optional[Sequence[float]] = None,
    num_iters: Optional[int] = None,
    batch_size: int = 8,
    **kwargs,
):
    """The TV baseline rows: lambda chosen per task on ``val_images`` (never on the test images).

    Args:
      images: the images evaluated (e.g. the test split) ``(N, H, W)``.
      masks: mapping task name -> 0/1 mask ``(H, W)``.
      val_images: validation ground truths used only to choose lambda (``classical.tune_lambda``).
      grid: candidate lambdas (default ``classical.TV_LAMBDA_GRID``).
      num_iters: Chambolle-Pock iterations for tuning and evaluation (default ``classical.TV_ITERS``).
      batch_size: slices per call on ``images`` (the tuning sizes its own calls: ``classical.tune_lambda``).
      **kwargs: passed to :func:`evaluate_model` (``noise_sigma``, ``noise_seed``, ``keep``).

    Returns:
      ``(results, lambdas)``: :func:`evaluate_model`-style results per task and ``{task: lambda}``.
    """
    from loa_meta.evaluation import classical

    grid = classical.TV_LAMBDA_GRID if grid is None else tuple(grid)
    num_iters = classical.TV_ITERS if num_iters is None else check_positive_int(num_iters, "num_iters")
    val_images = np.asarray(val_images)
    if val_images.ndim != 3 or val_images.shape[0] == 0:
        raise ValueError(f"Argument `val_images` must have shape (N, H, W) with N >= 1, but received: {val_images.shape}")
    results, lambdas = {}, {}
    for name, mask in masks.items():
        lam, scores = classical.tune_lambda(val_images, mask, grid, num_iters)
        logging.info("TV %s: lambda %g chosen on %d val slices (%s)", name, lam, len(val_images), scores)
        lambdas[name] = float(lam)
        results.update(evaluate_model(classical.tv_reconstruct_fn(lam, num_iters), images, {name: mask},
                                      batch_size=batch_size, **kwargs))
    return results, lambdas


_PHI_KEYS = ("phi_next", "phi")
_ITERATE_KEYS = ("x_phases", "phase_outputs", "intermediates", "xs", "iterates", "outputs")


def _per_phase(value, batch: int, num_phases: Optional[int]) -> Optional[np.ndarray]:
    """Bring a per-phase diagnostic to shape ``(T, B, ...)`` (accepts lists or (T, B)/(B, T) arrays)."""
    if isinstance(value, (list, tuple)):
        if not value:
            return None
        value = np.stack([np.asarray(v) for v in value])
    v = np.asarray(value)
    if v.ndim == 0:
        return None
    if v.ndim >= 2 and v.shape[1] == batch and (num_phases is None or v.shape[0] == num_phases):
        return v
    if v.ndim >= 2 and v.shape[0] == batch:
        return np.swapaxes(v, 0, 1)
    return v if v.shape[0] != batch or batch == 1 else None


def convergence_curves(model, images: np.ndarray, mask: np.ndarray, task_id: int) -> Optional[Dict[str, np.ndarray]]:
    """Fig. 6 curves of a LOANet: mean objective phi and mean PSNR after each phase.

    phi per phase is read from ``model.reconstruct(y, m, t, return_diagnostics=True)``
    (``phi_next`` = phi_eps_t(x_{t+1}), else ``phi``). The PSNR after phase t uses the iterates
    x_1..x_T of the same run when the model offers them (``reconstruct(..., return_iterates=True)``
    of LOANet, or an ``x_phases``-like diagnostics key): one pass. Otherwise ``x_t`` is recomputed
    with ``reconstruct(..., num_iterations=t)`` for t = 1..T.

    Args:
      model: a model whose ``reconstruct`` accepts ``return_diagnostics``.
      images: ground truths ``(B, H, W)``.
      mask: 0/1 mask ``(H, W)``.
      task_id: the model's task id for this mask.

    Returns:
      ``{"phi": (T,), "psnr": (T,)}``, or None if the model gives no per-phase objective.
    """
    import inspect

    from loa_meta.metrics import psnr

    if not hasattr(model, "reconstruct"):
        return None
    params = inspect.signature(model.reconstruct).parameters
    if "return_diagnostics" not in params:
        return None
    images = np.asarray(images)
    b, h, w = images.shape
    m = tf.broadcast_to(tf.constant(np.asarray(mask, np.float32)), (b, h, w))
    y = SingleCoilOperator(m).forward(tf.constant(images.astype(np.complex64)))
    tid = tf.fill((b,), tf.constant(int(task_id), tf.int32))
    if "return_iterates" in params:
        out, diag = model.reconstruct(y, m, tid, return_diagnostics=True, return_iterates=True)
    else:
        out, diag = model.reconstruct(y, m, tid, return_diagnostics=True)
    num_phases = getattr(model, "num_phases", None)
    num_phases = int(num_phases) if num_phases is not None else None
    if not isinstance(diag, Mapping):
        return None
    phi = None
    for key in _PHI_KEYS:
        if key in diag:
            phi = _per_phase(diag[key], b, num_phases)
            if phi is not None:
                break
    if phi is None:
        return None
    phi = phi.reshape(phi.shape[0], -1).astype(np.float64).mean(axis=1)
    gt = np.abs(images)
    if isinstance(diag.get("iterates"), np.ndarray) and diag["iterates"].shape == (phi.shape[0] + 1, b, h, w):
        xs = diag["iterates"][1:]  # x_1 .. x_T (iterates[0] is the zero filling x_0)
        curve = np.array([np.mean(psnr(np.abs(xs[t]), gt)) for t in range(xs.shape[0])])
        return {"phi": phi, "psnr": curve}
    for key in _ITERATE_KEYS:
        xs = _per_phase(diag[key], b, num_phases) if key in diag else None
        if xs is not None and xs.ndim == 4 and xs.shape[1:] == (b, h, w):
            curve = np.array([np.mean(psnr(np.abs(xs[t]), gt)) for t in range(xs.shape[0])])
            return {"phi": phi, "psnr": curve[-phi.shape[0]:]}
    curve = np.full(phi.shape[0], np.nan)
    curve[-1] = float(np.mean(psnr(np.abs(np.asarray(out)), gt)))
    if "num_iterations" in params:
        for t in range(1, phi.shape[0]):
            x_t = model.reconstruct(y, m, tid, num_iterations=t)
            curve[t - 1] = float(np.mean(psnr(np.abs(np.asarray(x_t)), gt)))
    return {"phi": phi, "psnr": curve}
