"""Achieved sampling ratio ``mask.mean()`` of every mask kind: prints a Markdown table.

Usage (the table in docs/masks.md is this command's output):

    python -m benchmarks.mask_ratios --shape=160,180 --ratios=0.1,0.2,0.3,0.4 --seed=0

Optionally ``--png_dir=DIR`` renders every mask to ``DIR/<kind>_<ratio>.png`` (for papers).
"""

from __future__ import annotations

import os
import time

from absl import app, flags

from loa_meta.sampling import MASK_KINDS, make_mask, render_mask_png

FLAGS = flags.FLAGS
flags.DEFINE_list("shape", ["160", "180"], "H,W of the k-space grid.")
flags.DEFINE_list("ratios", ["0.1", "0.2", "0.3", "0.4"], "Requested sampling ratios.")
flags.DEFINE_integer("seed", 0, "Mask seed (random kinds).")
flags.DEFINE_string("png_dir", None, "If set, render each mask to a PNG in this directory.")


def ratio_table(shape, ratios, seed=0, png_dir=None):
    """Rows ``(kind, requested, achieved, seconds)`` for every kind and ratio."""
    rows = []
    for kind in MASK_KINDS:
        for r in ratios:
            t0 = time.perf_counter()
            m = make_mask(kind, shape, r, seed=seed)
            dt = time.perf_counter() - t0
            rows.append((kind, r, float(m.mean()), dt))
            if png_dir:
                render_mask_png(m, os.path.join(png_dir, f"{kind}_{r:g}.png"))
    return rows


def format_table(rows, ratios, shape) -> str:
    head = f"| kind ({shape[0]}x{shape[1]}) | " + " | ".join(f"{r:g}" for r in ratios) + " | max abs error |"
    lines = [head, "|---" * (len(ratios) + 2) + "|"]
    for kind in MASK_KINDS:
        ach = [a for k, _, a, _ in rows if k == kind]
        err = max(abs(a - r) for a, r in zip(ach, ratios))
        lines.append(f"| `{kind}` | " + " | ".join(f"{a:.4f}" for a in ach) + f" | {err:.4f} |")
    return "\n".join(lines)


def main(argv):
    del argv
    shape = tuple(int(s) for s in FLAGS.shape)
    if len(shape) != 2 or min(shape) < 2:
        raise app.UsageError(f"--shape must be H,W with H, W >= 2, but received: {FLAGS.shape}")
    ratios = [float(r) for r in FLAGS.ratios]
    if FLAGS.png_dir:
        os.makedirs(FLAGS.png_dir, exist_ok=True)
    rows = ratio_table(shape, ratios, seed=FLAGS.seed, png_dir=FLAGS.png_dir)
    print(format_table(rows, ratios, shape))


if __name__ == "__main__":
    app.run(main)
