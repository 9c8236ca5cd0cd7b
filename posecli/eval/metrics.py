"""Pose metrics: COCO OKS AP (pycocotools), PCK per joint group, temporal jitter.

Pure functions on arrays, so each can be checked by hand. Conventions:
    * Keypoint order is COCO-17 (``types.COCO_KEYPOINTS``).
    * The size of a person is ``sqrt(w·h)`` of its box, for PCK and jitter alike (the same
      normaliser the data README uses for its "normalised error" tables).
    * A joint counts for PCK only where the reference labels it (``labelled`` true: COCO ``v > 0``,
      or a pseudo-label confidence at or above a threshold).
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence

import numpy as np

JOINT_GROUPS: dict[str, tuple[int, ...]] = {
    "head": (0, 1, 2, 3, 4),
    "shoulders": (5, 6),
    "elbows": (7, 8),
    "wrists": (9, 10),
    "hips": (11, 12),
    "knees": (13, 14),
    "ankles": (15, 16),
}
PCK_THRESHOLDS: tuple[float, ...] = (0.1, 0.2)
# Names of COCOeval.stats for iouType "keypoints", in order.
OKS_STAT_NAMES: tuple[str, ...] = ("AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl")


def box_size(boxes_xywh: np.ndarray) -> np.ndarray:
    """Person size ``sqrt(w·h)`` of boxes ``[..., 4]`` (x, y, w, h) → ``[...]`` float64."""
    boxes = np.asarray(boxes_xywh, np.float64)
    return np.sqrt(np.clip(boxes[..., 2], 0.0, None) * np.clip(boxes[..., 3], 0.0, None))


def pck(pred_xy: np.ndarray, gt_xy: np.ndarray, labelled: np.ndarray, size: np.ndarray,
        thresholds: Sequence[float] = PCK_THRESHOLDS) -> dict:
    """Percentage of correct keypoints, overall and per joint group.

    A labelled joint is correct when ``|pred - gt| <= threshold * size`` of its person.

    Args:
        pred_xy: N×K×2 predicted positions (pixels).
        gt_xy: N×K×2 reference positions (pixels).
        labelled: N×K bool, which reference joints count.
        size: N person sizes (pixels), e.g. :func:`box_size`.
        thresholds: fractions of the size.

    Returns:
        ``{"pck@0.1": {"overall": f, "head": f, ...}, ..., "joints": {"overall": n, "head": n, ...}}``
        where a group without labelled joints has ``None`` (JSON null) instead of a fraction.
    """
    pred = np.asarray(pred_xy, np.float64)
    gt = np.asarray(gt_xy, np.float64)
    mask = np.asarray(labelled, bool)
    sizes = np.asarray(size, np.float64)
    if pred.shape != gt.shape or mask.shape != pred.shape[:2] or sizes.shape != pred.shape[:1]:
        raise ValueError(f"pck: shapes {pred.shape}, {gt.shape}, {mask.shape}, {sizes.shape} do not agree")
    num_k = pred.shape[1]
    groups = {"overall": tuple(range(num_k))}
    groups.update({name: idx for name, idx in JOINT_GROUPS.items() if max(idx) < num_k})
    # Distances in units of person size; a zero size only happens for degenerate boxes, where no
    # prediction can be judged, so those persons' joints are left out.
    with np.errstate(divide="ignore", invalid="ignore"):
        dist = np.linalg.norm(pred - gt, axis=-1) / sizes[:, None]
    mask = mask & (sizes[:, None] > 0)
    out: dict = {}
    for thr in thresholds:
        correct = (dist <= thr) & mask
        out[f"pck@{thr:g}"] = {
            name: _fraction(correct[:, idx].sum(), mask[:, idx].sum()) for name, idx in groups.items()
        }
    out["joints"] = {name: int(mask[:, idx].sum()) for name, idx in groups.items()}
    return out


def _fraction(numerator: float, denominator: float) -> float | None:
    return float(numerator) / float(denominator) if denominator > 0 else None


def oks_metrics(coco_gt, results: list[dict], image_ids: Sequence[int] | None = None) -> dict[str, float]:
    """COCO keypoint AP/AR with pycocotools' ``COCOeval`` (iouType "keypoints", COCO-17 sigmas).

    Args:
        coco_gt: a ``pycocotools.coco.COCO`` of the ground truth.
        results: COCO result dicts ``{"image_id", "category_id": 1, "keypoints": [x, y, s] * 17,
            "score"}``.
        image_ids: images to evaluate (default: all images of ``coco_gt``).

    Returns:
        ``{"AP": ..., "AP50": ..., "AP75": ..., "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl"}``;
        values of -1 (pycocotools' "no ground truth in this range") are returned as ``None``.
    """
    from pycocotools.cocoeval import COCOeval

    if not results:
        return {name: 0.0 for name in OKS_STAT_NAMES}
    # pycocotools prints progress to stdout; library code must stay quiet.
    with contextlib.redirect_stdout(io.StringIO()):
        coco_dt = coco_gt.loadRes(results)
        evaluator = COCOeval(coco_gt, coco_dt, iouType="keypoints")
        if image_ids is not None:
            evaluator.params.imgIds = sorted(int(i) for i in image_ids)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return {name: (None if value < 0 else float(value))
            for name, value in zip(OKS_STAT_NAMES, evaluator.stats)}


# Left/right keypoint pairs whose spread shows limb collapse (both legs or arms on one chain).
LEFT_RIGHT_PAIRS: dict[str, tuple[int, int]] = {"ankles": (15, 16), "wrists": (9, 10)}


def left_right_spread(keypoints_xy: np.ndarray, size: np.ndarray) -> dict[str, dict[str, float]]:
    """Quartiles of the left–right distance of ankles and wrists over box size.

    A model whose legs (or arms) collapse into one chain puts both ankles (wrists) on the same
    point: its quartiles drop towards 0 while a model that tells the limbs apart keeps them at the
    people's real stance.

    Args:
        keypoints_xy: [N, 17, 2] predictions.
        size: [N] box sizes (sqrt(w·h)).

    Returns:
        ``{"ankles": {"p25", "p50", "p75"}, "wrists": {...}}``.
    """
    xy = np.asarray(keypoints_xy, np.float64)
    sizes = np.maximum(np.asarray(size, np.float64), 1e-9)
    out = {}
    for name, (left, right) in LEFT_RIGHT_PAIRS.items():
        spread = np.linalg.norm(xy[:, left] - xy[:, right], axis=1) / sizes
        p25, p50, p75 = (np.percentile(spread, q) for q in (25, 50, 75)) if len(spread) else (np.nan,) * 3
        out[name] = {"p25": float(p25), "p50": float(p50), "p75": float(p75)}
    return out


def second_differences(keypoints_xy: np.ndarray, frame_index: np.ndarray, size: np.ndarray,
                       valid: np.ndarray | None = None) -> np.ndarray:
    """Normalised second differences of one track: the values jitter averages.

    For every frame ``t`` of the track whose neighbours ``t-1`` and ``t+1`` are also in the track,
    and every joint valid in all three frames, ``|x_{t+1} - 2 x_t + x_{t-1}| / size_t`` (Euclidean
    norm of the 2-vector, size of the middle frame's person). A joint moving at constant velocity
    scores 0; high-frequency wobble scores high.

    Args:
        keypoints_xy: F×K×2 positions of one track, one row per frame it appears in.
        frame_index: F frame numbers of those rows (any order, no repeats).
        size: F person sizes (pixels) in those frames.
        valid: F×K bool, joints to use (default: all).

    Returns:
        1-D float64 array, one value per (frame triple, joint).
    """
    xy = np.asarray(keypoints_xy, np.float64)
    frames = np.asarray(frame_index, np.int64)
    sizes = np.asarray(size, np.float64)
    ok = np.ones(xy.shape[:2], bool) if valid is None else np.asarray(valid, bool)
    if frames.shape != xy.shape[:1] or sizes.shape != frames.shape or ok.shape != xy.shape[:2]:
        raise ValueError("second_differences: keypoints_xy, frame_index, size, valid do not agree")
    order = np.argsort(frames, kind="stable")
    xy, frames, sizes, ok = xy[order], frames[order], sizes[order], ok[order]
    if len(frames) < 3:
        return np.zeros((0,), np.float64)
    # Middle rows m whose previous and next rows are exactly one frame away.
    middle = np.nonzero((frames[1:-1] - frames[:-2] == 1) & (frames[2:] - frames[1:-1] == 1))[0] + 1
    if len(middle) == 0:
        return np.zeros((0,), np.float64)
    accel = xy[middle + 1] - 2.0 * xy[middle] + xy[middle - 1]
    values = np.linalg.norm(accel, axis=-1) / sizes[middle, None]
    use = ok[middle - 1] & ok[middle] & ok[middle + 1] & (sizes[middle, None] > 0)
    return values[use]


def jitter(tracks: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]]) -> dict:
    """Mean normalised second difference over all tracks (see :func:`second_differences`).

    Args:
        tracks: per track ``(keypoints_xy F×K×2, frame_index F, size F, valid F×K or None)``.

    Returns:
        ``{"jitter": mean, "jitter_median": median, "triples": number of values}``; the statistics
        are ``None`` when no triple exists. The mean is the headline; the median shows how much of
        it comes from a few failures (a joint jumping to another person for a frame).
    """
    values = [second_differences(*track) for track in tracks]
    flat = np.concatenate(values) if values else np.zeros((0,), np.float64)
    if len(flat) == 0:
        return {"jitter": None, "jitter_median": None, "triples": 0}
    return {"jitter": float(flat.mean()), "jitter_median": float(np.median(flat)), "triples": int(len(flat))}


def jitter_by_track(keypoints_xy: np.ndarray, track_ids: np.ndarray, frame_index: np.ndarray, size: np.ndarray,
                    valid: np.ndarray, use: np.ndarray | None = None) -> dict:
    """:func:`jitter` of rows of several tracks (one row per person and frame), grouped by track.

    Args:
        keypoints_xy: R×K×2 positions.
        track_ids: R track ids.
        frame_index: R frame numbers.
        size: R person sizes (pixels).
        valid: R×K bool, joints to use.
        use: R bool, rows to include (default: all).
    """
    ids = np.asarray(track_ids)
    keep = np.ones(len(ids), bool) if use is None else np.asarray(use, bool)
    xy, frames, sizes, ok = (np.asarray(a) for a in (keypoints_xy, frame_index, size, valid))
    tracks = []
    for track in dict.fromkeys(ids[keep].tolist()):
        rows = np.nonzero(keep & (ids == track))[0]
        tracks.append((xy[rows], frames[rows], sizes[rows], ok[rows]))
    return jitter(tracks)
