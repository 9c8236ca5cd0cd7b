import csv
import json
import pickle

import cv2
import numpy as np
import pytest

from posecli.draw import PALETTE, draw_poses, track_colour
from posecli.errors import PoseCliError
from posecli.sinks import (
    CSV_COLUMNS, FORMATS, JsonSink, OverlaySink, make_sinks, output_paths, read_posecli_json,
    read_posecli_jsonl, validate_posecli,
)
from posecli.types import COCO_KEYPOINTS, Frame, FrameResult, ModelInfo, Poses, SourceInfo

W, H, K = 160, 120, 17
SOURCE = SourceInfo(path="/videos/clip.mp4", kind="video", width=W, height=H, fps=29.97, num_frames=99)
MODEL = ModelInfo(name="diffpose.effl0-v1", sha256="ab" * 32, window=3, steps=2)


def synthetic_results(num_frames=6, seed=0):
    """Frames with 0–2 poses; track 1 everywhere, track 2 from frame 2, one untracked pose."""
    rng = np.random.default_rng(seed)
    out = []
    for t in range(num_frames):
        ids = [1] + ([2] if t >= 2 else []) + ([-1] if t == 4 else [])
        if t == 3:
            ids = []  # a frame without anyone
        n = len(ids)
        boxes = np.tile(np.array([[10.0, 20.0, 60.0, 110.0]], np.float32), (n, 1)) + rng.uniform(0, 5, (n, 1))
        xy = rng.uniform(5.0, 100.0, (n, K, 2)).astype(np.float32)
        scores = rng.uniform(0.0, 1.0, (n, K)).astype(np.float32)
        poses = Poses(boxes.astype(np.float32), rng.uniform(0.5, 1, n).astype(np.float32), xy, scores,
                      np.array(ids, np.int64))
        image = np.full((H, W, 3), (20 * t) % 256, np.uint8)
        out.append(FrameResult(Frame(index=t * 2, time_s=t * 2 / 29.97, image=image), poses))
    return out


def write_all(tmp_path, formats, overlay=False, results=None):
    results = synthetic_results() if results is None else results
    sinks = make_sinks(tmp_path, "clip", formats, overlay, SOURCE, MODEL)
    for sink in sinks:
        with sink:
            for r in results:
                sink.write(r)
    return results


def test_json_round_trip(tmp_path):
    results = write_all(tmp_path, ["json"])
    doc = read_posecli_json(tmp_path / "clip.json")
    assert list(doc) == ["format", "source", "model", "keypoints", "skeleton", "frames"]
    assert doc["format"] == "posecli/1"
    assert doc["source"] == {"path": "/videos/clip.mp4", "kind": "video", "width": W, "height": H,
                             "fps": 29.97, "num_frames": len(results)}
    assert doc["model"] == {"name": MODEL.name, "sha256": MODEL.sha256, "window": 3, "steps": 2}
    assert doc["keypoints"] == list(COCO_KEYPOINTS) and doc["skeleton"][0] == [15, 13]
    compare_frames(doc["frames"], results)


def compare_frames(frames, results):
    assert len(frames) == len(results)
    for frame, r in zip(frames, results):
        assert frame["frame"] == r.frame.index and "file" not in frame
        assert frame["time_s"] == pytest.approx(r.frame.time_s, abs=1e-6)
        assert [p["track_id"] for p in frame["poses"]] == r.poses.track_ids.tolist()
        for p, n in zip(frame["poses"], range(len(r.poses))):
            kp = np.array(p["keypoints"])
            assert kp.shape == (K, 3)
            np.testing.assert_allclose(kp[:, :2], r.poses.keypoints_xy[n], atol=0.006)
            np.testing.assert_allclose(kp[:, 2], r.poses.keypoint_scores[n], atol=6e-5)
            np.testing.assert_allclose(p["bbox"], r.poses.boxes_xyxy[n], atol=0.006)
            assert p["bbox_score"] == pytest.approx(float(r.poses.box_scores[n]), abs=6e-5)
            assert p["score"] == pytest.approx(float(r.poses.keypoint_scores[n].mean()), abs=6e-5)


def test_jsonl_round_trip(tmp_path):
    results = write_all(tmp_path, ["jsonl"])
    lines = (tmp_path / "clip.jsonl").read_text().splitlines()
    assert len(lines) == 1 + len(results)
    header = json.loads(lines[0])
    assert "frames" not in header and header["source"]["num_frames"] == len(results)
    doc = read_posecli_jsonl(tmp_path / "clip.jsonl")
    compare_frames(doc["frames"], results)


