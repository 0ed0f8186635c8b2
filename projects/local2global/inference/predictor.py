"""Streaming video inference: feed frames one at a time, get tracked instances per frame.

```python
from detectron2.config import LazyConfig
from local2global.inference.predictor import VideoPredictor

cfg = LazyConfig.load("configs/ytvis_2019/local2global_r50.py")
cfg.train.init_checkpoint = "output/model_final.pth"
predictor = VideoPredictor(cfg)
for frame in frames:                       # H×W×3 uint8 numpy arrays (RGB by default)
    inst = predictor(frame)                # FrameInstances: track_ids, scores, labels, masks, boxes
predictor.reset()                          # before the next video
```

The predictor keeps only the model's tracker state between frames (O(N·D) for every shipped tracker, e.g.
:class:`~local2global.modeling.trackers.TrackState`) (plus the video-level running scores and RLEs of the post-processor, which the video result needs);
per-frame masks are returned to the caller and not retained.
"""

from __future__ import annotations

import logging
from typing import Any, Dict, Optional, Tuple

import numpy as np
import torch
from detectron2.config import instantiate
from detectron2.data import transforms as T

from local2global.modeling.checkpoint import Local2GlobalCheckpointer
from local2global.modeling.postprocessing.video_instances import FrameInstances

__all__ = ["VideoPredictor", "to_rgb_uint8"]

logger = logging.getLogger(__name__)


def to_rgb_uint8(frame: np.ndarray, input_format: str = "RGB") -> np.ndarray:
    """Normalise a frame to ``H×W×3`` uint8 RGB: grayscale is replicated, alpha is dropped, BGR is flipped.

    Raises:
        ValueError: for shapes that are not ``H×W``, ``H×W×1``, ``H×W×3`` or ``H×W×4``.
    """
    arr = np.asarray(frame)
    if arr.dtype != np.uint8:
        raise ValueError(f"expected a uint8 frame, got dtype {arr.dtype}")
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4):
        raise ValueError(f"expected an H×W, H×W×1, H×W×3 or H×W×4 frame, got shape {arr.shape}")
    if arr.shape[2] == 1:
        return np.repeat(arr, 3, axis=2)
    arr = arr[:, :, :3]
    if input_format.upper() == "BGR":
        arr = arr[:, :, ::-1]
    return np.ascontiguousarray(arr)


class VideoPredictor:
    """Online predictor for webcams and long videos.

    Args:
        cfg: a LazyConfig with ``model`` (a :class:`Local2Global`) and optionally ``train.init_checkpoint``,
            ``train.device``; or pass ``model=`` directly.
        model: an already-built model (overrides ``cfg.model``).
        min_size_test / max_size_test: the test resize (shortest edge, longest-edge cap).
        input_format: ``"RGB"`` or ``"BGR"`` (OpenCV frames).
        device: overrides ``cfg.train.device``.
        keep_video_result: keep per-frame RLEs so that :meth:`video_result` can rank tracks over the whole
            video. Set ``False`` for endless streams (webcams): then memory stays flat for any stream length.
    """

    def __init__(self, cfg=None, *, model=None, min_size_test: int = 360, max_size_test: int = 640,
                 input_format: str = "RGB", device: Optional[str] = None, keep_video_result: bool = True):
        if model is None:
            if cfg is None:
                raise ValueError("VideoPredictor needs a config or a model")
            model = instantiate(cfg.model)
            device = device or cfg.get("train", {}).get("device", None)
            if device:
                model.to(device)
            ckpt = cfg.get("train", {}).get("init_checkpoint", "")
            if ckpt:
                Local2GlobalCheckpointer(model).load(ckpt)
            else:
                logger.warning("VideoPredictor: no train.init_checkpoint given, using randomly initialised weights")
        elif device:
            model.to(device)
        self.model = model.eval()
        self.resize = T.ResizeShortestEdge(min_size_test, max_size_test)
        self.input_format = input_format
        self.keep_video_result = keep_video_result
        self.reset()

    def reset(self) -> None:
        """Start a new video."""
        self._state: Any = None  # the model's tracker state (None before the first frame)
        self._frame_index = 0
        self._output_size: Optional[Tuple[int, int]] = None
        self.model.postprocessor.reset()

    @property
    def state(self) -> Any:
        """The tensors carried between frames (O(N·D), independent of the video length)."""
        return self._state

    @torch.no_grad()
    def __call__(self, frame: np.ndarray) -> FrameInstances:
        """Process the next frame of the current video.

        Args:
            frame: ``H×W×3`` (or grayscale / RGBA) uint8 image in ``input_format``.

        Returns:
            :class:`FrameInstances` of this frame (masks at the frame's original resolution).

        Raises:
            ValueError: if the frame size differs from the first frame of the video (call :meth:`reset`
                between videos; resize frames yourself if a stream changes resolution on purpose).
        """
        rgb = to_rgb_uint8(frame, self.input_format)
        size = rgb.shape[:2]
        if self._output_size is None:
            self._output_size = size
        elif size != self._output_size:
            raise ValueError(f"frame {self._frame_index} has size {size[0]}x{size[1]} but this video started at "
                             f"{self._output_size[0]}x{self._output_size[1]}; call reset() for a new video")
        resized = self.resize.get_transform(rgb).apply_image(rgb)
        tensor = torch.as_tensor(np.ascontiguousarray(resized.transpose(2, 0, 1)))
        self._state, inst = self.model.process_frame(self._state, tensor, self._output_size,
                                                     return_instances=True, frame_index=self._frame_index,
                                                     store=self.keep_video_result)
        self._frame_index += 1
        return inst

    def video_result(self, video_id=0) -> Dict:
        """The video-level result of all frames fed so far (evaluator format), then :meth:`reset`."""
        if self._output_size is None:
            raise RuntimeError("no frame was processed")
        if not self.keep_video_result:
            raise RuntimeError("this predictor was built with keep_video_result=False")
        result = self.model.postprocessor.finalize(video_id, self._output_size)
        self.reset()
        return result
