"""YouTube-VIS / OVIS datasets: a validating JSON loader and detectron2 registration.

Dataset dicts (docs/ARCHITECTURE.md "Data contracts"), one per video, sorted by video id::

    {"video_id": int, "height": H, "width": W, "length": L,
     "file_names": [absolute path] * L,
     "annotations": [[{"id": track id, "category_id": contiguous id, "iscrowd": 0/1,
                       "segmentation": compressed RLE {"size": [H, W], "counts": str | bytes},
                       "bbox": [x, y, w, h], "bbox_mode": BoxMode.XYWH_ABS}, ...]  # objects of frame t
                     ] * L}

Every accepted segmentation encoding (uncompressed RLE, compressed RLE, polygons) is converted to
compressed RLE at load time (through :func:`local2global.evaluation.results_io.to_compressed_rle`, so the
loader and the evaluator accept and reject exactly the same masks); objects whose segmentation is ``null``
on a frame are omitted from that frame. A JSON without annotations (hidden validation sets) gives empty
per-frame lists.

Built-in names (registered when this module is imported; paths are only touched when a dataset is loaded),
relative to ``$DETECTRON2_DATASETS`` (default ``datasets``)::

    ytvis_2019_{train,val}   ytvis_2019/{train,valid}/JPEGImages   ytvis_2019/{train,valid}.json
    ytvis_2021_{train,val}   ytvis_2021/{train,valid}/JPEGImages   ytvis_2021/{train,valid}.json
    ytvis_2022_val           ytvis_2022/valid/JPEGImages           ytvis_2022/valid.json
    ovis_{train,val}         ovis/{train,valid}                    ovis/annotations/{train,valid}.json
    synthetic_vis_{train,valid}  synthetic_vis/{train,valid}/JPEGImages  synthetic_vis/{train,valid}.json
    ytvis_2019_{train,val}_sub, ytvis_2021_{train,val}_sub, ovis_{train,val}_sub
                             the local validation split of the training sets (:mod:`local2global.data.local_split`)

The synthetic root is ``$L2G_SYNTHETIC_ROOT`` when set; loading a synthetic split generates the default
dataset there first if it is missing (:func:`local2global.data.synthetic.ensure_synthetic_vis`).
"""

from __future__ import annotations

import logging
import os
from typing import Callable, Dict, List, Optional, Sequence

from pycocotools import mask as mask_utils

from local2global.data.categories import (
    OVIS_CATEGORIES,
    SYNTHETIC_VIS_CATEGORIES,
    YTVIS_2019_CATEGORIES,
    YTVIS_2021_CATEGORIES,
    YTVIS_2022_CATEGORIES,
    vis_metadata,
)
from local2global.evaluation.results_io import VideoInfo, YTVISFormatError, load_json, to_compressed_rle

logger = logging.getLogger(__name__)

__all__ = [
    "YTVISFormatError",
    "load_ytvis_json",
    "register_ytvis_instances",
    "register_all_builtin",
    "builtin_splits",
    "datasets_root",
    "synthetic_root",
]

VIDEO_KEYS = ("id", "height", "width", "file_names")
ANNOTATION_KEYS = ("id", "video_id", "category_id", "segmentations")


def datasets_root() -> str:
    """``$DETECTRON2_DATASETS`` or ``datasets`` (detectron2's convention)."""
    return os.environ.get("DETECTRON2_DATASETS", "datasets")


