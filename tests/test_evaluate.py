import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
from rich.console import Console

from posecli.errors import PoseCliError
from posecli.eval.evaluate import (
    DiffPoseTopDown,
    TopDownPoseModel,
    evaluate,
    evaluate_video,
    iter_windows,
    render_table,
    run_eval,
)
from posecli.eval.metrics import JOINT_GROUPS, jitter, jitter_by_track, left_right_spread, pck, second_differences
from posecli.types import COCO_SIGMAS

cv2.setNumThreads(1)


class GroundTruthModel:
    """Test double: returns the annotated keypoints of the person whose GT box it is given.

    ``offset_px`` (K×2) is added to every keypoint, to make predictions wrong by a known amount.
    """

    name = "ground-truth"
    window = 1

    def __init__(self, ann_file: Path, offset_px: np.ndarray | None = None) -> None:
        data = json.loads(Path(ann_file).read_text())
        self.by_box = {}
        for ann in data["annotations"]:
            x, y, w, h = ann["bbox"]
            self.by_box[self._key(np.array([x, y, x + w, y + h]))] = np.array(ann["keypoints"], float).reshape(-1, 3)
        self.offset = np.zeros((17, 2)) if offset_px is None else np.asarray(offset_px, float)
        self.calls = 0

    @staticmethod
    def _key(box: np.ndarray) -> tuple:
        return tuple(np.round(np.asarray(box, float), 3))

    def predict(self, frames, boxes_xyxy):
        self.calls += 1
        gts = [self.by_box[self._key(b)] for b in np.asarray(boxes_xyxy)]
        keypoints = np.stack([g[:, :2] + self.offset for g in gts]).astype(np.float32)
        scores = np.stack([(g[:, 2] > 0).astype(np.float32) for g in gts])
        return keypoints, scores


def test_ground_truth_model_is_a_top_down_model(tmp_path: Path) -> None:
    ann = _synthetic_set(tmp_path)
    assert isinstance(GroundTruthModel(ann), TopDownPoseModel)


# ---------------------------------------------------------------------------------- perfect predictions


@pytest.mark.parametrize("ann_file", ["coco-mini/val.json", "fixtures/small-eval.json"])
def test_ground_truth_predictions_score_perfectly(shared_dir: Path, ann_file: str) -> None:
    path = shared_dir / "data" / ann_file
    report = evaluate(GroundTruthModel(path), path)
    data = json.loads(path.read_text())
    with_keypoints = [a for a in data["annotations"] if a["num_keypoints"] > 0 and not a["iscrowd"]]
    assert report["persons"] == len(with_keypoints)
    for name in ("AP", "AP50", "AP75", "AR", "AR50", "AR75"):
        assert report["oks"][name] == pytest.approx(1.0), name
    for threshold in ("pck@0.1", "pck@0.2"):
        assert all(v == 1.0 for v in report["pck"][threshold].values()), report["pck"][threshold]
    assert report["pck"]["joints"]["overall"] == sum(a["num_keypoints"] for a in with_keypoints)


def test_lsp_reports_pck_per_group_and_no_oks(shared_dir: Path) -> None:
    path = shared_dir / "data/lspet/val.json"
    report = evaluate(GroundTruthModel(path), path)
    assert report["persons"] == 500
    assert report["oks"] is None and "oks_note" in report
    pck_02 = report["pck"]["pck@0.2"]
    assert pck_02["head"] is None  # LSP has no face points
    assert all(pck_02[g] == 1.0 for g in ("overall", "shoulders", "elbows", "wrists", "hips", "knees", "ankles"))
    assert report["pck"]["joints"]["overall"] == 5341  # labelled body joints, data README


def test_wrong_predictions_lower_the_metrics(shared_dir: Path) -> None:
    path = shared_dir / "data/coco-mini/val.json"
    report = evaluate(GroundTruthModel(path, offset_px=np.full((17, 2), 15.0)), path)
    assert report["oks"]["AP"] < 0.9
    assert report["pck"]["pck@0.1"]["overall"] < 1.0


