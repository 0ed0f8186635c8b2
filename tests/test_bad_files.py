"""Bad files at the command line end in one line that names the file: junk / truncated / missing checkpoints
(``Local2GlobalCheckpointer.load``, ``train_net.py``), missing or unreadable demo inputs (``scripts/demo.py``),
a missing config file; ``L2G_DEBUG=1`` shows the traceback instead.
"""

import os
import random

import pytest
import torch
from script_runner import run_script
from torch import nn

from local2global.modeling.checkpoint import CheckpointFileError, Local2GlobalCheckpointer

pytestmark = pytest.mark.timeout(600)

CONFIG = "configs/local2global_tiny_synthetic.py"
#: Number of random bytes of the junk checkpoint.
JUNK_BYTES = 4096


def _files(tmp_path):
    """name -> path of the bad checkpoints: random bytes, a text file, a truncated .pth, a pickled list, junk .pkl."""
    model = nn.Linear(3, 4)
    good = tmp_path / "good.pth"
    torch.save({"model": model.state_dict()}, good)
    data = good.read_bytes()
    files = {
        "random.pth": random.Random(0).randbytes(JUNK_BYTES),  # seeded: the same junk on every run
        "notes.pth": b"hello, this is a text file\n",
        "truncated.pth": data[: len(data) // 2],
        "random.pkl": random.Random(1).randbytes(JUNK_BYTES),
        # a pickle whose first opcode asks for 2**40 bytes: MemoryError inside the unpickler (seen with random junk)
        "huge.pkl": b"\x80\x04\x8e" + (1 << 40).to_bytes(8, "little") + bytes(64),
    }
    for name, content in files.items():
        (tmp_path / name).write_bytes(content)
    torch.save([1, 2, 3], tmp_path / "list.pth")
    return model, good


@pytest.mark.parametrize("name, what", [
    ("random.pth", f"({JUNK_BYTES} bytes) cannot be read"),
    ("notes.pth", "cannot be read: it is not a torch.save / detectron2 .pkl checkpoint"),
    ("truncated.pth", "PytorchStreamReader failed reading zip archive"),
    ("random.pkl", "cannot be read"),
    ("huge.pkl", "asked for more memory than the machine has"),
    ("list.pth", "holds a list, not a state dict"),
    ("missing.pth", "does not exist"),
])
def test_checkpointer_names_the_bad_file(tmp_path, name, what):
    model, good = _files(tmp_path)
    path = str(tmp_path / name)
    with pytest.raises(CheckpointFileError) as info:
        Local2GlobalCheckpointer(model).load(path)
    msg = str(info.value)
    assert msg.startswith(f"checkpoint {path!r}") and what in msg, msg
    assert "\n" not in msg and "weights_only" not in msg  # one line, no torch advice that does not apply
    # a good file next to them still loads
    Local2GlobalCheckpointer(model).load(str(good))


def test_checkpointer_names_a_folder(tmp_path):
    with pytest.raises(CheckpointFileError, match=r"is a folder, not a file"):
        Local2GlobalCheckpointer(nn.Linear(3, 4)).load(str(tmp_path))


def test_train_net_junk_checkpoint_is_one_line_and_exit_2(tmp_path):
    pytest.importorskip("local2global.data.build")
    junk = tmp_path / "notes.pth"
    junk.write_text("not a checkpoint\n")
    args = ["--config-file", CONFIG, "--eval-only", "train.device=cpu", f"train.output_dir={tmp_path / 'out'}",
            f"train.init_checkpoint={junk}"]
    proc = run_script("train_net.py", args, tmp_path / "syn", timeout=300)
    assert proc.returncode == 2, proc.stdout[-3000:]
    assert "Traceback" not in proc.stdout
    errors = [line for line in proc.stdout.splitlines() if "error:" in line]
    assert len(errors) == 1 and errors[0].startswith(
        f"train_net.py: error: checkpoint '{junk}' (17 bytes) cannot be read: it is not a torch.save / detectron2 "
        ".pkl checkpoint, or it is incomplete (an interrupted download or copy?) ("), errors
    debug = run_script("train_net.py", args, tmp_path / "syn", env_extra={"L2G_DEBUG": "1"}, timeout=300)
    assert debug.returncode != 0 and "Traceback" in debug.stdout and "CheckpointFileError" in debug.stdout


def test_train_net_missing_config_file(tmp_path):
    proc = run_script("train_net.py", ["--config-file", str(tmp_path / "nope.py")], timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stdout
    assert f"train_net.py: error: config file '{tmp_path / 'nope.py'}' does not exist" in proc.stdout


def _demo(tmp_path, input_path, extra=(), env=None):
    return run_script("demo.py", ["--config-file", CONFIG, "--input", str(input_path), "--output",
                                  str(tmp_path / "render"), *extra, "train.device=cpu"], env_extra=env, timeout=300)


@pytest.mark.parametrize("case", ["missing", "text", "empty_folder", "empty_file"])
def test_demo_bad_input_is_one_line_and_exit_2(tmp_path, case):
    if case == "missing":
        path, what = tmp_path / "nothere.mp4", "does not exist"
    elif case == "text":
        path, what = tmp_path / "clip.mp4", "cannot be opened as a video"
        path.write_text("this is not a video\n")
    elif case == "empty_folder":
        path, what = tmp_path / "frames", "holds no image files"
        path.mkdir()
        (path / "readme.txt").write_text("no frames here")
    else:
        path, what = tmp_path / "empty.mp4", "cannot be opened as a video"
        path.write_bytes(b"")
    proc = _demo(tmp_path, path)
    assert proc.returncode == 2, proc.stdout[-3000:]
    assert "Traceback" not in proc.stdout
    errors = [line for line in proc.stdout.splitlines() if "error:" in line]
    assert len(errors) == 1 and errors[0].startswith(f"demo.py: error: input") and f"'{path}'" in errors[0]
    assert what in errors[0], errors
    assert not (tmp_path / "render").exists()  # failed before writing anything


def test_demo_corrupt_frame_names_the_frame_and_debug_shows_the_traceback(tmp_path):
    import cv2
    import numpy as np

    frames = tmp_path / "frames"
    frames.mkdir()
    cv2.imwrite(str(frames / "00000.jpg"), np.zeros((64, 64, 3), np.uint8))
    (frames / "00001.jpg").write_bytes(b"\xff\xd8 truncated jpeg")
    proc = _demo(tmp_path, frames, ["--no-gif", "--no-mask-pngs"])
    assert proc.returncode == 2 and "Traceback" not in proc.stdout, proc.stdout[-3000:]
    assert f"demo.py: error: frame '{frames / '00001.jpg'}' of the input folder cannot be decoded" in proc.stdout
    debug = _demo(tmp_path, tmp_path / "nothere", env={"L2G_DEBUG": "1"})
    assert debug.returncode == 1 and "Traceback" in debug.stdout and "InputVideoError" in debug.stdout
