"""Time the present training engine against an earlier checkout, interleaved, in one run.

Usage (the old checkout is a detached git worktree of the commit before the engine rewrite):

  git worktree add --detach /tmp/loa_old c29ae88
  python benchmarks/compare_engines.py --old=/tmp/loa_old --rounds=3 --config=small --mode=bilevel
  python benchmarks/compare_engines.py --old=/tmp/loa_old --rounds=2 --config=paper --mode=bilevel \
      --new_args=--microbatch=auto

Each round runs ``benchmarks/bench_engine.py`` once for the old and once for the new checkout (fresh
processes, alternating, so both see the same machine load), and the summary gives the medians and the
ratio old/new of the per-step medians. Extra arguments for one side go through ``--old_args`` /
``--new_args`` (space-separated). One JSON line per process, then a summary line.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
NEW = os.path.dirname(HERE)


def run(root, args, timeout):
    cmd = [sys.executable, os.path.join(HERE, "bench_engine.py"), f"--root={root}"] + args
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=root)
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        return {"root": root, "error": p.stderr[-2000:]}
    return json.loads(lines[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--old", required=True)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--config", default="small")
    ap.add_argument("--mode", default="bilevel")
    ap.add_argument("--runs", type=int, default=3, help="timed steps per process")
    ap.add_argument("--old_args", default="")
    ap.add_argument("--new_args", default="")
    ap.add_argument("--skip_old", action="store_true", help="time only the new engine")
    ap.add_argument("--timeout", type=float, default=7200)
    a = ap.parse_args()
    common = [f"--config={a.config}", f"--mode={a.mode}", f"--runs={a.runs}"]
    res = {"old": [], "new": []}
    for _ in range(a.rounds):
        for side, root, extra in (("old", a.old, a.old_args), ("new", NEW, a.new_args)):
            if side == "old" and a.skip_old:
                continue
            r = run(root, common + extra.split(), a.timeout)
            r["side"] = side
            print(json.dumps(r), flush=True)
            res[side].append(r)
    summ = {"config": a.config, "mode": a.mode}
    for side in ("old", "new"):
        ok = [r for r in res[side] if "step_s_median" in r]
        if ok:
            summ[side] = {k: float(np.median([r[k] for r in ok])) for k in ("step_s_median", "first_s", "peak_rss_gb")}
    if "old" in summ and "new" in summ:
        summ["speedup_step"] = round(summ["old"]["step_s_median"] / summ["new"]["step_s_median"], 2)
    print(json.dumps({"summary": summ}), flush=True)


if __name__ == "__main__":
    main()
