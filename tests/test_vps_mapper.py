"""The VIPSeg clip mapper: every segment one target, stuff merged per category, ids fixed over the clip.

The data are written in the official layouts by ``test_data_vipseg.write_raw_vipseg`` (raw) and the converter
(720p); the expected masks are read straight from the raw 16-bit PNGs.
"""

import os

import numpy as np
import pytest
from PIL import Image

from detectron2.data import transforms as T

from local2global.data.vipseg import load_vipseg_panoptic_json, load_vipseg_raw
from local2global.data.vipseg_convert import convert_vipseg_to_720p
from local2global.data.vps_mapper import STUFF_TARGET_ID_OFFSET, VideoPanopticClipMapper
from test_data_vipseg import CAR, PERSON, SKY, WALL, write_raw_vipseg

SIZE = (40, 60)


def _raw_frames(root, video, length):
    return [np.asarray(Image.open(os.path.join(root, "panomasks", video, f"{t + 1:08d}.png"))).astype(np.int64)
            for t in range(length)]


def _whole_clip_mapper(num_frames=3, augmentations=()):
    # a window wider than the video: the clip is every frame, in order
    return VideoPanopticClipMapper(augmentations=augmentations, num_frames=num_frames, sampling_frame_range=10,
                                   seed=0)


def test_raw_layout_targets_masks_and_flags(tmp_path):
    root = write_raw_vipseg(str(tmp_path / "VIPSeg"), size=SIZE)
    rec = load_vipseg_raw(root, "train")[0]
    clip = _whole_clip_mapper()(rec)
    assert clip["frame_indices"] == [0, 1, 2] and clip["video_name"] == "vid_a"
    inst = clip["instances"]
    stuff_sky, stuff_wall = STUFF_TARGET_ID_OFFSET + SKY, STUFF_TARGET_ID_OFFSET + WALL
    # things by id, then stuff by category (wall 0 < sky 28)
    expected_ids = [4903, 6100, 6101, stuff_wall, stuff_sky]
    raws = _raw_frames(root, "vid_a", 3)
    for t, frame in enumerate(inst):
        assert frame.gt_ids.tolist() == expected_ids
        assert frame.gt_classes.tolist() == [CAR, PERSON, PERSON, WALL, SKY]
        assert frame.gt_is_thing.tolist() == [True, True, True, False, False]
        masks = frame.gt_masks.tensor.numpy()
        for i, raw_value in enumerate([4903, 6100, 6101, WALL + 1, SKY + 1]):
            np.testing.assert_array_equal(masks[i], raws[t] == raw_value)
        assert not masks[:, 0, 0].any()  # the void pixel belongs to no target
        # the car is on even frames only
        assert frame.gt_valid.tolist() == [t % 2 == 0, True, True, True, True]
    # boxes: the mask extent (x1 = max column + 1); the first person moves one column per frame
    assert inst[2].gt_boxes.tensor[1].tolist() == [7.0, 5.0, 17.0, 15.0]
    assert inst[1].gt_boxes.tensor[0].tolist() == [0.0, 0.0, 0.0, 0.0]


def test_720p_layout_same_targets_as_raw(tmp_path):
    root = write_raw_vipseg(str(tmp_path / "VIPSeg"), size=SIZE)
    out = str(tmp_path / "VIPSeg" / "VIPSeg_720P")
    written = convert_vipseg_to_720p(root, out, target_height=SIZE[0])  # same size: ids change, pixels do not
    rec = load_vipseg_panoptic_json(written["train"], os.path.join(out, "images"), os.path.join(out, "panomasksRGB"))[0]
    clip = _whole_clip_mapper()(rec)
    raw_clip = _whole_clip_mapper()(load_vipseg_raw(root, "train")[0])
    for frame, raw_frame in zip(clip["instances"], raw_clip["instances"]):
        # the stuff ids come from the category (same in both layouts); the thing ids are the RGB ids
        assert frame.gt_ids.tolist()[-2:] == [STUFF_TARGET_ID_OFFSET + WALL, STUFF_TARGET_ID_OFFSET + SKY]
        assert all(i < STUFF_TARGET_ID_OFFSET for i in frame.gt_ids.tolist()[:3])
        assert frame.gt_is_thing.tolist() == [True, True, True, False, False]
        # same partition of the frame (matched through the classes and per-target areas)
        got = sorted(zip(frame.gt_classes.tolist(), frame.gt_masks.tensor.flatten(1).sum(1).tolist()))
        ref = sorted(zip(raw_frame.gt_classes.tolist(), raw_frame.gt_masks.tensor.flatten(1).sum(1).tolist()))
        assert got == ref


