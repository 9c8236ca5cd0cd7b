"""Splitting a batch of inputs into N shards for N independent processes (``posecli run --shard I/N``).

The split is a pure function of the inputs' output names and sizes: every process of a job array
(SLURM, GNU parallel, ``xargs -P``) expands the same inputs, computes the same split and keeps its
own part, with no coordination. It does not depend on the order in which the file system lists
files, on the current directory or on where the shared folder is mounted.

Balance: longest-processing-time-first on file size (the size of a video, the summed size of an
image folder's images), a cheap stand-in for duration that needs no decoding: inputs from the
largest down each go to the shard with the least bytes so far (the fewest inputs, then the lowest
index, on ties). Every shard ends within one input's size of the average.
"""

from __future__ import annotations

import heapq
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from posecli.errors import PoseCliError

_SHARD = re.compile(r"\s*(\d+)\s*/\s*(\d+)\s*")


def parse_shard(text: str) -> tuple[int, int]:
    """``"I/N"`` → ``(I, N)``: the I-th of N shards, counted from 1.

    Raises:
        PoseCliError: not of the form I/N with 1 ≤ I ≤ N.
    """
    match = _SHARD.fullmatch(text)
    if match is None or not 1 <= int(match[1]) <= int(match[2]):
        raise PoseCliError(f"--shard must be I/N with 1 ≤ I ≤ N (e.g. 2/8), not {text!r}")
    return int(match[1]), int(match[2])


def input_size(path: Path) -> int:
    """Bytes of an input: the file's size, or the summed size of an image folder's images."""
    from posecli.video import list_images

    if path.is_dir():
        return sum(p.stat().st_size for p in list_images(path))
    return path.stat().st_size


def assign_shards(sizes: Sequence[int], names: Sequence[str], count: int) -> list[int]:
    """The shard (0-based) of each input, balanced by size.

    Args:
        sizes: per input, its size in bytes (any non-negative measure of work).
        names: per input, a name unique within the batch (its output stem): breaks ties between
            equal sizes, so the split does not depend on the order of the inputs.
        count: number of shards N ≥ 1.

    Returns:
        Per input (in the given order), the index of its shard in ``0 … N-1``.
    """
    order = sorted(range(len(sizes)), key=lambda i: (-sizes[i], names[i]))
    loads = [(0, 0, shard) for shard in range(count)]  # (bytes, inputs, shard): a min-heap
    shards = [0] * len(sizes)
    for i in order:
        load, inputs, shard = heapq.heappop(loads)
        shards[i] = shard
        heapq.heappush(loads, (load + sizes[i], inputs + 1, shard))
    return shards


def select_shard(paths: Sequence[Path], names: Mapping[Path, str], index: int, count: int) -> list[Path]:
    """The inputs of shard ``index`` of ``count`` (counted from 1), in their given order.

    Args:
        paths: every input of the batch (folders already expanded).
        names: output stem of each path (unique within the batch).
    """
    shards = assign_shards([input_size(p) for p in paths], [f"{names[p]}\0{p.as_posix()}" for p in paths],
                           count)
    return [p for p, shard in zip(paths, shards) if shard == index - 1]