# ---------------------------------------------------------------------------------- exact synthetic cases


def _synthetic_set(folder: Path) -> Path:
    """One 200×80 image with two persons of area 1000 (14 and 3 labelled joints, together all 17)
    and one person without keypoints."""
    cv2.imwrite(str(folder / "a.jpg"), np.zeros((80, 200, 3), np.uint8))
    rng = np.random.default_rng(0)
    first = np.c_[rng.uniform(20, 60, (17, 2)), np.full(17, 2.0)]
    first[[1, 3, 16]] = 0.0  # unlabelled
    second = np.zeros((17, 3))
    second[[1, 3, 16]] = np.c_[rng.uniform(120, 160, (3, 2)), np.ones(3)]
    data = {
        "images": [{"id": 7, "file_name": "a.jpg", "width": 200, "height": 80}],
        "annotations": [
            {"id": 1, "image_id": 7, "category_id": 1, "iscrowd": 0, "bbox": [15.0, 10.0, 50.0, 60.0],
             "area": 1000.0, "num_keypoints": 14, "keypoints": first.reshape(-1).tolist()},
            {"id": 2, "image_id": 7, "category_id": 1, "iscrowd": 0, "bbox": [115.0, 10.0, 50.0, 60.0],
             "area": 1000.0, "num_keypoints": 3, "keypoints": second.reshape(-1).tolist()},
            {"id": 3, "image_id": 7, "category_id": 1, "iscrowd": 0, "bbox": [70.0, 5.0, 20.0, 30.0],
             "area": 600.0, "num_keypoints": 0, "keypoints": [0.0] * 51},
        ],
        "categories": [{"id": 1, "name": "person"}],
    }
    path = folder / "set.json"
    path.write_text(json.dumps(data))
    return path


def test_oks_ap_of_a_known_shift(tmp_path: Path) -> None:
    # Shift each joint so that its OKS term exp(-d² / (2·area·(2σ)²)) is exactly 0.62; each
    # person's OKS (mean over its labelled joints) is then 0.62, which passes the thresholds
    # 0.50, 0.55, 0.60 of the ten 0.50:0.05:0.95 → AP = AR = 3/10, AP50 = 1, AP75 = 0.
    ann = _synthetic_set(tmp_path)
    area = 1000.0
    shift = np.sqrt(-math.log(0.62) * 2.0 * area * (2.0 * COCO_SIGMAS) ** 2)
    model = GroundTruthModel(ann, offset_px=np.c_[shift, np.zeros(17)])
    report = evaluate(model, ann, tmp_path)
    assert report["persons"] == 2 and model.calls == 1  # the person without keypoints is not predicted
    assert report["oks"]["AP"] == pytest.approx(0.3)
    assert report["oks"]["AR"] == pytest.approx(0.3)
    assert report["oks"]["AP50"] == pytest.approx(1.0)
    assert report["oks"]["AP75"] == pytest.approx(0.0)


def test_pck_by_hand() -> None:
    # Person A: box 16×4 → size 8. Person B: box 10×10 → size 10.
    gt = np.zeros((2, 17, 2))
    pred = np.zeros((2, 17, 2))
    labelled = np.zeros((2, 17), bool)
    sizes = np.sqrt(np.array([16.0 * 4.0, 10.0 * 10.0]))
    # A: nose exact (✓ ✓), left shoulder 1.2 px = 0.15 (✗ ✓), left hip 2.4 px = 0.3 (✗ ✗).
    for joint, error in ((0, 0.0), (5, 1.2), (11, 2.4)):
        pred[0, joint] = (error, 0.0)
        labelled[0, joint] = True
    pred[0, 16] = (100.0, 100.0)  # unlabelled: ignored however wrong
    # B: nose 0.5 px = 0.05 (✓ ✓), right shoulder (3, 4) → 5 px = 0.5 (✗ ✗),
    #    left wrist 0.9 px = 0.09 (✓ ✓), right hip 1.5 px = 0.15 (✗ ✓).
    for joint, dxy in ((0, (0.5, 0.0)), (6, (3.0, 4.0)), (9, (0.0, 0.9)), (12, (0.0, -1.5))):
        pred[1, joint] = dxy
        labelled[1, joint] = True
    result = pck(pred, gt, labelled, sizes)
    assert result["pck@0.1"] == {
        "overall": pytest.approx(3 / 7), "head": 1.0, "shoulders": 0.0, "elbows": None,
        "wrists": 1.0, "hips": 0.0, "knees": None, "ankles": None,
    }
    assert result["pck@0.2"] == {
        "overall": pytest.approx(5 / 7), "head": 1.0, "shoulders": 0.5, "elbows": None,
        "wrists": 1.0, "hips": 0.5, "knees": None, "ankles": None,
    }
    assert result["joints"] == {"overall": 7, "head": 2, "shoulders": 2, "elbows": 0, "wrists": 1,
                                "hips": 2, "knees": 0, "ankles": 0}
    assert set(JOINT_GROUPS) | {"overall"} == set(result["pck@0.1"])


