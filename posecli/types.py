"""Data passed between pipeline stages.

Shape letters, used everywhere in the package:
    N  persons in a frame          K  keypoints (17, COCO order)
    T  frames in a temporal window H×W  image or heatmap height × width

Conventions, stated once:
    * Images are ``H×W×3 uint8`` in **BGR** channel order (OpenCV's native order).
    * Coordinates are pixels of the original frame, x right, y down; the **centre of the
      top-left pixel is (0.0, 0.0)** (the COCO keypoint convention), so the image spans
      [-0.5, W-0.5] × [-0.5, H-0.5].
    * Boxes are ``x1, y1, x2, y2`` (``boxes_xyxy``) in the same coordinates.
    * ``track_ids`` of ``-1`` mean "not assigned yet".
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

COCO_KEYPOINTS: tuple[str, ...] = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow",
    "left_wrist", "right_wrist", "left_hip", "right_hip",
    "left_knee", "right_knee", "left_ankle", "right_ankle",
)
NUM_KEYPOINTS = len(COCO_KEYPOINTS)
# 0-based joint pairs (COCO `categories[0].skeleton` minus one).
COCO_SKELETON: tuple[tuple[int, int], ...] = (
    (15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6), (5, 7),
    (6, 8), (7, 9), (8, 10), (1, 2), (0, 1), (0, 2), (1, 3), (2, 4), (3, 5), (4, 6),
)
# Index of each joint's mirror image, for horizontal flips.
COCO_FLIP_INDEX: tuple[int, ...] = (0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15)
# Per-joint OKS falloff constants from the COCO keypoint evaluation.
COCO_SIGMAS = np.array(
    [.26, .25, .25, .35, .35, .79, .79, .72, .72, .62, .62, 1.07, 1.07, .87, .87, .89, .89],
    dtype=np.float64,
) / 10.0


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


@dataclass(frozen=True)
class SourceInfo:
    """What is known about an input before its frames are read."""

    path: str
    kind: str  # "video" or "images"
    width: int
    height: int
    fps: float
    num_frames: int  # as reported by the container; the frames actually read may be fewer
    # Images of different sizes: width × height is then the largest width and the largest height,
    # and each frame has its own size.
    sizes_vary: bool = False
    # Unrelated photos (kind "images"): each frame is taken on its own, with no temporal window,
    # tracking or smoothing across frames.
    photos: bool = False

    def __post_init__(self) -> None:
        _check(self.kind in ("video", "images"), f"kind must be 'video' or 'images', not {self.kind!r}")
        _check(self.width > 0 and self.height > 0, "frame size must be positive")
        _check(not self.photos or self.kind == "images", "only image inputs can be photos")


@dataclass(frozen=True)
class Frame:
    """One decoded frame: ``image`` is H×W×3 uint8 BGR."""

    index: int
    time_s: float
    image: np.ndarray
    file: str | None = None  # the image's file name, for image-folder inputs

    def __post_init__(self) -> None:
        _check(
            self.image.ndim == 3 and self.image.shape[2] == 3 and self.image.dtype == np.uint8,
            f"Frame.image must be H×W×3 uint8, got {self.image.shape} {self.image.dtype}",
        )

    @property
    def height(self) -> int:
        return int(self.image.shape[0])

    @property
    def width(self) -> int:
        return int(self.image.shape[1])


@dataclass(frozen=True)
class Detections:
    """Person boxes of one frame: ``boxes_xyxy`` N×4 float32, ``scores`` N float32."""

    boxes_xyxy: np.ndarray
    scores: np.ndarray

    def __post_init__(self) -> None:
        _check(self.boxes_xyxy.ndim == 2 and self.boxes_xyxy.shape[1] == 4, "boxes_xyxy must be N×4")
        _check(self.scores.shape == (len(self.boxes_xyxy),), "scores must have one value per box")

    @staticmethod
    def empty() -> "Detections":
        return Detections(np.zeros((0, 4), np.float32), np.zeros((0,), np.float32))

    def __len__(self) -> int:
        return len(self.boxes_xyxy)


@dataclass(frozen=True)
class Poses:
    """Poses of one frame.

    Attributes:
        boxes_xyxy: N×4 float32 person boxes.
        box_scores: N float32 detector scores.
        keypoints_xy: N×K×2 float32 keypoint positions in frame pixels.
        keypoint_scores: N×K float32 per-joint confidences in [0, 1].
        track_ids: N int64, -1 where not assigned.
    """

    boxes_xyxy: np.ndarray
    box_scores: np.ndarray
    keypoints_xy: np.ndarray
    keypoint_scores: np.ndarray
    track_ids: np.ndarray = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        n = len(self.boxes_xyxy)
        if self.track_ids is None:
            object.__setattr__(self, "track_ids", np.full((n,), -1, np.int64))
        _check(self.boxes_xyxy.shape == (n, 4), "boxes_xyxy must be N×4")
        _check(self.box_scores.shape == (n,), "box_scores must be N")
        _check(
            self.keypoints_xy.ndim == 3 and self.keypoints_xy.shape[0] == n and self.keypoints_xy.shape[2] == 2,
            "keypoints_xy must be N×K×2",
        )
        _check(self.keypoint_scores.shape == self.keypoints_xy.shape[:2], "keypoint_scores must be N×K")
        _check(self.track_ids.shape == (n,), "track_ids must be N")

    @staticmethod
    def empty(num_keypoints: int = NUM_KEYPOINTS) -> "Poses":
        return Poses(
            np.zeros((0, 4), np.float32), np.zeros((0,), np.float32),
            np.zeros((0, num_keypoints, 2), np.float32), np.zeros((0, num_keypoints), np.float32),
        )

    def __len__(self) -> int:
        return len(self.boxes_xyxy)

    @property
    def scores(self) -> np.ndarray:
        """N pose scores: mean keypoint score (0 for an empty pose list)."""
        if len(self) == 0:
            return np.zeros((0,), np.float32)
        return self.keypoint_scores.mean(axis=1).astype(np.float32)

    def with_track_ids(self, track_ids: np.ndarray) -> "Poses":
        return Poses(self.boxes_xyxy, self.box_scores, self.keypoints_xy, self.keypoint_scores,
                     np.asarray(track_ids, np.int64))

    def select(self, index: np.ndarray) -> "Poses":
        return Poses(self.boxes_xyxy[index], self.box_scores[index], self.keypoints_xy[index],
                     self.keypoint_scores[index], self.track_ids[index])


@dataclass(frozen=True)
class FrameResult:
    """What the sinks receive for one frame: the frame (for overlays) and its tracked poses."""

    frame: Frame
    poses: Poses


@dataclass(frozen=True)
class ModelInfo:
    """The pose model as recorded in outputs."""

    name: str
    sha256: str
    window: int
    steps: int
