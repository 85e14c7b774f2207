"""Classical compressed-sensing baseline: total-variation regularised reconstruction.

Solves

    min_x  1/2 ||A x - y||^2 + lam * TV(x),   TV(x) = sum_p sqrt(|D_h x|_p^2 + |D_v x|_p^2)

(isotropic TV of the complex image, forward differences with Neumann boundary) with the
first-order primal-dual method of Chambolle and Pock (2011), ``K = D``, ``G(x) = f(x)``. For the
single-coil operator A = P F with unitary F the proximal map of G is exact and cheap:

    prox_{tau G}(v) = F^H [ (F v + tau * y) / (1 + tau * P) ].

Step sizes tau = 0.01 / lam (clipped to [0.05, 20]) and sigma = 0.99 / (8 tau) satisfy
tau * sigma * ||D||^2 < 1 (||D||^2 <= 8). The iteration starts at
the zero-filled image A^H y. It is written in TensorFlow (batched over slices, compiled by XLA unless
``jit_compile=False``).

An optional SigPy path (:func:`sigpy_tv_reconstruct`) uses ``sigpy.mri.app.TotalVariationRecon``
when SigPy is installed; SigPy's ``fft`` is also centred and orthonormal, so the data term matches.
"""

from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf
from absl import logging

from loa_meta.physics.fft import fft2c, ifft2c
from loa_meta.physics.operators import SingleCoilOperator
from loa_meta.validation import check_in_range, check_positive_int


# The TV baseline of every quality table (issue 11): lambda chosen per task on the val split over
# this grid (the best val PSNR), with TV_ITERS iterations for tuning and for the test split.
TV_LAMBDA_GRID = (1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 4e-3, 8e-3, 1.6e-2)
# 1000, not the 200 of sessions 4-13: at radial 10 % the tuned (small) lambda converges slowly, and 200
# iterations left TV 0.3 dB short on the 160x180 demo test split (docs/benchmarks_classical.md,
# "Is the TV baseline converged?"; benchmarks/tv_convergence.py).
TV_ITERS = 1000
# Pixels per Chambolle-Pock call when tune_lambda runs the lambda grid as one batch: 4 MB per complex
# array of the loop, so the loop's arrays stay near the cache. Measured (benchmarks/bench_tv_tuning.py,
# docs/benchmarks_classical.md): at 64x64 small budgets lose to per-call overhead, at 160x180 large ones
# (2^22) are slower than 16 slices per call.
TV_GRID_PIXELS = 1 << 19


def _primal_step(lam: float) -> float:
    """Primal step tau of Chambolle-Pock (sigma = 0.99 / (8 tau)).

    Measured on 160x180 phantoms with 30% masks (docs/benchmarks_classical.md): the objective after
    100 iterations is closest to the converged value when tau is about 0.01 / lam, i.e. when the
    primal and dual variables (|p| <= lam) move on comparable scales.
    """
    if lam <= 0:
        return 20.0
    return float(min(20.0, max(0.05, 0.01 / lam)))


def _grad(x: tf.Tensor) -> Tuple[tf.Tensor, tf.Tensor]:
    """Forward differences (rows, cols), zero in the last row/column (Neumann boundary)."""
    zr = tf.zeros_like(x[..., :1, :])
    zc = tf.zeros_like(x[..., :, :1])
    dv = tf.concat([x[..., 1:, :] - x[..., :-1, :], zr], axis=-2)
    dh = tf.concat([x[..., :, 1:] - x[..., :, :-1], zc], axis=-1)
    return dv, dh


def _grad_adjoint(pv: tf.Tensor, ph: tf.Tensor) -> tf.Tensor:
    """D^T p = -div p (exact adjoint of :func:`_grad`)."""
    zr = tf.zeros_like(pv[..., :1, :])
    zc = tf.zeros_like(ph[..., :, :1])
    pv_ = tf.concat([zr, pv[..., :-1, :]], axis=-2) - tf.concat([pv[..., :-1, :], zr], axis=-2)
    ph_ = tf.concat([zc, ph[..., :, :-1]], axis=-1) - tf.concat([ph[..., :, :-1], zc], axis=-1)
    return pv_ + ph_


def _abs2(z: tf.Tensor) -> tf.Tensor:
    return tf.math.real(z) ** 2 + tf.math.imag(z) ** 2


def total_variation(x: tf.Tensor) -> tf.Tensor:
    """Isotropic TV of complex images ``(B, H, W)``; returns shape ``(B,)``."""
    dv, dh = _grad(tf.convert_to_tensor(x))
    return tf.reduce_sum(tf.sqrt(_abs2(dv) + _abs2(dh)), axis=[-2, -1])


