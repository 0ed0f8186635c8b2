"""VIPSeg video panoptic datasets: loaders for both layouts in use, a validated frame reader, registration.

Layouts under ``$DETECTRON2_DATASETS`` (default ``datasets``), as the official instructions produce them::

    VIPSeg/                              raw download
      imgs/<video>/<frame>.jpg           original resolution
      panomasks/<video>/<frame>.png      16-bit raw values (0 void, v < 125: category v - 1, else
                                         category v // 100 - 1, instance v % 100; see vipseg_categories)
      train.txt val.txt test.txt         video names of each split
      VIPSeg_720P/                       after change2_720p.py + create_panoptic_video_labels.py + splitjson.py
        images/<video>/<frame>.jpg       height 720
        panomasks/<video>/<frame>.png    raw values at 720p
        panomasksRGB/<video>/<frame>.png RGB segment ids (R + 256 G + 256² B, 0 void)
        panoptic_gt_VIPSeg_{train,val}.json   videos / annotations (segments_info: id, category_id, iscrowd,
                                              area) / categories (0-based ids)

(``scripts/convert_vipseg_to_720p.py`` builds ``VIPSeg_720P`` from the raw layout, with deterministic ids.)

Dataset dicts, one per video, sorted by video name::

    {"video_id": int (position in the sorted names), "video_name": str, "height": H, "width": W, "length": T,
     "file_names": [jpg path] * T, "pan_seg_file_names": [png path] * T, "pan_seg_format": "rgb" | "raw",
     "annotations": [[{"id": segment id (the same object keeps its id over the video), "category_id":
                       contiguous id, "isthing": bool, "iscrowd": 0 | 1, "area": pixels}, ...]] * T}

Segment ids: in the 720p layout the RGB ids of the PNGs; in the raw layout the raw value of a thing segment and
``category + 1`` for a stuff segment (the official converter merges every raw value of a stuff category into one
segment). :func:`read_panoptic_frame` returns a frame's ``(H, W)`` id map in these ids, checked against the dict.

Built-in names (registered on import; nothing is read until a dataset is loaded): ``vipseg_{train,val}``
(720p layout), ``vipseg_raw_{train,val}`` (raw layout; loading reads every mask once to list its segments).
"""

from __future__ import annotations

import logging
import os
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
from PIL import Image

from local2global.data.vipseg_categories import VIPSEG_CATEGORIES, raw_to_category, vipseg_metadata
from local2global.evaluation.vps.panoptic_io import VPSFormatError, rgb_to_id

logger = logging.getLogger(__name__)

__all__ = [
    "VIPSegFormatError",
    "load_vipseg_panoptic_json",
    "load_vipseg_raw",
    "read_panoptic_frame",
    "raw_to_segment_ids",
    "register_vipseg_panoptic",
    "register_vipseg_raw",
    "register_all_vipseg",
    "IMAGE_EXT",
    "MASK_EXT",
]

IMAGE_EXT = ".jpg"
MASK_EXT = ".png"


class VIPSegFormatError(VPSFormatError):
    """Malformed VIPSeg data; the message names the file and the video."""


def _stem(name: str) -> str:
    return os.path.splitext(name)[0]


def _contiguous_map(dataset_name: Optional[str], categories: Sequence[dict]) -> Dict[int, int]:
    """Dataset category id -> contiguous id: the metadata's ``stuff_dataset_id_to_contiguous_id`` when the
    dataset is registered with one, else the id-sorted ``categories``."""
    if dataset_name is not None:
        from detectron2.data import MetadataCatalog

        m = MetadataCatalog.get(dataset_name).get("stuff_dataset_id_to_contiguous_id", None)
        if m is not None:
            return {int(k): int(v) for k, v in m.items()}
    return {int(c["id"]): i for i, c in enumerate(sorted(categories, key=lambda c: c["id"]))}