def synthetic_root(root: Optional[str] = None) -> str:
    """``$L2G_SYNTHETIC_ROOT`` when set, else ``<root or datasets_root()>/synthetic_vis``."""
    env = os.environ.get("L2G_SYNTHETIC_ROOT")
    if env:
        return env
    return os.path.join(root if root is not None else datasets_root(), "synthetic_vis")


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _check_video(v: dict, i: int, name: str) -> VideoInfo:
    if not isinstance(v, dict):
        raise YTVISFormatError(f"{name!r}: videos[{i}] is not an object")
    vid = v.get("id")
    where = f"{name!r}, video_id {vid}"
    missing = [k for k in VIDEO_KEYS if k not in v]
    if missing:
        raise YTVISFormatError(f"{where} (videos[{i}]): missing key(s) {missing}")
    if not _is_int(vid):
        raise YTVISFormatError(f"{where} (videos[{i}]): 'id' must be an integer")
    for key in ("height", "width"):
        if not _is_int(v[key]) or v[key] <= 0:
            raise YTVISFormatError(f"{where}: '{key}' must be a positive integer, got {v[key]!r}")
    files = v["file_names"]
    if not isinstance(files, list) or not files or not all(isinstance(f, str) for f in files):
        raise YTVISFormatError(f"{where}: 'file_names' must be a non-empty list of strings")
    length = v.get("length", len(files))
    if not _is_int(length) or length != len(files):
        raise YTVISFormatError(f"{where}: 'length' is {length!r} but 'file_names' lists {len(files)} frames")
    return VideoInfo(int(vid), int(v["height"]), int(v["width"]), int(length))


def load_ytvis_json(
    json_file: str,
    image_root: str,
    dataset_name: Optional[str] = None,
    extra_annotation_keys: Optional[Sequence[str]] = None,
) -> List[dict]:
    """Load and validate a YouTube-VIS / OVIS annotation file.

    Args:
        json_file: the annotation JSON (``videos``, ``categories`` and optionally ``annotations``).
        image_root: folder the videos' ``file_names`` are relative to.
        dataset_name: registered dataset whose metadata gives the category id -> contiguous id map
            (``thing_dataset_id_to_contiguous_id``); without one, or when the metadata has no map, the
            JSON's categories sorted by id are numbered 0..K-1 (and stored in the metadata when a name is given).
        extra_annotation_keys: further per-annotation keys copied into every per-frame object.

    Returns:
        One dataset dict per video, sorted by video id (see the module docstring).

    Raises:
        FileNotFoundError: ``json_file`` or ``image_root`` does not exist (the message names it).
        YTVISFormatError: naming the file and the video id, for missing keys, a ``segmentations`` list whose
            length differs from the video's, an unknown video or category id, a mask whose size differs from
            the video's, duplicate ids or malformed segmentations.
    """
    json_file = os.fspath(json_file)
    image_root = os.fspath(image_root)
    for path, what in ((json_file, "annotation file"), (image_root, "image root")):
        if "://" not in path and not os.path.exists(path):
            raise FileNotFoundError(
                f"{what} {path!r} of dataset {dataset_name or '<unnamed>'} does not exist "
                f"(DETECTRON2_DATASETS={datasets_root()!r}; see local2global/data/ytvis.py for the folder layout)"
            )
    data, name = load_json(json_file, "annotation")
    if not isinstance(data, dict):
        raise YTVISFormatError(f"{name!r}: expected a JSON object, got {type(data).__name__}")
    for key in ("videos", "categories"):
        if key not in data:
            raise YTVISFormatError(f"{name!r}: missing top-level key '{key}'")
    cats = data["categories"]
    if not isinstance(cats, list) or not all(isinstance(c, dict) and _is_int(c.get("id")) for c in cats):
        raise YTVISFormatError(f"{name!r}: 'categories' must be a list of objects with an integer 'id'")
    id_map = _category_map(cats, dataset_name, name)

    if not isinstance(data["videos"], list):
        raise YTVISFormatError(f"{name!r}: 'videos' must be a list")
    videos: Dict[int, VideoInfo] = {}
    records: Dict[int, dict] = {}
    for i, v in enumerate(data["videos"]):
        info = _check_video(v, i, name)
        if info.id in videos:
            raise YTVISFormatError(f"{name!r}, video_id {info.id}: duplicate video id")
        videos[info.id] = info
        records[info.id] = {
            "video_id": info.id, "height": info.height, "width": info.width, "length": info.length,
            "file_names": [os.path.join(image_root, f) for f in v["file_names"]],
            "annotations": [[] for _ in range(info.length)],
        }

    anns = data.get("annotations") or []
    if not isinstance(anns, list):
        raise YTVISFormatError(f"{name!r}: 'annotations' must be a list")
    extra = list(extra_annotation_keys or [])
    seen = set()
    n_objects = 0
    for i, ann in enumerate(anns):
        if not isinstance(ann, dict):
            raise YTVISFormatError(f"{name!r}: annotations[{i}] is not an object")
        vid = ann.get("video_id")
        where = f"{name!r}, video_id {vid}, annotations[{i}] (id {ann.get('id')})"
        missing = [k for k in ANNOTATION_KEYS if k not in ann]
        if missing:
            raise YTVISFormatError(f"{where}: missing key(s) {missing}")
        if vid not in videos:
            raise YTVISFormatError(f"{where}: video_id is not in 'videos'")
        if not _is_int(ann["id"]) or ann["id"] in seen:
            raise YTVISFormatError(f"{where}: annotation 'id' must be a unique integer")
        seen.add(ann["id"])
        if ann["category_id"] not in id_map:
            raise YTVISFormatError(
                f"{where}: unknown category_id {ann['category_id']!r} (known: {sorted(id_map)})"
            )
        video = videos[vid]
        segs = ann["segmentations"]
        if not isinstance(segs, list) or len(segs) != video.length:
            n = len(segs) if isinstance(segs, list) else type(segs).__name__
            raise YTVISFormatError(f"{where}: 'segmentations' has {n} entries, the video has {video.length} frames")
        bboxes = ann.get("bboxes")
        if bboxes is not None and (not isinstance(bboxes, list) or len(bboxes) != video.length):
            raise YTVISFormatError(f"{where}: 'bboxes' must be a list of {video.length} entries (or absent)")
        iscrowd = int(bool(ann.get("iscrowd", 0)))
        contiguous = id_map[ann["category_id"]]
        for t, seg in enumerate(segs):
            rle = to_compressed_rle(seg, video, f"{where}, frame {t}")
            if rle is None:
                continue
            box = bboxes[t] if bboxes is not None and bboxes[t] else None
            if box is None:
                box = [float(x) for x in mask_utils.toBbox(rle)]
            obj = {"id": int(ann["id"]), "category_id": contiguous, "iscrowd": iscrowd,
                   "segmentation": rle, "bbox": list(box), "bbox_mode": _xywh_abs()}
            for key in extra:
                if key in ann:
                    obj[key] = ann[key]
            records[vid]["annotations"][t].append(obj)
            n_objects += 1
    if not anns:
        logger.info("%s has no annotations (a hidden validation/test split?)", name)
    out = [records[k] for k in sorted(records)]
    logger.info("loaded %d videos, %d tracks, %d frame objects from %s", len(out), len(anns), n_objects, name)
    return out


