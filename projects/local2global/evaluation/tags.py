"""Per-tag YouTube-VIS AP: the official metric on the subset of videos that carry each tag.

A tags file maps video ids to tags, e.g. the synthetic generator's sidecar ``<root>/valid_tags.json``
(:mod:`local2global.data.synthetic`), whose ``"videos"`` entry is ``{video_id: [tag, ...]}`` next to the tags'
definitions and thresholds; a plain ``{video_id: [tag, ...]}`` mapping is accepted too.

For each tag (and for ``"all"``, every video of the ground truth) the ground truth and the predictions are cut
down to the tagged videos and scored with :func:`local2global.evaluation.ytvis.evaluate_ytvis`, so each row is
exactly the AP that the official evaluator gives on that subset. Numbers are percent (``nan`` where undefined,
e.g. a tag that no video carries, or an area range without ground truth).

Command line::

    python -m local2global.evaluation.tags --gt-json valid.json --pred-json results.json --tags-json valid_tags.json
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
from collections import OrderedDict
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Union

from .params import MAX_DETS, REPORTED_STATS, STAT_NAMES
from .ytvis import evaluate_ytvis

logger = logging.getLogger(__name__)

__all__ = ["ALL_TAG", "load_tags", "evaluate_by_tag", "format_tag_table", "main"]

#: Name of the row that scores every video of the ground truth.
ALL_TAG = "all"
#: Key of the per-video tags in a tags sidecar (a file without it is read as the mapping itself).
VIDEOS_KEY = "videos"
#: Key of the ordered tag definitions in a sidecar (their order is the rows' order).
DEFINITIONS_KEY = "definitions"
#: Percent per fraction (the evaluator returns fractions; the table reports percent).
PERCENT = 100.0

TagsSource = Union[str, os.PathLike, Mapping]


def _read_json(source: Union[str, os.PathLike, Mapping, list], what: str):
    if isinstance(source, (str, os.PathLike)):
        try:
            with open(source) as f:
                return json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{what} {os.fspath(source)!r} is not valid JSON: {e}") from e
    return source


def load_tags(tags: TagsSource) -> "OrderedDict[int, List[str]]":
    """Read a tags file: ``{video_id: [tag, ...]}`` (int ids) from a sidecar or a plain mapping.

    Args:
        tags: path or parsed JSON: a sidecar (``{"videos": {id: [tags]}, "definitions": ...}``) or a mapping
            ``{id: [tags]}``.

    Raises:
        ValueError: not a mapping, a non-integer video id, or tags that are not a list of strings.
    """
    data = _read_json(tags, "tags file")
    if not isinstance(data, Mapping):
        raise ValueError(f"tags file must hold a JSON object, got {type(data).__name__}")
    videos = data.get(VIDEOS_KEY, data)
    if not isinstance(videos, Mapping):
        raise ValueError(f"tags file's {VIDEOS_KEY!r} entry must be an object {{video_id: [tags]}}")
    out: "OrderedDict[int, List[str]]" = OrderedDict()
    for vid, names in videos.items():
        try:
            key = int(vid)
        except (TypeError, ValueError) as e:
            raise ValueError(f"tags file: video id {vid!r} is not an integer") from e
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ValueError(f"tags file: tags of video {vid!r} must be a list of strings, got {names!r}")
        out[key] = list(names)
    return out


def _tag_order(tags: TagsSource, per_video: Mapping[int, List[str]]) -> List[str]:
    """The tags in the sidecar's definition order, then any others in alphabetical order."""
    data = _read_json(tags, "tags file") if not isinstance(tags, Mapping) else tags
    defined = list(data.get(DEFINITIONS_KEY, {})) if isinstance(data, Mapping) else []
    seen = {t for names in per_video.values() for t in names}
    return defined + sorted(seen - set(defined))


def _subset(gt: dict, preds: list, video_ids: Iterable[int]):
    keep = set(video_ids)
    sub_gt = dict(gt)
    sub_gt["videos"] = [v for v in gt["videos"] if v["id"] in keep]
    sub_gt["annotations"] = [a for a in gt.get("annotations", []) if a["video_id"] in keep]
    return sub_gt, [p for p in preds if p["video_id"] in keep]


def _percent(value: float) -> float:
    return value * PERCENT if value >= 0 else float("nan")


