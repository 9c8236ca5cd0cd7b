import numpy as np
import pytest

from posecli.errors import PoseCliError
from posecli.eval.metrics import jitter as tracks_jitter
from posecli.smooth import OneEuroFilter, PoseSmoother, savgol_smooth
from posecli.types import Frame, FrameResult, Poses

FPS = 30.0
IMAGE = np.zeros((8, 8, 3), np.uint8)


def jitter(track_xy, sizes):
    """Jitter of one gap-free track ``[T, K, 2]`` (NaN = missing), as ``posecli eval`` measures it."""
    xy = np.asarray(track_xy, np.float64)
    return tracks_jitter([(xy, np.arange(len(xy)), np.asarray(sizes, np.float64), np.isfinite(xy).all(-1))])["jitter"]


def step_trajectory(rng, frames=120, step_at=60, noise=2.0):
    """[T, 1, 2]: x jumps from 100 to 150 at ``step_at``, y stays at 200, plus noise."""
    truth = np.stack([np.where(np.arange(frames) < step_at, 100.0, 150.0), np.full(frames, 200.0)], 1)
    return truth[:, None], truth[:, None] + rng.normal(0.0, noise, (frames, 1, 2))


def test_one_euro_reduces_jitter_and_follows_a_step():
    rng = np.random.default_rng(0)
    truth, noisy = step_trajectory(rng)
    filt = OneEuroFilter(min_cutoff=1.0, beta=1.0)
    out = np.stack([filt(noisy[i], i / FPS, scale=200.0) for i in range(len(noisy))])
    sizes = np.full(60, 200.0)
    assert jitter(out[:60], sizes) < 0.3 * jitter(noisy[:60], sizes)
    settled = out[70:]  # 10 frames (1/3 s) after the step
    assert np.abs(settled - truth[70:]).max() < 3.0
    assert np.abs(settled.mean(axis=0) - truth[70:].mean(axis=0)).max() < 1.0


def test_one_euro_holds_unsure_joints_and_uses_time():
    filt = OneEuroFilter(min_cutoff=1.0, beta=0.0)
    x0 = np.array([[0.0, 0.0], [10.0, 10.0]])
    filt(x0, 0.0)
    outlier = np.array([[50.0, 0.0], [60.0, 10.0]])
    held = filt(outlier, 1 / FPS, scores=np.array([0.9, 0.05]))
    assert 0 < held[0, 0] < 50.0  # confident joint moves part of the way
    np.testing.assert_array_equal(held[1], x0[1])  # unsure joint held
    # A longer time step gives a larger step towards the observation (time-aware).
    slow, fast = OneEuroFilter(), OneEuroFilter()
    slow(np.zeros((1, 2)), 0.0)
    fast(np.zeros((1, 2)), 0.0)
    assert slow(np.ones((1, 2)), 0.5)[0, 0] > fast(np.ones((1, 2)), 1 / FPS)[0, 0]
    # A joint that starts unknown (NaN) picks up its first real observation.
    late = OneEuroFilter()
    late(np.array([[np.nan, np.nan]]), 0.0)
    np.testing.assert_array_equal(late(np.array([[5.0, 6.0]]), 1 / FPS), [[5.0, 6.0]])
    # Timestamps that do not increase fall back to a nominal frame time instead of freezing.
    frozen = OneEuroFilter()
    frozen(np.zeros((1, 2)), 0.0)
    assert frozen(np.ones((1, 2)), 0.0)[0, 0] > 0.05


def noisy_track_with_gaps(rng, frames=100, joints=3, noise=1.5):
    t = np.arange(frames)
    truth = np.stack([100 + 40 * np.sin(t / 12.0), 200 + 25 * np.cos(t / 9.0)], -1)
    truth = np.repeat(truth[:, None], joints, axis=1) + 30 * np.arange(joints)[None, :, None]
    noisy = truth + rng.normal(0.0, noise, truth.shape)
    scores = np.full((frames, joints), 0.9)
    noisy[20:23] = np.nan  # short gap: track missing for 3 frames
    noisy[50:70] = np.nan  # long gap: 20 frames
    scores[80:82, 1] = 0.05  # joint 1 unsure for 2 frames
    noisy[80:82, 1] += 25.0  # … and wrong
    return truth, noisy, scores


