"""Reliability of streaming inference on unusual videos (issue 6), with the tiny model (random weights).

Documented behaviour checked here: a frame whose size differs from the video's first frame is an error that names
the frame (``VideoPredictor`` raises ``ValueError``; the dataset path raises ``FrameReadError`` naming the file and
the video); frames are not resized silently.
"""

import time
from pathlib import Path

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.timeout(300)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def model():
    pytest.importorskip("local2global.modeling.segmenter.decoder")
    from detectron2.config import LazyConfig, instantiate

    cfg = LazyConfig.load(str(REPO / "configs" / "local2global_tiny_synthetic.py"))
    torch.manual_seed(0)
    return instantiate(cfg.model).eval()


def predictor(model, **kw):
    from local2global.inference.predictor import VideoPredictor

    kw.setdefault("min_size_test", 32)
    kw.setdefault("max_size_test", 64)
    return VideoPredictor(model=model, **kw)


def frames(n, h=32, w=32, seed=0, channels=3):
    rng = np.random.default_rng(seed)
    shape = (h, w) if channels is None else (h, w, channels)
    return [rng.integers(0, 256, shape, dtype=np.uint8) for _ in range(n)]


def check_instances(inst, h, w, max_n):
    m = len(inst.track_ids)
    assert m <= max_n
    assert inst.masks.shape == (m, h, w) and inst.masks.dtype == torch.bool
    assert inst.scores.shape == inst.labels.shape == (m,) and inst.boxes.shape == (m, 4)
    assert torch.isfinite(inst.scores).all() and ((inst.scores >= 0) & (inst.scores <= 1)).all()


def check_video_result(result, video_id, length, h, w, topk):
    """The post-processor's video result: ``{"video_id", "image_size", "scores", "labels", "segmentations"}``;
    returns ``[{"score", "label", "segmentations"}]``."""
    assert result["video_id"] == video_id and tuple(result["image_size"]) == (h, w)
    n = len(result["scores"])
    assert 0 < n <= topk and len(result["labels"]) == len(result["segmentations"]) == n
    preds = []
    for score, label, segs in zip(result["scores"], result["labels"], result["segmentations"]):
        assert 0.0 <= score <= 1.0 and len(segs) == length
        for s in segs:
            assert s is None or list(s["size"]) == [h, w]
        preds.append({"score": score, "label": label, "segmentations": segs})
    return preds


def test_one_frame_video(model):
    p = predictor(model)
    (f,) = frames(1)
    inst = p(f)
    check_instances(inst, 32, 32, model.num_queries)
    check_video_result(p.video_result(video_id=7), 7, 1, 32, 32, model.postprocessor.test_topk)


@pytest.mark.slow
def test_2000_frames_with_flat_memory(model):
    p = predictor(model, keep_video_result=False)
    f = frames(1)[0]
    sizes, start = {}, time.monotonic()
    for i in range(2000):
        inst = p(f)
        if i + 1 in (50, 2000):
            state = p.state
            pp = model.postprocessor
            pp_tensors = sum(v.numel() for v in vars(pp).values() if torch.is_tensor(v))
            pp_lists = sum(len(v) for v in vars(pp).values() if isinstance(v, (list, dict)))
            sizes[i + 1] = (tuple(state.queries.shape), tuple(state.boxes.shape), pp_tensors, pp_lists)
    assert sizes[50] == sizes[2000], sizes
    assert sizes[2000][0] == (1, model.num_queries, 64)
    assert inst.frame_index == 1999
    assert time.monotonic() - start < 120


