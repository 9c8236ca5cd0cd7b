import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from posecli.track import PoseTracker, box_iou, drop_short_tracks, pose_oks
from posecli.types import Frame, FrameResult, Poses

# A standing person in a unit box (x, y in [0, 1]), COCO joint order.
TEMPLATE = np.array([
    [0.50, 0.08], [0.47, 0.06], [0.53, 0.06], [0.44, 0.07], [0.56, 0.07],
    [0.35, 0.20], [0.65, 0.20], [0.30, 0.35], [0.70, 0.35], [0.28, 0.50], [0.72, 0.50],
    [0.40, 0.55], [0.60, 0.55], [0.40, 0.75], [0.60, 0.75], [0.40, 0.95], [0.60, 0.95],
])


def person(cx, cy, height=200.0):
    """Box [4] and keypoints [17, 2] of a person centred at (cx, cy)."""
    w = 0.4 * height
    x1, y1 = cx - w / 2, cy - height / 2
    return np.array([x1, y1, x1 + w, y1 + height]), TEMPLATE * [w, height] + [x1, y1]


def make_poses(people, rng=None, noise=0.0, keypoint_score=0.9):
    """Poses from a list of (cx, cy[, height]) tuples, in a random order if ``rng`` is given."""
    if not people:
        return Poses.empty()
    boxes, kps = zip(*(person(*p) for p in people))
    kps = np.stack(kps)
    if rng is not None:
        kps = kps + rng.normal(0.0, noise, kps.shape)
    return Poses(np.stack(boxes).astype(np.float32), np.full(len(people), 0.9, np.float32),
                 kps.astype(np.float32), np.full(kps.shape[:2], keypoint_score, np.float32))


def run(tracker, frames, rng=None, noise=0.0, keypoint_score=0.9):
    """Track a script: each frame is a dict name → (cx, cy); returns a list of dicts name → id."""
    out = []
    for people in frames:
        names = list(people)
        if rng is not None:
            rng.shuffle(names)
        ids = tracker.update(make_poses([people[n] for n in names], rng, noise, keypoint_score)).track_ids
        out.append(dict(zip(names, ids.tolist())))
    return out


def ids_of(assigned, name):
    return {frame[name] for frame in assigned if name in frame}


def test_ids_survive_two_people_crossing():
    # Same size and height in the image, closing at 24 px/frame; around frame 15 each skeleton is
    # nearer to where the *other* person was a frame before, so matching against last positions
    # swaps them (it does for every seed) and only the motion prediction keeps the ids.
    rng = np.random.default_rng(0)
    frames = [{"a": (100 + 12 * t, 200), "b": (466 - 12 * t, 202)} for t in range(31)]
    assigned = run(PoseTracker(), frames, rng, noise=1.5)
    assert len(ids_of(assigned, "a")) == 1 and len(ids_of(assigned, "b")) == 1
    assert ids_of(assigned, "a") != ids_of(assigned, "b")


def test_id_kept_through_a_ten_frame_occlusion():
    rng = np.random.default_rng(1)
    frames = []
    for t in range(50):
        people = {"static": (600, 300)}
        if not 20 <= t < 30:  # "walker" hidden behind something for 10 frames
            people["walker"] = (100 + 4 * t, 250)
        if not 15 <= t < 25:  # "stopper" halts while hidden and reappears where it vanished
            people["stopper"] = (150 + 4 * min(t, 15), 450)
        frames.append(people)
    assigned = run(PoseTracker(), frames, rng, noise=1.0)
    for name in ("static", "walker", "stopper"):
        assert len(ids_of(assigned, name)) == 1, name
    assert len(set.union(*(ids_of(assigned, n) for n in ("static", "walker", "stopper")))) == 3


