"""Output writers: posecli/1 JSON, JSONL, CSV, COCO results, MMAction2 pickle, NPZ, overlay video.

Every sink has the same life cycle::

    with JsonSink(path, source_info, model_info) as sink:   # the directory is checked here
        for result in results:
            sink.write(result)
    # leaving the block normally: close(): the file appears, complete, under its name
    # leaving it by an exception (Ctrl-C included): abort(): nothing appears

Data goes to a hidden temporary file next to the target (``.<name>.<random>.part<suffix>``) and
is moved into place with ``os.replace`` only when complete, so a reader never sees half a file.
A killed process (SIGKILL, power loss) can leave such a ``.part`` file behind; it is never
mistaken for output, and the next :func:`make_sinks` into that folder removes it. A sink holds
an exclusive ``flock`` on its temporary file while it writes, so a ``.part`` file whose lock can
be taken belongs to no live process (the kernel drops the locks of a killed one), while those of
runs still writing into the same folder are left alone.

Memory: ``json``, ``jsonl``, ``csv``, ``coco`` and ``overlay`` write each frame as it comes.
``mmaction`` and ``npz`` need all frames to build their arrays, so they keep the keypoints,
scores and boxes (about 250 bytes per person per frame), never images.

Conventions (see ``types.py``): pixel coordinates of the original frame, x right, y down, the
centre of the top-left pixel at (0.0, 0.0). Numbers are rounded on output: coordinates to 0.01 px,
scores to 1e-4, times to 1 µs. Unknown values (NaN) are written as JSON ``null`` / empty CSV
fields (COCO, which has no null, gets 0 with score 0).
"""

from __future__ import annotations

import csv
import fcntl
import json
import logging
import math
import os
import pickle
import re
import secrets
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, BinaryIO

import cv2
import numpy as np

from .draw import draw_poses
from .encode import VideoEncoder
from .errors import PoseCliError
from .types import COCO_KEYPOINTS, COCO_SKELETON, Frame, FrameResult, ModelInfo, SourceInfo

log = logging.getLogger(__name__)

SCHEMA = "posecli/1"
FORMATS: tuple[str, ...] = ("json", "jsonl", "csv", "coco", "mmaction", "npz")
SUFFIXES: dict[str, str] = {
    "json": ".json", "jsonl": ".jsonl", "csv": ".csv", "coco": ".coco.json",
    "mmaction": ".mmaction.pkl", "npz": ".npz", "overlay": ".overlay.mp4",
}
CSV_COLUMNS = ("frame", "time_s", "track_id", "keypoint", "x", "y", "score")
# Temporary file names: ``.<target name>.<8 hex digits>.part<target suffix>``.
_PART_NAME = re.compile(r"\.(?P<name>.+)\.[0-9a-f]{8}\.part(?P<suffix>\.[^.]*)?")
_PART_MIN_AGE_S = 10.0
# Width reserved for source.num_frames, filled in at close: the count is known only at the end,
# but the source block comes first in the file (see JsonSink).
_COUNT_WIDTH = 20


def _num(value: float, digits: int) -> float | None:
    value = float(value)
    return round(value, digits) if math.isfinite(value) else None


def _source_dict(source: SourceInfo, num_frames: int | None = None) -> dict[str, Any]:
    entry = {"path": source.path, "kind": source.kind, "width": int(source.width),
             "height": int(source.height), "fps": _num(source.fps, 6)}
    if source.photos:
        entry["photos"] = True
    entry["num_frames"] = int(source.num_frames if num_frames is None else num_frames)
    return entry


def _model_dict(model: ModelInfo) -> dict[str, Any]:
    return {"name": model.name, "sha256": model.sha256, "window": int(model.window),
            "steps": int(model.steps)}


def frame_to_dict(result: FrameResult, with_size: bool = False) -> dict[str, Any]:
    """One ``frames[]`` entry of posecli/1; ``with_size`` adds the frame's ``width`` and ``height``
    (for inputs whose images differ in size)."""
    frame, poses = result.frame, result.poses
    entry: dict[str, Any] = {"frame": int(frame.index), "time_s": _num(frame.time_s, 6)}
    if frame.file is not None:
        entry["file"] = frame.file
    if with_size:
        entry["width"], entry["height"] = int(frame.image.shape[1]), int(frame.image.shape[0])
    pose_scores = poses.scores
    entry["poses"] = [
        {"track_id": int(poses.track_ids[n]),
         "bbox": [_num(v, 2) for v in poses.boxes_xyxy[n]],
         "bbox_score": _num(poses.box_scores[n], 4),
         "score": _num(pose_scores[n], 4),
         "keypoints": [[_num(x, 2), _num(y, 2), _num(s, 4)]
                       for (x, y), s in zip(poses.keypoints_xy[n], poses.keypoint_scores[n])]}
        for n in range(len(poses))
    ]
    return entry


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


