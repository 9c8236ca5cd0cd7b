"""Heatmaps → keypoints with DARK sub-pixel decoding.

DARK: Zhang et al., CVPR 2020, "Distribution-Aware Coordinate Representation for Human Pose
Estimation". The plain argmax of a heatmap is quantised to the heatmap grid (stride 4 → up to
±2 input pixels of error). DARK assumes the heatmap is a 2-D Gaussian around the true joint, so
its logarithm is a quadratic whose maximum is found from one Newton step (second-order Taylor
expansion) at the argmax m:

    μ = m − H(m)⁻¹ ∇P(m),   P = log(heatmap), ∇P and H by central differences

Real network outputs are not clean Gaussians (several peaks, ragged tails), so the paper first
*modulates* them ("distribution modulation"): blur with a Gaussian of about the training sigma
and rescale each map so its maximum is unchanged, which makes ``log`` well behaved near the peak.
Deviation from the reference code: the second derivatives use ±1-pixel differences rather than
±2, so maxima one pixel from the border are refined too (both are exact for a Gaussian).

Everything is vectorised over the N×K maps; there is no Python loop per joint.
"""

from __future__ import annotations

import cv2
import numpy as np
from scipy import ndimage

from .crop import apply_affine, heatmap_to_input, invert_affine

# An 11-tap kernel has OpenCV's default sigma 0.3·((11−1)/2 − 1) + 0.8 = 2.0, matching the
# sigma-2 training targets on 64×48 maps (the same pairing as the DARK reference code).
DEFAULT_BLUR_KERNEL = 11
_LOG_FLOOR = 1e-10  # log() of a flat-zero region must stay finite


def gaussian_modulate(heatmaps: np.ndarray, kernel: int = DEFAULT_BLUR_KERNEL) -> np.ndarray:
    """Blur each map with a Gaussian and rescale it so its maximum is unchanged (DARK eq. 9–10).

    Args:
        heatmaps: float ``[N, K, h, w]``.
        kernel: odd kernel size; sigma follows OpenCV's rule for a given size.

    Returns:
        float32 ``[N, K, h, w]``.
    """
    if kernel < 1 or kernel % 2 == 0:
        raise ValueError(f"blur kernel size must be a positive odd number, not {kernel}")
    hm = np.asarray(heatmaps, np.float32)
    taps = cv2.getGaussianKernel(kernel, 0).astype(np.float32).ravel()
    # Zero padding, as in the reference implementation: outside the map there is no signal.
    blurred = ndimage.correlate1d(hm, taps, axis=-1, mode="constant", cval=0.0)
    blurred = ndimage.correlate1d(blurred, taps, axis=-2, mode="constant", cval=0.0)
    old_max = hm.max(axis=(-2, -1), keepdims=True)
    new_max = blurred.max(axis=(-2, -1), keepdims=True)
    scale = np.divide(old_max, new_max, out=np.zeros_like(old_max), where=new_max > 0)
    return blurred * scale