def _xywh_abs():
    from detectron2.structures import BoxMode

    return BoxMode.XYWH_ABS


def _category_map(cats: List[dict], dataset_name: Optional[str], name: str) -> Dict[int, int]:
    """Dataset category id -> contiguous id, from the metadata when it has one, else from the JSON."""
    json_ids = sorted(int(c["id"]) for c in cats)
    if len(set(json_ids)) != len(json_ids):
        raise YTVISFormatError(f"{name!r}: duplicate category ids in 'categories'")
    from_json = {cid: i for i, cid in enumerate(json_ids)}
    if dataset_name is None:
        return from_json
    from detectron2.data import MetadataCatalog

    meta = MetadataCatalog.get(dataset_name)
    id_map = meta.get("thing_dataset_id_to_contiguous_id", None)
    if id_map is None:
        meta.thing_dataset_id_to_contiguous_id = from_json
        meta.thing_classes = [c["name"] for c in sorted(cats, key=lambda c: c["id"])]
        return from_json
    id_map = {int(k): int(v) for k, v in id_map.items()}
    if sorted(id_map) != json_ids:
        logger.warning(
            "%s: its categories %s differ from the metadata of dataset %r (%s); using the metadata's",
            name, json_ids, dataset_name, sorted(id_map),
        )
        return {k: v for k, v in id_map.items() if k in from_json}
    return id_map


