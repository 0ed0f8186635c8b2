"""YouTube-VIS / OVIS video instance segmentation AP: fast evaluation, the detectron2 evaluator and a CLI.

This module holds :func:`evaluate_ytvis`, :class:`YTVISEvaluator`, :func:`format_results_table` and the CLI
(``python -m local2global.evaluation.ytvis``); the stages live in their own modules (named below) and their
public names are re-exported here.

The metric is the official one of the ``youtubevos/cocoapi`` fork (``PythonAPI/pycocotools/ytvoseval.py``),
restated here (SPEC §6):

* IoU of a predicted track ``d`` and a ground-truth track ``g`` = Σ_t |d_t ∩ g_t| / Σ_t |d_t ∪ g_t|; a frame
  where only one side has a mask adds that mask's area to the union, null frames are empty, and an empty
  union gives IoU 0;
* evaluation per (video, category), at most ``max_dets`` (100) predictions per pair, kept by a *stable* sort
  on descending score (ties keep file order);
* a track's area for the small / medium / large ranges is the mean of the truthy entries of the ground truth's
  ``areas`` field (null and 0 dropped, 0 if none); a prediction's is the same rule on its own RLE areas;
* crowd ground truth only gets the ignore flag (COCO greedy matching, where a crowd track may absorb several
  predictions); its IoU is the ordinary one;
* area ranges all / small [0, 128²] / medium [128², 256²] / large [256², 1e10] (bounds inclusive, as official);
  maxDets 1, 10, 100; COCO's 101-point interpolated precision and the 12 summary numbers.

How it is fast (vs. the official per-pair, per-frame ``merge`` + ``area`` loop, restated in
:mod:`local2global.evaluation.ytvis_reference`); every shortcut is exact, and each is tested against the code
it replaces (``tests/test_ytvis_fast.py``):

* loading (:mod:`.results_io`; :mod:`.results_parse`, :mod:`.predictions`): the RLE objects of a results file
  are cut out by a regex pass over the memory-mapped file and stay ``bytes`` (what pycocotools reads); only the
  small remainder is parsed (orjson); the predictions are validated in bulk (C-level ``map`` / ``set`` passes
  instead of Python code per frame), and every mask's area comes from batched pycocotools ``area`` calls while
  the bytes are cache-hot;
* pruning (:func:`iou_upper_bound_prunes`, :mod:`.track_iou`): ``IoU <= S / (A + B - S)`` with
  ``S = Σ_t min(|d_t|, |g_t|)``; a pair whose bound is below 0.5 can match at no threshold, so its IoU is never
  computed (on the benchmark sets 22% of the same-category pairs remain, 6% in crowded scenes);
* IoU of the remaining pairs (:mod:`.matching`): ONE ``pycocotools.mask.iou`` call per video walks exactly the
  needed (pair, frame) combinations (distinct declared sizes keep it from walking any other); the integer
  intersection is recovered exactly from each frame's IoU, summed over frames, and the video IoU is the float64
  quotient of the exact integers, bit-identical to the official one;
* matching (:mod:`.matching`): predictions with a single candidate gt (IoU >= 0.5) are matched in bulk (a
  non-crowd gt goes to its first candidate in score order reaching the threshold); (video, category) pairs
  where a prediction has two candidates run the official greedy loop (:func:`_greedy_matches`);
* accumulate (:func:`accumulate_events`, :mod:`.accumulate`): pycocotools' ``accumulate`` computed from the
  true-positive events and false-positive running sums (the precision envelope only changes at true positives),
  vectorised over categories; ``summarize`` is pycocotools' own (the official parameters: :mod:`.params`).
* Python's cyclic garbage collector is paused during the evaluation (:func:`gc_paused`).

Returned numbers: :func:`evaluate_ytvis` returns raw fractions in [0, 1] (``-1`` where undefined, e.g. no
ground truth in an area range), as pycocotools does; :class:`YTVISEvaluator` and the CLI report percent
(detectron2 convention, ``nan`` where undefined).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import itertools
import logging
import os
import time
from collections import OrderedDict
from typing import Dict, Iterable, List, Optional, Sequence

import numpy as np

# The stages' names are re-exported here, so that every name keeps its import path (the private ones are what
# the tests compare against pycocotools and the reference).
from .accumulate import _accumulate, _PrecomputedCOCOeval, accumulate_events, dense_to_events, eval_imgs_to_events
from .matching import _greedy_matches, _Matches
from .params import AREA_LABELS, AREA_RANGES, LONG_SHORT_KEYS, MAX_DETS, REPORTED_STATS, STAT_NAMES
from .results_io import (
    RESULTS_JSON_NAME,
    GroundTruth,
    JsonSource,
    PredictionArrays,
    Track,
    YTVISFormatError,
    atomic_write_json,
    load_ground_truth,
    load_json,
    load_prediction_arrays,
    rle_counts,
    write_results_zip,
)
from .track_iou import iou_upper_bound_prunes, video_track_ious

logger = logging.getLogger(__name__)

#: File (in the evaluator's output_dir) that holds the ground truth scored for a dataset with a ``gt_filter``.
GT_SUBSET_JSON_NAME = "ground_truth.json"

__all__ = [
    "AREA_RANGES",
    "AREA_LABELS",
    "MAX_DETS",
    "STAT_NAMES",
    "REPORTED_STATS",
    "video_track_ious",
    "iou_upper_bound_prunes",
    "accumulate_events",
    "gc_paused",
    "evaluate_ytvis",
    "format_results_table",
    "YTVISEvaluator",
    "main",
]


@contextlib.contextmanager
def gc_paused():
    """Pause Python's cyclic garbage collector (restored on exit).

    Parsing a results file creates millions of small dicts / lists / strings, none of them in reference
    cycles; with the collector running, its generational passes re-traverse them over and over (measured: JSON
    loading 2-3x slower). Reference counting still frees everything as usual.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


