"""The quickstart's PASS/FAIL verdict from a protocol run's claims (experiments.quickstart)."""

from __future__ import annotations


def _margins(cl: dict, prefix: str, conv_key: str, label: str, margin_db: float, judged: bool = True):
    """(ok, lines) of one pair of rows: ``prefix`` names the claims of the meta-learning row; with
    ``judged=False`` the lines carry no ok / BELOW marks."""
    per_tv = cl.get(f"{prefix}_minus_tv_seen_per_task_db") or {}
    per_zf = cl.get(f"{prefix}_minus_zero_filled_seen_per_task_db") or {}
    conv = cl.get(conv_key)
    lines, ok = [], bool(per_tv)
    for t, d in per_tv.items():
        good = d >= margin_db
        ok = ok and good
        zf = per_zf.get(t)
        mark = f" ({'ok' if good else 'BELOW'})" if judged else ""
        lines.append(f"  {t}: {label} - TV = {d:+.2f} dB{mark}"
                     + ("" if zf is None else f"; {label} - zero-filled = {zf:+.2f} dB"))
    conv_ok = conv is not None and conv > 0
    ok = ok and conv_ok
    lines.append(f"  mean {label} - conventional = " + ("n/a" if conv is None else f"{conv:+.2f} dB")
                 + f" over the seen ratios ({'ok; ' if conv_ok and judged else 'NOT above 0; ' if judged else ''}"
                 + "paper: +1.54 dB)")
    mean_tv = cl.get(f"{prefix}_minus_tv_seen_db")
    if mean_tv is not None:
        lines.append(f"  mean {label} - TV = {mean_tv:+.2f} dB over the seen ratios")
    unseen_zf = cl.get(f"{prefix}_minus_zero_filled_unseen_per_task_db") or {}
    unseen_tv = cl.get(f"{prefix}_minus_tv_unseen_per_task_db") or {}
    for t, d in unseen_tv.items():
        lines.append(f"  unseen {t} (adapted omega): {label} - TV = {d:+.2f} dB"
                     + (f", - zero-filled = {unseen_zf[t]:+.2f} dB" if t in unseen_zf else ""))
    return ok, lines


def quickstart_verdict(summary: dict, margin_db: float = 0.0):
    """(ok, lines): PASS iff meta-learning's mean test PSNR is at least TV's + ``margin_db`` at every
    seen ratio (TV's lambda chosen on the val split) *and* meta-learning beats conventional learning
    on average over the seen ratios. Both margins are printed, with the gain over zero filling.

    When the run also scored its LOA models at the iteration count chosen on held-out slices (preset
    ``inference_iterations``, beyond the paper), the verdict judges those rows (meta-learning against
    conventional learning, both at their chosen counts) and prints the trained-T margins below them
    for reference; otherwise it judges the trained T phases.
    """
    cl = summary["claims"]
    if cl.get("meta_n_minus_tv_seen_per_task_db"):
        chosen = (cl.get("inference_iterations") or {}).get("chosen", {})
        ok, lines = _margins(cl, "meta_n", "meta_n_minus_conventional_n_seen_db",
                             "meta-learning (N on held-out)", margin_db)
        for method, per_task in chosen.items():
            lines.append(f"  iterations chosen on the held-out slices, {method}: "
                         + ", ".join(f"{t} {n}" for t, n in per_task.items()))
        _, ref = _margins(cl, "meta", "meta_minus_conventional_seen_db", "meta-learning (trained T phases)",
                          margin_db, judged=False)
        return ok, lines + ["  for reference, the trained T phases (the paper's network; not judged):"] + ref
    return _margins(cl, "meta", "meta_minus_conventional_seen_db", "meta-learning", margin_db)
