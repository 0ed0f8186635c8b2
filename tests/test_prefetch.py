"""Test frames decoded ahead in a background thread: same frames, same errors, bounded read-ahead, clean stop."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch
from detectron2.data import transforms as T
from PIL import Image

from local2global.data import clip_mapper
from local2global.data.clip_mapper import FrameReadError, VideoTestDatasetMapper
from local2global.data.prefetch import prefetch

pytestmark = pytest.mark.timeout(60)


def _frames_threads():
    return [t for t in threading.enumerate() if t.name.startswith("frames-") or t.name == "p"]


def test_prefetch_yields_in_order_and_reraises_at_the_failing_item():
    def items():
        yield from range(5)
        raise KeyError("item 5")

    got = []
    with pytest.raises(KeyError, match="item 5"):
        for x in prefetch(items(), depth=2, name="p"):
            got.append(x)
    assert got == [0, 1, 2, 3, 4]
    assert list(prefetch(iter(range(7)), depth=0)) == list(range(7))


def test_prefetch_reads_at_most_depth_ahead_and_stops_when_the_consumer_leaves():
    produced = []

    def items():
        for i in range(100):
            produced.append(i)
            yield i

    it = prefetch(items(), depth=3, name="p")
    assert next(it) == 0
    time.sleep(0.3)  # let the producer run as far as it may
    # item 0 consumed, 3 waiting in the queue, one more produced and blocked on the full queue
    assert len(produced) == 1 + 3 + 1
    it.close()
    time.sleep(0.2)
    assert len(produced) == 5 and not _frames_threads()


def _video(tmp_path, n=6, size=(20, 30)):
    names = []
    rng = np.random.default_rng(0)
    for i in range(n):
        p = tmp_path / f"{i:05d}.jpg"
        Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(p)
        names.append(str(p))
    return {"video_id": 3, "height": size[0], "width": size[1], "length": n, "file_names": names}


def test_mapper_frames_equal_with_and_without_prefetch_and_decode_off_the_main_thread(tmp_path, monkeypatch):
    video = _video(tmp_path)
    aug = [T.ResizeShortestEdge(40, 100)]
    plain = list(VideoTestDatasetMapper(aug, prefetch_frames=0)(video)["frames"])
    readers = set()
    read = clip_mapper.read_frame

    def spy(*args, **kwargs):
        readers.add(threading.get_ident())
        return read(*args, **kwargs)

    monkeypatch.setattr(clip_mapper, "read_frame", spy)
    ahead = list(VideoTestDatasetMapper(aug)(video)["frames"])
    assert len(ahead) == len(plain) == 6 and ahead[0].shape == (3, 40, 60)
    assert all(torch.equal(a, b) for a, b in zip(ahead, plain))
    assert readers and threading.get_ident() not in readers
    assert not _frames_threads()


def test_a_bad_frame_raises_at_its_position_with_prefetch(tmp_path):
    video = _video(tmp_path)
    (tmp_path / "00003.jpg").write_bytes(b"not a jpeg")
    seen = 0
    with pytest.raises(FrameReadError, match="00003"):
        for _ in VideoTestDatasetMapper()(video)["frames"]:
            seen += 1
    assert seen == 3 and not _frames_threads()