def test_new_people_get_new_ids_and_ids_are_never_reused():
    tracker = PoseTracker(max_age=5)
    frames = [{"a": (100, 200)} for _ in range(5)]
    frames += [{"a": (100, 200), "b": (500, 200)} for _ in range(5)]
    frames += [{"b": (500, 200)} for _ in range(7)]  # "a" leaves for longer than max_age
    frames += [{"b": (500, 200), "c": (100, 200)} for _ in range(3)]  # someone where "a" was
    assigned = run(tracker, frames)
    assert ids_of(assigned, "a") == {1}
    assert ids_of(assigned, "b") == {2}
    assert ids_of(assigned, "c") == {3}
    tracker.reset()
    assert tracker.update(make_poses([(100, 200)])).track_ids.tolist() == [4]


@pytest.mark.parametrize("hidden, same_id", [(5, True), (6, False)])
def test_max_age_is_the_number_of_frames_a_person_may_miss(hidden, same_id):
    frames = [{"a": (100, 200)}] * 3 + [{}] * hidden + [{"a": (100, 200)}]
    assigned = run(PoseTracker(max_age=5), frames)
    assert (len(ids_of(assigned, "a")) == 1) == same_id


def test_update_keeps_order_and_handles_empty_frames():
    tracker = PoseTracker()
    assert len(tracker.update(Poses.empty()).track_ids) == 0
    first = tracker.update(make_poses([(100, 200), (400, 200)]))
    assert first.track_ids.tolist() == [1, 2]
    swapped = tracker.update(make_poses([(402, 200), (102, 200)]))
    assert swapped.track_ids.tolist() == [2, 1]
    np.testing.assert_array_equal(swapped.keypoints_xy, make_poses([(402, 200), (102, 200)]).keypoints_xy)


def test_no_id_switches_in_a_noisy_crowd():
    mm = pytest.importorskip("motmetrics")
    rng = np.random.default_rng(3)
    starts = np.array([[100.0, 200.0], [700.0, 220.0], [400.0, 500.0], [150.0, 600.0]])
    velocity = np.array([[6.0, 0.5], [-6.0, 0.0], [0.0, -3.0], [4.0, -1.0]])
    tracker, acc = PoseTracker(), mm.MOTAccumulator(auto_id=True)
    for t in range(80):
        truth = starts + velocity * t
        visible = [i for i in range(4) if rng.random() > 0.1]  # 10 % missed detections
        poses = tracker.update(make_poses([tuple(truth[i]) for i in visible], rng, noise=2.0))
        dist = mm.distances.norm2squared_matrix(truth[visible], poses.keypoints_xy.mean(axis=1), max_d2=60**2)
        acc.update(visible, poses.track_ids.tolist(), dist)
    summary = mm.metrics.create().compute(acc, metrics=["num_switches", "num_fragmentations", "mota"])
    assert int(summary["num_switches"].iloc[0]) == 0
    assert float(summary["mota"].iloc[0]) > 0.99


def test_similarity_helpers():
    box_a, kp_a = person(100, 200)
    box_b, kp_b = person(100, 200)
    s = np.ones((1, 17))
    assert pose_oks(kp_a[None], s, box_a[None], kp_b[None], s, box_b[None])[0, 0] == pytest.approx(1.0)
    far_box, far_kp = person(300, 200)
    assert pose_oks(kp_a[None], s, box_a[None], far_kp[None], s, far_box[None])[0, 0] < 0.01
    assert pose_oks(kp_a[None], 0 * s, box_a[None], kp_b[None], s, box_b[None])[0, 0] == 0.0
    iou = box_iou(np.array([[0, 0, 10, 10], [0, 0, 10, 10]]), np.array([[5, 0, 15, 10], [20, 20, 30, 30]]))
    np.testing.assert_allclose(iou, [[1 / 3, 0.0], [1 / 3, 0.0]])


