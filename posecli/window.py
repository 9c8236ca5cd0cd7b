"""Streaming temporal windows: frames ``t-δ … t+δ`` around each key frame ``t``.

Items (whatever the caller pushes: a ``Frame``, or a tuple of a frame and its detections) arrive
one at a time. The window for key frame ``t`` is complete once item ``t+δ`` has arrived, so it is
returned δ items late; :meth:`TemporalWindows.flush` returns the last δ windows at the end of the
stream. Past either end of the stream the nearest item is repeated (edge replication), so
every window has exactly ``2δ+1`` items and the key item is always in the middle. Only the last
``2δ+1`` items are held.

Example::

    windows = TemporalWindows(5)
    for frame in source:
        for w in windows.push(frame):
            handle(w.key, w.items)
    for w in windows.flush():
        handle(w.key, w.items)
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

from posecli.errors import PoseCliError

T = TypeVar("T")


@dataclass(frozen=True)
class Window(Generic[T]):
    """The ``2δ+1`` items around one key item.

    Attributes:
        key_index: 0-based position of the key item in the stream.
        items: the items at stream positions ``key_index-δ … key_index+δ``, clamped to the stream.
        indices: those clamped stream positions (repeats show where an edge was replicated).
    """

    key_index: int
    items: tuple[T, ...]
    indices: tuple[int, ...]

    @property
    def key(self) -> T:
        """The key item, in the middle of the window."""
        return self.items[len(self.items) // 2]


class TemporalWindows(Generic[T]):
    """Turns a stream of items into one window per item, keeping at most ``window`` items."""

    def __init__(self, window: int) -> None:
        """
        Args:
            window: frames per window T, odd and ≥ 1 (1 gives each item alone).

        Raises:
            PoseCliError: ``window`` is not a positive odd number.
        """
        if isinstance(window, bool) or not isinstance(window, int) or window < 1 or window % 2 == 0:
            raise PoseCliError(
                f"window must be a positive odd number of frames (1, 3, 5, ...), got {window!r}")
        self.window = window
        self.delta = window // 2
        self._buffer: deque[T] = deque(maxlen=window)  # items at positions count-len … count-1
        self._count = 0  # items pushed since the start (or the last flush)

    @property
    def buffered(self) -> int:
        """Items held right now (never more than ``window``)."""
        return len(self._buffer)

    def push(self, item: T) -> list[Window[T]]:
        """Add the next item; returns the window that became complete, if any (0 or 1 of them)."""
        self._buffer.append(item)
        self._count += 1
        key = self._count - 1 - self.delta
        return [self._window(key, last=self._count - 1)] if key >= 0 else []

    def flush(self) -> list[Window[T]]:
        """End of stream: the windows not yet returned (the last δ, or all for a short stream).

        The object is empty afterwards and can take a new stream.
        """
        last = self._count - 1
        windows = [self._window(key, last) for key in range(max(self._count - self.delta, 0), self._count)]
        self._buffer.clear()
        self._count = 0
        return windows

    def _window(self, key: int, last: int) -> Window[T]:
        """The window of ``key`` with stream positions clamped to ``0 … last``."""
        first_held = self._count - len(self._buffer)
        indices = tuple(min(max(key + k, 0), last) for k in range(-self.delta, self.delta + 1))
        return Window(key, tuple(self._buffer[i - first_held] for i in indices), indices)


def iter_windows(items: Iterable[T], window: int) -> Iterator[Window[T]]:
    """All windows of a stream, lazily, holding at most ``window`` items at a time."""
    windows: TemporalWindows[T] = TemporalWindows(window)
    for item in items:
        yield from windows.push(item)
    yield from windows.flush()
