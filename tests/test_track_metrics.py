"""Tracking metrics (HOTA / AssA / IDF1 / ID switches): trackeval's figures, recombined exactly per video multiset."""

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from local2global.evaluation import track_metrics as tm

pytest.importorskip("trackeval")
pytestmark = pytest.mark.timeout(120)

H = W = 16
FRAMES = 4


def _rle(m):
    """A compressed RLE (the results' format)."""
    r = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
    r["counts"] = r["counts"].decode()
    return r


def _uncompressed(m):
    """An uncompressed RLE (YouTube-VIS ground truth's format): column-major run lengths, starting with zeros."""
    flat = m.T.reshape(-1).astype(np.uint8)
    change = np.flatnonzero(np.diff(np.concatenate([[0], flat, [1 - flat[-1]]])))
    return {"counts": np.diff(np.concatenate([[0], change])).tolist(), "size": [H, W]}


def _box_mask(x0, y0, size=5):
    m = np.zeros((H, W), bool)
    m[y0:y0 + size, x0:x0 + size] = True
    return m


def _dataset(num_videos=3):
    """Videos with two objects each (classes 1 and 2) moving right one pixel per frame."""
    cats = [{"id": 1, "name": "a", "supercategory": "x"}, {"id": 2, "name": "b", "supercategory": "x"}]
    videos, anns, tracks = [], [], {}
    for v in range(1, num_videos + 1):
        videos.append({"id": v, "width": W, "height": H, "length": FRAMES,
                       "file_names": [f"vid{v}/{t:05d}.jpg" for t in range(FRAMES)]})
        for k, (cls, y0) in enumerate([(1, 1), (2, 9)]):
            masks = [_box_mask(1 + t + v % 2, y0) for t in range(FRAMES)]
            segs = [_rle(m) for m in masks]
            anns.append({"id": len(anns) + 1, "video_id": v, "category_id": cls, "iscrowd": 0,
                         "segmentations": [_uncompressed(m) for m in masks], "areas": [int(m.sum()) for m in masks],
                         "bboxes": [list(mask_utils.toBbox(s)) for s in segs], "height": H, "width": W})
            tracks[(v, k)] = (cls, segs)
    return {"videos": videos, "annotations": anns, "categories": cats}, tracks


def _perfect(tracks):
    return [{"video_id": v, "category_id": cls, "score": 0.9 - 0.1 * k, "segmentations": segs}
            for (v, k), (cls, segs) in tracks.items()]


def _swapped(tracks, video=1, at=2):
    """The two objects of ``video`` exchange identities from frame ``at`` on (same class kept per track)."""
    out = [p for p in _perfect(tracks) if p["video_id"] != video]
    (c0, s0), (c1, s1) = tracks[(video, 0)], tracks[(video, 1)]
    out.append({"video_id": video, "category_id": c0, "score": 0.9, "segmentations": s0[:at] + s1[at:]})
    out.append({"video_id": video, "category_id": c1, "score": 0.8, "segmentations": s1[:at] + s0[at:]})
    return out


def test_perfect_tracks_score_100_and_duplicate_classes_are_one_track():
    gt, tracks = _dataset()
    preds = _perfect(tracks)
    # the top-k file repeats each slot under other classes with lower scores: one track per slot remains
    dups = [dict(p, category_id=3 - p["category_id"], score=p["score"] / 2) for p in preds]
    kept = tm.extract_tracks(preds + dups)
    assert len(kept) == len(preds) and {p["score"] for p in kept} == {p["score"] for p in preds}
    got = tm.tracking_metrics(gt, preds + dups)
    assert got["HOTA"] == pytest.approx(100.0) and got["AssA"] == pytest.approx(100.0)
    assert got["IDF1"] == pytest.approx(100.0) and got["IDSW"] == 0
    # the threshold drops tracks: the second object of every video is missed, DetA halves
    half = tm.tracking_metrics(gt, preds, threshold=0.85)
    assert half["DetA"] == pytest.approx(50.0) and half["AssA"] == pytest.approx(100.0)


def test_an_identity_swap_lowers_association_not_detection():
    gt, tracks = _dataset()
    agn = tm.tracking_metrics(gt, _swapped(tracks), agnostic=True)
    assert agn["DetA"] == pytest.approx(100.0)
    assert agn["AssA"] < 90.0 and agn["IDSW"] == 2 and agn["IDF1"] < 100.0


def test_combine_equals_trackeval_on_all_videos_and_on_a_resample_with_repeats(tmp_path):
    gt, tracks = _dataset()
    preds = tm.extract_tracks(_swapped(tracks))
    stats = tm.per_video_stats(gt, preds, tmp_path / "a")
    per_seq, _ = tm._run_trackeval(gt, preds, tmp_path / "b")
    ref = per_seq["COMBINED_SEQ"]["cls_comb_det_av"]
    got = tm.combine(stats)
    assert got["HOTA"] == pytest.approx(100 * ref["HOTA"]["HOTA"].mean(), abs=1e-9)
    assert got["AssA"] == pytest.approx(100 * ref["HOTA"]["AssA"].mean(), abs=1e-9)
    assert got["DetA"] == pytest.approx(100 * ref["HOTA"]["DetA"].mean(), abs=1e-9)
    assert got["IDF1"] == pytest.approx(100 * ref["Identity"]["IDF1"], abs=1e-9)
    assert got["IDSW"] == ref["CLEAR"]["IDSW"]
    # a bootstrap resample (video 1 twice, video 3 once) is scored as trackeval scores those videos as a dataset
    picks = [1, 1, 3]
    videos, anns, res = [], [], []
    for new_id, v in enumerate(picks, start=1):
        src = next(x for x in gt["videos"] if x["id"] == v)
        videos.append(dict(src, id=new_id, file_names=[f"copy{new_id}/{t:05d}.jpg" for t in range(FRAMES)]))
        anns += [dict(a, id=len(anns) + i + 1, video_id=new_id)
                 for i, a in enumerate(a for a in gt["annotations"] if a["video_id"] == v)]
        res += [dict(p, video_id=new_id) for p in preds if p["video_id"] == v]
    direct = tm.combine(tm.per_video_stats(dict(gt, videos=videos, annotations=anns), res))
    resampled = tm.combine(stats, picks)
    for k in tm.TRACK_METRICS:
        assert resampled[k] == pytest.approx(direct[k], abs=1e-9), k
    assert resampled["AssA"] != pytest.approx(got["AssA"])  # the resample differs from the whole set
    # the vectorised resampler agrees with combine on every resample
    many = tm.combine_resamples(stats, [picks, [2, 3, 3], [1, 2, 3]], keys=tm.TRACK_METRICS)
    for r, pick in enumerate([picks, [2, 3, 3], [1, 2, 3]]):
        one = tm.combine(stats, pick)
        for k in tm.TRACK_METRICS:
            assert many[k][r] == pytest.approx(one[k], abs=1e-9), (k, pick)
    # the cache round trip keeps every count
    again = tm.combine(tm.stats_from_json(tm.stats_to_json(stats)), picks)
    assert again == resampled
