"""The command line on bad and good input: one-line errors, exit codes, complete outputs."""

import json
import shutil
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import REPO
from typer.testing import CliRunner

from posecli.cli import app
from posecli.sinks import read_posecli_json

runner = CliRunner()


@pytest.fixture
def env(detector_home, monkeypatch):
    """POSECLI_HOME with the detector (as if downloaded), and no network."""
    home = detector_home

    def offline(*args, **kwargs):
        raise urllib.error.URLError("network is unreachable")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    return home


def blank_video(path: Path, frames: int = 6, size=(160, 120)) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, size)
    for i in range(frames):
        writer.write(np.full((size[1], size[0], 3), 40 + 10 * i, np.uint8))
    writer.release()
    return path


def run(*args: str):
    return runner.invoke(app, ["run", *args])


def error_line(result) -> str:
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert lines, result.output
    assert "Traceback" not in result.output
    return lines[0]


def test_version_and_help():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.startswith("posecli ")
    assert runner.invoke(app, ["run", "--help"]).exit_code == 0


def test_missing_input_is_one_line_error(env, tmp_path):
    result = run(str(tmp_path / "nope.mp4"), "--out", str(tmp_path / "out"))
    assert result.exit_code == 1
    assert "no such file" in error_line(result)


def test_text_file_posing_as_video(env, tmp_path):
    fake = tmp_path / "notes.mp4"
    fake.write_text("this is not a video\n" * 50)
    result = run(str(fake), "--out", str(tmp_path / "out"))
    assert result.exit_code == 1
    assert "notes.mp4" in error_line(result)
    assert not list((tmp_path / "out").glob("*")) if (tmp_path / "out").exists() else True


def test_unsupported_file_type(env, tmp_path):
    other = tmp_path / "data.txt"
    other.write_text("x")
    result = run(str(other), "--out", str(tmp_path / "out"))
    assert result.exit_code == 1
    assert "not a video or image" in error_line(result)


def test_zero_frame_video(env, tmp_path):
    empty = blank_video(tmp_path / "empty.mp4", frames=0)
    result = run(str(empty), "--out", str(tmp_path / "out"))
    assert result.exit_code == 1
    error_line(result)


def test_video_without_people_gives_valid_empty_output(env, tmp_path):
    video = blank_video(tmp_path / "blank.mp4")
    out = tmp_path / "out"
    result = run(str(video), "--out", str(out), "--format", "json,csv")
    assert result.exit_code == 0, result.output
    doc = read_posecli_json(out / "blank.json")
    assert len(doc["frames"]) == 6
    assert all(frame["poses"] == [] for frame in doc["frames"])
    assert (out / "blank.csv").read_text().splitlines()[0].startswith("frame,time_s,track_id")
    warnings = [line for line in result.output.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and f"{video}: no people found in 6 frame(s)" in warnings[0], result.output


def test_an_input_with_people_gives_no_nobody_warning(env, tmp_path, shared_dir):
    photo = shared_dir / "data" / "fixtures" / "images" / "coco_000000000785.jpg"
    result = run(str(photo), "--out", str(tmp_path / "out"))
    assert result.exit_code == 0, result.output
    assert "no people found" not in result.output


def test_truncated_video_keeps_the_frames_read(env, tmp_path, shared_dir):
    data = (shared_dir / "data" / "videos" / "vtest.mp4").read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 20])  # 32 decodable frames of a crowd, then a broken packet
    out = tmp_path / "out"
    result = run(str(cut), "--out", str(out), "--window", "1")
    if result.exit_code == 1:  # nothing decodable in the first part: a clean one-line error is right
        error_line(result)
        return
    assert result.exit_code == 0, result.output
    assert "warning: cut.mp4: decoding stopped early" in result.output
    doc = read_posecli_json(out / "cut.json")
    assert 0 < len(doc["frames"]) < 795


def test_unwritable_output_directory(env, tmp_path):
    video = blank_video(tmp_path / "blank.mp4")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = run(str(video), "--out", str(blocker / "sub"))
    assert result.exit_code == 1
    assert "output directory" in error_line(result)


def test_weights_missing_offline_says_how_to_fix(env, tmp_path):
    (env / "weights" / "yolox_nano.onnx").unlink()
    video = blank_video(tmp_path / "blank.mp4")
    result = run(str(video), "--out", str(tmp_path / "out"))
    assert result.exit_code == 1
    line = error_line(result)
    assert "yolox_nano.onnx" in line and "download" in line


def test_bad_boxes_file(env, tmp_path):
    video = blank_video(tmp_path / "blank.mp4")
    boxes = tmp_path / "boxes.json"
    boxes.write_text('[{"frame": 0, "bbox": [1, 2, -3, 4]}]')
    result = run(str(video), "--boxes", str(boxes), "--out", str(tmp_path / "out"))
    assert result.exit_code == 1
    assert "boxes.json" in error_line(result)


