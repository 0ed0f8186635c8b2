"""Bad input at the boundaries and interrupted outputs (issue 6).

* config files with unknown keys or wrong types: ``check_config`` rejects them naming every key, before anything
  is written to ``train.output_dir``;
* checkpoints of another architecture: ``Local2GlobalCheckpointer`` raises ``CheckpointMismatchError`` listing keys
  and shapes when nothing fits or most shared keys have other shapes; a few mismatches (a new class head) load
  around them with a warning that lists them;
* prediction files from another dataset and dataset paths that do not exist: errors naming the video id / path;
* none of these failures changes an existing output folder (``config.yaml`` is put back);
* evaluation and the demo killed (SIGKILL) while writing leave the previous results intact, never a truncated
  file, and re-running gives the same results.
"""

import hashlib
import json
import logging
import os
import textwrap
from pathlib import Path

import pytest
import torch
from script_runner import run_script as run

pytestmark = pytest.mark.timeout(400)

REPO = Path(__file__).resolve().parents[1]
CONFIG = "configs/local2global_tiny_synthetic.py"

# os.replace onto a file named $L2G_TEST_KILL_AT_REPLACE SIGKILLs the process (the write is complete in the
# temporary file, the rename has not happened: the worst moment for a non-atomic writer)
SITECUSTOMIZE = textwrap.dedent('''
    import os, signal
    _target = os.environ.get("L2G_TEST_KILL_AT_REPLACE")
    if _target:
        _replace = os.replace
        def _killing_replace(src, dst, *a, **k):
            if os.path.basename(os.fspath(dst)) == _target:
                os.kill(os.getpid(), signal.SIGKILL)
            return _replace(src, dst, *a, **k)
        os.replace = _killing_replace
''')


@pytest.fixture(scope="module")
def synthetic_root(tiny_synthetic_root):
    pytest.importorskip("local2global.modeling.segmenter.decoder")
    return tiny_synthetic_root


def snapshot(folder):
    """{relative path: sha1} of every file except log.txt (which a failed run may append to)."""
    out = {}
    for p in sorted(Path(folder).rglob("*")):
        if p.is_file() and p.name != "log.txt":
            out[str(p.relative_to(folder))] = hashlib.sha1(p.read_bytes()).hexdigest()
    return out


@pytest.fixture
def existing_output(tmp_path):
    """An output folder of an earlier run (its files must survive a failing run)."""
    out = tmp_path / "previous_run"
    out.mkdir()
    (out / "config.yaml").write_text("train:\n  max_iter: 7\n")
    torch.save({"model": {"w": torch.ones(2)}, "iteration": 6}, out / "model_final.pth")
    (out / "last_checkpoint").write_text("model_final.pth")
    (out / "metrics.json").write_text('{"iteration": 6, "total_loss": 1.0}\n')
    (out / "eval_results.json").write_text('{"segm": {"AP": 1.0}}')
    return out


def tiny_model():
    from detectron2.config import LazyConfig, instantiate

    torch.manual_seed(0)
    return instantiate(LazyConfig.load(str(REPO / CONFIG)).model)


# ------------------------------------------------------------------------------------------------ configs
def test_check_config_names_unknown_keys_and_wrong_types():
    from detectron2.config import LazyConfig

    from local2global.engine.overrides import ConfigError, check_config

    cfg = LazyConfig.load(str(REPO / CONFIG))
    check_config(cfg)  # the shipped recipe is clean
    cfg.model.num_querys = 10
    cfg.dataloader.train.mapper.num_frame = 3
    cfg.train.max_iters = 5
    cfg.train.max_iter = "abc"
    cfg.train.checkpointer.period = 1.5
    with pytest.raises(ConfigError) as e:
        check_config(cfg, "my.py")
    msg = str(e.value)
    assert msg.startswith("my.py: ")
    assert "unknown key 'model.num_querys': Local2Global has no parameter 'num_querys'" in msg
    assert "Did you mean: model.num_queries?" in msg
    assert "unknown key 'dataloader.train.mapper.num_frame'" in msg and "dataloader.train.mapper.num_frames" in msg
    assert "unknown key 'train.max_iters'" in msg and "Did you mean: train.max_iter?" in msg
    assert "'train.max_iter' must be int, got str 'abc'" in msg
    assert "'train.checkpointer.period' must be int, got float 1.5" in msg


