"""Tracking and smoothing measured against the tracked pseudo-labels of the shared clips.

Two questions, answered on the ``*.pseudo.json`` clips (``../shared/data/videos``):

* **Tracking** — does a person keep one id? CLEAR-MOT (MOTA, MOTP), IDF1 and identity switches
  with ``motmetrics``. Ground truth = the pseudo-label tracks, without ``static_track`` ones (the
  skeleton model on a stand in the pose2sim clips): a hypothesis on such a static object is
  ignored (neither a hit nor a false positive), as distractors are in MOT17. Hypotheses are
  matched to ground truth by box IoU ≥ 0.5 (``match="iou"``) or by OKS ≥ 0.5 against the
  pseudo-label keypoints (``match="oks"``).
* **Smoothing** — does a smoother cut jitter without losing accuracy? PCK@0.1/0.2 and the mean
  normalised error against the pseudo-label keypoints, and jitter (mean normalised second
  difference, :func:`posecli.eval.metrics.jitter`) of the output tracks, raw vs smoothed.

The pose model is the slow part (CPU), so each clip's *untracked* poses
(:meth:`posecli.pipeline.Pipeline.untracked`) are computed once and cached
(:func:`load_or_compute`, keyed by the weights' sha256); every tracker and smoother variant then
runs on the cache in well under a second.

The "before" tracker is :class:`IouTracker`: Hungarian assignment on box IoU against each track's
last box, no motion model, no pose similarity, no memory of lost tracks (``max_age=0``) — what a
minimal tracker does. "After" is :class:`posecli.track.PoseTracker`.
"""

from __future__ import annotations

import logging
import pickle
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.optimize import linear_sum_assignment

from posecli.errors import PoseCliError
from posecli.eval.metrics import jitter, pck
from posecli.pseudo_labels import read_pseudo_labels
from posecli.smooth import PoseSmoother
from posecli.track import PoseTracker, box_iou, drop_short_tracks
from posecli.types import COCO_SIGMAS, Frame, FrameResult, Poses

log = logging.getLogger(__name__)

CACHE_FORMAT = "posecli-trackeval-cache/1"
PSEUDO_CONFIDENCE = 0.3  # pseudo-label joints at or above this count (PCK, jitter, OKS matching)
MATCH_THRESHOLD = 0.5  # least IoU (or OKS) for a hypothesis to cover a ground-truth person
# Clips the smoothing parameters may be tuned on; the others are held out for the report.
TUNING_CLIPS = ("pose2sim_MultiPerson_cam01", "pose2sim_SinglePerson_cam01", "pose2sim_SinglePerson_cam02")
EVALUATION_CLIPS = ("pose2sim_MultiPerson_cam02", "sports2d_demo")
MOT_METRICS = ("mota", "motp", "idf1", "idp", "idr", "num_switches", "num_fragmentations",
               "num_false_positives", "num_misses", "num_objects", "num_unique_objects",
               "mostly_tracked", "precision", "recall")
# Stands in for a frame's image: trackers and smoothers never look at it.
_BLANK = np.zeros((1, 1, 3), np.uint8)


# --------------------------------------------------------------------------------------------
# Ground truth


@dataclass(frozen=True)
class FrameTruth:
    """Pseudo-label persons of one frame: ``track_ids [G]``, ``boxes_xyxy [G, 4]``,
    ``keypoints [G, K, 3]`` (x, y, confidence)."""

    track_ids: np.ndarray
    boxes_xyxy: np.ndarray
    keypoints: np.ndarray

    @staticmethod
    def empty(num_keypoints: int = 17) -> "FrameTruth":
        return FrameTruth(np.zeros((0,), np.int64), np.zeros((0, 4)), np.zeros((0, num_keypoints, 3)))


@dataclass(frozen=True)
class ClipTruth:
    """A clip's ground-truth tracks.

    Attributes:
        name: the clip's stem.
        fps: frame rate.
        frames: one :class:`FrameTruth` per frame index (``num_frames`` of them).
        ignore_boxes_xyxy: ``[M, 4]`` boxes of static tracks (all frames): hypotheses there are
            left out of the tracking metrics.
    """

    name: str
    fps: float
    frames: tuple[FrameTruth, ...]
    ignore_boxes_xyxy: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)))

    @property
    def num_frames(self) -> int:
        return len(self.frames)


def load_truth(pseudo_file: str | Path, merge: Mapping[int, int] | None = None) -> ClipTruth:
    """Read a ``*.pseudo.json`` clip as ground-truth tracks.

    Args:
        pseudo_file: COCO-video pseudo-label file (see ``shared/data/README.md``).
        merge: optional ``{track_id: new_id}`` renaming, to join tracks known to be one person
            (e.g. the pieces of a track the labelling tracker split).

    Raises:
        PoseCliError: the file is missing or not a pseudo-label file.
    """
    labels = read_pseudo_labels(pseudo_file)
    merge = dict(merge or {})
    by_frame = labels.by_frame()
    frames = []
    for t in range(labels.num_frames):
        persons = by_frame.get(t, [])
        if not persons:
            frames.append(FrameTruth.empty())
            continue
        ids = np.array([merge.get(p.track_id, p.track_id) for p in persons], np.int64)
        frames.append(FrameTruth(ids, np.stack([p.box_xyxy for p in persons]),
                                 np.stack([p.keypoints for p in persons])))
    ignore = [p.box_xyxy for p in labels.persons if p.static]
    return ClipTruth(labels.path.name.split(".")[0], labels.fps, tuple(frames),
                     np.stack(ignore) if ignore else np.zeros((0, 4)))


