"""Training augmentation: crop affines, flips, half-body boxes, colour jitter, synthetic motion.

All geometry is a 3×3 matrix in homogeneous pixel coordinates (pixel centres at integers, as in
``posecli.crop``). The key frame's crop is ``A_aug @ crop_transform(box)``, where ``A_aug``
scales/rotates about the crop centre and optionally mirrors. Still images become windows of T
frames by composing a small per-frame motion ``J_j`` on top (``J_centre = I``), so the frame-j
crop is ``J_j @ A_aug @ crop_transform(box)`` and a frame point ``p`` shows up at ``J_j A p`` in
crop j. Real clips use the key frame's matrix for every frame, as in DiffPose (Feng et al.,
ICCV 2023), so the person's real motion stays visible in the window.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from posecli.crop import BOX_ENLARGE, apply_affine, crop_to_crop, crop_transform, warp_crop
from posecli.types import COCO_FLIP_INDEX

UPPER_BODY = (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10)
LOWER_BODY = (11, 12, 13, 14, 15, 16)


@dataclass(frozen=True)
class AugmentConfig:
    """Random augmentation ranges (all off with :meth:`none`).

    Attributes:
        scale: crop scale factor drawn from [1 - scale, 1 + scale] (>1 zooms in).
        rotate_deg: rotation drawn from [-rotate_deg, rotate_deg], applied with rotate_prob.
        flip_prob: probability of a horizontal flip (with left/right joint swap).
        half_body_prob: probability of cropping the upper or lower body only.
        color: strength of brightness/contrast/saturation jitter (factors in [1-c, 1+c]).
        motion_shift: synthetic motion, per-frame translation as a fraction of the crop size.
        motion_scale: synthetic motion, per-frame relative scale change.
        motion_rotate_deg: synthetic motion, per-frame rotation in degrees.
        still_motion_prob: probability that a still image gets synthetic motion; otherwise its
            window is the image repeated (one backbone pass instead of T when training models
            that encode only distinct frames, as DiffPose on MoveNet does).
    """

    scale: float = 0.25
    rotate_deg: float = 30.0
    rotate_prob: float = 0.5
    flip_prob: float = 0.5
    half_body_prob: float = 0.2
    color: float = 0.3
    motion_shift: float = 0.03
    motion_scale: float = 0.03
    motion_rotate_deg: float = 3.0
    still_motion_prob: float = 1.0

    @staticmethod
    def none() -> "AugmentConfig":
        return AugmentConfig(scale=0.0, rotate_deg=0.0, rotate_prob=0.0, flip_prob=0.0,
                             half_body_prob=0.0, color=0.0, motion_shift=0.0, motion_scale=0.0,
                             motion_rotate_deg=0.0)


def to3x3(matrix: np.ndarray) -> np.ndarray:
    """2×3 affine → 3×3 homogeneous matrix."""
    return np.vstack([np.asarray(matrix, np.float64), [0.0, 0.0, 1.0]])


def about_centre(scale: float, rotate_deg: float, shift_xy: tuple[float, float],
                 input_hw: tuple[int, int]) -> np.ndarray:
    """3×3 map of crop pixels: scale and rotate about the crop centre, then shift.

    ``p' = c + scale · R(rotate_deg) · (p - c) + shift`` with ``c = ((W-1)/2, (H-1)/2)``; a
    positive angle turns the image content counter-clockwise on screen (y points down).
    """
    cx, cy = (input_hw[1] - 1) / 2.0, (input_hw[0] - 1) / 2.0
    a = np.deg2rad(rotate_deg)
    cos, sin = scale * np.cos(a), scale * np.sin(a)
    lin = np.array([[cos, sin], [-sin, cos]])
    t = np.array([cx, cy]) - lin @ np.array([cx, cy]) + np.asarray(shift_xy, np.float64)
    return np.array([[lin[0, 0], lin[0, 1], t[0]], [lin[1, 0], lin[1, 1], t[1]], [0, 0, 1.0]])


def flip_matrix(input_hw: tuple[int, int]) -> np.ndarray:
    """3×3 horizontal mirror of the crop: ``x' = (W - 1) - x``."""
    return np.array([[-1.0, 0.0, input_hw[1] - 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])


def flip_joints(keypoints: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Swap left/right joint slots after a mirror (``types.COCO_FLIP_INDEX``)."""
    index = np.asarray(COCO_FLIP_INDEX)
    return keypoints[index], weights[index]


def half_body_box(keypoints: np.ndarray, weights: np.ndarray, rng: np.random.Generator,
                  min_joints: int = 3) -> np.ndarray | None:
    """Box around the labelled upper- or lower-body joints (×1.5 as in HRNet), or None.

    Args:
        keypoints: [K, 2] frame coordinates.
        weights: [K] loss weights (>0 = labelled).
    """
    upper = [j for j in UPPER_BODY if weights[j] > 0]
    lower = [j for j in LOWER_BODY if weights[j] > 0]
    choice = upper if rng.random() < 0.5 else lower
    if len(choice) < min_joints:
        choice = lower if choice is upper else upper
    if len(choice) < min_joints:
        return None
    pts = keypoints[choice]
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    centre, size = (lo + hi) / 2.0, np.maximum(hi - lo, 8.0) * 1.5
    return np.concatenate([centre - size / 2.0, centre + size / 2.0])


def motion_matrices(window: int, rng: np.random.Generator, cfg: AugmentConfig,
                    input_hw: tuple[int, int]) -> np.ndarray:
    """Per-frame synthetic motion [T, 3, 3] for a still image; the centre frame gets identity.

    A constant velocity (shift, scale, rotation per frame step) plus a little per-frame noise,
    so the window looks like a person drifting smoothly through the frame rather than shaking.
    """
    centre = window // 2
    h, w = input_hw
    v_shift = rng.uniform(-1, 1, 2) * cfg.motion_shift * np.array([w, h])
    v_scale = rng.uniform(-1, 1) * cfg.motion_scale
    v_rot = rng.uniform(-1, 1) * cfg.motion_rotate_deg
    out = np.empty((window, 3, 3))
    for j in range(window):
        k = j - centre
        if k == 0:
            out[j] = np.eye(3)
            continue
        noise = rng.uniform(-0.25, 0.25, 4)
        shift = v_shift * (k + noise[:2])
        scale = 1.0 + v_scale * k + cfg.motion_scale * 0.25 * noise[2]
        rot = v_rot * k + cfg.motion_rotate_deg * 0.25 * noise[3]
        out[j] = about_centre(max(scale, 0.5), rot, shift, input_hw)
    return out


def color_jitter(crops: np.ndarray, rng: np.random.Generator, strength: float) -> np.ndarray:
    """Same brightness/contrast/saturation change for all frames of a window.

    Args:
        crops: [T, H, W, 3] uint8 BGR.
    """
    if strength <= 0:
        return crops
    b, c, s = rng.uniform(1 - strength, 1 + strength, 3)
    x = crops.astype(np.float32)
    gray = x @ np.array([0.114, 0.587, 0.299], np.float32)  # BGR luma
    x = gray[..., None] + (x - gray[..., None]) * s
    x = (x - gray.mean()) * c + gray.mean()
    x = x * b
    return np.clip(x + 0.5, 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class Example:
    """One training window before tensor conversion.

    Attributes:
        crops: [T, H, W, 3] uint8 BGR crops, key frame at index T // 2.
        keypoints: [K, 2] key-frame joints in input pixels (after flip and joint swap).
        weights: [K] loss weights (before the out-of-crop check of the targets).
        matrices: [T, 2, 3] frame → crop affine of each window frame (for checks).
        flipped: whether the window was mirrored.
    """

    crops: np.ndarray
    keypoints: np.ndarray
    weights: np.ndarray
    matrices: np.ndarray
    flipped: bool

    def to_key(self) -> np.ndarray:
        """[T, 2, 3] affine from each frame's crop pixels to the key frame's crop pixels."""
        key = self.matrices[len(self.matrices) // 2]
        return np.stack([crop_to_crop(m, key) for m in self.matrices]).astype(np.float32)


def make_example(frames: list[np.ndarray], box_xyxy: np.ndarray, keypoints: np.ndarray,
                 weights: np.ndarray, window: int, input_hw: tuple[int, int],
                 cfg: AugmentConfig, rng: np.random.Generator, enlarge: float = BOX_ENLARGE) -> Example:
    """Crop and augment one person into a T-frame window.

    Args:
        frames: either one still image (synthetic motion is added) or ``window`` consecutive
            frames of a clip with the key frame at the centre; H×W×3 uint8 BGR each.
        box_xyxy: [4] key-frame person box.
        keypoints: [K, 2] key-frame joints in frame pixels.
        weights: [K] loss weights (0 = unlabelled).
        window: T.
        input_hw: model input (H, W).
        enlarge: crop region as a multiple of the box (``crop.crop_transform``).
    """
    box = np.asarray(box_xyxy, np.float64)
    if cfg.half_body_prob > 0 and rng.random() < cfg.half_body_prob:
        half = half_body_box(keypoints, weights, rng)
        if half is not None:
            box = half
    scale = 1.0 + rng.uniform(-cfg.scale, cfg.scale) if cfg.scale > 0 else 1.0
    rot = rng.uniform(-cfg.rotate_deg, cfg.rotate_deg) if rng.random() < cfg.rotate_prob else 0.0
    key = about_centre(scale, rot, (0.0, 0.0), input_hw) @ to3x3(crop_transform(box, input_hw, enlarge))
    flipped = bool(rng.random() < cfg.flip_prob)
    if flipped:
        key = flip_matrix(input_hw) @ key
        keypoints, weights = flip_joints(keypoints, weights)

    if len(frames) == 1:
        moving = cfg.still_motion_prob >= 1.0 or rng.random() < cfg.still_motion_prob
        mats = (motion_matrices(window, rng, cfg, input_hw) if moving else np.repeat(np.eye(3)[None], window, 0)) @ key
        sources = frames * window
    elif len(frames) == window:
        mats = np.repeat(key[None], window, axis=0)
        sources = frames
    else:
        raise ValueError(f"expected 1 or {window} frames, got {len(frames)}")
    crops = np.stack([warp_crop(img, m[:2], input_hw) for img, m in zip(sources, mats)])
    crops = color_jitter(crops, rng, cfg.color)
    kp_input = apply_affine(keypoints, key[:2]).astype(np.float32)
    return Example(crops, kp_input, np.asarray(weights, np.float32), mats[:, :2].copy(), flipped)
