"""Quarter-turn views of still-image crops: people lying down, upside down or on their side.

MoveNet's layers, and the model on them, were trained on mostly upright people; on LSP-Extended
(gymnastics, parkour) a third of the persons are upside down or lying, and there they score far
lower. A square crop turned by 90°, 180° or 270° is the same pixels rearranged (no resampling), and
so are the heatmaps turned back, so the model can look at each crop four ways and keep the view
that shows the person upright. Joints keep their names under a turn (it is not a mirror).

The pick is per person and asks two things of a view: does its decode look upright (the line from
the hips' midpoint to the shoulders' points within ``UPRIGHT_TOLERANCE_DEG`` of that view's up), and
how sure is it (the mean over joints of each heatmap's peak). The upright view is kept where it
looks upright; elsewhere the surest turned view that looks upright replaces it if it is surer than
the upright one. Confidence alone is not enough: an upright person in a COCO photo often scores
about as high turned. Chosen on training data only (400 LSP-Extended training persons, coco-mini
train; ground-truth boxes; PCK@0.2 / mean OKS per person): kept upright 0.842 / 0.807 and
0.770 / 0.565; this rule 0.868 / 0.832 and 0.770 / 0.565 (1 % of coco-mini's persons turned); the
surest view with a 0.05 margin 0.869 / 0.833 and 0.769 / 0.565 but 3.5 % turned, and on held-out
small-eval it cost 0.03 OKS AP; tolerances of 45–60° were alike, 30° and 75° worse.
"""

from __future__ import annotations

import numpy as np

QUARTER_TURNS = (0, 1, 2, 3)  # anticlockwise quarter turns of each view; 0 = as cropped
UPRIGHT_TOLERANCE_DEG = 60.0  # a decode "looks upright" within this angle of its view's up
# COCO joints whose midpoints make the body axis.
SHOULDERS, HIPS = (5, 6), (11, 12)


def turned_crops(crops: np.ndarray) -> np.ndarray:
    """Every crop in every quarter turn.

    Args:
        crops: [N, S, S, C] square crops.

    Returns:
        [len(QUARTER_TURNS) · N, S, S, C], turn-major: rows ``i·N … i·N + N − 1`` are turned by
        ``QUARTER_TURNS[i]``.
    """
    crops = np.asarray(crops)
    if crops.ndim != 4 or crops.shape[1] != crops.shape[2]:
        raise ValueError(f"quarter turns need square crops [N, S, S, C], got {crops.shape}")
    return np.ascontiguousarray(np.concatenate([np.rot90(crops, k, axes=(1, 2)) for k in QUARTER_TURNS]))


def turned_back(heatmaps: np.ndarray) -> np.ndarray:
    """Heatmaps of :func:`turned_crops` in the upright crop's pixels.

    Args:
        heatmaps: [len(QUARTER_TURNS) · N, K, s, s], turn-major as the crops were.

    Returns:
        [len(QUARTER_TURNS), N, K, s, s].
    """
    heatmaps = np.asarray(heatmaps)
    views = heatmaps.reshape(len(QUARTER_TURNS), len(heatmaps) // len(QUARTER_TURNS), *heatmaps.shape[1:])
    return np.stack([np.rot90(view, -k, axes=(2, 3)) for view, k in zip(views, QUARTER_TURNS)])


def view_up_angles(views: np.ndarray) -> np.ndarray:
    """How far each view's decode is from looking upright in that view.

    Args:
        views: [V, N, K, h, w] heatmaps in the upright crop's pixels, view ``i`` turned by
            ``QUARTER_TURNS[i]`` when the model saw it.

    Returns:
        [V, N] degrees (0 … 180) between the view's up and the line from the hips' midpoint to the
        shoulders' (heatmap argmax positions). A view turned anticlockwise by k quarter turns shows
        a line that points k · 90° clockwise of up in the upright crop as pointing up.
    """
    v, n, k, h, w = views.shape
    flat = views.reshape(v, n, k, h * w).argmax(-1)
    y, x = np.divmod(flat, w)
    axis_x = x[..., SHOULDERS].mean(-1) - x[..., HIPS].mean(-1)
    axis_y = y[..., SHOULDERS].mean(-1) - y[..., HIPS].mean(-1)
    clockwise_from_up = np.degrees(np.arctan2(axis_x, -axis_y))  # image y points down
    turns = 90.0 * np.asarray(QUARTER_TURNS[:v], np.float64)[:, None]
    return np.abs((clockwise_from_up - turns + 180.0) % 360.0 - 180.0)


def pick_views(views: np.ndarray, tolerance_deg: float = UPRIGHT_TOLERANCE_DEG) -> tuple[np.ndarray, np.ndarray]:
    """Per person, the upright view, unless its decode does not look upright: then the surest turned
    view whose decode does, if it is surer than the upright one.

    Args:
        views: [V, N, K, h, w] heatmaps of V views in the same crop's pixels, view 0 upright
            (:func:`turned_back`).
        tolerance_deg: see :func:`view_up_angles`.

    Returns:
        heatmaps [N, K, h, w] and the chosen view's index [N].
    """
    v, n, k, h, w = views.shape
    confidence = views.reshape(v, n, k, h * w).max(-1).mean(-1)  # [V, N]
    upright = view_up_angles(views) <= tolerance_deg
    candidates = np.where(upright, confidence, -np.inf)
    best = candidates.argmax(0)
    people = np.arange(n)
    best = np.where(~upright[0] & (candidates[best, people] > confidence[0]), best, 0)
    return views[best, people], best