def register_ytvis_instances(name: str, metadata: dict, json_file: str, image_root: str) -> None:
    """Register a dataset in YouTube-VIS format (lazily: nothing is read until it is loaded).

    Args:
        name: dataset name, e.g. ``"my_vis_train"``.
        metadata: extra metadata (e.g. :func:`local2global.data.categories.vis_metadata` of its classes);
            may be empty, then the JSON's categories define the classes at load time.
        json_file: the annotation file.
        image_root: the folder its ``file_names`` are relative to.
    """
    if not isinstance(name, str):
        raise TypeError(f"dataset name must be a string, got {name!r}")
    json_file, image_root = os.fspath(json_file), os.fspath(image_root)
    _register(name, metadata, json_file, image_root, lambda: load_ytvis_json(json_file, image_root, name))


def _register(name: str, metadata: dict, json_file: str, image_root: str, loader: Callable[[], List[dict]]) -> None:
    from detectron2.data import DatasetCatalog, MetadataCatalog

    DatasetCatalog.register(name, loader)
    MetadataCatalog.get(name).set(json_file=json_file, image_root=image_root, evaluator_type="ytvis", **metadata)


def builtin_splits(root: Optional[str] = None) -> Dict[str, tuple]:
    """Name -> ``(categories, json_file, image_root)`` of the built-in datasets under ``root``."""
    root = root if root is not None else datasets_root()
    j = os.path.join
    out = {}
    for year, cats in (("2019", YTVIS_2019_CATEGORIES), ("2021", YTVIS_2021_CATEGORIES)):
        base = j(root, f"ytvis_{year}")
        out[f"ytvis_{year}_train"] = (cats, j(base, "train.json"), j(base, "train", "JPEGImages"))
        out[f"ytvis_{year}_val"] = (cats, j(base, "valid.json"), j(base, "valid", "JPEGImages"))
    y22 = j(root, "ytvis_2022")
    out["ytvis_2022_val"] = (YTVIS_2022_CATEGORIES, j(y22, "valid.json"), j(y22, "valid", "JPEGImages"))
    out["ovis_train"] = (OVIS_CATEGORIES, j(root, "ovis", "annotations", "train.json"), j(root, "ovis", "train"))
    out["ovis_val"] = (OVIS_CATEGORIES, j(root, "ovis", "annotations", "valid.json"), j(root, "ovis", "valid"))
    return out


def _synthetic_loader(root: str, split: str, name: str) -> Callable[[], List[dict]]:
    def load() -> List[dict]:
        from local2global.data.synthetic import ensure_synthetic_vis

        ensure_synthetic_vis(root)
        return load_ytvis_json(os.path.join(root, f"{split}.json"), os.path.join(root, split, "JPEGImages"), name)

    return load


def register_all_builtin(root: Optional[str] = None, synthetic: Optional[str] = None) -> List[str]:
    """(Re-)register every built-in dataset; return their names.

    Called on import with the environment's roots; call it again (e.g. in tests, after changing
    ``DETECTRON2_DATASETS``) to point the built-in names at other folders: existing registrations of these
    names are replaced.

    Args:
        root: datasets root (default :func:`datasets_root`).
        synthetic: synthetic dataset root (default :func:`synthetic_root` of ``root``: ``$L2G_SYNTHETIC_ROOT``
            when set, else ``<root>/synthetic_vis``).
    """
    from detectron2.data import DatasetCatalog, MetadataCatalog

    syn_root = synthetic if synthetic is not None else synthetic_root(root)
    names = []
    entries = {k: (cats, jf, ir, None) for k, (cats, jf, ir) in builtin_splits(root).items()}
    for split in ("train", "valid"):
        name = f"synthetic_vis_{split}"
        entries[name] = (SYNTHETIC_VIS_CATEGORIES, os.path.join(syn_root, f"{split}.json"),
                         os.path.join(syn_root, split, "JPEGImages"), _synthetic_loader(syn_root, split, name))
    for name, (cats, json_file, image_root, loader) in entries.items():
        if name in DatasetCatalog:
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)
        if loader is None:
            register_ytvis_instances(name, vis_metadata(cats), json_file, image_root)
        else:
            _register(name, vis_metadata(cats), json_file, image_root, loader)
        names.append(name)
    from local2global.data.local_split import register_local_splits

    names.extend(register_local_splits(builtin_splits(root)))
    return names


register_all_builtin()