class Sink:
    """Base class: a temporary file that becomes ``path`` on :meth:`close`.

    Subclasses implement ``_begin`` (after the temporary file is open), ``_write`` and
    ``_finish`` (before it is closed and moved into place).
    """

    binary = True

    def __init__(self, path: str | os.PathLike, source_info: SourceInfo, model_info: ModelInfo) -> None:
        self.path = Path(path)
        self.source = source_info
        self.model = model_info
        self.frames_written = 0
        self._done = False
        name = f".{self.path.name}.{secrets.token_hex(4)}.part{self.path.suffix}"
        self._tmp = self.path.with_name(name)
        try:
            # O_EXCL: never clobber; mode 0o666 lets the umask decide, like any new file.
            fd = os.open(self._tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except OSError as e:
            raise PoseCliError(f"cannot write to {self.path.parent}: {e.strerror or e}") from e
        # The lock lives as long as this descriptor, also where the file is written by name.
        self._lock_fd = os.dup(fd)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # a file system without locks: remove_stale_parts cannot lock it either
            log.debug("cannot lock %s", self._tmp)
        self._file: Any = os.fdopen(fd, "wb") if self.binary else os.fdopen(
            fd, "w", encoding="utf-8", newline="")
        try:
            self._begin()
        except BaseException:
            self.abort()
            raise

    def write(self, result: FrameResult) -> None:
        """Add one frame (frames must come in order)."""
        if self._done:
            raise RuntimeError(f"{type(self).__name__} for {self.path} is already closed")
        try:
            self._write(result)
        except OSError as e:
            raise PoseCliError(f"cannot write {self.path}: {e.strerror or e}") from e
        self.frames_written += 1

    def close(self) -> None:
        """Finish the file and move it into place (idempotent)."""
        if self._done:
            return
        try:
            self._finish()
            if self._file is not None:
                self._file.flush()
                os.fsync(self._file.fileno())
                self._file.close()
            os.replace(self._tmp, self.path)
        except OSError as e:
            self.abort()
            raise PoseCliError(f"cannot write {self.path}: {e.strerror or e}") from e
        except BaseException:
            self.abort()
            raise
        self._done = True
        os.close(self._lock_fd)

    def abort(self) -> None:
        """Drop the partial output; ``path`` is left as it was (idempotent, never raises)."""
        if self._done:
            return
        self._done = True
        try:
            self._release()
            if self._file is not None:
                self._file.close()
        except Exception:  # noqa: BLE001 - abort runs while another error propagates
            log.debug("closing %s during abort failed", self._tmp, exc_info=True)
        self._tmp.unlink(missing_ok=True)
        os.close(self._lock_fd)

    def __enter__(self) -> "Sink":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r})"

    def _begin(self) -> None:
        pass

    def _write(self, result: FrameResult) -> None:
        raise NotImplementedError

    def _finish(self) -> None:
        pass

    def _release(self) -> None:
        """Free resources other than the temporary file object (abort path)."""


class _CountPatchMixin:
    """Writes ``"num_frames": <spaces>`` and patches the real count in at close.

    JSON allows whitespace before ``,`` / ``}``, so the padded number stays valid JSON, and
    the document keeps the key order of design.md (source before frames) while streaming.
    """

    _file: BinaryIO
    _count_at: int
    frames_written: int
    source: SourceInfo

    def _header(self) -> bytes:
        """``{"format": …, "source": {… ,"num_frames":`` — the count itself comes next."""
        source = _source_dict(self.source, 0)
        del source["num_frames"]
        head = {"format": SCHEMA, "source": source}
        text = _dumps(head)[:-2]  # drop the closing "}}" of source and of the document
        return text.encode() + b',"num_frames":'

    def _patch_count(self) -> None:
        end = self._file.tell()
        self._file.seek(self._count_at)
        self._file.write(str(self.frames_written).ljust(_COUNT_WIDTH).encode())
        self._file.seek(end)


