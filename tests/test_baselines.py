import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from posecli.eval.baselines import (
    BlazePoseFull,
    MoveNetSinglePose,
    find_baseline_file,
    load_baseline,
)
from posecli.errors import PoseCliError
from posecli.eval.evaluate import TopDownPoseModel

cv2.setNumThreads(1)

# Two upright, fully visible persons of COCO-mini val (annotation ids); both baselines find them well.
UPRIGHT_PERSONS = (201384, 1221298)


@pytest.fixture(scope="module")
def weights_dir(shared_dir: Path) -> Path:
    pytest.importorskip("ai_edge_litert", reason="the TFLite runtime (ai-edge-litert) is not installed")
    return shared_dir / "weights"


@pytest.fixture(scope="module")
def upright(shared_dir: Path) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(image BGR, box xyxy, GT keypoints 17×3) of each upright person."""
    data = json.loads((shared_dir / "data/coco-mini/val.json").read_text())
    images = {i["id"]: i for i in data["images"]}
    out = []
    for ann in data["annotations"]:
        if ann["id"] in UPRIGHT_PERSONS:
            image = cv2.imread(str(shared_dir / "data/coco-mini/val2017" / images[ann["image_id"]]["file_name"]))
            x, y, w, h = ann["bbox"]
            out.append((image, np.array([x, y, x + w, y + h]), np.array(ann["keypoints"], float).reshape(17, 3)))
    assert len(out) == len(UPRIGHT_PERSONS)
    return out


@pytest.fixture(scope="module", params=["movenet", "thunder", "lightning", "blazepose"])
def baseline(request, weights_dir: Path):
    return load_baseline(request.param, [weights_dir])


def test_baseline_is_a_top_down_model(baseline) -> None:
    assert isinstance(baseline, TopDownPoseModel)
    assert baseline.window == 1


def test_keypoints_lie_on_the_person_with_upright_structure(baseline, upright) -> None:
    for image, box, gt in upright:
        keypoints, scores = baseline.predict([image], box[None])
        assert keypoints.shape == (1, 17, 2) and scores.shape == (1, 17)
        assert keypoints.dtype == np.float32 and scores.dtype == np.float32
        assert np.all((scores >= 0) & (scores <= 1))
        kp = keypoints[0]
        # Inside the box grown by 10 % of its size on each side.
        margin = 0.1 * (box[2:] - box[:2])
        assert np.all(kp >= box[:2] - margin) and np.all(kp <= box[2:] + margin)
        # Upright person: head above shoulders above hips above knees above ankles (y grows down).
        assert _upright(gt[:, 1])  # the fixture's premise
        assert _upright(kp[:, 1])
        # Close to the human labels: median error under 5 % of the person size.
        size = np.sqrt(np.prod(box[2:] - box[:2]))
        labelled = gt[:, 2] > 0
        error = np.linalg.norm(kp - gt[:, :2], axis=1)[labelled] / size
        assert np.median(error) < 0.05


def _upright(y: np.ndarray) -> bool:
    """Nose above both shoulders; shoulders, hips, knees, ankles (pair means) in that order downwards."""
    pairs = [y[[5, 6]].mean(), y[[11, 12]].mean(), y[[13, 14]].mean(), y[[15, 16]].mean()]
    return bool(y[0] < y[[5, 6]].min() and all(a < b for a, b in zip(pairs, pairs[1:])))


def test_only_the_key_frame_is_used(baseline, upright) -> None:
    image, box, _ = upright[0]
    other = np.zeros_like(image)
    alone, alone_scores = baseline.predict([image], box[None])
    windowed, windowed_scores = baseline.predict([other, image, other], box[None])
    np.testing.assert_array_equal(alone, windowed)
    np.testing.assert_array_equal(alone_scores, windowed_scores)


def test_several_boxes_are_independent(baseline, upright) -> None:
    image, box, _ = upright[0]
    shifted = box + np.array([-20.0, -10.0, 15.0, 5.0])
    both, _ = baseline.predict([image], np.stack([box, shifted]))
    first, _ = baseline.predict([image], box[None])
    np.testing.assert_allclose(both[0], first[0])
    assert baseline.predict([image], np.zeros((0, 4)))[0].shape == (0, 17, 2)


def test_find_baseline_file_verifies_the_checksum(tmp_path: Path, weights_dir: Path) -> None:
    assert find_baseline_file("movenet", [weights_dir]) == weights_dir / "movenet_lightning_int8.tflite"
    (tmp_path / "movenet_lightning_int8.tflite").write_bytes(b"not a model")
    with pytest.raises(PoseCliError, match="sha256"):
        find_baseline_file("movenet", [tmp_path])


def test_find_baseline_file_says_where_to_get_a_missing_file(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("POSECLI_HOME", raising=False)
    with pytest.raises(PoseCliError, match="github.com/Kazuhito00"):
        find_baseline_file("movenet", [tmp_path], allow_download=False)
    with pytest.raises(PoseCliError, match="unknown baseline"):
        find_baseline_file("openpose", [tmp_path])


def test_load_baseline_by_name(weights_dir: Path) -> None:
    assert isinstance(load_baseline("blazepose", [weights_dir]), BlazePoseFull)
    for name, side in (("movenet", 192), ("lightning", 192), ("thunder", 256)):
        model = load_baseline(name, [weights_dir])
        assert isinstance(model, MoveNetSinglePose) and model.name == name and model.input_side == side
