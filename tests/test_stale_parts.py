"""Temporary files left by a killed run are removed by the next one, and only those."""

import os
import subprocess
import sys
import time

import numpy as np

from posecli.sinks import JsonSink, make_sinks
from posecli.types import Frame, FrameResult, ModelInfo, Poses, SourceInfo

SOURCE = SourceInfo(path="clip.mp4", kind="video", width=64, height=48, fps=25.0, num_frames=3)
MODEL = ModelInfo(name="m", sha256="ab" * 32, window=3, steps=2)

KILLED_RUN = """
import os, signal, sys
import numpy as np
from posecli.sinks import make_sinks
from posecli.types import Frame, FrameResult, ModelInfo, Poses, SourceInfo
source = SourceInfo(path="clip.mp4", kind="video", width=64, height=48, fps=25.0, num_frames=3)
model = ModelInfo(name="m", sha256="ab" * 32, window=3, steps=2)
sinks = make_sinks(sys.argv[1], "clip", ["json", "csv"], True, source, model)
for sink in sinks:
    sink.write(FrameResult(Frame(0, 0.0, np.zeros((48, 64, 3), np.uint8)), Poses.empty()))
os.kill(os.getpid(), signal.SIGKILL)
"""


def _age(folder, seconds: float = 60.0) -> None:
    then = time.time() - seconds
    for entry in folder.iterdir():
        os.utime(entry, (then, then))


def test_a_later_run_removes_what_a_killed_run_left_and_nothing_else(tmp_path):
    done = subprocess.run([sys.executable, "-c", KILLED_RUN, str(tmp_path)], capture_output=True, timeout=120)
    assert done.returncode == -9, done.stderr
    stale = sorted(p.name for p in tmp_path.iterdir())
    assert len(stale) == 3 and all(name.startswith(".clip.") and ".part" in name for name in stale)
    live = JsonSink(tmp_path / "running.json", SOURCE, MODEL)  # another run, still writing here
    lookalikes = [".notes.part", ".clip.json.1234abcd.part.csv", "clip.json.1234abcd.part.json",
                  ".clip.json.XYZ12345.part.json"]
    for name in lookalikes:
        (tmp_path / name).write_text("not ours")
    _age(tmp_path)
    try:
        sinks = make_sinks(tmp_path, "clip", ["json"], False, SOURCE, MODEL)
        left = {p.name for p in tmp_path.iterdir()}
        assert not left & set(stale)
        assert live._tmp.name in left and set(lookalikes) <= left
        for sink in sinks:
            sink.write(FrameResult(Frame(0, 0.0, np.zeros((48, 64, 3), np.uint8)), Poses.empty()))
            sink.close()
    finally:
        live.abort()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*lookalikes, "clip.json"])


def test_fresh_temporary_files_are_left_alone(tmp_path):
    """A sink creates its file a moment before it locks it: a very young file is not touched."""
    young = tmp_path / ".clip.json.0123abcd.part.json"
    young.write_text("{")
    make_sinks(tmp_path, "other", ["json"], False, SOURCE, MODEL)[0].abort()
    assert young.exists()