class JsonSink(_CountPatchMixin, Sink):
    """posecli/1 JSON (design.md §4), streamed: header, then one frame per line, then ``]}``.

    ``source.num_frames`` is the number of frames written to this file (the container's own
    count, which can be wrong or include frames that were not processed, is not kept).
    """

    def _begin(self) -> None:
        self._file.write(self._header())
        self._count_at = self._file.tell()
        rest = {"model": _model_dict(self.model), "keypoints": list(COCO_KEYPOINTS),
                "skeleton": [list(p) for p in COCO_SKELETON]}
        self._file.write(b" " * _COUNT_WIDTH + b"},\n" + _dumps(rest)[1:-1].encode() + b',\n"frames":[')

    def _write(self, result: FrameResult) -> None:
        self._file.write((",\n" if self.frames_written else "\n").encode())
        self._file.write(_dumps(frame_to_dict(result, self.source.sizes_vary)).encode())

    def _finish(self) -> None:
        self._file.write(b"\n]}\n")
        self._patch_count()


class JsonlSink(_CountPatchMixin, Sink):
    """JSON Lines: line 1 is the posecli/1 header (everything but ``frames``), then one frame
    object per line. ``source.num_frames`` is patched in at close, as in :class:`JsonSink`."""

    def _begin(self) -> None:
        self._file.write(self._header())
        self._count_at = self._file.tell()
        rest = {"model": _model_dict(self.model), "keypoints": list(COCO_KEYPOINTS),
                "skeleton": [list(p) for p in COCO_SKELETON]}
        self._file.write(b" " * _COUNT_WIDTH + b"}," + _dumps(rest)[1:].encode() + b"\n")

    def _write(self, result: FrameResult) -> None:
        self._file.write(_dumps(frame_to_dict(result, self.source.sizes_vary)).encode() + b"\n")

    def _finish(self) -> None:
        self._patch_count()


class CsvSink(Sink):
    """Long ("tidy") CSV, one row per keypoint: ``frame,time_s,track_id,keypoint,x,y,score``.

    ``keypoint`` is the COCO name (``nose`` … ``right_ankle``). Boxes are not in this format.
    """

    binary = False

    def _begin(self) -> None:
        self._csv = csv.writer(self._file, lineterminator="\n")
        self._csv.writerow(CSV_COLUMNS)

    def _write(self, result: FrameResult) -> None:
        frame, poses = result.frame, result.poses
        time_s = _fmt(frame.time_s, 6)
        names = COCO_KEYPOINTS if poses.keypoints_xy.shape[1] == len(COCO_KEYPOINTS) else None
        for n in range(len(poses)):
            track_id = int(poses.track_ids[n])
            for j, ((x, y), s) in enumerate(zip(poses.keypoints_xy[n], poses.keypoint_scores[n])):
                self._csv.writerow((frame.index, time_s, track_id, names[j] if names else j,
                                    _fmt(x, 2), _fmt(y, 2), _fmt(s, 4)))


def _fmt(value: float, digits: int) -> str:
    value = float(value)
    return f"{value:.{digits}f}" if math.isfinite(value) else ""


class CocoSink(Sink):
    """COCO keypoint *results* list (what ``pycocotools.COCO.loadRes`` reads), streamed.

    One entry per pose: ``image_id`` (see :func:`coco_image_id`), ``category_id`` 1 (person),
    ``keypoints`` flat ``[x, y, score] × 17``, ``score`` (mean keypoint score), ``bbox``
    ``[x, y, w, h]``, and ``track_id`` (extra key, ignored by COCO tools).

    Args:
        image_ids: file name → COCO image id (from a dataset file, :func:`load_coco_image_ids`);
            poses of images it does not list are left out, with a warning.
    """

    def __init__(self, path: str | os.PathLike, source_info: SourceInfo, model_info: ModelInfo,
                 image_ids: dict[str, int] | None = None) -> None:
        self.image_ids = image_ids
        self.unlisted: list[str] = []
        super().__init__(path, source_info, model_info)

    def _begin(self) -> None:
        self._file.write(b"[")
        self._first = True

    def _write(self, result: FrameResult) -> None:
        poses = result.poses
        scores = poses.scores
        image_id = coco_image_id(result.frame, self.image_ids)
        if image_id is None:
            self.unlisted.append(result.frame.file or str(result.frame.index))
            return
        for n in range(len(poses)):
            flat: list[float] = []
            for (x, y), s in zip(poses.keypoints_xy[n], poses.keypoint_scores[n]):
                if math.isfinite(float(x)) and math.isfinite(float(y)):
                    flat += [_num(x, 2), _num(y, 2), _num(s, 4) or 0.0]
                else:
                    flat += [0.0, 0.0, 0.0]
            x1, y1, x2, y2 = (float(v) for v in poses.boxes_xyxy[n])
            entry = {"image_id": image_id, "category_id": 1, "keypoints": flat,
                     "score": _num(scores[n], 4) or 0.0,
                     "bbox": [_num(x1, 2), _num(y1, 2), _num(x2 - x1, 2), _num(y2 - y1, 2)],
                     "track_id": int(poses.track_ids[n])}
            self._file.write((b"\n" if self._first else b",\n") + _dumps(entry).encode())
            self._first = False

    def _finish(self) -> None:
        self._file.write(b"\n]\n")
        if self.unlisted:
            log.warning("%s: %d image(s) not in the COCO dataset file, left out (first: %s)",
                        self.path.name, len(self.unlisted), self.unlisted[0])