def test_pck_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError):
        pck(np.zeros((2, 17, 2)), np.zeros((2, 17, 2)), np.ones((2, 16), bool), np.ones(2))


def test_jitter_of_a_known_trajectory() -> None:
    # x_t = t² along x: second difference 2 px everywhere; size 4 → 0.5 per joint and triple.
    frames = np.array([0, 1, 2, 3, 4])
    xy = np.zeros((5, 2, 2))
    xy[:, :, 0] = (frames ** 2)[:, None]
    np.testing.assert_allclose(second_differences(xy, frames, np.full(5, 4.0)), np.full(3 * 2, 0.5))
    # Constant velocity has no jitter.
    linear = np.zeros((5, 1, 2))
    linear[:, 0] = np.c_[3.0 * frames, -2.0 * frames]
    np.testing.assert_allclose(second_differences(linear, frames, np.full(5, 4.0)), 0.0)


def test_jitter_skips_gaps_and_invalid_joints_and_averages_tracks() -> None:
    # Track 1: frames 0 1 2 _ 4 5 6 (given out of order): triples centred on 1 and 5 only.
    frames = np.array([5, 0, 1, 2, 4, 6])
    xy = np.zeros((6, 2, 2))
    xy[:, 0, 1] = frames ** 2  # joint 0: y = t² → second difference 2
    xy[:, 1, 0] = 10.0 * (frames % 2)  # joint 1: zig-zag 0/10 → second difference 20
    valid = np.ones((6, 2), bool)
    valid[0, 1] = False  # joint 1 invalid at frame 5 → the triple (4, 5, 6) drops joint 1
    values = second_differences(xy, frames, np.full(6, 2.0), valid)
    np.testing.assert_allclose(np.sort(values), [1.0, 1.0, 10.0])
    # Track 2: frames 10, 11, 12, constant → one triple per joint, 0.
    still = (np.zeros((3, 2, 2)), np.array([10, 11, 12]), np.full(3, 2.0), None)
    result = jitter([(xy, frames, np.full(6, 2.0), valid), still])
    assert result == {"jitter": pytest.approx(12.0 / 5.0), "jitter_median": 1.0, "triples": 5}
    assert jitter([]) == {"jitter": None, "jitter_median": None, "triples": 0}


def test_iter_windows_replicates_the_edges() -> None:
    windows = [(t, list(w)) for t, w in iter_windows(iter(range(5)), 3)]
    assert windows == [(0, [0, 0, 1]), (1, [0, 1, 2]), (2, [1, 2, 3]), (3, [2, 3, 4]), (4, [3, 4, 4])]
    assert [w for _, w in iter_windows(iter(range(3)), 5)] == [[0, 0, 0, 1, 2], [0, 0, 1, 2, 2], [0, 1, 2, 2, 2]]
    assert [w for _, w in iter_windows(iter(range(2)), 1)] == [[0], [1]]
    assert list(iter_windows(iter([]), 3)) == []


# ---------------------------------------------------------------------------------- video