def evaluate_by_tag(
    gt: Union[str, os.PathLike, dict],
    results: Union[str, os.PathLike, list],
    tags: TagsSource,
    tag_names: Optional[Sequence[str]] = None,
    max_dets: int = MAX_DETS[-1],
) -> "OrderedDict[str, OrderedDict[str, float]]":
    """YouTube-VIS AP on the videos of each tag, and on all videos.

    Args:
        gt: ground-truth JSON (path or parsed dict) with annotations.
        results: results JSON (path or parsed list of ``{video_id, category_id, score, segmentations}``).
        tags: tags file (see :func:`load_tags`).
        tag_names: the tags to report (default: every tag of the file, in its definition order; a tag that no
            video carries still gets a row, with ``num_videos`` 0 and ``nan`` numbers).
        max_dets: the per-(video, category) cap on predictions (see :func:`evaluate_ytvis`).

    Returns:
        ``{tag: {AP, AP50, AP75, APs, APm, APl, AR1, AR10, AR100, ARs, ARm, ARl, num_videos}}`` in percent, the
        first row ``"all"``.

    Raises:
        ValueError: a tagged video id that is not in the ground truth, or malformed files.
    """
    gt_data = _read_json(gt, "ground truth")
    preds = _read_json(results, "results")
    if not isinstance(gt_data, dict) or "videos" not in gt_data:
        raise ValueError("ground truth must be a YouTube-VIS JSON object with a 'videos' list")
    if not isinstance(preds, list):
        raise ValueError(f"results must be a JSON list of predictions, got {type(preds).__name__}")
    per_video = load_tags(tags)
    gt_ids = [v["id"] for v in gt_data["videos"]]
    unknown = sorted(set(per_video) - set(gt_ids))
    if unknown:
        raise ValueError(f"tags file names videos {unknown[:5]} that are not in the ground truth")
    names = list(tag_names) if tag_names is not None else _tag_order(tags, per_video)
    rows: "OrderedDict[str, OrderedDict[str, float]]" = OrderedDict()
    for name in [ALL_TAG] + [n for n in names if n != ALL_TAG]:
        ids = gt_ids if name == ALL_TAG else [v for v in gt_ids if name in per_video.get(v, ())]
        row: "OrderedDict[str, float]" = OrderedDict((k, float("nan")) for k in STAT_NAMES)
        sub_gt, sub_preds = _subset(gt_data, preds, ids)
        if ids and sub_gt["annotations"]:
            res = evaluate_ytvis(sub_gt, sub_preds, max_dets=max_dets)
            row.update((k, _percent(res[k])) for k in STAT_NAMES)
        elif ids:
            logger.warning("tag %r: its %d videos have no ground-truth tracks; not scored", name, len(ids))
        row["num_videos"] = len(ids)
        rows[name] = row
        logger.info("tag %s: %d videos, AP %.2f", name, len(ids), row["AP"])
    return rows


def format_tag_table(rows: Mapping[str, Mapping[str, float]], keys: Sequence[str] = REPORTED_STATS) -> str:
    """A markdown (pipe) table: one row per tag, its number of videos and the reported numbers (percent)."""
    from tabulate import tabulate

    table = [[tag, int(r["num_videos"])] + [r[k] for k in keys] for tag, r in rows.items()]
    return tabulate(table, headers=["tag", "videos"] + list(keys), tablefmt="pipe", floatfmt=".2f",
                    numalign="left", missingval="nan")


def main(argv: Optional[Sequence[str]] = None) -> "OrderedDict[str, OrderedDict[str, float]]":
    """``python -m local2global.evaluation.tags --gt-json GT --pred-json RESULTS --tags-json TAGS [--json OUT]``."""
    parser = argparse.ArgumentParser(description="YouTube-VIS AP per video tag (and on all videos).")
    parser.add_argument("--gt-json", required=True, help="ground-truth JSON with annotations")
    parser.add_argument("--pred-json", required=True, help="results JSON (list of video-level predictions)")
    parser.add_argument("--tags-json", required=True, help="tags sidecar ({'videos': {id: [tags]}, ...})")
    parser.add_argument("--tags", nargs="+", default=None, help="only these tags (default: all of the file)")
    parser.add_argument("--max-dets", type=int, default=MAX_DETS[-1], help="per-(video, category) cap")
    parser.add_argument("--json", default=None, help="also write the rows to this JSON file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        rows = evaluate_by_tag(args.gt_json, args.pred_json, args.tags_json, args.tags, args.max_dets)
    except (ValueError, OSError) as e:  # malformed or missing files: one clear line, exit status 2
        parser.exit(2, f"error: {e}\n")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({t: {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()}
                       for t, r in rows.items()}, f, indent=1)
    print(format_tag_table(rows))
    return rows


if __name__ == "__main__":  # pragma: no cover
    main()