def coco_image_id(frame: Frame, image_ids: dict[str, int] | None = None) -> int | None:
    """The COCO ``image_id`` of a frame.

    An image's file name looked up in ``image_ids`` (None where it is not listed); without
    ``image_ids``, the number an image's name is (``000000350679.jpg`` → 350679, as in the COCO
    sets); else, and for video frames, the frame index + 1 (COCO ids start at 1).
    """
    if frame.file is not None:
        if image_ids is not None:
            return image_ids.get(frame.file)
        stem = Path(frame.file).stem
        if stem.isdigit():  # also rejects "", "-3", "1e5"
            return int(stem)
    return int(frame.index) + 1


def load_coco_image_ids(path: str | os.PathLike) -> dict[str, int]:
    """File name (without folders) → image id, from a COCO dataset file's ``images`` list.

    Raises:
        PoseCliError: unreadable, not JSON, or without an ``images`` list of ``file_name``/``id``.
    """
    try:
        with open(path, encoding="utf-8") as f:
            images = json.load(f).get("images")
        ids = {Path(image["file_name"]).name: int(image["id"]) for image in images}
    except OSError as e:
        raise PoseCliError(f"cannot read {path}: {e.strerror or e}") from e
    except (json.JSONDecodeError, AttributeError, TypeError, KeyError, ValueError) as e:
        raise PoseCliError(f"{path} is not a COCO dataset file (an 'images' list with 'file_name' and 'id' "
                           f"entries): {e}") from e
    return ids


class _TrackAccumulator(Sink):
    """Collects keypoints per track (no images) for the formats that need the whole video.

    Poses without a track id (-1) get one slot per position in their frame ("untracked 0",
    "untracked 1", …), the layout MMAction2's own extraction script uses for persons.
    """

    def _begin(self) -> None:
        # (0, track id) or (1, untracked slot) → rows of
        # (position among written frames, frame index, time_s, xy [K,2], scores [K], box [4], box score)
        self._tracks: dict[tuple[int, int], list[tuple]] = {}
        self._frame_index: list[int] = []
        self._frame_time: list[float] = []
        self._frame_file: list[str] = []

    def _write(self, result: FrameResult) -> None:
        frame, poses = result.frame, result.poses
        position = len(self._frame_index)
        self._frame_index.append(int(frame.index))
        self._frame_time.append(float(frame.time_s))
        self._frame_file.append(frame.file or "")
        untracked = 0
        for n in range(len(poses)):
            track_id = int(poses.track_ids[n])
            if track_id >= 0:
                key = (0, track_id)
            else:
                key, untracked = (1, untracked), untracked + 1
            self._tracks.setdefault(key, []).append(
                (position, int(frame.index), float(frame.time_s),
                 poses.keypoints_xy[n].astype(np.float32), poses.keypoint_scores[n].astype(np.float32),
                 poses.boxes_xyxy[n].astype(np.float32), float(poses.box_scores[n])))

    def _sorted_tracks(self) -> list[tuple[int, list[tuple]]]:
        """(track id or -1, rows) in id order, untracked slots last."""
        return [(key[1] if key[0] == 0 else -1, self._tracks[key]) for key in sorted(self._tracks)]


