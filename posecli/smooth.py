"""Temporal smoothing of tracked keypoints: One-Euro (streaming) and Savitzky–Golay (look-ahead).

* :class:`OneEuroFilter` — Casiez, Roussel & Vogel, CHI 2012, "1€ Filter: A Simple Speed-based
  Low-pass Filter for Noisy Input in Interactive Systems". An exponential low-pass whose cutoff
  rises with the signal's speed: strong smoothing when a joint is still (jitter), little lag when
  it moves. Causal, time-aware (uses the frame timestamps, so variable frame rates are fine) and
  confidence-aware (an unsure joint does not move the filter; its last estimate is held).
* :func:`savgol_smooth` — Savitzky–Golay (local polynomial least squares) over a whole track,
  after filling short gaps by linear interpolation (long gaps stay missing) and, optionally, a
  running median that drops short outliers (a joint jumping to the wrong place for a few frames).
* :class:`PoseSmoother` — what the pipeline uses: ``push(result)`` / ``flush()`` over the stream
  of :class:`~posecli.types.FrameResult`, per track id. One-Euro answers each frame at once.
  Savitzky–Golay needs future frames, but only a bounded number: its output at frame t depends on
  the track within ``window + median // 2 + max_gap - 1`` frames of t, so the smoother holds
  that many frames back (images included) plus the keypoints of a few more, never the whole
  video, and its output equals :func:`savgol_smooth` run on each complete track.

:func:`jitter` measures what the smoothers remove.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from functools import lru_cache

import numpy as np
from scipy.signal import savgol_coeffs

from .errors import PoseCliError
from .types import FrameResult, Poses

KINDS = ("none", "oneeuro", "savgol")
_FALLBACK_DT = 1.0 / 30.0  # used when timestamps do not increase (unknown frame rate)
_FORGET_AFTER_S = 10.0  # a One-Euro state unused this long belongs to a finished track


def _alpha(cutoff: np.ndarray, dt: np.ndarray) -> np.ndarray:
    """Smoothing factor of a first-order low-pass with ``cutoff`` Hz sampled every ``dt`` s."""
    tau = 1.0 / (2.0 * np.pi * cutoff)
    return 1.0 / (1.0 + tau / dt)


class OneEuroFilter:
    """One-Euro filter over arrays of points ``[..., D]``, each point with its own state.

    The cutoff of point i is ``min_cutoff + beta · |v̂_i| / scale``, with ``v̂`` the low-passed
    velocity (``d_cutoff``) in units per second and ``|·|`` the Euclidean norm over D, so x and y
    of a joint share one cutoff (isotropic). ``scale`` makes ``beta`` independent of the image
    size: pass the person's height in pixels and ``beta`` is in "body heights per second".

    Args:
        min_cutoff: cutoff (Hz) at rest; lower = smoother when still.
        beta: speed coefficient; higher = less lag in fast motion.
        d_cutoff: cutoff (Hz) of the velocity estimate.
        score_threshold: points whose score is below this do not update the filter; their last
            estimate is returned (held) until a confident observation comes.
    """

    def __init__(self, min_cutoff: float = 1.0, beta: float = 0.0, d_cutoff: float = 1.0,
                 score_threshold: float = 0.3) -> None:
        if min_cutoff <= 0 or d_cutoff <= 0 or beta < 0:
            raise ValueError("min_cutoff and d_cutoff must be > 0 and beta >= 0")
        self.min_cutoff, self.beta, self.d_cutoff = min_cutoff, beta, d_cutoff
        self.score_threshold = score_threshold
        self._x: np.ndarray | None = None  # [..., D] last estimate
        self._dx: np.ndarray | None = None  # [..., D] last velocity estimate
        self._t: np.ndarray | None = None  # [...] time of each point's last update

    def reset(self) -> None:
        self._x = self._dx = self._t = None

    def __call__(self, x: np.ndarray, t: float, scores: np.ndarray | None = None,
                 scale: float = 1.0) -> np.ndarray:
        """Filter one sample.

        Args:
            x: ``[..., D]`` the new observation.
            t: its time in seconds.
            scores: ``[...]`` per-point confidences, or None (all confident).
            scale: divides the speed before ``beta`` (see the class docstring).

        Returns:
            float64 ``[..., D]`` filtered points (a new array).
        """
        x = np.asarray(x, np.float64)
        if self._x is None or self._x.shape != x.shape:
            # First sample (or a different shape): start from it, even where unsure, because
            # there is nothing better to hold.
            self._x, self._dx = x.copy(), np.zeros_like(x)
            self._t = np.full(x.shape[:-1], float(t))
            return x.copy()
        update = np.isfinite(x).all(axis=-1)
        if scores is not None:
            update &= np.asarray(scores) >= self.score_threshold
        dt = float(t) - self._t
        dt = np.where(dt > 0, dt, _FALLBACK_DT)[..., None]
        dx = (x - self._x) / dt
        dx_hat = self._dx + _alpha(self.d_cutoff, dt) * (dx - self._dx)
        speed = np.linalg.norm(dx_hat, axis=-1, keepdims=True) / max(float(scale), 1e-9)
        cutoff = self.min_cutoff + self.beta * speed
        x_hat = self._x + _alpha(cutoff, dt) * (x - self._x)
        # A point that has no finite estimate yet (it started as NaN) starts from this sample.
        fresh = (~np.isfinite(self._x).all(axis=-1) & np.isfinite(x).all(axis=-1))[..., None]
        x_hat = np.where(fresh, x, x_hat)
        dx_hat = np.where(fresh, 0.0, dx_hat)
        update |= fresh[..., 0]
        self._x = np.where(update[..., None], x_hat, self._x)
        self._dx = np.where(update[..., None], dx_hat, self._dx)
        self._t = np.where(update, float(t), self._t)
        return self._x.copy()


def savgol_smooth(track_xy: np.ndarray, scores: np.ndarray | None = None, window: int = 9,
                  polyorder: int = 2, max_gap: int = 5, score_threshold: float = 0.3,
                  median: int = 1) -> np.ndarray:
    """Savitzky–Golay smoothing of one track, with short gaps filled and outliers removed first.

    Per joint: samples that are missing (NaN, e.g. frames where the track was not seen) or unsure
    (score below ``score_threshold``) are gaps. Gaps of at most ``max_gap`` frames between two
    good samples are filled by linear interpolation; longer gaps, and the frames before the first
    and after the last good sample, stay NaN. Each remaining run of samples is filtered with
    ``scipy.signal.savgol_filter`` (``mode="interp"`` at the run's ends; runs shorter than
    ``window`` use the longest odd window that fits, and are left as they are when that is not
    above ``polyorder``). Before that, a running median of ``median`` frames (shortened
    symmetrically at the run's ends) removes short outliers: a pose model's errors are often not
    small noise but a joint jumping for a few frames to the wrong place (the other wrist, a
    neighbour's limb); a least-squares fit averages such a jump into its neighbours, making them
    wrong too, where a median drops it, and a median keeps monotonic motion and steps as they are.
    Time is the frame index: the samples are taken as equally spaced.
    The filter is applied as cached linear operators that compute exactly what
    ``savgol_filter`` computes, about 30× faster on these short runs, because the streaming
    smoother calls this for every tracked pose of every frame.

    Args:
        track_xy: ``[T, K, 2]`` positions, NaN where missing.
        scores: ``[T, K]`` confidences, or None (every finite sample is good).
        window: odd filter length in frames.
        polyorder: polynomial order, below ``window``.
        max_gap: longest gap (frames) that is filled.
        score_threshold: samples scored below this are gaps.
        median: odd running-median length in frames; 1 = none.

    Returns:
        float64 ``[T, K, 2]``, NaN where nothing could be estimated.
    """
    if window % 2 == 0 or window <= polyorder:
        raise ValueError("window must be odd and larger than polyorder")
    if median < 1 or median % 2 == 0:
        raise ValueError("median must be odd and >= 1")
    xy = np.asarray(track_xy, np.float64)
    num_t, num_k = xy.shape[:2]
    good = np.isfinite(xy).all(axis=-1)
    if scores is not None:
        good &= np.nan_to_num(np.asarray(scores, np.float64), nan=0.0) >= score_threshold
    out = np.full_like(xy, np.nan)
    # Joints with the same pattern of good samples (usually most of them: a missing frame hits
    # every joint) are filtered together as the columns of one [T, 2·J] array.
    groups: dict[bytes, list[int]] = {}
    for k in range(num_k):
        groups.setdefault(good[:, k].tobytes(), []).append(k)
    for joints in groups.values():
        idx = np.flatnonzero(good[:, joints[0]])
        if idx.size == 0:
            continue
        values = xy[:, joints].reshape(num_t, -1)
        filled = np.full_like(values, np.nan)
        span = np.arange(idx[0], idx[-1] + 1)
        right = np.minimum(np.searchsorted(idx, span), idx.size - 1)  # first good sample ≥ t
        left = np.where(idx[right] == span, right, right - 1)  # last good sample ≤ t
        gap = (idx[right] - idx[left]).astype(np.float64)
        weight = np.divide(span - idx[left], gap, out=np.zeros_like(gap), where=gap > 0)[:, None]
        filled[span] = (1.0 - weight) * values[idx[left]] + weight * values[idx[right]]
        for a, b in zip(idx[:-1], idx[1:]):
            if b - a - 1 > max_gap:
                filled[a + 1:b] = np.nan
        for start, stop in _runs(np.isfinite(filled[:, 0])):
            n = stop - start
            if median > 1:
                filled[start:stop] = _running_median(filled[start:stop], median)
            w = min(window, n if n % 2 else n - 1)
            if w > polyorder:
                filled[start:stop] = _savgol_run(filled[start:stop], w, polyorder)
        out[:, joints] = filled.reshape(num_t, len(joints), 2)
    return out


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """``[start, stop)`` of each run of True in a 1-D mask."""
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)))


def _running_median(seg: np.ndarray, length: int) -> np.ndarray:
    """Median of each sample's centred ``length`` neighbourhood for ``seg [n, D]``, per column.

    Near the ends the neighbourhood shrinks symmetrically (the end samples stay as they are), so
    that a steady motion is kept exactly there too.
    """
    n = len(seg)
    half = min(length // 2, (n - 1) // 2)
    out = seg.copy()
    if half == 0:
        return out
    windows = np.lib.stride_tricks.sliding_window_view(seg, 2 * half + 1, axis=0)  # [n-2h, D, 2h+1]
    out[half:n - half] = np.median(windows, axis=-1)
    for k in range(1, half):
        out[k] = np.median(seg[:2 * k + 1], axis=0)
        out[n - 1 - k] = np.median(seg[n - 1 - 2 * k:], axis=0)
    return out


@lru_cache(maxsize=64)
def _savgol_operators(window: int, polyorder: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Interior coefficients ``[w]`` and the ``[w//2, w]`` maps of the polynomial end fits."""
    half = window // 2
    coeffs = savgol_coeffs(window, polyorder, use="dot")
    vander = np.vander(np.arange(window, dtype=np.float64), polyorder + 1)
    fit = vander @ np.linalg.pinv(vander)  # least-squares polynomial through the w samples
    return coeffs, fit[:half], fit[window - half:]


def _savgol_run(seg: np.ndarray, window: int, polyorder: int) -> np.ndarray:
    """``savgol_filter(seg, window, polyorder, axis=0, mode="interp")`` for ``seg [n, D]``, n ≥ window."""
    coeffs, head, tail = _savgol_operators(window, polyorder)
    half = window // 2
    out = np.empty_like(seg)
    windows = np.lib.stride_tricks.sliding_window_view(seg, window, axis=0)  # [n-w+1, D, w]
    out[half:len(seg) - half] = windows @ coeffs
    out[:half] = head @ seg[:window]
    out[len(seg) - half:] = tail @ seg[-window:]
    return out


class PoseSmoother:
    """Smooths the keypoints of a stream of tracked frames, per track id.

    Usage (the same for every kind)::

        smoother = PoseSmoother("savgol")
        for result in results:
            for out in smoother.push(result):
                sink.write(out)
        for out in smoother.flush():
            sink.write(out)

    or ``for out in smoother.smooth(results): ...``. Frames come out in order, all of them,
    with the same poses (only ``keypoints_xy`` changes; scores, boxes and ids are kept). Poses
    without a track id pass unchanged. Unsure joints are held (One-Euro) or interpolated
    (Savitzky–Golay) but keep their low score, so consumers can still tell.

    Args:
        kind: "none", "oneeuro" or "savgol".
        min_cutoff, beta, d_cutoff: One-Euro parameters; ``beta`` is per body height (the box
            height), so defaults suit any resolution.
        window, polyorder, max_gap, median: Savitzky–Golay parameters, see :func:`savgol_smooth`.
        score_threshold: joints below it count as unsure.

    The defaults come from ``posecli eval-tracks --tune`` (the pose2sim clips other than
    MultiPerson_cam02, against their pseudo-labels): the most jitter removed without losing
    PCK@0.1 on any clip, checked on the held-out MultiPerson_cam02 and sports2d_demo. The
    Savitzky–Golay defaults remove over 90 % of the jitter there; One-Euro, being causal, cannot
    drop a joint's short jumps (it averages them in, and lags), so only a mild setting keeps PCK,
    and its ``beta`` must stay high for people who walk (the tuning clips barely show any).

    Memory and delay: "oneeuro" keeps a few numbers per live track and answers at once.
    "savgol" answers ``delay_frames = window + median // 2 + max_gap - 1`` frames late and holds
    those frames (with their images), plus the keypoints of as many earlier frames.
    """

    def __init__(self, kind: str = "none", *, min_cutoff: float = 3.0, beta: float = 30.0,
                 d_cutoff: float = 1.0, window: int = 5, polyorder: int = 1, max_gap: int = 5,
                 median: int = 9, score_threshold: float = 0.3) -> None:
        if kind not in KINDS:
            raise PoseCliError(f"unknown smoothing {kind!r}; choose one of {', '.join(KINDS)}")
        if kind == "savgol" and (window % 2 == 0 or window <= polyorder or max_gap < 0
                                 or median < 1 or median % 2 == 0):
            raise PoseCliError(f"Savitzky-Golay needs an odd window above the polynomial order, "
                               f"max_gap >= 0 and an odd median length, not window={window} "
                               f"polyorder={polyorder} max_gap={max_gap} median={median}")
        self.kind = kind
        self._euro_args = dict(min_cutoff=min_cutoff, beta=beta, d_cutoff=d_cutoff,
                               score_threshold=score_threshold)
        self._savgol_args = dict(window=window, polyorder=polyorder, max_gap=max_gap, median=median,
                                 score_threshold=score_threshold)
        self._filters: dict[int, tuple[OneEuroFilter, float]] = {}  # id → (filter, last time)
        # The output at frame t depends on the track within this many frames on either side: in
        # the worst case t opens a run whose first `window` samples are used by the end fit, the
        # median at the last of them looks `median // 2` samples further, and the last of those
        # sits in a gap whose far end must be seen to know the gap is short.
        reach = window + median // 2 + max_gap - 1
        self._future = reach if kind == "savgol" else 0
        self._past = reach
        self._pending: deque[FrameResult] = deque()
        # Keypoints of recent frames (emitted and pending): id → (xy [K,2], scores [K]).
        self._history: deque[dict[int, tuple[np.ndarray, np.ndarray]]] = deque()

    @property
    def savgol_args(self) -> dict:
        """The Savitzky–Golay settings (:func:`savgol_smooth` keyword arguments)."""
        return dict(self._savgol_args)

    @property
    def delay_frames(self) -> int:
        """How many frames :meth:`push` holds back before answering."""
        return self._future

    def push(self, result: FrameResult) -> list[FrameResult]:
        """Feed the next frame; returns the frames that are ready (possibly none)."""
        if self.kind == "none":
            return [result]
        if self.kind == "oneeuro":
            return [self._one_euro(result)]
        self._pending.append(result)
        self._history.append(_by_track(result.poses))
        if len(self._pending) > self._future:
            return [self._savgol_next()]
        return []

    def flush(self) -> list[FrameResult]:
        """End of stream: the frames still held back."""
        out = []
        while self._pending:
            out.append(self._savgol_next())
        self._history.clear()
        self._filters.clear()
        return out

    def smooth(self, results: Iterable[FrameResult]) -> Iterator[FrameResult]:
        """Generator form of :meth:`push` + :meth:`flush`."""
        for result in results:
            yield from self.push(result)
        yield from self.flush()

    def _one_euro(self, result: FrameResult) -> FrameResult:
        t = result.frame.time_s
        poses = result.poses
        self._filters = {i: (f, last) for i, (f, last) in self._filters.items()
                         if t - last <= _FORGET_AFTER_S}
        xy = poses.keypoints_xy.copy()
        for n, track_id in enumerate(poses.track_ids.tolist()):
            if track_id < 0:
                continue
            if track_id in self._filters:
                filt = self._filters[track_id][0]
            else:
                filt = OneEuroFilter(**self._euro_args)
            height = float(poses.boxes_xyxy[n, 3] - poses.boxes_xyxy[n, 1])
            xy[n] = filt(poses.keypoints_xy[n], t, poses.keypoint_scores[n], scale=max(height, 1.0))
            self._filters[track_id] = (filt, t)
        return FrameResult(result.frame, _with_keypoints(poses, xy))

    def _savgol_next(self) -> FrameResult:
        result = self._pending.popleft()
        centre = len(self._history) - 1 - len(self._pending)  # index of `result` in the history
        poses = result.poses
        xy = poses.keypoints_xy.copy()
        num_k = xy.shape[1]
        for n, track_id in enumerate(poses.track_ids.tolist()):
            if track_id < 0:
                continue
            track = np.full((len(self._history), num_k, 2), np.nan)
            scores = np.zeros((len(self._history), num_k))
            for i, frame in enumerate(self._history):
                if track_id in frame:
                    track[i], scores[i] = frame[track_id]
            smoothed = savgol_smooth(track, scores, **self._savgol_args)[centre]
            ok = np.isfinite(smoothed).all(axis=-1)
            xy[n, ok] = smoothed[ok]
        while len(self._history) - len(self._pending) > self._past:
            self._history.popleft()
        return FrameResult(result.frame, _with_keypoints(poses, xy))


def _by_track(poses: Poses) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    out: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for n, track_id in enumerate(poses.track_ids.tolist()):
        if track_id >= 0 and track_id not in out:
            out[track_id] = (poses.keypoints_xy[n], poses.keypoint_scores[n])
    return out


def _with_keypoints(poses: Poses, xy: np.ndarray) -> Poses:
    return Poses(poses.boxes_xyxy, poses.box_scores, xy.astype(np.float32), poses.keypoint_scores,
                 poses.track_ids)
