"""posecli bench: the report's contents, the baseline beside it, and the accuracy scoring."""

import json

import numpy as np
import pytest

from conftest import cut_clip
from posecli.eval.bench import repeated_frames, run_bench, score_against_pseudo_labels
from posecli.config import PipelineConfig
from posecli.errors import PoseCliError

CLIP = "sports2d_demo"
FIRST, FRAMES = 60, 8  # one walker in view in every frame


@pytest.fixture(scope="module")
def short_clip(shared_dir, tmp_path_factory):
    """Frames 60-67 of sports2d_demo.mp4, re-encoded, with their pseudo-labels renumbered from 0."""
    folder = tmp_path_factory.mktemp("clip")
    path = cut_clip(shared_dir / "data" / "videos" / f"{CLIP}.mp4", folder / "short.mp4", FIRST, FRAMES)
    data = json.loads((shared_dir / "data" / "videos" / f"{CLIP}.pseudo.json").read_text())
    images = [dict(i, frame_index=i["frame_index"] - FIRST) for i in data["images"]
              if FIRST <= i["frame_index"] < FIRST + FRAMES]
    ids = {i["id"] for i in images}
    data.update(images=images, annotations=[a for a in data["annotations"] if a["image_id"] in ids])
    (folder / "short.pseudo.json").write_text(json.dumps(data))
    return path


@pytest.fixture(scope="module")
def pseudo(shared_dir):
    return shared_dir / "data" / "videos" / f"{CLIP}.pseudo.json"


def _recorded_from_pseudo_labels(pseudo, frames=None, shift=(0.0, 0.0)):
    data = json.loads(pseudo.read_text())
    frame_of = {image["id"]: image["frame_index"] for image in data["images"]}
    recorded = {}
    for ann in data["annotations"]:
        frame = frame_of[ann["image_id"]]
        if frames is not None and frame not in frames:
            continue
        x, y, w, h = ann["bbox"]
        kp = np.asarray(ann["keypoints"], np.float32).reshape(17, 3)
        boxes, xy, scores, ids = recorded.get(frame, (np.zeros((0, 4)), np.zeros((0, 17, 2)), np.zeros((0, 17)),
                                                      np.zeros(0, np.int64)))
        recorded[frame] = (np.vstack([boxes, [[x, y, x + w, y + h]]]), np.concatenate([xy, kp[None, :, :2] + shift]),
                           np.vstack([scores, kp[None, :, 2]]), np.append(ids, ann["track_id"]))
    return recorded


def test_the_pseudo_labels_score_perfectly_against_themselves(pseudo):
    scored = score_against_pseudo_labels(_recorded_from_pseudo_labels(pseudo), pseudo)
    assert scored["recall"] == 1.0 and scored["matched"] == scored["persons"] == 232
    assert scored["pck"]["pck@0.1"]["overall"] == 1.0 and scored["pck_all"]["pck@0.1"]["overall"] == 1.0
    assert scored["jitter"] == pytest.approx(scored["reference_jitter"])


def test_missing_persons_count_as_wrong_in_pck_all_only(pseudo):
    recorded = _recorded_from_pseudo_labels(pseudo, shift=(1000.0, 0.0))  # every joint far off
    recorded.update(_recorded_from_pseudo_labels(pseudo, frames=range(100)))  # right in the first 100 frames
    for frame in range(100, 120):
        recorded[frame] = (np.zeros((0, 4)), np.zeros((0, 17, 2)), np.zeros((0, 17)), np.zeros(0, np.int64))
    scored = score_against_pseudo_labels(recorded, pseudo)
    assert scored["matched"] < scored["persons"]
    pck, pck_all = scored["pck"]["pck@0.2"]["overall"], scored["pck_all"]["pck@0.2"]["overall"]
    assert 0.0 < pck_all < pck < 1.0


def test_repeated_frames_keep_counting(short_clip):
    frames, info = repeated_frames(short_clip, 3)
    frames = list(frames)
    assert info.num_frames == 3 * FRAMES
    assert [f.index for f in frames] == list(range(3 * FRAMES))
    times = [f.time_s for f in frames]
    assert all(b > a for a, b in zip(times, times[1:]))


def test_tiled_frames_repeat_the_image_side_by_side(short_clip):
    plain = next(iter(repeated_frames(short_clip, 1)[0]))
    frames, info = repeated_frames(short_clip, 2, tile=2)
    first = next(iter(frames))
    h, w = plain.image.shape[:2]
    assert (info.height, info.width) == (2 * h, 2 * w) and first.image.shape == (2 * h, 2 * w, 3)
    for y in (0, h):
        for x in (0, w):
            np.testing.assert_array_equal(first.image[y:y + h, x:x + w], plain.image)


def test_tiling_refuses_labels_of_the_untiled_clip(short_clip):
    pseudo = short_clip.with_suffix(".pseudo.json")
    with pytest.raises(PoseCliError, match="--tile needs the detector"):
        run_bench(short_clip, PipelineConfig(boxes_file=pseudo), tile=2, baseline=False)


def test_report_has_stages_settings_memory_baseline_and_accuracy(short_clip, shared_dir, tiny_weights):
    pseudo = short_clip.with_suffix(".pseudo.json")
    config = PipelineConfig(weights=tiny_weights, device="cpu", window=3, steps=1, boxes_file=pseudo,
                            neighbour_crops="own", threads=1)
    report = run_bench(short_clip, config, repeat=2, baseline=True,
                       baseline_dirs=(shared_dir / "weights",), pseudo_labels=pseudo)
    # The boxes file covers the first pass (frame indices 0-7) only.
    assert report["frames"] == 2 * FRAMES and report["person_frames"] == FRAMES
    assert report["fps"] > 0 and report["person_fps"] > 0 and report["cpu_seconds"] > 0
    for stage in ("decode", "detect", "crop", "backbone", "denoise", "dark", "track", "write"):
        assert stage in report["stage_seconds"], stage
    assert report["peak_rss_mib"] >= report["rss_before_run_mib"] > 0
    settings = report["settings"]
    assert settings["device"] == "cpu" and settings["window"] == 3 and settings["steps"] == 1
    assert settings["neighbour_crops"] == "own" and settings["detect_every"] == 1 and settings["threads"] == 1
    assert settings["batch_size"] == 16 and settings["dtype"] in ("bfloat16", "float32")
    assert set(report["baselines"]) == {"movenet", "thunder"}
    for name, base in report["baselines"].items():
        assert base["name"].endswith(f"+ {name}")
        assert base["frames"] == 2 * FRAMES and base["person_frames"] == FRAMES
        assert base["speed_ratio"] > 0 and base["cpu_ratio"] > 0
    accuracy = report["accuracy"]  # first pass only
    assert accuracy["persons"] == FRAMES and accuracy["matched"] == FRAMES
    json.dumps(report)  # JSON-able
