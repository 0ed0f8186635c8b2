"""The tracking benchmark's statistics: the hierarchical bootstrap of paired differences (seeds, then videos)."""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.cases import tracking as T  # noqa: E402

pytestmark = pytest.mark.timeout(60)


def test_a_constant_paired_difference_has_no_spread():
    rng = np.random.default_rng(0)
    base = {s: rng.normal(10, 3, size=500) for s in range(3)}
    row = {s: base[s] + 2.0 for s in range(3)}  # the same videos move both rows: pairing removes their noise
    assert T._hier_delta_std(row, base, np.random.default_rng(1)) == pytest.approx(0.0, abs=1e-12)


def test_seed_spread_enters_the_interval():
    rng = np.random.default_rng(0)
    base = {s: rng.normal(10, 1, size=2000) for s in range(3)}
    # per-seed differences +0, +2, +4 without video noise: the interval comes from resampling seeds alone
    row = {s: base[s] + 2.0 * s for s in range(3)}
    std = T._hier_delta_std(row, base, np.random.default_rng(1))
    # the mean of 3 draws with replacement from {0, 2, 4}: std = sqrt(8/3 / 3)
    assert std == pytest.approx(np.sqrt(8 / 3 / 3), rel=0.05)
    # only seeds both rows have are paired
    assert T._hier_delta_std({0: row[0], 1: row[1]}, base, np.random.default_rng(1)) > 0


def test_render_reports_intervals_and_resolution(tmp_path, monkeypatch):
    monkeypatch.setattr(T, "ROOT", tmp_path)  # the plot goes to tmp_path/benchmarks/plots, not the repository's
    rows = [T.ROWS[0], T.ROWS[3]]
    tag = {"AP": [10.0, 1.0], "AssA": [50.0, 2.0], "HOTA": [20.0, 1.0], "IDF1": [30.0, 1.0], "IDSW": [5.0, 1.0],
           "AP_agn": [15.0, 1.0], "AP50": [20.0, 1.0], "AR10": [30.0, 1.0]}
    fig = {"budget": vars(T.BUDGETS["full"]) | {"seeds": [0, 1, 2]}, "seeds": [0, 1, 2],
           "rows": [vars(r) for r in rows], "segmenter_first_frame": {}, "errors": {}, "total_s": 60.0,
           "heldout": {"videos": 200, "frames": 5000, "tracks": 600},
           "summary": {rows[0].name: {"seeds": ["0", "1", "2"], "tags": {"all": tag}, "num_videos": {"all": 200}},
                       rows[1].name: {"seeds": ["0", "1", "2"], "tags": {"all": tag}, "num_videos": {"all": 200},
                                      "delta": {"AP": [1.5, 0.5], "AssA": [4.0, 1.0]},
                                      "delta_ci95": {"AP": [0.5, 2.5], "AssA": [1.0, 7.0]}}}}
    text = T.render_tracking({"figures": fig, "case": "tracking"})
    assert "+1.5 [+0.5, +2.5]" in text and "+4.0 [+1.0, +7.0]" in text
    assert "AP ±1.0" in text and "AssA ±3.0" in text
    assert (tmp_path / "benchmarks" / "plots" / "tracking_deltas.png").stat().st_size > 1000
