"""Frame sources: video files (PyAV, with an OpenCV fallback) and image folders.

A source is opened with :func:`open_source` and iterated once per pass; it yields
:class:`posecli.types.Frame` objects one at a time (H×W×3 uint8 BGR), so memory does not grow
with the length of the video.

Decoding notes (measured on the clips in ``../shared/data/videos``):

* PyAV (FFmpeg's own libraries, bundled in its wheels) decodes packet by packet in the calling
  thread, with one decoder thread: the result does not depend on how fast frames are taken.
  (decord, used before, decodes in a thread of its own and reported a cut-off file's error
  while good frames were still queued: 9 to 22 of 60 decodable frames, varying run to run.)
  PyAV decodes sports2d_demo.mp4 (VP9, 1768×994) with 1.0 s of CPU against decord's 1.7-2.2 s.
* Frames are read strictly in order (no seeking, which is slow and fragile on damaged files).
* ``Frame.time_s`` is the container's presentation timestamp of the frame, relative to the first
  frame, so a variable frame rate does not drift the way ``index / fps`` would.
* A damaged file is decoded as far as possible: packets the decoder rejects are skipped, and the
  pass ends where the container data ends or becomes unreadable. The source then logs one warning
  with the number of frames read of those announced and sets :attr:`VideoSource.truncated`. A
  file from which not a single frame can be decoded raises :class:`~posecli.errors.PoseCliError`.
* Videos with a display rotation (phone videos) go to OpenCV, which applies the rotation, and so
  do files PyAV cannot open; OpenCV's FFmpeg messages are kept off the terminal.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from posecli.errors import PoseCliError
from posecli.types import Frame, SourceInfo

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = frozenset({".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".ts"})
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp"})
# Frame rate assumed for image sequences, which carry no timing of their own.
DEFAULT_IMAGE_FPS = 30.0


class InputKind(str, enum.Enum):
    """What a command-line input path is."""

    VIDEO = "video"  # one video file
    IMAGES = "images"  # a folder of images (a frame sequence), or a single image file
    VIDEO_FOLDER = "videos"  # a folder of video files, each processed on its own


def natural_key(name: str) -> tuple:
    """Sort key that orders embedded numbers by value: ``2.jpg`` before ``10.jpg``.

    ``re.split`` with a capturing group alternates text and digit runs, so the tuples compare
    text with text and numbers with numbers at every position.
    """
    parts = re.split(r"(\d+)", name.casefold())
    return tuple(int(p) if i % 2 else p for i, p in enumerate(parts))


def _files_with(folder: Path, extensions: frozenset[str]) -> list[Path]:
    files = [p for p in folder.iterdir()
             if p.suffix.lower() in extensions and p.is_file() and not p.name.startswith(".")]
    return sorted(files, key=lambda p: natural_key(p.name))


def list_images(folder: str | Path) -> list[Path]:
    """Image files directly inside ``folder``, in natural name order."""
    return _files_with(Path(folder), IMAGE_EXTENSIONS)


def list_videos(folder: str | Path) -> list[Path]:
    """Video files directly inside ``folder`` (by extension), in natural name order."""
    return _files_with(Path(folder), VIDEO_EXTENSIONS)


def classify_input(path: str | Path) -> InputKind:
    """Tell what kind of input ``path`` is, from names only (no decoding).

    Raises:
        PoseCliError: the path does not exist, is a file of an unsupported type, or is a folder
            without images or videos, or with both (which one was meant is ambiguous).
    """
    p = Path(path)
    if not p.exists():
        raise PoseCliError(f"{p}: no such file or folder")
    if p.is_file():
        suffix = p.suffix.lower()
        if suffix in VIDEO_EXTENSIONS:
            return InputKind.VIDEO
        if suffix in IMAGE_EXTENSIONS:
            return InputKind.IMAGES
        raise PoseCliError(
            f"{p}: not a video or image file (unsupported extension {suffix or '(none)'!r}; "
            f"videos: {', '.join(sorted(VIDEO_EXTENSIONS))}; images: {', '.join(sorted(IMAGE_EXTENSIONS))})"
        )
    if not p.is_dir():
        raise PoseCliError(f"{p}: not a regular file or folder")
    images, videos = list_images(p), list_videos(p)
    if images and videos:
        raise PoseCliError(
            f"{p}: folder holds both images ({len(images)}) and videos ({len(videos)}); "
            "pass the video files themselves, or a folder with only one kind"
        )
    if images:
        return InputKind.IMAGES
    if videos:
        return InputKind.VIDEO_FOLDER
    raise PoseCliError(f"{p}: folder has no images ({', '.join(sorted(IMAGE_EXTENSIONS))}) "
                       f"and no videos ({', '.join(sorted(VIDEO_EXTENSIONS))})")


class VideoSource:
    """A stream of frames from one input. Use :func:`open_source` to make one.

    Iterating starts at the first frame each time (a file is reopened for a second pass).

    Attributes:
        info: size, frame rate and frame count as known before decoding.
        frames_read: frames decoded by the latest pass.
        truncated: True when the latest pass stopped before the end the container announced
            (a damaged or cut-off file), or skipped unreadable images.
    """

    info: SourceInfo

    def __init__(self) -> None:
        self.frames_read = 0
        self.truncated = False

    def __iter__(self) -> Iterator[Frame]:
        raise NotImplementedError

    def close(self) -> None:
        """Release the decoder; iterating again reopens it."""

    def __enter__(self) -> "VideoSource":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __len__(self) -> int:
        """Frames announced by the container (progress bars); the pass may read fewer."""
        return self.info.num_frames

    def _finish(self, exact: int, estimate: int, error: str | None) -> None:
        """Record how a pass ended; warn when it ended early, raise when it read nothing.

        Args:
            exact: frames in the container's index (0 if unknown): every one should decode.
            estimate: frames announced by the header; containers that store only a duration
                (mkv, some avi) give an estimate that can be one off, so one frame is tolerated.
            error: the decoder's complaint if it failed, else None.
        """
        name = Path(self.info.path).name
        if self.frames_read == 0:
            reason = f": {error}" if error else ""
            raise PoseCliError(f"{name}: no frame could be decoded (damaged or not a video){reason}")
        self.truncated = (error is not None or self.frames_read < exact
                          or self.frames_read < estimate - 1)
        if self.truncated:
            why = f" ({error})" if error else ""
            log.warning("%s: decoding stopped early%s; read %d of %d frames",
                        name, why, self.frames_read, max(exact, estimate))


class AvVideoSource(VideoSource):
    """Video file decoded with PyAV (FFmpeg's libraries), packet by packet, single-threaded.

    Decoding is synchronous: a pass over the same file reads the same frames every time. A packet
    the decoder rejects (damage in the middle of a file) is skipped and decoding goes on with the
    next one; demuxing stops at the first unreadable container data (a cut-off file).
    """

    def __init__(self, path: Path) -> None:
        """Open ``path`` and decode its first frame; raises ``av.FFmpegError`` when it cannot.

        Raises:
            PoseCliError: the file has no video stream.
        """
        super().__init__()
        self._path = path
        with self._open() as container:
            if not container.streams.video:
                raise PoseCliError(f"{path.name}: no video stream found")
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate
            fps = float(rate) if rate else float("nan")
            # mp4/mov indexes give the exact count; mkv/webm/avi headers may give only a duration.
            self._exact = max(int(stream.frames or 0), 0)
            duration_s = (float(stream.duration * stream.time_base) if stream.duration
                          else (container.duration or 0) / 1e6)
            estimate = int(round(duration_s * fps)) if self._exact == 0 and fps > 0 else 0
            first = next(self._decoded(container), None)
            if first is None:
                raise PoseCliError(f"{path.name}: no frame could be decoded (damaged or not a video)")
            #: clockwise display rotation in degrees (phone videos); OpenCV applies it.
            self.rotation = int(getattr(first, "rotation", 0) or 0)
        self.info = SourceInfo(path=str(path), kind="video", width=first.width, height=first.height,
                               fps=fps, num_frames=self._exact or estimate)

    def _open(self):
        import av  # heavy import, only needed when decoding

        return av.open(str(self._path))

    def _decoded(self, container) -> Iterator:
        """The ``av.VideoFrame`` objects of the first video stream, in presentation order.

        Sets ``self._error`` to what went wrong, if anything (None for a clean pass).
        """
        import av

        stream = container.streams.video[0]
        stream.thread_count = 1  # the pose model needs the other cores
        self._error = None
        try:
            for packet in container.demux(stream):  # the last packet is empty: it flushes the decoder
                try:
                    yield from packet.decode()
                except av.FFmpegError as exc:  # a damaged packet: skip it, decode the next ones
                    log.debug("%s: packet at %s skipped: %s", self._path, packet.pts, exc)
                    self._error = self._error or "damaged data skipped"
        except av.FFmpegError as exc:  # the container cannot be read further (cut off, damaged)
            log.debug("%s: demuxing stopped: %s", self._path, exc)
            self._error = "unreadable container data"
            try:
                yield from stream.codec_context.decode(None)  # the frames the decoder still holds
            except av.FFmpegError:
                pass

    def __iter__(self) -> Iterator[Frame]:
        self.frames_read, self.truncated = 0, False
        with self._open() as container:
            t0 = None
            for frame in self._decoded(container):
                image = frame.to_ndarray(format="bgr24")
                t = frame.time if frame.pts is not None else self.frames_read / self.info.fps
                t0 = t if t0 is None else t0
                self.frames_read += 1
                yield Frame(index=self.frames_read - 1, time_s=round(t - t0, 6), image=image)
        self._finish(self._exact, self.info.num_frames, self._error)


class OpenCVVideoSource(VideoSource):
    """Video file decoded with ``cv2.VideoCapture`` (rotated videos, and files PyAV cannot open)."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self._path = path
        self._used = False
        self._capture = self._open()
        get = self._capture.get
        width, height = int(get(cv2.CAP_PROP_FRAME_WIDTH)), int(get(cv2.CAP_PROP_FRAME_HEIGHT))
        if width <= 0 or height <= 0:
            self.close()
            raise PoseCliError(f"{path.name}: no video stream found")
        self.info = SourceInfo(path=str(path), kind="video", width=width, height=height,
                               fps=float(get(cv2.CAP_PROP_FPS)),
                               num_frames=max(int(get(cv2.CAP_PROP_FRAME_COUNT)), 0))

    def _open(self) -> cv2.VideoCapture:
        capture = cv2.VideoCapture(str(self._path))
        if not capture.isOpened():
            raise PoseCliError(f"{self._path.name}: cannot be decoded as a video (no video stream, "
                               "damaged, cut off before its index, or not a video at all)")
        return capture

    def __iter__(self) -> Iterator[Frame]:
        if self._capture is None or self._used:  # a second pass: start over
            self.close()
            self._capture = self._open()
        self._used = True
        self.frames_read, self.truncated = 0, False
        t0 = None
        while True:
            ok, image = self._capture.read()
            if not ok:
                break
            # CAP_PROP_POS_MSEC after a read is the presentation time of the frame just read.
            t = self._capture.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
            t0 = t if t0 is None else t0
            self.frames_read += 1
            yield Frame(index=self.frames_read - 1, time_s=round(t - t0, 6), image=image)
        # OpenCV reports a failed read and the end of the stream alike; only the count tells.
        self._finish(0, self.info.num_frames, None)

    def close(self) -> None:
        if self._capture is not None:
            self._capture.release()
            self._capture = None


# EXIF orientations that turn the stored image by 90° (OpenCV decodes images upright).
_EXIF_ORIENTATION = 0x0112
_QUARTER_TURNS = frozenset({5, 6, 7, 8})


def image_size(file: Path) -> tuple[int, int] | None:
    """(width, height) of an image as decoded upright, from its header (no decoding); None if unreadable."""
    from PIL import Image, UnidentifiedImageError  # a header read: ~0.1 ms, vs a decode's milliseconds

    try:
        with Image.open(file) as image:
            width, height = image.size
            turned = image.getexif().get(_EXIF_ORIENTATION) in _QUARTER_TURNS
    except (OSError, UnidentifiedImageError, ValueError):
        return None
    return (height, width) if turned else (width, height)


class ImageFolderSource(VideoSource):
    """Image files in natural name order (or one image file).

    ``Frame.index`` is the file's position in the sorted list and ``time_s = index / fps``;
    an unreadable image is skipped with a warning (its index is left out). Where the images differ
    in size (read from the file headers), ``info.sizes_vary`` is set and ``info.width`` ×
    ``info.height`` is the largest width and height; each frame keeps its own size.
    """

    def __init__(self, path: Path, files: list[Path], fps: float = DEFAULT_IMAGE_FPS) -> None:
        super().__init__()
        if not files:
            raise PoseCliError(f"{path}: no images found")
        if fps <= 0:
            raise PoseCliError(f"frame rate for image sequences must be positive, got {fps}")
        self._files = files
        self._fps = fps
        first = next((image for image in map(self._read, files) if image is not None), None)
        if first is None:
            raise PoseCliError(f"{path}: none of the {len(files)} image file(s) can be read as an image")
        sizes = {(first.shape[1], first.shape[0])} | {size for size in map(image_size, files) if size is not None}
        self.info = SourceInfo(path=str(path), kind="images", width=max(w for w, _ in sizes),
                               height=max(h for _, h in sizes), fps=fps, num_frames=len(files),
                               sizes_vary=len(sizes) > 1)

    @staticmethod
    def _read(file: Path) -> np.ndarray | None:
        # imdecode of the bytes instead of imread: works for non-ASCII paths too.
        data = np.fromfile(file, np.uint8)
        return cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None

    def __iter__(self) -> Iterator[Frame]:
        self.frames_read, self.truncated = 0, False
        skipped = 0
        for index, file in enumerate(self._files):
            image = self._read(file)
            if image is None:
                log.warning("%s: cannot be read as an image; skipped", file)
                skipped += 1
                continue
            self.frames_read += 1
            yield Frame(index=index, time_s=index / self._fps, image=image, file=file.name)
        if self.frames_read == 0:
            raise PoseCliError(f"{self.info.path}: none of the {len(self._files)} images could be read")
        self.truncated = skipped > 0


@contextlib.contextmanager
def _native_stderr_to_log() -> Iterator[None]:
    """Keep what native code writes to file descriptor 2 (FFmpeg inside OpenCV) off the terminal.

    OpenCV prints the complaints of its FFmpeg backend (``moov atom not found`` …) straight to
    the process's stderr, ahead of our one-line error; they go to the debug log instead. Used
    only around short native calls: Python's own writes to stderr in that moment land there too.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            text = captured.read().decode(errors="replace").strip()
            if text:
                log.debug("native decoder output: %s", text[:1000])


def open_video(path: str | Path) -> VideoSource:
    """Open a video file with PyAV, or with OpenCV for rotated videos and where PyAV fails.

    Raises:
        PoseCliError: missing file, not a video, no frames.
    """
    p = Path(path)
    if not p.is_file():
        raise PoseCliError(f"{p}: no such file")
    if p.stat().st_size == 0:
        raise PoseCliError(f"{p.name}: file is empty")
    import av  # heavy import, only needed when decoding

    try:
        source = AvVideoSource(p)
    except av.FFmpegError as exc:  # not a container PyAV reads, index missing, …: try OpenCV
        log.info("PyAV cannot open %s (%s); trying OpenCV", p, str(exc).strip()[:200])
    else:
        if source.rotation % 360 == 0:
            return source
        # OpenCV applies the display rotation of phone videos to the frames.
        log.debug("%s has a %d° display rotation; decoding with OpenCV", p, source.rotation)
    with _native_stderr_to_log():
        return OpenCVVideoSource(p)


def open_source(path: str | Path, *, image_fps: float = DEFAULT_IMAGE_FPS) -> VideoSource:
    """Open a video file, an image folder, or a single image as a frame source.

    Args:
        path: video file, folder of images, or one image file.
        image_fps: frame rate assumed for image inputs (they carry no timing).

    Raises:
        PoseCliError: the input is missing, unsupported, empty, a folder of videos (open each of
            :func:`list_videos` instead), or cannot be decoded.
    """
    p = Path(path)
    kind = classify_input(p)
    if kind is InputKind.VIDEO:
        return open_video(p)
    if kind is InputKind.VIDEO_FOLDER:
        raise PoseCliError(f"{p}: folder of videos; open each video on its own")
    files = list_images(p) if p.is_dir() else [p]
    return ImageFolderSource(p, files, fps=image_fps)
