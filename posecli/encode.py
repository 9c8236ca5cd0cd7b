"""Video encoding for overlays: H.264 through PyAV, MPEG-4 Part 2 through OpenCV as a fallback.

H.264 (``libx264``, 8-bit ``yuv420p``, ``moov`` index at the front: "faststart") is what
browsers, Jupyter and VS Code play, while OpenCV's ``mp4v`` (MPEG-4 Part 2) plays only in
VLC-like players and is several times larger. PyAV's wheels bundle FFmpeg with libx264, so the
encoder comes with ``pip install``; OpenCV's own ``avc1`` needs an OpenCV built against an
H.264 encoder, which the PyPI wheels are not. Where libx264 is missing anyway (a PyAV built
against a system FFmpeg without it), :class:`VideoEncoder` writes ``mp4v`` and warns.
"""

from __future__ import annotations

import logging
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

from .errors import PoseCliError

log = logging.getLogger(__name__)

H264 = "libx264"
MPEG4 = "mp4v"
# Constant quality 23 (x264's default) and a fast preset, measured on the 230 frames of
# sports2d_demo.mp4 (1768×994) in one run: 26 ms of CPU per frame on one thread (mp4v: 11 ms) for a
# file 5.2× smaller (2.3 MB against 11.8 MB).
X264_OPTIONS = {"crf": "23", "preset": "veryfast"}


def h264_available() -> bool:
    """True when PyAV is installed with an H.264 (libx264) encoder."""
    try:
        import av

        av.codec.Codec(H264, "w")
    except Exception:  # noqa: BLE001 - ImportError, or av's "unknown codec"
        return False
    return True


class VideoEncoder:
    """Writes H×W×3 uint8 BGR frames of one size to an ``.mp4`` file at a constant frame rate.

    H.264 needs even frame sides (4:2:0 chroma); a frame with an odd width or height loses its
    last column or row. ``codec`` tells what is written: ``"libx264"`` or ``"mp4v"``.
    """

    def __init__(self, path: str | Path, fps: float, size_wh: tuple[int, int],
                 prefer_h264: bool = True) -> None:
        """
        Args:
            path: the ``.mp4`` file to write (any name: the container format is set explicitly).
            fps: frames per second (positive).
            size_wh: (width, height) of the frames.
            prefer_h264: try H.264 first; False writes ``mp4v`` directly.

        Raises:
            PoseCliError: neither encoder can write the file.
        """
        self.path = Path(path)
        self._size = (int(size_wh[0]), int(size_wh[1]))
        self._container = self._stream = self._writer = None
        if prefer_h264 and h264_available():
            self._open_h264(fps)
            self.codec = H264
            return
        if prefer_h264:
            log.warning("%s: no H.264 encoder (PyAV with libx264) is installed; writing MPEG-4 Part 2 "
                        "(mp4v), which browsers do not play", self.path.name)
        self._writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*MPEG4), float(fps), self._size)
        if not self._writer.isOpened():
            self._writer.release()
            raise PoseCliError(f"cannot write {self.path}: no video encoder available")
        self.codec = MPEG4

    def _open_h264(self, fps: float) -> None:
        import av

        width, height = self._size[0] & ~1, self._size[1] & ~1
        if width == 0 or height == 0:
            raise PoseCliError(f"cannot write {self.path}: frames of {self._size[0]}×{self._size[1]} "
                               "are too small for H.264")
        self._container = av.open(str(self.path), "w", format="mp4", options={"movflags": "+faststart"})
        stream = self._container.add_stream(H264, rate=Fraction(fps).limit_denominator(1001 * 1000))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = dict(X264_OPTIONS)
        stream.codec_context.thread_count = 1  # the pose model has the other cores
        self._stream = stream

    def write(self, image: np.ndarray) -> None:
        """Append one frame (H×W×3 uint8 BGR, of the size given at construction)."""
        if self._writer is not None:
            self._writer.write(image)
            return
        import av

        stream = self._stream
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image[:stream.height, :stream.width]),
                                           format="bgr24")
        for packet in stream.encode(frame):
            self._container.mux(packet)

    def close(self) -> None:
        """Flush the encoder and finish the file (idempotent)."""
        if self._writer is not None:
            self._writer.release()
            self._writer = None
        if self._container is not None:
            container, self._container = self._container, None
            try:
                for packet in self._stream.encode(None):
                    container.mux(packet)
            finally:
                container.close()
