import numpy as np
import pytest

from posecli.errors import PoseCliError
from posecli.track import PoseTracker
from posecli.eval.tracking_eval import (
    ClipTruth,
    FrameTruth,
    IouTracker,
    load_truth,
    mot_metrics,
    oks_to_truth,
    pose_metrics,
    select_params,
    track_clip,
    truth_as_clip,
)
from posecli.types import Frame, FrameResult, Poses

pytest.importorskip("motmetrics")

TEMPLATE = np.array([
    [0.50, 0.08], [0.47, 0.06], [0.53, 0.06], [0.44, 0.07], [0.56, 0.07],
    [0.35, 0.20], [0.65, 0.20], [0.30, 0.35], [0.70, 0.35], [0.28, 0.50], [0.72, 0.50],
    [0.40, 0.55], [0.60, 0.55], [0.40, 0.75], [0.60, 0.75], [0.40, 0.95], [0.60, 0.95],
])
IMAGE = np.zeros((1, 1, 3), np.uint8)


def person(cx, cy, height=200.0):
    w = 0.4 * height
    x1, y1 = cx - w / 2, cy - height / 2
    return np.array([x1, y1, x1 + w, y1 + height]), TEMPLATE * [w, height] + [x1, y1]


def scripted_truth(frames=20, static=None):
    """Two people walking apart (ids 1 and 2); optionally a static-track box to ignore."""
    out = []
    for t in range(frames):
        boxes, kps = zip(person(100 + 5 * t, 200), person(400 - 5 * t, 210))
        kp = np.concatenate([np.stack(kps), np.ones((2, 17, 1))], axis=-1)
        out.append(FrameTruth(np.array([1, 2]), np.stack(boxes), kp))
    ignore = np.array([static]) if static is not None else np.zeros((0, 4))
    return ClipTruth("scripted", 30.0, tuple(out), ignore)


def hypotheses(truth, ids_of_frame, extra_box=None):
    """Tracked results equal to the ground truth with the ids ``ids_of_frame(t) -> [2]``."""
    out = []
    for t, frame in enumerate(truth.frames):
        boxes, xy = frame.boxes_xyxy, frame.keypoints[..., :2]
        ids = np.asarray(ids_of_frame(t), np.int64)
        if extra_box is not None:
            box, kp = extra_box
            boxes, xy, ids = np.vstack([boxes, box]), np.concatenate([xy, kp[None]]), np.append(ids, 99)
        poses = Poses(boxes.astype(np.float32), np.ones(len(ids), np.float32), xy.astype(np.float32),
                      np.ones(xy.shape[:2], np.float32), ids)
        out.append(FrameResult(Frame(t, t / 30.0, IMAGE), poses))
    return out


@pytest.mark.parametrize("match", ["iou", "oks"])
def test_perfect_hypotheses_score_one(match):
    truth = scripted_truth()
    m = mot_metrics(truth, hypotheses(truth, lambda t: [7, 8]), match=match)  # ids need not be equal
    assert m["mota"] == pytest.approx(1.0) and m["idf1"] == pytest.approx(1.0)
    assert m["num_switches"] == 0 and m["num_false_positives"] == 0 and m["num_misses"] == 0


def test_scripted_swap_counts_id_switches():
    truth = scripted_truth()
    swapped = mot_metrics(truth, hypotheses(truth, lambda t: [7, 8] if t < 10 else [8, 7]))
    assert swapped["num_switches"] == 2  # both people change hypothesis once
    assert swapped["mota"] == pytest.approx(1.0 - 2 / 40)
    assert swapped["idf1"] == pytest.approx(0.5)
    # A new id from frame 10 on (a track that was lost and restarted) is one switch.
    restarted = mot_metrics(truth, hypotheses(truth, lambda t: [7, 8] if t < 10 else [7, 9]))
    assert restarted["num_switches"] == 1 and restarted["idf1"] == pytest.approx(0.75)


def test_static_objects_are_ignored_and_other_extras_are_false_positives():
    box, kp = person(800, 200)
    truth = scripted_truth(static=box)
    m = mot_metrics(truth, hypotheses(truth, lambda t: [1, 2], extra_box=(box, kp)))
    assert m["num_false_positives"] == 0 and m["ignored"] == 20 and m["mota"] == pytest.approx(1.0)
    plain = scripted_truth()
    m = mot_metrics(plain, hypotheses(plain, lambda t: [1, 2], extra_box=(box, kp)))
    assert m["num_false_positives"] == 20 and m["mota"] == pytest.approx(0.5)