def load_vipseg_panoptic_json(json_file: str, image_root: str, gt_root: str, dataset_name: Optional[str] = None,
                              check_masks: bool = False) -> List[dict]:
    """Load the 720p layout (``panoptic_gt_VIPSeg_<split>.json`` + ``images`` + ``panomasksRGB``).

    Args:
        json_file: the panoptic JSON. image_root: ``VIPSeg_720P/images``. gt_root: ``VIPSeg_720P/panomasksRGB``.
        dataset_name: a registered dataset whose metadata gives the contiguous ids (else the JSON's categories).
        check_masks: also read every PNG and check it against its ``segments_info`` (ids and areas); without it
            the check happens when a frame is read (:func:`read_panoptic_frame`).

    Raises:
        FileNotFoundError: the JSON or a folder is missing.
        VIPSegFormatError: naming the file and the video: missing keys, a video whose ``images`` and
            ``annotations`` differ, a missing frame (image or PNG), an unknown category, frames of different
            sizes, duplicate segment ids in a frame, and with ``check_masks`` a PNG that does not match its JSON.
    """
    import json

    for path in (json_file, image_root, gt_root):
        if not os.path.exists(path):
            raise FileNotFoundError(f"VIPSeg path {path!r} (dataset {dataset_name or '<unnamed>'}) does not exist; "
                                    "see local2global/data/vipseg.py for the layout")
    with open(json_file) as f:
        data = json.load(f)
    for key in ("videos", "annotations", "categories"):
        if key not in data:
            raise VIPSegFormatError(f"{json_file!r}: missing top-level key {key!r}")
    id_map = _contiguous_map(dataset_name, data["categories"])
    isthing = {int(c["id"]): bool(c["isthing"]) for c in data["categories"]}
    anns = {a["video_id"]: a["annotations"] for a in data["annotations"]}
    out = []
    for v in sorted(data["videos"], key=lambda v: v["video_id"]):
        name = v["video_id"]
        where = f"{json_file!r}, video {name!r}"
        if name not in anns:
            raise VIPSegFormatError(f"{where}: no entry in 'annotations'")
        images, frames = v["images"], anns[name]
        if len(images) != len(frames):
            raise VIPSegFormatError(f"{where}: {len(images)} images but {len(frames)} annotated frames")
        sizes = {(im["height"], im["width"]) for im in images}
        if len(sizes) != 1:
            raise VIPSegFormatError(f"{where}: frames of different sizes {sorted(sizes)}")
        (height, width), = sizes
        rec = {"video_id": len(out), "video_name": name, "height": int(height), "width": int(width),
               "length": len(images), "file_names": [], "pan_seg_file_names": [], "pan_seg_format": "rgb",
               "annotations": []}
        for t, (im, fr) in enumerate(zip(images, frames)):
            img = os.path.join(image_root, name, _stem(im["file_name"]) + IMAGE_EXT)
            png = os.path.join(gt_root, name, fr.get("file_name", im["file_name"]))
            for path, what in ((img, "image"), (png, "panoptic PNG")):
                if not os.path.isfile(path):
                    raise VIPSegFormatError(f"{where}, frame {t}: missing {what} {path!r}")
            segs, seen = [], set()
            for s in fr["segments_info"]:
                if s["category_id"] not in id_map:
                    raise VIPSegFormatError(f"{where}, frame {png!r}: segment {s['id']} has unknown category_id "
                                            f"{s['category_id']} (known: 0..{max(id_map)})")
                if s["id"] in seen:
                    raise VIPSegFormatError(f"{where}, frame {png!r}: segment id {s['id']} listed twice")
                seen.add(s["id"])
                segs.append({"id": int(s["id"]), "category_id": id_map[s["category_id"]],
                             "isthing": isthing[s["category_id"]], "iscrowd": int(s.get("iscrowd", 0)),
                             "area": int(s.get("area", -1))})
            rec["file_names"].append(img)
            rec["pan_seg_file_names"].append(png)
            rec["annotations"].append(segs)
        if check_masks:
            for t in range(rec["length"]):
                read_panoptic_frame(rec, t)
        out.append(rec)
    logger.info("loaded %d VIPSeg videos (%d frames) from %s", len(out), sum(r["length"] for r in out), json_file)
    return out


def raw_to_segment_ids(raw: np.ndarray, categories: Sequence[dict] = VIPSEG_CATEGORIES) -> np.ndarray:
    """Raw panomask values -> segment ids of the raw layout (thing: the raw value; stuff: category + 1; void 0).

    Raises:
        ValueError: a value of no known category (the callers add the file and the video).
    """
    raw = np.asarray(raw).astype(np.int64)
    cat = raw_to_category(raw)
    thing_table = np.zeros(len(categories), bool)
    for c in categories:
        thing_table[c["id"]] = bool(c["isthing"])
    bad = (cat >= len(categories)) | (cat < -1)
    if bad.any():
        raise ValueError(f"raw value(s) {np.unique(raw[bad])[:10].tolist()} belong to no category")
    stuff = (cat >= 0) & ~thing_table[np.maximum(cat, 0)]
    return np.where(cat < 0, 0, np.where(stuff, cat + 1, raw))


def _read_raw(path: str, video: str) -> np.ndarray:
    try:
        with Image.open(path) as im:
            arr = np.asarray(im)
    except FileNotFoundError:
        raise VIPSegFormatError(f"video {video!r}: missing panomask {path!r}") from None
    if arr.ndim != 2:
        raise VIPSegFormatError(f"video {video!r}: panomask {path!r} has shape {arr.shape}; expected one channel")
    return arr


