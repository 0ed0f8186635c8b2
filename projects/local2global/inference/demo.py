"""Run online Local2Global inference on a folder of frames or a video file and render the tracks.

    l2g-demo --config-file configs/local2global_tiny_synthetic.py \
        --input path/to/frames_or_video.mp4 --output output/demo_video \
        train.init_checkpoint=output/demo/model_final.pth
    python scripts/demo.py ...        # the same command as a file


Writes into ``--output``: ``video.mp4`` (and ``video.gif``) with every tracked instance in its own stable colour
with class and score, ``masks/track_<id>/<frame>.png`` per-instance masks, and ``results.json`` (YouTube-VIS
results format, category ids from the config's test dataset metadata when available). Every file is written to a
temporary name and renamed when complete, so an interrupted run leaves no truncated output.

A missing or unreadable input, config file or checkpoint ends the command with one line that names the file and
exit status 2 (:func:`main_cli`); ``--debug`` or ``L2G_DEBUG=1`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Iterator, List

import cv2
import numpy as np
import torch
from detectron2.config import LazyConfig
from tqdm import tqdm

from local2global.cli import BAD_FILE_EXIT_STATUS, debug_requested, prog_name
from local2global.data.prefetch import prefetch
from local2global.engine.overrides import apply_overrides_strict
from local2global.inference.predictor import VideoPredictor
from local2global.inference.visualize import draw_frame_instances
from local2global.modeling.checkpoint import CheckpointFileError

logger = logging.getLogger("local2global.demo")

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")


class InputVideoError(ValueError):
    """The ``--input`` folder or video cannot be read; the message names the path and what is wrong."""


def check_input(path: Path) -> None:
    """Fail early, before the model is built, when ``path`` cannot give a frame.

    Raises:
        InputVideoError: ``path`` does not exist, is not readable, is a folder without image files, or is a file
            that OpenCV cannot open as a video or whose first frame cannot be decoded.
    """
    if not path.exists():
        raise InputVideoError(f"input {str(path)!r} does not exist")
    if not os.access(path, os.R_OK):
        raise InputVideoError(f"input {str(path)!r} is not readable (permission denied)")
    if path.is_dir():
        if not any(p.suffix.lower() in IMAGE_EXTENSIONS for p in path.iterdir()):
            raise InputVideoError(f"input folder {str(path)!r} holds no image files ({', '.join(IMAGE_EXTENSIONS)})")
        return
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise InputVideoError(f"input {str(path)!r} cannot be opened as a video (not a video file, or a codec "
                                  "this OpenCV build lacks)")
        ok, _ = cap.read()
        if not ok:
            raise InputVideoError(f"input video {str(path)!r} has no readable frame (empty or corrupt file)")
    finally:
        cap.release()


def iter_frames(path: Path) -> Iterator[np.ndarray]:
    """Yield RGB uint8 frames of a folder of images (sorted by name) or a video file.

    Raises:
        InputVideoError: the input cannot be read (see :func:`check_input`) or a frame of a folder cannot be
            decoded (the message names the frame).
    """
    check_input(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
        for f in files:
            img = cv2.imread(str(f), cv2.IMREAD_UNCHANGED)
            if img is None:
                raise InputVideoError(f"frame {str(f)!r} of the input folder cannot be decoded as an image")
            if img.ndim == 3 and img.shape[2] == 4:
                img = cv2.cvtColor(img, cv2.COLOR_BGRA2RGB)
            elif img.ndim == 3:
                img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
            yield img
    else:
        cap = cv2.VideoCapture(str(path))
        while True:
            ok, img = cap.read()
            if not ok:
                break
            yield cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
        cap.release()


def count_frames(path: Path):
    if path.is_dir():
        return sum(1 for p in path.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
    cap = cv2.VideoCapture(str(path))
    n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) if cap.isOpened() else 0
    cap.release()
    return n or None


def _atomic_path(path: Path) -> Path:
    return path.with_name(f".{path.stem}.partial{path.suffix}")


def write_video(frames: List[np.ndarray], path: Path, fps: float) -> None:
    import imageio.v2 as imageio

    tmp = _atomic_path(path)
    if path.suffix == ".gif":
        imageio.mimsave(tmp, frames, duration=1.0 / fps, loop=0)
    else:
        # Even sizes for yuv420p encoders.
        h, w = frames[0].shape[:2]
        frames = [f[: h - h % 2, : w - w % 2] for f in frames]
        imageio.mimsave(tmp, frames, fps=fps, codec="libx264", quality=8, macro_block_size=1,
                        output_params=["-pix_fmt", "yuv420p"])
    os.replace(tmp, path)


def _test_settings(cfg):
    """(shortest edge, longest-edge cap, dataset name) of the config's test loader (360 / 640 / None if absent)."""
    test = cfg.get("dataloader", {}).get("test", {})
    min_size, max_size = 360, 640
    for aug in test.get("mapper", {}).get("augmentations", []) or []:
        if "short_edge_length" in aug:
            edge = aug["short_edge_length"]
            min_size = int(edge if isinstance(edge, (int, float)) else edge[0])
            max_size = int(aug.get("max_size", max_size))
            break
    names = test.get("dataset", {}).get("names", None)
    if isinstance(names, (list, tuple)) or (names is not None and not isinstance(names, str)):
        names = list(names)[0] if len(names) else None
    return min_size, max_size, names


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``l2g-demo`` / ``scripts/demo.py``."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--input", required=True, help="folder of frames or a video file")
    parser.add_argument("--output", required=True, help="output folder")
    parser.add_argument("--fps", type=float, default=6.0)
    parser.add_argument("--no-gif", action="store_true")
    parser.add_argument("--render-scale", type=int, default=0,
                        help="integer upscaling of the rendered video (0: auto, so that the short side is >= 256 px)")
    parser.add_argument("--score-threshold", type=float, default=None,
                        help="draw (and write mask PNGs of) the tracks whose class probability on a frame is at least "
                             "this (default: the config's model.postprocessor.frame_score_threshold)")
    parser.add_argument("--no-mask-pngs", action="store_true")
    parser.add_argument("--video-id", type=int, default=1)
    parser.add_argument("--input-format", default="RGB", choices=["RGB", "BGR"],
                        help="channel order the model expects (frames are read as RGB)")
    parser.add_argument("--debug", action="store_true",
                        help="show the traceback of bad-file errors (also: L2G_DEBUG=1)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides key=value")
    return parser


