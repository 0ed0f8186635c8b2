"""Raw VIPSeg -> the 720p panopticapi-style layout, deterministically.

The steps of the official ``change2_720p.py`` + ``create_panoptic_video_labels.py`` + ``splitjson.py``
(``VIPSeg-Dataset`` commit 92e1459), restated:

* every frame is resized to height 720 and width ``int(720 * w / h)`` (images bilinear, masks nearest; a frame
  already of that size is copied as it is);
* per video, segments get ids the way panopticapi's ``IdGenerator`` makes them: a stuff category's segment
  is its category colour (``panoVIPSeg_categories.json``), the first segment of a thing category takes the
  category colour when no stuff category has it, later ones a colour jittered by up to ±30 per channel that
  is not taken yet; a raw value keeps its id over the whole video; frames in name order, raw values ascending;
* the official jitter draws from numpy's global random state, so its ids change from run to run; here the
  draws come from ``RandomState(crc32(video name))``, so a conversion is reproducible (the segments are the
  same either way, only the RGB ids differ);
* ``segments_info``: ``id``, ``category_id`` (0-based), ``iscrowd`` 0, ``area`` (pixels of the 720p PNG);
  ``images``: ``id`` = frame name without extension, ``width``, ``height``, ``file_name`` = ``<frame>.png``.

Outputs under ``out_root`` (the official names): ``images/``, ``panomasks/``, ``panomasksRGB/``,
``panoptic_gt_VIPSeg.json``, ``panoptic_gt_VIPSeg_<split>.json`` for each ``<split>.txt`` in the raw root, and
``panoVIPSeg_categories.json``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import zlib
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

from local2global.data.vipseg import IMAGE_EXT, MASK_EXT, VIPSegFormatError
from local2global.data.vipseg_categories import VIPSEG_CATEGORIES, raw_to_category
from local2global.evaluation.vps.panoptic_io import id_to_rgb

logger = logging.getLogger(__name__)

__all__ = ["convert_vipseg_to_720p", "convert_video", "DeterministicIdGenerator", "TARGET_HEIGHT"]

TARGET_HEIGHT = 720
#: panopticapi's ``random_color`` jitter (max distance per channel).
_COLOR_JITTER = 30
_CHANNEL = 256


class DeterministicIdGenerator:
    """panopticapi's ``IdGenerator`` scheme with a seeded random state (one per video).

    Args:
        categories: ``[{"id", "isthing", "color"}]``. seed: the random state's seed.
    """

    def __init__(self, categories: Sequence[dict], seed: int):
        self.categories = {c["id"]: c for c in categories}
        self.rng = np.random.RandomState(seed)
        # Black is id 0 (void): never handed out (panopticapi's set([0, 0, 0]) meant this).
        self.taken = {(0, 0, 0)} | {tuple(c["color"]) for c in categories if not c["isthing"]}

    def color(self, category_id: int) -> Tuple[int, int, int]:
        cat = self.categories[category_id]
        base = tuple(int(x) for x in cat["color"])
        if not cat["isthing"]:
            return base
        if base not in self.taken:
            self.taken.add(base)
            return base
        while True:
            jitter = self.rng.randint(-_COLOR_JITTER, _COLOR_JITTER + 1, size=3)
            color = tuple(int(x) for x in np.clip(np.array(base) + jitter, 0, _CHANNEL - 1))
            if color not in self.taken:
                self.taken.add(color)
                return color

    @staticmethod
    def to_id(color: Tuple[int, int, int]) -> int:
        return color[0] + _CHANNEL * color[1] + _CHANNEL * _CHANNEL * color[2]


def _resized(im: Image.Image, resample, target_height: int) -> Image.Image:
    w, h = im.size
    size = (int(target_height * w / h), target_height)
    return im if size == im.size else im.resize(size, resample)


def convert_video(raw_root: str, out_root: str, video: str, target_height: int = TARGET_HEIGHT,
                  image_dir: str = "imgs", mask_dir: str = "panomasks",
                  categories: Sequence[dict] = VIPSEG_CATEGORIES) -> Tuple[dict, dict]:
    """Convert one video; return its ``videos`` entry and its ``annotations`` entry.

    ``categories`` (0-based ids, ``isthing``, ``color``) are those the raw values encode: VIPSeg's, or another
    list in the same encoding (the synthetic VPS dataset's).

    Raises:
        VIPSegFormatError: a frame without its mask (or the reverse), a raw value of no category (naming the
            file and the video).
    """
    vi, vm = os.path.join(raw_root, image_dir, video), os.path.join(raw_root, mask_dir, video)
    imgs = sorted(f for f in os.listdir(vi) if not f.startswith("."))
    if not os.path.isdir(vm):
        raise VIPSegFormatError(f"video {video!r}: no mask folder {vm!r} (the test split has no masks)")
    masks = {os.path.splitext(f)[0] for f in os.listdir(vm) if not f.startswith(".")}
    for f in imgs:
        if os.path.splitext(f)[0] not in masks:
            raise VIPSegFormatError(f"video {video!r}: missing frame mask {os.path.join(vm, os.path.splitext(f)[0] + MASK_EXT)!r}")
    if len(masks) != len(imgs):
        extra = sorted(masks - {os.path.splitext(f)[0] for f in imgs})
        raise VIPSegFormatError(f"video {video!r}: missing frame image {os.path.join(vi, extra[0] + IMAGE_EXT)!r}")
    dirs = {k: os.path.join(out_root, k, video) for k in ("images", "panomasks", "panomasksRGB")}
    for d in dirs.values():
        os.makedirs(d, exist_ok=True)
    gen = DeterministicIdGenerator(categories, zlib.crc32(video.encode("utf-8")))
    raw_to_id: Dict[int, int] = {}
    images, frames = [], []
    for f in imgs:
        stem = os.path.splitext(f)[0]
        src_img, src_mask = os.path.join(vi, f), os.path.join(vm, stem + MASK_EXT)
        with Image.open(src_img) as im:
            out_img = _resized(im, Image.BILINEAR, target_height)
            if out_img is im:
                shutil.copyfile(src_img, os.path.join(dirs["images"], f))
            else:
                out_img.save(os.path.join(dirs["images"], f))
        with Image.open(src_mask) as m:
            m = _resized(m, Image.NEAREST, target_height)
            raw = np.asarray(m).astype(np.int64)
            m.save(os.path.join(dirs["panomasks"], stem + MASK_EXT))
        values = np.unique(raw)
        cats = raw_to_category(values)
        bad = values[cats >= len(categories)]
        if bad.size:
            raise VIPSegFormatError(f"video {video!r}, panomask {src_mask!r}: raw value(s) {bad[:10].tolist()} "
                                    "belong to no category")
        ids = np.zeros(raw.shape, np.int64)
        segs: Dict[int, dict] = {}
        for v, c in zip(values.tolist(), cats.tolist()):
            if v == 0:
                continue
            if v not in raw_to_id:
                raw_to_id[v] = gen.to_id(gen.color(c))
            sid = raw_to_id[v]
            ids[raw == v] = sid
            segs.setdefault(sid, {"id": sid, "category_id": int(c), "iscrowd": 0})
        sids, counts = np.unique(ids, return_counts=True)
        area = dict(zip(sids.tolist(), counts.tolist()))
        for sid, s in segs.items():
            s["area"] = int(area[sid])
        Image.fromarray(id_to_rgb(ids)).save(os.path.join(dirs["panomasksRGB"], stem + MASK_EXT))
        images.append({"id": stem, "width": int(raw.shape[1]), "height": int(raw.shape[0]), "file_name": stem + MASK_EXT})
        frames.append({"image_id": stem, "file_name": stem + MASK_EXT, "segments_info": list(segs.values())})
    return {"video_id": video, "images": images}, {"video_id": video, "annotations": frames}


def _convert_one(args):
    return convert_video(*args)


def convert_vipseg_to_720p(raw_root: str, out_root: str, target_height: int = TARGET_HEIGHT,
                           videos: Optional[List[str]] = None, num_workers: int = 0,
                           categories: Sequence[dict] = VIPSEG_CATEGORIES) -> Dict[str, str]:
    """Convert a raw VIPSeg folder (``imgs``, ``panomasks``, ``<split>.txt``) to the 720p layout.

    Args:
        raw_root: the downloaded ``VIPSeg`` folder. out_root: where to write (``VIPSeg/VIPSeg_720P``).
        target_height: output height (720 as the official; smaller for quick experiments).
        videos: restrict to these videos (default: every video that has masks; test videos without masks are
            skipped, as ``change2_720p.py`` does).
        num_workers: processes over videos (0: this one).
        categories: the categories of the raw values (default VIPSeg's; see :func:`convert_video`); they are
            written to the JSONs and ``panoVIPSeg_categories.json``.

    Returns:
        The written JSON paths, by name (``all``, and each split found).
    """
    img_root = os.path.join(raw_root, "imgs")
    names = videos if videos is not None else sorted(n for n in os.listdir(img_root) if not n.startswith("."))
    with_masks = [n for n in names if os.path.isdir(os.path.join(raw_root, "panomasks", n))]
    if len(with_masks) != len(names):
        logger.info("skipping %d videos without masks (test split)", len(names) - len(with_masks))
    jobs = [(raw_root, out_root, n, target_height, "imgs", "panomasks", categories) for n in with_masks]
    if num_workers > 1:
        import multiprocessing as mp

        with mp.get_context("spawn").Pool(num_workers) as pool:
            results = pool.map(_convert_one, jobs, chunksize=1)
    else:
        results = [_convert_one(j) for j in jobs]
    cats = [dict(c, color=list(c["color"])) for c in categories]
    d = {"videos": [r[0] for r in results], "annotations": [r[1] for r in results], "categories": cats}
    written = {"all": os.path.join(out_root, "panoptic_gt_VIPSeg.json")}
    _dump(d, written["all"])
    _dump(cats, os.path.join(out_root, "panoVIPSeg_categories.json"))
    for split in ("train", "val", "test"):
        path = os.path.join(raw_root, f"{split}.txt")
        if not os.path.isfile(path):
            continue
        shutil.copyfile(path, os.path.join(out_root, f"{split}.txt"))
        with open(path) as f:
            keep = {line.strip() for line in f if line.strip()}
        sub = {k: [x for x in d[k] if x["video_id"] in keep] for k in ("videos", "annotations")}
        if sub["videos"]:
            written[split] = os.path.join(out_root, f"panoptic_gt_VIPSeg_{split}.json")
            _dump(dict(sub, categories=cats), written[split])
    logger.info("converted %d videos to %s", len(results), out_root)
    return written


def _dump(obj, path: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(obj, f)
    os.replace(tmp, path)