def test_frame_of_another_size_is_an_error_naming_the_frame(model, tmp_path):
    p = predictor(model)
    a, b = frames(2)
    p(a)
    p(b)
    with pytest.raises(ValueError, match=r"frame 2 has size 40x32 but this video started at 32x32"):
        p(frames(1, h=40)[0])
    p.reset()  # a new video may have another size
    check_instances(p(frames(1, h=40)[0]), 40, 32, model.num_queries)

    # the dataset path: the video's declared size is checked for every frame, naming file and video
    import cv2
    from detectron2.data import transforms as T

    from local2global.data.clip_mapper import FrameReadError, LazyVideoFrames

    names = []
    for i, (h, w) in enumerate([(32, 32), (32, 32), (48, 32)]):
        names.append(str(tmp_path / f"{i:05d}.jpg"))
        cv2.imwrite(names[-1], frames(1, h, w)[0])
    lazy = LazyVideoFrames(names, T.AugmentationList([]), "RGB", video_id=5, expected_hw=(32, 32))
    with pytest.raises(FrameReadError, match=r"video_id 5: frame file .*00002\.jpg.* is 48x32"):
        list(lazy)


def test_grayscale_and_rgba_frames_equal_their_rgb_version(model):
    gray = frames(3, channels=None, seed=3)
    rgb = [np.repeat(g[:, :, None], 3, axis=2) for g in gray]
    rgba = [np.concatenate([x, np.full(x.shape[:2] + (1,), 17, np.uint8)], axis=2) for x in rgb]
    outs = []
    for video in (rgb, gray, [g[:, :, None] for g in gray], rgba):
        p = predictor(model)
        per_frame = [p(f) for f in video]
        outs.append((per_frame, p.video_result(video_id=1)))
    ref_frames, ref_video = outs[0]
    for per_frame, video in outs[1:]:
        for a, b in zip(ref_frames, per_frame):
            assert torch.equal(a.track_ids, b.track_ids) and torch.equal(a.masks, b.masks)
            assert torch.allclose(a.scores, b.scores)
        assert video["scores"] == pytest.approx(ref_video["scores"]) and video["labels"] == ref_video["labels"]
        assert video["segmentations"] == ref_video["segmentations"]
    with pytest.raises(ValueError, match=r"got shape \(8, 8, 2\)"):
        predictor(model)(np.zeros((8, 8, 2), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        predictor(model)(np.zeros((8, 8, 3), np.float32))


@pytest.mark.parametrize("h,w", [(32, 32), (1080, 1920)])
def test_tiny_and_full_hd_frames(model, h, w):
    p = predictor(model)
    video = frames(2, h, w, seed=4)
    for f in video:
        check_instances(p(f), h, w, model.num_queries)
    check_video_result(p.video_result(video_id=2), 2, 2, h, w, model.postprocessor.test_topk)


def test_video_where_nothing_is_detected(model):
    cls = model.decoder.class_embed
    saved = (cls.weight.detach().clone(), cls.bias.detach().clone())
    try:
        with torch.no_grad():
            cls.weight.zero_()
            cls.bias.fill_(-30.0)  # every class probability ~1e-13
        p = predictor(model)
        for f in frames(3, seed=5):
            inst = p(f)
            assert len(inst.track_ids) == 0 and inst.masks.shape == (0, 32, 32)
        preds = check_video_result(p.video_result(video_id=4), 4, 3, 32, 32, model.postprocessor.test_topk)
        assert max(pr["score"] for pr in preds) < 1e-6
    finally:
        with torch.no_grad():
            cls.weight.copy_(saved[0])
            cls.bias.copy_(saved[1])


def test_more_objects_than_queries(model):
    n_obj = 3 * model.num_queries  # 60 squares, 20 queries
    h = w = 96
    video = []
    for t in range(2):
        f = np.zeros((h, w, 3), np.uint8)
        for k in range(n_obj):
            y, x = divmod(k, 8)
            f[y * 12 + 1:y * 12 + 9, x * 12 + 1 + t:x * 12 + 9 + t] = (40 + 3 * k, 200 - 2 * k, 90 + k)
        video.append(f)
    p = predictor(model, min_size_test=96, max_size_test=96)
    for f in video:
        inst = p(f)
        check_instances(inst, h, w, model.num_queries)
        assert len(set(inst.track_ids.tolist())) == len(inst.track_ids)
    check_video_result(p.video_result(video_id=9), 9, 2, h, w, model.postprocessor.test_topk)