def test_boxes_file_replaces_the_detector(env, tmp_path):
    video = blank_video(tmp_path / "blank.mp4")
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps([{"frame": i, "bbox": [40, 20, 50, 90], "score": 0.9} for i in range(6)]))
    out = tmp_path / "out"
    result = run(str(video), "--boxes", str(boxes), "--out", str(out))
    assert result.exit_code == 0, result.output
    frames = read_posecli_json(out / "blank.json")["frames"]
    assert [len(f["poses"]) for f in frames] == [1] * 6
    assert frames[0]["poses"][0]["bbox"] == pytest.approx([40, 20, 90, 110])


def test_batch_continues_after_a_bad_input_and_reports_it(env, tmp_path):
    folder = tmp_path / "videos"
    folder.mkdir()
    blank_video(folder / "a.mp4")
    (folder / "b.mp4").write_text("garbage")
    out = tmp_path / "out"
    result = run(str(folder), "--out", str(out))
    assert result.exit_code == 1
    assert "b.mp4" in error_line(result)
    assert (out / "a.json").is_file()
    assert not (out / "b.json").exists()
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp files left


def test_skip_existing_skips_complete_outputs(env, tmp_path):
    video = blank_video(tmp_path / "blank.mp4")
    out = tmp_path / "out"
    assert run(str(video), "--out", str(out)).exit_code == 0
    before = (out / "blank.json").stat().st_mtime_ns
    result = run(str(video), "--out", str(out), "--skip-existing")
    assert result.exit_code == 0
    assert "skipped" in result.output
    assert (out / "blank.json").stat().st_mtime_ns == before
    # Nothing left to do: the model is not even loaded (these weights do not exist).
    missing = tmp_path / "no-such-weights.pt"
    assert run(str(video), "--out", str(out), "--skip-existing", "--weights", str(missing)).exit_code == 0
    other = blank_video(tmp_path / "other.mp4")
    failed = run(str(video), str(other), "--out", str(out), "--skip-existing", "--weights", str(missing))
    assert failed.exit_code == 1 and "no-such-weights" in failed.output


def test_image_folder_input_records_file_names(env, tmp_path, shared_dir):
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("000000000785.jpg", "000000040083.jpg"):
        shutil.copy(shared_dir / "data" / "fixtures" / "images" / f"coco_{name}", folder / name)
    out = tmp_path / "out"
    result = run(str(folder), "--out", str(out), "--window", "1")
    assert result.exit_code == 0, result.output
    doc = read_posecli_json(out / "photos.json")
    assert doc["source"]["kind"] == "images"
    assert [f["file"] for f in doc["frames"]] == ["000000000785.jpg", "000000040083.jpg"]
    assert all(len(f["poses"]) >= 1 for f in doc["frames"])


def test_interrupted_run_leaves_no_files(env, tmp_path):
    from posecli import Pipeline, PipelineConfig

    video = blank_video(tmp_path / "blank.mp4")
    out = tmp_path / "out"
    pipeline = Pipeline(PipelineConfig(formats=("json", "jsonl", "csv", "npz"), overlay=True))

    def interrupt(done, total):
        if done == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        pipeline.process(video, out, progress=interrupt)
    assert list(out.iterdir()) == []


def test_python_api_streams_tracked_poses(env, tmp_path):
    from posecli import Pipeline, PipelineConfig

    video = blank_video(tmp_path / "blank.mp4")
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps([{"frame": i, "bbox": [40 + i, 20, 50, 90]} for i in range(6)]))
    results = list(Pipeline(PipelineConfig(boxes_file=boxes, window=3)).poses(video))
    assert [r.frame.index for r in results] == list(range(6))
    assert all(len(r.poses) == 1 and r.poses.track_ids[0] == results[0].poses.track_ids[0] for r in results)
    assert results[0].poses.keypoints_xy.shape == (1, 17, 2)


