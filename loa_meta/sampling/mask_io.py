"""Reading and writing sampling masks: ``.npy``, ``.npz``, ``.png`` and MATLAB ``.mat``.

Masks in memory are centred ``bool`` arrays ``(H, W)`` (DC at ``(H // 2, W // 2)``). Files may be
stored either way: the authors' TF1 script uses the uncentred ``tf.fft2d``, so their ``mask_10.mat``
(key ``mask_10``) has its dense low-frequency region in the four corners. ``load_mask`` detects this
(rule in :func:`looks_uncentred`) or obeys ``centred=True/False``.

Writes are atomic: the file is written to a temporary name in the target directory and moved
into place with ``os.replace``, so a crash never leaves a half-written mask.
"""

from __future__ import annotations

import os
import re
from typing import Optional, Sequence

import numpy as np

from loa_meta.fileio import atomic_path

_IMAGE_EXTS = (".png", ".bmp", ".tif", ".tiff", ".gif", ".jpg", ".jpeg")
_SAVE_EXTS = (".npy", ".png", ".mat")


def _fail(path, what: str) -> ValueError:
    return ValueError(f"Mask file '{os.fspath(path)}': {what}")


def _atomic_write(path, write_fn) -> None:
    """Call ``write_fn(fileobj)`` on a temp file next to ``path``, then rename it to ``path``."""
    path = os.fspath(path)
    with atomic_path(path, suffix=os.path.splitext(path)[1], create_dirs=False) as tmp:
        with open(tmp, "wb") as f:
            write_fn(f)


def _mat_key(path) -> str:
    stem = os.path.splitext(os.path.basename(os.fspath(path)))[0]
    return stem if re.fullmatch(r"[A-Za-z][A-Za-z0-9_]{0,62}", stem) else "mask"


def _as_binary_2d(mask, name: str = "mask") -> np.ndarray:
    m = np.asarray(mask)
    if m.ndim != 2:
        raise ValueError(f"Argument `{name}` must be a 2D (H, W) array, but received shape: {m.shape}")
    if m.dtype != bool:
        if np.iscomplexobj(m) or not np.all(np.isin(m, (0, 1))):
            raise ValueError(f"Argument `{name}` must contain only 0/1 (or bool) values.")
        m = m.astype(bool)
    return m


def save_mask(path, mask, centred: bool = True, key: Optional[str] = None) -> None:
    """Write a binary mask to ``.npy`` (bool), ``.png`` (8-bit 0/255) or ``.mat`` (uint8 0/1).

    Args:
      path: output file; the extension selects the format.
      mask: centred binary array ``(H, W)`` (bool or 0/1).
      centred: if False, store the uncentred layout (``ifftshift``), as the authors' script expects.
      key: variable name in a ``.mat`` file; default: the file stem if it is a valid MATLAB name
        (``mask_10.mat`` -> ``mask_10``), else ``mask``.
    """
    m = _as_binary_2d(mask)
    if not centred:
        m = np.fft.ifftshift(m)
    ext = os.path.splitext(os.fspath(path))[1].lower()
    if ext == ".npy":
        _atomic_write(path, lambda f: np.save(f, m, allow_pickle=False))
    elif ext == ".png":
        from PIL import Image

        img = Image.fromarray(m.astype(np.uint8) * 255)
        _atomic_write(path, lambda f: img.save(f, format="PNG"))
    elif ext == ".mat":
        import scipy.io

        name = key or _mat_key(path)
        _atomic_write(path, lambda f: scipy.io.savemat(f, {name: m.astype(np.uint8)}))
    else:
        raise ValueError(f"Cannot save mask to '{os.fspath(path)}': extension must be one of {list(_SAVE_EXTS)}")