# ----------------------------------------------------------------------------------------------------------
# Public evaluation function
# ----------------------------------------------------------------------------------------------------------
def _read_id_list(ids: Optional[Iterable]) -> Optional[List[int]]:
    if ids is None:
        return None
    if isinstance(ids, (str, os.PathLike)):
        with open(ids) as f:
            return [int(tok) for tok in f.read().replace(",", " ").split()]
    return [int(i) for i in ids]


def evaluate_ytvis(
    gt: JsonSource,
    results: JsonSource,
    long_video_ids: Optional[Iterable[int]] = None,
    max_dets: int = MAX_DETS[-1],
    timings: Optional[dict] = None,
) -> "OrderedDict[str, float]":
    """Score a YouTube-VIS / OVIS results file with the official ``ytvoseval`` metric.

    Args:
        gt: ground-truth JSON (path or parsed dict) with annotations.
        results: results JSON (path or parsed list of ``{video_id, category_id, score, segmentations}``).
        long_video_ids: optional ids (or a path to a whitespace/comma separated file) of the "long" videos of
            YouTube-VIS 2022: the long and the short videos are then also scored separately.
        max_dets: the per-(video, category) cap on predictions (the last maxDets; >= 10).
        timings: if a dict is given, the wall time of each stage (s) is stored in it (benchmarks).

    Returns:
        OrderedDict of the 12 pycocotools numbers (:data:`STAT_NAMES`) as raw fractions in [0, 1], -1 where
        undefined; with ``long_video_ids`` also ``AP_long``, ``AP_short`` and their mean ``AP_mean``.

    Raises:
        ValueError (:class:`YTVISFormatError`): malformed files (naming the file and the video id), a gt
            without annotations, or ``max_dets < 10``.
    """
    if not (isinstance(max_dets, int) and max_dets >= MAX_DETS[1]):
        raise ValueError(f"max_dets must be an integer >= {MAX_DETS[1]}, got {max_dets!r}")
    with gc_paused():
        return _evaluate_ytvis(gt, results, long_video_ids, max_dets, timings)


