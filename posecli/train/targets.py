"""Training targets: Gaussian keypoint heatmaps and their per-joint loss weights.

Targets are unnormalised Gaussians with peak 1 centred at the *sub-pixel* joint position in
heatmap coordinates (``crop.input_to_heatmap``), so DARK decoding at inference recovers the
labelled position without the half-pixel bias of quantised centres.
"""

from __future__ import annotations

import numpy as np

from posecli.crop import input_to_heatmap

HEATMAP_STRIDE = 4
# Standard deviation of the target Gaussians in heatmap pixels (= 8 input pixels at stride 4),
# the value used by SimpleBaseline/HRNet/DiffPose for 64×48 heatmaps.
HEATMAP_SIGMA = 2.0


def gaussian_heatmaps(
    keypoints_input: np.ndarray,
    weights: np.ndarray,
    heatmap_hw: tuple[int, int],
    stride: int = HEATMAP_STRIDE,
    sigma: float = HEATMAP_SIGMA,
) -> tuple[np.ndarray, np.ndarray]:
    """Render one Gaussian per joint.

    Args:
        keypoints_input: [K, 2] joint positions in model-input pixels.
        weights: [K] loss weights; 0 marks an unlabelled joint.
        heatmap_hw: (h, w) of the heatmaps, e.g. (64, 48).
        stride: input pixels per heatmap pixel.
        sigma: Gaussian standard deviation in heatmap pixels.

    Returns:
        heatmaps [K, h, w] float32 in [0, 1] (all zero for weight-0 joints) and the weights [K]
        float32, set to 0 for joints whose centre lies outside the heatmap (their Gaussian
        would be mostly cut off and teach the decoder a biased peak).
    """
    h, w = heatmap_hw
    xy = input_to_heatmap(keypoints_input, stride)  # [K, 2]
    weights = np.asarray(weights, np.float32).copy()
    inside = (xy[:, 0] >= -0.5) & (xy[:, 0] <= w - 0.5) & (xy[:, 1] >= -0.5) & (xy[:, 1] <= h - 0.5)
    weights[~inside] = 0.0
    gx = np.exp(-((np.arange(w)[None, :] - xy[:, 0:1]) ** 2) / (2 * sigma**2))  # [K, w]
    gy = np.exp(-((np.arange(h)[None, :] - xy[:, 1:2]) ** 2) / (2 * sigma**2))  # [K, h]
    heatmaps = (gy[:, :, None] * gx[:, None, :]).astype(np.float32)
    heatmaps[weights <= 0] = 0.0
    return heatmaps, weights