def tv_objective(x: tf.Tensor, kspace: tf.Tensor, mask: tf.Tensor, lam) -> tf.Tensor:
    """1/2 ||A x - y||^2 + lam TV(x) per slice, shape ``(B,)``."""
    op = SingleCoilOperator(mask)
    return op.data_term(x, kspace) + tf.cast(lam, tf.float32) * total_variation(x)


def _chambolle_pock_loop(y, mask, lam, num_iters, tau, track: bool):
    """Chambolle-Pock on a batch ``y (B, H, W)``; ``lam`` and ``tau`` have shape ``(B,)`` (one weight per
    slice, so a lambda grid runs as one batch). ``track`` (a Python bool) records the objective after every
    iteration, reusing F x_new for the data term (two FFTs per iteration, not three); returns ``(x, history)``
    with ``history (num_iters, B)``, or ``(x, None)`` without ``track`` (then the loop carries no history,
    which lets XLA compile it)."""
    op = SingleCoilOperator(mask)
    m = tf.cast(tf.cast(mask, tf.float32), tf.complex64)
    m = tf.broadcast_to(m, tf.shape(y))
    y = m * y
    tau = tf.reshape(tf.cast(tau, tf.float32), [-1, 1, 1])
    sig = tf.cast(0.99 / (8.0 * tau), tf.complex64)
    tau_c = tf.cast(tau, tf.complex64)
    denom = 1.0 + tau_c * m
    lam_b = tf.cast(lam, tf.float32)
    lam_r = tf.reshape(lam_b, [-1, 1, 1])
    x = op.zero_filled(y)

    def step(x, x_bar, pv, ph):
        dv, dh = _grad(x_bar)
        pv = pv + sig * dv
        ph = ph + sig * dh
        norm = tf.sqrt(_abs2(pv) + _abs2(ph))
        scale = tf.cast(1.0 / tf.maximum(1.0, norm / tf.maximum(lam_r, 1e-30)), tf.complex64)
        pv, ph = pv * scale, ph * scale
        v = x - tau_c * _grad_adjoint(pv, ph)
        k_new = (fft2c(v) + tau_c * y) / denom  # F x_new: the data term needs no third FFT
        x_new = ifft2c(k_new)
        return k_new, x_new, 2.0 * x_new - x, pv, ph

    zeros = tf.zeros_like(x)
    if not track:
        def body(k, x, x_bar, pv, ph):
            _, x_new, x_bar, pv, ph = step(x, x_bar, pv, ph)
            return k + 1, x_new, x_bar, pv, ph

        _, x, _, _, _ = tf.while_loop(lambda k, *_: k < num_iters, body, (tf.constant(0), x, x, zeros, zeros))
        return x, None

    def tracked_body(k, x, x_bar, pv, ph, history):
        k_new, x_new, x_bar, pv, ph = step(x, x_bar, pv, ph)
        obj = 0.5 * tf.reduce_sum(_abs2(m * k_new - y), axis=[-2, -1]) + lam_b * total_variation(x_new)
        return k + 1, x_new, x_bar, pv, ph, history.write(k, obj)

    history = tf.TensorArray(tf.float32, size=num_iters)
    _, x, _, _, _, history = tf.while_loop(
        lambda k, *_: k < num_iters, tracked_body, (tf.constant(0), x, x, zeros, zeros, history))
    return x, history.stack()


_CP_GRAPH = tf.function(_chambolle_pock_loop, reduce_retracing=True)
# XLA fuses the loop's elementwise complex arithmetic (about 30 ops per iteration around two FFTs): 1.8x
# faster at 64x64 and 1.6x at 160x180 than the graph kernel, same images to 3e-6 (docs/benchmarks_classical.md,
# benchmarks/bench_tv_tuning.py). One compilation per batch shape, under a second each.
_CP_XLA = tf.function(lambda y, mask, lam, num_iters, tau: _chambolle_pock_loop(y, mask, lam, num_iters, tau, False)[0],
                      jit_compile=True, reduce_retracing=True)


def _chambolle_pock(y, mask, lam, num_iters, tau, track: bool, jit_compile: bool = True):
    """:func:`_chambolle_pock_loop` compiled: with ``track`` as a graph (the history's TensorArray has a
    run-time length), without it by XLA when ``jit_compile`` (the default), else as a graph."""
    if track:
        return _CP_GRAPH(y, mask, lam, num_iters, tau, True)
    if jit_compile:
        return _CP_XLA(y, mask, lam, num_iters, tau), None
    return _CP_GRAPH(y, mask, lam, num_iters, tau, False)


