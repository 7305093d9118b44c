"""Run a producer iterator in a background thread, ``depth`` items ahead of the consumer.

Decoding images or video (Pillow, FFmpeg) releases the GIL for most of its time, as does ONNX
Runtime, so the next batch is decoded while the model runs the current one.  The queue is bounded,
so memory stays at ``depth`` batches.  An exception in the producer is re-raised in the consumer;
when the consumer stops early (``break``, error), the producer is told to stop and is joined.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from typing import TypeVar

T = TypeVar("T")

_DONE = object()


def prefetch(make: Callable[[], Iterator[T]], depth: int = 2) -> Iterator[T]:
    q: queue.Queue[object] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        it: Iterator[T] | None = None
        try:
            it = make()
            for item in it:
                if not put(item):
                    return
            put(_DONE)
        except BaseException as exc:  # handed to the consumer, which re-raises it
            put(exc)
        finally:
            close = getattr(it, "close", None) if it is not None else None
            if close is not None:
                close()

    thread = threading.Thread(target=work, name="edgequant-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item  # type: ignore[misc]
    finally:
        stop.set()
        thread.join(timeout=30)