def _evaluate_ytvis(gt, results, long_video_ids, max_dets, timings=None) -> "OrderedDict[str, float]":
    times = {} if timings is None else timings
    tic = time.perf_counter()
    gt_data = load_ground_truth(gt)
    if not gt_data.has_annotations:
        raise YTVISFormatError(
            f"ground truth {gt_data.name!r} has no annotations (a hidden validation/test split?): it cannot be "
            "scored; submit the results to the benchmark server instead"
        )
    times["load_gt_s"] = time.perf_counter() - tic
    tic = time.perf_counter()
    preds = load_prediction_arrays(results, gt_data, times)
    times["load_results_s"] = time.perf_counter() - tic
    matches = _Matches(gt_data, preds, max_dets, times)
    times["pairs"], times["candidate_pairs"] = matches.num_pairs, matches.num_candidates
    video_ids = sorted(gt_data.videos)
    dets = [MAX_DETS[0], MAX_DETS[1], max_dets]
    tic = time.perf_counter()
    stats = _accumulate(matches, video_ids, None, gt_data.category_ids, dets)
    out = OrderedDict((k, float(v)) for k, v in zip(STAT_NAMES, stats))
    long_ids = _read_id_list(long_video_ids)
    if long_ids is not None:
        long_set = set(long_ids)
        unknown = sorted(long_set - set(video_ids))
        if unknown:
            raise YTVISFormatError(f"long_video_ids {unknown[:5]} are not videos of the ground truth {gt_data.name!r}")
        subsets = {
            "AP_long": [v for v in video_ids if v in long_set],
            "AP_short": [v for v in video_ids if v not in long_set],
        }
        for key, subset in subsets.items():
            out[key] = (float(_accumulate(matches, video_ids, subset, gt_data.category_ids, dets)[0])
                        if subset else -1.0)
        valid = [out[k] for k in subsets if out[k] >= 0]
        out["AP_mean"] = float(np.mean(valid)) if len(valid) == len(subsets) else -1.0
    times["accumulate_s"] = time.perf_counter() - tic
    return out



def format_results_table(results: Dict[str, float], percent_input: bool = False) -> str:
    """A one-row tabulate table of the reported numbers (percent, 2 decimals; ``nan`` where undefined).

    Args:
        results: output of :func:`evaluate_ytvis` (raw fractions) or of :class:`YTVISEvaluator`
            (``percent_input=True``).
    """
    from tabulate import tabulate

    keys = [k for k in REPORTED_STATS + LONG_SHORT_KEYS if k in results]
    row = []
    for k in keys:
        v = results[k]
        if not percent_input:
            v = v * 100 if v >= 0 else float("nan")
        row.append(v)
    return tabulate([row], headers=keys, tablefmt="pipe", floatfmt=".2f", numalign="left")


def _to_percent(results: Dict[str, float], keys: Sequence[str]) -> "OrderedDict[str, float]":
    return OrderedDict((k, results[k] * 100 if results[k] >= 0 else float("nan")) for k in keys if k in results)


# ----------------------------------------------------------------------------------------------------------
# detectron2 evaluator
# ----------------------------------------------------------------------------------------------------------
try:
    from detectron2.evaluation import DatasetEvaluator as _DatasetEvaluatorBase
except ImportError:  # pragma: no cover - detectron2 is a dependency; keep the CLI importable without it
    _DatasetEvaluatorBase = object


