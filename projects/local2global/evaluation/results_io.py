"""Reading, validating and atomically writing YouTube-VIS / OVIS ground truth and results JSON.

The fast evaluator (:mod:`local2global.evaluation.ytvis`) parses its inputs through the functions gathered here,
so every malformed file is reported the same way: a :class:`YTVISFormatError` (a ``ValueError``) whose message
names the file, the video id and the offending key. This module holds the atomic writing of results files and
the benchmark-server zip, and is the public import point of the loaders, which live in their own modules:

* :mod:`.ytvis_format` -- the records (:class:`VideoInfo`, :class:`Track`, :class:`GroundTruth`), JSON loading
  (:func:`load_json`) and the per-frame segmentation converter (:func:`to_compressed_rle`; the accepted
  encodings are listed there);
* :mod:`.ground_truth` -- :func:`load_ground_truth` (bulk validation, the detailed validator for the messages);
* :mod:`.results_parse` -- :func:`parse_results_skeleton`, the memory-mapped regex-cut parser of results files;
* :mod:`.predictions` -- :func:`load_prediction_arrays` / :func:`load_predictions` (bulk validation of the
  skeleton or of the parsed file, the per-prediction validator for the messages).

Results files are read by :func:`load_prediction_arrays` as flat arrays: a local file is first parsed as a
skeleton (:func:`parse_results_skeleton`: the RLE objects cut out by a regex pass, kept as bytes, the rest parsed
by orjson) and validated in bulk; anything irregular falls back to orjson / json and then to the original
per-prediction validator, which produces the error messages. Accepted inputs, values and messages are the same
on every path (tested).
"""

from __future__ import annotations

import io
import json
import logging
import os
import tempfile
import zipfile
from typing import Any, List

import numpy as np

# The loaders' names are re-exported here, so that every name keeps its import path (the private ones are the
# validators the tests compare).
from .ground_truth import _detailed_gt_tracks, _parse_videos, load_ground_truth
from .predictions import (
    PREDICTION_KEYS,
    PredictionArrays,
    _bulk_prediction_arrays,
    _detailed_prediction_arrays,
    load_prediction_arrays,
    load_predictions,
)
from .results_parse import CutRLEs, FrameRLEs, ResultsSkeleton, parse_results_skeleton, rle_counts
from .ytvis_format import (
    AREA_BATCH,
    MIN_POLYGON_COORDS,
    GroundTruth,
    JsonSource,
    Track,
    VideoInfo,
    YTVISFormatError,
    batched_area,
    load_json,
    load_json_fast,
    orjson,
    to_compressed_rle,
)

logger = logging.getLogger(__name__)

__all__ = [
    "YTVISFormatError",
    "VideoInfo",
    "Track",
    "GroundTruth",
    "load_json",
    "load_ground_truth",
    "load_predictions",
    "load_prediction_arrays",
    "PredictionArrays",
    "to_compressed_rle",
    "atomic_write_bytes",
    "atomic_write_json",
    "write_results_zip",
    "RESULTS_JSON_NAME",
]

#: Name of the results file inside the benchmark-server zip (what the CodaLab servers expect).
RESULTS_JSON_NAME = "results.json"


# ----------------------------------------------------------------------------------------------------------
# Atomic writing
# ----------------------------------------------------------------------------------------------------------
def atomic_write_bytes(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically: a temporary file in the same directory, fsync, ``os.replace``.

    A crash leaves either the previous file or the new one, never a half-written one.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, bytes):
        return obj.decode("ascii")
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    raise TypeError(f"object of type {type(obj).__name__} is not JSON serialisable")


def atomic_write_json(obj: Any, path: str) -> None:
    """Serialise ``obj`` (bytes RLE counts become ASCII strings) and write it atomically to ``path``."""
    atomic_write_bytes(path, json.dumps(obj, default=_jsonable).encode("utf-8"))


def write_results_zip(results: List[dict], path: str) -> None:
    """Write a benchmark-server-ready zip holding :data:`RESULTS_JSON_NAME` (atomically)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(RESULTS_JSON_NAME, json.dumps(results, default=_jsonable))
    atomic_write_bytes(path, buf.getvalue())