def test_oks_to_truth():
    box, kp = person(100, 200)
    ref = np.concatenate([kp, np.ones((17, 1))], axis=-1)[None]
    far_box, far_kp = person(300, 200)
    oks = oks_to_truth(ref, box[None], np.stack([kp, kp + 3.0, far_kp]))
    assert oks[0, 0] == pytest.approx(1.0) and 0.5 < oks[0, 1] < 1.0 and oks[0, 2] < 0.01
    ref[..., 2] = 0.0  # nothing confident in the reference
    assert oks_to_truth(ref, box[None], kp[None])[0, 0] == 0.0


def test_iou_tracker_has_no_memory_by_default():
    truth = scripted_truth(frames=12)
    frames = list(truth.frames)
    frames[5] = FrameTruth(np.array([2]), frames[5].boxes_xyxy[1:], frames[5].keypoints[1:])  # person 1 missed
    gappy = ClipTruth("gappy", 30.0, tuple(frames))
    clip = truth_as_clip(gappy)
    base = mot_metrics(gappy, track_clip(clip, IouTracker))
    assert base["num_switches"] == 1 and base["num_unique_objects"] == 2
    with_memory = mot_metrics(gappy, track_clip(clip, lambda: IouTracker(max_age=1)))
    assert with_memory["num_switches"] == 0
    assert mot_metrics(gappy, track_clip(clip, PoseTracker))["num_switches"] == 0


def test_pose_metrics_of_the_reference_itself():
    rng = np.random.default_rng(0)
    truth = scripted_truth()
    noisy = [FrameTruth(f.track_ids, f.boxes_xyxy,
                        f.keypoints + np.concatenate([rng.normal(0, 2.0, f.keypoints[..., :2].shape),
                                                      np.zeros(f.keypoints[..., 2:].shape)], -1))
             for f in truth.frames]
    truth = ClipTruth("noisy", 30.0, tuple(noisy))
    m = pose_metrics(truth, hypotheses(truth, lambda t: [1, 2]))
    assert m["pck@0.1"] == 1.0 and m["mean_error"] < 1e-6 and m["persons"] == 40  # float32 rounding
    assert m["jitter"] == pytest.approx(m["reference_jitter"], rel=1e-4) and m["jitter"] > 0
    shifted = [FrameResult(r.frame, Poses(r.poses.boxes_xyxy, r.poses.box_scores, r.poses.keypoints_xy + 30.0,
                                          r.poses.keypoint_scores, r.poses.track_ids))
               for r in hypotheses(truth, lambda t: [1, 2])]
    m = pose_metrics(truth, shifted)  # 42 px off on a 126 px person: wrong at 0.1 and 0.2
    assert m["pck@0.2"] == 0.0 and m["mean_error"] == pytest.approx(np.hypot(30, 30) / np.sqrt(80 * 200))


def test_select_params_prefers_smooth_without_accuracy_loss():
    raw = {"pck@0.1": 0.8, "mean_error": 0.05, "jitter": 0.02}
    candidates = [({"a": 1}, {"pck@0.1": 0.81, "mean_error": 0.049, "jitter": 0.01}),
                  ({"a": 2}, {"pck@0.1": 0.79, "mean_error": 0.050, "jitter": 0.001}),  # loses PCK
                  ({"a": 3}, {"pck@0.1": 0.80, "mean_error": 0.048, "jitter": 0.008})]
    assert select_params(raw, candidates, max_pck_loss=0.0)[0] == {"a": 3}
    assert select_params(raw, candidates, max_pck_loss=0.015)[0] == {"a": 2}
    worse = ({"a": 4}, {"pck@0.1": 0.70, "mean_error": 0.060, "jitter": 0.001})
    assert select_params(raw, [candidates[1], worse], max_pck_loss=0.0)[0] == {"a": 2}  # none qualifies: best PCK
    # Per clip: a candidate that gains on one clip but loses on the other does not qualify.
    raw2 = {**raw, "clips": [{"pck@0.1": 0.8, "mean_error": 0.05}, {"pck@0.1": 0.6, "mean_error": 0.08}]}
    mixed = ({"a": 5}, {"pck@0.1": 0.75, "mean_error": 0.06, "jitter": 0.001,
                        "clips": [{"pck@0.1": 0.9, "mean_error": 0.04}, {"pck@0.1": 0.58, "mean_error": 0.08}]})
    even = ({"a": 6}, {"pck@0.1": 0.70, "mean_error": 0.06, "jitter": 0.005,
                       "clips": [{"pck@0.1": 0.8, "mean_error": 0.05}, {"pck@0.1": 0.6, "mean_error": 0.07}]})
    assert select_params(raw2, [mixed, even])[0] == {"a": 6}