def test_stuff_segments_of_one_category_merge(tmp_path):
    """Two stuff segments of the same category on a frame (possible in other panoptic data) are one target."""
    root = write_raw_vipseg(str(tmp_path / "VIPSeg"), size=SIZE)
    rec = load_vipseg_raw(root, "train")[0]
    # relabel: the sky segment becomes a second "wall" segment with its own id
    for segs in rec["annotations"]:
        for s in segs:
            if s["id"] == SKY + 1:
                s["category_id"] = WALL
    clip = _whole_clip_mapper()(rec)
    frame = clip["instances"][0]
    assert frame.gt_ids.tolist() == [4903, 6100, 6101, STUFF_TARGET_ID_OFFSET + WALL]
    raw = _raw_frames(root, "vid_a", 1)[0]
    np.testing.assert_array_equal(frame.gt_masks.tensor[3].numpy(), (raw == WALL + 1) | (raw == SKY + 1))


def test_augmentations_equal_per_mask_transforms(tmp_path):
    root = write_raw_vipseg(str(tmp_path / "VIPSeg"), size=SIZE)
    rec = load_vipseg_raw(root, "train")[0]
    augs = [T.ResizeShortestEdge(short_edge_length=27, max_size=100), T.RandomFlip(prob=1.0, horizontal=True)]
    clip = _whole_clip_mapper(augmentations=augs)(rec)
    raws = _raw_frames(root, "vid_a", 3)
    tf = T.AugmentationList(augs)(T.AugInput(np.zeros((*SIZE, 3), np.uint8)))
    for t, frame in enumerate(clip["instances"]):
        assert tuple(frame.image_size) == (27, 41) and tuple(clip["images"][t].shape) == (3, 27, 41)  # 60 * 27 / 40 = 40.5
        for i, raw_value in enumerate([4903, 6100, 6101, WALL + 1, SKY + 1]):
            ref = tf.apply_segmentation((raws[t] == raw_value).astype(np.uint8)).astype(bool)
            np.testing.assert_array_equal(frame.gt_masks.tensor[i].numpy(), ref)


def test_many_targets_chunked_index_maps():
    """More targets than a uint8 index map holds: the chunked split equals the direct comparison."""
    rng = np.random.default_rng(0)
    index = rng.integers(0, 600, size=(20, 30))
    tf = T.TransformList([T.HFlipTransform(30)])
    masks = VideoPanopticClipMapper._split_masks(index, 599, tf)
    assert masks.shape == (599, 20, 30)
    ref = index[None, :, ::-1] == np.arange(1, 600)[:, None, None]
    np.testing.assert_array_equal(masks, ref)


def test_train_clip_through_model_targets(tmp_path):
    """The clip feeds the model's target preparation: ``is_thing`` reaches the criterion's target dicts."""
    import torch
    from detectron2.structures import ImageList

    from local2global.modeling.meta_arch import Local2Global

    root = write_raw_vipseg(str(tmp_path / "VIPSeg"), size=SIZE)
    clip = _whole_clip_mapper()(load_vipseg_raw(root, "train")[0])
    images = ImageList.from_tensors([img.float() for img in clip["images"]], 32)
    dummy = type("M", (), {"device": torch.device("cpu")})()
    targets = Local2Global.prepare_targets(dummy, [clip], images)
    assert targets[0][0]["is_thing"].tolist() == [True, True, True, False, False]
    assert "is_thing" in targets[0][2] and targets[0][2]["masks"].shape[-2:] == (64, 64)


if __name__ == "__main__":
    pytest.main([__file__])
