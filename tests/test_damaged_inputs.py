"""Damaged and fake videos through the real command, in a process of its own.

The native decoders write to the process's file descriptor 2, which only a separate process
shows: every bad input must give exactly one ``error:`` line on stderr and nothing else.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np


def _mp4v(path: Path, frames: int) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (96, 64))
    rng = np.random.default_rng(1)
    for _ in range(frames):
        writer.write(rng.integers(0, 255, (64, 96, 3), np.uint8))
    writer.release()
    return path


def _bad_inputs(shared_dir: Path, folder: Path) -> list[Path]:
    folder.mkdir()
    text = folder / "notes.mp4"
    text.write_text("this is not a video\n" * 50)
    noise = folder / "noise.mkv"
    noise.write_bytes(np.random.default_rng(0).integers(0, 256, 20000, np.uint8).tobytes())
    whole = _mp4v(folder / "whole.mp4", 20).read_bytes()
    no_index = folder / "no_index.mp4"  # OpenCV writes the index (moov) at the end
    no_index.write_bytes(whole[: len(whole) // 2])
    header_only = folder / "header_only.mp4"  # index first, not one frame after it
    header_only.write_bytes((shared_dir / "data" / "videos" / "vtest.mp4").read_bytes()[:12000])
    (folder / "whole.mp4").unlink()
    zero = _mp4v(folder / "zero.mp4", 0)
    empty = folder / "empty.mp4"
    empty.touch()
    return [text, noise, no_index, header_only, zero, empty]


def test_each_bad_video_is_one_stderr_line(shared_dir, tmp_path):
    home = tmp_path / "home"
    (home / "weights").mkdir(parents=True)
    shutil.copy(shared_dir / "weights" / "yolox_nano.onnx", home / "weights")
    inputs = _bad_inputs(shared_dir, tmp_path / "in")
    env = dict(os.environ, POSECLI_HOME=str(home), XDG_CACHE_HOME=str(tmp_path / "cache"))
    done = subprocess.run(
        [sys.executable, "-c", "from posecli.cli import app; app()", "run", *map(str, inputs),
         "--out", str(tmp_path / "out")],
        capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 1
    lines = done.stderr.splitlines()
    assert len(lines) == len(inputs), done.stderr
    for line, path in zip(lines, inputs):
        assert line.startswith(f"error: {path.name}: "), line
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())
