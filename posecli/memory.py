"""Process-wide allocator settings for long runs (glibc's malloc), set by ``posecli run``.

Measured with ``/usr/bin/time -f %M`` on sports2d_demo.mp4 at half size (884×496) and the same
clip concatenated into one file, ``--format json,jsonl,csv``: with glibc's defaults the peak RSS
was 1,092 MiB for 230 frames, 1,452 MiB for 2,300 and 1,422 MiB for 4,600 frames (+33 %, a
plateau, not a per-frame leak: Python's own allocations stay below 14 MiB, ``tracemalloc``).
The growth is glibc's: tensors of a few hundred KiB to a few MiB, sized by the batch, come from
per-thread heaps that fragment and are not handed back (glibc raises its mmap threshold to
32 MiB after the first large free). With large blocks always mmapped (threshold fixed at
128 KiB) and two arenas, the peaks were 987 MiB and 1,082 MiB (+9.7 %).

The library itself never calls this: changing the allocator of a process that imports posecli
is the application's decision.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys

log = logging.getLogger(__name__)

# mallopt parameters, from glibc's malloc.h.
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
MMAP_THRESHOLD_BYTES = 128 * 1024
ARENA_MAX = 2


def limit_heap_growth() -> bool:
    """Large allocations mmapped (and returned on free), at most ``ARENA_MAX`` malloc arenas.

    Call it early, before the threads of torch and onnxruntime start. Returns False where the C
    library is not glibc (macOS, musl), which is left as it is.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    ok = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(mallopt(_M_ARENA_MAX, ARENA_MAX))
    log.debug("malloc: mmap threshold %d bytes, %d arenas: %s", MMAP_THRESHOLD_BYTES, ARENA_MAX,
              "set" if ok else "refused")
    return ok
