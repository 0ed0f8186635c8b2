"""Reliability of training (issue 6): SIGKILL + ``--resume`` reproduces an uninterrupted run exactly, a kill while
saving leaves the previous checkpoint loadable, a non-finite loss stops with the iteration and term and leaves
the last good checkpoint intact, 2-process CPU (gloo) training matches 1 process with the same total batch, and
a crashed worker ends the whole job with a non-zero status.

Faults are injected with the ``L2G_FAULT_*`` environment variables of ``tests/tools/fault_injection.py`` (through
the trainer's public extension points; ``script_runner`` then runs ``tests/tools/train_net_with_faults.py``).
"""

import json
import os
import time

import pytest
import torch
from script_runner import run_script

pytestmark = [pytest.mark.timeout(600), pytest.mark.slow]

CONFIG = "configs/local2global_tiny_synthetic.py"
# 6 iterations of 2 clips, a checkpoint after iterations 1, 3 and 5, no evaluation (faster; losses compared)
RUN = ["train.device=cpu", "dataloader.train.total_batch_size=2", "train.log_period=1", "train.seed=0",
       "train.max_iter=6", "train.checkpointer.period=2", "train.checkpointer.max_to_keep=10",
       "dataloader.evaluator=null"]
NONDETERMINISTIC = {"time", "data_time", "rank_data_time", "eta_seconds"}


@pytest.fixture(scope="module")
def synthetic_root(tiny_synthetic_root):
    pytest.importorskip("local2global.modeling.segmenter.decoder")
    return tiny_synthetic_root


def train_net(args, root, faults=None, timeout=300):
    return run_script("train_net.py", ["--config-file", CONFIG] + list(args), root, faults, timeout)


def ok(proc):
    assert proc.returncode == 0, proc.stdout[-5000:]
    return proc


def loss_rows(out):
    """The last metrics row of every iteration (a resumed run appends rows for iterations it repeats)."""
    rows = {}
    with open(os.path.join(out, "metrics.json")) as f:
        for line in f:
            r = json.loads(line)
            if "total_loss" in r:
                rows[r["iteration"]] = {k: v for k, v in r.items() if k not in NONDETERMINISTIC}
    return rows


def weights(path):
    return torch.load(path, map_location="cpu", weights_only=False)


def assert_same_weights(a, b, atol=0.0):
    wa, wb = weights(a)["model"], weights(b)["model"]
    assert wa.keys() == wb.keys()
    worst = max(float((wa[k].float() - wb[k].float()).abs().max()) for k in wa if wa[k].numel())
    assert worst <= atol, f"max weight difference {worst} > {atol}"
    return worst


@pytest.fixture(scope="module")
def reference(synthetic_root, tmp_path_factory):
    """The uninterrupted run."""
    out = tmp_path_factory.mktemp("ref")
    ok(train_net(RUN + [f"train.output_dir={out}"], synthetic_root))
    return out


def test_sigkill_and_resume_reproduce_the_uninterrupted_run(synthetic_root, reference, tmp_path):
    out = tmp_path / "killed"
    proc = train_net(RUN + [f"train.output_dir={out}"], synthetic_root, {"L2G_FAULT_KILL_AT_ITER": "3"})
    assert proc.returncode == -9, proc.stdout[-3000:]
    assert (out / "last_checkpoint").read_text() == "model_0000003.pth"
    assert not (out / "model_final.pth").exists()
    ok(train_net(["--resume"] + RUN + [f"train.output_dir={out}"], synthetic_root))
    assert "continuing the sample stream at iteration 4" in (out / "log.txt").read_text()
    # same weights bit for bit (same data, same random draws, same lr schedule, same optimizer state) ...
    assert_same_weights(reference / "model_final.pth", out / "model_final.pth", atol=0.0)
    # ... and the same metrics, the smoothed ones included (their window is restored from the checkpoint)
    ref, got = loss_rows(reference), loss_rows(out)
    assert sorted(got) == list(range(6))
    for it in range(6):
        assert got[it] == pytest.approx(ref[it], rel=1e-6, abs=1e-7), it


