"""The panoptic merge (MaskDINO's panoptic inference on slot-ordered outputs): hand-made cases.

Masks are given at the output resolution (padded = image = output size: the upsampling is then the identity), with
logits +INSIDE inside and -INSIDE outside, so that every pixel's probability is known.
"""

import math

import numpy as np
import pytest
import torch

from local2global.modeling.postprocessing.video_panoptic import (
    DEFAULT_STUFF_ID_OFFSET,
    PanopticVideoPostprocessor,
    merge_panoptic_frame,
)

H, W, C = 4, 8, 3
SKY, PERSON, CAR = 0, 1, 2  # class 0 is stuff, 1 and 2 are things
INSIDE = 5.0
SIZE = (H, W)


def logit(p):
    return math.log(p / (1 - p))


def class_logits(rows):
    """``rows``: per slot the C class probabilities."""
    return torch.tensor([[logit(p) for p in row] for row in rows])


def mask_logits(*regions):
    """One mask per region ``(row slice, col slice)``: +INSIDE inside, -INSIDE elsewhere."""
    out = torch.full((len(regions), H, W), -INSIDE)
    for i, (rows, cols) in enumerate(regions):
        out[i, rows, cols] = INSIDE
    return out


def post(**kw):
    return PanopticVideoPostprocessor(thing_classes=[PERSON, CAR], **kw)


def merge(pp, logits, masks):
    return pp.merge(logits, masks, SIZE, SIZE, SIZE)


ALL = slice(None)


def test_defaults_are_maskdinos_panoptic_settings():
    pp = post()
    assert (pp.object_mask_threshold, pp.overlap_threshold, pp.pano_temp, pp.transform_eval) == (0.25, 0.8, 0.06, True)
    assert pp.mask_prob_threshold == 0.5


def test_object_mask_threshold_drops_low_scoring_slots():
    pp = post(transform_eval=False)
    logits = class_logits([[0.01, 0.24, 0.01], [0.01, 0.30, 0.01]])
    masks = mask_logits((ALL, slice(0, 4)), (ALL, slice(4, 8)))
    frame = merge(pp, logits, masks)
    # slot 0 (0.24 <= 0.25) is no candidate: its half is void; slot 1 is a thing with id slot + 1 = 2
    assert frame.panoptic_seg[:, :4].eq(0).all() and frame.panoptic_seg[:, 4:].eq(2).all()
    assert frame.segments_info == [{"id": 2, "category_id": PERSON, "isthing": True,
                                    "score": pytest.approx(0.30, abs=1e-6), "slot": 1}]


def test_overlap_threshold_removes_a_mostly_covered_slot():
    pp = post(transform_eval=False)
    logits = class_logits([[0.01, 0.9, 0.01], [0.01, 0.01, 0.8]])
    # slot 1's mask (cols 0-5, 24 px) lies mostly under slot 0's (cols 0-3): it wins 8 of its 24 px (1/3 < 0.8)
    masks = mask_logits((ALL, slice(0, 4)), (ALL, slice(0, 6)))
    frame = merge(pp, logits, masks)
    expected = np.zeros(SIZE, np.int32)
    expected[:, :4] = 1
    np.testing.assert_array_equal(frame.panoptic_seg.numpy(), expected)  # cols 4-5 void, not slot 1's
    assert [s["id"] for s in frame.segments_info] == [1]
    # slot 1 covering cols 3-7 wins 16 of its 20 px = 0.8 >= 0.8: kept with the pixels it won
    masks = mask_logits((ALL, slice(0, 4)), (ALL, slice(3, 8)))
    frame = merge(pp, logits, masks)
    expected[:, 4:] = 2
    np.testing.assert_array_equal(frame.panoptic_seg.numpy(), expected)
    assert [(s["id"], s["category_id"]) for s in frame.segments_info] == [(1, PERSON), (2, CAR)]


def test_pixels_below_the_mask_probability_are_void():
    pp = post(transform_eval=False)
    logits = class_logits([[0.01, 0.9, 0.01]])
    masks = mask_logits((ALL, slice(0, 4)))
    masks[0, 0, 0] = logit(0.49)  # the slot still wins the pixel (the only candidate) but is below 0.5 there
    frame = merge(pp, logits, masks)
    assert frame.panoptic_seg[0, 0] == 0 and frame.panoptic_seg[1, 0] == 1 and frame.panoptic_seg[0, 5] == 0
    assert frame.slot_of_pixel[0, 0] == -1 and frame.slot_of_pixel[1, 0] == 0