# --------------------------------------------------------------------------------------------
# Untracked poses, computed once per clip


@dataclass(frozen=True)
class CachedClip:
    """A clip's untracked poses: ``times_s [F]`` and one :class:`Poses` per decoded frame."""

    video: str
    model: str
    weights_sha256: str
    times_s: np.ndarray
    poses: tuple[Poses, ...]

    def results(self) -> list[FrameResult]:
        """The poses as a stream of frames (blank images) for trackers and smoothers."""
        return [FrameResult(Frame(i, float(t), _BLANK), p)
                for i, (t, p) in enumerate(zip(self.times_s, self.poses))]


def truth_as_clip(truth: ClipTruth) -> CachedClip:
    """The ground truth itself as untracked poses (ids dropped; confidences as scores, box score 1).

    Tracking these checks a tracker and the metrics without any pose model.
    """
    poses = []
    for frame in truth.frames:
        n = len(frame.track_ids)
        poses.append(Poses(frame.boxes_xyxy.astype(np.float32), np.ones((n,), np.float32),
                           frame.keypoints[..., :2].astype(np.float32),
                           frame.keypoints[..., 2].astype(np.float32)))
    return CachedClip(truth.name, "pseudo-labels", "", np.arange(truth.num_frames) / truth.fps, tuple(poses))


def compute_untracked(video: str | Path, config) -> CachedClip:  # noqa: ANN001 - PipelineConfig
    """Run the pose pipeline without tracking on every frame of ``video``.

    Args:
        video: video file.
        config: a :class:`posecli.config.PipelineConfig` (weights, device, detector or boxes).
    """
    from posecli.pipeline import Pipeline
    from posecli.video import open_source

    pipeline = Pipeline(config)
    times, poses = [], []
    with open_source(video) as source:
        for result in pipeline.untracked(source):
            times.append(result.frame.time_s)
            poses.append(result.poses)
    return CachedClip(str(video), pipeline.model_info.name, pipeline.model_info.sha256,
                      np.asarray(times, np.float64), tuple(poses))


def _cache_payload(clip: CachedClip) -> dict:
    return {"format": CACHE_FORMAT, "video": clip.video, "model": clip.model,
            "weights_sha256": clip.weights_sha256, "times_s": clip.times_s,
            "poses": [(p.boxes_xyxy, p.box_scores, p.keypoints_xy, p.keypoint_scores) for p in clip.poses]}