def test_kill_during_save_leaves_the_previous_checkpoint(synthetic_root, reference, tmp_path):
    out = tmp_path / "killed_saving"
    # the 2nd save (after iteration 3) is cut in half, then the process is killed
    proc = train_net(RUN + [f"train.output_dir={out}"], synthetic_root, {"L2G_FAULT_KILL_DURING_SAVE": "2"})
    assert proc.returncode == -9, proc.stdout[-3000:]
    assert (out / "last_checkpoint").read_text() == "model_0000001.pth"
    assert not (out / "model_0000003.pth").exists()
    assert [p for p in out.iterdir() if p.name.endswith(".tmp")], "the half-written temporary file is expected"
    ck = weights(out / "model_0000001.pth")
    assert ck["iteration"] == 1
    assert_same_weights(reference / "model_0000001.pth", out / "model_0000001.pth", atol=0.0)
    ok(train_net(["--resume"] + RUN + [f"train.output_dir={out}"], synthetic_root))
    assert_same_weights(reference / "model_final.pth", out / "model_final.pth", atol=0.0)


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(synthetic_root, reference, tmp_path):
    out = tmp_path / "nan"
    proc = train_net(RUN + [f"train.output_dir={out}"], synthetic_root,
                     {"L2G_FAULT_NAN_AT_ITER": "4", "L2G_FAULT_NAN_TERM": "loss_dice"})
    assert proc.returncode != 0
    assert "FloatingPointError: Loss became non-finite at iteration 4" in proc.stdout
    assert "loss_dice=nan" in proc.stdout
    assert (out / "last_checkpoint").read_text() == "model_0000003.pth"
    assert not (out / "model_final.pth").exists()
    ck = weights(out / "model_0000003.pth")
    assert all(torch.isfinite(v).all() for v in ck["model"].values() if v.is_floating_point())
    assert_same_weights(reference / "model_0000003.pth", out / "model_0000003.pth", atol=0.0)
    # training stopped before the optimizer step of iteration 4: no metrics row for it
    assert max(loss_rows(out)) == 3


def test_two_processes_match_one_process(synthetic_root, reference, tmp_path):
    """Same total batch (2): the data are identical (each sample's randomness is keyed by its stream position);
    the model's own random draws (mask point sampling, denoising noise) come from per-rank generators, so losses
    agree to 3% and weights to 5e-3, not bit for bit."""
    out = tmp_path / "ddp"
    ok(train_net(["--num-gpus", "2"] + RUN + [f"train.output_dir={out}"], synthetic_root))
    ref, got = loss_rows(reference), loss_rows(out)
    assert sorted(got) == list(range(6))
    for it in range(6):
        assert got[it]["total_loss"] == pytest.approx(ref[it]["total_loss"], rel=0.03), it
        assert got[it]["lr"] == ref[it]["lr"]
    assert_same_weights(reference / "model_final.pth", out / "model_final.pth", atol=5e-3)


def test_two_process_image_mode_warm_up_freezes_the_unused_tracker(synthetic_root, tmp_path):
    """1-frame clips (the demo's and the tracking benchmark's warm-up) with the aligner present: its parameters
    get no gradient, so DDP with find_unused_parameters=False would stop at the first step; the trainer freezes
    them (engine/freeze.py) and the 2-process warm-up trains, leaving the tracker's weights as initialised."""
    out = tmp_path / "ddp_warmup"
    args = ["--num-gpus", "2"] + RUN + ["train.max_iter=4", "dataloader.train.mapper.num_frames=1",
                                        f"train.output_dir={out}"]
    proc = ok(train_net(args, synthetic_root))
    assert "take no part and are frozen" in proc.stdout
    assert sorted(loss_rows(out)) == [0, 1, 2, 3]
    final = weights(out / "model_final.pth")["model"]
    first = weights(out / "model_0000001.pth")["model"]
    tracker = [k for k in final if k.startswith("tracker.")]
    assert tracker and all(torch.equal(final[k], first[k]) for k in tracker)
    assert any(not torch.equal(final[k], first[k]) for k in final if k.startswith("decoder."))


@pytest.mark.parametrize("fault", [{"L2G_FAULT_RAISE_AT_ITER": "2"}, {"L2G_FAULT_KILL_AT_ITER": "1"}],
                         ids=["raises", "sigkill"])
def test_crashed_worker_ends_the_job(synthetic_root, tmp_path, fault):
    out = tmp_path / "crash"
    start = time.monotonic()
    proc = train_net(["--num-gpus", "2"] + RUN + ["train.max_iter=50", f"train.output_dir={out}"], synthetic_root,
                     dict(fault, L2G_FAULT_RANK="1"), timeout=180)
    assert proc.returncode != 0
    assert time.monotonic() - start < 150
    if "L2G_FAULT_RAISE_AT_ITER" in fault:
        assert "worker of rank 1 crashed at iteration 2" in proc.stdout
    else:
        assert "exited with exit code -9" in proc.stdout or "SIGKILL" in proc.stdout, proc.stdout[-3000:]
