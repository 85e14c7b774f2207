"""Binary k-space sampling masks P (paper Eq. 1) on the centred Cartesian grid.

Every mask is a NumPy ``bool`` array of shape ``(H, W)`` in the centred layout (DC at
``(H // 2, W // 2)``), the layout expected by :class:`loa_meta.physics.SingleCoilOperator`.
The achieved sampling ratio ``mask.mean()`` is within 0.01 of the request for
``0.05 <= ratio <= 0.6`` on 160x180-sized grids (the paper's image size), the DC sample is always
taken, and ``ratio == 1`` gives the full grid.

Kinds (see ``docs/masks.md`` for pictures and the exact rules):

* ``radial`` -- straight spokes through the centre (the paper's main masks, Section 5.2);
* ``cartesian`` -- random phase-encode lines plus a fully sampled centre band (the paper's
  "random Cartesian" masks, Table 5);
* ``equispaced`` -- regularly spaced lines plus a centre band;
* ``poisson`` -- 2D variable-density Poisson-disc points plus a calibration square;
* ``gaussian`` -- 2D variable-density random points with a Gaussian density.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Dict, Tuple

import numpy as np

from loa_meta.validation import check_in_range, check_one_of, check_shape

MASK_KINDS = ("radial", "cartesian", "equispaced", "poisson", "gaussian")

# Golden angle for radial sampling: 180 degrees / golden ratio = 111.246... degrees.
GOLDEN_ANGLE = math.pi * (math.sqrt(5.0) - 1.0) / 2.0


def _check_options(kind: str, options: Dict[str, Any], allowed: Tuple[str, ...]) -> None:
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(
            f"Unknown option(s) {unknown} for mask kind `{kind}`; allowed options: {list(allowed)}"
        )


def _as_bool(value: Any, name: str) -> bool:
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.lower() in ("0", "1", "true", "false", "yes", "no"):
        return value.lower() in ("1", "true", "yes")
    raise ValueError(f"Argument `{name}` must be a boolean (0/1/true/false), but received: {value!r}")


def _as_int(value: Any, name: str, minimum: int) -> int:
    try:
        f = float(value)
    except (TypeError, ValueError):
        f = float("nan")
    if isinstance(value, (bool, np.bool_)) or not math.isfinite(f) or not f.is_integer() or f < minimum:
        raise ValueError(f"Argument `{name}` must be an integer >= {minimum}, but received: {value!r}")
    return int(f)


# ----------------------------------------------------------------------------- radial


def _radial_lines(shape: Tuple[int, int], angles: np.ndarray) -> np.ndarray:
    """Rasterise full lines through the centre at the given angles (radians)."""
    h, w = shape
    cy, cx = h // 2, w // 2
    half = math.hypot(h, w) / 2.0 + 1.0
    step = 0.5
    m = int(math.ceil(half / step))
    t = step * np.arange(-m, m + 1)  # contains t == 0 exactly: the DC is always hit.
    ys = np.rint(cy + np.sin(angles)[:, None] * t[None, :]).astype(np.int64).ravel()
    xs = np.rint(cx + np.cos(angles)[:, None] * t[None, :]).astype(np.int64).ravel()
    keep = (ys >= 0) & (ys < h) & (xs >= 0) & (xs < w)
    mask = np.zeros(shape, bool)
    mask[ys[keep], xs[keep]] = True
    return mask


def _radial(shape, ratio, rng, golden=False, random_offset=False, spokes=None) -> np.ndarray:
    golden = _as_bool(golden, "golden")
    random_offset = _as_bool(random_offset, "random_offset")
    offset_unit = float(rng.random()) if random_offset else 0.0

    def build(n: int) -> np.ndarray:
        k = np.arange(n)
        if golden:
            angles = offset_unit * math.pi + k * GOLDEN_ANGLE
        else:
            angles = (offset_unit + k) * math.pi / n
        return _radial_lines(shape, np.mod(angles, math.pi))

    if spokes is not None:
        return build(_as_int(spokes, "spokes", 1))

    target = ratio
    n_max = 4 * (shape[0] + shape[1])
    lo, hi = 1, n_max
    # Smallest n with ratio(n) >= target (ratio(n) is increasing up to rasterisation jitter).
    while lo < hi:
        mid = (lo + hi) // 2
        if build(mid).mean() >= target:
            hi = mid
        else:
            lo = mid + 1
    best, best_err = None, None
    for n in range(max(1, lo - 3), min(n_max, lo + 3) + 1):
        cand = build(n)
        err = abs(cand.mean() - target)
        if best_err is None or err < best_err - 1e-12:
            best, best_err = cand, err
    return best


# ----------------------------------------------------------------------------- lines


def _centre_band(n_lines: int, n_center: int) -> np.ndarray:
    """Indices of ``n_center`` contiguous lines containing the DC index ``n_lines // 2``."""
    start = n_lines // 2 - n_center // 2
    return np.arange(start, start + n_center)


