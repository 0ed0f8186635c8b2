"""Streaming post-processing of the per-frame outputs into a video result: ``video_instances``
(:class:`VideoPostprocessor`, YouTube-VIS-style instance tracks) and ``video_panoptic`` (per-frame panoptic maps
whose thing ids are the slots)."""