def read_panoptic_frame(record: dict, t: int) -> np.ndarray:
    """Frame ``t``'s ``(H, W)`` int64 segment-id map, checked against ``record["annotations"][t]``.

    Raises:
        VIPSegFormatError: naming the PNG and the video: wrong size, ids in the PNG but not in the JSON (or the
            reverse), areas that differ from the JSON's, unknown raw values.
    """
    path, video = record["pan_seg_file_names"][t], record.get("video_name", record["video_id"])
    if record["pan_seg_format"] == "raw":
        try:
            ids = raw_to_segment_ids(_read_raw(path, video), record.get("raw_categories", VIPSEG_CATEGORIES))
        except ValueError as e:
            if isinstance(e, VIPSegFormatError):
                raise
            raise VIPSegFormatError(f"video {video!r}, panomask {path!r}: {e}") from None
    else:
        try:
            with Image.open(path) as im:
                arr = np.asarray(im.convert("RGB"))
        except FileNotFoundError:
            raise VIPSegFormatError(f"video {video!r}: missing panoptic PNG {path!r}") from None
        ids = rgb_to_id(arr).astype(np.int64)
    if ids.shape != (record["height"], record["width"]):
        raise VIPSegFormatError(f"video {video!r}, {path!r}: size {ids.shape} but the video is "
                                f"{(record['height'], record['width'])}")
    u, counts = np.unique(ids, return_counts=True)
    png = {int(i): int(c) for i, c in zip(u, counts) if i != 0}
    listed = {s["id"]: s["area"] for s in record["annotations"][t]}
    if set(png) != set(listed):
        only_png, only_json = sorted(set(png) - set(listed)), sorted(set(listed) - set(png))
        raise VIPSegFormatError(f"video {video!r}, {path!r} does not match its segments_info: ids only in the PNG "
                                f"{only_png[:10]}, only in the JSON {only_json[:10]}")
    wrong = [i for i, a in listed.items() if a >= 0 and a != png[i]]
    if wrong:
        raise VIPSegFormatError(f"video {video!r}, {path!r}: segment(s) {wrong[:10]} have a JSON area different "
                                f"from their pixel count (e.g. id {wrong[0]}: {listed[wrong[0]]} vs {png[wrong[0]]})")
    return ids


def load_vipseg_raw(root: str, split: Optional[str] = None, dataset_name: Optional[str] = None,
                    image_dir: str = "imgs", mask_dir: str = "panomasks",
                    categories: Sequence[dict] = VIPSEG_CATEGORIES) -> List[dict]:
    """Load the raw layout (``imgs`` + ``panomasks``), reading every mask once to list its segments.

    Args:
        root: the ``VIPSeg`` folder. split: ``train`` / ``val`` / ``test`` (videos listed in ``<root>/<split>.txt``;
            None: every video of ``imgs``). dataset_name: for the contiguous ids (see the 720p loader).
        image_dir, mask_dir: sub-folder names (``images`` / ``panomasks`` for the 720p raw masks).
        categories: the category list the raw values encode (VIPSeg's; another list with 0-based ids for data in
            the same encoding, e.g. the synthetic VPS dataset).

    Raises:
        VIPSegFormatError: a video of the split without images or masks, a frame whose image or mask is
            missing, a raw value of no category (naming the file and the video).
    """
    img_root, mask_root = os.path.join(root, image_dir), os.path.join(root, mask_dir)
    for path in (img_root, mask_root):
        if not os.path.isdir(path):
            raise FileNotFoundError(f"VIPSeg folder {path!r} (dataset {dataset_name or '<unnamed>'}) does not exist")
    if split is not None:
        with open(os.path.join(root, f"{split}.txt")) as f:
            names = sorted(line.strip() for line in f if line.strip())
    else:
        names = sorted(n for n in os.listdir(img_root) if not n.startswith("."))
    id_map = _contiguous_map(dataset_name, categories)
    isthing = {c["id"]: bool(c["isthing"]) for c in categories}
    out = []
    for name in names:
        vi, vm = os.path.join(img_root, name), os.path.join(mask_root, name)
        if not os.path.isdir(vi) or not os.path.isdir(vm):
            raise VIPSegFormatError(f"video {name!r} (split {split}): missing folder {vi if not os.path.isdir(vi) else vm!r}")
        imgs = {_stem(f) for f in os.listdir(vi) if not f.startswith(".")}
        masks = {_stem(f) for f in os.listdir(vm) if not f.startswith(".")}
        if imgs != masks:
            miss = sorted(imgs - masks)
            path = os.path.join(vm, miss[0] + MASK_EXT) if miss else os.path.join(vi, sorted(masks - imgs)[0] + IMAGE_EXT)
            raise VIPSegFormatError(f"video {name!r}: missing frame {path!r} ({len(imgs ^ masks)} frames unpaired)")
        stems = sorted(imgs)
        rec = {"video_id": len(out), "video_name": name, "length": len(stems), "pan_seg_format": "raw",
               "file_names": [os.path.join(vi, s + IMAGE_EXT) for s in stems],
               "pan_seg_file_names": [os.path.join(vm, s + MASK_EXT) for s in stems], "annotations": []}
        for t, png in enumerate(rec["pan_seg_file_names"]):
            raw = _read_raw(png, name)
            rec.setdefault("height", raw.shape[0])
            rec.setdefault("width", raw.shape[1])
            if raw.shape != (rec["height"], rec["width"]):
                raise VIPSegFormatError(f"video {name!r}, {png!r}: size {raw.shape}, frame 0 is "
                                        f"{(rec['height'], rec['width'])}")
            try:
                ids = raw_to_segment_ids(raw, categories)
            except ValueError as e:
                raise VIPSegFormatError(f"video {name!r}, panomask {png!r}: {e}") from None
            u, counts = np.unique(ids, return_counts=True)
            cats = raw_to_category(u)  # segment ids keep the raw encoding of their category
            rec["annotations"].append([
                {"id": int(i), "category_id": id_map[int(c)], "isthing": isthing[int(c)], "iscrowd": 0, "area": int(a)}
                for i, c, a in zip(u, cats, counts) if i != 0
            ])
        if categories is not VIPSEG_CATEGORIES:  # what read_panoptic_frame decodes the raw values with
            rec["raw_categories"] = [{"id": int(c["id"]), "isthing": int(c["isthing"])} for c in categories]
        out.append(rec)
    logger.info("loaded %d raw VIPSeg videos from %s (split %s)", len(out), root, split)
    return out


