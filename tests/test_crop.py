import numpy as np
import pytest

from posecli.crop import (
    apply_affine, crop_transform, crop_window_xywh, heatmap_to_input, input_to_heatmap,
    invert_affine, warp_crop,
)

INPUT_HW = (256, 192)


@pytest.mark.parametrize("box", [[10, 20, 110, 320], [100.5, 40.25, 400.0, 90.0], [0, 0, 1, 1]])
def test_crop_window_matches_input_aspect_and_contains_enlarged_box(box):
    cx, cy, w, h = crop_window_xywh(np.array(box), INPUT_HW)
    assert w / h == pytest.approx(192 / 256)
    bw, bh = max(box[2] - box[0], 1) * 1.25, max(box[3] - box[1], 1) * 1.25
    assert w >= bw - 1e-9 and h >= bh - 1e-9
    assert (cx, cy) == pytest.approx(((box[0] + box[2]) / 2, (box[1] + box[3]) / 2))


def test_crop_uncrop_round_trip_is_exact():
    rng = np.random.default_rng(0)
    for _ in range(50):
        x1, y1 = rng.uniform(-50, 500, 2)
        box = np.array([x1, y1, x1 + rng.uniform(5, 400), y1 + rng.uniform(5, 400)])
        m = crop_transform(box, INPUT_HW)
        points = rng.uniform(-100, 900, (17, 2))
        back = apply_affine(apply_affine(points, m), invert_affine(m))
        np.testing.assert_allclose(back, points, atol=1e-9)


def test_crop_edges_map_to_outer_pixel_edges():
    box = np.array([100.0, 50.0, 196.0, 178.0])  # 96×128 → ×1.25 = 120×160, already 3:4
    m = crop_transform(box, INPUT_HW)
    cx, cy, w, h = crop_window_xywh(box, INPUT_HW)
    corners = np.array([[cx - w / 2, cy - h / 2], [cx + w / 2, cy + h / 2]])
    np.testing.assert_allclose(apply_affine(corners, m), [[-0.5, -0.5], [191.5, 255.5]], atol=1e-9)


def test_warp_crop_puts_a_marked_pixel_where_the_affine_says():
    image = np.zeros((400, 300, 3), np.uint8)
    image[210:213, 140:143] = 255  # a 3×3 white dot centred on pixel (141, 211)
    box = np.array([60.0, 100.0, 220.0, 320.0])
    m = crop_transform(box, INPUT_HW)
    crop = warp_crop(image, m, INPUT_HW)
    assert crop.shape == (256, 192, 3)
    ys, xs = np.nonzero(crop[..., 0] > 0)
    weights = crop[ys, xs, 0].astype(np.float64)
    centre = np.array([np.average(xs, weights=weights), np.average(ys, weights=weights)])
    np.testing.assert_allclose(centre, apply_affine(np.array([141.0, 211.0]), m), atol=0.1)


def test_heatmap_input_coordinates_are_inverse():
    xy = np.array([[0.0, 0.0], [12.3, 47.9]])
    np.testing.assert_allclose(input_to_heatmap(heatmap_to_input(xy, 4), 4), xy)
    # heatmap pixel 0 covers input pixels 0..3, so its centre is at 1.5
    np.testing.assert_allclose(heatmap_to_input(np.zeros(2), 4), [1.5, 1.5])