def test_stuff_slots_of_one_class_merge_into_one_segment():
    pp = post(transform_eval=False)
    logits = class_logits([[0.7, 0.01, 0.01], [0.01, 0.9, 0.01], [0.95, 0.01, 0.01]])
    masks = mask_logits((slice(0, 2), slice(0, 4)), (slice(2, 4), ALL), (slice(0, 2), slice(4, 8)))
    frame = merge(pp, logits, masks)
    sky = DEFAULT_STUFF_ID_OFFSET + SKY
    expected = np.full(SIZE, sky, np.int32)
    expected[2:] = 2
    np.testing.assert_array_equal(frame.panoptic_seg.numpy(), expected)
    # one entry for the sky, listed at its first slot, with the best score of its slots
    assert [(s["id"], s["isthing"]) for s in frame.segments_info] == [(sky, False), (2, True)]
    assert frame.segments_info[0]["score"] == pytest.approx(0.95, abs=1e-6)
    # the painting slot of each pixel is still known (streaming masks)
    assert frame.slot_of_pixel[0, 0] == 0 and frame.slot_of_pixel[0, 7] == 2


def test_transform_eval_sharpens_ambiguous_slots():
    """Slot 0 is sure of nothing (0.9 person / 0.85 car), slot 1 is sure (0.7 person): the sigmoid score prefers
    slot 0, the temperature softmax slot 1 (exp(0.05 / 0.06) vs exp(0.65 / 0.06) against the runner-up)."""
    logits = class_logits([[0.01, 0.9, 0.85], [0.05, 0.7, 0.01]])
    masks = mask_logits((ALL, slice(0, 6)), (ALL, slice(2, 8)))
    plain = merge(post(transform_eval=False, overlap_threshold=0.0), logits, masks)
    sharp = merge(post(overlap_threshold=0.0), logits, masks)
    assert plain.panoptic_seg[0, 3] == 1 and sharp.panoptic_seg[0, 3] == 2
    p0 = torch.softmax(torch.tensor([0.01, 0.9, 0.85]) / 0.06, 0)
    assert sharp.slot_scores[0].item() == pytest.approx(p0.max().item(), rel=1e-5)
    assert sharp.slot_labels.tolist() == [PERSON, PERSON]


def test_ids_are_slots_and_stable_over_frames():
    """Two people swap places between frames: each keeps the id of its slot; the sky keeps its class id."""
    pp = post(transform_eval=False)
    logits = class_logits([[0.01, 0.9, 0.01], [0.01, 0.01, 0.8], [0.9, 0.01, 0.01], [0.01, 0.1, 0.1]])
    left, right, top = (slice(2, 4), slice(0, 4)), (slice(2, 4), slice(4, 8)), (slice(0, 2), ALL)
    nothing = (slice(0, 0), slice(0, 0))
    pp.update(logits, mask_logits(left, right, top, nothing), SIZE, SIZE, SIZE)
    pp.update(logits, mask_logits(right, left, top, nothing), SIZE, SIZE, SIZE)
    result = pp.finalize(video_id=3, image_size=SIZE)
    assert result["video_id"] == 3 and len(result["panoptic_seg"]) == 2
    f0, f1 = result["panoptic_seg"]
    assert f0[3, 0] == 1 and f0[3, 7] == 2 and f1[3, 0] == 2 and f1[3, 7] == 1
    sky = DEFAULT_STUFF_ID_OFFSET + SKY
    assert f0[0, 0] == f1[0, 0] == sky
    assert [[s["id"] for s in segs] for segs in result["segments_info"]] == [[1, 2, sky]] * 2
    assert pp.num_frames == 0  # finalize resets


def test_chunked_merge_equals_one_chunk():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(16, C, generator=g) * 3
    masks = torch.full((16, 12, 20), -INSIDE)  # random rectangles with noisy logits, so some slots survive
    for i in range(16):
        r, c = torch.randint(0, 10, (1,), generator=g).item(), torch.randint(0, 17, (1,), generator=g).item()
        masks[i, r:r + 3, c:c + 4] = INSIDE + torch.randn(min(3, 12 - r), min(4, 20 - c), generator=g)
    kw = dict(padded_size=(48, 80), image_size=(44, 74), output_size=(60, 100))
    table = torch.tensor([False, True, True])
    one = merge_panoptic_frame(logits, masks, table, chunk_size=64, **kw)
    chunked = merge_panoptic_frame(logits, masks, table, chunk_size=3, **kw)
    assert torch.equal(one.panoptic_seg, chunked.panoptic_seg) and one.segments_info == chunked.segments_info
    assert len(one.segments_info) > 2  # a non-trivial case