class MMActionSink(_TrackAccumulator):
    """MMAction2 skeleton annotation (PoseC3D / ST-GCN / ST-GCN++), one video, as a pickle.

    Fields follow MMAction2's documentation (open-mmlab/mmaction2,
    ``docs/en/user_guides/prepare_dataset.md``, section "Skeleton-based Action Recognition"; the
    same format as PYSKL's ``tools/data/README.md``); dtypes and the zero fill follow MMAction2's
    extraction script ``tools/data/skeleton/ntu_pose_extraction.py``, which slices
    ``keypoint`` / ``keypoint_score`` out of one zero-initialised float32 ``[M, T, V, 3]`` array:

    ``frame_dir`` (str, video id: the input file's stem), ``label`` (int, -1 = unknown unless
    given), ``img_shape`` and ``original_shape`` ((height, width)), ``total_frames`` (int, T,
    the frames written), ``keypoint`` (float32 ``[M, T, V, 2]``), ``keypoint_score`` (float32
    ``[M, T, V]``), with M the tracks in id order, V = 17 COCO joints, and zeros where a track is
    absent (MMAction2's convention). One extra key, ``track_ids`` (int64 ``[M]``, -1 for untracked
    slots), maps M back to posecli ids; MMAction2 ignores it. A training set is a pickle of
    ``{"split": {...}, "annotations": [these dicts]}``.
    """

    def __init__(self, path: str | os.PathLike, source_info: SourceInfo, model_info: ModelInfo,
                 label: int = -1) -> None:
        self.label = int(label)
        super().__init__(path, source_info, model_info)

    def annotation(self) -> dict[str, Any]:
        """The annotation dict for the frames written so far."""
        tracks = self._sorted_tracks()
        num_t = len(self._frame_index)
        num_k = tracks[0][1][0][3].shape[0] if tracks else len(COCO_KEYPOINTS)
        keypoint = np.zeros((len(tracks), num_t, num_k, 2), np.float32)
        score = np.zeros((len(tracks), num_t, num_k), np.float32)
        for m, (_, rows) in enumerate(tracks):
            for position, _, _, xy, s, _, _ in rows:
                keypoint[m, position] = np.nan_to_num(xy, nan=0.0)
                score[m, position] = np.where(np.isfinite(xy).all(-1), s, 0.0)
        shape = (int(self.source.height), int(self.source.width))
        return {"frame_dir": Path(self.source.path).stem, "label": self.label, "img_shape": shape,
                "original_shape": shape, "total_frames": num_t, "keypoint": keypoint,
                "keypoint_score": score,
                "track_ids": np.array([tid for tid, _ in tracks], np.int64)}

    def _finish(self) -> None:
        pickle.dump(self.annotation(), self._file, protocol=pickle.HIGHEST_PROTOCOL)


class NpzSink(_TrackAccumulator):
    """NumPy ``.npz`` (compressed), one group of arrays per track; loads with ``allow_pickle=False``.

    Per track ``<id>``: ``track_<id>_frames`` int64 [T] (frame indices), ``track_<id>_time_s``
    float64 [T], ``track_<id>_keypoints`` float32 [T, K, 2], ``track_<id>_scores`` float32
    [T, K], ``track_<id>_boxes`` float32 [T, 4] (xyxy), ``track_<id>_box_scores`` float32 [T].
    Poses without a track share the ``untracked_*`` arrays (one row per pose).
    Metadata: ``format``, ``track_ids`` int64 [M], ``keypoint_names`` [K], ``skeleton`` [E, 2],
    ``frame_index`` int64 [F] and ``frame_time_s`` float64 [F] (every frame written, with or
    without poses), ``frame_file`` [F] (image folders only), ``source_path``, ``source_kind``,
    ``source_width``, ``source_height``, ``source_fps``, ``source_num_frames`` (= F),
    ``model_name``, ``model_sha256``, ``model_window``, ``model_steps``.
    """

    def _finish(self) -> None:
        arrays: dict[str, np.ndarray] = {
            "format": np.array(SCHEMA),
            "keypoint_names": np.array(COCO_KEYPOINTS),
            "skeleton": np.array(COCO_SKELETON, np.int64),
            "frame_index": np.array(self._frame_index, np.int64),
            "frame_time_s": np.array(self._frame_time, np.float64),
            "source_path": np.array(self.source.path), "source_kind": np.array(self.source.kind),
            "source_width": np.array(self.source.width, np.int64),
            "source_height": np.array(self.source.height, np.int64),
            "source_fps": np.array(self.source.fps, np.float64),
            "source_num_frames": np.array(len(self._frame_index), np.int64),
            "model_name": np.array(self.model.name), "model_sha256": np.array(self.model.sha256),
            "model_window": np.array(self.model.window, np.int64),
            "model_steps": np.array(self.model.steps, np.int64),
        }
        if any(self._frame_file):
            arrays["frame_file"] = np.array(self._frame_file)
        track_ids = []
        untracked: list[tuple] = []
        for track_id, rows in self._sorted_tracks():
            if track_id < 0:
                untracked += rows
                continue
            track_ids.append(track_id)
            arrays.update(_track_arrays(f"track_{track_id}", rows))
        if untracked:
            untracked.sort(key=lambda row: row[0])
            arrays.update(_track_arrays("untracked", untracked))
        arrays["track_ids"] = np.array(track_ids, np.int64)
        np.savez_compressed(self._file, **arrays)


