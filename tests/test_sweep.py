"""scripts/sweep.py: grids, run names, skipping finished runs, the Markdown table and the bar chart."""

import importlib.util
import json
import os
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(120)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def sweep():
    spec = importlib.util.spec_from_file_location("l2g_sweep_script", REPO / "scripts" / "sweep.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def fake_run(run_dir: Path, ap: float, finished: bool = True):
    run_dir.mkdir(parents=True, exist_ok=True)
    rows = [{"iteration": 0, "total_loss": 3.0}, {"iteration": 1, "total_loss": 2.0}]
    if finished:
        rows.append({"iteration": 2, "segm/AP": ap, "segm/AP50": ap + 10, "segm/AR10": ap + 1})
        (run_dir / "model_final.pth").write_bytes(b"x")
        (run_dir / "last_checkpoint").write_text("model_final.pth")
    else:
        (run_dir / "model_0000000.pth").write_bytes(b"x")
        (run_dir / "last_checkpoint").write_text("model_0000000.pth")
    (run_dir / "metrics.json").write_text("\n".join(json.dumps(r) for r in rows) + "\n{\"iteration\": 3, \"tot")


def test_grid_product_and_names(sweep):
    grid = sweep.parse_grid_args(["model.aligner.dim_feedforward=64,128", "train.milestones=[0.5],[0.25,0.75]"])
    runs = sweep.grid_runs(grid)
    assert [o for _, o in runs] == [
        ["model.aligner.dim_feedforward=64", "train.milestones=[0.5]"],
        ["model.aligner.dim_feedforward=64", "train.milestones=[0.25,0.75]"],
        ["model.aligner.dim_feedforward=128", "train.milestones=[0.5]"],
        ["model.aligner.dim_feedforward=128", "train.milestones=[0.25,0.75]"],
    ]
    assert runs[0][0] == "dim_feedforward-64__milestones-_0.5_"
    assert len({n for n, _ in runs}) == 4
    with pytest.raises(ValueError, match="key=v1,v2"):
        sweep.parse_grid_args(["novalues"])


def test_predefined_tables_cover_the_paper_rows(sweep):
    assert [n for n, _ in sweep.TABLES["3"]] == ["baseline", "baseline_refined", "aligner", "aligner_trajectory"]
    assert sweep.TABLES["3"][0][1] == ["model.tracker.aligner=null", "model.tracker.global_pos=static"]
    assert [o[0] for _, o in sweep.TABLES["5"]] == [f"model.tracker.aligner.dim_feedforward={w}" for w in (512, 1024, 2048)]
    assert {o[0] for _, o in sweep.TABLES["6"]} == {
        "model.tracker.aligner.local_pos=static", "model.tracker.aligner.local_pos=dynamic",
        "model.criterion.reduced_supervision=true", "model.criterion.reduced_supervision=false"}


def test_grid_file(sweep, tmp_path):
    f = tmp_path / "g.yaml"
    f.write_text("grid:\n  optimizer.lr: [1.0e-4, 2.0e-4]\nruns:\n  nolign: [model.aligner=null]\n"
                 "overrides: [train.max_iter=3]\n")
    runs, common = sweep.load_grid_file(str(f))
    assert [n for n, _, _ in runs] == ["lr-0.0001", "lr-0.0002", "nolign"] and common == ["train.max_iter=3"]
    assert all(c is None for _, _, c in runs)
    rows = tmp_path / "rows.yaml"
    rows.write_text("runs:\n  minvis: {config: configs/trackers/minvis_tiny_synthetic.py}\n"
                    "  prop: {config: configs/local2global_tiny_synthetic.py, overrides: [model.tracker.aligner=null]}\n")
    runs, _ = sweep.load_grid_file(str(rows))
    assert runs == [("minvis", [], "configs/trackers/minvis_tiny_synthetic.py"),
                    ("prop", ["model.tracker.aligner=null"], "configs/local2global_tiny_synthetic.py")]
    typo = tmp_path / "typo.yaml"
    typo.write_text("runs:\n  a: {cfg: x.py}\n")
    with pytest.raises(ValueError, match="unknown keys"):
        sweep.load_grid_file(str(typo))
    bad = tmp_path / "bad.yaml"
    bad.write_text("grdi: {a: [1]}\n")
    with pytest.raises(ValueError, match="grid"):
        sweep.load_grid_file(str(bad))


def test_finished_marker_and_final_metrics(sweep, tmp_path):
    fake_run(tmp_path / "a", 12.5)
    fake_run(tmp_path / "b", 0.0, finished=False)
    assert sweep.is_finished(str(tmp_path / "a")) and not sweep.is_finished(str(tmp_path / "b"))
    assert sweep.read_final_metrics(str(tmp_path / "a")) == {"segm/AP": 12.5, "segm/AP50": 22.5, "segm/AR10": 13.5}
    assert sweep.read_final_metrics(str(tmp_path / "b")) is None


def test_main_skips_finished_runs_and_reports(sweep, tmp_path, monkeypatch):
    pytest.importorskip("local2global.modeling.segmenter.decoder")
    pytest.importorskip("local2global.data.build")
    out = tmp_path / "sw"
    fake_run(out / "dim_feedforward-64", 31.25)
    calls = []

    def fake_run_one(args, name, overrides, common, config_file=None, eval_only=False):
        calls.append((name, overrides, common))
        fake_run(out / name, 7.5)
        return 0

    monkeypatch.setattr(sweep, "run_one", fake_run_one)
    rc = sweep.main(["--grid", "model.aligner.dim_feedforward=64,96", "--config-file",
                     "configs/local2global_tiny_synthetic.py", "--out", str(out), "train.max_iter=2"])
    assert rc == 0
    # the run named like the finished folder is skipped; the other one runs with the common override
    assert calls == [("dim_feedforward-96", ["model.aligner.dim_feedforward=96"], ["train.max_iter=2"])]
    md = (out / "results.md").read_text()
    assert "| dim_feedforward-96 | `model.aligner.dim_feedforward=96` | 7.5 | 17.5 | 8.5 | ok |" in md
    assert "| dim_feedforward-64 | `model.aligner.dim_feedforward=64` | 31.2 | 41.2 | 32.2 | skipped (done) |" in md
    rows = json.loads((out / "results.json").read_text())
    assert [r["run"] for r in rows] == ["dim_feedforward-64", "dim_feedforward-96"]
    png = (out / "results.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 1000


def test_main_rejects_bad_override_before_running(sweep, tmp_path, monkeypatch):
    pytest.importorskip("local2global.modeling.segmenter.decoder")
    pytest.importorskip("local2global.data.build")
    monkeypatch.setattr(sweep, "run_one", lambda *a: pytest.fail("must not run"))
    with pytest.raises(SystemExit, match="dim_feedfoward"):
        sweep.main(["--grid", "model.aligner.dim_feedfoward=64", "--config-file",
                    "configs/local2global_tiny_synthetic.py", "--out", str(tmp_path)])


def test_config_file_rows_and_training_free_rows_are_evaluated_only(sweep, tmp_path, monkeypatch):
    """--configs: one row per file; a training-free config (train.eval_only=True: MinVIS) runs --eval-only."""
    pytest.importorskip("local2global.modeling.segmenter.decoder")
    out = tmp_path / "trackers"
    calls = []

    def fake_run_one(args, name, overrides, common, config_file=None, eval_only=False):
        calls.append((name, config_file, eval_only))
        (out / name).mkdir(parents=True, exist_ok=True)
        (out / name / "eval_results.json").write_text(json.dumps({"segm": {"AP": 3.0 if eval_only else 4.0}}))
        if not eval_only:
            fake_run(out / name, 4.0)
        return 0

    monkeypatch.setattr(sweep, "run_one", fake_run_one)
    cfgs = ["configs/trackers/minvis_tiny_synthetic.py", "configs/local2global_tiny_synthetic.py"]
    assert sweep.main(["--configs", *cfgs, "--out", str(out), "train.device=cpu"]) == 0
    assert calls == [("minvis_tiny_synthetic", cfgs[0], True), ("local2global_tiny_synthetic", cfgs[1], False)]
    md = (out / "results.md").read_text()
    assert "| minvis_tiny_synthetic | `configs/trackers/minvis_tiny_synthetic.py` | - | 3.0 |" in md
    calls.clear()
    assert sweep.main(["--configs", *cfgs, "--out", str(out), "train.device=cpu"]) == 0
    assert calls == []  # both finished: the eval-only row by its eval_results.json
    with pytest.raises(SystemExit, match="no such file"):
        sweep.main(["--configs", "configs/nope.py", "--out", str(out)])


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_real_two_run_grid_on_the_tiny_config(sweep, tmp_path, monkeypatch, tiny_synthetic_root):
    pytest.importorskip("local2global.modeling.segmenter.decoder")
    pytest.importorskip("local2global.data.build")
    monkeypatch.setenv("L2G_SYNTHETIC_ROOT", str(tiny_synthetic_root))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    out = tmp_path / "sweep"
    argv = ["--grid", "model.criterion.reduced_supervision=true,false", "--config-file",
            "configs/local2global_tiny_synthetic.py", "--out", str(out), "train.max_iter=1", "train.device=cpu",
            "dataloader.train.total_batch_size=1"]
    assert sweep.main(argv) == 0
    for name in ("reduced_supervision-true", "reduced_supervision-false"):
        assert sweep.is_finished(str(out / name))
    md = (out / "results.md").read_text()
    assert md.count("| ok |") == 2 and (out / "results.png").is_file()
    mtime = os.path.getmtime(out / "reduced_supervision-true" / "model_final.pth")
    assert sweep.main(argv) == 0  # second call: both skipped
    assert os.path.getmtime(out / "reduced_supervision-true" / "model_final.pth") == mtime
    assert (out / "results.md").read_text().count("skipped (done)") == 2


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_real_tracker_table_whose_rows_are_config_files(sweep, tmp_path, monkeypatch, tiny_synthetic_root):
    """A tracker table on the tiny synthetic data: MinVIS (training-free: evaluated) and two trained trackers."""
    pytest.importorskip("local2global.modeling.segmenter.decoder")
    monkeypatch.setenv("L2G_SYNTHETIC_ROOT", str(tiny_synthetic_root))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    out = tmp_path / "trackers"
    cfgs = ["configs/trackers/minvis_tiny_synthetic.py", "configs/local2global_tiny_synthetic.py",
            "configs/trackers/inspro_tiny_synthetic.py"]
    argv = ["--configs", *cfgs, "--out", str(out), "train.max_iter=1", "train.device=cpu",
            "dataloader.train.total_batch_size=1"]
    assert sweep.main(argv) == 0
    assert (out / "minvis_tiny_synthetic" / "eval_results.json").is_file()
    assert not (out / "minvis_tiny_synthetic" / "model_final.pth").exists()  # nothing was trained
    assert sweep.is_finished(str(out / "local2global_tiny_synthetic"))
    assert sweep.is_finished(str(out / "inspro_tiny_synthetic"))
    md = (out / "results.md").read_text()
    assert md.count("| ok |") == 3 and "`configs/trackers/inspro_tiny_synthetic.py`" in md
