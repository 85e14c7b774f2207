"""Task specifications: one reconstruction task = one sampling mask (paper Section 5.2).

Syntax (one spec)::

    KIND:RATIO[:OPTION=VALUE]...        e.g.  radial:0.2   radial:0.15:golden=1
                                              cartesian:0.3:center_fraction=0.04
    file:PATH[:OPTION=VALUE]...         e.g.  file:masks/mask_10.mat   file:m.mat:key=mask_10:centred=0

``KIND`` is one of :data:`loa_meta.sampling.masks.MASK_KINDS`, ``RATIO`` a number in (0, 1]
(the requested sampling ratio), options are the keyword options of
:func:`loa_meta.sampling.make_mask` (or ``key`` and ``centred`` of
:func:`loa_meta.sampling.load_mask` for files). For ``file`` specs, trailing ``:name=value``
fields are options and everything before them is the path. A list of specs is written
comma-separated: ``radial:0.1,radial:0.2,radial:0.3,radial:0.4``.

``str(spec)`` is canonical (options sorted, numbers in shortest form) and parses back to an equal
spec; ``spec.name`` is a filename-safe label such as ``radial_0.20``.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np

from loa_meta.sampling.mask_io import load_mask
from loa_meta.sampling.masks import MASK_KINDS, make_mask, mask_options

FILE_KIND = "file"
FILE_OPTIONS = ("key", "centred")
_OPTION_RE = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)=(.*)$")


def _fmt_number(v: float) -> str:
    return format(v, ".12g")


def _fmt_value(v: Any) -> str:
    if isinstance(v, bool):
        return "1" if v else "0"
    if isinstance(v, (int, float)):
        return _fmt_number(v)
    return str(v)


def _parse_value(text: str) -> Any:
    t = text.strip()
    low = t.lower()
    if low in ("true", "yes"):
        return True
    if low in ("false", "no"):
        return False
    if low in ("none", "auto"):
        return None
    try:
        return int(t)
    except ValueError:
        pass
    try:
        f = float(t)
        if math.isfinite(f):
            return f
    except ValueError:
        pass
    return t


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """One task's sampling pattern.

    Args:
      kind: a mask kind (``radial``, ``cartesian``, ``equispaced``, ``poisson``, ``gaussian``) or
        ``file``.
      ratio: requested sampling ratio in (0, 1]; None for ``file`` specs (the ratio is whatever
        the stored mask achieves).
      path: mask file for ``file`` specs, else None.
      options: keyword options passed to :func:`make_mask` / :func:`load_mask`.
    """

    kind: str
    ratio: Optional[float] = None
    path: Optional[str] = None
    options: Dict[str, Any] = dataclasses.field(default_factory=dict)

    def __hash__(self) -> int:
        return hash((self.kind, self.ratio, self.path, tuple(sorted((k, repr(v)) for k, v in self.options.items()))))

    def __str__(self) -> str:
        head = f"{FILE_KIND}:{self.path}" if self.kind == FILE_KIND else f"{self.kind}:{_fmt_number(self.ratio)}"
        opts = "".join(f":{k}={_fmt_value(v)}" for k, v in sorted(self.options.items()))
        return head + opts

    @property
    def name(self) -> str:
        """Filename-safe label, e.g. ``radial_0.20``, ``radial_0.15_golden-1``, ``file_mask_10``."""
        if self.kind == FILE_KIND:
            base = f"file_{os.path.splitext(os.path.basename(self.path))[0]}"
        else:
            r = self.ratio
            base = f"{self.kind}_{r:.2f}" if abs(round(r, 2) - r) < 1e-12 else f"{self.kind}_{_fmt_number(r)}"
        for k, v in sorted(self.options.items()):
            base += f"_{k}-{_fmt_value(v)}"
        return re.sub(r"[^A-Za-z0-9._-]", "-", base)

    def to_dict(self) -> Dict[str, Any]:
        return {"kind": self.kind, "ratio": self.ratio, "path": self.path, "options": dict(self.options)}

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "TaskSpec":
        return cls(kind=d["kind"], ratio=d.get("ratio"), path=d.get("path"), options=dict(d.get("options") or {}))

    def build_mask(self, shape: Sequence[int], seed: int = 0, base_dir: Optional[str] = None) -> np.ndarray:
        """Build (or load) this task's centred ``bool`` mask of shape ``(H, W)``.

        Args:
          shape: ``(H, W)`` of the images; a ``file`` mask of a different shape is an error.
          seed: seed of the random mask kinds.
          base_dir: directory that relative ``file`` paths are resolved against (default: cwd).

        Raises:
          ValueError: with the full spec string in the message.
        """
        try:
            if self.kind == FILE_KIND:
                path = self.path
                if base_dir is not None and not os.path.isabs(path):
                    path = os.path.join(base_dir, path)
                return load_mask(path, key=self.options.get("key"), centred=self.options.get("centred"),
                                 shape=tuple(shape))
            return make_mask(self.kind, shape, self.ratio, seed=seed, **self.options)
        except ValueError as e:
            raise ValueError(f"Task spec '{self}': {e}") from e


def parse_task_spec(s: Union[str, TaskSpec]) -> TaskSpec:
    """Parse ``KIND:RATIO[:opt=val]...`` or ``file:PATH[:opt=val]...`` (see module docstring).

    Raises:
      ValueError: containing the full spec string, for an unknown kind, a ratio that is not a
        number in (0, 1], malformed or unknown options, or invalid option values.
    """
    if isinstance(s, TaskSpec):
        return s
    if not isinstance(s, str):
        raise ValueError(f"Task spec must be a string like 'radial:0.2', but received: {s!r}")
    spec = s.strip()

    def fail(msg: str) -> ValueError:
        return ValueError(f"Invalid task spec '{s}': {msg}")

    kind, sep, rest = spec.partition(":")
    kind = kind.strip().lower()
    if not sep or not rest:
        raise fail("expected KIND:RATIO (e.g. 'radial:0.2') or file:PATH")
    if kind not in MASK_KINDS + (FILE_KIND,):
        raise fail(f"unknown kind '{kind}'; expected one of {list(MASK_KINDS) + [FILE_KIND]}")

    fields = rest.split(":")
    options: Dict[str, Any] = {}
    if kind == FILE_KIND:
        # Options are the trailing name=value fields; the rest (which may contain ':') is the path.
        while len(fields) > 1 and _OPTION_RE.match(fields[-1].strip()):
            k, v = _OPTION_RE.match(fields.pop().strip()).groups()
            if k in options:
                raise fail(f"option '{k}' given twice")
            options[k] = _parse_value(v)
        path = ":".join(fields).strip()
        if not path:
            raise fail("empty file path")
        unknown = sorted(set(options) - set(FILE_OPTIONS))
        if unknown:
            raise fail(f"unknown option(s) {unknown} for file masks; allowed: {list(FILE_OPTIONS)}")
        if "centred" in options and options["centred"] not in (None, True, False, 0, 1):
            raise fail(f"option 'centred' must be 0, 1 or auto, but received: {options['centred']!r}")
        if "centred" in options and options["centred"] is not None:
            options["centred"] = bool(options["centred"])
        if "key" in options:
            options["key"] = str(options["key"])
        return TaskSpec(kind=FILE_KIND, ratio=None, path=path, options=options)

    ratio_text = fields[0].strip()
    try:
        ratio = float(ratio_text)
    except ValueError:
        raise fail(f"ratio '{ratio_text}' is not a number") from None
    if not (math.isfinite(ratio) and 0.0 < ratio <= 1.0):
        raise fail(f"ratio must be in (0, 1], but received: {ratio_text}")
    for field in fields[1:]:
        m = _OPTION_RE.match(field.strip())
        if not m:
            raise fail(f"option '{field}' is not of the form name=value")
        k, v = m.groups()
        if k in options:
            raise fail(f"option '{k}' given twice")
        options[k] = _parse_value(v)
    allowed = mask_options(kind)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise fail(f"unknown option(s) {unknown} for kind '{kind}'; allowed: {list(allowed)}")
    result = TaskSpec(kind=kind, ratio=ratio, path=None, options=options)
    # Validate option values early (cheap: a tiny grid).
    try:
        make_mask(kind, (16, 16), ratio, seed=0, **options)
    except ValueError as e:
        raise fail(str(e)) from e
    return result


def parse_task_specs(specs: Union[str, Iterable[Union[str, TaskSpec]]]) -> List[TaskSpec]:
    """Parse a comma-separated string (or an iterable) of task specs; duplicates are an error."""
    if isinstance(specs, str):
        items: List[Union[str, TaskSpec]] = [p for p in (x.strip() for x in specs.split(",")) if p]
    else:
        items = list(specs)
    if not items:
        raise ValueError(f"Expected at least one task spec, but received: {specs!r}")
    parsed = [parse_task_spec(x) for x in items]
    seen: Dict[str, int] = {}
    for i, p in enumerate(parsed):
        key = str(p)
        if key in seen:
            raise ValueError(f"Task spec '{key}' is listed twice (positions {seen[key]} and {i}).")
        seen[key] = i
    return parsed


def build_masks(specs: Sequence[TaskSpec], shape: Tuple[int, int], seed: int = 0,
                base_dir: Optional[str] = None) -> np.ndarray:
    """Stack the masks of several specs: ``bool (T, H, W)``, all built with the same ``seed``.

    A task's mask depends only on its own spec and the seed, not on its position in the list.
    """
    return np.stack([parse_task_spec(s).build_mask(shape, seed=seed, base_dir=base_dir) for s in specs])


def _canonical(s: Union[None, str, TaskSpec]) -> Optional[str]:
    return None if s is None else str(parse_task_spec(s))


def canonical_task_specs(specs: Optional[Sequence[Union[None, str, TaskSpec]]], num_tasks: int) -> List[Optional[str]]:
    """The canonical strings of a model's ``num_tasks`` task specs (``None`` entries: unknown).

    ``specs=None`` means no task is known (models saved before task specs were recorded).

    Raises:
      ValueError: if the length is not ``num_tasks``, a spec is invalid or one is listed twice.
    """
    if specs is None:
        return [None] * int(num_tasks)
    if isinstance(specs, (str, TaskSpec)):
        raise ValueError(f"Argument `task_specs` must be a list of task specs, but received: {specs!r}")
    out = [_canonical(s) for s in specs]
    if len(out) != int(num_tasks):
        raise ValueError(f"Argument `task_specs` must have one spec per task ({num_tasks}), but received "
                         f"{len(out)}: {out}")
    known = [s for s in out if s is not None]
    if len(set(known)) != len(known):
        raise ValueError(f"Argument `task_specs` lists a task twice: {out}")
    return out


def match_task(task_specs: Sequence[Optional[str]], spec: Union[str, TaskSpec]) -> int:
    """The task id whose recorded spec equals ``spec`` (compared in canonical form).

    Raises:
      ValueError: naming the model's tasks when ``spec`` is not among them, or saying that the
        model records no task specs.
    """
    want = _canonical(spec)
    if not any(s is not None for s in task_specs):
        raise ValueError(f"the model records no task specs (saved by an older version), so task '{want}' "
                         "cannot be mapped to a task id; give the task id explicitly")
    for i, s in enumerate(task_specs):
        if s == want:
            return i
    listing = ", ".join(f"{i}={s}" for i, s in enumerate(task_specs))
    raise ValueError(f"task '{want}' is not among the model's tasks ({listing})")


def nearest_task(task_specs: Sequence[Optional[str]], spec: Union[str, TaskSpec]) -> int:
    """The trained task closest to ``spec``: same kind first, then the nearest sampling ratio.

    Ties (e.g. radial 25 % between 20 % and 30 %) go to the lower task id; ratio differences are
    rounded to 1e-9 so that float noise does not decide them. Without a task of the same kind,
    every task is a candidate; a ``file`` spec (no ratio) takes the first task of its kind.

    Raises:
      ValueError: when the model records no task specs.
    """
    want = parse_task_spec(spec)
    known = [(i, parse_task_spec(s)) for i, s in enumerate(task_specs) if s is not None]
    if not known:
        raise ValueError(f"the model records no task specs (saved by an older version): no trained task is "
                         f"known to start task '{want}' from")
    same = [(i, t) for i, t in known if t.kind == want.kind] or known

    def distance(t: TaskSpec) -> float:
        if want.ratio is None or t.ratio is None:
            return math.inf
        return round(abs(t.ratio - want.ratio), 9)

    return min(same, key=lambda it: (distance(it[1]), it[0]))[0]


def model_task_ids(model, specs: Sequence[Union[None, str, TaskSpec]]) -> List[int]:
    """The task id of each spec in ``model`` (anything with ``task_specs`` / ``num_tasks``).

    A model without task weights (conventional LOANet, ISTA-Net+) has one kappa for every input:
    id 0. Otherwise each spec must be among ``model.task_specs`` (:func:`match_task`); a ``None``
    spec (mask given as a file) resolves only when the model has a single task.

    Raises:
      ValueError: listing the model's tasks when a spec is not among them or is ambiguous.
    """
    n = getattr(model, "num_tasks", None)
    n = 1 if n is None else int(n)
    if not getattr(model, "use_task_weights", True) or n <= 1 and not any(getattr(model, "task_specs", None) or []):
        return [0] * len(specs)
    recorded = list(getattr(model, "task_specs", None) or [None] * n)
    out = []
    for s in specs:
        if s is None:
            if n != 1:
                listing = ", ".join(f"{i}={t}" for i, t in enumerate(recorded))
                raise ValueError(f"the model has {n} tasks ({listing}): name the task by its spec or id")
            out.append(0)
        else:
            out.append(match_task(recorded, s))
    return out