def test_oks_equals_pycocotools_on_the_same_poses():
    # COCOeval.computeOks is the reference: same sigmas, d² / (2 · area · (2σ)²), averaged over
    # the joints labelled in the ground truth. Here both poses share the box (so the pair's mean
    # area is the box area) and the "ground truth" is pose a with its unlabelled joints at score 0.
    rng = np.random.default_rng(7)
    boxes = np.array([[100.0, 50.0, 180.0, 260.0], [300.0, 80.0, 420.0, 250.0], [40.0, 300.0, 90.0, 330.0]])
    gt_xy = np.stack([rng.uniform(b[:2], b[2:], (17, 2)) for b in boxes])
    gt_labelled = rng.random((3, 17)) > 0.3
    gt_labelled[:, 0] = True
    det_xy = gt_xy + rng.normal(0.0, 1.0, gt_xy.shape) * rng.uniform(1.0, 12.0, (3, 1, 1))
    areas = np.prod(boxes[:, 2:] - boxes[:, :2], axis=1)

    truth = COCO()
    truth.dataset = {
        "images": [{"id": 1, "width": 640, "height": 480}],
        "categories": [{"id": 1, "name": "person"}],
        "annotations": [{"id": i + 1, "image_id": 1, "category_id": 1, "iscrowd": 0, "area": float(areas[i]),
                         "bbox": [*boxes[i, :2], *(boxes[i, 2:] - boxes[i, :2])], "num_keypoints": 17,
                         "keypoints": np.column_stack([gt_xy[i], 2 * gt_labelled[i]]).ravel().tolist()}
                        for i in range(3)],
    }
    truth.createIndex()
    detections = truth.loadRes([{"image_id": 1, "category_id": 1, "score": 1.0 - 0.1 * i,
                                 "keypoints": np.column_stack([det_xy[i], np.ones(17)]).ravel().tolist()}
                                for i in range(3)])
    evaluator = COCOeval(truth, detections, "keypoints")
    evaluator.evaluate()
    reference = np.asarray(evaluator.ious[(1, 1)])  # [detections, truths]

    ours = pose_oks(det_xy, np.ones((3, 17)), boxes, gt_xy, gt_labelled.astype(np.float64), boxes)
    np.testing.assert_allclose(np.diag(ours), np.diag(reference), rtol=1e-9)
    assert 0.05 < np.diag(ours).min() and np.diag(ours).max() < 0.99  # neither saturated nor zero


def test_a_person_who_stops_while_hidden_is_found_where_last_seen():
    # 12 px/frame, hidden 10 frames: the motion model puts the box 120 px (1.5 box widths) ahead,
    # no overlap at all, so only the comparison with the last seen pose keeps the id.
    frames = [{"stopper": (100 + 12 * t, 300)} for t in range(15)]
    frames += [{}] * 10
    frames += [{"stopper": (100 + 12 * 14, 300)}] * 5
    assigned = run(PoseTracker(), frames)
    assert len(ids_of(assigned, "stopper")) == 1


def test_joint_velocity_is_per_frame_over_detection_gaps():
    # A walker at 8 px/frame detected only every fifth frame after a start in full view, matched
    # on OKS alone: the joints must be extrapolated at 8 px/frame, not at 40 (the displacement
    # between two detections).
    frames = []
    for t in range(60):
        frames.append({"walker": (100 + 8 * t, 300)} if t < 5 or t % 5 == 0 else {})
    assigned = run(PoseTracker(oks_threshold=0.6, iou_threshold=1.01, iou_weight=0.0), frames)
    assert len(ids_of(assigned, "walker")) == 1


def test_a_limb_swing_is_not_extrapolated_over_an_occlusion():
    # Arms and legs swing ±20 px with an 11-frame period around a walker; it is hidden for
    # 11 frames and back in the same phase. A joint's own motion is applied for one frame at
    # most: over 12 frames the swing velocity at the moment it was lost would send the limbs
    # ~100 px off.
    limbs = np.array([7, 8, 9, 10, 13, 14, 15, 16])
    side = np.array([1, -1, 1, -1, -1, 1, -1, 1])
    tracker = PoseTracker(oks_threshold=0.8, iou_threshold=1.01, iou_weight=0.0)
    ids = []
    for t in range(40):
        if 20 <= t < 31:
            tracker.update(Poses.empty())
            continue
        box, kp = person(100 + 4 * t, 300)
        kp[limbs, 0] += side * 20.0 * np.sin(2 * np.pi * t / 11 + 2.5)
        poses = Poses(box[None].astype(np.float32), np.full(1, 0.9, np.float32), kp[None].astype(np.float32),
                      np.full((1, 17), 0.9, np.float32))
        ids.append(int(tracker.update(poses).track_ids[0]))
    assert set(ids) == {1}