def save_cache(clip: CachedClip, path: str | Path) -> None:
    """Pickle a :class:`CachedClip` (plain numpy arrays only), atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        pickle.dump(_cache_payload(clip), f, protocol=pickle.HIGHEST_PROTOCOL)
    tmp.replace(path)


def load_cache(path: str | Path) -> CachedClip:
    """Read a cache written by :func:`save_cache` (a file this tool wrote: pickle is trusted here)."""
    with open(path, "rb") as f:
        data = pickle.load(f)
    if not isinstance(data, dict) or data.get("format") != CACHE_FORMAT:
        raise PoseCliError(f"{path}: not a {CACHE_FORMAT} file")
    poses = tuple(Poses(*arrays) for arrays in data["poses"])
    return CachedClip(data["video"], data["model"], data["weights_sha256"], np.asarray(data["times_s"]), poses)


def load_or_compute(video: str | Path, config, cache_dir: str | Path) -> CachedClip:  # noqa: ANN001
    """The cached untracked poses of ``video`` for the weights in ``config``; computed if missing.

    The cache file is ``<cache_dir>/<video stem>.<weights sha256[:12]>[.boxes].pkl``, so a new
    checkpoint gets new files.
    """
    from posecli import weights as weights_lib
    from posecli.models.loading import DEFAULT_POSE_WEIGHTS

    weights = config.weights if config.weights is not None else weights_lib.resolve(DEFAULT_POSE_WEIGHTS)
    if not Path(weights).is_file():
        raise PoseCliError(f"weights file not found: {weights}")
    digest = weights_lib.sha256_file(weights)[:12]
    suffix = ".boxes" if config.boxes_file is not None else ""
    path = Path(cache_dir) / f"{Path(video).stem}.{digest}{suffix}.pkl"
    if path.is_file():
        return load_cache(path)
    log.info("computing untracked poses of %s (cache %s)", video, path)
    clip = compute_untracked(video, config)
    save_cache(clip, path)
    return clip


def occlude(clip: CachedClip, truth: ClipTruth, miss_rate: float = 0.1, burst: int = 10,
            seed: int = 0) -> CachedClip:
    """A harder copy of a clip: detections removed as if missed or occluded.

    Each ground-truth person loses its pose in a frame with probability ``miss_rate``; besides,
    every ground-truth track at least ``3 · burst`` frames long loses it for ``burst`` consecutive
    frames at a random place (a person walking behind something). Poses are tied to persons by
    box IoU ≥ 0.5; other poses (static objects, false positives) are kept. The random choices
    depend on the ground truth and ``seed`` only, so every model's poses get the same occlusions.
    The ground truth is unchanged: the removed poses count as misses for every tracker alike, and
    what differs between trackers is whether a person keeps the id afterwards.
    """
    rng = np.random.default_rng(seed)
    hidden: set[tuple[int, int]] = set()  # (frame, track id)
    spans: dict[int, list[int]] = defaultdict(list)
    for t, frame in enumerate(truth.frames):
        for i in frame.track_ids.tolist():
            spans[i].append(t)
    for track_id, frames in sorted(spans.items()):
        hidden.update((t, track_id) for t, r in zip(frames, rng.random(len(frames))) if r < miss_rate)
        if burst > 0 and len(frames) >= 3 * burst:
            start = int(rng.integers(burst, len(frames) - 2 * burst + 1))
            hidden.update((t, track_id) for t in frames[start:start + burst])
    poses = []
    for t, p in enumerate(clip.poses):
        keep = np.ones((len(p),), bool)
        if t < truth.num_frames:
            for g, d in matched_pairs(truth.frames[t], p):
                if (t, int(truth.frames[t].track_ids[g])) in hidden:
                    keep[d] = False
        poses.append(p.select(keep))
    return CachedClip(clip.video, clip.model, clip.weights_sha256, clip.times_s, tuple(poses))


def subsample(truth: ClipTruth, clip: CachedClip, step: int) -> tuple[ClipTruth, CachedClip]:
    """Every ``step``-th frame of a clip and its ground truth (a lower frame rate; times kept)."""
    if step == 1:
        return truth, clip
    return (ClipTruth(f"{truth.name}@1/{step}", truth.fps / step, truth.frames[::step], truth.ignore_boxes_xyxy),
            CachedClip(clip.video, clip.model, clip.weights_sha256, clip.times_s[::step], clip.poses[::step]))


# --------------------------------------------------------------------------------------------
# The baseline tracker


class IouTracker:
    """The plain baseline: Hungarian assignment on box IoU against each track's last box.

    No motion model, no pose similarity and, with the default ``max_age=0``, no re-identification:
    a person missed for one frame comes back with a new id. Same interface as
    :class:`posecli.track.PoseTracker` (``update(poses) -> poses`` with ``track_ids``).

    Args:
        iou_threshold: least IoU for a match.
        max_age: frames a track may be missed and still be matched (0 = none).
    """

    def __init__(self, iou_threshold: float = 0.3, max_age: int = 0) -> None:
        self.iou_threshold = iou_threshold
        self.max_age = max_age
        self._boxes: dict[int, np.ndarray] = {}  # id → last box
        self._last: dict[int, int] = {}  # id → frame last seen
        self._next_id = 1
        self._frame = -1

    def update(self, poses: Poses) -> Poses:
        self._frame += 1
        for i in [i for i, seen in self._last.items() if self._frame - seen > self.max_age + 1]:
            del self._boxes[i], self._last[i]
        ids = np.full((len(poses),), -1, np.int64)
        track_ids = list(self._boxes)
        if track_ids and len(poses):
            iou = box_iou(np.stack([self._boxes[i] for i in track_ids]), poses.boxes_xyxy)
            for r, c in zip(*linear_sum_assignment(-iou)):
                if iou[r, c] >= self.iou_threshold:
                    ids[c] = track_ids[r]
        for c in np.flatnonzero(ids < 0):
            ids[c] = self._next_id
            self._next_id += 1
        for c, i in enumerate(ids.tolist()):
            self._boxes[i] = poses.boxes_xyxy[c].astype(np.float64)
            self._last[i] = self._frame
        return poses.with_track_ids(ids)


TrackerFactory = Callable[[], "IouTracker | PoseTracker"]


def track_clip(clip: CachedClip, make_tracker: TrackerFactory, min_track_length: int = 1) -> list[FrameResult]:
    """Track a cached clip with a fresh tracker; optionally drop tracks shorter than ``min_track_length``."""
    tracker = make_tracker()
    stream = (FrameResult(r.frame, tracker.update(r.poses)) for r in clip.results())
    return list(drop_short_tracks(stream, min_track_length, max_age=getattr(tracker, "max_age", None)))


# --------------------------------------------------------------------------------------------
# Matching hypotheses to ground truth


def oks_to_truth(truth_kp: np.ndarray, truth_boxes: np.ndarray, pred_xy: np.ndarray,
                 confidence: float = PSEUDO_CONFIDENCE, sigmas: np.ndarray = COCO_SIGMAS) -> np.ndarray:
    """OKS ``[G, P]`` of predictions against reference poses, COCO style.

    Joints count where the reference confidence is at least ``confidence``; the scale ``s²`` is
    the reference box area (the pseudo-labels have no segment area). A reference without such a
    joint has OKS 0 with everything.

    Args:
        truth_kp: ``[G, K, 3]`` reference (x, y, confidence).
        truth_boxes: ``[G, 4]`` reference xyxy boxes.
        pred_xy: ``[P, K, 2]`` predicted keypoints.
    """
    truth_kp = np.asarray(truth_kp, np.float64)
    d2 = np.sum((truth_kp[:, None, :, :2] - np.asarray(pred_xy, np.float64)[None]) ** 2, axis=-1)  # [G, P, K]
    area = np.prod(np.clip(truth_boxes[:, 2:] - truth_boxes[:, :2], 1.0, None), axis=-1)  # [G]
    sim = np.exp(-d2 / (2.0 * area[:, None, None] * (2.0 * np.asarray(sigmas)) ** 2))
    valid = truth_kp[:, None, :, 2] >= confidence  # [G, 1, K]
    count = valid.sum(axis=-1)
    total = np.where(valid, sim, 0.0).sum(axis=-1)
    return np.divide(total, count, out=np.zeros(total.shape), where=count > 0)


def similarity_to_truth(truth: FrameTruth, poses: Poses, match: str = "iou") -> np.ndarray:
    """Similarity ``[G, P]`` of a frame's ground truth and hypotheses: box IoU or OKS."""
    if match == "iou":
        return box_iou(truth.boxes_xyxy, poses.boxes_xyxy)
    if match == "oks":
        return oks_to_truth(truth.keypoints, truth.boxes_xyxy, poses.keypoints_xy)
    raise PoseCliError(f"match must be 'iou' or 'oks', not {match!r}")