def test_every_shipped_config_passes_check_config():
    from detectron2.config import LazyConfig

    from local2global.engine.overrides import check_config

    files = sorted((REPO / "configs").glob("*.py")) + sorted((REPO / "configs" / "ablations").glob("*.py"))
    assert len(files) >= 6
    for f in files:
        check_config(LazyConfig.load(str(f)), str(f))


def test_bad_config_file_fails_before_touching_the_output_folder(synthetic_root, existing_output, tmp_path):
    bad = tmp_path / "bad_config.py"
    bad.write_text(textwrap.dedent(f'''
        from detectron2.config import LazyConfig
        _c = LazyConfig.load({str(REPO / CONFIG)!r})
        model, dataloader, optimizer, lr_multiplier, train = _c.model, _c.dataloader, _c.optimizer, \\
            _c.lr_multiplier, _c.train
        train.max_iters = 5
        train.log_period = "often"
    '''))
    before = snapshot(existing_output)
    proc = run("train_net.py", ["--config-file", str(bad), "train.device=cpu",
                                f"train.output_dir={existing_output}"], synthetic_root, timeout=120)
    assert proc.returncode != 0
    assert "unknown key 'train.max_iters'" in proc.stdout and "'train.log_period' must be int" in proc.stdout
    assert "Traceback" not in proc.stdout
    assert snapshot(existing_output) == before and not (existing_output / "log.txt").exists()


# -------------------------------------------------------------------------------------------- checkpoints
def test_checkpoint_of_another_architecture_is_reported(tmp_path, caplog):
    pytest.importorskip("local2global.modeling.segmenter.decoder")
    from local2global.modeling.checkpoint import CheckpointMismatchError, Local2GlobalCheckpointer

    model = tiny_model()
    state = {k: v.clone() for k, v in model.state_dict().items()}

    other = tmp_path / "resnet.pth"
    torch.save({"model": {"fc.weight": torch.zeros(10, 5), "conv1.weight": torch.zeros(3, 3)}}, other)
    with pytest.raises(CheckpointMismatchError, match=r"resnet\.pth.*none of its \d+ parameters.*fc\.weight"):
        Local2GlobalCheckpointer(tiny_model()).load(str(other))

    wider = tmp_path / "wider.pth"
    # the same layout, another width: every tensor but the backbone stem's has another shape
    torch.save({"model": {k: v if (v.ndim == 0 or k.startswith("backbone.stem."))
                          else torch.zeros((v.shape[0] + 1,) + tuple(v.shape[1:])) for k, v in state.items()}}, wider)
    with pytest.raises(CheckpointMismatchError, match=r"wider\.pth' is of another architecture: \d+ of the \d+ "
                       r"parameters.*in the checkpoint, .* in the model"):
        Local2GlobalCheckpointer(tiny_model()).load(str(wider))

    # a new class head only (fine-tuning on another vocabulary): loads the rest, warns with the list
    head = "decoder.class_embed.weight"
    assert head in state
    new_vocab = dict(state, **{head: torch.zeros(7, state[head].shape[1])})
    new_vocab.pop("decoder.class_embed.bias", None)
    path = tmp_path / "other_vocab.pth"
    torch.save({"model": new_vocab}, path)
    target = tiny_model()
    with caplog.at_level(logging.WARNING, logger="local2global.modeling.checkpoint"):
        Local2GlobalCheckpointer(target).load(str(path))
    assert any("1 parameter(s) not loaded because of shape mismatches" in r.getMessage()
               and head in r.getMessage() for r in caplog.records)
    loaded = target.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in state.items() if not k.startswith("decoder.class_embed"))


def test_init_checkpoint_of_another_model_fails_and_keeps_the_folder(synthetic_root, existing_output, tmp_path):
    other = tmp_path / "resnet.pth"
    torch.save({"model": {"fc.weight": torch.zeros(10, 5)}}, other)
    before = snapshot(existing_output)
    proc = run("train_net.py", ["--config-file", CONFIG, "train.device=cpu", "train.max_iter=2",
                                f"train.init_checkpoint={other}", f"train.output_dir={existing_output}"],
               synthetic_root, timeout=200)
    assert proc.returncode != 0
    assert "CheckpointMismatchError" in proc.stdout and "resnet.pth' does not fit this model" in proc.stdout
    assert snapshot(existing_output) == before
    assert "restored the previous" in proc.stdout


