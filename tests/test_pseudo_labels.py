import json

import numpy as np
import pytest

from posecli.errors import PoseCliError
from posecli.pseudo_labels import read_pseudo_labels


def _write(path, annotations, images=None, video=None):
    path.write_text(json.dumps({
        "videos": [video or {"id": 1, "file_name": "clip.mp4", "fps": 25.0, "width": 640, "height": 480,
                             "num_frames": 6}],
        "images": images if images is not None else [{"id": 10 + i, "frame_index": i} for i in range(8)],
        "annotations": annotations, "categories": [{"id": 1, "name": "person"}]}))
    return path


def _ann(image_id, track_id, static=False, x=10.0):
    return {"image_id": image_id, "track_id": track_id, "bbox": [x, 20.0, 30.0, 60.0],
            "keypoints": list(np.arange(51, dtype=float)), "static_track": static}


def test_persons_are_read_by_frame_index_with_static_tracks_apart(tmp_path):
    path = _write(tmp_path / "clip.pseudo.json",
                  [_ann(12, 1), _ann(12, 2, static=True), _ann(15, 1, x=5.5), _ann(17, 3)])
    labels = read_pseudo_labels(path)
    assert (labels.video_file, labels.fps, labels.width, labels.height) == ("clip.mp4", 25.0, 640, 480)
    assert labels.num_frames == 8  # labels reach frame 7, past the announced 6 frames
    assert [(p.frame, p.track_id, p.static) for p in labels.persons] == [(2, 1, False), (2, 2, True),
                                                                        (5, 1, False), (7, 3, False)]
    assert {f: [p.track_id for p in ps] for f, ps in labels.by_frame().items()} == {2: [1], 5: [1], 7: [3]}
    assert [p.track_id for p in labels.by_frame(include_static=True)[2]] == [1, 2]
    assert [p.track_id for p in labels.moving()] == [1, 1, 3]
    person = labels.persons[2]
    np.testing.assert_array_equal(person.box_xyxy, [5.5, 20.0, 35.5, 80.0])
    assert person.keypoints.shape == (17, 3) and person.keypoints[1, 0] == 3.0


def test_the_video_entry_may_be_left_out(tmp_path):
    path = tmp_path / "clip.pseudo.json"
    path.write_text(json.dumps({"images": [{"id": 1, "frame_index": 3}], "annotations": [_ann(1, 4)]}))
    labels = read_pseudo_labels(path)
    assert (labels.video_file, labels.fps, labels.width, labels.num_frames) == (None, 30.0, None, 4)


def test_a_shared_clip_reads(shared_dir):
    labels = read_pseudo_labels(shared_dir / "data" / "videos" / "sports2d_demo.pseudo.json")
    assert labels.video_file == "sports2d_demo.mp4" and labels.num_frames == 230
    assert all(p.keypoints.shape == (17, 3) for p in labels.persons)


@pytest.mark.parametrize("content", ["not json", '{"images": []}', '{"videos": [1], "images": [], "annotations": []}'])
def test_a_file_in_another_layout_is_a_one_line_error(tmp_path, content):
    path = tmp_path / "bad.pseudo.json"
    path.write_text(content)
    with pytest.raises(PoseCliError, match="not a video pseudo-label file"):
        read_pseudo_labels(path)


def test_a_missing_file_or_an_unknown_image_is_an_error(tmp_path):
    with pytest.raises(PoseCliError, match="not found"):
        read_pseudo_labels(tmp_path / "missing.pseudo.json")
    with pytest.raises(PoseCliError, match="not a video pseudo-label file"):
        read_pseudo_labels(_write(tmp_path / "x.pseudo.json", [_ann(99, 1)]))