def test_load_truth_of_a_shared_clip(shared_dir):
    truth = load_truth(shared_dir / "data/videos/pose2sim_MultiPerson_cam02.pseudo.json")
    assert truth.num_frames == 100 and truth.fps == 60.0
    assert {int(i) for f in truth.frames for i in f.track_ids} == {1, 2, 4}  # 3 is the static skeleton
    assert len(truth.ignore_boxes_xyxy) == 95
    merged = load_truth(shared_dir / "data/videos/sports2d_demo.pseudo.json", merge={2: 1, 4: 1})
    assert {int(i) for f in merged.frames for i in f.track_ids} == {1, 3, 5, 6}
    with pytest.raises(PoseCliError, match="not found"):
        load_truth(shared_dir / "data/videos/nothing.pseudo.json")


def test_trackers_on_the_pseudo_label_detections(shared_dir):
    # The pseudo-label tracks come from an IoU tracker that re-matches within 10 frames; with the
    # same detections, PoseTracker(max_age=10) must give exactly the same tracks.
    truth = load_truth(shared_dir / "data/videos/sports2d_demo.pseudo.json")
    clip = truth_as_clip(truth)
    same = mot_metrics(truth, track_clip(clip, lambda: PoseTracker(max_age=10)))
    assert same["mota"] == pytest.approx(1.0) and same["idf1"] == pytest.approx(1.0)
    baseline = mot_metrics(truth, track_clip(clip, IouTracker))
    assert baseline["num_switches"] > 0


def test_eval_tracks_command_on_a_cached_clip(shared_dir, tmp_path):
    # A cache made from the pseudo-labels stands in for the model's poses, so no model runs.
    import json

    from typer.testing import CliRunner

    from posecli.cli import app
    from posecli.eval.tracking_eval import save_cache
    from posecli.weights import sha256_file

    videos = shared_dir / "data/videos"
    weights = tmp_path / "stand-in.pt"
    weights.write_bytes(b"not a checkpoint: the cache below is found first")
    name = "pose2sim_SinglePerson_cam02"
    save_cache(truth_as_clip(load_truth(videos / f"{name}.pseudo.json")),
               tmp_path / "cache" / f"{name}.{sha256_file(weights)[:12]}.pkl")
    result = CliRunner().invoke(app, ["eval-tracks", str(videos), "--clip", name, "--weights", str(weights),
                                      "--cache-dir", str(tmp_path / "cache"), "--stress-seeds", "1",
                                      "--json", str(tmp_path / "report.json")])
    assert result.exit_code == 0, result.output
    assert "| pose2sim_SinglePerson_cam02 | iou baseline (max_age 0) | 1.000 | 1.000 | 0 |" in result.output
    report = json.loads((tmp_path / "report.json").read_text())
    smoothing = report["clips"][name]["smoothing"]
    assert smoothing["raw"]["pck@0.1"] == 1.0 and smoothing["raw"]["jitter"] == pytest.approx(
        smoothing["raw"]["reference_jitter"], rel=1e-4)
    stress = report["stress"]["trackers"]
    assert stress["PoseTracker (defaults)"]["num_switches"] < stress["iou baseline (max_age 0)"]["num_switches"]
    bad = CliRunner().invoke(app, ["eval-tracks", str(tmp_path), "--clip", name, "--weights", str(weights)])
    assert bad.exit_code == 1 and "error: video not found" in bad.output


def test_subsample_halves_the_frame_rate():
    from posecli.eval.tracking_eval import subsample

    truth = scripted_truth(frames=21)
    half_truth, half_clip = subsample(truth, truth_as_clip(truth), 2)
    assert half_truth.num_frames == len(half_clip.poses) == 11 and half_truth.fps == 15.0
    np.testing.assert_allclose(half_clip.times_s, np.arange(0, 21, 2) / 30.0)
    np.testing.assert_array_equal(half_clip.poses[3].boxes_xyxy, truth.frames[6].boxes_xyxy.astype(np.float32))
    assert mot_metrics(half_truth, track_clip(half_clip, PoseTracker))["idf1"] == pytest.approx(1.0)