def _register(name: str, loader, metadata: dict) -> None:
    from detectron2.data import DatasetCatalog, MetadataCatalog

    if name in DatasetCatalog:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    DatasetCatalog.register(name, loader)
    MetadataCatalog.get(name).set(evaluator_type="vps", **metadata)


def register_vipseg_panoptic(name: str, image_root: str, gt_root: str, json_file: str,
                             metadata: Optional[dict] = None, before_load: Optional[Callable[[], object]] = None) -> None:
    """Register a 720p-layout dataset (lazy). Its metadata carries ``panoptic_json`` / ``panoptic_root`` (what
    :class:`local2global.evaluation.vps.VPSEvaluator` scores against) and the VIPSeg categories by default;
    ``before_load`` is called before each load (e.g. to generate a synthetic dataset that is missing)."""
    meta = dict(vipseg_metadata() if metadata is None else metadata)
    meta.update(image_root=image_root, panoptic_root=gt_root, panoptic_json=json_file, json_file=json_file)

    def load() -> List[dict]:
        if before_load is not None:
            before_load()
        return load_vipseg_panoptic_json(json_file, image_root, gt_root, name)

    _register(name, load, meta)


def register_vipseg_raw(name: str, root: str, split: Optional[str], metadata: Optional[dict] = None,
                        before_load: Optional[Callable[[], object]] = None) -> None:
    """Register a raw-layout dataset (lazy; no panoptic JSON, so not scorable by the VPS evaluator).

    The raw values are decoded with the metadata's ``categories`` (VIPSeg's by default); ``before_load`` is called
    before each load (e.g. to generate a synthetic dataset that is missing).
    """
    meta = dict(vipseg_metadata() if metadata is None else metadata)
    meta.update(image_root=os.path.join(root, "imgs"), raw_root=root)
    categories = VIPSEG_CATEGORIES if metadata is None else meta["categories"]

    def load() -> List[dict]:
        if before_load is not None:
            before_load()
        return load_vipseg_raw(root, split, name, categories=categories)

    _register(name, load, meta)


def register_all_vipseg(root: Optional[str] = None) -> List[str]:
    """(Re-)register the built-in VIPSeg names under ``root`` (default ``$DETECTRON2_DATASETS`` or ``datasets``)."""
    root = root if root is not None else os.environ.get("DETECTRON2_DATASETS", "datasets")
    base = os.path.join(root, "VIPSeg")
    p720 = os.path.join(base, "VIPSeg_720P")
    names = []
    for split in ("train", "val"):
        register_vipseg_panoptic(f"vipseg_{split}", os.path.join(p720, "images"), os.path.join(p720, "panomasksRGB"),
                                 os.path.join(p720, f"panoptic_gt_VIPSeg_{split}.json"))
        register_vipseg_raw(f"vipseg_raw_{split}", base, split)
        names += [f"vipseg_{split}", f"vipseg_raw_{split}"]
    return names


register_all_vipseg()
