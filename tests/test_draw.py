"""Skeleton drawing: a left/right swap must be visible in the overlay."""

import numpy as np

from posecli.draw import draw_poses, side_colours, track_colour
from posecli.types import COCO_FLIP_INDEX, COCO_KEYPOINTS, Poses

LEFT_ELBOW, LEFT_WRIST = COCO_KEYPOINTS.index("left_elbow"), COCO_KEYPOINTS.index("left_wrist")
RIGHT_ELBOW, RIGHT_WRIST = COCO_KEYPOINTS.index("right_elbow"), COCO_KEYPOINTS.index("right_wrist")


def _forearms(flip: bool = False) -> Poses:
    """Only the two forearms are sure: the left one on row 300, the right one on row 900."""
    xy = np.full((1, 17, 2), 1400.0, np.float32)
    scores = np.full((1, 17), 0.05, np.float32)
    xy[0, LEFT_ELBOW], xy[0, LEFT_WRIST] = (200.0, 300.0), (1000.0, 300.0)
    xy[0, RIGHT_ELBOW], xy[0, RIGHT_WRIST] = (200.0, 900.0), (1000.0, 900.0)
    scores[0, [LEFT_ELBOW, LEFT_WRIST, RIGHT_ELBOW, RIGHT_WRIST]] = 0.9
    if flip:  # the same image positions with the left/right labels swapped
        xy, scores = xy[:, COCO_FLIP_INDEX], scores[:, COCO_FLIP_INDEX]
    return Poses(np.array([[1400.0, 1000.0, 1430.0, 1070.0]], np.float32), np.ones(1, np.float32), xy, scores,
                 np.array([2], np.int64))


def test_left_and_right_limbs_have_different_colours_that_follow_the_labels():
    image = np.zeros((1080, 1440, 3), np.uint8)  # lines 4 px thick: their middle is not blended
    colours = side_colours(track_colour(2))
    assert len({colours["left"], colours["centre"], colours["right"]}) == 3
    out = draw_poses(image, _forearms())
    assert tuple(out[300, 600]) == colours["left"] and tuple(out[900, 600]) == colours["right"]
    swapped = draw_poses(image, _forearms(flip=True))
    assert tuple(swapped[300, 600]) == colours["right"] and tuple(swapped[900, 600]) == colours["left"]


def test_side_colours_stay_in_range_for_extreme_track_colours():
    for colour in [(0, 0, 0), (255, 255, 255), (255, 0, 128)]:
        variants = side_colours(colour)
        assert variants["centre"] == colour
        assert all(0 <= v <= 255 for c in variants.values() for v in c)
