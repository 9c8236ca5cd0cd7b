import cv2
import numpy as np
import pytest
from scipy import ndimage

from posecli.crop import apply_affine, crop_transform, input_to_heatmap
from posecli.decode import (DEFAULT_BLUR_KERNEL, _argmax, _neighbourhood, argmax_decode, dark_decode,
                            heatmaps_to_frame)

H, W, SIGMA = 64, 48, 2.0


def gaussian_map(cx: float, cy: float, peak: float = 1.0) -> np.ndarray:
    y, x = np.mgrid[0:H, 0:W]
    return (peak * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * SIGMA**2))).astype(np.float32)


def rotated_gaussian(cx: float, cy: float, sx: float, sy: float, angle_deg: float) -> np.ndarray:
    """An anisotropic Gaussian ``[H, W]``: std ``sx`` along the axis turned ``angle_deg`` from x towards y, ``sy`` across."""
    a = np.deg2rad(angle_deg)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    precision = np.linalg.inv(rot @ np.diag([sx**2, sy**2]) @ rot.T)
    y, x = np.mgrid[0:H, 0:W]
    d = np.stack([x - cx, y - cy], axis=-1)
    return np.exp(-0.5 * np.einsum("...i,ij,...j->...", d, precision, d)).astype(np.float32)


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


def test_heatmaps_to_frame_inverts_rotated_and_scaled_crops():
    # Crops turned and scaled about their centre (as in training): the inverse must undo the
    # rotation too, not only the scale and shift.
    rng = np.random.default_rng(6)
    boxes = np.array([[100.0, 50.0, 180.0, 260.0], [400.0, 300.0, 520.0, 380.0]])
    mats = []
    for box, angle, scale in zip(boxes, (35.0, -120.0), (0.8, 1.25)):
        turn = cv2.getRotationMatrix2D((95.5, 127.5), angle, scale)
        m = crop_transform(box, (256, 192))
        mats.append(np.hstack([turn[:, :2] @ m[:, :2], (turn[:, :2] @ m[:, 2] + turn[:, 2])[:, None]]))
    mats = np.stack(mats)
    frame_pts = np.stack([rng.uniform(b[:2], b[2:], size=(17, 2)) for b in boxes])
    crop_pts = np.stack([cv2.transform(p[None], m)[0] for p, m in zip(frame_pts, mats)])
    back = heatmaps_to_frame(input_to_heatmap(crop_pts, 4), 4, mats)
    np.testing.assert_allclose(back, frame_pts, atol=1e-3)


def test_decoded_heatmap_lands_on_the_frame_keypoint():
    box = np.array([200.0, 100.0, 300.0, 400.0])
    mat = crop_transform(box, (256, 192))
    joint = np.array([[231.3, 177.8]])
    u, v = input_to_heatmap(apply_affine(joint, mat), 4)[0]
    xy, _ = dark_decode(gaussian_map(u, v)[None, None])
    frame_xy = heatmaps_to_frame(xy, 4, mat[None])
    # 0.05 heatmap px × stride 4 × (crop scale ≈ 1.95 frame px per input px)
    assert np.linalg.norm(frame_xy[0, 0] - joint[0]) < 0.4


def test_dark_finds_the_centre_of_rotated_anisotropic_gaussians():
    # Round peaks have no Hessian cross term; these do (up to half the diagonal terms), so a wrong
    # sign or index of the cross term moves the result by tenths of a pixel. Reference: the centre
    # the maps were drawn around (the log of a Gaussian is exactly quadratic, and blurring with a
    # symmetric kernel away from the border keeps the centre).
    rng = np.random.default_rng(4)
    centres = random_centres(rng, 120, margin=8.0)
    shapes = np.stack([rng.uniform(1.5, 3.5, 120), rng.uniform(1.2, 2.5, 120), rng.uniform(0, 180, 120)], 1)
    maps = np.stack([rotated_gaussian(cx, cy, *shape) for (cx, cy), shape in zip(centres, shapes)])[None]
    exact, _ = dark_decode(maps, kernel=None)
    modulated, _ = dark_decode(maps)
    assert np.abs(exact[0] - centres).max() < 1e-4
    assert np.abs(modulated[0] - centres).max() < 2e-3


def test_dark_without_modulation_is_exact_next_to_every_border():
    # Centres 1–2 px from each edge: the argmax is on the second or third row/column from the
    # border and the Newton step must still use the right neighbours.
    rng = np.random.default_rng(5)
    near = rng.uniform(1.0, 2.0, (4, 10))
    along_x, along_y = rng.uniform(8, W - 9, (4, 10)), rng.uniform(8, H - 9, (4, 10))
    centres = np.concatenate([
        np.stack([near[0], along_y[0]], 1),  # left
        np.stack([W - 1 - near[1], along_y[1]], 1),  # right
        np.stack([along_x[2], near[2]], 1),  # top
        np.stack([along_x[3], H - 1 - near[3]], 1),  # bottom
    ])
    angles = rng.uniform(0, 180, len(centres))
    maps = np.stack([rotated_gaussian(cx, cy, 2.0, 1.4, a) for (cx, cy), a in zip(centres, angles)])[None]
    xy, _ = dark_decode(maps, kernel=None)
    assert np.abs(xy[0] - centres).max() < 1e-3


@pytest.mark.parametrize("kernel", [None, DEFAULT_BLUR_KERNEL])
@pytest.mark.parametrize("centre", [(0.2, 30.3), (W - 1.2, 30.3), (20.4, 0.2), (20.4, H - 1.2)],
                         ids=["left", "right", "top", "bottom"])
def test_maxima_on_an_outermost_row_or_column_keep_the_argmax(centre, kernel):
    # No neighbour on one side: no Newton step at all, the integer argmax is returned as is.
    maps = rotated_gaussian(*centre, 2.0, 1.5, 30.0)[None, None]
    px, py, _ = _argmax(maps)
    assert px[0, 0] in (0, W - 1) or py[0, 0] in (0, H - 1)  # the map's maximum is on the border
    xy, _ = dark_decode(maps, kernel=kernel)
    np.testing.assert_array_equal(xy[0, 0], [px[0, 0], py[0, 0]])


def test_a_newton_step_longer_than_one_pixel_is_not_taken():
    # A thin ridge at 5°: the grid pixel nearest its axis is 3.7 px from the centre, so the
    # quadratic's maximum is not in the argmax pixel's neighbourhood and the step is refused.
    maps = rotated_gaussian(20.3, 30.6, 15.0, 0.4, 5.0)[None, None]
    px, py, _ = _argmax(maps)
    assert abs(px[0, 0] - 20.3) > 1.0  # precondition: the argmax is far from the centre
    xy, _ = dark_decode(maps, kernel=None)
    np.testing.assert_array_equal(xy[0, 0], [px[0, 0], py[0, 0]])


def test_a_saddle_at_the_argmax_is_not_refined():
    # The centre pixel is the maximum, but the diagonal neighbours make the log-Hessian
    # indefinite (det < 0) and the gradient is not zero: a Newton step would move to a saddle.
    logs = np.array([[-0.2, -1.0, -6.0],
                     [-1.5, 0.0, -0.5],
                     [-6.0, -1.0, -0.2]])  # rows y-1..y+1, columns x-1..x+1
    maps = np.zeros((1, 1, H, W), np.float32)
    maps[0, 0, 29:32, 19:22] = np.exp(logs)
    xy, _ = dark_decode(maps, kernel=None)
    np.testing.assert_array_equal(xy[0, 0], [20.0, 30.0])