def _ignored(clip: ClipTruth, truth: FrameTruth, poses: Poses, sim: np.ndarray,
             threshold: float) -> np.ndarray:
    """``[P]`` hypotheses on a static object (and on no person): left out of the metrics."""
    if len(clip.ignore_boxes_xyxy) == 0 or len(poses) == 0:
        return np.zeros((len(poses),), bool)
    on_static = (box_iou(poses.boxes_xyxy, clip.ignore_boxes_xyxy) >= MATCH_THRESHOLD).any(axis=1)
    on_person = (sim >= threshold).any(axis=0) if len(truth.track_ids) else np.zeros((len(poses),), bool)
    return on_static & ~on_person


def mot_metrics(truth: ClipTruth, tracked: Sequence[FrameResult], match: str = "iou",
                threshold: float = MATCH_THRESHOLD) -> dict:
    """CLEAR-MOT and identity metrics of tracked poses against the ground-truth tracks.

    Args:
        truth: ground truth (static tracks already left out, see :func:`load_truth`).
        tracked: one result per frame, in order, with ``track_ids``.
        match: "iou" (box IoU) or "oks" (keypoint similarity) for hypothesis-truth pairs.
        threshold: least similarity of a pair that may be matched.

    Returns:
        ``{name: value}`` for :data:`MOT_METRICS` (motmetrics' names; ``motp`` is the mean
        ``1 − similarity`` of the matched pairs) plus ``ignored`` (hypotheses on static objects).
    """
    import motmetrics as mm

    acc = mm.MOTAccumulator(auto_id=False)
    ignored = 0
    for t, frame_truth in enumerate(truth.frames):
        poses = tracked[t].poses if t < len(tracked) else Poses.empty()
        sim = (similarity_to_truth(frame_truth, poses, match) if len(poses)
               else np.zeros((len(frame_truth.track_ids), 0)))
        keep = ~_ignored(truth, frame_truth, poses, sim, threshold)
        ignored += int((~keep).sum())
        sim = sim[:, keep]
        dist = np.where(sim >= threshold, 1.0 - sim, np.nan)
        acc.update(frame_truth.track_ids.tolist(), poses.track_ids[keep].tolist(), dist, frameid=t)
    summary = mm.metrics.create().compute(acc, metrics=list(MOT_METRICS), name="clip")
    out = {name: _plain(summary[name].iloc[0]) for name in MOT_METRICS}
    out["ignored"] = ignored
    return out


def _plain(value) -> float | int | None:  # noqa: ANN001 - numpy scalar
    value = value.item() if hasattr(value, "item") else value
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def matched_pairs(truth: FrameTruth, poses: Poses, threshold: float = MATCH_THRESHOLD) -> list[tuple[int, int]]:
    """``(truth row, pose row)`` pairs of one frame: Hungarian on box IoU, pairs with IoU ≥ ``threshold``."""
    if len(truth.track_ids) == 0 or len(poses) == 0:
        return []
    iou = box_iou(truth.boxes_xyxy, poses.boxes_xyxy)
    return [(g, p) for g, p in zip(*linear_sum_assignment(-iou)) if iou[g, p] >= threshold]


# --------------------------------------------------------------------------------------------
# Accuracy and jitter of (smoothed) tracks