def test_csv_round_trip(tmp_path):
    results = write_all(tmp_path, ["csv"])
    with open(tmp_path / "clip.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == CSV_COLUMNS
    expected = [(r, n, j) for r in results for n in range(len(r.poses)) for j in range(K)]
    assert len(rows) == len(expected)
    for row, (r, n, j) in zip(rows, expected):
        assert int(row["frame"]) == r.frame.index
        assert float(row["time_s"]) == pytest.approx(r.frame.time_s, abs=1e-6)
        assert int(row["track_id"]) == r.poses.track_ids[n]
        assert row["keypoint"] == COCO_KEYPOINTS[j]
        assert float(row["x"]) == pytest.approx(float(r.poses.keypoints_xy[n, j, 0]), abs=0.006)
        assert float(row["y"]) == pytest.approx(float(r.poses.keypoints_xy[n, j, 1]), abs=0.006)
        assert float(row["score"]) == pytest.approx(float(r.poses.keypoint_scores[n, j]), abs=6e-5)


def test_coco_results_round_trip(tmp_path):
    results = write_all(tmp_path, ["coco"])
    entries = json.loads((tmp_path / "clip.coco.json").read_text())
    expected = [(r, n) for r in results for n in range(len(r.poses))]
    assert len(entries) == len(expected)
    for e, (r, n) in zip(entries, expected):
        assert e["image_id"] == r.frame.index + 1 and e["category_id"] == 1
        assert e["track_id"] == r.poses.track_ids[n]
        kp = np.array(e["keypoints"]).reshape(K, 3)
        np.testing.assert_allclose(kp[:, :2], r.poses.keypoints_xy[n], atol=0.006)
        np.testing.assert_allclose(kp[:, 2], r.poses.keypoint_scores[n], atol=6e-5)
        x1, y1, x2, y2 = r.poses.boxes_xyxy[n]
        np.testing.assert_allclose(e["bbox"], [x1, y1, x2 - x1, y2 - y1], atol=0.02)
        assert e["score"] == pytest.approx(float(r.poses.keypoint_scores[n].mean()), abs=6e-5)


def test_mmaction_pickle_has_the_documented_layout(tmp_path):
    results = write_all(tmp_path, ["mmaction"])
    with open(tmp_path / "clip.mmaction.pkl", "rb") as f:
        anno = pickle.load(f)
    assert {"frame_dir", "label", "img_shape", "original_shape", "total_frames", "keypoint",
            "keypoint_score"} <= set(anno)
    assert anno["frame_dir"] == "clip" and anno["label"] == -1
    assert anno["img_shape"] == (H, W) and anno["original_shape"] == (H, W)
    assert anno["total_frames"] == len(results)
    # M = 3: tracks 1 and 2, then the one untracked pose's slot
    assert anno["keypoint"].shape == (3, len(results), K, 2) and anno["keypoint"].dtype == np.float32
    assert anno["keypoint_score"].shape == (3, len(results), K) and anno["keypoint_score"].dtype == np.float32
    assert anno["track_ids"].tolist() == [1, 2, -1]
    np.testing.assert_array_equal(anno["keypoint"][0, 5], results[5].poses.keypoints_xy[0])
    np.testing.assert_array_equal(anno["keypoint_score"][1, 4], results[4].poses.keypoint_scores[1])
    assert not anno["keypoint"][1, :2].any() and not anno["keypoint_score"][:, 3].any()  # absent = 0


def test_npz_round_trip(tmp_path):
    results = write_all(tmp_path, ["npz"])
    with np.load(tmp_path / "clip.npz", allow_pickle=False) as z:
        assert str(z["format"]) == "posecli/1"
        assert z["track_ids"].tolist() == [1, 2]
        assert z["frame_index"].tolist() == [r.frame.index for r in results]
        assert int(z["source_num_frames"]) == len(results) and str(z["model_name"]) == MODEL.name
        assert z["keypoint_names"].tolist() == list(COCO_KEYPOINTS)
        for track_id in (1, 2):
            rows = [(r, n) for r in results for n in range(len(r.poses)) if r.poses.track_ids[n] == track_id]
            assert z[f"track_{track_id}_frames"].tolist() == [r.frame.index for r, _ in rows]
            np.testing.assert_allclose(z[f"track_{track_id}_time_s"], [r.frame.time_s for r, _ in rows])
            np.testing.assert_array_equal(z[f"track_{track_id}_keypoints"],
                                          np.stack([r.poses.keypoints_xy[n] for r, n in rows]))
            np.testing.assert_array_equal(z[f"track_{track_id}_scores"],
                                          np.stack([r.poses.keypoint_scores[n] for r, n in rows]))
            np.testing.assert_array_equal(z[f"track_{track_id}_boxes"],
                                          np.stack([r.poses.boxes_xyxy[n] for r, n in rows]))
        assert z["untracked_frames"].tolist() == [8]
        assert z["track_1_keypoints"].dtype == np.float32


def test_overlay_video_decodes_with_the_right_frame_count(tmp_path):
    results = write_all(tmp_path, [], overlay=True, results=synthetic_results(num_frames=12))
    cap = cv2.VideoCapture(str(tmp_path / "clip.overlay.mp4"))
    frames = []
    while True:
        ok, image = cap.read()
        if not ok:
            break
        frames.append(image)
    cap.release()
    assert len(frames) == len(results)
    assert frames[0].shape == (H, W, 3)
    assert list(tmp_path.iterdir()) == [tmp_path / "clip.overlay.mp4"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_abort_and_exceptions_leave_no_file(tmp_path, fmt):
    (sink,) = make_sinks(tmp_path, "clip", [fmt], False, SOURCE, MODEL)
    results = synthetic_results()
    sink.write(results[0])
    sink.abort()
    sink.abort()  # idempotent
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(KeyboardInterrupt):
        with make_sinks(tmp_path, "clip", [fmt], False, SOURCE, MODEL)[0] as sink:
            for r in results:
                sink.write(r)
                if r.frame.index == 4:
                    raise KeyboardInterrupt  # Ctrl-C in the middle of a run
    assert list(tmp_path.iterdir()) == []


def test_overlay_abort_leaves_no_file(tmp_path):
    with pytest.raises(RuntimeError):
        with OverlaySink(tmp_path / "x.overlay.mp4", SOURCE, MODEL) as sink:
            sink.write(synthetic_results()[0])
            raise RuntimeError("model failed")
    assert list(tmp_path.iterdir()) == []


def test_an_existing_file_is_replaced_only_when_complete(tmp_path):
    target = tmp_path / "clip.json"
    target.write_text("old")
    sink = JsonSink(target, SOURCE, MODEL)
    sink.write(synthetic_results()[0])
    assert target.read_text() == "old"  # still the old file while writing
    sink.abort()
    assert target.read_text() == "old"
    with JsonSink(target, SOURCE, MODEL):
        pass
    assert read_posecli_json(target)["frames"] == []


def test_unwritable_output_raises_at_construction(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(PoseCliError, match="cannot write to output directory"):
        make_sinks(blocker / "out", "clip", ["json"], False, SOURCE, MODEL)
    with pytest.raises(PoseCliError, match="cannot write to"):
        JsonSink(tmp_path / "missing_dir" / "clip.json", SOURCE, MODEL)
    with pytest.raises(PoseCliError, match="unknown output format"):
        make_sinks(tmp_path, "clip", ["json", "xml"], False, SOURCE, MODEL)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]


def test_output_names():
    paths = output_paths("out", "clip", [*FORMATS, "json"], overlay=True)
    assert [p.name for p in paths.values()] == [
        "clip.json", "clip.jsonl", "clip.csv", "clip.coco.json", "clip.mmaction.pkl", "clip.npz",
        "clip.overlay.mp4"]


def test_validator_names_the_problem(tmp_path):
    write_all(tmp_path, ["json"])
    doc = read_posecli_json(tmp_path / "clip.json")
    doc["frames"][1]["poses"][0]["keypoints"].pop()
    with pytest.raises(PoseCliError, match=r"frames\[1\]\.poses\[0\]\.keypoints must have 17 rows"):
        validate_posecli(doc)
    doc = read_posecli_json(tmp_path / "clip.json")
    doc["source"]["num_frames"] = 5
    with pytest.raises(PoseCliError, match="num_frames"):
        validate_posecli(doc)
    with pytest.raises(PoseCliError, match="format"):
        validate_posecli({"format": "other"})
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(PoseCliError, match="not valid JSON"):
        read_posecli_json(tmp_path / "bad.json")


def test_image_folder_frames_carry_their_file_name_and_nan_becomes_null(tmp_path):
    r = synthetic_results(1)[0]
    xy = r.poses.keypoints_xy.copy()
    xy[0, 3] = np.nan
    poses = Poses(r.poses.boxes_xyxy, r.poses.box_scores, xy, r.poses.keypoint_scores, r.poses.track_ids)
    result = FrameResult(Frame(0, 0.0, r.frame.image, file="000001.jpg"), poses)
    source = SourceInfo(path="/imgs", kind="images", width=W, height=H, fps=float("nan"), num_frames=1)
    with JsonSink(tmp_path / "imgs.json", source, MODEL) as sink:
        sink.write(result)
    doc = read_posecli_json(tmp_path / "imgs.json")
    assert doc["frames"][0]["file"] == "000001.jpg" and doc["source"]["fps"] is None
    assert doc["frames"][0]["poses"][0]["keypoints"][3][:2] == [None, None]


def test_draw_poses_colours_tracks_and_skips_unsure_joints():
    image = np.zeros((H, W, 3), np.uint8)
    xy = np.full((1, K, 2), 60.0, np.float32)
    xy[0, 0] = [20.0, 20.0]  # nose, confident
    xy[0, 9] = [140.0, 100.0]  # left wrist, unsure
    scores = np.full((1, K), 0.9, np.float32)
    scores[0, 9] = 0.1
    poses = Poses(np.array([[200.0, 200.0, 210.0, 210.0]], np.float32), np.ones(1, np.float32), xy, scores,
                  np.array([3], np.int64))
    out = draw_poses(image, poses, score_threshold=0.3)
    assert not image.any()  # input untouched
    assert tuple(out[20, 20]) == track_colour(3) == PALETTE[2]
    assert not out[95:105, 135:145].any()
    assert track_colour(3) != track_colour(4) and track_colour(3) == track_colour(3 + len(PALETTE))
