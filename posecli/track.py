"""Stable person ids across frames: pose-aware Hungarian tracking with lost-track re-identification.

Each frame's poses are matched to the tracks' *predicted* poses (constant-velocity motion of the
box centre, its velocity fitted over the last ``velocity_window`` frames, and of the joints) by
a similarity that mixes OKS (COCO keypoint similarity, scaled by the box area) with box IoU; the
assignment is Hungarian (``scipy.optimize.linear_sum_assignment``) and pairs below the gates are
never matched. Matching is a two-stage cascade, as in DeepSORT:
tracks seen in the previous frame are served first, then tracks that were lost for up to
``max_age`` frames compete for the remaining poses, compared both with their motion prediction and
with their last seen pose (a person who stops behind an occluder is found where they were last
seen, one who keeps walking where the motion model says). Remaining poses start new tracks; ids
start at 1, increase, and are never reused.

Ages are counted in calls to :meth:`PoseTracker.update`, so the caller must call it for every
frame, also frames without poses.

Dropping short tracks (false positives that live one or two frames) needs to know a track's
future, so it is not done online: :func:`drop_short_tracks` is a buffered post-filter over the
stream of :class:`~posecli.types.FrameResult` (see its docstring for its memory).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment

from .types import COCO_SIGMAS, FrameResult, Poses

_INADMISSIBLE = 1e6  # cost of a pair that fails the gates; never accepted after the assignment
# Where a lost track is looked for, as fractions of its constant-velocity displacement: where it
# was last seen (a person who stopped behind an occluder) and where the motion model says (one
# who kept walking).
_LOST_MOTION = (0.0, 1.0)


@dataclass
class _Track:
    track_id: int
    box: np.ndarray  # [4] float64, last observed
    keypoints: np.ndarray  # [K, 2] float64, last observed
    scores: np.ndarray  # [K] float64, last observed
    centre_velocity: np.ndarray  # [2] px per frame
    keypoint_velocity: np.ndarray  # [K, 2] px per frame
    last_frame: int  # tracker frame count of the last observation
    hits: int = 1
    centres: deque = field(default_factory=deque)  # (frame, box centre [2]) of recent observations

    def predict(self, frame: int, motion: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
        """Box ``[4]`` and keypoints ``[K, 2]`` extrapolated to ``frame``.

        The whole body moves with the box centre's velocity, scaled by ``motion`` (1 = constant
        velocity, 0 = stays where last seen); each joint's own motion relative to the body is
        applied for one frame at most, because limbs swing back and forth and a constant-velocity
        limb over a long occlusion drifts off.
        """
        dt = frame - self.last_frame
        shift = self.centre_velocity * dt * motion
        relative = (self.keypoint_velocity - self.centre_velocity) * min(dt, 1) * motion
        return self.box + np.tile(shift, 2), self.keypoints + shift + relative


def box_centre(box_xyxy: np.ndarray) -> np.ndarray:
    """Centre ``[..., 2]`` of xyxy boxes ``[..., 4]`` (float64)."""
    box = np.asarray(box_xyxy, np.float64)
    return 0.5 * (box[..., :2] + box[..., 2:])


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU ``[A, B]`` of xyxy boxes ``a [A, 4]`` and ``b [B, 4]``."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0.0, None), axis=-1)
    area_a = np.prod(np.clip(a[:, 2:] - a[:, :2], 0.0, None), axis=-1)
    area_b = np.prod(np.clip(b[:, 2:] - b[:, :2], 0.0, None), axis=-1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def pose_oks(xy_a: np.ndarray, scores_a: np.ndarray, boxes_a: np.ndarray,
             xy_b: np.ndarray, scores_b: np.ndarray, boxes_b: np.ndarray,
             keypoint_threshold: float = 0.3, sigmas: np.ndarray = COCO_SIGMAS) -> np.ndarray:
    """Object keypoint similarity ``[A, B]`` between two sets of poses.

    COCO's OKS, ``mean_j exp(-d_j² / (2 s² (2σ_j)²))``, averaged over the joints that are
    confident (score ≥ ``keypoint_threshold``) in both poses; the scale ``s²`` is the mean box
    area of the pair (COCO uses the segment area, which a tracker does not have). Pairs without
    a common confident joint get 0.

    Args:
        xy_a, xy_b: ``[A, K, 2]`` and ``[B, K, 2]`` keypoints.
        scores_a, scores_b: ``[A, K]`` and ``[B, K]`` keypoint scores.
        boxes_a, boxes_b: ``[A, 4]`` and ``[B, 4]`` xyxy boxes.
    """
    d2 = np.sum((xy_a[:, None] - xy_b[None, :]) ** 2, axis=-1)  # [A, B, K]
    area_a = np.prod(np.clip(boxes_a[:, 2:] - boxes_a[:, :2], 1.0, None), axis=-1)
    area_b = np.prod(np.clip(boxes_b[:, 2:] - boxes_b[:, :2], 1.0, None), axis=-1)
    area = 0.5 * (area_a[:, None] + area_b[None, :])  # [A, B]
    var = (2.0 * np.asarray(sigmas, np.float64)) ** 2  # [K]
    sim = np.exp(-d2 / (2.0 * area[..., None] * var))
    visible = (scores_a[:, None] >= keypoint_threshold) & (scores_b[None, :] >= keypoint_threshold)
    visible &= np.isfinite(d2)
    count = visible.sum(axis=-1)
    total = np.where(visible, sim, 0.0).sum(axis=-1)
    return np.divide(total, count, out=np.zeros(count.shape, np.float64), where=count > 0)


class PoseTracker:
    """Assigns stable ``track_ids`` to the poses of consecutive frames.

    Args:
        max_age: frames a track may go unseen ("lost") and still be re-identified: a person
            missing from ``max_age`` consecutive frames keeps the id, one more and it is gone.
        oks_threshold: a pose may join a track if their OKS reaches this …
        iou_threshold: … or if their boxes' IoU reaches this (for poses whose joints are too
            unsure for OKS).
        iou_weight: weight of box IoU in the matching similarity ``(1-w)·OKS + w·IoU``.
        keypoint_threshold: joints below this score are left out of OKS and of joint velocities.
        velocity_smoothing: weight of the newest joint velocity in its running average (1 = last
            displacement only).
        velocity_window: the body (box centre) velocity is the least-squares slope of the
            centre over the observations of the last ``velocity_window`` frames: a detector box
            wobbles with the limbs, and one frame's displacement, extrapolated over a long
            occlusion, would send the prediction far off.
    """

    def __init__(self, max_age: int = 30, oks_threshold: float = 0.3, iou_weight: float = 0.3,
                 iou_threshold: float = 0.3,
                 keypoint_threshold: float = 0.3, velocity_smoothing: float = 0.5,
                 velocity_window: int = 10) -> None:
        if max_age < 0:
            raise ValueError("max_age must be >= 0")
        if not 0.0 <= iou_weight <= 1.0:
            raise ValueError("iou_weight must be in [0, 1]")
        if not 0.0 < velocity_smoothing <= 1.0:
            raise ValueError("velocity_smoothing must be in (0, 1]")
        if velocity_window < 1:
            raise ValueError("velocity_window must be >= 1")
        self.max_age = max_age
        self.oks_threshold = oks_threshold
        self.iou_threshold = iou_threshold
        self.iou_weight = iou_weight
        self.keypoint_threshold = keypoint_threshold
        self.velocity_smoothing = velocity_smoothing
        self.velocity_window = velocity_window
        self._tracks: list[_Track] = []
        self._next_id = 1
        self._frame = -1

    def reset(self) -> None:
        """Forget all tracks (a new video); ids keep increasing so they stay unique."""
        self._tracks = []
        self._frame = -1

    def update(self, poses: Poses) -> Poses:
        """Match this frame's poses to the tracks.

        Args:
            poses: the frame's poses (any ``track_ids`` they carry are ignored).

        Returns:
            The same poses, in the same order, with ``track_ids`` filled (all ≥ 1).
        """
        self._frame += 1
        frame = self._frame
        # A track may miss up to max_age frames: frame - last_frame - 1 <= max_age.
        self._tracks = [t for t in self._tracks if frame - t.last_frame <= self.max_age + 1]
        n = len(poses)
        ids = np.full((n,), -1, np.int64)
        boxes = poses.boxes_xyxy.astype(np.float64)
        xy = poses.keypoints_xy.astype(np.float64)
        scores = poses.keypoint_scores.astype(np.float64)

        free = np.arange(n)
        recent = [t for t in self._tracks if t.last_frame == frame - 1]
        lost = [t for t in self._tracks if t.last_frame < frame - 1]
        for stage, tracks in enumerate((recent, lost)):
            if not tracks or free.size == 0:
                continue
            sim, admissible = self._similarity(tracks, frame, boxes[free], xy[free], scores[free],
                                               lost=stage == 1)
            rows, cols = linear_sum_assignment(np.where(admissible, -sim, _INADMISSIBLE))
            matched = []
            for r, c in zip(rows, cols):
                if admissible[r, c]:
                    det = free[c]
                    self._observe(tracks[r], frame, boxes[det], xy[det], scores[det])
                    ids[det] = tracks[r].track_id
                    matched.append(c)
            free = np.delete(free, matched)

        for det in free:
            track = _Track(self._next_id, boxes[det].copy(), xy[det].copy(), scores[det].copy(),
                           np.zeros(2), np.zeros_like(xy[det]), frame)
            track.centres.append((frame, box_centre(boxes[det])))
            self._tracks.append(track)
            ids[det] = track.track_id
            self._next_id += 1
        return poses.with_track_ids(ids)

    def _similarity(self, tracks: list[_Track], frame: int, boxes: np.ndarray, xy: np.ndarray,
                    scores: np.ndarray, lost: bool) -> tuple[np.ndarray, np.ndarray]:
        """Similarity ``[T, D]`` of tracks and poses, and which pairs pass the gates.

        Each track is compared at each of its predictions ``motions`` (fractions of the
        constant-velocity displacement, see :meth:`_Track.predict`); the best one counts.
        """
        candidates = []
        for motion in _LOST_MOTION if lost else (1.0,):
            predicted = [t.predict(frame, motion) for t in tracks]
            candidates.append((np.stack([p[0] for p in predicted]), np.stack([p[1] for p in predicted])))
        track_scores = np.stack([t.scores for t in tracks])
        best_sim = best_oks = best_iou = None
        for t_boxes, t_xy in candidates:
            oks = pose_oks(t_xy, track_scores, t_boxes, xy, scores, boxes, self.keypoint_threshold)
            iou = box_iou(t_boxes, boxes)
            sim = (1.0 - self.iou_weight) * oks + self.iou_weight * iou
            if best_sim is None:
                best_sim, best_oks, best_iou = sim, oks, iou
            else:
                better = sim > best_sim
                best_sim = np.where(better, sim, best_sim)
                best_oks = np.where(better, oks, best_oks)
                best_iou = np.where(better, iou, best_iou)
        admissible = (best_oks >= self.oks_threshold) | (best_iou >= self.iou_threshold)
        return np.nan_to_num(best_sim), admissible

    def _observe(self, track: _Track, frame: int, box: np.ndarray, xy: np.ndarray,
                 scores: np.ndarray) -> None:
        dt = frame - track.last_frame
        centre = box_centre(box)
        track.centres.append((frame, centre))
        while track.centres[0][0] < frame - self.velocity_window:
            track.centres.popleft()
        if len(track.centres) < 2:  # back after a gap longer than the window: last displacement
            track.centres.appendleft((track.last_frame, box_centre(track.box)))
        frames = np.array([f for f, _ in track.centres], np.float64)
        points = np.stack([c for _, c in track.centres])
        frames -= frames.mean()
        track.centre_velocity = frames @ (points - points.mean(axis=0)) / (frames @ frames)
        # Joints unsure in either observation move with the body instead of on their own.
        sure = (scores >= self.keypoint_threshold) & (track.scores >= self.keypoint_threshold)
        joint_vel = np.where(sure[:, None], (xy - track.keypoints) / dt, track.centre_velocity)
        a = 1.0 if track.hits == 1 else self.velocity_smoothing
        track.keypoint_velocity = a * joint_vel + (1.0 - a) * track.keypoint_velocity
        track.box, track.keypoints, track.scores = box.copy(), xy.copy(), scores.copy()
        track.last_frame = frame
        track.hits += 1


def drop_short_tracks(results: Iterable[FrameResult], min_len: int,
                      max_age: int | None = 30) -> Iterator[FrameResult]:
    """Remove the poses of tracks seen in fewer than ``min_len`` frames (a buffered post-filter).

    Works on a list or on a live iterator: a frame is yielded as soon as every track in it is
    decided, i.e. has reached ``min_len`` observations (kept) or cannot grow any more (dropped):
    missing from more than ``max_age`` consecutive frames, after which :class:`PoseTracker` has
    deleted it, or the stream ended. Poses without a track (id -1) pass unchanged. Frames keep their order and
    none is removed, only poses.

    Memory: the pending frames, images included. Usually that is about ``min_len`` frames; a
    short-lived false positive holds the output back ``max_age + 1`` frames; the worst case, a
    track seen once every ``max_age`` frames, ``min_len · (max_age + 1)``. ``max_age=None`` means
    "tracks may come back any time" and holds everything until the end (offline use).

    Args:
        results: frames with tracked poses, in order, one per :meth:`PoseTracker.update` call.
        min_len: minimum number of frames a kept track appears in; ≤ 1 disables the filter.
        max_age: the tracker's ``max_age``.
    """
    if min_len <= 1:
        yield from results
        return
    pending: deque[FrameResult] = deque()
    counts: dict[int, int] = {}
    last_seen: dict[int, int] = {}
    keep: set[int] = set()
    drop: set[int] = set()

    def emit(result: FrameResult) -> FrameResult:
        ids = result.poses.track_ids
        mask = np.array([i < 0 or int(i) in keep for i in ids], bool)
        if mask.all():
            return result
        return FrameResult(result.frame, result.poses.select(mask))

    def decided(result: FrameResult) -> bool:
        return all(i < 0 or int(i) in keep or int(i) in drop for i in result.poses.track_ids)

    for position, result in enumerate(results):
        pending.append(result)
        for i in result.poses.track_ids:
            i = int(i)
            if i < 0 or i in keep or i in drop:
                continue
            counts[i] = counts.get(i, 0) + 1
            last_seen[i] = position
            if counts[i] >= min_len:
                keep.add(i)
                del counts[i], last_seen[i]
        if max_age is not None:
            for i in [i for i, seen in last_seen.items() if position - seen > max_age]:
                drop.add(i)
                del counts[i], last_seen[i]
        while pending and decided(pending[0]):
            yield emit(pending.popleft())
    drop.update(counts)
    while pending:
        yield emit(pending.popleft())