def test_unsure_joints_are_matched_by_box_overlap():
    # Every joint below the keypoint threshold: OKS is 0, the box IoU alone keeps the id.
    frames = [{"blurred": (100 + 3 * t, 300)} for t in range(8)]
    assigned = run(PoseTracker(), frames, keypoint_score=0.1)
    assert len(ids_of(assigned, "blurred")) == 1


def test_tracks_seen_in_the_last_frame_are_served_before_lost_ones():
    # "stand" stops being detected at (300, 300); "walk" then walks through that very spot while
    # "stand" is still a lost track. The walker's own track has the first claim on its pose.
    frames = [{"stand": (300, 300), "walk": (100 + 10 * t, 300)} for t in range(5)]
    frames += [{"walk": (100 + 10 * t, 300)} for t in range(5, 30)]
    assigned = run(PoseTracker(), frames)
    assert len(ids_of(assigned, "walk")) == 1
    assert ids_of(assigned, "walk") != ids_of(assigned, "stand")


def _results(id_lists):
    image = np.zeros((4, 4, 3), np.uint8)
    out = []
    for i, ids in enumerate(id_lists):
        poses = make_poses([(100 + 50 * k, 200) for k in range(len(ids))])
        poses = poses.with_track_ids(np.array(ids, np.int64))
        out.append(FrameResult(Frame(i, i / 30, image), poses))
    return out


def test_drop_short_tracks_removes_short_lived_ids_only():
    ids = [[1], [1, 2], [1, -1], [1, 3], [1, 3], [1, 3], [1], [1, 4]]
    out = list(drop_short_tracks(_results(ids), min_len=3, max_age=2))
    assert [r.frame.index for r in out] == list(range(8))
    assert [r.poses.track_ids.tolist() for r in out] == [[1], [1], [1, -1], [1, 3], [1, 3], [1, 3], [1], [1]]
    unfiltered = list(drop_short_tracks(_results(ids), min_len=1))
    assert [r.poses.track_ids.tolist() for r in unfiltered] == ids


def test_drop_short_tracks_streams_with_bounded_delay():
    ids = [[1]] * 3 + [[1, 2]] + [[1]] * 40
    pulled = []

    def source():
        for r in _results(ids):
            pulled.append(r.frame.index)
            yield r

    stream = drop_short_tracks(source(), min_len=3, max_age=5)
    first = next(stream)
    assert first.frame.index == 0 and len(pulled) <= 3
    out = [first] + list(stream)
    assert len(out) == len(ids) and all(2 not in r.poses.track_ids for r in out)
    # the one-frame track 2 at frame 3 is decided after max_age + 1 more frames
    assert max(pulled) == len(ids) - 1


@pytest.mark.parametrize("velocity_window, same_id", [(10, True), (1, False)])
def test_body_velocity_is_robust_to_a_wobbling_box(velocity_window, same_id):
    # A walker at 8 px/frame whose detected centre wobbles by ±5 px (swinging limbs) is hidden
    # for 20 frames right after a wobble. The last displacement alone (18 px/frame) would put
    # the prediction 200 px ahead of where the walker reappears; the slope over 10 frames does not.
    wobble = [0, 5, 0, -5]
    frames = [{"walker": (100 + 8 * t + wobble[t % 4], 300)} for t in range(14)]  # last wobble +5 at t=13
    frames += [{}] * 20
    frames += [{"walker": (100 + 8 * t, 300)} for t in range(34, 40)]
    assigned = run(PoseTracker(velocity_window=velocity_window), frames)
    assert (len(ids_of(assigned, "walker")) == 1) == same_id
