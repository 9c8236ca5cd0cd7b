"""Overlay videos: H.264 that browsers play, read back from the file; mp4v only as a fallback."""

import logging
import struct

import av
import numpy as np

from posecli import encode
from posecli.sinks import OverlaySink
from posecli.types import Frame, FrameResult, ModelInfo, Poses, SourceInfo

MODEL = ModelInfo(name="m", sha256="ab" * 32, window=3, steps=2)


def _results(width: int, height: int, count: int) -> list[FrameResult]:
    rng = np.random.default_rng(0)
    out = []
    for t in range(count):
        xy = rng.uniform(5.0, min(width, height) - 5.0, (1, 17, 2)).astype(np.float32)
        poses = Poses(np.array([[4.0, 4.0, width - 5.0, height - 5.0]], np.float32), np.ones(1, np.float32),
                      xy, np.ones((1, 17), np.float32), np.array([1]))
        image = rng.integers(0, 255, (height, width, 3), np.uint8)
        out.append(FrameResult(Frame(index=t, time_s=t / 25, image=image), poses))
    return out


def _write_overlay(path, width, height, count, **options) -> OverlaySink:
    source = SourceInfo(path="clip.mp4", kind="video", width=width, height=height, fps=25.0, num_frames=count)
    with OverlaySink(path, source, MODEL, **options) as sink:
        for result in _results(width, height, count):
            sink.write(result)
    return sink


def _top_level_boxes(data: bytes) -> list[bytes]:
    names, at = [], 0
    while at + 8 <= len(data):
        size, name = struct.unpack(">I4s", data[at:at + 8])
        if size == 1:
            size = struct.unpack(">Q", data[at + 8:at + 16])[0]
        names.append(name)
        at += size if size else len(data)
    return names


def test_overlay_is_browser_playable_h264(tmp_path):
    # Odd sides: 4:2:0 H.264 needs even ones, the last column and row are dropped.
    path = tmp_path / "clip.overlay.mp4"
    sink = _write_overlay(path, 161, 121, 12)
    assert sink.codec == encode.H264
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        assert stream.codec_context.format.name == "yuv420p"
        assert (stream.codec_context.width, stream.codec_context.height) == (160, 120)
        assert float(stream.average_rate) == 25.0
        assert sum(1 for _ in container.decode(stream)) == 12
    boxes = _top_level_boxes(path.read_bytes())
    assert boxes.index(b"moov") < boxes.index(b"mdat")  # faststart: plays while it downloads
    assert list(tmp_path.iterdir()) == [path]


def test_without_h264_the_overlay_is_mp4v_with_a_warning(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(encode, "h264_available", lambda: False)
    path = tmp_path / "clip.overlay.mp4"
    with caplog.at_level(logging.WARNING, logger="posecli.encode"):
        sink = _write_overlay(path, 64, 48, 5)
    assert sink.codec == encode.MPEG4
    with av.open(str(path)) as container:
        assert container.streams.video[0].codec_context.name == "mpeg4"
        assert sum(1 for _ in container.decode(video=0)) == 5
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "mp4v" in warnings[0] and "H.264" in warnings[0]


def test_the_encoder_is_found_in_the_installed_pyav():
    assert encode.h264_available()
