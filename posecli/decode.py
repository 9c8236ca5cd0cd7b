"""Heatmaps → keypoints with DARK sub-pixel decoding.

DARK: Zhang et al., CVPR 2020, "Distribution-Aware Coordinate Representation for Human Pose
Estimation". The plain argmax of a heatmap is quantised to the heatmap grid (stride 4 → up to
±2 input pixels of error). DARK assumes the heatmap is a 2-D Gaussian around the true joint, so
its logarithm is a quadratic whose maximum is found from one Newton step (second-order Taylor
expansion) at the argmax m:

    μ = m − H(m)⁻¹ ∇P(m),   P = log(heatmap), ∇P and H by central differences

Real network outputs are not clean Gaussians (several peaks, ragged tails), so the paper first
*modulates* them ("distribution modulation", eq. 9–10): blur with a Gaussian of about the
training sigma (zero padding, as in the reference implementation) and rescale each map so its
maximum is unchanged, which makes ``log`` well behaved near the peak.
Deviation from the reference code: the second derivatives use ±1-pixel differences rather than
±2, so maxima one pixel from the border are refined too (both are exact for a Gaussian).

Everything is vectorised over the N×K maps; there is no Python loop per joint. The Newton step
only reads the modulated map on the 3×3 pixels around the argmax, so :func:`dark_decode` blurs
just those (from the 13×13 raw pixels around them, zero outside the map as in the full blur), and
leaves out the rescaling: a constant factor cancels in the differences of logarithms. This gives
the full-map result (to float rounding) at about 1/60 of the arithmetic.
"""

from __future__ import annotations

import cv2
import numpy as np

from .crop import apply_affine, heatmap_to_input, invert_affine

# An 11-tap kernel has OpenCV's default sigma 0.3·((11−1)/2 − 1) + 0.8 = 2.0, matching the
# sigma-2 training targets on 64×48 maps (the same pairing as the DARK reference code).
DEFAULT_BLUR_KERNEL = 11
_LOG_FLOOR = 1e-10  # log() of a flat-zero region must stay finite


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

    inner = (px >= 1) & (px <= w - 2) & (py >= 1) & (py <= h - 2)
    # log of the (modulated) map on the 3×3 pixels around each argmax, [N, K, 3, 3]; border maxima
    # read clamped positions and are discarded below.
    logs = np.log(np.maximum(np.nan_to_num(_neighbourhood(hm, px, py, kernel), nan=0.0), _LOG_FLOOR))

    def at(dx: int, dy: int) -> np.ndarray:
        return logs[..., 1 + dy, 1 + dx]

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


def _neighbourhood(hm: np.ndarray, px: np.ndarray, py: np.ndarray, kernel: int | None) -> np.ndarray:
    """float64 ``[N, K, 3, 3]``: the map around each (clamped) argmax, blurred with ``kernel`` if given.

    With ``kernel``, this is the map blurred by a ``kernel``-tap Gaussian (OpenCV's sigma for
    that size) with zero padding, read at those pixels.
    """
    if kernel is not None and (kernel < 1 or kernel % 2 == 0):
        raise ValueError(f"blur kernel size must be a positive odd number, not {kernel}")
    n, k, h, w = hm.shape
    half = (kernel // 2 if kernel else 0) + 1
    cx, cy = np.clip(px, 1, max(w - 2, 1)), np.clip(py, 1, max(h - 2, 1))
    offsets = np.arange(-half, half + 1)
    rows = (cy[..., None] + offsets)[..., :, None]  # [N, K, P, 1]
    cols = (cx[..., None] + offsets)[..., None, :]  # [N, K, 1, P]
    inside = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)
    flat = hm.reshape(n * k, h * w)
    index = np.clip(rows, 0, h - 1) * w + np.clip(cols, 0, w - 1)  # [N, K, P, P]
    patch = np.take_along_axis(flat, index.reshape(n * k, -1), axis=1).reshape(index.shape)
    patch = np.where(inside, patch.astype(np.float64), 0.0)  # [N, K, P, P], P = 2·half + 1
    if kernel:
        # Valid correlation along each axis (P = kernel + 2 → 3 outputs) as a 3×P matrix whose
        # rows are the taps shifted by one: blurred = B · patch · Bᵀ.
        taps = cv2.getGaussianKernel(kernel, 0).ravel()
        blur = np.zeros((3, kernel + 2))
        for i in range(3):
            blur[i, i:i + kernel] = taps
        patch = blur @ patch @ blur.T
    return patch


def argmax_decode(heatmaps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Integer argmax positions ``[N, K, 2]`` and peak scores ``[N, K]``: the baseline DARK improves on."""
    px, py, scores = _argmax(np.asarray(heatmaps, np.float32))
    return np.stack([px, py], axis=-1).astype(np.float32), scores.astype(np.float32)


def _argmax(hm: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Column, row (int ``[N, K]``) and clipped value (``[N, K]``, NaN maps → 0) of each maximum."""
    n, k, h, w = hm.shape
    flat = hm.reshape(n, k, h * w)
    idx = flat.argmax(axis=-1)
    peak = np.take_along_axis(flat, idx[..., None], axis=-1)[..., 0]
    if np.isnan(peak).any():  # argmax stops at the first NaN: look again without them
        flat = np.nan_to_num(flat, nan=-np.inf)
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
