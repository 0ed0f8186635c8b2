"""Local validation splits: a deterministic part of each training set held out for scoring without the server.

The validation sets of YouTube-VIS 2019 / 2021 and OVIS have hidden annotations, so every number on them needs a
server submission. A *local split* holds out part of the (annotated) training set instead, as IFR does (400 of
the 2,238 YouTube-VIS 2019 training videos).

The rule (fixed, so every clone and every codebase that re-implements it gets the same split):

* a video's **key** is the folder of its frames: the directory part of its first ``file_names`` entry
  (``"0043f083b5"`` for ``"0043f083b5/00000.jpg"``); a video whose first file name has no folder uses
  ``"id:<video id>"``;
* the video is held out (**val_sub**) when the first 8 bytes of ``sha256("local2global-local-val-v1:" + key)``,
  read as a big-endian unsigned integer, are below ``fraction * 2**64``; every other video is in **train_sub**;
* the fraction is :data:`LOCAL_VAL_FRACTION` = 0.18 for every dataset: about 403 of the 2,238 YouTube-VIS 2019
  training videos (IFR: 400), about 537 of the 2,985 of YouTube-VIS 2021 and about 109 of the 607 of OVIS
  (binomial spread: ± 18, ± 21, ± 9).

Keying by folder name, not by the id, keeps a video in the same half in YouTube-VIS 2019 and 2021 (2021's training
set contains 2019's videos under other ids), so a model trained on ``ytvis_2021_train_sub`` has not seen the
videos of ``ytvis_2019_val_sub``.

Registered datasets (:func:`register_local_splits`, called by
:func:`local2global.data.ytvis.register_all_builtin`): ``ytvis_2019_{train,val}_sub``,
``ytvis_2021_{train,val}_sub``, ``ovis_{train,val}_sub``: the training JSON filtered by the rule at load time
(nothing to prepare). The ``*_val_sub`` metadata carries a ``gt_filter`` so that
:class:`~local2global.evaluation.ytvis.YTVISEvaluator` scores against the held-out videos only.
``scripts/make_local_split.py`` (``l2g-make-local-split``) writes the id lists (and, on request, the two JSON
files) for other tools.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import logging
import os
import posixpath
import sys
from typing import Dict, Iterable, List, Optional, Sequence, Set, Tuple

logger = logging.getLogger(__name__)

__all__ = [
    "LOCAL_VAL_FRACTION",
    "SPLIT_SALT",
    "PARTS",
    "LOCAL_SPLIT_SOURCES",
    "video_key",
    "in_local_val",
    "split_video_ids",
    "filter_ytvis_json",
    "local_split_gt_filter",
    "load_local_split",
    "register_local_splits",
    "write_local_split",
    "main",
]

#: Fraction of a training set held out: 0.18 x 2,238 YouTube-VIS 2019 training videos = 403 (IFR holds out 400).
LOCAL_VAL_FRACTION = 0.18
#: Prefix of the hashed string; a new version of the rule would change it (and every split).
SPLIT_SALT = "local2global-local-val-v1"
#: Bytes of the digest read as the video's position in [0, 1).
_HASH_BYTES = 8
#: The two halves, as dataset-name suffixes: ``<source>_<part>`` (``ytvis_2019_val_sub``).
PARTS = ("train_sub", "val_sub")
#: Built-in training sets that have local splits: source dataset -> prefix of the split names.
LOCAL_SPLIT_SOURCES = {"ytvis_2019_train": "ytvis_2019", "ytvis_2021_train": "ytvis_2021", "ovis_train": "ovis"}


def video_key(file_names: Sequence[str], video_id: int) -> str:
    """The key a video is hashed by: the folder of its first frame, else ``"id:<video_id>"``.

    Args:
        file_names: the video's frame paths as the JSON lists them (relative to the image root).
        video_id: the video's id (used only when the first path has no folder).
    """
    first = str(file_names[0]).replace("\\", "/") if len(file_names) else ""
    folder = posixpath.dirname(posixpath.normpath(first)) if first else ""
    return folder if folder not in ("", ".") else f"id:{int(video_id)}"


def _position(key: str) -> int:
    digest = hashlib.sha256(f"{SPLIT_SALT}:{key}".encode("utf-8")).digest()
    return int.from_bytes(digest[:_HASH_BYTES], "big")


def _check_fraction(fraction: float) -> float:
    if not 0.0 < float(fraction) < 1.0:
        raise ValueError(f"the held-out fraction must be in (0, 1), got {fraction!r}")
    return float(fraction)


def in_local_val(key: str, fraction: float = LOCAL_VAL_FRACTION) -> bool:
    """Whether the video with this :func:`video_key` is held out (``val_sub``)."""
    return _position(key) < _check_fraction(fraction) * 2 ** (8 * _HASH_BYTES)


def split_video_ids(videos: Iterable[dict], fraction: float = LOCAL_VAL_FRACTION) -> Tuple[List[int], List[int]]:
    """``(train_sub ids, val_sub ids)`` (each sorted) of the ``videos`` entries of a YouTube-VIS / OVIS JSON.

    Raises:
        ValueError: a video without ``id`` / ``file_names``, or two videos with the same key (the rule would put
            them in the same half silently: a JSON that lists one folder twice is malformed).
    """
    train, val = [], []
    seen: Dict[str, int] = {}
    for i, v in enumerate(videos):
        if not isinstance(v, dict) or "id" not in v or "file_names" not in v:
            raise ValueError(f"videos[{i}] has no 'id' / 'file_names'")
        key = video_key(v["file_names"], v["id"])
        if key in seen:
            raise ValueError(f"videos {seen[key]} and {v['id']} have the same frame folder {key!r}")
        seen[key] = v["id"]
        (val if in_local_val(key, fraction) else train).append(int(v["id"]))
    return sorted(train), sorted(val)


def filter_ytvis_json(data: dict, video_ids: Iterable[int]) -> dict:
    """A copy of a YouTube-VIS / OVIS JSON with only the given videos and their annotations (other keys kept)."""
    keep: Set[int] = {int(v) for v in video_ids}
    out = {k: v for k, v in data.items() if k not in ("videos", "annotations")}
    out["videos"] = [v for v in data.get("videos", []) if int(v["id"]) in keep]
    if "annotations" in data:
        out["annotations"] = [a for a in (data["annotations"] or []) if int(a["video_id"]) in keep]
    return out


def _part_ids(data: dict, part: str, fraction: float) -> List[int]:
    if part not in PARTS:
        raise ValueError(f"part must be one of {PARTS}, got {part!r}")
    train, val = split_video_ids(data.get("videos", []), fraction)
    return train if part == "train_sub" else val


def local_split_gt_filter(data: dict, part: str = "val_sub", fraction: float = LOCAL_VAL_FRACTION) -> dict:
    """The ground-truth JSON ``data`` restricted to one half (the evaluator's ``gt_filter`` of a ``*_sub`` dataset)."""
    return filter_ytvis_json(data, _part_ids(data, part, fraction))


def load_local_split(json_file: str, image_root: str, dataset_name: Optional[str], part: str,
                     fraction: float = LOCAL_VAL_FRACTION) -> List[dict]:
    """Dataset dicts of one half of a training JSON (:func:`local2global.data.ytvis.load_ytvis_json`, filtered).

    Args:
        json_file: the official training JSON.
        image_root: the folder its ``file_names`` are relative to.
        dataset_name: the registered name of the half (its metadata gives the category map).
        part: ``"train_sub"`` or ``"val_sub"``.
        fraction: held-out fraction (:data:`LOCAL_VAL_FRACTION`).
    """
    from local2global.data.ytvis import load_ytvis_json

    if part not in PARTS:
        raise ValueError(f"part must be one of {PARTS}, got {part!r}")
    records = load_ytvis_json(json_file, image_root, dataset_name)
    out = []
    for r in records:
        rel = os.path.relpath(r["file_names"][0], image_root) if r["file_names"] else ""
        held_out = in_local_val(video_key([rel] if rel else [], r["video_id"]), fraction)
        if held_out == (part == "val_sub"):
            out.append(r)
    logger.info("%s: %d of the %d videos of %s (local split, held-out fraction %.2f)", dataset_name or part,
                len(out), len(records), json_file, fraction)
    return out


def register_local_splits(splits: Dict[str, tuple], fraction: float = LOCAL_VAL_FRACTION) -> List[str]:
    """Register ``<prefix>_train_sub`` / ``<prefix>_val_sub`` for every source of :data:`LOCAL_SPLIT_SOURCES`.

    Args:
        splits: :func:`local2global.data.ytvis.builtin_splits` (name -> ``(categories, json_file, image_root)``).
        fraction: held-out fraction.

    Returns:
        The registered names (existing registrations of them are replaced).
    """
    from detectron2.data import DatasetCatalog, MetadataCatalog

    from local2global.data.categories import vis_metadata

    names = []
    for source, prefix in LOCAL_SPLIT_SOURCES.items():
        cats, json_file, image_root = splits[source]
        for part in PARTS:
            name = f"{prefix}_{part}"
            if name in DatasetCatalog:
                DatasetCatalog.remove(name)
                MetadataCatalog.remove(name)
            DatasetCatalog.register(name, functools.partial(load_local_split, json_file, image_root, name, part,
                                                            fraction))
            MetadataCatalog.get(name).set(
                json_file=json_file, image_root=image_root, evaluator_type="ytvis", local_split_source=source,
                local_split_part=part, local_split_fraction=fraction,
                gt_filter=functools.partial(local_split_gt_filter, part=part, fraction=fraction),
                **vis_metadata(cats),
            )
            names.append(name)
    return names


def write_local_split(json_file: str, output_dir: str, prefix: str, fraction: float = LOCAL_VAL_FRACTION,
                      write_json: bool = False) -> Dict[str, List[int]]:
    """Write the id lists (and optionally the JSON files) of both halves of a training JSON.

    Files in ``output_dir``: ``<prefix>_train_sub_ids.txt`` / ``<prefix>_val_sub_ids.txt`` (one video id per line,
    ascending), ``<prefix>_local_split.json`` (the rule, the counts and per half the ids with their keys), and with
    ``write_json`` ``<prefix>_train_sub.json`` / ``<prefix>_val_sub.json`` (the official JSON filtered).

    Returns:
        ``{"train_sub": ids, "val_sub": ids}``.
    """
    from local2global.evaluation.results_io import atomic_write_json, load_json

    data, _ = load_json(json_file, "annotation")
    if not isinstance(data, dict) or not isinstance(data.get("videos"), list):
        raise ValueError(f"{json_file!r} is not a YouTube-VIS / OVIS JSON (no 'videos' list)")
    train, val = split_video_ids(data["videos"], fraction)
    parts = {"train_sub": train, "val_sub": val}
    keys = {int(v["id"]): video_key(v["file_names"], v["id"]) for v in data["videos"]}
    os.makedirs(output_dir, exist_ok=True)
    for part, ids in parts.items():
        path = os.path.join(output_dir, f"{prefix}_{part}_ids.txt")
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.write("".join(f"{i}\n" for i in ids))
        os.replace(tmp, path)
        if write_json:
            atomic_write_json(filter_ytvis_json(data, ids), os.path.join(output_dir, f"{prefix}_{part}.json"))
    summary = {
        "source": os.path.abspath(json_file),
        "rule": f"sha256('{SPLIT_SALT}:' + frame folder)[:{_HASH_BYTES}] < fraction * 2**{8 * _HASH_BYTES}",
        "fraction": fraction,
        "num_videos": len(train) + len(val),
        **{f"num_{part}": len(ids) for part, ids in parts.items()},
        **{part: [{"id": i, "key": keys[i]} for i in ids] for part, ids in parts.items()},
    }
    atomic_write_json(summary, os.path.join(output_dir, f"{prefix}_local_split.json"))
    return parts


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``l2g-make-local-split`` / ``scripts/make_local_split.py``: write the local split of official training JSONs."""
    parser = argparse.ArgumentParser(
        description="Write the local validation split (id lists of train_sub / val_sub) of YouTube-VIS / OVIS "
                    "training JSONs (see local2global.data.local_split for the rule).")
    parser.add_argument("--json", nargs="+", default=None,
                        help="training JSON(s); default: the built-in ones found under $DETECTRON2_DATASETS "
                             "(datasets/ytvis_2019/train.json, datasets/ytvis_2021/train.json, "
                             "datasets/ovis/annotations/train.json)")
    parser.add_argument("--prefix", nargs="+", default=None,
                        help="file-name prefix per --json (default: the built-in prefix, else the JSON's stem)")
    parser.add_argument("--output", default=None,
                        help="output folder (default: local_split/ beside each JSON)")
    parser.add_argument("--fraction", type=float, default=LOCAL_VAL_FRACTION,
                        help=f"held-out fraction (default {LOCAL_VAL_FRACTION}; the registered *_sub datasets "
                             "use the default)")
    parser.add_argument("--write-json", action="store_true", help="also write the two filtered JSON files")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if not 0.0 < args.fraction < 1.0:
        parser.error(f"--fraction must be in (0, 1), got {args.fraction}")

    jobs: List[Tuple[str, str]] = []
    if args.json:
        prefixes = args.prefix or []
        if prefixes and len(prefixes) != len(args.json):
            parser.error(f"--prefix gives {len(prefixes)} names for {len(args.json)} --json files")
        for i, path in enumerate(args.json):
            stem = os.path.splitext(os.path.basename(path))[0]
            jobs.append((path, prefixes[i] if prefixes else stem))
    else:
        from local2global.data.ytvis import builtin_splits, datasets_root

        splits = builtin_splits()
        for source, prefix in LOCAL_SPLIT_SOURCES.items():
            path = splits[source][1]
            if os.path.isfile(path):
                jobs.append((path, prefix))
        if not jobs:
            parser.exit(2, f"error: no official training JSON under {os.path.abspath(datasets_root())!r} "
                           "(set DETECTRON2_DATASETS or pass --json)\n")
    for path, prefix in jobs:
        if not os.path.isfile(path):
            parser.exit(2, f"error: training JSON {path!r} does not exist\n")
        out = args.output or os.path.join(os.path.dirname(os.path.abspath(path)), "local_split")
        try:
            parts = write_local_split(path, out, prefix, args.fraction, args.write_json)
        except ValueError as e:
            parser.exit(2, f"error: {path}: {e}\n")
        total = len(parts["train_sub"]) + len(parts["val_sub"])
        print(f"{prefix}: {total} videos -> train_sub {len(parts['train_sub'])}, val_sub {len(parts['val_sub'])} "
              f"({os.path.join(out, prefix + '_{train,val}_sub_ids.txt')})")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