def pose_metrics(truth: ClipTruth, tracked: Sequence[FrameResult],
                 confidence: float = PSEUDO_CONFIDENCE) -> dict:
    """PCK, mean normalised error and jitter of tracked poses against the pseudo-labels.

    Each frame's hypotheses are paired with ground-truth persons by box IoU ≥ 0.5. Joints count
    where the pseudo-label confidence is at least ``confidence``; the person size is ``sqrt(w·h)``
    of the pseudo-label box (as in :mod:`posecli.eval.metrics`). Jitter is taken along each run of
    frames where one ground-truth person is covered by one hypothesis track, so an id switch never
    counts as motion.

    Returns:
        ``{"pck@0.1", "pck@0.2", "mean_error" (normalised), "jitter", "jitter_median",
        "reference_jitter" (the pseudo-labels' own, same joints), "persons", "joints"}``.
    """
    pred, ref, valid, size, frames, keys = [], [], [], [], [], []
    for t, frame_truth in enumerate(truth.frames):
        if t >= len(tracked):
            break
        poses = tracked[t].poses
        for g, p in matched_pairs(frame_truth, poses):
            box = frame_truth.boxes_xyxy[g]
            pred.append(poses.keypoints_xy[p])
            ref.append(frame_truth.keypoints[g])
            valid.append(frame_truth.keypoints[g, :, 2] >= confidence)
            size.append(np.sqrt(max(box[2] - box[0], 0.0) * max(box[3] - box[1], 0.0)))
            frames.append(t)
            keys.append((int(frame_truth.track_ids[g]), int(poses.track_ids[p])))
    if not pred:
        return {"pck@0.1": None, "pck@0.2": None, "mean_error": None, "jitter": None, "jitter_median": None,
                "reference_jitter": None, "persons": 0, "joints": 0}
    pred_a, ref_a = np.asarray(pred, np.float64), np.asarray(ref, np.float64)
    valid_a, size_a, frames_a = np.asarray(valid), np.asarray(size), np.asarray(frames)
    scores = pck(pred_a, ref_a[..., :2], valid_a, size_a)
    error = np.linalg.norm(pred_a - ref_a[..., :2], axis=-1) / size_a[:, None]
    groups: dict[tuple[int, int], list[int]] = defaultdict(list)
    for row, key in enumerate(keys):
        groups[key].append(row)
    rows = [np.asarray(v) for v in groups.values()]
    moved = jitter([(pred_a[r], frames_a[r], size_a[r], valid_a[r]) for r in rows])
    reference = jitter([(ref_a[r, :, :2], frames_a[r], size_a[r], valid_a[r]) for r in rows])
    return {"pck@0.1": scores["pck@0.1"]["overall"], "pck@0.2": scores["pck@0.2"]["overall"],
            "mean_error": float(error[valid_a].mean()) if valid_a.any() else None,
            "jitter": moved["jitter"], "jitter_median": moved["jitter_median"],
            "reference_jitter": reference["jitter"], "persons": len(pred), "joints": int(valid_a.sum())}


def smooth_clip(tracked: Iterable[FrameResult], kind: str, **params) -> list[FrameResult]:  # noqa: ANN003
    """Tracked frames through :class:`posecli.smooth.PoseSmoother` (``kind`` and its parameters)."""
    return list(PoseSmoother(kind, **params).smooth(tracked))


# --------------------------------------------------------------------------------------------
# Tuning the smoothers


ONE_EURO_GRID = {"min_cutoff": (0.3, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0),
                 "beta": (0.0, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0)}
SAVGOL_GRID = {"window": (5, 7, 9, 11, 13, 15, 17, 21), "polyorder": (1, 2, 3), "median": (1, 3, 5, 7, 9)}


def _grid(spec: Mapping[str, Sequence]) -> list[dict]:
    combos: list[dict] = [{}]
    for name, values in spec.items():
        combos = [{**c, name: v} for c in combos for v in values]
    return combos


def pooled_pose_metrics(truths: Sequence[ClipTruth], tracked: Sequence[Sequence[FrameResult]], kind: str,
                        **params) -> dict:  # noqa: ANN003
    """:func:`pose_metrics` of several clips smoothed alike: the mean over clips (each clip counts
    once) of ``pck@0.1``, ``pck@0.2``, ``mean_error`` and ``jitter``, and under ``"clips"`` the
    per-clip values."""
    keys = ("pck@0.1", "pck@0.2", "mean_error", "jitter")
    per_clip = [pose_metrics(t, smooth_clip(r, kind, **params)) for t, r in zip(truths, tracked)]
    per_clip = [{k: m[k] for k in keys} for m in per_clip if all(m[k] is not None for k in keys)]
    return {**{k: float(np.mean([m[k] for m in per_clip])) for k in keys}, "clips": per_clip}


