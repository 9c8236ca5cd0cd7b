"""Reader of the tracked pseudo-label clips (``<clip>.pseudo.json``, COCO-video style).

The format (``shared/data/README.md``): one ``videos`` entry (``file_name``, ``fps``, ``width``,
``height``, ``num_frames``; each may be missing), ``images`` that map an image id to a 0-based
``frame_index``, and
``annotations`` with ``image_id``, ``track_id``, ``bbox`` ``[x, y, w, h]``, ``keypoints`` as
``K × (x, y, confidence)`` and ``static_track`` (true for an object that never moves, such as a
skeleton model on a stand: evaluation and training leave those out).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import PoseCliError


@dataclass(frozen=True)
class PseudoPerson:
    """One labelled person in one frame.

    Attributes:
        frame: 0-based frame index.
        track_id: the labelling tracker's id (-1 if absent).
        box_xywh: float64 ``[4]``, x, y, width, height in frame pixels.
        keypoints: float64 ``[K, 3]``, x, y (frame pixels) and confidence in [0, 1].
        static: part of a ``static_track``.
    """

    frame: int
    track_id: int
    box_xywh: np.ndarray
    keypoints: np.ndarray
    static: bool

    @property
    def box_xyxy(self) -> np.ndarray:
        """float64 ``[4]``: x1, y1, x2, y2."""
        return np.concatenate([self.box_xywh[:2], self.box_xywh[:2] + self.box_xywh[2:]])


@dataclass(frozen=True)
class PseudoLabels:
    """A clip's pseudo-labels: the video's description and its labelled persons, in file order."""

    path: Path
    video_file: str | None
    fps: float  # 30 where the file does not say
    width: int | None
    height: int | None
    num_frames: int  # the video's frame count, or more if labels go beyond it
    persons: tuple[PseudoPerson, ...]

    def moving(self) -> list[PseudoPerson]:
        """The persons outside static tracks."""
        return [p for p in self.persons if not p.static]

    def by_frame(self, include_static: bool = False) -> dict[int, list[PseudoPerson]]:
        """frame index → its persons (static tracks only with ``include_static``), frames without any absent."""
        out: dict[int, list[PseudoPerson]] = {}
        for person in self.persons:
            if include_static or not person.static:
                out.setdefault(person.frame, []).append(person)
        return out


def read_pseudo_labels(path: str | Path) -> PseudoLabels:
    """Read and check a ``.pseudo.json`` file.

    Raises:
        PoseCliError: the file is missing, not JSON, or not in the pseudo-label layout.
    """
    p = Path(path)
    if not p.is_file():
        raise PoseCliError(f"pseudo-label file not found: {p}")
    try:
        data = json.loads(p.read_text())
        video = (data.get("videos") or [{}])[0]
        frame_of_image = {int(image["id"]): int(image["frame_index"]) for image in data["images"]}
        persons = tuple(
            PseudoPerson(frame=frame_of_image[int(ann["image_id"])], track_id=int(ann.get("track_id", -1)),
                         box_xywh=np.asarray(ann["bbox"], np.float64).reshape(4),
                         keypoints=np.asarray(ann["keypoints"], np.float64).reshape(-1, 3),
                         static=bool(ann.get("static_track", False)))
            for ann in data["annotations"])
        last_frame = max((person.frame for person in persons), default=-1)
        width, height = video.get("width"), video.get("height")
        return PseudoLabels(p, video.get("file_name"), float(video.get("fps", 30.0)),
                            None if width is None else int(width), None if height is None else int(height),
                            max(int(video.get("num_frames", 0)), last_frame + 1), persons)
    except (UnicodeDecodeError, json.JSONDecodeError, AttributeError, KeyError, TypeError, IndexError,
            ValueError) as exc:
        raise PoseCliError(f"{p}: not a video pseudo-label file ({exc})") from None
