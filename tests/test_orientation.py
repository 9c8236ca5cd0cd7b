"""Quarter-turn views of still-image crops (posecli/models/orientation.py)."""

import numpy as np
import pytest

from posecli.models.orientation import HIPS, QUARTER_TURNS, SHOULDERS, pick_views, turned_back, turned_crops, view_up_angles

K, SIZE = 17, 16


def block_max(crops: np.ndarray, stride: int) -> np.ndarray:
    """A stand-in model: [M, S, S, C] crops → [M, C, S/stride, S/stride] heatmaps (max over each cell)."""
    m, s, _, c = crops.shape
    cells = crops.reshape(m, s // stride, stride, s // stride, stride, c)
    return cells.max(axis=(2, 4)).transpose(0, 3, 1, 2)


@pytest.mark.parametrize("stride", [1, 4])
def test_every_turned_view_comes_back_to_the_upright_crops_pixels(stride):
    crops = np.random.default_rng(0).integers(0, 255, (2, SIZE, SIZE, 3), np.uint8)
    turned = turned_crops(crops)
    assert turned.shape == (len(QUARTER_TURNS) * 2, SIZE, SIZE, 3)
    assert not np.array_equal(turned[2], turned[0])  # the views differ ...
    views = turned_back(block_max(turned, stride))
    for view in views:  # ... and each comes back to the upright crop's heatmaps, cell for cell
        np.testing.assert_array_equal(view, block_max(crops, stride))


def test_the_first_turn_is_anticlockwise():
    crop = np.zeros((1, SIZE, SIZE, 1), np.uint8)
    crop[0, 2, SIZE - 1] = 1  # near the top right corner
    turned = turned_crops(crop)
    assert turned[1, 0, 2, 0] == 1  # turned anticlockwise: now near the top left corner


def test_non_square_crops_cannot_be_turned():
    with pytest.raises(ValueError, match="square"):
        turned_crops(np.zeros((1, 8, 6, 3), np.uint8))


def person(shoulders_xy, hips_xy, peak=1.0, hw=(SIZE, SIZE)) -> np.ndarray:
    """[K, h, w] heatmaps with one peak per joint: shoulders and hips where given, others at the hips."""
    maps = np.zeros((K, *hw), np.float32)
    for j in range(K):
        x, y = shoulders_xy if j in SHOULDERS else hips_xy
        maps[j, y, x] = peak
    return maps


UP, RIGHT, DOWN, LEFT = ((8, 2), (8, 12)), ((13, 8), (3, 8)), ((8, 12), (8, 2)), ((3, 8), (13, 8))


def test_up_angles_measure_each_view_against_its_own_up():
    views = np.stack([person(*UP), person(*RIGHT), person(*DOWN), person(*LEFT)])[:, None]
    angles = view_up_angles(views)[:, 0]
    # upright in view 0; pointing right in the upright crop looks up in view 1 (one quarter turn anticlockwise),
    # down in view 2, left in view 3
    np.testing.assert_allclose(angles, [0.0, 0.0, 0.0, 0.0], atol=1e-9)
    views = np.stack([person(*RIGHT)] * 4)[:, None]
    np.testing.assert_allclose(view_up_angles(views)[:, 0], [90.0, 0.0, 90.0, 180.0], atol=1e-9)
    tilted = np.stack([person((12, 4), (8, 12))] * 4)[:, None]  # 26.6° clockwise of up, anisotropic steps
    np.testing.assert_allclose(view_up_angles(tilted)[:, 0], [26.57, 63.43, 153.43, 116.57], atol=0.01)


def test_a_person_upside_down_is_taken_from_the_view_that_shows_them_upright():
    upside_down = person(*DOWN, peak=0.4)
    surer_turned = person(*DOWN, peak=0.9)  # view 2: the same line, which looks upright there
    views = np.stack([upside_down, person(*UP, peak=0.5), surer_turned, person(*UP, peak=0.95)])[:, None]
    heatmaps, chosen = pick_views(views)
    assert chosen.tolist() == [2]  # view 3 is surer still, but it does not look upright
    np.testing.assert_array_equal(heatmaps[0], surer_turned)


def test_the_upright_view_stays_where_it_looks_upright_or_no_turned_view_is_surer():
    upright, turned = person(*UP, peak=0.4), person(*DOWN, peak=0.9)
    views = np.stack([upright, upright, turned, upright])[:, None]
    assert pick_views(views)[1].tolist() == [0]
    not_surer = np.stack([person(*DOWN, peak=0.6), upright, person(*DOWN, peak=0.5), upright])[:, None]
    assert pick_views(not_surer)[1].tolist() == [0]


def test_each_person_gets_their_own_view_at_the_tolerance_border():
    # hips → shoulders 66.8° clockwise of up: not upright in view 0 (60° tolerance); 23.2° from view 1's up
    lying = person((15, 8), (8, 11), peak=0.3)
    leaning = person((14, 5), (8, 8), peak=0.3)  # 63.4° — the same, just past the border
    slightly = person((13, 5), (8, 8), peak=0.3)  # 59.0°: upright enough, stays
    views = np.stack([np.stack([lying, leaning, slightly]),
                      np.stack([person((15, 8), (8, 11), peak=0.8)] * 3),
                      np.zeros((3, K, SIZE, SIZE), np.float32), np.zeros((3, K, SIZE, SIZE), np.float32)])
    heatmaps, chosen = pick_views(views)
    assert chosen.tolist() == [1, 1, 0]
    np.testing.assert_array_equal(heatmaps[2], slightly)
    assert pick_views(views, tolerance_deg=70.0)[1].tolist() == [0, 0, 0]


def test_no_crops_make_no_views():
    assert turned_crops(np.zeros((0, SIZE, SIZE, 3), np.uint8)).shape == (0, SIZE, SIZE, 3)
    views = turned_back(np.zeros((0, K, 4, 4), np.float32))
    assert views.shape == (4, 0, K, 4, 4)
    heatmaps, chosen = pick_views(views)
    assert heatmaps.shape == (0, K, 4, 4) and chosen.shape == (0,)