class FirstFrameModel:
    """Test double with a 3-frame window: predicts x = 2·(index of the window's first frame), read
    from the frame's grey level (frame t is filled with 20·t)."""

    name = "first-frame"
    window = 3

    def predict(self, frames, boxes_xyxy):
        assert len(frames) == 3
        index = round(float(frames[0].mean()) / 20.0)
        keypoints = np.zeros((len(boxes_xyxy), 17, 2), np.float32)
        keypoints[..., 0] = 2.0 * index
        return keypoints, np.ones((len(boxes_xyxy), 17), np.float32)


def _synthetic_video(folder: Path, num_frames: int = 9) -> tuple[Path, Path]:
    video = folder / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (64, 48))
    assert writer.isOpened()
    for t in range(num_frames):
        writer.write(np.full((48, 64, 3), 20 * t, np.uint8))
    writer.release()
    annotations = []
    for t in range(num_frames):
        keypoints = np.c_[np.full(17, 2.0 * t), np.zeros(17), np.full(17, 0.9)]
        keypoints[16, 2] = 0.1  # below the confidence threshold: never counted
        annotations.append({"id": t + 1, "image_id": t + 1, "category_id": 1, "track_id": 1,
                            "bbox": [10.0, 10.0, 16.0, 16.0], "keypoints": keypoints.reshape(-1).tolist(),
                            "static_track": False})
        # A static track (e.g. a skeleton on a stand) is left out by default.
        annotations.append({"id": 100 + t, "image_id": t + 1, "category_id": 1, "track_id": 2,
                            "bbox": [40.0, 10.0, 16.0, 16.0], "keypoints": [0.0, 0.0, 0.9] * 17,
                            "static_track": True})
    data = {"videos": [{"id": 1, "file_name": "clip.avi", "num_frames": num_frames}],
            "images": [{"id": t + 1, "video_id": 1, "frame_index": t} for t in range(num_frames)],
            "annotations": annotations, "categories": [{"id": 1, "name": "person"}]}
    pseudo = folder / "clip.pseudo.json"
    pseudo.write_text(json.dumps(data))
    return video, pseudo


def test_video_temporal_versus_replicated(tmp_path: Path) -> None:
    video, pseudo = _synthetic_video(tmp_path)
    report = evaluate_video([FirstFrameModel()], pseudo, video)
    assert report["persons"] == 9 and report["frames"] == 9
    assert report["reference_jitter"] == {"jitter": 0.0, "jitter_median": 0.0, "triples": 7 * 16}
    entry = report["models"]["first-frame"]
    # Replicated: the window is frame t three times → x = 2t, the pseudo-label exactly.
    replicated = entry["replicated"]
    assert replicated["pck"]["pck@0.1"]["overall"] == 1.0
    assert replicated["pck"]["joints"]["overall"] == 9 * 16
    assert replicated["jitter"] == 0.0 and replicated["triples"] == 7 * 16
    # Temporal: the first frame is t-1 (0 at t=0) → x = 0, 0, 2, 4, …, 14: off by 2 px = 0.125 of
    # the 16 px box except at t=0; second difference 2 px = 0.125 at t=1 only.
    temporal = entry["temporal"]
    assert temporal["pck"]["pck@0.1"]["overall"] == pytest.approx(1 / 9)
    assert temporal["pck"]["pck@0.2"]["overall"] == 1.0
    assert temporal["jitter"] == pytest.approx(0.125 / 7)
    assert temporal["triples"] == 7 * 16

    with_static = evaluate_video([FirstFrameModel()], pseudo, video, include_static=True)
    assert with_static["persons"] == 18

    text = _render(report | {"kind": "video"})
    assert "temporal" in text and "replicated" in text


def test_video_errors_are_user_errors(tmp_path: Path) -> None:
    video, pseudo = _synthetic_video(tmp_path, num_frames=3)
    with pytest.raises(PoseCliError):
        evaluate_video([FirstFrameModel()], tmp_path / "missing.json", video)
    with pytest.raises(PoseCliError):
        evaluate_video([FirstFrameModel()], pseudo, tmp_path / "missing.mp4")