def _loop_oracle(logits, mask_probs, is_thing, offset=DEFAULT_STUFF_ID_OFFSET):
    """The rule as a plain per-slot loop over full-resolution probabilities (MaskDINO's order of steps)."""
    probs = logits.sigmoid()
    first_scores, _ = probs.max(-1)
    scores, labels = torch.softmax(probs / 0.06, -1).max(-1)
    cand = [i for i in range(len(logits)) if first_scores[i] > 0.25]
    out = torch.zeros(mask_probs.shape[-2:], dtype=torch.int32)
    if not cand:
        return out
    winner = torch.stack([scores[i] * mask_probs[i] for i in cand]).argmax(0)
    for k, i in enumerate(cand):
        own = mask_probs[i] >= 0.5
        won = winner == k
        seg = won & own
        if won.sum() == 0 or own.sum() == 0 or seg.sum() == 0 or won.sum() / own.sum() < 0.8:
            continue
        out[seg] = i + 1 if is_thing[labels[i]] else offset + int(labels[i])
    return out


def test_merge_equals_a_per_slot_loop_on_random_frames():
    from local2global.modeling.postprocessing.video_instances import upsample_mask_logits

    table = torch.tensor([False, True, True])
    nontrivial = 0
    for seed in range(5):
        g = torch.Generator().manual_seed(seed)
        logits = torch.randn(10, C, generator=g) * 2
        masks = torch.full((10, 12, 20), -INSIDE)
        for i in range(10):
            r, c = torch.randint(0, 9, (1,), generator=g).item(), torch.randint(0, 14, (1,), generator=g).item()
            masks[i, r:r + 4, c:c + 6] = INSIDE + 2 * torch.randn(min(4, 12 - r), min(6, 20 - c), generator=g)
        kw = dict(padded_size=(48, 80), image_size=(44, 74), output_size=(33, 55))
        frame = merge_panoptic_frame(logits, masks, table, chunk_size=4, **kw)
        probs = upsample_mask_logits(masks, kw["padded_size"], kw["image_size"], kw["output_size"]).sigmoid()
        assert torch.equal(frame.panoptic_seg, _loop_oracle(logits, probs, table)), seed
        nontrivial += len(frame.segments_info) >= 2
    assert nontrivial >= 3


def test_no_candidate_gives_an_all_void_frame():
    pp = post()
    frame = merge(pp, class_logits([[0.1, 0.1, 0.1]]), mask_logits((ALL, ALL)))
    assert frame.panoptic_seg.eq(0).all() and frame.segments_info == []


def test_bad_settings_raise():
    with pytest.raises(ValueError, match="class head"):
        post().merge(torch.zeros(2, 2), torch.zeros(2, H, W), SIZE, SIZE, SIZE)  # thing class 2 of 2 classes
    with pytest.raises(ValueError, match="collide"):
        merge_panoptic_frame(torch.zeros(5, C), torch.zeros(5, H, W), torch.zeros(C, dtype=torch.bool),
                             SIZE, SIZE, SIZE, stuff_id_offset=5)


def test_output_is_what_the_vps_evaluator_writes(tmp_path):
    """The finalized dict passes the evaluator's writer (ids listed, classes known, one map per frame)."""
    from local2global.evaluation.vps.evaluator import write_vps_predictions

    pp = post(transform_eval=False)
    logits = class_logits([[0.01, 0.9, 0.01], [0.9, 0.01, 0.01]])
    for _ in range(2):
        pp.update(logits, mask_logits((slice(2, 4), slice(0, 4)), (slice(0, 2), ALL)), SIZE, SIZE, SIZE)
    result = pp.finalize(0, SIZE)
    entry = write_vps_predictions("vid", ["a.png", "b.png"], SIZE, result["panoptic_seg"], result["segments_info"],
                                  {0: 0, 1: 1, 2: 2}, str(tmp_path))
    sky = DEFAULT_STUFF_ID_OFFSET + SKY
    assert [s["id"] for s in entry["annotations"][0]["segments_info"]] == [1, sky]
    assert (tmp_path / "vid" / "b.png").is_file()
