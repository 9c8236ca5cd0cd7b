"""The allocator settings of ``posecli run``: freed large blocks go back to the system."""

import subprocess
import sys
from pathlib import Path

import pytest

RETAINED = """
import sys
import numpy as np
from posecli.memory import limit_heap_growth
def rss_mib():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20
if sys.argv[1] == "tuned":
    assert limit_heap_growth()
big = np.ones(8 << 20, np.uint8)
del big  # a large free: glibc raises its mmap threshold, later 1 MiB blocks come from the heap
base = rss_mib()
blocks = [np.ones(1 << 20, np.uint8) for _ in range(200)]  # tensors of one batch, say
last = blocks[-1]
del blocks  # all freed but the newest one, which pins the top of the heap
print(round(rss_mib() - base))
"""


def _retained_mib(mode: str) -> int:
    done = subprocess.run([sys.executable, "-c", RETAINED, mode], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return int(done.stdout)


@pytest.mark.skipif(not Path("/proc/self/statm").exists() or sys.platform != "linux",
                    reason="glibc's allocator, RSS from /proc")
def test_freed_batches_are_returned_to_the_system():
    assert _retained_mib("default") > 150  # what made peak memory grow with the video's length
    assert _retained_mib("tuned") < 20