def main(argv=None) -> int:
    """Run the demo (see the module docstring); errors are raised (:func:`main_cli` turns bad files into one line).

    Raises:
        InputVideoError: the input cannot be read.
        local2global.modeling.checkpoint.CheckpointFileError: ``train.init_checkpoint`` is not a checkpoint.
        FileNotFoundError: the config file does not exist.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if not os.path.isfile(args.config_file):
        raise FileNotFoundError(f"config file {args.config_file!r} does not exist")
    check_input(Path(args.input))  # before the model is built
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s %(name)s] %(message)s")
    torch.set_grad_enabled(False)

    cfg = LazyConfig.load(args.config_file)
    cfg = apply_overrides_strict(cfg, args.opts)
    if args.score_threshold is not None:
        if not 0.0 <= args.score_threshold <= 1.0:
            parser.error(f"--score-threshold must be in [0, 1], got {args.score_threshold}")
        cfg.model.postprocessor.frame_score_threshold = args.score_threshold
    min_size, max_size, dataset_name = _test_settings(cfg)
    predictor = VideoPredictor(cfg, min_size_test=min_size, max_size_test=max_size)
    class_names = None
    id_map = None
    if dataset_name:
        from detectron2.data import MetadataCatalog

        import local2global.data  # noqa: F401  (registers the built-in datasets and their metadata)

        meta = MetadataCatalog.get(dataset_name)
        class_names = meta.get("thing_classes", None)
        id_map = {v: k for k, v in meta.get("thing_dataset_id_to_contiguous_id", {}).items()} or None

    out_dir = Path(args.output)
    out_dir.mkdir(parents=True, exist_ok=True)
    inp = Path(args.input)
    rendered: List[np.ndarray] = []
    scale = None
    mask_dir = out_dir / "masks"
    # frames are decoded two ahead in a background thread while the model runs (data/prefetch.py)
    frames = prefetch(iter_frames(inp), depth=2, name="demo-frames")
    for i, frame in enumerate(tqdm(frames, total=count_frames(inp), desc="frames", unit="frame")):
        inst = predictor(frame)
        if scale is None:
            scale = args.render_scale or max(1, -(-256 // min(frame.shape[:2])))
        rendered.append(draw_frame_instances(frame, inst, class_names, scale=scale))
        if not args.no_mask_pngs:
            for tid, m in zip(inst.track_ids.tolist(), inst.masks.cpu().numpy()):
                d = mask_dir / f"track_{tid:03d}"
                d.mkdir(parents=True, exist_ok=True)
                tmp = d / f".{i:05d}.partial.png"
                cv2.imwrite(str(tmp), m.astype(np.uint8) * 255)
                os.replace(tmp, d / f"{i:05d}.png")
    if not rendered:
        raise InputVideoError(f"no frames read from {str(inp)!r}")
    result = predictor.video_result(video_id=args.video_id)
    records = [
        {"video_id": result["video_id"], "score": s,
         "category_id": id_map[l] if id_map else l + 1, "segmentations": segs}
        for s, l, segs in zip(result["scores"], result["labels"], result["segmentations"])
    ]
    tmp = out_dir / ".results.partial.json"
    tmp.write_text(json.dumps(records))
    os.replace(tmp, out_dir / "results.json")
    write_video(rendered, out_dir / "video.mp4", args.fps)
    if not args.no_gif:
        write_video(rendered, out_dir / "video.gif", args.fps)
    cv2.imwrite(str(out_dir / "frame_preview.png"), cv2.cvtColor(rendered[len(rendered) // 2], cv2.COLOR_RGB2BGR))
    logger.info("wrote %d frames to %s (video.mp4%s, results.json)", len(rendered), out_dir,
                "" if args.no_gif else ", video.gif")
    return 0


def main_cli(argv=None) -> int:
    """The ``l2g-demo`` entry point: :func:`main`, with one line (naming the file) and exit status 2 for a missing
    or unreadable input, config or checkpoint, unless ``--debug`` or ``$L2G_DEBUG`` asks for the traceback."""
    raw = list(sys.argv[1:] if argv is None else argv)
    try:
        return main(raw)
    except (InputVideoError, CheckpointFileError, FileNotFoundError) as e:
        if debug_requested("--debug" in raw):
            raise
        print(f"{prog_name('l2g-demo')}: error: {e}", file=sys.stderr)
        return BAD_FILE_EXIT_STATUS


if __name__ == "__main__":
    sys.exit(main_cli())