def _line_counts(shape, ratio, axis, center_fraction) -> Tuple[int, int, int]:
    axis = check_one_of(_as_int(axis, "axis", 0), "axis", (0, 1))
    n_lines = shape[axis]
    n_total = int(min(n_lines, max(1, round(ratio * n_lines))))
    if center_fraction is None:
        # fastMRI's 4x / 8x masks give one third of the lines to the centre band.
        center_fraction = min(0.08, ratio / 3.0)
    center_fraction = check_in_range(center_fraction, "center_fraction", 0.0, 1.0)
    n_center = int(min(n_total, max(1, round(center_fraction * n_lines))))
    return axis, n_total, n_center


def _lines_to_mask(shape, axis, lines) -> np.ndarray:
    mask = np.zeros(shape, bool)
    if axis == 1:
        mask[:, lines] = True
    else:
        mask[lines, :] = True
    return mask


def _cartesian(shape, ratio, rng, axis=1, center_fraction=None) -> np.ndarray:
    axis, n_total, n_center = _line_counts(shape, ratio, axis, center_fraction)
    n_lines = shape[axis]
    centre = _centre_band(n_lines, n_center)
    rest = np.setdiff1d(np.arange(n_lines), centre)
    chosen = rng.choice(rest, size=n_total - n_center, replace=False)
    return _lines_to_mask(shape, axis, np.concatenate([centre, chosen]).astype(np.int64))


def _equispaced(shape, ratio, rng, axis=1, center_fraction=None) -> np.ndarray:
    axis, n_total, n_center = _line_counts(shape, ratio, axis, center_fraction)
    n_lines = shape[axis]
    centre = _centre_band(n_lines, n_center)
    rest = np.setdiff1d(np.arange(n_lines), centre)
    n_outer = n_total - n_center
    if n_outer > 0:
        # Evenly spread over the remaining lines (exact count, regular spacing outside the band).
        pick = np.floor((np.arange(n_outer) + 0.5) * len(rest) / n_outer).astype(np.int64)
        outer = rest[pick]
    else:
        outer = np.zeros((0,), np.int64)
    return _lines_to_mask(shape, axis, np.concatenate([centre, outer]).astype(np.int64))


# ----------------------------------------------------------------------------- 2D random


