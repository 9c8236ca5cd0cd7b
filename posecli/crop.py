"""Person crops: the affine map from a frame to the model input, and back.

The box is enlarged by 25 % and then grown along one axis to the input's aspect ratio, so the
person is never squashed. Coordinates follow ``types.py``: pixel centres sit at integers, which
is also OpenCV's ``warpAffine`` convention, so no half-pixel terms appear here.
"""

from __future__ import annotations

import cv2
import numpy as np

BOX_ENLARGE = 1.25


def crop_window_xywh(box_xyxy: np.ndarray, input_hw: tuple[int, int],
                     enlarge: float = BOX_ENLARGE) -> np.ndarray:
    """The frame region a crop covers, as centre x, centre y, width, height.

    Args:
        box_xyxy: 4 floats, the person box.
        input_hw: model input (height, width).
        enlarge: factor applied to both box sides before the aspect correction.
    """
    x1, y1, x2, y2 = (float(v) for v in box_xyxy)
    cx, cy = (x1 + x2) / 2.0, (y1 + y2) / 2.0
    w, h = max(x2 - x1, 1.0) * enlarge, max(y2 - y1, 1.0) * enlarge
    aspect = input_hw[1] / input_hw[0]  # width / height
    if w > h * aspect:
        h = w / aspect
    else:
        w = h * aspect
    return np.array([cx, cy, w, h], np.float64)


def crop_transform(box_xyxy: np.ndarray, input_hw: tuple[int, int],
                   enlarge: float = BOX_ENLARGE) -> np.ndarray:
    """2×3 affine matrix taking frame pixels to crop pixels.

    The crop region's edges map to the input's outer pixel edges, i.e. frame point
    ``(cx - w/2, cy - h/2)`` goes to ``(-0.5, -0.5)``.
    """
    cx, cy, w, h = crop_window_xywh(box_xyxy, input_hw, enlarge)
    out_h, out_w = input_hw
    sx, sy = out_w / w, out_h / h  # equal up to rounding: the aspect was matched above
    return np.array(
        [[sx, 0.0, (out_w - 1) / 2.0 - sx * cx],
         [0.0, sy, (out_h - 1) / 2.0 - sy * cy]],
        np.float64,
    )


def warp_crop(image: np.ndarray, matrix: np.ndarray, input_hw: tuple[int, int]) -> np.ndarray:
    """Cut the crop out of ``image`` (H×W×3 uint8); pixels outside the frame are black."""
    return cv2.warpAffine(
        image, matrix, (input_hw[1], input_hw[0]), flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0),
    )


def invert_affine(matrix: np.ndarray) -> np.ndarray:
    """Inverse of a 2×3 affine matrix."""
    return cv2.invertAffineTransform(np.asarray(matrix, np.float64))


def crop_to_crop(from_matrix: np.ndarray, to_matrix: np.ndarray) -> np.ndarray:
    """2×3 affine taking pixels of one crop to pixels of another crop of the same frame.

    Args:
        from_matrix, to_matrix: the two crops' frame → crop affines (2×3).
    """
    a = np.vstack([np.asarray(to_matrix, np.float64), [0.0, 0.0, 1.0]])
    b = np.vstack([invert_affine(from_matrix), [0.0, 0.0, 1.0]])
    return (a @ b)[:2]


def apply_affine(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Map points ``[..., 2]`` with a 2×3 matrix; returns float64 of the same shape."""
    pts = np.asarray(points, np.float64)
    return pts @ matrix[:, :2].T + matrix[:, 2]


def heatmap_to_input(xy: np.ndarray, stride: int) -> np.ndarray:
    """Heatmap pixel coordinates → input pixel coordinates.

    Heatmap pixel ``u`` covers input pixels ``u*stride … u*stride + stride - 1``, so its centre is
    at ``u*stride + (stride - 1) / 2``.
    """
    return np.asarray(xy, np.float64) * stride + (stride - 1) / 2.0


def input_to_heatmap(xy: np.ndarray, stride: int) -> np.ndarray:
    """Inverse of :func:`heatmap_to_input`."""
    return (np.asarray(xy, np.float64) - (stride - 1) / 2.0) / stride
