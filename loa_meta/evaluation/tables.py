"""Result tables in the layout of the paper's Tables 1-5 (Markdown and CSV).

The paper reports, per CS ratio (task) and per method, PSNR, SSIM and NMSE over the test slices as
``mean ± std`` with four decimals, and for meta-learning the task weight sigma(omega_i). We keep that
layout and add a zero-filled reference row per task (the network input x_0 = A^H y).

Input format used everywhere in :mod:`loa_meta.evaluation`::

    results[method][task] = {"psnr": (N,), "ssim": (N,), "nmse": (N,), "sigma_omega": float | None}

Standard deviations are population standard deviations (``ddof=0``); the paper does not say which.
"""

from __future__ import annotations

import csv
import io
import math
import re
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np

from loa_meta.fileio import atomic_path, atomic_write_text  # noqa: F401  (re-exported)

METRICS = ("psnr", "ssim", "nmse")
ZERO_FILLED = "Zero-filled"
_HEADER = ("PSNR", "SSIM", "NMSE")


def mean_std(values) -> tuple:
    """Mean and population standard deviation of the finite per-slice values.

    Args:
      values: 1-D array-like of per-slice metric values.

    Returns:
      ``(mean, std)`` as floats; ``(nan, nan)`` for an empty input.
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    if v.size == 0:
        return math.nan, math.nan
    return float(np.mean(v)), float(np.std(v))


def format_mean_std(mean: float, std: float, decimals: int = 4) -> str:
    """``"21.2633 ± 1.0317"`` (the paper's format)."""
    if math.isnan(mean):
        return "n/a"
    return f"{mean:.{decimals}f} ± {std:.{decimals}f}"


def task_label(name: str) -> str:
    """Human label of a task name: ``"radial:0.1"`` -> ``"radial 10%"``; other names unchanged."""
    m = re.match(r"^\s*([A-Za-z_]+)\s*[:_]\s*([0-9]*\.?[0-9]+)\s*$", str(name))
    if not m:
        return str(name)
    ratio = float(m.group(2))
    pct = ratio * 100.0 if ratio <= 1.0 else ratio
    return f"{m.group(1)} {pct:g}%"


def build_rows(
    results: Mapping[str, Mapping[str, Mapping[str, object]]],
    task_order: Optional[Sequence[str]] = None,
    method_order: Optional[Sequence[str]] = None,
) -> List[Dict[str, object]]:
    """Flatten nested results into table rows grouped by task (paper Tables 1-5).

    Args:
      results: ``results[method][task]`` dicts with per-slice ``psnr``, ``ssim``, ``nmse`` arrays
        and optional ``sigma_omega``.
      task_order: order of the row groups; default: first-seen order over the methods.
      method_order: order of the methods inside a group; default: the zero-filled reference first,
        then the insertion order of ``results``.

    Returns:
      A list of dicts with keys ``task``, ``label``, ``method``, ``n``, ``<metric>_mean``,
      ``<metric>_std`` and ``sigma_omega`` (float or None).
    """
    if not results:
        raise ValueError("Argument `results` must contain at least one method, but received an empty mapping.")
    if task_order is None:
        task_order = []
        for per_task in results.values():
            for t in per_task:
                if t not in task_order:
                    task_order.append(t)
    if method_order is None:
        method_order = sorted(results, key=lambda m: (m != ZERO_FILLED, list(results).index(m)))
    unknown = [m for m in method_order if m not in results]
    if unknown:
        raise ValueError(f"Argument `method_order` names methods without results: {unknown}")
    rows = []
    for task in task_order:
        for method in method_order:
            entry = results[method].get(task)
            if entry is None:
                continue
            row: Dict[str, object] = {"task": task, "label": task_label(task), "method": method}
            n = None
            for metric in METRICS:
                if metric not in entry:
                    raise ValueError(f"Results for method {method!r}, task {task!r} lack the metric {metric!r}.")
                vals = np.asarray(entry[metric], dtype=np.float64).ravel()
                n = vals.size
                row[f"{metric}_mean"], row[f"{metric}_std"] = mean_std(vals)
            row["n"] = n
            sigma = entry.get("sigma_omega")
            row["sigma_omega"] = None if sigma is None else float(sigma)
            rows.append(row)
    return rows


def to_markdown(rows: Sequence[Mapping[str, object]], title: Optional[str] = None, decimals: int = 4) -> str:
    """Render rows as a Markdown table in the paper's layout (task shown once per group)."""
    show_sigma = any(r.get("sigma_omega") is not None for r in rows)
    head = ["CS ratio", "Method", *_HEADER] + (["σ(ω_i)"] if show_sigma else [])
    lines = []
    if title:
        lines += [f"**{title}**", ""]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "|".join("---" for _ in head) + "|")
    previous = None
    for r in rows:
        label = r["label"] if r["task"] != previous else ""
        previous = r["task"]
        cells = [str(label), str(r["method"])]
        cells += [format_mean_std(r[f"{m}_mean"], r[f"{m}_std"], decimals) for m in METRICS]
        if show_sigma:
            s = r.get("sigma_omega")
            cells.append("" if s is None else f"{s:.{decimals}f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def to_csv(rows: Sequence[Mapping[str, object]]) -> str:
    """Render rows as CSV with full-precision numbers (one row per task and method)."""
    fields = ["task", "label", "method", "n"]
    for m in METRICS:
        fields += [f"{m}_mean", f"{m}_std"]
    fields.append("sigma_omega")
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        out = {k: r.get(k) for k in fields}
        out["sigma_omega"] = "" if r.get("sigma_omega") is None else repr(float(r["sigma_omega"]))
        for m in METRICS:
            for k in (f"{m}_mean", f"{m}_std"):
                out[k] = repr(float(r[k]))
        writer.writerow(out)
    return buf.getvalue()


def write_tables(
    results: Mapping[str, Mapping[str, Mapping[str, object]]],
    basename: str,
    title: Optional[str] = None,
    task_order: Optional[Sequence[str]] = None,
    method_order: Optional[Sequence[str]] = None,
) -> Dict[str, str]:
    """Write ``<basename>.md`` and ``<basename>.csv`` atomically; returns their paths."""
    rows = build_rows(results, task_order=task_order, method_order=method_order)
    md = atomic_write_text(basename + ".md", to_markdown(rows, title=title))
    cs = atomic_write_text(basename + ".csv", to_csv(rows))
    return {"markdown": md, "csv": cs}