def test_savgol_fills_short_gaps_keeps_long_ones_and_reduces_noise():
    rng = np.random.default_rng(1)
    truth, noisy, scores = noisy_track_with_gaps(rng)
    out = savgol_smooth(noisy, scores, window=9, polyorder=2, max_gap=5)
    assert out.shape == noisy.shape
    assert np.isfinite(out[20:23]).all() and np.abs(out[20:23] - truth[20:23]).max() < 3.0
    assert np.isnan(out[50:70]).all()
    assert np.abs(out[80:82, 1] - truth[80:82, 1]).max() < 3.0  # unsure joint interpolated
    seen = np.isfinite(noisy).all(-1) & (scores > 0.3)
    rmse_raw = np.sqrt(np.mean((noisy - truth)[seen] ** 2))
    rmse_out = np.sqrt(np.mean((out - truth)[seen] ** 2))
    assert rmse_out < 0.7 * rmse_raw
    sizes = np.full(len(out), 150.0)
    assert jitter(out, sizes) < 0.5 * jitter(noisy, sizes)


def test_savgol_short_runs_and_bad_arguments():
    xy = np.full((10, 1, 2), np.nan)
    xy[2:5, 0] = [[1, 1], [2, 2], [3, 3]]
    out = savgol_smooth(xy, window=9, polyorder=2, max_gap=1)
    np.testing.assert_allclose(out[2:5, 0], xy[2:5, 0])  # 3 samples: window 3, exact fit
    assert np.isnan(out[:2]).all() and np.isnan(out[5:]).all()
    with pytest.raises(ValueError):
        savgol_smooth(xy, window=8)
    with pytest.raises(PoseCliError, match="unknown smoothing"):
        PoseSmoother("kalman")
    with pytest.raises(PoseCliError, match="odd window"):
        PoseSmoother("savgol", window=4)


def results_from_tracks(tracks, scores, frames):
    """FrameResults for track arrays {id: [T, K, 2]} (NaN rows = absent)."""
    out = []
    for t in range(frames):
        present = [i for i in tracks if np.isfinite(tracks[i][t]).all()]
        k = next(iter(tracks.values())).shape[1]
        xy = np.array([tracks[i][t] for i in present], np.float32).reshape(-1, k, 2)
        sc = np.array([scores[i][t] for i in present], np.float32).reshape(-1, k)
        boxes = np.tile(np.array([[0.0, 0.0, 100.0, 150.0]], np.float32), (len(present), 1))
        poses = Poses(boxes, np.ones(len(present), np.float32), xy, sc, np.array(present, np.int64))
        out.append(FrameResult(Frame(t, t / FPS, IMAGE), poses))
    return out


def test_streaming_savgol_equals_offline_savgol_with_bounded_delay():
    rng = np.random.default_rng(2)
    _, a, sa = noisy_track_with_gaps(rng)
    _, b, sb = noisy_track_with_gaps(rng)
    b[:30] = np.nan  # track 7 starts late
    results = results_from_tracks({3: a, 7: b}, {3: sa, 7: sb}, len(a))
    smoother = PoseSmoother("savgol", window=9, polyorder=2, max_gap=5, median=5)
    streamed, lags = [], []
    for i, r in enumerate(results):
        ready = smoother.push(r)
        lags += [i - o.frame.index for o in ready]
        streamed += ready
    streamed += smoother.flush()
    assert [r.frame.index for r in streamed] == list(range(len(a)))
    assert set(lags) == {smoother.delay_frames}
    for track_id, xy, sc in ((3, a, sa), (7, b, sb)):
        offline = savgol_smooth(xy, sc, window=9, polyorder=2, max_gap=5, median=5)
        for r in streamed:
            hit = np.flatnonzero(r.poses.track_ids == track_id)
            if hit.size:
                ref = offline[r.frame.index]
                ok = np.isfinite(ref).all(-1)
                np.testing.assert_allclose(r.poses.keypoints_xy[hit[0]][ok], ref[ok], atol=1e-3)


