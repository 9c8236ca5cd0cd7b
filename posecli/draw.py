"""Skeleton drawing for overlay videos and previews."""

from __future__ import annotations

import cv2
import numpy as np

from .types import COCO_KEYPOINTS, COCO_SKELETON, Poses

# Distinct BGR colours (Tableau 10 + extras); track id n always gets PALETTE[(n - 1) % len].
PALETTE: tuple[tuple[int, int, int], ...] = (
    (180, 119, 31), (14, 127, 255), (44, 160, 44), (40, 39, 214), (189, 103, 148),
    (75, 86, 140), (194, 119, 227), (34, 189, 188), (207, 190, 23), (232, 199, 174),
    (120, 187, 255), (138, 223, 152), (150, 152, 255), (213, 176, 197), (148, 156, 196),
)
UNTRACKED_COLOUR = (200, 200, 200)
_SHIFT = 4  # cv2 fixed-point bits: sub-pixel positions are drawn where they are
_ONE = 1 << _SHIFT


def track_colour(track_id: int) -> tuple[int, int, int]:
    """The BGR colour of a track id (grey for -1, "not tracked")."""
    return UNTRACKED_COLOUR if track_id < 0 else PALETTE[(track_id - 1) % len(PALETTE)]


def side_colours(colour: tuple[int, int, int]) -> dict[str, tuple[int, int, int]]:
    """A track colour's variants by body side: left lighter, right darker, centre as it is.

    So a left/right swap shows in the overlay (left and right are the person's own).
    """
    c = np.asarray(colour, np.float64)
    return {"left": tuple(int(v) for v in np.round(c + 0.55 * (255.0 - c))),
            "centre": tuple(int(v) for v in c),
            "right": tuple(int(v) for v in np.round(0.45 * c))}


def _joint_side(joint: int, num_joints: int) -> str:
    if num_joints != len(COCO_KEYPOINTS):
        return "centre"
    name = COCO_KEYPOINTS[joint]
    return "left" if name.startswith("left_") else "right" if name.startswith("right_") else "centre"


def _limb_side(a: int, b: int, num_joints: int) -> str:
    """"left" / "right" for a limb on one side (or joining that side to the nose), else "centre"."""
    sides = {_joint_side(a, num_joints), _joint_side(b, num_joints)} - {"centre"}
    return sides.pop() if len(sides) == 1 else "centre"


def _fixed(xy: np.ndarray) -> tuple[int, int]:
    return int(round(float(xy[0]) * _ONE)), int(round(float(xy[1]) * _ONE))


def draw_poses(image_bgr: np.ndarray, poses: Poses, score_threshold: float = 0.3) -> np.ndarray:
    """Draw boxes, skeletons and "id N" labels; left limbs lighter, right limbs darker.

    Args:
        image_bgr: ``H×W×3`` uint8, not modified.
        poses: the frame's poses, in the image's pixel coordinates.
        score_threshold: joints scored below this (and limbs touching them) are not drawn.

    Returns:
        A new ``H×W×3`` uint8 image.
    """
    out = np.ascontiguousarray(image_bgr).copy()
    scale = max(out.shape[0], out.shape[1]) / 720.0  # line widths relative to a 720p frame
    thick = max(1, int(round(2 * scale)))
    radius = max(2, int(round(3 * scale)))
    font_scale = 0.5 * max(scale, 0.6)
    for n in range(len(poses)):
        track_id = int(poses.track_ids[n])
        colour = track_colour(track_id)
        by_side = side_colours(colour)
        xy, scores = poses.keypoints_xy[n], poses.keypoint_scores[n]
        shown = (scores >= score_threshold) & np.isfinite(xy).all(axis=-1)
        for a, b in COCO_SKELETON:
            if a < len(xy) and b < len(xy) and shown[a] and shown[b]:
                cv2.line(out, _fixed(xy[a]), _fixed(xy[b]), by_side[_limb_side(a, b, len(xy))], thick,
                         cv2.LINE_AA, _SHIFT)
        for j in np.flatnonzero(shown):
            cv2.circle(out, _fixed(xy[j]), radius * _ONE, by_side[_joint_side(j, len(xy))], -1,
                       cv2.LINE_AA, _SHIFT)
        box = poses.boxes_xyxy[n]
        if not np.isfinite(box).all():
            continue
        cv2.rectangle(out, _fixed(box[:2]), _fixed(box[2:]), colour, thick, cv2.LINE_AA, _SHIFT)
        label = f"id {track_id}" if track_id >= 0 else "id ?"
        (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, font_scale, thick)
        x = int(np.clip(round(float(box[0])), 0, max(out.shape[1] - tw, 0)))
        y = int(np.clip(round(float(box[1])), th + base, out.shape[0] - 1))  # keep it in the frame
        cv2.rectangle(out, (x, y - th - base), (x + tw, y), colour, -1)
        cv2.putText(out, label, (x, y - base), cv2.FONT_HERSHEY_SIMPLEX, font_scale, (255, 255, 255),
                    thick, cv2.LINE_AA)
    return out