def _normalised_radius(shape) -> np.ndarray:
    """Distance from the DC, normalised so that the grid corners are at ~1."""
    h, w = shape
    ky = (np.arange(h) - h // 2) / (h / 2.0)
    kx = (np.arange(w) - w // 2) / (w / 2.0)
    return np.sqrt(ky[:, None] ** 2 + kx[None, :] ** 2) / math.sqrt(2.0)


def _calib_box(shape, calib: int) -> Tuple[slice, slice]:
    h, w = shape
    cy, cx = h // 2, w // 2
    ch, cw = min(calib, h), min(calib, w)
    return slice(cy - ch // 2, cy - ch // 2 + ch), slice(cx - cw // 2, cx - cw // 2 + cw)


def _gaussian(shape, ratio, rng, sigma=0.3) -> np.ndarray:
    sigma = check_in_range(sigma, "sigma", 0.0, None, low_inclusive=False)
    h, w = shape
    n_target = int(min(h * w, max(1, round(ratio * h * w))))
    d = _normalised_radius(shape) * math.sqrt(2.0)  # per-axis normalised radius
    logp = -0.5 * (d / sigma) ** 2
    # Gumbel top-k = weighted sampling without replacement (successive draws with p ~ exp(logp)).
    keys = logp + rng.gumbel(size=shape)
    keys[h // 2, w // 2] = np.inf  # the DC is always sampled
    flat = np.argpartition(-keys.ravel(), n_target - 1)[:n_target]
    mask = np.zeros(h * w, bool)
    mask[flat] = True
    return mask.reshape(shape)


class _PoissonDisc:
    """Variable-density Poisson-disc sampler on the grid (greedy dart throwing in random order).

    Pixels are visited in a seeded random order; a pixel is accepted if it is not within the
    exclusion disc of an accepted pixel, and then blocks the disc of radius
    ``r(p) = r0 * (1 + slope * d(p))`` around itself, ``d`` being the normalised distance to the DC.
    The calibration square is sampled and blocked beforehand.
    """

    def __init__(self, shape, rng, calib: int, slope: float):
        h, w = shape
        self.shape = shape
        self.slope = slope
        self.d = _normalised_radius(shape)
        self.calib = np.zeros(shape, bool)
        self.calib[_calib_box(shape, calib)] = True
        self.calib[h // 2, w // 2] = True
        free = np.flatnonzero(~self.calib.ravel())
        self.order = free[rng.permutation(len(free))]
        self._cache: Dict[Tuple[int, int], np.ndarray] = {}

    def _offsets(self, r_tenths: int, pad_w: int) -> np.ndarray:
        key = (r_tenths, pad_w)
        if key not in self._cache:
            r = r_tenths / 10.0
            k = int(math.ceil(r))
            dy, dx = np.mgrid[-k : k + 1, -k : k + 1]
            inside = dy**2 + dx**2 < r * r
            self._cache[key] = (dy[inside] * pad_w + dx[inside]).astype(np.int64)
        return self._cache[key]

    def sample(self, r0: float) -> np.ndarray:
        h, w = self.shape
        r_all = r0 * (1.0 + self.slope * self.d)
        pad = int(math.ceil(r_all.max())) + 1
        pw = w + 2 * pad
        blocked = np.zeros((h + 2 * pad) * pw, bool)
        rq = np.maximum(1, np.rint(r_all.ravel() * 10)).astype(np.int64)
        ys, xs = np.divmod(self.order, w)
        padded = ((ys + pad) * pw + xs + pad).tolist()
        radii = rq[self.order].tolist()
        accepted = []
        for p, pk, rk in zip(self.order.tolist(), padded, radii):
            if blocked[pk]:
                continue
            accepted.append(p)
            blocked[pk + self._offsets(rk, pw)] = True
        mask = self.calib.copy().ravel()
        mask[np.asarray(accepted, np.int64)] = True
        return mask.reshape(self.shape)


def _poisson(shape, ratio, rng, calib=None, slope=2.0, tol=0.004) -> np.ndarray:
    h, w = shape
    if calib is None:
        calib = max(2, int(round(0.08 * min(h, w))))
    calib = _as_int(calib, "calib", 0)
    slope = check_in_range(slope, "slope", 0.0, None)
    sampler = _PoissonDisc(shape, rng, calib, slope)
    base = sampler.calib.mean()
    if ratio <= base:
        return sampler.calib
    # Bisection on log(r0); the achieved ratio decreases with r0 (up to random jitter).
    lo, hi = math.log(0.5), math.log(float(max(h, w)))
    best, best_err = None, None
    for _ in range(24):
        mid = 0.5 * (lo + hi)
        cand = sampler.sample(math.exp(mid))
        got = cand.mean()
        err = abs(got - ratio)
        if best_err is None or err < best_err:
            best, best_err = cand, err
        if err <= tol:
            break
        if got > ratio:
            lo = mid
        else:
            hi = mid
    return best


# ----------------------------------------------------------------------------- public


_BUILDERS: Dict[str, Tuple[Callable[..., np.ndarray], Tuple[str, ...]]] = {
    "radial": (_radial, ("golden", "random_offset", "spokes")),
    "cartesian": (_cartesian, ("axis", "center_fraction")),
    "equispaced": (_equispaced, ("axis", "center_fraction")),
    "poisson": (_poisson, ("calib", "slope")),
    "gaussian": (_gaussian, ("sigma",)),
}


def mask_options(kind: str) -> Tuple[str, ...]:
    """The option names :func:`make_mask` accepts for ``kind`` (e.g. ``("axis", "center_fraction")``).

    Raises:
      ValueError: unknown kind.
    """
    return _BUILDERS[check_one_of(kind, "kind", MASK_KINDS)][1]


def make_mask(kind: str, shape: Tuple[int, int], ratio: float, seed: int = 0, **options: Any) -> np.ndarray:
    """Build a centred binary sampling mask.

    Args:
      kind: one of ``radial``, ``cartesian``, ``equispaced``, ``poisson``, ``gaussian``.
      shape: ``(H, W)`` of the k-space grid.
      ratio: requested sampling ratio in (0, 1]; the achieved ``mask.mean()`` is as close as the
        kind allows (within 0.01 for 0.05 <= ratio <= 0.6 on grids of ~160x180). ``ratio == 1``
        returns the full grid for every kind.
      seed: integer seed of every random choice (``np.random.default_rng(seed)``). ``radial`` and
        ``equispaced`` masks are deterministic and ignore it unless ``random_offset=True``.
      **options: kind-specific options:
        ``radial``: ``golden`` (bool, golden-angle increments instead of evenly spaced spokes),
        ``random_offset`` (bool, rotate the first spoke by a seeded random angle),
        ``spokes`` (int, fix the number of spokes instead of matching ``ratio``);
        ``cartesian`` / ``equispaced``: ``axis`` (0 or 1, the phase-encode axis the lines are
        chosen along; default 1, i.e. full columns), ``center_fraction`` (fraction of lines in the
        fully sampled centre band; default ``min(0.08, ratio / 3)``);
        ``poisson``: ``calib`` (side of the fully sampled calibration square in pixels, default
        8% of ``min(H, W)``), ``slope`` (disc radius grows as ``1 + slope * d``, default 2);
        ``gaussian``: ``sigma`` (standard deviation of the density per axis, as a fraction of the
        half width, default 0.3).

    Returns:
      ``bool`` array of shape ``(H, W)``, centred (DC at ``(H // 2, W // 2)``, always sampled).

    Raises:
      ValueError: unknown kind or option, ``ratio`` outside (0, 1], bad shape or option value.
    """
    kind = check_one_of(kind, "kind", MASK_KINDS)
    shape = check_shape(shape, "shape", 2)
    ratio = check_in_range(ratio, "ratio", 0.0, 1.0, low_inclusive=False)
    seed = _as_int(seed, "seed", 0)
    builder, allowed = _BUILDERS[kind]
    _check_options(kind, options, allowed)
    if ratio == 1.0:
        return np.ones(shape, bool)
    rng = np.random.default_rng(seed)
    mask = builder(shape, ratio, rng, **options)
    mask[shape[0] // 2, shape[1] // 2] = True
    return mask


def sampling_ratio(mask: np.ndarray) -> float:
    """Fraction of sampled k-space locations, ``mask.mean()``.

    Args:
      mask: binary (0/1 or bool) array ``(H, W)`` or a stack ``(..., H, W)``.

    Returns:
      The mean of the mask as a Python float.
    """
    m = np.asarray(mask)
    if m.ndim < 2 or m.size == 0:
        raise ValueError(f"Argument `mask` must be an array of shape (..., H, W), but received shape: {m.shape}")
    if m.dtype != bool:
        if not np.issubdtype(m.dtype, np.number) or np.iscomplexobj(m) or not np.all((m == 0) | (m == 1)):
            raise ValueError("Argument `mask` must be binary (0/1 or bool); it holds other values (or NaN)")
    return float(np.mean(m.astype(bool)))
