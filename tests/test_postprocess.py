"""Streaming video post-processing: upsampling, RLE, video-level top-k (SPEC §3 "video score")."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from pycocotools import mask as mask_utils

from local2global.modeling.postprocessing.video_instances import VideoPostprocessor, encode_binary_masks, upsample_mask_logits

pytestmark = pytest.mark.timeout(60)


def test_encode_binary_masks_roundtrip_and_empty_is_none():
    g = torch.Generator().manual_seed(0)
    masks = torch.rand(3, 7, 9, generator=g) > 0.5
    masks[1] = False
    rles = encode_binary_masks(masks)
    assert rles[1] is None
    for i in (0, 2):
        assert isinstance(rles[i]["counts"], str) and rles[i]["size"] == [7, 9]
        np.testing.assert_array_equal(mask_utils.decode(rles[i]).astype(bool), masks[i].numpy())


def test_upsample_crops_padding_before_resizing():
    # Logits on a 4x6 grid of a padded 16x24 input whose image part is 12x16; original frame 24x32.
    logits = torch.zeros(1, 4, 6)
    logits[0, :, 4:] = 100.0  # only in the padded columns
    up = upsample_mask_logits(logits, (16, 24), (12, 16), (24, 32))
    assert up.shape == (1, 24, 32)
    # The padded columns (x >= 16 of the padded input) are cropped away before resizing:
    # the resized mask must be positive at most near the right border (bilinear bleed), never on the left half.
    assert (up[0, :, :16] > 0).sum() == 0
    expected = F.interpolate(F.interpolate(logits[None], (16, 24), mode="bilinear", align_corners=False)
                             [:, :, :12, :16], (24, 32), mode="bilinear", align_corners=False)[0]
    torch.testing.assert_close(up, expected)


def test_video_topk_uses_mean_probability_over_frames_and_chunking_is_invisible():
    n, c, h, w = 4, 3, 4, 4
    logits = [torch.full((n, c), -10.0) for _ in range(3)]
    # slot 2 class 1 scores 0.9 on every frame; slot 0 class 0 is 0.99 on one frame only (mean 0.33 + 2*~0).
    for fr in logits:
        fr[2, 1] = torch.logit(torch.tensor(0.9))
    logits[0][0, 0] = torch.logit(torch.tensor(0.99))
    g = torch.Generator().manual_seed(1)
    masks = [torch.randn(n, h, w, generator=g) for _ in range(3)]
    results = []
    for chunk in (1, 32):
        pp = VideoPostprocessor(test_topk=2, chunk_size=chunk)
        for lg, mk in zip(logits, masks):
            pp.update(lg, mk, (16, 16), (16, 16), (8, 8))
        results.append(pp.finalize(video_id=5, image_size=(8, 8)))
    a, b = results
    assert a == b  # chunk size does not change anything
    assert a["video_id"] == 5 and a["labels"][0] == 1 and a["labels"][1] == 0
    assert a["scores"][0] == pytest.approx(0.9, abs=1e-6)
    assert a["scores"][1] == pytest.approx((0.99 + 2 * torch.sigmoid(torch.tensor(-10.0)).item()) / 3, abs=1e-6)
    # Segmentations of slot 2 are the thresholded upsampled masks of slot 2, frame by frame.
    assert len(a["segmentations"]) == 2 and len(a["segmentations"][0]) == 3
    for t in range(3):
        up = upsample_mask_logits(masks[t][2:3], (16, 16), (16, 16), (8, 8))[0] > 0
        rle = a["segmentations"][0][t]
        got = np.zeros((8, 8), bool) if rle is None else mask_utils.decode(rle).astype(bool)
        np.testing.assert_array_equal(got, up.numpy())


def test_frame_instances_threshold_and_shape_errors():
    pp = VideoPostprocessor(frame_score_threshold=0.5)
    logits = torch.tensor([[2.0, -2.0], [-3.0, -1.0], [0.1, 0.0]])
    probs, masks = pp.update(logits, torch.randn(3, 4, 4), (16, 16), (16, 16), (8, 8), keep_frame_masks=True)
    inst = pp.frame_instances(0, probs, masks, torch.rand(3, 4))
    assert inst.track_ids.tolist() == [0, 2]  # sigmoid(2)=0.88, sigmoid(0.1)=0.52 >= 0.5; slot 1 max is 0.27
    assert inst.labels.tolist() == [0, 0] and inst.masks.shape == (2, 8, 8)
    with pytest.raises(ValueError, match="slots x classes"):
        pp.update(torch.zeros(4, 2), torch.randn(4, 4, 4), (16, 16), (16, 16), (8, 8))
    with pytest.raises(RuntimeError):
        VideoPostprocessor().finalize(1, (8, 8))


@pytest.mark.parametrize("spill", [True, False])
def test_rle_store_spilled_to_disk_gives_the_same_video_result(spill):
    """Spilling the per-frame RLEs of all slots to a temporary file (flat memory) changes nothing in the result."""
    g = torch.Generator().manual_seed(3)
    frames = [(torch.randn(6, 2, generator=g), torch.randn(6, 8, 10, generator=g) * 3) for _ in range(7)]

    def run(spill_rles):
        pp = VideoPostprocessor(test_topk=4, spill_rles=spill_rles)
        for logits, masks in frames:
            pp.update(logits, masks, (32, 40), (32, 40), (32, 40))
        return pp.finalize(5, (32, 40))

    ref, got = run(False), run(spill)
    assert got["scores"] == ref["scores"] and got["labels"] == ref["labels"]
    assert got["segmentations"] == ref["segmentations"]
    assert all(len(s) == 7 for s in got["segmentations"])
    assert any(r is not None for s in got["segmentations"] for r in s)
    if spill:
        pp = VideoPostprocessor(spill_rles=True, deferred=False)
        pp.update(*frames[0], (32, 40), (32, 40), (32, 40))
        assert pp._state.rles._frames == [] and pp._state.rles._file is not None  # nothing kept in memory
        pp.reset()
        assert pp._state.rles is None
        pp = VideoPostprocessor(spill_rles=True)  # deferred: the logits go to the file, no array stays in memory
        pp.update(*frames[0], (32, 40), (32, 40), (32, 40))
        store = pp._state.logits
        assert store._file is not None and store._end > 0
        assert all(r.logits is None and r.slots is None for r in store._records)
        pp.reset()
        assert pp._state.logits is None and store._file is None


def _random_video(seed, num_frames, num_slots, num_classes, grid, empty_fraction=0.5, dtype=torch.float32):
    """Frames of class logits and mask logits; about ``empty_fraction`` of the slots are all-negative per frame
    (the slots the deferred path does not store), some slots have a single positive pixel."""
    g = torch.Generator().manual_seed(seed)
    frames = []
    for _ in range(num_frames):
        logits = torch.randn(num_slots, num_classes, generator=g) * 2
        masks = torch.randn(num_slots, *grid, generator=g) * 3
        empty = torch.rand(num_slots, generator=g) < empty_fraction
        masks[empty] = -masks[empty].abs() - 0.01
        masks[empty.nonzero()[:1, 0]] = 0.0  # exactly zero everywhere: empty too (0 is not > 0)
        single = (~empty).nonzero()[:1, 0]
        masks[single] = -5.0
        masks[single, grid[0] // 2, grid[1] // 2] = 0.3
        # the last slot: barely positive everywhere (a full mask) and a high score, so it is always selected
        masks[-1] = 0.05
        logits[-1, 0] = 5.0
        frames.append((logits.to(dtype), masks.to(dtype)))
    return frames


@pytest.mark.parametrize("sizes", [
    ((32, 40), (32, 40), (32, 40)),  # no padding, no resize
    ((32, 48), (28, 41), (57, 83)),  # padding cropped, upsampled to the original size
    ((64, 64), (60, 50), (23, 19)),  # downsampled to the original size
])
@pytest.mark.parametrize("threshold", [0.0, 0.4])
def test_deferred_post_processing_gives_the_same_result_as_finishing_every_slot(sizes, threshold):
    """Old (every slot upsampled, thresholded and RLE-encoded each frame) and new (low-resolution logits stored,
    only the selected slots finished at the end) on random videos: the same result, key by key."""
    padded, image, output = sizes
    frames = _random_video(7, num_frames=6, num_slots=12, num_classes=3, grid=(padded[0] // 4, padded[1] // 4))
    results = {}
    for deferred in (False, True):
        for spill in (False, True):
            pp = VideoPostprocessor(test_topk=8, mask_threshold=threshold, chunk_size=5, deferred=deferred,
                                    spill_rles=spill)
            for logits, masks in frames:
                pp.update(logits, masks, padded, image, output)
            results[deferred, spill] = pp.finalize(3, output)
    ref = results[False, False]
    for key, got in results.items():
        assert got == ref, key
    assert len(set(ref["labels"])) > 1 and len(ref["segmentations"]) == 8
    # the selection has a slot twice (two classes) and both empty and non-empty frames
    rles = [r for seg in ref["segmentations"] for r in seg]
    assert any(r is None for r in rles) and any(r is not None for r in rles)


def test_deferred_path_with_streaming_outputs_unstored_frames_and_half_precision():
    frames = _random_video(11, num_frames=5, num_slots=9, num_classes=2, grid=(6, 7), dtype=torch.bfloat16)
    outs = {}
    for deferred in (False, True):
        pp = VideoPostprocessor(test_topk=5, deferred=deferred)
        streamed = []
        for i, (logits, masks) in enumerate(frames):
            kept = pp.update(logits, masks, (24, 28), (22, 27), (44, 54), keep_frame_masks=i % 2 == 0,
                             store=i != 3)
            if kept is not None:
                inst = pp.frame_instances(i, kept[0], kept[1], torch.rand(9, 4, generator=torch.Generator()))
                streamed.append((inst.track_ids.tolist(), inst.masks.clone()))
        outs[deferred] = (pp.finalize(1, (44, 54)), streamed)
    (ref, ref_stream), (got, got_stream) = outs[False], outs[True]
    assert got == ref
    assert all(len(seg) == 4 for seg in got["segmentations"])  # frame 3 was not stored
    assert len(got_stream) == len(ref_stream) == 3
    for (ids_a, masks_a), (ids_b, masks_b) in zip(got_stream, ref_stream):
        assert ids_a == ids_b and torch.equal(masks_a, masks_b)


def test_deferred_store_skips_slots_with_empty_masks_and_reads_back_only_the_selected_rows():
    frames = _random_video(5, num_frames=3, num_slots=10, num_classes=2, grid=(8, 10), empty_fraction=0.6)
    pp = VideoPostprocessor(test_topk=2)
    for logits, masks in frames:
        pp.update(logits, masks, (32, 40), (32, 40), (32, 40))
    store = pp._state.logits
    for rec, (_, masks) in zip(store._records, frames):
        nonempty = (masks.flatten(1) > 0).any(1)
        assert rec.num_slots == int(nonempty.sum()) < 10
    wanted = [0, 3, 9]
    for (sizes, present, logits), (_, masks) in zip(store.rows(wanted), frames):
        nonempty = (masks.flatten(1) > 0).any(1)
        assert present.tolist() == [s for s in wanted if nonempty[s]]
        assert sizes == ((32, 40), (32, 40), (32, 40))
        np.testing.assert_array_equal(logits, masks[present.tolist()].numpy())
    pp.reset()
