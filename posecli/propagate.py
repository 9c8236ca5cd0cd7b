"""Person boxes for frames the detector skips (``--detect-every k``), from the tracked poses.

With ``detect_every = k`` the detector runs on every k-th frame only. A frame in between gets one
box per person, from the freshest of two sources:

* the latest detector frame, if its poses are not known yet (the pose of a key frame is known δ
  frames after it, δ = window // 2): its boxes, each moved by the motion of the track it
  continues (the track whose latest box overlaps it most);
* otherwise the latest frame whose poses are known: the box each tracked person's pose was
  estimated in, moved by that person's motion.

A person's motion is the mean displacement per frame of the joints confident in its two latest
poses. The pose model re-centres on the person in every propagated box and the next box follows
the estimated joints, so boxes follow people between detector runs; a newcomer waits for the next
detector frame; a person who leaves the frame is dropped once their box is mostly outside it or
their pose has become unsure.

Poses must be given through :meth:`BoxPropagator.update` in frame order, with the tracker's ids,
and detector frames through :meth:`BoxPropagator.detected`; frames are counted by their position
in the stream.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from posecli.track import box_centre, box_iou
from posecli.types import Detections, Poses

# A detection continues a track whose latest box (moved to the detection's frame) overlaps it this much.
MATCH_IOU = 0.3


@dataclass
class _Seen:
    """The latest observation of one track (and the one before, for its motion)."""

    position: int
    box: np.ndarray  # [4] float64
    box_score: float
    keypoints: np.ndarray  # [K, 2] float64
    scores: np.ndarray  # [K] float64
    velocity: np.ndarray  # [2] px per frame of the confident joints' mean


class BoxPropagator:
    """Predicts the person boxes of a frame from the tracked poses of earlier frames.

    Args:
        keypoint_threshold: joints at or above this score count for the motion estimate.
        min_pose_score: a track whose latest pose has a mean keypoint score below this is not
            propagated (the box has probably lost its person).
        min_inside: least fraction of a propagated box's area inside the frame.
    """

    def __init__(self, keypoint_threshold: float = 0.3, min_pose_score: float = 0.2,
                 min_inside: float = 0.5) -> None:
        self.keypoint_threshold = keypoint_threshold
        self.min_pose_score = min_pose_score
        self.min_inside = min_inside
        self._seen: dict[int, _Seen] = {}
        self._latest = -1  # stream position of the latest update
        self._detected: tuple[int, Detections] | None = None  # the latest detector frame

    def detected(self, position: int, detections: Detections) -> None:
        """Record the detector's boxes of the frame at stream ``position``."""
        self._detected = (position, detections)

    @property
    def latest_detection(self) -> int:
        """Stream position of the latest detector frame (-1 before the first)."""
        return -1 if self._detected is None else self._detected[0]

    def update(self, position: int, poses: Poses) -> None:
        """Record the tracked poses of the frame at stream ``position`` (increasing)."""
        if position <= self._latest:
            raise ValueError(f"updates must come in frame order: {position} after {self._latest}")
        self._latest = position
        seen: dict[int, _Seen] = {}
        for i, track_id in enumerate(poses.track_ids):
            track_id = int(track_id)
            if track_id < 0:
                continue
            xy = poses.keypoints_xy[i].astype(np.float64)
            scores = poses.keypoint_scores[i].astype(np.float64)
            velocity = np.zeros(2)
            before = self._seen.get(track_id)
            if before is not None:
                sure = (scores >= self.keypoint_threshold) & (before.scores >= self.keypoint_threshold)
                motion = (xy[sure] - before.keypoints[sure]) if sure.any() else (
                    box_centre(poses.boxes_xyxy[i]) - box_centre(before.box))[None]
                velocity = motion.mean(axis=0) / (position - before.position)
            seen[track_id] = _Seen(position, poses.boxes_xyxy[i].astype(np.float64),
                                   float(poses.box_scores[i]), xy, scores, velocity)
        # Tracks missing from this frame are forgotten: only the latest frame's persons propagate.
        self._seen = seen

    def boxes(self, position: int, image_hw: tuple[int, int]) -> Detections:
        """Boxes for the frame at stream ``position`` (after the latest update), best score first.

        Args:
            position: the frame's stream position.
            image_hw: the frame's (height, width), to drop boxes that left it.

        Returns:
            One box per person, in frame pixels, with the box score of the person's latest
            detection.
        """
        if self._detected is not None and self._detected[0] > self._latest:
            boxes, scores = self._from_detections(position)
        else:
            boxes, scores = self._from_poses(position)
        height, width = image_hw
        rows, kept = [], []
        for box, score in zip(boxes, scores):
            if _inside_fraction(box, width, height) >= self.min_inside:
                rows.append(np.clip(box, 0, [width - 1, height - 1, width - 1, height - 1]))
                kept.append(score)
        if not rows:
            return Detections.empty()
        order = np.argsort(-np.asarray(kept), kind="stable")
        return Detections(np.asarray(rows, np.float32)[order], np.asarray(kept, np.float32)[order])

    def _from_poses(self, position: int) -> tuple[list[np.ndarray], list[float]]:
        steps = position - self._latest
        sure = [s for s in self._seen.values() if s.scores.mean() >= self.min_pose_score]
        return [s.box + np.tile(s.velocity * steps, 2) for s in sure], [s.box_score for s in sure]

    def _from_detections(self, position: int) -> tuple[list[np.ndarray], list[float]]:
        detected_at, detections = self._detected
        tracks = list(self._seen.values())
        boxes = []
        if tracks and len(detections):
            previous = np.stack([s.box + np.tile(s.velocity * (detected_at - s.position), 2) for s in tracks])
            iou = box_iou(detections.boxes_xyxy, previous)
        for i, box in enumerate(detections.boxes_xyxy.astype(np.float64)):
            velocity = np.zeros(2)
            if tracks and len(detections) and iou[i].max() >= MATCH_IOU:
                velocity = tracks[int(np.argmax(iou[i]))].velocity
            boxes.append(box + np.tile(velocity * (position - detected_at), 2))
        return boxes, [float(s) for s in detections.scores]


def _inside_fraction(box: np.ndarray, width: int, height: int) -> float:
    area = max(box[2] - box[0], 0.0) * max(box[3] - box[1], 0.0)
    if area <= 0:
        return 0.0
    w = max(min(box[2], width - 1) - max(box[0], 0.0), 0.0)
    h = max(min(box[3], height - 1) - max(box[1], 0.0), 0.0)
    return w * h / area
