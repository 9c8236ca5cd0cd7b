import weakref

import pytest

from posecli.errors import PoseCliError
from posecli.window import TemporalWindows, iter_windows


def all_windows(n: int, window: int) -> list:
    return list(iter_windows(range(n), window))


def expected_indices(n: int, window: int) -> list[tuple[int, ...]]:
    d = window // 2
    return [tuple(min(max(t + k, 0), n - 1) for k in range(-d, d + 1)) for t in range(n)]


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 8, 20])
@pytest.mark.parametrize("window", [1, 3, 5, 9])
def test_every_key_once_in_order_with_edge_replication(n, window):
    windows = all_windows(n, window)
    assert [w.key_index for w in windows] == list(range(n))
    assert [w.key for w in windows] == list(range(n))
    assert [w.indices for w in windows] == expected_indices(n, window)
    # Items are the stream values at those positions (here the value is the position).
    assert [w.items for w in windows] == expected_indices(n, window)


def test_edges_repeat_the_nearest_frame():
    windows = all_windows(6, 5)
    assert windows[0].items == (0, 0, 0, 1, 2)
    assert windows[1].items == (0, 0, 1, 2, 3)
    assert windows[2].items == (0, 1, 2, 3, 4)
    assert windows[4].items == (2, 3, 4, 5, 5)
    assert windows[5].items == (3, 4, 5, 5, 5)


def test_short_streams():
    assert [w.items for w in all_windows(1, 5)] == [(0, 0, 0, 0, 0)]
    assert [w.items for w in all_windows(2, 5)] == [(0, 0, 0, 1, 1), (0, 0, 1, 1, 1)]
    assert all_windows(0, 5) == []


def test_window_one_yields_each_item_alone_without_delay():
    windows = TemporalWindows(1)
    for i in range(4):
        out = windows.push(f"frame{i}")
        assert [w.items for w in out] == [(f"frame{i}",)]
    assert windows.flush() == []


def test_windows_come_delta_late_and_flush_gives_the_rest():
    windows = TemporalWindows(5)
    assert windows.push("a") == [] and windows.push("b") == []
    (w,) = windows.push("c")
    assert w.key == "a" and w.items == ("a", "a", "a", "b", "c")
    (w,) = windows.push("d")
    assert w.key == "b"
    rest = windows.flush()
    assert [w.key for w in rest] == ["c", "d"]
    assert rest[-1].items == ("b", "c", "d", "d", "d")
    # After a flush the object takes a new stream.
    assert windows.buffered == 0
    windows.push("x")
    assert [w.items for w in windows.flush()] == [("x",) * 5]


class Item:
    """A weak-referenceable stand-in for a decoded frame."""

    def __init__(self, i: int) -> None:
        self.i = i


@pytest.mark.parametrize("window", [1, 3, 7])
def test_memory_bound(window):
    windows = TemporalWindows(window)
    alive: weakref.WeakSet = weakref.WeakSet()
    keys = []
    for i in range(50):
        item = Item(i)
        alive.add(item)
        out = windows.push(item)
        keys += [w.key.i for w in out]
        del item, out  # reference counting frees unreferenced items at once
        assert windows.buffered <= window
        # Nothing but the buffer keeps items alive: old frames are really freed.
        assert len(alive) <= window
    keys += [w.key.i for w in windows.flush()]
    assert keys == list(range(50))


def test_iter_windows_is_lazy():
    pulled = []

    def stream():
        for i in range(10):
            pulled.append(i)
            yield i

    it = iter_windows(stream(), 3)
    first = next(it)
    assert first.items == (0, 0, 1)
    assert pulled == [0, 1]


@pytest.mark.parametrize("bad", [0, 2, 4, -1, 1.0, True])
def test_window_must_be_positive_odd(bad):
    with pytest.raises(PoseCliError):
        TemporalWindows(bad)