def test_missing_manifest_is_one_line_error_in_every_command(monkeypatch, tmp_path):
    from posecli import weights

    monkeypatch.setattr(weights, "DEFAULT_MANIFEST", tmp_path / "nowhere" / "manifest.toml")
    for args in (["info"], ["weights", "list"], ["weights", "verify"], ["weights", "fetch", "yolox-nano"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 1, (args, result.output)
        assert "manifest.toml not found" in error_line(result)
        assert result.exception is None or isinstance(result.exception, SystemExit)


def test_inputs_with_the_same_name_get_distinct_outputs(env, tmp_path):
    for folder, frames in (("a", 4), ("b", 6)):
        (tmp_path / folder).mkdir()
        blank_video(tmp_path / folder / "clip.mp4", frames=frames)
    out = tmp_path / "out"
    result = run(str(tmp_path / "a" / "clip.mp4"), str(tmp_path / "b" / "clip.mp4"), "--out", str(out))
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["a_clip_mp4.json", "b_clip_mp4.json"]
    assert len(read_posecli_json(out / "a_clip_mp4.json")["frames"]) == 4
    assert len(read_posecli_json(out / "b_clip_mp4.json")["frames"]) == 6


def test_an_input_given_twice_is_an_error_before_any_work(env, tmp_path):
    video = blank_video(tmp_path / "clip.mp4")
    out = tmp_path / "out"
    result = run(str(video), str(tmp_path / "." / "clip.mp4"), "--out", str(out))
    assert result.exit_code == 1
    assert "given twice" in error_line(result)
    assert not out.exists()


def test_summary_shows_whole_output_paths_on_a_narrow_terminal(env, tmp_path):
    import io

    from rich.console import Console

    from posecli.config import PipelineConfig
    from posecli.runner import run_inputs

    video = blank_video(tmp_path / "clip.mp4")
    out = tmp_path / "a-rather-long-output-folder-name" / "and-another-level-below-it"
    text = io.StringIO()
    console = Console(file=text, width=80)
    assert run_inputs([video], out, PipelineConfig(formats=("json", "csv")), console=console) == 0
    lines = text.getvalue().splitlines()
    assert max(len(line) for line in lines) <= 80
    outputs_column = "".join(line.split("│")[-2].strip() for line in lines if line.count("│") == 8)
    for suffix in (".json", ".csv"):
        assert str(out / f"clip{suffix}") in outputs_column


def test_verbose_says_what_runs(env, tmp_path):
    video = blank_video(tmp_path / "blank.mp4")
    quiet = runner.invoke(app, ["run", str(video), "--out", str(tmp_path / "q")])
    loud = runner.invoke(app, ["-v", "run", str(video), "--out", str(tmp_path / "v")])
    assert quiet.exit_code == loud.exit_code == 0, loud.output
    assert "info:" not in quiet.output
    info = [line for line in loud.output.splitlines() if line.startswith("info: ")]
    assert any(line.startswith("info: pose model diffpose.") and "window" in line for line in info)
    assert any("yolox_nano.onnx" in line for line in info)
    assert any(line.startswith("info: blank.mp4: video, 160×120") for line in info)
    assert any(line.startswith("info: blank.mp4: 6 frames") for line in info)


@pytest.mark.parametrize("command", [[], ["run"], ["eval"], ["train"], ["shard"], ["bench"], ["eval-tracks"],
                                     ["info"], ["weights"], ["weights", "fetch"]])
def test_help_names_values_not_python_types(command):
    result = runner.invoke(app, [*command, "--help"], prog_name="posecli")
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"Usage: posecli {' '.join(command)}".rstrip() + " [OPTIONS]")
    for raw in ("<bool>", "<str>", "<path>", "<int", "<float", "list[", "{", "}"):
        assert raw not in result.output, (raw, result.output)


def test_run_help_examples_are_valid_commands():
    import shlex

    import typer.main

    text = runner.invoke(app, ["run", "--help"], prog_name="posecli").output
    examples = [line.strip() for line in text.split("Examples:")[1].split("Arguments:")[0].splitlines() if line.strip()]
    assert len(examples) >= 4
    command = typer.main.get_command(app).commands["run"]
    for example in examples:
        args = shlex.split(example.split("  ")[0])
        assert args[:2] == ["posecli", "run"]
        command.make_context("run", args[2:])  # raises on an unknown option or a bad value


@pytest.mark.parametrize("command", [["train", "--data", "x.json", "--out", "{out}", "--init"],
                                     ["run", "{clip}", "--out", "{out}", "--weights"]])
def test_a_checkpoint_that_is_missing_or_another_file_is_a_one_line_error(command, tmp_path):
    """``train --init`` (which also reads the window from it) and ``run --weights``: a missing file or a
    file that is not a checkpoint (text, a truncated one) gives one error line, no traceback, no output file."""
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"")
    foreign = tmp_path / "notes.pt"
    foreign.write_text("not a checkpoint")
    cut = tmp_path / "cut.pt"
    cut.write_bytes((REPO / "weights" / "diffpose_coco17_v2.pt").read_bytes()[:4096])
    for weights in (tmp_path / "missing.pt", foreign, cut):
        args = [a.format(out=tmp_path / "out", clip=clip) for a in command] + [str(weights)]
        result = runner.invoke(app, args)
        assert result.exit_code == 1, result.output
        assert error_line(result).startswith(f"error: {weights}") or f"file {weights} not found" in result.output
        assert not any((tmp_path / "out").glob("*")) if (tmp_path / "out").exists() else True
