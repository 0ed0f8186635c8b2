"""scripts/train_net.py end to end on the tiny model and a small synthetic dataset: training, --resume,
--eval-only, a 2-process CPU DDP run, and its command-line errors.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from script_runner import run_script

pytestmark = pytest.mark.timeout(900)

REPO = Path(__file__).resolve().parents[1]
CONFIG = "configs/local2global_tiny_synthetic.py"
SMALL = ["train.device=cpu", "dataloader.train.total_batch_size=1", "train.log_period=1", "train.seed=0"]


def _need_model_and_data():
    pytest.importorskip("local2global.modeling.segmenter.decoder", reason="the model code is not importable yet")
    pytest.importorskip("local2global.data.build", reason="the data code is not importable yet")


@pytest.fixture(scope="module")
def synthetic_root(tiny_synthetic_root):
    _need_model_and_data()
    return tiny_synthetic_root


def train_net(args, synthetic_root, check=True, timeout=800):
    proc = run_script("train_net.py", args, synthetic_root, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"train_net.py exited {proc.returncode}:\n{proc.stdout[-6000:]}")
    return proc


def metrics(out):
    with open(os.path.join(out, "metrics.json")) as f:
        return [json.loads(line) for line in f if line.strip()]


def test_unknown_override_is_rejected(tmp_path):
    _need_model_and_data()
    proc = train_net(["--config-file", CONFIG, "train.max_iters=1", f"train.output_dir={tmp_path}"], tmp_path / "s",
                     check=False, timeout=300)
    assert proc.returncode != 0
    assert "no key 'max_iters'" in proc.stdout and "Did you mean: train.max_iter" in proc.stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised without CUDA")
def test_cuda_requested_without_cuda(tmp_path):
    _need_model_and_data()
    proc = train_net(["--config-file", CONFIG, "train.device=cuda", f"train.output_dir={tmp_path}"], tmp_path / "s",
                     check=False, timeout=300)
    assert proc.returncode != 0 and "CUDA is not available" in proc.stdout and "train.device=cpu" in proc.stdout


@pytest.mark.slow
def test_train_resume_and_eval_only(tmp_path, synthetic_root):
    out = tmp_path / "run"
    train_net(["--config-file", CONFIG, *SMALL, "train.max_iter=2", "train.checkpointer.period=1",
               f"train.output_dir={out}"], synthetic_root)
    assert {"config.yaml", "log.txt", "metrics.json", "model_final.pth", "last_checkpoint"} <= set(os.listdir(out))
    rows = metrics(out)
    assert [r["iteration"] for r in rows if "total_loss" in r] == [0, 1]
    assert all(torch.isfinite(torch.tensor(r["total_loss"])) for r in rows if "total_loss" in r)
    assert "segm/AP" in rows[-1] and (out / "inference" / "results.json").is_file()
    assert any(f.name.startswith("events.out.tfevents") for f in out.iterdir())

    # --resume continues after the stored iteration with the schedule of the new max_iter
    train_net(["--config-file", CONFIG, "--resume", *SMALL, "train.max_iter=3", f"train.output_dir={out}"],
              synthetic_root)
    rows2 = metrics(out)[len(rows):]
    assert [r["iteration"] for r in rows2 if "total_loss" in r] == [2]
    assert torch.load(out / "model_final.pth", weights_only=False)["iteration"] == 2
    final_ap = [r for r in rows2 if "segm/AP" in r][-1]

    # --eval-only on the saved weights reproduces the final evaluation
    ev = tmp_path / "eval"
    train_net(["--config-file", CONFIG, "--eval-only", "train.device=cpu", f"train.output_dir={ev}",
               f"train.init_checkpoint={out / 'model_final.pth'}"], synthetic_root)
    res = json.load(open(ev / "eval_results.json"))
    for k in ("AP", "AP50", "AR10"):
        a, b = res["segm"][k], final_ap[f"segm/{k}"]
        assert (a != a and b != b) or a == pytest.approx(b, abs=1e-6)
    assert (ev / "inference" / "results.json").is_file()


@pytest.mark.slow
def test_two_process_cpu_ddp(tmp_path, synthetic_root):
    out = tmp_path / "ddp"
    proc = train_net(["--config-file", CONFIG, "--num-gpus", "2", "train.device=cpu",
                      "dataloader.train.total_batch_size=2", "train.max_iter=2", "train.log_period=1",
                      f"train.output_dir={out}"], synthetic_root)
    log = (out / "log.txt").read_text()
    assert "World size: 2" in log
    rows = metrics(out)
    assert [r["iteration"] for r in rows if "total_loss" in r] == [0, 1] and "segm/AP" in rows[-1]
    assert "Traceback" not in proc.stdout


#: Stand-in for detectron2's tools/lazyconfig_train_net.py (the installed detectron2 has no tools/ folder).
D2_TOOL_STANDIN = REPO / "tests" / "tools" / "lazyconfig_train_net_standin.py"


@pytest.mark.slow
def test_runs_under_detectron2_lazyconfig_train_net(tmp_path, synthetic_root):
    """The same config under detectron2's ``tools/lazyconfig_train_net.py``: ``$L2G_D2_LAZYCONFIG_TOOL`` (a copy of
    the real tool) when set, else the stand-in that does the same through detectron2's public API. Nothing but the
    installed package is on the path (no ``PYTHONPATH``, no copy of the repository into a detrex checkout)."""
    tool = os.environ.get("L2G_D2_LAZYCONFIG_TOOL") or str(D2_TOOL_STANDIN)
    assert os.path.isfile(tool), tool
    out = tmp_path / "d2tool"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(OMP_NUM_THREADS="1", L2G_SYNTHETIC_ROOT=str(synthetic_root))
    # no train.device override: the config's ${l2g_device:} picks the CPU by itself; run from another folder, with
    # the config given by its path, as from a detrex checkout
    proc = subprocess.run([sys.executable, tool, "--config-file", str(REPO / CONFIG), "train.max_iter=2",
                           "train.log_period=1", "dataloader.train.total_batch_size=1", f"train.output_dir={out}"],
                          cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=800)
    assert proc.returncode == 0, proc.stdout[-6000:]
    rows = metrics(out)
    assert [r["iteration"] for r in rows if "total_loss" in r] == [0, 1] and "segm/AP" in rows[-1]
    assert (out / "model_final.pth").is_file() and (out / "inference" / "results.json").is_file()
