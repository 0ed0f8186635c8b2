"""Running an iterator ahead in a background thread: test frames are decoded while the model runs.

A whole test video is one dataset item (its frames are read lazily, one at a time, so memory stays flat in the
video length), so detectron2's loader workers cannot overlap decoding with the model: without prefetching, every
frame's JPEG decode and resize sits on the main thread between two forward passes. :func:`prefetch` moves that work
to one thread that stays at most ``depth`` items ahead. Image decoding (OpenCV, PIL) and resizing release the GIL,
so the thread runs beside the model's kernels.

Order, values and errors are those of the plain iteration: an exception raised while producing item ``k`` is
re-raised to the consumer when it asks for item ``k`` (after the ``k`` items before it). Closing the consumer early
(``break``, an exception in the model, garbage collection) stops the thread.
"""

from __future__ import annotations

import queue
import threading
from typing import Iterable, Iterator, TypeVar

__all__ = ["prefetch"]

T = TypeVar("T")

_END = object()
#: How long the producer waits on a full queue before checking whether the consumer went away (seconds).
_POLL_S = 0.05


def prefetch(iterable: Iterable[T], depth: int = 2, name: str = "prefetch") -> Iterator[T]:
    """Iterate ``iterable`` in a daemon thread, at most ``depth`` items ahead of the consumer.

    Args:
        iterable: produces the items (iterated in the background thread only).
        depth: items held ready; ``0`` iterates in the calling thread (no thread at all).
        name: the thread's name (shows in profilers and stack dumps).

    Yields:
        the items of ``iterable``, in order.
    """
    if depth <= 0:
        yield from iterable
        return
    ready: "queue.Queue" = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                ready.put(item, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in iterable:
                if not put((item, None)):
                    return
        except BaseException as e:  # noqa: BLE001 - handed to the consumer, raised there
            put((_END, e))
            return
        put((_END, None))

    thread = threading.Thread(target=produce, name=name, daemon=True)
    thread.start()
    try:
        while True:
            item, error = ready.get()
            if item is _END:
                if error is not None:
                    raise error
                return
            yield item
    finally:
        stop.set()
        thread.join()