def _track_arrays(prefix: str, rows: list[tuple]) -> dict[str, np.ndarray]:
    _, index, time_s, xy, scores, boxes, box_scores = zip(*rows)
    return {f"{prefix}_frames": np.array(index, np.int64),
            f"{prefix}_time_s": np.array(time_s, np.float64),
            f"{prefix}_keypoints": np.stack(xy).astype(np.float32),
            f"{prefix}_scores": np.stack(scores).astype(np.float32),
            f"{prefix}_boxes": np.stack(boxes).astype(np.float32),
            f"{prefix}_box_scores": np.array(box_scores, np.float32)}


class OverlaySink(Sink):
    """MP4 of the input frames with the poses drawn (:func:`posecli.draw.draw_poses`).

    The frame rate is the source's nominal one (30 when unknown), so variable-frame-rate input
    plays at a constant rate. The video is H.264 (yuv420p, faststart), which browsers, Jupyter
    and VS Code play; without an H.264 encoder it is MPEG-4 Part 2 (``mp4v``), with a warning
    (:mod:`posecli.encode`). ``codec`` tells which. The video is the source's size (for images
    of different sizes the largest width and height): a smaller frame is centred on black at its
    own scale (letterboxed, never stretched), a larger one shrunk to fit first. Photos play at
    one per second.
    """

    def __init__(self, path: str | os.PathLike, source_info: SourceInfo, model_info: ModelInfo,
                 score_threshold: float = 0.3, prefer_h264: bool = True) -> None:
        self.score_threshold = score_threshold
        self.prefer_h264 = prefer_h264
        self._writer: VideoEncoder | None = None
        super().__init__(path, source_info, model_info)

    def _begin(self) -> None:
        # The encoder writes the file itself, by name; the temp file only reserved the name.
        self._file.close()
        self._file = None
        fps = self.source.fps if math.isfinite(self.source.fps) and self.source.fps > 0 else 30.0
        if self.source.photos:
            fps = 1.0
        self._size = (int(self.source.width), int(self.source.height))
        self._writer = VideoEncoder(self._tmp, fps, self._size, prefer_h264=self.prefer_h264)
        self.codec = self._writer.codec

    def _write(self, result: FrameResult) -> None:
        image = draw_poses(result.frame.image, result.poses, self.score_threshold)
        if (image.shape[1], image.shape[0]) != self._size:
            image = letterbox(image, self._size)
        self._writer.write(image)

    def _finish(self) -> None:
        self._writer.close()
        self._writer = None
        if not self._tmp.exists() or self._tmp.stat().st_size == 0:
            raise PoseCliError(f"cannot write {self.path}: the video encoder produced no data")

    def _release(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def letterbox(image: np.ndarray, size_wh: tuple[int, int]) -> np.ndarray:
    """``image`` (H×W×3) centred on a black ``size_wh`` canvas, shrunk (aspect kept) only if it does not fit."""
    width, height = size_wh
    scale = min(1.0, width / image.shape[1], height / image.shape[0])
    if scale < 1.0:
        fitted = (max(round(image.shape[1] * scale), 1), max(round(image.shape[0] * scale), 1))
        image = cv2.resize(image, fitted, interpolation=cv2.INTER_AREA)
    canvas = np.zeros((height, width, 3), np.uint8)
    top, left = (height - image.shape[0]) // 2, (width - image.shape[1]) // 2
    canvas[top:top + image.shape[0], left:left + image.shape[1]] = image
    return canvas


_SINKS: dict[str, type[Sink]] = {
    "json": JsonSink, "jsonl": JsonlSink, "csv": CsvSink, "coco": CocoSink,
    "mmaction": MMActionSink, "npz": NpzSink, "overlay": OverlaySink,
}


def output_paths(out_dir: str | os.PathLike, stem: str, formats: Iterable[str],
                 overlay: bool = False) -> dict[str, Path]:
    """The file each format writes: ``<out_dir>/<stem><suffix>`` (for ``--skip-existing``)."""
    names = list(dict.fromkeys(formats)) + (["overlay"] if overlay else [])
    unknown = [f for f in names if f not in SUFFIXES]
    if unknown:
        raise PoseCliError(f"unknown output format {unknown[0]!r}; choose from {', '.join(FORMATS)}")
    return {f: Path(out_dir) / f"{stem}{SUFFIXES[f]}" for f in names}


def ensure_writable_dir(out_dir: str | os.PathLike) -> Path:
    """Create ``out_dir`` if needed and check a file can be written in it.

    Raises:
        PoseCliError: the folder cannot be created or written.
    """
    folder = Path(out_dir)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise PoseCliError(f"cannot write to output directory {folder}: {e.strerror or e}") from e
    return folder


def _looks_stale(entry: os.DirEntry, now: float) -> bool:
    """A temporary file of :class:`Sink`'s naming, at least ``_PART_MIN_AGE_S`` old."""
    match = _PART_NAME.fullmatch(entry.name)
    if match is None or not match["name"].endswith(match["suffix"] or ""):
        return False
    try:
        return entry.is_file(follow_symlinks=False) and now - entry.stat().st_mtime >= _PART_MIN_AGE_S
    except OSError:  # removed meanwhile
        return False


def remove_stale_parts(out_dir: str | os.PathLike) -> list[Path]:
    """Delete the temporary files that killed runs left in ``out_dir``; returns those removed.

    Only hidden files named as :class:`Sink` names them, and only those no live sink holds
    locked (see the module notes): the ones of runs still writing there stay. Files younger than
    ``_PART_MIN_AGE_S`` stay too: a sink creates its file a moment before it locks it.
    """
    removed = []
    now = time.time()
    with os.scandir(out_dir) as entries:
        candidates = [entry for entry in entries if _looks_stale(entry, now)]
    for entry in candidates:
        try:
            fd = os.open(entry.path, os.O_RDONLY)
        except OSError:
            continue  # gone meanwhile, or not ours to read
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            continue  # a live sink is writing it
        else:
            Path(entry.path).unlink(missing_ok=True)
            removed.append(Path(entry.path))
        finally:
            os.close(fd)
    if removed:
        log.info("%s: removed %d temporary file(s) left by an interrupted run", out_dir, len(removed))
    return removed


def make_sinks(out_dir: str | os.PathLike, stem: str, formats: Iterable[str], overlay: bool,
               source_info: SourceInfo, model_info: ModelInfo, *,
               score_threshold: float = 0.3, coco_image_ids: dict[str, int] | None = None) -> list[Sink]:
    """Open one sink per requested format (and the overlay video), creating ``out_dir``.

    ``coco_image_ids``: file name → image id for the ``coco`` format (:class:`CocoSink`).

    Raises :class:`PoseCliError` before any frame is processed if a format is unknown or the
    directory cannot be created or written; sinks already opened are aborted then.
    """
    paths = output_paths(out_dir, stem, formats, overlay)
    ensure_writable_dir(out_dir)
    remove_stale_parts(out_dir)
    sinks: list[Sink] = []
    try:
        for fmt, path in paths.items():
            if fmt == "overlay":
                sinks.append(OverlaySink(path, source_info, model_info, score_threshold=score_threshold))
            elif fmt == "coco":
                sinks.append(CocoSink(path, source_info, model_info, image_ids=coco_image_ids))
            else:
                sinks.append(_SINKS[fmt](path, source_info, model_info))
    except BaseException:
        for sink in sinks:
            sink.abort()
        raise
    return sinks


# ----------------------------------------------------------------------------------- reading


def read_posecli_json(path: str | os.PathLike) -> dict[str, Any]:
    """Load and validate a posecli/1 ``.json`` file (raises :class:`PoseCliError`)."""
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except OSError as e:
        raise PoseCliError(f"cannot read {path}: {e.strerror or e}") from e
    except json.JSONDecodeError as e:
        raise PoseCliError(f"{path} is not valid JSON: {e}") from e
    validate_posecli(doc)
    return doc


def read_posecli_jsonl(path: str | os.PathLike) -> dict[str, Any]:
    """Load a posecli ``.jsonl`` file into the same dict as :func:`read_posecli_json`."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = [line for line in f if line.strip()]
        if not lines:
            raise PoseCliError(f"{path} is empty")
        doc = json.loads(lines[0])
        doc["frames"] = [json.loads(line) for line in lines[1:]]
    except OSError as e:
        raise PoseCliError(f"cannot read {path}: {e.strerror or e}") from e
    except json.JSONDecodeError as e:
        raise PoseCliError(f"{path} is not valid JSON Lines: {e}") from e
    validate_posecli(doc)
    return doc


def validate_posecli(doc: Any) -> None:
    """Check a parsed posecli/1 document; raises :class:`PoseCliError` naming the first problem.

    Hand-written rather than a JSON Schema: the checks that matter (every pose has as many
    keypoint rows as ``keypoints`` names, skeleton indices in range, ``num_frames`` equals the
    frame count) relate fields to each other, which JSON Schema cannot express, and it saves a
    dependency.
    """
    _require(isinstance(doc, dict), "", "must be an object")
    _require(doc.get("format") == SCHEMA, "format", f"must be {SCHEMA!r}")
    source = _field(doc, "source", dict, "")
    _field(source, "path", str, "source")
    _require(source.get("kind") in ("video", "images"), "source.kind", "must be 'video' or 'images'")
    for key in ("width", "height"):
        _require(_is_int(source.get(key)) and source[key] > 0, f"source.{key}", "must be a positive integer")
    _require(_is_num_or_null(source.get("fps")), "source.fps", "must be a number or null")
    _require(isinstance(source.get("photos", False), bool), "source.photos", "must be true or false")
    _require(_is_int(source.get("num_frames")) and source["num_frames"] >= 0, "source.num_frames",
             "must be a non-negative integer")
    model = _field(doc, "model", dict, "")
    _field(model, "name", str, "model")
    _field(model, "sha256", str, "model")
    for key in ("window", "steps"):
        _require(_is_int(model.get(key)), f"model.{key}", "must be an integer")
    names = _field(doc, "keypoints", list, "")
    _require(len(names) > 0 and all(isinstance(n, str) for n in names), "keypoints",
             "must be a list of names")
    k = len(names)
    skeleton = _field(doc, "skeleton", list, "")
    for i, pair in enumerate(skeleton):
        _require(isinstance(pair, list) and len(pair) == 2 and all(_is_int(v) and 0 <= v < k for v in pair),
                 f"skeleton[{i}]", f"must be a pair of keypoint indices below {k}")
    frames = _field(doc, "frames", list, "")
    _require(source["num_frames"] == len(frames), "source.num_frames",
             f"is {source['num_frames']} but there are {len(frames)} frames")
    for i, frame in enumerate(frames):
        where = f"frames[{i}]"
        _require(isinstance(frame, dict), where, "must be an object")
        _require(_is_int(frame.get("frame")) and frame["frame"] >= 0, f"{where}.frame",
                 "must be a non-negative integer")
        _require(_is_num_or_null(frame.get("time_s")), f"{where}.time_s", "must be a number")
        if "file" in frame:
            _field(frame, "file", str, where)
        for key in ("width", "height"):
            if key in frame:
                _require(_is_int(frame[key]) and frame[key] > 0, f"{where}.{key}", "must be a positive integer")
        for j, pose in enumerate(_field(frame, "poses", list, where)):
            at = f"{where}.poses[{j}]"
            _require(isinstance(pose, dict), at, "must be an object")
            _require(_is_int(pose.get("track_id")), f"{at}.track_id", "must be an integer")
            bbox = pose.get("bbox")
            _require(isinstance(bbox, list) and len(bbox) == 4 and all(_is_num_or_null(v) for v in bbox),
                     f"{at}.bbox", "must be 4 numbers")
            for key in ("bbox_score", "score"):
                _require(_is_num_or_null(pose.get(key)), f"{at}.{key}", "must be a number")
            kps = pose.get("keypoints")
            _require(isinstance(kps, list) and len(kps) == k, f"{at}.keypoints", f"must have {k} rows")
            for r, row in enumerate(kps):
                _require(isinstance(row, list) and len(row) == 3 and all(_is_num_or_null(v) for v in row),
                         f"{at}.keypoints[{r}]", "must be [x, y, score]")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_num_or_null(v: Any) -> bool:
    return v is None or _is_num(v)


def _require(ok: bool, where: str, message: str) -> None:
    if not ok:
        raise PoseCliError(f"not a {SCHEMA} document: {where or 'document'} {message}")


def _field(obj: dict, key: str, kind: type, where: str) -> Any:
    at = f"{where}.{key}" if where else key
    _require(isinstance(obj.get(key), kind), at, f"must be a {kind.__name__}")
    return obj[key]