def tv_reconstruct(
    kspace,
    mask,
    lam: float,
    num_iters: int = TV_ITERS,
    return_history: bool = False,
    jit_compile: bool = True,
):
    """TV-regularised reconstruction with ``num_iters`` Chambolle-Pock iterations.

    Args:
      kspace: complex k-space ``(B, H, W)`` or ``(H, W)`` on the centred grid (zero where unsampled).
      mask: 0/1 mask ``(H, W)`` or ``(B, H, W)``.
      lam: TV weight lam >= 0 (for images scaled to [0, 1], values around 1e-3 - 1e-2).
      num_iters: number of iterations (default ``TV_ITERS``, the quality tables' converged count).
      return_history: also return the objective after every iteration, shape ``(num_iters, B)``
        (that loop runs as a TensorFlow graph).
      jit_compile: run the loop compiled by XLA (default; 1.6-1.8x faster on CPU), else as a graph.

    Returns:
      complex64 images with the shape of ``kspace`` (and the history if requested).
    """
    lam = check_in_range(lam, "lam", low=0.0)
    num_iters = check_positive_int(num_iters, "num_iters")
    y = tf.convert_to_tensor(kspace)
    if not y.dtype.is_complex:
        raise TypeError(f"Argument `kspace` must be complex, but received dtype {y.dtype.name}.")
    y = tf.cast(y, tf.complex64)
    single = y.shape.rank == 2
    if single:
        y = y[tf.newaxis]
    if y.shape.rank != 3:
        raise ValueError(f"Argument `kspace` must have shape (H, W) or (B, H, W), but received: {y.shape}")
    mask = tf.cast(tf.convert_to_tensor(mask), tf.float32)
    if tuple(mask.shape[-2:]) != tuple(y.shape[-2:]):
        raise ValueError(f"Argument `mask` has shape {tuple(mask.shape)}, but k-space has {tuple(y.shape)}.")
    batch = tf.shape(y)[:1]
    x, hist = _chambolle_pock(y, mask, tf.fill(batch, tf.constant(lam, tf.float32)),
        tf.constant(num_iters, tf.int32), tf.fill(batch, tf.constant(_primal_step(lam), tf.float32)),
        bool(return_history), bool(jit_compile))
    x = x[0] if single else x
    if return_history:
        return x, hist.numpy()
    return x


def tv_reconstruct_fn(lam: float, num_iters: int = TV_ITERS):
    """A ``fn(kspace, mask, task_id)`` for :func:`loa_meta.evaluation.evaluate.evaluate_model`."""

    def fn(kspace, mask, task_id):  # noqa: ARG001
        return tv_reconstruct(kspace, mask, lam, num_iters)

    return fn