def test_pose_smoother_one_euro_and_none():
    rng = np.random.default_rng(3)
    truth, noisy = step_trajectory(rng, frames=60, step_at=1000)
    track = np.repeat(noisy, 2, axis=1)  # two joints
    results = results_from_tracks({1: track}, {1: np.ones((60, 2))}, 60)
    untracked = Poses(np.zeros((1, 4), np.float32), np.ones(1, np.float32), np.ones((1, 2, 2), np.float32),
                      np.ones((1, 2), np.float32))
    results.append(FrameResult(Frame(60, 2.0, IMAGE), untracked))
    euro = list(PoseSmoother("oneeuro", min_cutoff=1.0, beta=1.0).smooth(results))
    assert len(euro) == 61 and euro[-1].poses is not None
    np.testing.assert_array_equal(euro[-1].poses.keypoints_xy, untracked.keypoints_xy)
    out = np.stack([r.poses.keypoints_xy[0] for r in euro[:60]])
    sizes = np.full(60, 150.0)
    assert jitter(out, sizes) < 0.3 * jitter(track, sizes)
    assert euro[5].poses.keypoint_scores is results[5].poses.keypoint_scores
    assert list(PoseSmoother("none").smooth(results)) == results


def test_streaming_savgol_matches_offline_on_random_gappy_tracks():
    # Many short gaps, unsure joints and window sizes: hits the worst case of the look-ahead.
    for seed in range(40):
        rng = np.random.default_rng(seed)
        window = int(rng.choice([5, 7, 9, 11]))
        polyorder, max_gap = int(rng.integers(1, 4)), int(rng.integers(0, 7))
        median = int(rng.choice([1, 3, 5, 7]))
        xy = rng.normal(0.0, 3.0, (50, 2, 2)) + np.arange(50)[:, None, None]
        scores = np.where(rng.random((50, 2)) < 0.25, 0.1, 0.9)
        xy[rng.random(50) < 0.15] = np.nan
        smoother = PoseSmoother("savgol", window=window, polyorder=polyorder, max_gap=max_gap, median=median)
        streamed = list(smoother.smooth(results_from_tracks({1: xy}, {1: scores}, 50)))
        offline = savgol_smooth(xy, scores, window=window, polyorder=polyorder, max_gap=max_gap, median=median)
        for r in streamed:
            if len(r.poses):
                ref = offline[r.frame.index]
                ok = np.isfinite(ref).all(-1)
                np.testing.assert_allclose(r.poses.keypoints_xy[0][ok], ref[ok], atol=1e-3,
                                           err_msg=f"seed {seed}")


def test_fast_savgol_equals_scipy():
    from scipy.signal import savgol_filter

    from posecli.smooth import _savgol_run

    rng = np.random.default_rng(4)
    for window in (3, 5, 9, 11):
        for polyorder in range(window):
            for n in (window, window + 1, 30):
                x = rng.normal(0.0, 5.0, (n, 4))
                np.testing.assert_allclose(_savgol_run(x, window, polyorder),
                                           savgol_filter(x, window, polyorder, axis=0, mode="interp"),
                                           atol=1e-6)


def test_savgol_median_drops_short_outliers_and_keeps_steps():
    t = np.arange(60, dtype=np.float64)
    truth = np.stack([100.0 + 2.0 * t, np.where(t < 30, 200.0, 260.0)], -1)[:, None]  # ramp in x, step in y
    jumpy = truth.copy()
    jumpy[12:14, 0, 0] += 80.0  # a joint on the wrong limb for two frames
    plain = savgol_smooth(jumpy, window=9, polyorder=2, median=1)
    robust = savgol_smooth(jumpy, window=9, polyorder=2, median=5)
    assert np.abs(plain[8:18] - truth[8:18]).max() > 20.0  # the jump leaks into its neighbours
    assert np.abs(robust[8:18] - truth[8:18]).max() < 4.0  # two frames of the ramp off, at most
    # A median keeps monotonic motion (the ramp) exactly; a steep step stays steep.
    median_only = savgol_smooth(truth, window=3, polyorder=2, median=7)
    np.testing.assert_allclose(median_only, truth, atol=1e-9)
    with pytest.raises(ValueError, match="median"):
        savgol_smooth(truth, median=4)
    with pytest.raises(PoseCliError, match="median"):
        PoseSmoother("savgol", median=2)
