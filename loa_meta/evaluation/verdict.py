"""The quickstart's PASS/FAIL verdict from a protocol run's claims (experiments.quickstart)."""

from __future__ import annotations


def quickstart_verdict(summary: dict, margin_db: float = 0.0):
    """(ok, lines): PASS iff meta-learning's mean test PSNR is at least TV's + ``margin_db`` at every
    seen ratio (TV's lambda chosen on the val split) *and* meta-learning beats conventional learning
    on average over the seen ratios. Both margins are printed, with the gain over zero filling."""
    cl = summary["claims"]
    per_tv = cl.get("meta_minus_tv_seen_per_task_db") or {}
    per_zf = cl.get("meta_minus_zero_filled_seen_per_task_db") or {}
    conv = cl.get("meta_minus_conventional_seen_db")
    lines, ok = [], bool(per_tv)
    for t, d in per_tv.items():
        good = d >= margin_db
        ok = ok and good
        zf = per_zf.get(t)
        lines.append(f"  {t}: meta-learning - TV = {d:+.2f} dB ({'ok' if good else 'BELOW'})"
                     + ("" if zf is None else f"; meta-learning - zero-filled = {zf:+.2f} dB"))
    conv_ok = conv is not None and conv > 0
    ok = ok and conv_ok
    lines.append("  mean meta-learning - conventional = " + ("n/a" if conv is None else f"{conv:+.2f} dB")
                 + f" over the seen ratios ({'ok' if conv_ok else 'NOT above 0'}; paper: +1.54 dB)")
    mean_tv = cl.get("meta_minus_tv_seen_db")
    if mean_tv is not None:
        lines.append(f"  mean meta-learning - TV = {mean_tv:+.2f} dB over the seen ratios")
    unseen_zf = cl.get("meta_minus_zero_filled_unseen_per_task_db") or {}
    unseen_tv = cl.get("meta_minus_tv_unseen_per_task_db") or {}
    for t, d in unseen_tv.items():
        lines.append(f"  unseen {t} (adapted omega): meta-learning - TV = {d:+.2f} dB, "
                     f"- zero-filled = {unseen_zf.get(t, float('nan')):+.2f} dB")
    return ok, lines
