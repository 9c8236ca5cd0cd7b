"""Person boxes for frames the detector skips (``--detect-every k``), from the tracked poses.

With ``detect_every = k`` the detector runs on every k-th frame only; the frames in between get
one box per person seen in the latest frame whose poses are known, moved by that person's
motion: the box the pose was estimated in, shifted by the mean displacement per frame of the
joints confident in that person's two latest poses, times the number of frames to bridge. The
pose model re-centres every propagated box on the person (the next frame's box follows the
*estimated* joints), so the boxes follow the person between two detector runs; a newcomer waits
for the next detector frame, and a person who leaves the frame is dropped once their box is
mostly outside it or their pose has become unsure.

Each (track) must be observed through :meth:`BoxPropagator.update` in frame order, with the
tracker's ids; frames are counted by their position in the stream.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from posecli.types import Detections, Poses


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
                    _centre(poses.boxes_xyxy[i]) - _centre(before.box))[None]
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
            One box per person of the latest updated frame, in frame pixels, with the box score of
            the person's latest box (carried over from its detection).
        """
        steps = position - self._latest
        rows, scores = [], []
        height, width = image_hw
        for seen in self._seen.values():
            if seen.scores.mean() < self.min_pose_score:
                continue
            box = seen.box + np.tile(seen.velocity * steps, 2)
            if _inside_fraction(box, width, height) < self.min_inside:
                continue
            rows.append(np.clip(box, [0, 0, 0, 0], [width - 1, height - 1, width - 1, height - 1]))
            scores.append(seen.box_score)
        if not rows:
            return Detections.empty()
        order = np.argsort(-np.asarray(scores), kind="stable")
        return Detections(np.asarray(rows, np.float32)[order], np.asarray(scores, np.float32)[order])


def _centre(box: np.ndarray) -> np.ndarray:
    box = np.asarray(box, np.float64)
    return 0.5 * (box[:2] + box[2:])


def _inside_fraction(box: np.ndarray, width: int, height: int) -> float:
    area = max(box[2] - box[0], 0.0) * max(box[3] - box[1], 0.0)
    if area <= 0:
        return 0.0
    w = max(min(box[2], width - 1) - max(box[0], 0.0), 0.0)
    h = max(min(box[3], height - 1) - max(box[1], 0.0), 0.0)
    return w * h / area