def dark_decode(heatmaps: np.ndarray, kernel: int | None = DEFAULT_BLUR_KERNEL
                ) -> tuple[np.ndarray, np.ndarray]:
    """Sub-pixel keypoint positions and scores from heatmaps (DARK, Zhang et al. CVPR 2020).

    Args:
        heatmaps: float32 ``[N, K, h, w]``, one Gaussian-like peak per joint, values ~[0, 1].
        kernel: modulation blur size (odd), or ``None`` to skip the modulation (for maps that are
            already clean Gaussians).

    Returns:
        ``xy``: float32 ``[N, K, 2]`` positions in heatmap pixels (x right, y down, pixel centres
        at integers); ``scores``: float32 ``[N, K]``, the raw peak value clipped to [0, 1].

    The Newton step is skipped (plain argmax kept) where it cannot be trusted: the maximum on
    the outermost row/column (no neighbour on one side), a Hessian that is singular or not
    negative definite (not a maximum), or a step longer than one pixel (the argmax is then not
    the peak's pixel, e.g. a plateau). Accuracy on sigma-2 Gaussians (tests/test_decode.py):
    < 0.01 px inside the map; the zero-padded modulation blur pulls peaks within ~4 px of the
    border inward by up to 0.05 px (3.5 px from the edge); ``kernel=None`` is exact everywhere.
    """
    hm = np.asarray(heatmaps, np.float32)
    if hm.ndim != 4:
        raise ValueError(f"heatmaps must be N×K×h×w, got shape {hm.shape}")
    n, k, h, w = hm.shape
    px, py, scores = _argmax(hm)

    smooth = gaussian_modulate(hm, kernel) if kernel else hm
    logs = np.log(np.maximum(np.nan_to_num(smooth, nan=0.0), _LOG_FLOOR)).astype(np.float64)

    # Central differences need one neighbour on each side; clamp the sampling position and
    # discard the result for border maxima below.
    inner = (px >= 1) & (px <= w - 2) & (py >= 1) & (py <= h - 2)
    cx, cy = np.clip(px, 1, max(w - 2, 1)), np.clip(py, 1, max(h - 2, 1))
    ni, ki = np.meshgrid(np.arange(n), np.arange(k), indexing="ij")

    def at(dx: int, dy: int) -> np.ndarray:
        return logs[ni, ki, np.clip(cy + dy, 0, h - 1), np.clip(cx + dx, 0, w - 1)]

    p0 = at(0, 0)
    gx = 0.5 * (at(1, 0) - at(-1, 0))
    gy = 0.5 * (at(0, 1) - at(0, -1))
    hxx = at(1, 0) - 2.0 * p0 + at(-1, 0)
    hyy = at(0, 1) - 2.0 * p0 + at(0, -1)
    hxy = 0.25 * (at(1, 1) - at(1, -1) - at(-1, 1) + at(-1, -1))
    det = hxx * hyy - hxy * hxy

    # A maximum has a negative-definite Hessian: hxx < 0 and det > 0.
    ok = inner & (hxx < 0) & (det > 1e-12)
    safe_det = np.where(ok, det, 1.0)
    # offset = −H⁻¹ g with H⁻¹ = [[hyy, −hxy], [−hxy, hxx]] / det
    ox = -(hyy * gx - hxy * gy) / safe_det
    oy = -(-hxy * gx + hxx * gy) / safe_det
    ok &= (np.abs(ox) <= 1.0) & (np.abs(oy) <= 1.0)
    ox, oy = np.where(ok, ox, 0.0), np.where(ok, oy, 0.0)

    xy = np.stack([px + ox, py + oy], axis=-1).astype(np.float32)
    return xy, scores.astype(np.float32)


def argmax_decode(heatmaps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Integer argmax positions ``[N, K, 2]`` and peak scores ``[N, K]``: the baseline DARK improves on."""
    px, py, scores = _argmax(np.asarray(heatmaps, np.float32))
    return np.stack([px, py], axis=-1).astype(np.float32), scores.astype(np.float32)


def _argmax(hm: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Column, row (int ``[N, K]``) and clipped value (``[N, K]``, NaN maps → 0) of each maximum."""
    n, k, h, w = hm.shape
    flat = np.nan_to_num(hm.reshape(n, k, h * w), nan=-np.inf)
    idx = flat.argmax(axis=-1)
    peak = np.take_along_axis(flat, idx[..., None], axis=-1)[..., 0]
    scores = np.clip(np.where(np.isfinite(peak), peak, 0.0), 0.0, 1.0)
    py, px = np.divmod(idx, w)
    return px, py, scores


def heatmaps_to_frame(xy_hm: np.ndarray, stride: int, crop_matrix_2x3: np.ndarray) -> np.ndarray:
    """Heatmap-pixel positions → original-frame pixels.

    Args:
        xy_hm: ``[N, K, 2]`` positions on the heatmap grid (from :func:`dark_decode`).
        stride: input pixels per heatmap pixel (4 for 256×192 → 64×48).
        crop_matrix_2x3: the frame→crop affine of each person, ``[N, 2, 3]``, or one ``[2, 3]``
            shared by all (from :func:`posecli.crop.crop_transform`).

    Returns:
        float32 ``[N, K, 2]`` in frame pixels.
    """
    xy_in = heatmap_to_input(xy_hm, stride)
    mats = np.asarray(crop_matrix_2x3, np.float64)
    if mats.ndim == 2:
        return apply_affine(xy_in, invert_affine(mats)).astype(np.float32)
    if mats.shape[0] != xy_in.shape[0]:
        raise ValueError(f"{mats.shape[0]} crop matrices for {xy_in.shape[0]} persons")
    out = np.empty(xy_in.shape, np.float64)
    for i, m in enumerate(mats):  # one 2×3 inverse per person; the joints are vectorised
        out[i] = apply_affine(xy_in[i], invert_affine(m))
    return out.astype(np.float32)
