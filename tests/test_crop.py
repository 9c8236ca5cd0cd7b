import cv2
import numpy as np
import pytest

from posecli.crop import (
    apply_affine, crop_transform, crop_window_xywh, heatmap_to_input, input_to_heatmap,
    invert_affine, warp_crop,
)
from posecli.train.augment import about_centre

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


def rotated_crop(box: np.ndarray, angle_deg: float, scale: float) -> np.ndarray:
    """Frame → crop affine ``[2, 3]`` of a crop turned and scaled about its centre (OpenCV's own rotation matrix)."""
    turn = cv2.getRotationMatrix2D(((INPUT_HW[1] - 1) / 2.0, (INPUT_HW[0] - 1) / 2.0), angle_deg, scale)
    m = crop_transform(box, INPUT_HW)
    return np.hstack([turn[:, :2] @ m[:, :2], (turn[:, :2] @ m[:, 2] + turn[:, 2])[:, None]])


@pytest.mark.parametrize("angle, scale", [(30.0, 1.0), (-75.0, 0.7), (140.0, 1.3)])
def test_rotated_and_scaled_crops_round_trip_and_agree_with_opencv(angle, scale):
    rng = np.random.default_rng(int(angle) % 7)
    m = rotated_crop(np.array([60.0, 100.0, 220.0, 320.0]), angle, scale)
    points = rng.uniform(-100, 900, (17, 2))
    mapped = apply_affine(points, m)
    np.testing.assert_allclose(mapped, cv2.transform(points[None], m)[0], atol=1e-9)
    np.testing.assert_allclose(apply_affine(mapped, invert_affine(m)), points, atol=1e-9)
    # A 3×3 dot lands where the affine says, also when the crop is turned.
    image = np.zeros((400, 300, 3), np.uint8)
    image[210:213, 140:143] = 255
    crop = warp_crop(image, m, INPUT_HW)
    ys, xs = np.nonzero(crop[..., 0] > 0)
    weights = crop[ys, xs, 0].astype(np.float64)
    centre = np.array([np.average(xs, weights=weights), np.average(ys, weights=weights)])
    np.testing.assert_allclose(centre, apply_affine(np.array([141.0, 211.0]), m), atol=0.15)


@pytest.mark.parametrize("angle, scale", [(30.0, 1.0), (-75.0, 0.7)])
def test_training_rotation_about_the_crop_centre_is_opencvs(angle, scale):
    # Positive angles turn the content counter-clockwise on screen, as cv2.getRotationMatrix2D does.
    expected = cv2.getRotationMatrix2D(((INPUT_HW[1] - 1) / 2.0, (INPUT_HW[0] - 1) / 2.0), angle, scale)
    np.testing.assert_allclose(about_centre(scale, angle, (0.0, 0.0), INPUT_HW)[:2], expected, atol=1e-12)
