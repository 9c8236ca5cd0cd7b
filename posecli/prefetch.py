"""Run the head of a pipeline (decoding, detection) in a background thread, a bounded queue ahead.

``prefetch(items, depth)`` iterates ``items`` in a worker thread and hands the results to the
caller through a queue of at most ``depth`` entries, so that work done while producing an item
(video decoding, the person detector: OpenCV, decord and torch release the GIL while they
compute) overlaps with what the caller does with the previous ones (the pose model).

Guarantees:
    * Order is kept: items come out exactly as ``items`` yields them.
    * Memory is bounded: at most ``depth`` finished items wait in the queue, plus the one the
      worker is producing.
    * An exception raised by ``items`` is re-raised in the caller, at the position where it
      happened (after the items produced before it), with its original traceback.
    * Stopping early (``break``, an exception in the caller, ``close()``) stops the worker: it
      finishes the item in hand, then ``items`` is closed in the worker thread (so its
      ``finally``/``with`` blocks run there, e.g. a video file is released), and the thread is
      joined before ``close()`` returns.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")

_POLL_S = 0.05  # how often a blocked worker checks whether the consumer has gone


class _End:
    """Queue marker: the producer is done (``error`` is None) or failed with ``error``."""

    def __init__(self, error: BaseException | None = None) -> None:
        self.error = error


def prefetch(items: Iterable[T], depth: int = 4, name: str = "posecli-prefetch") -> Iterator[T]:
    """Iterate ``items`` in a background thread, up to ``depth`` items ahead of the caller.

    Args:
        items: any iterable; it is iterated (and closed, if it is a generator) in the worker.
        depth: queue size, ≥ 1. ``depth = 0`` iterates ``items`` in the caller's thread (no
            worker), which keeps the same results with no overlap.
        name: the worker thread's name (shows up in debuggers and ``py-spy``).

    Yields:
        The items of ``items``, in order.
    """
    if depth < 0:
        raise ValueError(f"prefetch depth must be >= 0, got {depth}")
    if depth == 0:
        yield from items
        return
    buffer: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(entry: object) -> bool:
        """Queue ``entry`` unless the consumer stopped; False when it did."""
        while not stop.is_set():
            try:
                buffer.put(entry, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        iterator = iter(items)
        try:
            for item in iterator:
                if not put(item):
                    return
            put(_End())
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, re-raised there
            put(_End(exc))
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()

    worker = threading.Thread(target=work, name=name, daemon=True)
    worker.start()
    try:
        while True:
            entry = buffer.get()
            if isinstance(entry, _End):
                if entry.error is not None:
                    raise entry.error
                return
            yield entry
    finally:
        stop.set()
        # Unblock a worker waiting on a full queue, then wait for it to finish its item.
        while worker.is_alive():
            try:
                buffer.get_nowait()
            except queue.Empty:
                pass
            worker.join(timeout=_POLL_S)
