"""Tables 1-5 layout: numbers agree with NumPy mean/std, Markdown/CSV structure, atomic writes."""

import csv
import io
import os

import numpy as np
import pytest

from loa_meta.evaluation import tables


def _results(rng):
    res = {}
    for method, offset in (("Conventional", 0.0), ("Meta-learning", 1.5)):
        res[method] = {}
        for task, sigma in (("radial:0.1", 0.9218), ("radial:0.2", 0.7756)):
            res[method][task] = {
                "psnr": 25.0 + offset + rng.normal(size=7),
                "ssim": 0.6 + 0.01 * rng.normal(size=7),
                "nmse": 0.02 + 0.001 * rng.normal(size=7),
                "sigma_omega": sigma if method == "Meta-learning" else None,
            }
    res[tables.ZERO_FILLED] = {t: {"psnr": np.full(7, 20.0), "ssim": np.full(7, 0.5), "nmse": np.full(7, 0.1)}
                               for t in ("radial:0.1", "radial:0.2")}
    return res


def test_rows_match_numpy(rng):
    res = _results(rng)
    rows = tables.build_rows(res)
    assert len(rows) == 6
    # Grouped by task, zero-filled first inside each group.
    assert [r["task"] for r in rows] == ["radial:0.1"] * 3 + ["radial:0.2"] * 3
    assert rows[0]["method"] == tables.ZERO_FILLED and rows[3]["method"] == tables.ZERO_FILLED
    for r in rows:
        src = res[r["method"]][r["task"]]
        for m in tables.METRICS:
            assert r[f"{m}_mean"] == pytest.approx(np.mean(src[m]), rel=1e-12)
            assert r[f"{m}_std"] == pytest.approx(np.std(src[m]), rel=1e-12)
        assert r["n"] == 7


def test_markdown_layout_and_rounding(rng):
    res = _results(rng)
    md = tables.to_markdown(tables.build_rows(res), title="Table 1")
    lines = [l for l in md.splitlines() if l.startswith("|")]
    assert lines[0].split("|")[1:-1] == [" CS ratio ", " Method ", " PSNR ", " SSIM ", " NMSE ", " σ(ω_i) "]
    body = lines[2:]
    assert len(body) == 6
    meta = [l for l in body if "Meta-learning" in l][0]
    cells = [c.strip() for c in meta.split("|")[1:-1]]
    assert cells[0] == ""  # label only on the first row of the group
    assert [c.strip() for c in body[0].split("|")[1:-1]][0] == "radial 10%"
    assert [c.strip() for c in body[3].split("|")[1:-1]][0] == "radial 20%"
    p = res["Meta-learning"]["radial:0.1"]["psnr"]
    assert cells[2] == f"{np.mean(p):.4f} ± {np.std(p):.4f}"
    assert cells[5] == "0.9218"
    # the task label is shown once per group; methods without sigma have an empty cell
    conv = [c.strip() for c in body[1].split("|")[1:-1]]
    assert conv[0] == "" and conv[5] == ""


def test_csv_round_trip(rng, tmp_path):
    res = _results(rng)
    out = tables.write_tables(res, str(tmp_path / "sub" / "table"), method_order=["Meta-learning", tables.ZERO_FILLED])
    assert os.path.isfile(out["markdown"]) and os.path.isfile(out["csv"])
    rows = list(csv.DictReader(io.StringIO(open(out["csv"]).read())))
    assert [r["method"] for r in rows] == ["Meta-learning", tables.ZERO_FILLED] * 2
    r = rows[0]
    assert float(r["psnr_mean"]) == pytest.approx(np.mean(res["Meta-learning"]["radial:0.1"]["psnr"]), rel=1e-14)
    assert float(r["sigma_omega"]) == pytest.approx(0.9218)
    assert rows[1]["sigma_omega"] == ""
    # no temporary files left behind
    assert sorted(os.listdir(tmp_path / "sub")) == ["table.csv", "table.md"]


def test_format_and_labels():
    assert tables.format_mean_std(21.26331, 1.03168) == "21.2633 ± 1.0317"
    assert tables.task_label("radial:0.15") == "radial 15%"
    assert tables.task_label("cartesian_0.40") == "cartesian 40%"
    assert tables.task_label("file_mask") == "file_mask"


def test_atomic_write_leaves_old_file_on_error(tmp_path):
    path = tmp_path / "t.md"
    tables.atomic_write_text(str(path), "old")
    with pytest.raises(RuntimeError):
        with tables.atomic_path(str(path)) as tmp:
            open(tmp, "w").write("half")
            raise RuntimeError("boom")
    assert path.read_text() == "old"
    assert os.listdir(tmp_path) == ["t.md"]


def test_bad_inputs():
    with pytest.raises(ValueError, match="results"):
        tables.build_rows({})
    with pytest.raises(ValueError, match="nmse"):
        tables.build_rows({"m": {"t": {"psnr": [1.0], "ssim": [1.0]}}})
    with pytest.raises(ValueError, match="method_order"):
        tables.build_rows({"m": {"t": {"psnr": [1.0], "ssim": [1.0], "nmse": [1.0]}}}, method_order=["x"])
