"""Drawing a panoptic frame: things coloured by segment id (the track), stuff by category colour, void untouched."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from local2global.evaluation.vps.panoptic_io import id_to_rgb
from local2global.inference.panoptic_render import draw_panoptic_frame, render_vps_prediction
from local2global.inference.visualize import track_color

pytestmark = pytest.mark.timeout(60)

CATEGORIES = [{"id": 0, "name": "sky", "isthing": 0, "color": [0, 0, 255]},
              {"id": 1, "name": "car", "isthing": 1}]


def _ids():
    ids = np.zeros((40, 60), np.int64)  # void everywhere but:
    ids[:15] = 5          # a stuff segment (sky)
    ids[20:36, 10:40] = 7  # a thing segment with track id 7 (its label is drawn above it)
    return ids


def test_colours_follow_track_id_for_things_and_category_for_stuff():
    frame = np.full((40, 60, 3), 100, np.uint8)
    segs = [{"id": 5, "category_id": 0}, {"id": 7, "category_id": 1}]
    out = draw_panoptic_frame(frame, _ids(), segs, {c["id"]: c for c in CATEGORIES})
    alpha = 0.55
    sky = np.round(100 * (1 - alpha) + np.array([0, 0, 255]) * alpha)
    assert np.abs(out[5, 30].astype(float) - sky).max() <= 1
    car = np.round(100 * (1 - alpha) + np.array(track_color(7)) * alpha)
    assert np.abs(out[30, 30].astype(float) - car).max() <= 1
    assert (out[38, 55] == 100).all()  # void keeps the frame
    up = draw_panoptic_frame(frame, _ids(), segs, {c["id"]: c for c in CATEGORIES}, scale=3)
    assert up.shape == (120, 180, 3) and (up[3 * 5 + 1, 3 * 30 + 1] == out[5, 30]).all()


def test_size_mismatch_is_an_error():
    with pytest.raises(ValueError, match="differ in size"):
        draw_panoptic_frame(np.zeros((4, 4, 3), np.uint8), np.zeros((5, 4), np.int64), [], {})


def test_render_reads_the_evaluator_layout_and_names_missing_frames(tmp_path):
    (tmp_path / "pan_pred" / "v1").mkdir(parents=True)
    (tmp_path / "images" / "v1").mkdir(parents=True)
    frames = []
    for t in range(3):
        Image.fromarray(id_to_rgb(_ids())).save(tmp_path / "pan_pred" / "v1" / f"{t:05d}.png")
        Image.fromarray(np.full((40, 60, 3), 50 * t, np.uint8)).save(tmp_path / "images" / "v1" / f"{t:05d}.jpg")
        frames.append({"file_name": f"{t:05d}.png", "segments_info": [{"id": 5, "category_id": 0},
                                                                      {"id": 7, "category_id": 1}]})
    pred = tmp_path / "pred.json"
    pred.write_text(json.dumps({"annotations": [{"video_id": "v1", "annotations": frames}]}))
    vid, drawn = render_vps_prediction(str(pred), str(tmp_path / "pan_pred"), str(tmp_path / "images"), CATEGORIES)
    assert vid == "v1" and len(drawn) == 3 and drawn[0].shape == (280, 420, 3)  # short side upscaled to >= 256 (x7)
    (tmp_path / "images" / "v1" / "00001.jpg").unlink()
    with pytest.raises(FileNotFoundError, match="video 'v1': frame 00001"):
        render_vps_prediction(str(pred), str(tmp_path / "pan_pred"), str(tmp_path / "images"), CATEGORIES)
    with pytest.raises(ValueError, match="no prediction for video 'v2'"):
        render_vps_prediction(str(pred), str(tmp_path / "pan_pred"), str(tmp_path / "images"), CATEGORIES, "v2")