# ---------------------------------------------------------------------------------- datasets, predictions
def test_dataset_paths_that_do_not_exist(synthetic_root, existing_output, tmp_path):
    missing = tmp_path / "no_such_datasets"
    before = snapshot(existing_output)
    proc = run("train_net.py", ["--config-file", CONFIG, "train.device=cpu", "train.max_iter=2",
                                "dataloader.train.dataset.names=ytvis_2019_train",
                                f"train.output_dir={existing_output}"], synthetic_root,
               {"DETECTRON2_DATASETS": str(missing)}, timeout=200)
    assert proc.returncode != 0
    assert "FileNotFoundError" in proc.stdout and str(missing) in proc.stdout and "does not exist" in proc.stdout
    assert snapshot(existing_output) == before

    from local2global.data.build import get_video_dicts
    from local2global.data.ytvis import load_ytvis_json

    with pytest.raises(FileNotFoundError, match=r"annotation file '.*nope\.json' of dataset mine does not exist"):
        load_ytvis_json(str(tmp_path / "nope.json"), str(tmp_path), dataset_name="mine")
    with pytest.raises(KeyError, match="not_a_dataset"):
        get_video_dicts("not_a_dataset")


def test_prediction_file_from_another_dataset(synthetic_root, tmp_path):
    from local2global.evaluation.results_io import YTVISFormatError
    from local2global.evaluation.ytvis import evaluate_ytvis

    gt_path = synthetic_root / "valid.json"
    gt = json.loads(gt_path.read_text())
    vid = gt["videos"][0]
    seg = [None] * vid["length"]
    good = [{"video_id": vid["id"], "category_id": gt["categories"][0]["id"], "score": 0.5, "segmentations": seg}]
    evaluate_ytvis(str(gt_path), good)  # accepted
    foreign = tmp_path / "ovis_results.json"
    foreign.write_text(json.dumps([dict(good[0], video_id=424242)]))
    with pytest.raises(YTVISFormatError, match=r"ovis_results\.json.*video_id 424242.*not in the ground truth"):
        evaluate_ytvis(str(gt_path), str(foreign))


# ------------------------------------------------------------------------------------- interrupted outputs
@pytest.mark.slow
def test_evaluation_killed_while_writing_leaves_no_truncated_results(synthetic_root, tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    out = tmp_path / "eval"
    args = ["--config-file", CONFIG, "--eval-only", "train.device=cpu", f"train.output_dir={out}"]
    pypath = {"PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    first = run("train_net.py", args, synthetic_root)
    assert first.returncode == 0, first.stdout[-3000:]
    files = snapshot(out)
    assert "inference/results.json" in files and "eval_results.json" in files
    first_eval = json.loads((out / "eval_results.json").read_text())
    for target in ("results.json", "eval_results.json"):
        killed = run("train_net.py", args, synthetic_root, dict(pypath, L2G_TEST_KILL_AT_REPLACE=target))
        assert killed.returncode == -9, killed.stdout[-3000:]
        now = snapshot(out)
        assert {k: v for k, v in now.items() if not k.endswith(".tmp") and "/." not in "/" + k} == files
        for p in out.rglob("*.json"):
            json.loads(p.read_text())  # nothing truncated under a final name
    again = run("train_net.py", args, synthetic_root)
    assert again.returncode == 0
    assert json.loads((out / "eval_results.json").read_text()) == first_eval
    assert snapshot(out)["inference/results.json"] == files["inference/results.json"]


@pytest.mark.slow
def test_demo_killed_while_writing_leaves_no_truncated_results(synthetic_root, tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    frames = sorted((synthetic_root / "valid" / "JPEGImages").iterdir())[0]
    out = tmp_path / "demo"
    weights = tmp_path / "tiny.pth"  # fixed weights: without a checkpoint the demo's model is randomly initialised
    torch.save({"model": tiny_model().state_dict()}, weights)
    args = ["--config-file", CONFIG, "--input", str(frames), "--output", str(out), "--no-gif", "train.device=cpu",
            f"train.init_checkpoint={weights}"]
    first = run("demo.py", args, synthetic_root)
    assert first.returncode == 0, first.stdout[-3000:]
    files = snapshot(out)
    reference = json.loads((out / "results.json").read_text())
    assert reference and "video.mp4" in files
    killed = run("demo.py", args, synthetic_root, {"PYTHONPATH": str(site), "L2G_TEST_KILL_AT_REPLACE": "results.json"})
    assert killed.returncode == -9, killed.stdout[-3000:]
    assert json.loads((out / "results.json").read_text()) == reference
    again = run("demo.py", args, synthetic_root)
    assert again.returncode == 0
    assert json.loads((out / "results.json").read_text()) == reference
    assert snapshot(out)["results.json"] == files["results.json"]
