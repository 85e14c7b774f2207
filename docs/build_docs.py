"""Build docs/FIDELITY.md and BENCHMARKS.md from their per-area sources.

Sources: docs/fidelity/<area>.md (one table per part of the paper) and docs/benchmarks_<area>.md.
Edit the sources, then run ``python docs/build_docs.py``; ``--check`` exits 1 if the built files are
stale (``tests/test_docs.py`` runs it).
"""

import os
import pathlib
import re
import sys

root = pathlib.Path(__file__).resolve().parents[1]
built = {}
_LINK = re.compile(r"(\]\()(?!https?://|#|/)([^)\s]+)(\))")


def from_docs(line: str) -> str:
    """A line of docs/<source>.md as it must read in a file at the repository root: its relative
    Markdown links (``[text](results/x.png)``, ``(../benchmarks/x.py)``) re-rooted at the repository."""
    return _LINK.sub(lambda m: m.group(1) + os.path.normpath("docs/" + m.group(2)).replace(os.sep, "/") + m.group(3), line)

parts = [("foundation", "Physics, masks, metrics, Docker (issue 2)"), ("network", "LOA network: Algorithm 1 and Eqs. 4-12, 19-20, A2 (issue 3)"),
         ("ista_net_plus", "ISTA-Net+ baseline (issue 3)"), ("training", "Training: Eqs. 13-18, Algorithm 2, Sections 4.2, 5.2, 5.4 (issue 4)"),
         ("data", "Data: Section 5.1 (issue 5)"), ("evaluation", "Evaluation: Eqs. 21-23 protocol, Tables 1-5, Figs. 1-6 (issue 6)"),
         ("experiments", "Experiments: Section 5.2-5.4 protocol and presets (issue 6)")]
out = ["# Fidelity record: paper item -> code -> test", "",
       "One row per paper item (equation, algorithm line, hyperparameter, protocol step): where it is",
       "implemented, which test covers it, and any deviation from the paper or from the authors' public",
       "TF1 script with its reason. Test names are in `tests/` (a bare test_x.py::name means",
       "tests/test_x.py::name); `tests/test_docs.py` checks that every referenced file and test exists.",
       "This file is built by `docs/build_docs.py` from docs/fidelity/<area>.md: edit those.", "",
       "Summary of deliberate deviations:", "",
       "* Algorithm 1 runs as written, safeguard included; the authors' script never executes lines 8-13",
       "  (available here as `LOANet(safeguard=False)` for comparison).",
       "* Centred orthonormal FFT (the authors' script uses the uncentred `tf.fft2d`); masks are stored centred",
       "  and uncentred `.mat` masks are detected/converted on load.",
       "* NMSE divides by the reference ||x*||^2 (the paper's Eq. 23 prints ||x||^2; fastMRI and common practice",
       "  use the reference).",
       "* The line search of lines 8-13 is bounded (`max_backtracks`); when exhausted the sample keeps x_t,",
       "  which preserves the descent property.",
       "* Step sizes alpha, tau and eps_0 are used through |.| to stay positive.",
       "* Options beyond the paper, off in the `paper` preset: a floor on eps_0 (`eps0_floor`), a TV",
       "  start of g (`regularizer_init='tv'`), Adam gradient clipping (`global_clipnorm`), a wider g (`filters`),",
       "  Algorithm 1 without its safeguard (`safeguard=False`), a per-sample normalised loss",
       "  (`loss_reduction='task_norm'`), the average of the last checkpoints (`average_checkpoints`). The",
       "  `quickstart` and `cpu` presets and the shipped `demo-t1-radial` recipe use the eps_0 floor, 16 kernels,",
       "  no safeguard in training, the normalised loss and the average (measured: docs/benchmarks_quality.md).",
       "* Scaled-down presets (`cpu`, `quickstart`, `tiny`) change hyperparameters to fit 2 CPU cores; see the",
       "  experiments section. The `paper` preset keeps Section 5.2's values.", ""]
for name, title in parts:
    p = root / "docs" / "fidelity" / f"{name}.md"
    text = p.read_text()
    lines = text.splitlines()
    if lines and lines[0].startswith("# "):
        lines = lines[1:]
    out += [f"## {title}", ""] + lines + [""]
built[root / "docs" / "FIDELITY.md"] = "\n".join(out).rstrip() + "\n"

bparts = [("quality", "Quality on the demo data (issue 6 item 4)"), ("network", "Network speed: Algorithm 1 inference and training step (issue 3)"),
          ("speed", "Speed and memory scaling, LOANet vs classical TV (issue 6 item 5)"), ("training", "Training: bilevel step time and memory (issue 4)"),
          ("classical", "Classical TV reconstruction (issue 6)"), ("data", "Data preparation (issue 5)"),
          ("tests", "Test suite duration (issue 13 item 7)")]
out = ["# Benchmarks", "",
       "Speed, memory and quality of loa-meta, each with the command that produced it. Measured on the",
       "development machine: 2 CPU cores, 24 GB RAM, no GPU, shared with other jobs during the session, so",
       "absolute times are noisy; we quote medians of several runs and compare configurations within one run.",
       "Mask sampling ratios achieved per kind are tabulated in [docs/masks.md](docs/masks.md)", "(`benchmarks/mask_ratios.py`).",
       "This file is built by `docs/build_docs.py` from docs/benchmarks_<area>.md: edit those.", ""]
for name, title in bparts:
    p = root / "docs" / f"benchmarks_{name}.md"
    if not p.exists():
        continue
    lines = p.read_text().splitlines()
    if lines and lines[0].startswith("# "):
        lines = lines[1:]
    lines = [("#" + l) if l.startswith("#") else from_docs(l) for l in lines]
    out += [f"## {title}", ""] + lines + [""]
built[root / "BENCHMARKS.md"] = "\n".join(out).rstrip() + "\n"

stale = [p for p, text in built.items() if not p.exists() or p.read_text() != text]
if "--check" in sys.argv[1:]:
    for p in stale:
        print(f"{p.relative_to(root)} is out of date: run python docs/build_docs.py")
    sys.exit(1 if stale else 0)
for p in stale:
    p.write_text(built[p])
    print("wrote", p.relative_to(root))