def _brightness_peaks(calls: list):
    """A heatmap predictor whose peak column is the key crop's grey level / 20 (frame t → column t)."""
    def predictor(crops: np.ndarray) -> np.ndarray:
        calls.append(crops.shape[:2])
        columns = np.round(crops[:, crops.shape[1] // 2].mean(axis=(1, 2, 3)) / 20.0)
        yy, xx = np.mgrid[0:64, 0:48]
        peaks = np.exp(-((xx - 10.0 - columns[:, None, None]) ** 2 + (yy - 30.0) ** 2) / 8.0)
        return np.broadcast_to(peaks[:, None], (len(crops), 17, 64, 48)).astype(np.float32)
    return predictor


def test_video_eval_batches_our_model_over_frames(tmp_path: Path) -> None:
    """Persons of several frames go through the model together, with the same results as one
    frame at a time (a model the evaluation cannot batch)."""
    video, pseudo = _synthetic_video(tmp_path)
    calls: list = []
    model = DiffPoseTopDown(_brightness_peaks(calls), (256, 192), window=3, stride=4, batch_size=4)

    class OneFrameAtATime:
        name, window = "unbatched", 3
        predict = staticmethod(model.predict)

    report = evaluate_video([model, OneFrameAtATime()], pseudo, video)
    # 9 persons per mode: batches of 4, 4 and 1 (temporal T=3, replicated T=1); 18 single calls.
    assert [shape for shape in calls if shape[0] > 1] == [(4, 3), (4, 1), (4, 3), (4, 1)]
    assert len(calls) == 4 + 2 + 18
    batched_entry, single_entry = report["models"]["diffpose"], report["models"]["unbatched"]
    for mode in ("temporal", "replicated"):
        assert batched_entry[mode]["pck"] == single_entry[mode]["pck"]
        assert batched_entry[mode]["jitter"] == single_entry[mode]["jitter"]


def test_video_eval_crops_each_frame_with_its_own_box_once_and_aligns_it_to_the_key_crop(tmp_path: Path) -> None:
    """A still square, boxes that wobble and rescale from frame to frame (a detector's): each frame
    of a window is cropped with its track's own box, encoded once for all windows, and its
    findings are mapped into the key crop, so a model averaging its window lands on the square."""
    import torch

    video = tmp_path / "still.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (128, 96))
    frame = np.zeros((96, 128, 3), np.uint8)
    frame[40:56, 56:72] = 255  # centre (63.5, 47.5)
    for _ in range(7):
        writer.write(frame)
    writer.release()
    rng = np.random.default_rng(2)
    annotations = []
    for t in range(7):
        if t == 3:
            continue  # no box of the track here: windows holding frame 3 use their key frame instead
        dx, dy, grow = rng.uniform(-6, 6), rng.uniform(-6, 6), rng.uniform(-8, 8)
        annotations.append({"id": t + 1, "image_id": t + 1, "category_id": 1, "track_id": 1,
                            "bbox": [38.0 + dx, 22.0 + dy, 50.0 + grow, 50.0 + grow],
                            "keypoints": [63.5, 47.5, 0.9] * 17, "static_track": False})
    pseudo = tmp_path / "still.pseudo.json"
    pseudo.write_text(json.dumps({"videos": [{"id": 1, "file_name": "still.avi", "num_frames": 7}],
                                  "images": [{"id": t + 1, "video_id": 1, "frame_index": t} for t in range(7)],
                                  "annotations": annotations, "categories": [{"id": 1, "name": "person"}]}))
    encoded = []

    def centroid(crops: np.ndarray) -> np.ndarray:  # [M, H, W, 3] → [M, 2] bright-pixel centroid (x, y)
        ys, xs = np.mgrid[0:crops.shape[1], 0:crops.shape[2]]
        mass = crops[..., 0].astype(np.float64)
        return np.stack([(mass * xs).sum((1, 2)), (mass * ys).sum((1, 2))], -1) / mass.sum((1, 2))[:, None]

    def peaks(xy_input: np.ndarray) -> np.ndarray:  # [N, 2] input pixels → [N, 17, 16, 16] heatmaps
        xy = (xy_input - 1.5) / 4.0
        yy, xx = np.mgrid[0:16, 0:16]
        g = np.exp(-((xx - xy[:, 0, None, None]) ** 2 + (yy - xy[:, 1, None, None]) ** 2) / (2 * 1.5 ** 2))
        return np.repeat(g[:, None], 17, axis=1).astype(np.float32)

    def encoder(crops: np.ndarray) -> torch.Tensor:
        encoded.append(len(crops))
        return torch.from_numpy(centroid(crops))

    def from_features(features: torch.Tensor, to_key: np.ndarray) -> np.ndarray:
        xy = features.numpy()  # [N, T, 2], each in its own crop → the key crop, then the window's mean
        aligned = np.einsum("ntij,ntj->nti", to_key[..., :2], xy) + to_key[..., 2]
        return peaks(aligned.mean(axis=1))

    model = DiffPoseTopDown(lambda crops: peaks(centroid(crops[:, crops.shape[1] // 2])), (64, 64), window=3,
                            stride=4, batch_size=4, enlarge=1.0, encoder=encoder, from_features=from_features)
    report = evaluate_video([model], pseudo, video)
    temporal, replicated = report["models"]["diffpose"]["temporal"], report["models"]["diffpose"]["replicated"]
    assert replicated["jitter"] < 5e-3  # the key crop's own view of the square (JPEG-compressed frames)
    assert temporal["jitter"] < 1e-3  # own crops left unaligned wobble with the boxes (0.18)
    assert temporal["pck"]["pck@0.1"]["overall"] == 1.0
    # The 6 frames with a box, once each (frame 3 has none: its windows' key frames stand in).
    assert sum(encoded) == 6


# ---------------------------------------------------------------------------------- our model's adapter


def test_diffpose_adapter_maps_heatmap_peaks_to_the_frame() -> None:
    seen = []

    def predictor(crops: np.ndarray) -> np.ndarray:
        seen.append(crops.shape)
        # A Gaussian peak at heatmap (23.5, 31.5): the centre of a 48×64 map, i.e. input pixel
        # (95.5, 127.5), the centre of the 192×256 crop, i.e. the box centre in the frame.
        yy, xx = np.mgrid[0:64, 0:48]
        peak = np.exp(-((xx - 23.5) ** 2 + (yy - 31.5) ** 2) / (2 * 2.0 ** 2)).astype(np.float32)
        return np.broadcast_to(peak, (len(crops), 17, 64, 48)).copy()

    model = DiffPoseTopDown(predictor, (256, 192), window=3, stride=4, batch_size=2)
    image = np.zeros((300, 400, 3), np.uint8)
    boxes = np.array([[10.0, 20.0, 110.0, 220.0], [200.0, 50.0, 260.0, 290.0], [0.0, 0.0, 50.0, 50.0]])
    keypoints, scores = model.predict([image], boxes)
    assert seen == [(2, 1, 256, 192, 3), (1, 1, 256, 192, 3)]  # a still frame goes as T=1, batches of 2
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    np.testing.assert_allclose(keypoints, np.broadcast_to(centres[:, None], (3, 17, 2)), atol=0.05)
    assert keypoints.shape == (3, 17, 2) and scores.shape == (3, 17)
    seen.clear()
    others = [np.full_like(image, v) for v in (1, 2, 3, 4, 5)]
    model.predict(others, boxes[:1])  # five real frames fitted to the model's three
    assert seen == [(1, 3, 256, 192, 3)]


# ---------------------------------------------------------------------------------- reports


def _render(report: dict) -> str:
    console = Console(record=True, width=250)
    console.print(render_table(report))
    return console.export_text()


def test_render_table_of_an_image_report(tmp_path: Path) -> None:
    ann = _synthetic_set(tmp_path)
    result = evaluate(GroundTruthModel(ann), ann, tmp_path)
    report = {"kind": "images", "boxes": "gt", "dataset": {"ann_file": str(ann), "persons": 2},
              "models": {"ground-truth": result}}
    text = _render(report)
    assert "ground-truth" in text and "1.000" in text and "shoulders" in text


def test_evaluate_rejects_bad_arguments(tmp_path: Path) -> None:
    ann = _synthetic_set(tmp_path)
    with pytest.raises(PoseCliError):
        evaluate(GroundTruthModel(ann), ann, tmp_path, boxes="detector")
    with pytest.raises(PoseCliError):
        evaluate(GroundTruthModel(ann), ann, tmp_path, boxes="predicted")
    with pytest.raises(PoseCliError):
        evaluate(GroundTruthModel(ann), tmp_path / "missing.json", tmp_path)
    (tmp_path / "a.jpg").unlink()
    with pytest.raises(PoseCliError, match="cannot read image"):
        evaluate(GroundTruthModel(ann), ann, tmp_path)


@pytest.mark.slow
def test_run_eval_with_a_baseline_writes_the_report(shared_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("ai_edge_litert", reason="the TFLite runtime (ai-edge-litert) is not installed")
    out = tmp_path / "report.json"
    report = run_eval(None, shared_dir / "data/fixtures/small-eval.json", baselines=("movenet",),
                      baseline_dirs=[shared_dir / "weights"], out_json=out, include_model=False)
    assert json.loads(out.read_text()) == json.loads(json.dumps(report))
    assert report["dataset"]["persons"] == 31
    movenet = report["models"]["movenet"]
    # Measured 0.52 / 0.82; a broken crop or coordinate mapping drops these far below.
    assert movenet["oks"]["AP"] > 0.4
    assert movenet["pck"]["pck@0.2"]["overall"] > 0.7
    assert "movenet" in _render(report)


def test_left_right_spread_sees_collapsed_limbs() -> None:
    rng = np.random.default_rng(0)
    kp = rng.uniform(0, 100, (40, 17, 2))
    size = np.full(40, 50.0)
    # Ankles 10 px apart (0.2 of the box), wrists 25 px apart in x and y (0.707 of the box).
    kp[:, 16] = kp[:, 15] + [10.0, 0.0]
    kp[:, 10] = kp[:, 9] + [25.0, 25.0]
    spread = left_right_spread(kp, size)
    assert spread["ankles"] == pytest.approx({"p25": 0.2, "p50": 0.2, "p75": 0.2})
    assert spread["wrists"]["p50"] == pytest.approx(25 * math.sqrt(2) / 50)
    # Both legs on one chain for half the persons: the lower quartile collapses, the upper does not.
    kp[:20, 16] = kp[:20, 15]
    collapsed = left_right_spread(kp, size)["ankles"]
    assert collapsed["p25"] == pytest.approx(0.0) and collapsed["p75"] == pytest.approx(0.2)
    # Bigger boxes, same pixels: smaller spread.
    assert left_right_spread(kp, size * 2)["wrists"]["p50"] == pytest.approx(spread["wrists"]["p50"] / 2)


def test_jitter_by_track_groups_rows_of_several_tracks() -> None:
    # Two interleaved tracks: rows of one track only form triples with each other.
    rng = np.random.default_rng(9)
    xy = rng.normal(0.0, 3.0, (8, 17, 2))
    ids = np.array([1, 2, 1, 2, 1, 2, 1, 2])
    frames = np.array([0, 0, 1, 1, 2, 2, 3, 3])
    sizes, valid = np.full(8, 10.0), np.ones((8, 17), bool)
    expected = jitter([(xy[ids == 1], frames[ids == 1], sizes[ids == 1], None),
                       (xy[ids == 2], frames[ids == 2], sizes[ids == 2], None)])
    assert jitter_by_track(xy, ids, frames, sizes, valid) == expected
    assert expected["triples"] == 2 * 2 * 17
    use = np.array([True, True, True, True, True, True, False, True])  # track 1 loses its last row
    assert jitter_by_track(xy, ids, frames, sizes, valid, use=use)["triples"] == 3 * 17
