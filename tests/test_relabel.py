"""Thunder teacher labels for the clips, and their smoothing over time."""

import json
from pathlib import Path

import numpy as np
import pytest

from posecli.models.movenet import load_movenet
from posecli.train.relabel import relabel_clip, smooth_labels


def _clip_labels(path: Path, tracks: dict[int, list[int]], keypoints) -> Path:  # noqa: ANN001 - callable
    images = [{"id": f + 1, "video_id": 1, "frame_index": f, "width": 100, "height": 100} for f in range(40)]
    anns = [{"id": len(images) * t + f, "image_id": f + 1, "category_id": 1, "track_id": t,
             "bbox": [0, 0, 10, 10], "keypoints": keypoints(t, f)} for t, frames in tracks.items() for f in frames]
    path.write_text(json.dumps({"videos": [{"id": 1, "file_name": "clip.mp4"}], "images": images,
                                "annotations": anns}))
    return path


def test_smoothing_follows_each_track_and_keeps_confidences(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    noise = rng.normal(0, 1.0, (2, 40, 17, 2))

    def keypoints(track: int, frame: int) -> list[float]:
        line = np.array([10.0 + 2.0 * frame, 50.0 + 100 * track])  # moving right, tracks far apart
        xy = line + noise[track, frame]
        return np.concatenate([xy, np.full((17, 1), 0.25 + 0.5 * track)], axis=1).ravel().tolist()

    src = _clip_labels(tmp_path / "raw.json", {0: list(range(40)), 1: list(range(5, 20)) + list(range(30, 40))},
                       keypoints)
    smooth_labels(src, tmp_path / "smooth.json", window=7)
    out = json.loads((tmp_path / "smooth.json").read_text())
    assert out["info"]["teacher"]["smooth_window"] == 7
    frame_of = {im["id"]: im["frame_index"] for im in out["images"]}
    raw_err, smooth_err = [], []
    for before, after in zip(json.loads(src.read_text())["annotations"], out["annotations"]):
        f, t = frame_of[after["image_id"]], after["track_id"]
        truth = np.array([10.0 + 2.0 * f, 50.0 + 100 * t])
        kp_b, kp_a = np.array(before["keypoints"]).reshape(17, 3), np.array(after["keypoints"]).reshape(17, 3)
        np.testing.assert_array_equal(kp_a[:, 2], kp_b[:, 2])  # confidences unchanged
        raw_err.append(np.abs(kp_b[:, :2] - truth).mean())
        smooth_err.append(np.abs(kp_a[:, :2] - truth).mean())
    # Smoothing removes most of the noise and never mixes the two tracks (100 px apart).
    assert np.mean(smooth_err) < 0.7 * np.mean(raw_err)  # measured 0.61 (window 7, order 2)
    assert max(smooth_err) < 5.0


@pytest.mark.slow
def test_thunder_labels_of_a_real_clip_agree_with_the_shared_teacher(shared_dir: Path, tmp_path: Path) -> None:
    source = shared_dir / "data" / "videos" / "pose2sim_SinglePerson_cam01.pseudo.json"
    model = load_movenet(shared_dir / "weights" / "movenet-thunder.json")
    summary = relabel_clip(source, tmp_path / "thunder.json", model)
    ours = json.loads((tmp_path / "thunder.json").read_text())
    shared = json.loads(source.read_text())
    assert summary["annotations"] == len(shared["annotations"]) == len(ours["annotations"])
    assert Path(ours["videos"][0]["file_name"]).is_file()  # absolute: the file can live anywhere
    errors = []
    for a, b in zip(ours["annotations"], shared["annotations"]):
        assert (a["id"], a["track_id"], a["bbox"]) == (b["id"], b["track_id"], b["bbox"])
        ka, kb = np.array(a["keypoints"]).reshape(17, 3), np.array(b["keypoints"]).reshape(17, 3)
        assert ((ka[:, 2] >= 0) & (ka[:, 2] <= 1)).all()
        good = kb[:, 2] >= 0.5
        errors.append(np.linalg.norm(ka[good, :2] - kb[good, :2], axis=1) / np.sqrt(b["bbox"][2] * b["bbox"][3]))
    # Two MoveNets on the same boxes of an easy single-person clip: the same joints, a few % apart.
    assert np.median(np.concatenate(errors)) < 0.05