def looks_uncentred(mask: np.ndarray, threshold: float = 1.05, scale: float = 0.1) -> bool:
    """Heuristic: True if the mask is stored uncentred (DC at index (0, 0)).

    Rule: with the wrap-around (torus) distance ``d(p, c) = |dy| / H + |dx| / W`` (each term in
    [0, 1/2]), compute the low-frequency weight of the sampled pixels around the grid centre,
    ``S_centre = mean_p exp(-d(p, (H//2, W//2)) / scale)``, and around the corner,
    ``S_corner = mean_p exp(-d(p, (0, 0)) / scale)``. The mask is uncentred when
    ``S_corner > threshold * S_centre``, i.e. its samples crowd around the corners.

    Every variable-density mask (radial, Cartesian/equispaced with a centre band, Poisson with a
    calibration square, Gaussian) is densest at DC, so the rule is decisive for them: on 64x72 to
    161x179 grids with ratios 0.05-0.6, centred masks give ``S_corner / S_centre <= 0.89`` and
    their uncentred versions >= 1.13. A uniformly random mask has no preferred centre; it may be
    shifted either way, which leaves its distribution unchanged -- pass ``centred=`` explicitly
    to keep such a file exactly as stored.
    """
    m = np.asarray(mask, bool)
    h, w = m.shape
    ys, xs = np.nonzero(m)
    if len(ys) == 0:
        return False

    def torus(a, c, n):
        d = np.abs(a - c) % n
        return np.minimum(d, n - d) / n

    s_centre = np.mean(np.exp(-(torus(ys, h // 2, h) + torus(xs, w // 2, w)) / scale))
    s_corner = np.mean(np.exp(-(torus(ys, 0, h) + torus(xs, 0, w)) / scale))
    return bool(s_corner > threshold * s_centre)


def _read_array(path: str, key: Optional[str]) -> np.ndarray:
    ext = os.path.splitext(path)[1].lower()
    if ext == ".npy":
        return np.load(path, allow_pickle=False)
    if ext == ".npz":
        with np.load(path, allow_pickle=False) as z:
            return _pick(path, {k: z[k] for k in z.files}, key)
    if ext == ".mat":
        import scipy.io

        try:
            contents = scipy.io.loadmat(path)
        except NotImplementedError:
            raise _fail(path, "MATLAB v7.3 (HDF5) files are not supported; re-save with "
                        "save(..., '-v7') in MATLAB or scipy.io.savemat.") from None
        arrays = {k: v for k, v in contents.items() if not k.startswith("__") and isinstance(v, np.ndarray)}
        return _pick(path, arrays, key)
    if ext in _IMAGE_EXTS:
        from PIL import Image

        with Image.open(path) as img:
            img.load()
            if img.mode in ("RGB", "RGBA", "LA", "P"):
                img = img.convert("L")
            a = np.asarray(img)
        if a.dtype == np.uint8 or a.dtype == np.uint16:
            top = a.max(initial=0)
            if top > 1 and np.all(np.isin(a, (0, top))):
                a = (a == top).astype(np.uint8)
        return a
    raise _fail(path, f"unsupported extension '{ext}'; expected .npy, .npz, .mat or an image ({', '.join(_IMAGE_EXTS)})")


def _pick(path: str, arrays: dict, key: Optional[str]) -> np.ndarray:
    if key is not None:
        if key not in arrays:
            raise _fail(path, f"has no variable '{key}'; available: {sorted(arrays)}")
        return arrays[key]
    if len(arrays) != 1:
        raise _fail(path, f"holds {len(arrays)} arrays {sorted(arrays)}; pass `key` to choose one")
    return next(iter(arrays.values()))


def load_mask(
    path,
    key: Optional[str] = None,
    centred: Optional[bool] = None,
    shape: Optional[Sequence[int]] = None,
) -> np.ndarray:
    """Read a binary mask file and return it centred as ``bool (H, W)``.

    Args:
      path: ``.npy``, ``.npz``, ``.mat`` (MATLAB v5/v7, via scipy.io) or an image (``.png``...,
        black = not sampled; 0/1 or 0/255 grey levels).
      key: variable name in ``.mat``/``.npz`` files; if None the file must hold exactly one array
        (MATLAB's ``__header__``-style entries are ignored).
      centred: True if the file is stored centred, False if uncentred (DC at (0, 0), the layout of
        ``tf.fft2d``); None detects it with :func:`looks_uncentred`.
      shape: if given, the expected ``(H, W)``.

    Returns:
      Centred ``bool`` array ``(H, W)``.

    Raises:
      ValueError: naming the file, if it is missing, unreadable, not 2D (singleton axes are
        squeezed first), not binary, or its shape differs from ``shape``.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise _fail(path, "file does not exist")
    try:
        arr = _read_array(path, key)
    except ValueError as e:
        if str(e).startswith("Mask file"):
            raise
        raise _fail(path, f"cannot be read ({type(e).__name__}: {e})") from e
    except Exception as e:  # corrupt files raise all sorts of errors (OSError, zipfile, struct...)
        raise _fail(path, f"cannot be read ({type(e).__name__}: {e})") from e
    arr = np.asarray(arr)
    if arr.ndim > 2:
        arr = np.squeeze(arr)
    if arr.ndim != 2:
        raise _fail(path, f"mask must be 2D (H, W), but has shape {arr.shape}")
    if arr.dtype != bool:
        if arr.dtype.kind not in "biuf" or not np.all(np.isin(arr, (0, 1))):
            raise _fail(path, "mask is not binary: expected only 0/1 values (or 0/255 in images)")
        arr = arr.astype(bool)
    if shape is not None:
        expected = tuple(int(s) for s in shape)
        if arr.shape != expected:
            raise _fail(path, f"mask shape {arr.shape} does not match the expected shape {expected}")
    if centred is None:
        centred = not looks_uncentred(arr)
    if not centred:
        arr = np.fft.fftshift(arr)
    return np.ascontiguousarray(arr)


def render_mask_png(mask, path, scale: int = 1, centred: bool = True) -> None:
    """Write a mask as a figure-ready PNG (white = sampled), upscaled by an integer ``scale``.

    Args:
      mask: binary ``(H, W)`` array (centred).
      path: output ``.png`` path (written atomically).
      scale: integer nearest-neighbour upscaling factor >= 1.
      centred: draw the centred layout (True) or the uncentred one (False).
    """
    from loa_meta.validation import check_positive_int

    scale = check_positive_int(scale, "scale")
    m = _as_binary_2d(mask)
    if not centred:
        m = np.fft.ifftshift(m)
    img = np.repeat(np.repeat(m.astype(np.uint8) * 255, scale, axis=0), scale, axis=1)
    if os.path.splitext(os.fspath(path))[1].lower() != ".png":
        raise ValueError(f"Argument `path` must end in .png, but received: '{os.fspath(path)}'")
    from PIL import Image

    pil = Image.fromarray(img)
    _atomic_write(path, lambda f: pil.save(f, format="PNG"))