def select_params(raw: Mapping, candidates: Sequence[tuple[dict, Mapping]],
                  max_pck_loss: float = 0.005, max_error_gain: float = 0.0) -> tuple[dict, Mapping]:
    """The smoothest candidate that loses no accuracy on any clip.

    A candidate qualifies when, on every clip, its PCK@0.1 is at least the raw one minus
    ``max_pck_loss`` (half a point by default: the pseudo-labels jitter themselves, so even a
    perfect smoother loses a little against them) and its mean error at most the raw one plus
    ``max_error_gain`` (relative); among those, the lowest mean jitter wins. When none
    qualifies, the one whose worst PCK@0.1 loss is smallest is returned.

    Args:
        raw: metrics without smoothing, as :func:`pooled_pose_metrics` gives them (``"clips"``:
            per-clip ``pck@0.1`` and ``mean_error``; without it the means are used as one clip).
        candidates: ``(params, metrics)`` pairs, metrics like ``raw``.
    """
    def clips(metrics: Mapping) -> Sequence[Mapping]:
        return metrics.get("clips") or [metrics]

    def worst_pck_loss(metrics: Mapping) -> float:
        return max(r["pck@0.1"] - m["pck@0.1"] for r, m in zip(clips(raw), clips(metrics)))

    def qualifies(metrics: Mapping) -> bool:
        return worst_pck_loss(metrics) <= max_pck_loss and all(
            m["mean_error"] <= r["mean_error"] * (1.0 + max_error_gain)
            for r, m in zip(clips(raw), clips(metrics)))

    ok = [c for c in candidates if qualifies(c[1])]
    if ok:
        return min(ok, key=lambda c: c[1]["jitter"])
    return min(candidates, key=lambda c: worst_pck_loss(c[1]))


def tune_smoothers(truths: Sequence[ClipTruth], tracked: Sequence[Sequence[FrameResult]],
                   one_euro_grid: Mapping[str, Sequence] = ONE_EURO_GRID,
                   savgol_grid: Mapping[str, Sequence] = SAVGOL_GRID) -> dict:
    """Grid-search One-Euro and Savitzky–Golay parameters on tuning clips (see :func:`select_params`).

    Returns:
        ``{"raw": metrics, "oneeuro": {"best": params, "metrics": ..., "grid": [...]},
        "savgol": {...}}``.
    """
    raw = pooled_pose_metrics(truths, tracked, "none")
    out: dict = {"raw": raw, "clips": [t.name for t in truths]}
    for kind, grid in (("oneeuro", one_euro_grid), ("savgol", savgol_grid)):
        candidates = [(params, pooled_pose_metrics(truths, tracked, kind, **params))
                      for params in _grid(grid) if kind != "savgol" or params["window"] > params["polyorder"]]
        best, metrics = select_params(raw, candidates)
        out[kind] = {"best": best, "metrics": {k: v for k, v in metrics.items() if k != "clips"},
                     "grid": [{**p, **{k: v for k, v in m.items() if k != "clips"}} for p, m in candidates]}
    return out


# --------------------------------------------------------------------------------------------
# The whole report


def default_tracker_variants() -> dict[str, TrackerFactory]:
    """Named tracker variants: the baseline ("before"), PoseTracker ("after") and some settings."""
    return {
        "iou baseline (max_age 0)": lambda: IouTracker(iou_threshold=0.3, max_age=0),
        "iou + max_age 30": lambda: IouTracker(iou_threshold=0.3, max_age=30),
        "PoseTracker (defaults)": PoseTracker,
        "PoseTracker max_age 0": lambda: PoseTracker(max_age=0),
        "PoseTracker max_age 10": lambda: PoseTracker(max_age=10),
        "PoseTracker max_age 60": lambda: PoseTracker(max_age=60),
        "PoseTracker oks 0.1": lambda: PoseTracker(oks_threshold=0.1),
        "PoseTracker oks 0.5": lambda: PoseTracker(oks_threshold=0.5),
        "PoseTracker oks 0.7": lambda: PoseTracker(oks_threshold=0.7),
    }


def evaluate_clip(truth: ClipTruth, clip: CachedClip, trackers: Mapping[str, TrackerFactory],
                  smoothers: Mapping[str, dict], match: str = "iou",
                  smoothing_tracker: TrackerFactory = PoseTracker) -> dict:
    """Tracking metrics per tracker variant, and pose metrics per smoother, for one clip.

    Args:
        truth: the clip's ground truth.
        clip: its cached untracked poses.
        trackers: name → tracker factory.
        smoothers: name → ``{"kind": ..., **params}`` for :class:`posecli.smooth.PoseSmoother`.
        match: "iou" or "oks" (tracking metrics).
        smoothing_tracker: the tracker whose tracks are smoothed.
    """
    if len(clip.poses) != truth.num_frames:
        log.warning("%s: %d decoded frames, %d labelled", truth.name, len(clip.poses), truth.num_frames)
    tracking = {name: mot_metrics(truth, track_clip(clip, factory), match=match)
                for name, factory in trackers.items()}
    tracked = track_clip(clip, smoothing_tracker)
    smoothing = {name: pose_metrics(truth, smooth_clip(tracked, **spec)) for name, spec in smoothers.items()}
    return {"clip": truth.name, "fps": truth.fps, "frames": truth.num_frames, "tracking": tracking,
            "smoothing": smoothing}


