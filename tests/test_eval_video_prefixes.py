"""scripts/eval_video_prefixes.py: cutting ground truth and video records to their first K frames."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("eval_video_prefixes", ROOT / "scripts" / "eval_video_prefixes.py")
prefixes = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(prefixes)

RLE = {"size": [4, 4], "counts": "04?0"}


def _gt():
    return {
        "videos": [{"id": 1, "length": 5, "height": 4, "width": 4, "file_names": [f"v/{i}.jpg" for i in range(5)]}],
        "categories": [{"id": 3, "name": "a"}, {"id": 7, "name": "b"}],
        "annotations": [
            {"id": 1, "video_id": 1, "category_id": 3, "iscrowd": 0,  # present from frame 0
             "segmentations": [RLE, RLE, None, RLE, RLE], "areas": [4, 4, None, 4, 4], "bboxes": [None] * 5},
            {"id": 2, "video_id": 1, "category_id": 7, "iscrowd": 0,  # enters at frame 3
             "segmentations": [None, None, None, RLE, RLE], "areas": [None, None, None, 4, 4], "bboxes": [None] * 5},
        ],
    }


def test_cut_ground_truth_drops_tracks_absent_from_the_prefix():
    gt = _gt()
    cut = prefixes.cut_ground_truth(gt, 2)
    assert cut["videos"][0]["length"] == 2 and cut["videos"][0]["file_names"] == ["v/0.jpg", "v/1.jpg"]
    assert [a["id"] for a in cut["annotations"]] == [1]
    assert cut["annotations"][0]["areas"] == [4, 4] and len(cut["annotations"][0]["bboxes"]) == 2
    assert len(gt["annotations"][0]["segmentations"]) == 5  # the input is not modified
    assert [a["id"] for a in prefixes.cut_ground_truth(gt, 4)["annotations"]] == [1, 2]
    assert prefixes.cut_ground_truth(gt, 0) == gt


def test_cut_video_dict_cuts_every_per_frame_list():
    video = {"video_id": 1, "length": 5, "file_names": list("abcde"), "frame_ids": [0, 1, 2, 3, 4], "height": 4}
    cut = prefixes.cut_video_dict(video, 3)
    assert cut["file_names"] == ["a", "b", "c"] and cut["frame_ids"] == [0, 1, 2] and cut["length"] == 3
    assert cut["height"] == 4 and video["length"] == 5
    assert prefixes.cut_video_dict(video, 0) is video and prefixes.cut_video_dict(video, 9) is video


def test_class_agnostic_merges_categories():
    gt, res = prefixes.class_agnostic(_gt(), [{"video_id": 1, "category_id": 7, "score": 0.5,
                                                "segmentations": [RLE] * 5}])
    assert [c["id"] for c in gt["categories"]] == [3]
    assert {a["category_id"] for a in gt["annotations"]} == {3} and res[0]["category_id"] == 3