class YTVISEvaluator(_DatasetEvaluatorBase):
    """detectron2 ``DatasetEvaluator`` for YouTube-VIS / OVIS video instance segmentation.

    ``process`` receives the model's eval outputs (SPEC §5, one dict per video:
    ``{"video_id", "image_size", "scores": [float]*k, "labels": [int]*k (contiguous),
    "segmentations": [[RLE dict with str counts, or None]*length]*k}``) and turns them into official results
    entries (contiguous labels mapped back to dataset category ids through the metadata's
    ``thing_dataset_id_to_contiguous_id``). ``evaluate`` gathers them from all processes, writes
    ``results.json`` atomically to ``output_dir`` and, on the main process:

    * if the dataset's gt JSON (``MetadataCatalog.get(dataset_name).json_file``) has annotations, scores it
      and returns ``OrderedDict(segm={AP, AP50, AP75, APs, APm, APl, AR1, AR10[, AP_long, AP_short, AP_mean]})``
      in percent;
    * otherwise (hidden validation/test sets) writes the server-ready ``results.zip`` and returns ``{}``.

    A dataset whose metadata has a ``gt_filter`` (a callable: parsed gt JSON -> the gt JSON to score against, e.g.
    the held-out half of a training set, :mod:`local2global.data.local_split`) is scored against the filtered
    JSON, which is written to ``<output_dir>/ground_truth.json`` (so that errors and later re-scoring name a file).

    Args:
        dataset_name: a registered dataset with ``json_file`` metadata.
        output_dir: where ``results.json`` / ``results.zip`` go (nothing is written if None).
        distributed: gather predictions from every process (main process evaluates).
        max_dets: per-(video, category) cap on predictions.
        long_video_ids: YouTube-VIS 2022 long-video ids (list, or a path to an id file); defaults to the
            metadata's ``long_video_ids`` if it has one.
    """

    def __init__(
        self,
        dataset_name: str,
        output_dir: Optional[str] = None,
        distributed: bool = True,
        max_dets: int = MAX_DETS[-1],
        long_video_ids: Optional[Iterable[int]] = None,
    ):
        from detectron2.data import MetadataCatalog

        self._dataset_name = dataset_name
        self._output_dir = output_dir
        self._distributed = distributed
        self._max_dets = max_dets
        meta = MetadataCatalog.get(dataset_name)
        self._json_file = meta.get("json_file", None)
        if self._json_file is None:
            raise ValueError(f"dataset {dataset_name!r} has no 'json_file' metadata: the evaluator needs the gt JSON")
        if long_video_ids is None:
            long_video_ids = meta.get("long_video_ids", None)
        self._long_video_ids = _read_id_list(long_video_ids)
        self._gt_filter = meta.get("gt_filter", None)
        id_map = meta.get("thing_dataset_id_to_contiguous_id", None)
        if id_map is None:
            # detectron2's convention when the metadata lacks the map: sorted dataset ids -> 0..K-1.
            gt_json, _ = load_json(self._json_file, "ground truth")
            cat_ids = sorted(int(c["id"]) for c in gt_json.get("categories", []))
            id_map = {c: i for i, c in enumerate(cat_ids)}
            logger.warning("dataset %r has no thing_dataset_id_to_contiguous_id; using sorted gt category ids", dataset_name)
        self._contiguous_to_dataset = {int(v): int(k) for k, v in id_map.items()}
        self._predictions: List[dict] = []

    def reset(self) -> None:
        self._predictions = []

    def process(self, inputs: List[dict], outputs: List[dict]) -> None:
        """Convert each video's output dict to results entries.

        Raises:
            ValueError: an output with missing keys, inconsistent list lengths or an unknown label.
        """
        for inp, out in zip(inputs, outputs):
            vid = out.get("video_id", inp.get("video_id") if isinstance(inp, dict) else None)
            where = f"dataset {self._dataset_name!r}, video_id {vid}"
            if vid is None:
                raise ValueError(f"{where}: neither the model output nor the input has a 'video_id'")
            for key in ("scores", "labels", "segmentations"):
                if key not in out:
                    raise ValueError(f"{where}: model output misses key '{key}'")
            scores, labels, segs = list(out["scores"]), list(out["labels"]), list(out["segmentations"])
            if not (len(scores) == len(labels) == len(segs)):
                raise ValueError(
                    f"{where}: model output has {len(scores)} scores, {len(labels)} labels, {len(segs)} tracks"
                )
            for score, label, track in zip(scores, labels, segs):
                label = int(label)
                if label not in self._contiguous_to_dataset:
                    raise ValueError(f"{where}: contiguous label {label} is not a category of the dataset")
                self._predictions.append(
                    {
                        "video_id": int(vid),
                        "category_id": self._contiguous_to_dataset[label],
                        "score": float(score),
                        "segmentations": [_jsonable_rle(r) for r in track],
                    }
                )

    def evaluate(self) -> "OrderedDict[str, Dict[str, float]]":
        from detectron2.utils import comm

        if self._distributed:
            comm.synchronize()
            gathered = comm.gather(self._predictions, dst=0)
            if not comm.is_main_process():
                return OrderedDict()
            predictions = list(itertools.chain.from_iterable(gathered))
        else:
            predictions = self._predictions
        if not predictions:
            logger.warning("[YTVISEvaluator] %s: no predictions were produced", self._dataset_name)

        if self._output_dir:
            path = os.path.join(self._output_dir, RESULTS_JSON_NAME)
            atomic_write_json(predictions, path)
            logger.info("[YTVISEvaluator] wrote %d predictions to %s", len(predictions), path)

        gt_json, _ = load_json(self._json_file, "ground truth")
        gt_source = self._json_file
        if self._gt_filter is not None and isinstance(gt_json, dict):
            gt_json = self._gt_filter(gt_json)
            gt_source = gt_json
            if self._output_dir:
                gt_source = os.path.join(self._output_dir, GT_SUBSET_JSON_NAME)
                atomic_write_json(gt_json, gt_source)
            logger.info("[YTVISEvaluator] %s: scoring against %d videos of %s (the dataset's gt_filter)",
                        self._dataset_name, len(gt_json.get("videos", [])), self._json_file)
        if not isinstance(gt_json, dict) or not gt_json.get("annotations"):
            if not self._output_dir:
                logger.warning(
                    "[YTVISEvaluator] %s has no annotations and no output_dir is set: nothing to score or submit",
                    self._json_file,
                )
                return OrderedDict()
            zip_path = os.path.join(self._output_dir, "results.zip")
            write_results_zip(predictions, zip_path)
            logger.info(
                "[YTVISEvaluator] %s has no annotations (hidden split): wrote %s for the benchmark server",
                self._json_file,
                zip_path,
            )
            return OrderedDict()

        del gt_json  # evaluate from the path, so that errors name the gt file
        try:
            raw = evaluate_ytvis(
                gt_source, predictions, long_video_ids=self._long_video_ids, max_dets=self._max_dets
            )
        except YTVISFormatError as e:
            written = os.path.join(self._output_dir, RESULTS_JSON_NAME) if self._output_dir else "not written"
            raise YTVISFormatError(
                f"[YTVISEvaluator] dataset {self._dataset_name!r}: the predictions (results file: {written}) "
                f"cannot be scored: {e}"
            ) from e
        res = _to_percent(raw, REPORTED_STATS + LONG_SHORT_KEYS)
        logger.info("[YTVISEvaluator] %s segm AP:\n%s", self._dataset_name, format_results_table(res, percent_input=True))
        return OrderedDict(segm=res)