# Smoothers compared in the report: none, each kind with PoseSmoother's defaults, and the
# textbook settings (One-Euro 1 Hz / beta 1, plain 9-frame quadratic Savitzky–Golay) for reference.
DEFAULT_SMOOTHERS: dict[str, dict] = {
    "raw": {"kind": "none"},
    "oneeuro (defaults)": {"kind": "oneeuro"},
    "savgol (defaults)": {"kind": "savgol"},
    "oneeuro min_cutoff=1 beta=1": {"kind": "oneeuro", "min_cutoff": 1.0, "beta": 1.0},
    "savgol window=9 polyorder=2 median=1": {"kind": "savgol", "window": 9, "polyorder": 2, "median": 1},
}
# sports2d_demo: the person on the roof is one person whose labelled track the labelling tracker
# split into three (tracks 1, 2 and 4; gaps of 16 and 20 frames, see shared/data/README.md).
KNOWN_SPLITS: dict[str, dict[int, int]] = {"sports2d_demo": {2: 1, 4: 1}}


def stress_summary(clips: Sequence[tuple[ClipTruth, CachedClip]], trackers: Mapping[str, TrackerFactory],
                   bursts: Sequence[int] = (10, 20, 30), seeds: Sequence[int] = (0, 1, 2),
                   miss_rate: float = 0.1, match: str = "iou") -> dict:
    """Tracking under many simulated occlusions (:func:`occlude`), summed over clips, bursts, seeds.

    Returns:
        ``{tracker: {"runs", "num_switches" (total), "idf1" (mean), "mota" (mean)}}``.
    """
    totals = {name: {"runs": 0, "num_switches": 0, "idf1": 0.0, "mota": 0.0} for name in trackers}
    for truth, clip in clips:
        for burst in bursts:
            for seed in seeds:
                hard = occlude(clip, truth, miss_rate=miss_rate, burst=burst, seed=seed)
                for name, factory in trackers.items():
                    m = mot_metrics(truth, track_clip(hard, factory), match=match)
                    entry = totals[name]
                    entry["runs"] += 1
                    entry["num_switches"] += m["num_switches"]
                    entry["idf1"] += m["idf1"] or 0.0
                    entry["mota"] += m["mota"] or 0.0
    for entry in totals.values():
        entry["idf1"] /= max(entry["runs"], 1)
        entry["mota"] /= max(entry["runs"], 1)
    return {"bursts": list(bursts), "seeds": list(seeds), "miss_rate": miss_rate, "trackers": totals}


def run_report(videos_dir: str | Path, config, cache_dir: str | Path,  # noqa: ANN001 - PipelineConfig
               clips: Sequence[str] = EVALUATION_CLIPS + TUNING_CLIPS, match: str = "iou",
               miss_rate: float = 0.1, burst: int = 10, seed: int = 0, tune: bool = False,
               stress_seeds: int = 3, progress: Callable[[str], None] | None = None) -> dict:
    """Tracking (before/after, on the clips as they are and with simulated occlusions) and
    smoothing (raw vs One-Euro vs Savitzky–Golay) metrics for each clip.

    Args:
        videos_dir: folder with ``<clip>.mp4`` and ``<clip>.pseudo.json``.
        config: :class:`posecli.config.PipelineConfig` for the untracked poses (weights, device).
        cache_dir: where untracked poses are cached.
        clips: clip stems.
        match: "iou" or "oks" for the tracking metrics.
        miss_rate, burst, seed: the simulated occlusions (:func:`occlude`) of the per-clip table.
        stress_seeds: seeds of the summary over many occlusions (:func:`stress_summary`, bursts of
            10, 20 and 30 frames; with the known split tracks of the ground truth joined); 0 = none.
        tune: also grid-search the smoothers on the :data:`TUNING_CLIPS` among ``clips`` (each
            at its frame rate and at half of it, see :func:`subsample`), and report the tuned
            parameters next to the defaults.
        progress: called with a line of text before each slow step.

    Returns:
        ``{"weights", "match", "occlusion", "clips": {name: {...}}, "tuning": {...} | None,
        "stress": {...} | None}``.
    """
    videos_dir = Path(videos_dir)
    trackers = default_tracker_variants()
    smoothers = dict(DEFAULT_SMOOTHERS)
    loaded: dict[str, tuple[ClipTruth, CachedClip]] = {}
    for name in clips:
        video = videos_dir / f"{name}.mp4"
        if not video.is_file():
            raise PoseCliError(f"video not found: {video}")
        if progress is not None:
            progress(f"{name}: untracked poses")
        loaded[name] = (load_truth(videos_dir / f"{name}.pseudo.json"), load_or_compute(video, config, cache_dir))
    tuning = None
    tune_names = [n for n in clips if n in TUNING_CLIPS]
    if tune and tune_names:
        if progress is not None:
            progress(f"tuning smoothers on {', '.join(tune_names)}")
        # Every tuning clip also at half its frame rate: the tuning clips are all 60 fps, and a
        # window in frames that suits them is twice as long in time on 30 fps video.
        variants = [subsample(*loaded[n], step) for n in tune_names for step in (1, 2)]
        tuning = tune_smoothers([truth for truth, _ in variants],
                                [track_clip(clip, PoseTracker) for _, clip in variants])
        for kind in ("oneeuro", "savgol"):
            label = " ".join(f"{k}={v:g}" for k, v in tuning[kind]["best"].items())
            smoothers[f"{kind} tuned: {label}"] = {"kind": kind, **tuning[kind]["best"]}
    clip0 = next(iter(loaded.values()))[1] if loaded else None
    report: dict = {"weights": clip0.model if clip0 else None,
                    "weights_sha256": clip0.weights_sha256 if clip0 else None, "match": match,
                    "occlusion": {"miss_rate": miss_rate, "burst": burst, "seed": seed}, "clips": {},
                    "tuning": tuning}
    for name, (truth, clip) in loaded.items():
        if progress is not None:
            progress(f"{name}: tracking and smoothing")
        entry = evaluate_clip(truth, clip, trackers, smoothers, match=match)
        hard = occlude(clip, truth, miss_rate=miss_rate, burst=burst, seed=seed)
        entry["tracking_occluded"] = {n: mot_metrics(truth, track_clip(hard, f), match=match)
                                      for n, f in trackers.items()}
        if name in KNOWN_SPLITS:
            merged = load_truth(videos_dir / f"{name}.pseudo.json", merge=KNOWN_SPLITS[name])
            entry["tracking_merged_truth"] = {n: mot_metrics(merged, track_clip(clip, f), match=match)
                                              for n, f in trackers.items()}
        entry["role"] = "tuning" if name in TUNING_CLIPS else "evaluation"
        report["clips"][name] = entry
    report["stress"] = None
    if stress_seeds > 0:
        if progress is not None:
            progress("tracking under simulated occlusions")
        joined = [(load_truth(videos_dir / f"{name}.pseudo.json", merge=KNOWN_SPLITS.get(name)), clip)
                  for name, (_, clip) in loaded.items()]
        report["stress"] = stress_summary(joined, trackers, seeds=range(stress_seeds), miss_rate=miss_rate,
                                          match=match)
    return report