def _tv_grid_chunks(y: np.ndarray, mask: np.ndarray, grid: Sequence[float], num_iters: int,
                    batch_size: Optional[int] = None, jit_compile: bool = True):
    """TV reconstructions of the slices of ``y (N, H, W)`` for every lam of ``grid``, ``batch_size``
    slices x all of the grid per call (one Chambolle-Pock loop for the whole grid, each copy with its own
    lam and step), so a small image runs as a large batch; ``None``: as many slices as keep a call within
    ``TV_GRID_PIXELS`` pixels. Yields ``(start, {lam: images (n, H, W)})`` per chunk, so a long val split
    is never held for the whole grid at once. Same iterates as :func:`tv_reconstruct`."""
    if batch_size is None:
        most = max(1, TV_GRID_PIXELS // (int(np.prod(y.shape[-2:])) * len(grid)))
        calls = -(-len(y) // most)
        batch_size = max(1, -(-len(y) // calls))  # equal chunks: 20 slices -> 10 + 10, not 16 + 4
    lam_vec = np.asarray(grid, np.float32)
    tau_vec = np.asarray([_primal_step(g) for g in grid], np.float32)
    for s in range(0, len(y), batch_size):
        chunk = y[s : s + batch_size]
        n = len(chunk)
        tiled = np.concatenate([chunk] * len(grid))  # grid-major: rows [j*n:(j+1)*n] use grid[j]
        x, _ = _chambolle_pock(tf.constant(tiled, tf.complex64), tf.constant(mask),
                               tf.constant(np.repeat(lam_vec, n)), tf.constant(num_iters, tf.int32),
                               tf.constant(np.repeat(tau_vec, n)), False, jit_compile)
        x = x.numpy()
        yield s, {lam: x[j * n : (j + 1) * n] for j, lam in enumerate(grid)}


def tune_lambda(
    val_images: np.ndarray,
    mask: np.ndarray,
    grid: Sequence[float] = TV_LAMBDA_GRID,
    num_iters: int = TV_ITERS,
    batch_size: Optional[int] = None,
    use_sigpy: bool = False,
    jit_compile: bool = True,
) -> Tuple[float, Dict[float, float]]:
    """Pick the TV weight with the best mean PSNR on validation images.

    Args:
      val_images: validation ground truths ``(N, H, W)`` (real or complex).
      mask: the task's 0/1 mask ``(H, W)``.
      grid: candidate values of lam.
      num_iters: iterations per reconstruction.
      batch_size: slices per call; each call runs them for every lam of ``grid`` at once
        (``batch_size * len(grid)`` images). ``None`` (default): as many as keep a call within
        ``TV_GRID_PIXELS`` pixels, in equal chunks (with the 8-value grid, 20 val slices of 64x64:
        two calls of 10 slices x 8 lambdas; of 160x180: ten calls of 2 x 8).
      use_sigpy: tune the SigPy solver instead of the TensorFlow one.
      jit_compile: run the TensorFlow solver compiled by XLA (default), else as a graph.

    Returns:
      ``(best_lam, {lam: mean PSNR})``.
    """
    from loa_meta.metrics import psnr

    grid = [check_in_range(g, "grid", low=0.0) for g in grid]
    if not grid:
        raise ValueError("Argument `grid` must hold at least one value of lam.")
    num_iters = check_positive_int(num_iters, "num_iters")
    if batch_size is not None:
        batch_size = check_positive_int(batch_size, "batch_size")
    val = np.asarray(val_images)
    if val.ndim != 3 or val.shape[0] == 0:
        raise ValueError(f"Argument `val_images` must have shape (N, H, W) with N >= 1, but received: {val.shape}")
    op = SingleCoilOperator(tf.constant(np.asarray(mask, np.float32)))
    y = op.forward(tf.constant(val.astype(np.complex64))).numpy()
    gt = np.abs(val).astype(np.float64)
    if use_sigpy:
        chunks = [(0, {lam: sigpy_tv_reconstruct(y, mask, lam, num_iters) for lam in grid})]
    else:
        chunks = _tv_grid_chunks(y, np.asarray(mask, np.float32), grid, num_iters, batch_size, jit_compile)
    per_slice: Dict[float, list] = {lam: [] for lam in grid}
    for start, recs in chunks:
        for lam in grid:
            rec = np.abs(recs[lam]).astype(np.float64)
            per_slice[lam] += [psnr(rec[i], gt[start + i]) for i in range(len(rec))]
    scores: Dict[float, float] = {}
    for lam in grid:
        scores[lam] = float(np.mean(per_slice[lam]))
        logging.info("TV lam=%g: validation PSNR %.4f", lam, scores[lam])
    best = max(scores, key=scores.get)
    return best, scores


def sigpy_available() -> bool:
    """True if SigPy can be imported (optional dependency)."""
    try:
        import sigpy.mri  # noqa: F401
    except Exception:  # noqa: BLE001 - any import problem means "not available"
        return False
    return True


def sigpy_tv_reconstruct(kspace, mask, lam: float, num_iters: int = TV_ITERS) -> np.ndarray:
    """TV reconstruction with SigPy's ``TotalVariationRecon`` (single coil, unit sensitivity).

    Args:
      kspace: complex k-space ``(B, H, W)`` or ``(H, W)``, centred.
      mask: 0/1 mask ``(H, W)``.
      lam: TV weight (SigPy's ``lamda``; same objective scaling as :func:`tv_reconstruct`).
      num_iters: iterations.

    Returns:
      complex64 NumPy images with the shape of ``kspace``.

    Raises:
      ImportError: if SigPy is not installed (``pip install sigpy``).
    """
    try:
        import sigpy.mri as mr
    except Exception as e:  # noqa: BLE001
        raise ImportError("The SigPy TV path needs SigPy: `pip install sigpy` (optional dependency).") from e
    y = np.asarray(kspace, np.complex64)
    single = y.ndim == 2
    y = y[None] if single else y
    m = np.asarray(mask, np.float32)
    h, w = y.shape[-2:]
    out = np.empty_like(y)
    for i in range(y.shape[0]):
        mi = m if m.ndim == 2 else m[i]
        app = mr.app.TotalVariationRecon(
            (y[i] * mi)[None], np.ones((1, h, w), np.complex64), float(lam), weights=mi,
            max_iter=int(num_iters), show_pbar=False,
        )
        out[i] = app.run()
    return out[0] if single else out
