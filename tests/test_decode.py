import cv2
import numpy as np
from scipy import ndimage

from posecli.crop import apply_affine, crop_transform, input_to_heatmap
from posecli.decode import (DEFAULT_BLUR_KERNEL, _argmax, _neighbourhood, argmax_decode, dark_decode,
                            heatmaps_to_frame)

H, W, SIGMA = 64, 48, 2.0


def gaussian_map(cx: float, cy: float, peak: float = 1.0) -> np.ndarray:
    y, x = np.mgrid[0:H, 0:W]
    return (peak * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * SIGMA**2))).astype(np.float32)


def random_centres(rng, n, margin):
    return np.stack([rng.uniform(margin, W - 1 - margin, n), rng.uniform(margin, H - 1 - margin, n)], 1)


def test_dark_recovers_subpixel_centre_and_beats_argmax():
    rng = np.random.default_rng(0)
    centres = random_centres(rng, 120, margin=4.0)
    # Force a share of the centres to lie 4–5 px from an edge, where the blur sees the border.
    centres[:20, 0] = rng.uniform(4.0, 5.0, 20)
    centres[20:40, 1] = rng.uniform(H - 1 - 5.0, H - 1 - 4.0, 20)
    maps = np.stack([gaussian_map(cx, cy) for cx, cy in centres]).reshape(6, 20, H, W)
    truth = centres.reshape(6, 20, 2)

    xy, scores = dark_decode(maps)
    err = np.linalg.norm(xy - truth, axis=-1)
    arg_err = np.linalg.norm(argmax_decode(maps)[0] - truth, axis=-1)

    assert xy.shape == (6, 20, 2) and xy.dtype == np.float32
    assert err.max() < 0.05
    assert arg_err.mean() > 0.25  # quantisation error of the integer grid
    assert err.mean() < arg_err.mean() / 20
    assert np.all((scores > 0.7) & (scores <= 1.0))


def test_dark_without_modulation_is_exact_on_a_clean_gaussian_even_near_the_border():
    rng = np.random.default_rng(1)
    centres = random_centres(rng, 50, margin=1.5)
    maps = np.stack([gaussian_map(cx, cy) for cx, cy in centres])[None]
    xy, _ = dark_decode(maps, kernel=None)
    assert np.abs(xy[0] - centres).max() < 1e-3


def test_local_modulation_equals_the_full_map_blur():
    # DARK blurs only the 3×3 pixels around each argmax; they must equal the whole map blurred
    # with zero padding, also for maxima next to the border and with noise around the peaks.
    rng = np.random.default_rng(3)
    maps = np.stack([gaussian_map(x, y, 0.7) for x, y in [(1.2, 30.0), (46.6, 62.4), (20.3, 33.8)]])[None]
    maps = (maps + rng.uniform(0, 0.05, maps.shape)).astype(np.float32)
    taps = cv2.getGaussianKernel(DEFAULT_BLUR_KERNEL, 0).ravel()
    full = ndimage.correlate1d(maps.astype(np.float64), taps, axis=-1, mode="constant")
    full = ndimage.correlate1d(full, taps, axis=-2, mode="constant")
    px, py, _ = _argmax(maps)
    local = _neighbourhood(maps, px, py, DEFAULT_BLUR_KERNEL)
    for j in range(3):
        x, y = min(max(px[0, j], 1), 46), min(max(py[0, j], 1), 62)
        np.testing.assert_allclose(local[0, j], full[0, j, y - 1:y + 2, x - 1:x + 2], rtol=1e-9)


def test_degenerate_maps_fall_back_to_argmax():
    maps = np.zeros((1, 4, H, W), np.float32)
    maps[0, 1] = gaussian_map(0.0, 30.2)  # maximum on the left border column
    # A diagonal ridge: the log-Hessian at the peak is indefinite, so no Newton step.
    maps[0, 2, 30, 20] = 1.0
    maps[0, 2, [29, 31, 30, 30], [20, 20, 19, 21]] = np.exp(-1.0)
    maps[0, 2, [29, 31], [19, 21]] = 0.99
    maps[0, 3] = 1.5 * gaussian_map(20.4, 30.0)  # score above 1 is clipped
    xy, scores = dark_decode(maps)
    ridge_xy, _ = dark_decode(maps[:, 2:3], kernel=None)
    assert np.all(np.isfinite(xy))
    np.testing.assert_allclose(ridge_xy[0, 0], [20.0, 30.0])
    assert scores[0, 0] == 0.0  # an all-zero map: argmax (0, 0), score 0
    np.testing.assert_allclose(xy[0, 0], [0.0, 0.0])
    assert xy[0, 1, 0] == 0.0 and abs(xy[0, 1, 1] - 30.2) < 0.5
    assert scores[0, 3] == 1.0 and abs(xy[0, 3, 0] - 20.4) < 0.05


def test_heatmaps_to_frame_inverts_the_crop():
    rng = np.random.default_rng(2)
    boxes = np.array([[100.0, 50.0, 180.0, 260.0], [400.0, 300.0, 520.0, 380.0]])
    mats = np.stack([crop_transform(b, (256, 192)) for b in boxes])
    frame_pts = np.stack([rng.uniform(b[:2], b[2:], size=(17, 2)) for b in boxes])
    hm_pts = np.stack([input_to_heatmap(apply_affine(p, m), 4) for p, m in zip(frame_pts, mats)])
    back = heatmaps_to_frame(hm_pts, 4, mats)
    assert back.shape == (2, 17, 2) and back.dtype == np.float32
    np.testing.assert_allclose(back, frame_pts, atol=1e-3)
    np.testing.assert_allclose(heatmaps_to_frame(hm_pts[:1], 4, mats[0]), frame_pts[:1], atol=1e-3)


def test_decoded_heatmap_lands_on_the_frame_keypoint():
    box = np.array([200.0, 100.0, 300.0, 400.0])
    mat = crop_transform(box, (256, 192))
    joint = np.array([[231.3, 177.8]])
    u, v = input_to_heatmap(apply_affine(joint, mat), 4)[0]
    xy, _ = dark_decode(gaussian_map(u, v)[None, None])
    frame_xy = heatmaps_to_frame(xy, 4, mat[None])
    # 0.05 heatmap px × stride 4 × (crop scale ≈ 1.95 frame px per input px)
    assert np.linalg.norm(frame_xy[0, 0] - joint[0]) < 0.4