def _fmt(value, digits: int = 3) -> str:  # noqa: ANN001
    if value is None:
        return "–"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def render_report(report: dict) -> str:
    """Markdown tables of a :func:`run_report` result."""
    lines: list[str] = []
    sections = (("tracking", "clips as they are"),
                ("tracking_occluded", "with simulated occlusions (miss rate {miss_rate:g}, one {burst}-frame "
                                      "occlusion per track, seed {seed})"),
                ("tracking_merged_truth", "ground truth with the known split tracks joined"))
    for key, title in sections:
        rows = [(clip, name, m) for clip, entry in report["clips"].items()
                for name, m in entry.get(key, {}).items()]
        if not rows:
            continue
        lines += [f"### Tracking, {title.format(**report['occlusion'])} — match by {report['match']}", "",
                  "| clip | tracker | MOTA | IDF1 | IDsw | frag | FP | FN | GT ids | ignored |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        lines += [f"| {clip} | {name} | {_fmt(m['mota'])} | {_fmt(m['idf1'])} | {m['num_switches']} | "
                  f"{m['num_fragmentations']} | {m['num_false_positives']} | {m['num_misses']} | "
                  f"{m['num_unique_objects']} | {m['ignored']} |" for clip, name, m in rows]
        lines.append("")
    stress = report.get("stress")
    if stress:
        lines += [f"### Tracking under simulated occlusions, all clips × bursts {stress['bursts']} × "
                  f"{len(stress['seeds'])} seeds (miss rate {stress['miss_rate']:g})", "",
                  "| tracker | runs | IDsw (total) | mean IDF1 | mean MOTA |", "|---|---|---|---|---|"]
        lines += [f"| {name} | {m['runs']} | {m['num_switches']} | {_fmt(m['idf1'])} | {_fmt(m['mota'])} |"
                  for name, m in stress["trackers"].items()]
        lines.append("")
    lines += ["### Smoothing (PoseTracker tracks) — PCK and error vs pseudo-labels, jitter", "",
              "| clip | role | smoother | PCK@0.1 | PCK@0.2 | mean NE | jitter | jitter median | pseudo-label jitter |",
              "|---|---|---|---|---|---|---|---|---|"]
    for clip, entry in report["clips"].items():
        for name, m in entry["smoothing"].items():
            lines.append(f"| {clip} | {entry['role']} | {name} | {_fmt(m['pck@0.1'])} | {_fmt(m['pck@0.2'])} | "
                         f"{_fmt(m['mean_error'], 4)} | {_fmt(m['jitter'], 4)} | {_fmt(m['jitter_median'], 4)} | "
                         f"{_fmt(m['reference_jitter'], 4)} |")
    tuning = report.get("tuning")
    if tuning:
        lines += ["", f"Tuned on {', '.join(tuning['clips'])} (mean over clips): raw PCK@0.1 "
                      f"{_fmt(tuning['raw']['pck@0.1'])}, NE {_fmt(tuning['raw']['mean_error'], 4)}, "
                      f"jitter {_fmt(tuning['raw']['jitter'], 4)}"]
        for kind in ("oneeuro", "savgol"):
            m = tuning[kind]["metrics"]
            lines.append(f"- {kind}: {tuning[kind]['best']} → PCK@0.1 {_fmt(m['pck@0.1'])}, "
                         f"NE {_fmt(m['mean_error'], 4)}, jitter {_fmt(m['jitter'], 4)}")
    return "\n".join(lines) + "\n"
