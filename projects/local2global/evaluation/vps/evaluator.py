"""``VPSEvaluator``: detectron2 ``DatasetEvaluator`` for video panoptic segmentation (VPQ / STQ).

Prediction contract (one output dict per video, see ``docs/VPS.md``)::

    {"video_id": int | str, "video_name": str (optional),
     "panoptic_seg": [(H, W) integer map] * T      # numpy or torch, id 0 = void, ids in [1, 2^24)
                     or one (T, H, W) array,
     "segments_info": [[{"id": int, "category_id": contiguous int}, ...]] * T}

at the ground truth's resolution, one map per annotated frame in order; the same object keeps its id over the
video (that is what VPQ's tubes and STQ's association measure). ``category_id`` is the contiguous class (the
model's label); it is mapped back to the dataset id through the metadata's ``stuff_dataset_id_to_contiguous_id``.
Listed segments without pixels are dropped (the official format forbids them); pixels of unlisted ids are an
error.

``process`` writes each video at once in the official submission format (``<output_dir>/pan_pred/<video>/<frame>.png``
RGB ids, the ground truth's frame names), so memory holds one video; ``evaluate`` gathers the ``segments_info`` of
all processes, writes ``<output_dir>/pred.json`` and scores it with :func:`.evaluate.evaluate_vps` against the
dataset's ``panoptic_json`` / ``panoptic_root``. The written folder is what ``eval_vpq_vspw.py --submit_dir`` reads.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import tempfile
from collections import OrderedDict
from typing import Dict, List, Optional

import numpy as np
from PIL import Image

from .evaluate import evaluate_vps, format_vps_table, write_results_json
from .panoptic_io import MAX_RGB_ID, VPSFormatError, id_to_rgb

logger = logging.getLogger(__name__)

__all__ = ["VPSEvaluator", "write_vps_predictions", "PRED_JSON_NAME", "PRED_DIR_NAME"]

try:
    from detectron2.evaluation import DatasetEvaluator as _DatasetEvaluatorBase
except ImportError:  # pragma: no cover - detectron2 is installed with the project
    _DatasetEvaluatorBase = object

PRED_JSON_NAME = "pred.json"
PRED_DIR_NAME = "pan_pred"


def _as_numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def write_vps_predictions(video_name: str, file_names: List[str], size, panoptic_seg, segments_info,
                          contiguous_to_dataset: Dict[int, int], pred_dir: str) -> dict:
    """Write one video's PNGs; return its ``pred.json`` entry.

    Args:
        video_name: the ground-truth video id. file_names: its frames' PNG names. size: ``(H, W)``.
        panoptic_seg / segments_info: the prediction contract above.
        contiguous_to_dataset: contiguous class -> dataset category id. pred_dir: the ``pan_pred`` folder.

    Raises:
        VPSFormatError: naming the video and frame: wrong frame count or size, ids out of range, pixels of an id
            not in ``segments_info``, an unknown class.
    """
    where = f"video {video_name!r}"
    maps = list(panoptic_seg)  # a list of (H, W) maps, or a (T, H, W) array / tensor
    if len(maps) != len(file_names) or len(segments_info) != len(file_names):
        raise VPSFormatError(f"{where}: {len(maps)} panoptic maps and {len(segments_info)} segments_info lists, "
                             f"the ground truth has {len(file_names)} frames")
    os.makedirs(os.path.join(pred_dir, video_name), exist_ok=True)
    frames = []
    for t, (m, segs) in enumerate(zip(maps, segments_info)):
        fw = f"{where}, frame {t} ({file_names[t]})"
        m = _as_numpy(m)
        if m.shape != tuple(size):
            raise VPSFormatError(f"{fw}: panoptic map of shape {m.shape}, the ground truth is {tuple(size)}")
        ids, counts = np.unique(m, return_counts=True)
        if ids.size and (ids[0] < 0 or ids[-1] > MAX_RGB_ID):
            raise VPSFormatError(f"{fw}: ids must lie in [0, {MAX_RGB_ID}], got [{ids[0]}, {ids[-1]}]")
        present = set(ids.tolist()) - {0}
        listed = {}
        for s in segs:
            sid, label = int(s["id"]), int(s["category_id"])
            if sid == 0:
                raise VPSFormatError(f"{fw}: segment id 0 is void and cannot be listed")
            if label not in contiguous_to_dataset:
                raise VPSFormatError(f"{fw}: segment {sid} has unknown class {label}")
            if sid in listed:
                raise VPSFormatError(f"{fw}: segment id {sid} listed twice")
            listed[sid] = contiguous_to_dataset[label]
        unlisted = sorted(present - set(listed))
        if unlisted:
            raise VPSFormatError(f"{fw}: ids {unlisted[:10]} have pixels but are not in segments_info")
        Image.fromarray(id_to_rgb(m)).save(os.path.join(pred_dir, video_name, file_names[t]))
        frames.append({"image_id": os.path.splitext(file_names[t])[0], "file_name": file_names[t],
                       "segments_info": [{"id": i, "category_id": c} for i, c in listed.items() if i in present]})
    return {"video_id": video_name, "annotations": frames}


class VPSEvaluator(_DatasetEvaluatorBase):
    """VPQ / STQ of a video panoptic model on a registered dataset with ``panoptic_json`` / ``panoptic_root``.

    Args:
        dataset_name: e.g. ``vipseg_val`` (:mod:`local2global.data.vipseg`).
        output_dir: where ``pan_pred/``, ``pred.json`` and ``vps_results.json`` go (a temporary folder if None;
            with several processes it must be a folder they all see).
        distributed: gather from every process (the main one scores).
        num_workers: processes for the scoring pass.
    """

    def __init__(self, dataset_name: str, output_dir: Optional[str] = None, distributed: bool = True,
                 num_workers: int = 0):
        from detectron2.data import MetadataCatalog

        meta = MetadataCatalog.get(dataset_name)
        self._dataset_name = dataset_name
        self._gt_json = meta.get("panoptic_json", None)
        self._gt_dir = meta.get("panoptic_root", None)
        if not self._gt_json or not self._gt_dir:
            raise ValueError(f"dataset {dataset_name!r} needs 'panoptic_json' and 'panoptic_root' metadata")
        with open(self._gt_json) as f:
            gt = json.load(f)
        self._videos = {v["video_id"]: v for v in gt["videos"]}
        self._names_sorted = sorted(self._videos)  # the loaders' integer video_id is the position in this order
        id_map = meta.get("stuff_dataset_id_to_contiguous_id", None)
        if id_map is None:
            id_map = {int(c["id"]): i for i, c in enumerate(sorted(gt["categories"], key=lambda c: c["id"]))}
        self._contiguous_to_dataset = {int(v): int(k) for k, v in id_map.items()}
        self._distributed = distributed
        self._num_workers = num_workers
        self._output_dir = output_dir
        self.reset()

    def reset(self) -> None:
        self._entries: List[dict] = []
        self._dir = self._output_dir or tempfile.mkdtemp(prefix="vps_eval_")
        os.makedirs(os.path.join(self._dir, PRED_DIR_NAME), exist_ok=True)

    def _video_name(self, inp: dict, out: dict) -> str:
        for d in (out, inp):
            if isinstance(d, dict) and isinstance(d.get("video_name"), str):
                return d["video_name"]
        vid = out.get("video_id", inp.get("video_id") if isinstance(inp, dict) else None)
        if isinstance(vid, str):
            return vid
        if isinstance(vid, int) and 0 <= vid < len(self._names_sorted):
            return self._names_sorted[vid]
        raise VPSFormatError(f"dataset {self._dataset_name!r}: cannot tell the video of an output (video_id {vid!r})")

    def process(self, inputs: List[dict], outputs: List[dict]) -> None:
        """Write each video's prediction PNGs; keep its ``pred.json`` entry."""
        for inp, out in zip(inputs, outputs):
            name = self._video_name(inp, out)
            if name not in self._videos:
                raise VPSFormatError(f"dataset {self._dataset_name!r}: video {name!r} is not in {self._gt_json!r}")
            for key in ("panoptic_seg", "segments_info"):
                if key not in out:
                    raise VPSFormatError(f"video {name!r}: the model output misses key {key!r}")
            images = self._videos[name]["images"]
            size = (images[0]["height"], images[0]["width"])
            self._entries.append(write_vps_predictions(
                name, [im["file_name"] for im in images], size, out["panoptic_seg"], out["segments_info"],
                self._contiguous_to_dataset, os.path.join(self._dir, PRED_DIR_NAME)))

    def evaluate(self) -> "OrderedDict[str, Dict[str, float]]":
        """Score on the main process: ``OrderedDict(vps={VPQ, VPQ_th, VPQ_st, STQ, AQ, SQ, VPQ@k...})`` (percent)."""
        entries = self._entries
        if self._distributed:
            from detectron2.utils import comm

            comm.synchronize()
            gathered = comm.gather(entries, dst=0)
            if not comm.is_main_process():
                return OrderedDict()
            entries = list(itertools.chain.from_iterable(gathered))
        missing = sorted(set(self._videos) - {e["video_id"] for e in entries})
        if missing:
            logger.warning("[VPSEvaluator] %s: %d videos have no prediction (e.g. %r): not scored",
                           self._dataset_name, len(missing), missing[0])
            return OrderedDict()
        pred_json = os.path.join(self._dir, PRED_JSON_NAME)
        with open(pred_json, "w") as f:
            json.dump({"annotations": entries}, f)
        res = evaluate_vps(self._gt_json, self._gt_dir, pred_json, os.path.join(self._dir, PRED_DIR_NAME),
                           num_workers=self._num_workers)
        write_results_json(res, os.path.join(self._dir, "vps_results.json"))
        logger.info("[VPSEvaluator] %s (predictions in %s):\n%s", self._dataset_name, self._dir, format_vps_table(res))
        summary = {k: float(res[k]) for k in ("VPQ", "VPQ_th", "VPQ_st", "STQ", "AQ", "SQ")}
        for w in res["per_window"]:
            summary[f"VPQ@k{w['k']}"] = float(w["All"]["pq"])
        return OrderedDict(vps=summary)
