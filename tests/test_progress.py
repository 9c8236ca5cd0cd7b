"""The progress bar of ``posecli run`` ends at the frame count, also for a clip shorter than the
frames the model holds back (the window, smoothing and batches release them all at the end)."""

import io
import re
import shutil

import pytest
from rich.console import Console

from posecli.config import PipelineConfig
from posecli.runner import run_inputs


@pytest.mark.slow
def test_the_bar_ends_at_the_frame_count(shared_dir, tmp_path, monkeypatch):
    home = tmp_path / "home"
    (home / "weights").mkdir(parents=True)
    shutil.copy(shared_dir / "weights" / "yolox_nano.onnx", home / "weights")
    monkeypatch.setenv("POSECLI_HOME", str(home))
    clip = shared_dir / "data" / "videos" / "mmpose_demo.mp4"  # 5 frames
    screen = io.StringIO()
    console = Console(file=screen, force_terminal=True, width=150)
    assert run_inputs([clip], tmp_path / "out", PipelineConfig(), console=console) == 0
    counts = re.findall(r"(\d+)/(\d+|\?)", re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen.getvalue()))
    assert counts and counts[-1] == ("5", "5")  # the bar's last state