def _jsonable_rle(rle: Optional[dict]) -> Optional[dict]:
    """RLE with ``str`` counts (pycocotools' ``encode`` gives bytes), ``None`` kept."""
    if rle is None:
        return None
    counts = rle["counts"]
    if isinstance(counts, bytes):
        counts = counts.decode("ascii")
    return {"size": [int(s) for s in rle["size"]], "counts": counts}


# ----------------------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------------------
def main(argv: Optional[Sequence[str]] = None) -> "OrderedDict[str, float]":
    """``python -m local2global.evaluation.ytvis --gt GT.json --results RESULTS.json [--long-video-ids ids.txt]``."""
    parser = argparse.ArgumentParser(description="Score a YouTube-VIS / OVIS results file (official ytvoseval AP).")
    parser.add_argument("--gt", required=True, help="ground-truth JSON with annotations")
    parser.add_argument("--results", required=True, help="results JSON (list of video-level predictions)")
    parser.add_argument("--long-video-ids", default=None, help="file of long-video ids (YouTube-VIS 2022)")
    parser.add_argument("--max-dets", type=int, default=MAX_DETS[-1], help="per-(video, category) cap")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        res = evaluate_ytvis(args.gt, args.results, long_video_ids=args.long_video_ids, max_dets=args.max_dets)
    except (ValueError, OSError) as e:  # malformed or missing files: one clear line, exit status 2
        parser.exit(2, f"error: {e}\n")
    print(format_results_table(res))
    return res


def main_cli(argv: Optional[Sequence[str]] = None) -> int:
    """The ``l2g-score`` console entry point: :func:`main`, exit status 0 (a console script exits with the
    return value, and :func:`main` returns the results)."""
    main(argv)
    return 0


if __name__ == "__main__":  # pragma: no cover
    main()
