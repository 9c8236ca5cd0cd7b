import logging
import os
import shutil
import struct
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from posecli.errors import PoseCliError
from posecli.video import (AvVideoSource, ImageFolderSource, InputKind, OpenCVVideoSource,
                           classify_input, list_images, list_videos, natural_key, open_source)

W, H, FPS, N = 64, 48, 25, 40


def colour(i: int) -> tuple[int, int, int]:
    """A distinct BGR colour per frame, with blue ≠ red so a channel swap shows."""
    return (200, (i * 6) % 256, 40)


def write_video(path: Path, n: int = N, fourcc: str = "mp4v", fps: float = FPS,
                noisy: bool = False) -> Path:
    """A small test video; ``noisy`` adds per-frame noise so frames are kilobytes, not bytes."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (W, H))
    assert writer.isOpened()
    rng = np.random.default_rng(0)
    for i in range(n):
        image = np.full((H, W, 3), colour(i), np.uint8)
        if noisy:
            image = cv2.add(image, rng.integers(0, 50, image.shape, np.uint8))
        writer.write(image)
    writer.release()
    return path


def frames_of(source) -> list:
    return list(source)


# --- generated videos ---------------------------------------------------------------------------

@pytest.mark.parametrize("suffix, fourcc", [(".mp4", "mp4v"), (".avi", "MJPG"), (".mkv", "mp4v")])
def test_small_video_decodes_completely(tmp_path, suffix, fourcc):
    path = write_video(tmp_path / f"clip{suffix}", fourcc=fourcc)
    with open_source(path) as source:
        assert isinstance(source, AvVideoSource)
        assert source.info.kind == "video"
        assert (source.info.width, source.info.height) == (W, H)
        assert source.info.fps == pytest.approx(FPS) and source.info.num_frames == N
        frames = frames_of(source)
    assert [f.index for f in frames] == list(range(N))
    assert [f.time_s for f in frames] == pytest.approx([i / FPS for i in range(N)], abs=1e-4)
    assert source.frames_read == N and not source.truncated
    for i in (0, 17, N - 1):
        image = frames[i].image
        assert image.shape == (H, W, 3) and image.dtype == np.uint8 and frames[i].file is None
        # BGR order, colours survive compression closely.
        assert np.abs(image.reshape(-1, 3).mean(0) - colour(i)).max() < 8


def test_opencv_fallback_gives_the_same_frames(tmp_path):
    path = write_video(tmp_path / "clip.mp4")
    with open_source(path) as a, OpenCVVideoSource(path) as b:
        fa, fb = frames_of(a), frames_of(b)
    assert len(fa) == len(fb) == N and not b.truncated
    assert b.info == a.info
    assert [f.time_s for f in fa] == pytest.approx([f.time_s for f in fb], abs=1e-6)
    assert all(np.abs(x.image.astype(int) - y.image).max() <= 2 for x, y in zip(fa, fb))


@pytest.mark.parametrize("cls", [AvVideoSource, OpenCVVideoSource])
def test_streams_lazily_and_can_be_iterated_again(tmp_path, cls):
    path = write_video(tmp_path / "clip.mp4", n=10)
    source = cls(path)
    it = iter(source)
    first = next(it)
    assert first.index == 0 and source.frames_read == 1  # one frame decoded, not the video
    del it
    again = frames_of(source)  # a new pass starts at frame 0
    assert [f.index for f in again] == list(range(10))
    assert np.array_equal(again[0].image, first.image)
    source.close()
    assert len(frames_of(source)) == 10  # reopened after close
    source.close()


def _boxes(data: bytes, start: int, end: int):
    i = start
    while i < end:
        size, kind = struct.unpack(">I4s", data[i:i + 8])
        yield i, size, kind
        i += size


def _box_chain(data: bytes, path: list[bytes]) -> list[int]:
    """Offsets of nested mp4 boxes along ``path``."""
    start, end, chain = 0, len(data), []
    for name in path:
        off, size = next((o, s) for o, s, k in _boxes(data, start, end) if k == name)
        chain.append(off)
        start, end = off + 8, off + size
    return chain


def make_variable_frame_rate(src: Path, dst: Path, switch: int) -> None:
    """Rewrite the mp4 sample durations (stts): frames from ``switch`` on last half as long.

    OpenCV writes the index (moov) after the frames, so growing it moves no frame data.
    """
    data = bytearray(src.read_bytes())
    chain = _box_chain(data, [b"moov", b"trak", b"mdia", b"minf", b"stbl", b"stts"])
    stts = chain[-1]
    (size,) = struct.unpack(">I", data[stts:stts + 4])
    version_flags, count, n, delta = struct.unpack(">IIII", data[stts + 8:stts + 24])
    assert count == 1
    body = struct.pack(">IIIIII", version_flags, 2, switch, delta, n - switch, delta // 2)
    new = struct.pack(">I4s", 8 + len(body), b"stts") + body
    for off in chain[:-1]:
        struct.pack_into(">I", data, off, struct.unpack(">I", data[off:off + 4])[0] + len(new) - size)
    data[stts:stts + size] = new
    dst.write_bytes(bytes(data))


@pytest.mark.parametrize("cls", [AvVideoSource, OpenCVVideoSource])
def test_variable_frame_rate_times_come_from_the_container(tmp_path, cls):
    path = tmp_path / "vfr.mp4"
    make_variable_frame_rate(write_video(tmp_path / "cfr.mp4", n=20), path, switch=10)
    with cls(path) as source:
        times = [f.time_s for f in source]
    expected = [i / FPS for i in range(10)] + [10 / FPS + i / (2 * FPS) for i in range(10)]
    assert times == pytest.approx(expected, abs=1e-4)


def test_rotated_phone_video_is_upright(tmp_path):
    """A 90° display rotation in the track header: decord 0.6 garbles such frames, so OpenCV
    decodes them and applies the rotation."""
    path = write_video(tmp_path / "flat.mp4", n=5)
    data = bytearray(path.read_bytes())
    tkhd = _box_chain(data, [b"moov", b"trak", b"tkhd"])[-1]
    assert data[tkhd + 8] == 0  # a version-0 tkhd box: its 3×3 matrix starts 48 bytes in
    struct.pack_into(">9i", data, tkhd + 48, 0, 1 << 16, 0, -(1 << 16), 0, 0, 0, 0, 1 << 30)
    rotated = tmp_path / "rotated.mp4"
    rotated.write_bytes(bytes(data))
    with open_source(rotated) as source:
        frames = frames_of(source)
    assert (source.info.width, source.info.height) == (H, W)
    assert len(frames) == 5 and frames[0].image.shape == (W, H, 3)
    assert np.abs(frames[3].image.reshape(-1, 3).mean(0) - colour(3)).max() < 8


# --- broken inputs ------------------------------------------------------------------------------

def test_missing_path():
    with pytest.raises(PoseCliError, match="no such file or folder"):
        open_source("/nonexistent/clip.mp4")


def test_text_file_renamed_mp4(tmp_path):
    fake = tmp_path / "notes.mp4"
    fake.write_text("this is not a video\n" * 20)
    with pytest.raises(PoseCliError, match="notes.mp4: cannot be decoded as a video"):
        open_source(fake)


def test_empty_file(tmp_path):
    (tmp_path / "empty.mp4").touch()
    with pytest.raises(PoseCliError, match="empty.mp4: file is empty"):
        open_source(tmp_path / "empty.mp4")


@pytest.mark.parametrize("suffix, fourcc", [(".mp4", "mp4v"), (".avi", "MJPG")])
def test_zero_frame_video(tmp_path, suffix, fourcc):
    path = write_video(tmp_path / f"zero{suffix}", n=0, fourcc=fourcc)
    with pytest.raises(PoseCliError, match=f"zero{suffix}: (cannot be decoded|no video stream|no frame)"):
        with open_source(path) as source:
            frames_of(source)


def test_mp4_cut_before_its_index(tmp_path):
    """OpenCV writes the mp4 index at the end: the first half alone has nothing to decode."""
    data = write_video(tmp_path / "clip.mp4").read_bytes()
    half = tmp_path / "half.mp4"
    half.write_bytes(data[:len(data) // 2])
    with pytest.raises(PoseCliError, match="half.mp4: cannot be decoded as a video"):
        open_source(half)


def test_truncated_mkv_reads_what_is_there(tmp_path, caplog):
    data = write_video(tmp_path / "clip.mkv").read_bytes()
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(data[:len(data) // 2])
    with caplog.at_level(logging.WARNING, logger="posecli.video"), open_source(cut) as source:
        frames = frames_of(source)
    assert 5 < len(frames) < N and source.frames_read == len(frames)
    assert source.truncated
    assert f"read {len(frames)} of {N} frames" in caplog.text


def test_garbage_in_the_middle(tmp_path, caplog):
    data = bytearray(write_video(tmp_path / "clip.mp4", noisy=True).read_bytes())
    assert data.find(b"moov") > len(data) // 2  # the index, at the end, stays intact
    middle = len(data) // 3
    data[middle:middle + 2000] = np.random.default_rng(0).integers(0, 256, 2000, np.uint8).tobytes()
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="posecli.video"), open_source(bad) as source:
        frames = frames_of(source)  # stops cleanly, no exception
    assert 0 < len(frames) < N
    assert source.truncated and f"read {len(frames)} of {N} frames" in caplog.text
    assert [f.index for f in frames] == list(range(len(frames)))


def _opencv_frame_count(path: Path) -> int:
    capture = cv2.VideoCapture(str(path))
    count = 0
    while capture.grab():
        count += 1
    capture.release()
    return count


@pytest.mark.parametrize("clip, fraction, announced", [
    ("vtest.mp4", 0.3, 795),  # H.264, index first
    ("vtest.mp4", 0.71, 795),
    ("pose2sim_SinglePerson_cam02.mp4", 0.28, 100),  # VP9
    ("pose2sim_SinglePerson_cam02.mp4", 0.555, 100),
])
def test_truncated_real_clip_reads_every_decodable_frame(shared_dir, tmp_path, caplog, clip, fraction,
                                                          announced):
    """A cut-off file gives as many frames as OpenCV can decode, the same on every pass however
    fast the frames are taken, and one warning with the count read and the count announced."""
    data = (shared_dir / "data" / "videos" / clip).read_bytes()
    cut = tmp_path / f"cut_{clip}"
    cut.write_bytes(data[:int(len(data) * fraction)])
    counts = []
    with caplog.at_level(logging.WARNING, logger="posecli.video"), open_source(cut) as source:
        assert source.info.num_frames == announced
        for delay_s in (0.0, 0.003):  # a slow consumer (the pose model) must not lose frames
            caplog.clear()
            count = 0
            for frame in source:
                assert frame.index == count
                count += 1
                time.sleep(delay_s)
            counts.append(count)
            assert source.truncated and source.frames_read == count
            warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
            assert len(warnings) == 1 and f"read {count} of {announced} frames" in warnings[0]
    assert counts[0] == counts[1]
    assert _opencv_frame_count(cut) <= counts[0] < announced


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="reads the RSS from /proc")
def test_a_slow_consumer_does_not_make_the_decoder_buffer_frames(tmp_path):
    """Frames are decoded when asked for: a decoder running ahead into a queue of its own (decord
    did, 2 MB per frame here) makes memory grow with the video's length when the model is slower."""
    path = tmp_path / "long.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 30.0, (640, 480))
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (480, 640, 3), np.uint8)
    for i in range(150):
        writer.write(np.roll(base, i, axis=1))
    writer.release()
    with open_source(path) as source:
        for frame in source:
            if frame.index == 20:
                start = _rss_mib()
            time.sleep(0.02)  # the pose model is slower than decoding
    assert frame.index == 149
    assert _rss_mib() - start < 40  # 130 frames held would be over 110 MiB


# --- image folders ------------------------------------------------------------------------------

def test_natural_order():
    names = ["10.jpg", "2.jpg", "frame_1.png", "1.jpg", "frame_10.png", "frame_9.png", "B.jpg", "a.jpg"]
    assert sorted(names, key=natural_key) == [
        "1.jpg", "2.jpg", "10.jpg", "a.jpg", "B.jpg", "frame_1.png", "frame_9.png", "frame_10.png"]


def write_images(folder: Path, names: list[str]) -> None:
    folder.mkdir(exist_ok=True)
    for i, name in enumerate(names):
        assert cv2.imwrite(str(folder / name), np.full((H, W, 3), colour(i), np.uint8))


def test_image_folder(tmp_path):
    folder = tmp_path / "seq"
    write_images(folder, ["1.png", "2.jpg", "10.bmp", "11.webp", "3.jpeg"])
    (folder / "labels.json").write_text("{}")  # not an image: ignored
    (folder / "0.png").write_bytes(cv2.imencode(".png", np.full((H, W), 50, np.uint8))[1])  # grey
    assert classify_input(folder) is InputKind.IMAGES
    with open_source(folder, image_fps=10) as source:
        assert isinstance(source, ImageFolderSource)
        assert source.info.kind == "images" and source.info.num_frames == 6
        assert (source.info.width, source.info.height, source.info.fps) == (W, H, 10)
        frames = frames_of(source)
    assert [f.file for f in frames] == ["0.png", "1.png", "2.jpg", "3.jpeg", "10.bmp", "11.webp"]
    assert [f.index for f in frames] == list(range(6))
    assert [f.time_s for f in frames] == pytest.approx([i / 10 for i in range(6)])
    assert frames[0].image.shape == (H, W, 3)  # grey image turned into 3 channels
    assert np.abs(frames[1].image.reshape(-1, 3).mean(0) - colour(0)).max() < 3
    assert not source.truncated


def test_unreadable_image_is_skipped(tmp_path, caplog):
    folder = tmp_path / "seq"
    write_images(folder, ["2.png", "3.png"])
    (folder / "1.png").write_text("not a png")  # even the first may be broken
    with caplog.at_level(logging.WARNING, logger="posecli.video"), open_source(folder) as source:
        frames = frames_of(source)
    assert [(f.index, f.file) for f in frames] == [(1, "2.png"), (2, "3.png")]
    assert source.truncated and "1.png: cannot be read as an image" in caplog.text


def test_single_image_file(tmp_path):
    write_images(tmp_path, ["photo.jpg"])
    assert classify_input(tmp_path / "photo.jpg") is InputKind.IMAGES
    with open_source(tmp_path / "photo.jpg") as source:
        (frame,) = frames_of(source)
    assert frame.file == "photo.jpg" and frame.time_s == 0.0


# --- classifying inputs -------------------------------------------------------------------------

def test_classify_inputs(tmp_path):
    video = write_video(tmp_path / "a.mp4", n=2)
    assert classify_input(video) is InputKind.VIDEO
    videos = tmp_path / "videos"
    videos.mkdir()
    for name in ["clip10.mp4", "clip2.MOV", "clip1.webm", "readme.txt"]:
        shutil.copy(video, videos / name)
    assert classify_input(videos) is InputKind.VIDEO_FOLDER
    assert [p.name for p in list_videos(videos)] == ["clip1.webm", "clip2.MOV", "clip10.mp4"]
    assert list_images(videos) == []
    with pytest.raises(PoseCliError, match="folder of videos"):
        open_source(videos)


@pytest.mark.parametrize("setup, message", [
    (lambda d: None, "folder has no images .* and no videos"),
    (lambda d: (d / "notes.txt").write_text("x"), "folder has no images"),
    (lambda d: ((d / "a.jpg").write_bytes(b"x"), (d / "b.mp4").write_bytes(b"x")),
     "both images \\(1\\) and videos \\(1\\)"),
])
def test_classify_bad_folders(tmp_path, setup, message):
    folder = tmp_path / "in"
    folder.mkdir()
    setup(folder)
    with pytest.raises(PoseCliError, match=message):
        classify_input(folder)
    with pytest.raises(PoseCliError):
        open_source(folder)


def test_classify_bad_files(tmp_path):
    with pytest.raises(PoseCliError, match="no such file or folder"):
        classify_input(tmp_path / "missing.mp4")
    text = tmp_path / "notes.txt"
    text.write_text("x")
    with pytest.raises(PoseCliError, match="not a video or image file .*'.txt'"):
        classify_input(text)


def test_image_folder_with_no_readable_image(tmp_path):
    folder = tmp_path / "seq"
    folder.mkdir()
    (folder / "1.jpg").write_text("not a jpeg")
    (folder / "2.jpg").touch()
    with pytest.raises(PoseCliError, match="seq: none of the 2 image file\\(s\\) can be read"):
        open_source(folder)


# --- the real clips -----------------------------------------------------------------------------

def test_real_h264_clip(shared_dir):
    with open_source(shared_dir / "data" / "videos" / "mmpose_demo.mp4") as source:
        assert source.info.width == 960 and source.info.height == 540 and source.info.fps == 5
        frames = frames_of(source)
    assert len(frames) == 5 and not source.truncated
    assert [f.time_s for f in frames] == pytest.approx([0, 0.2, 0.4, 0.6, 0.8])


def test_vp9_decodes_past_the_threading_failure(shared_dir):
    """With decord's automatic threading VP9 stops after ~12 frames; one thread reads on."""
    with open_source(shared_dir / "data" / "videos" / "pose2sim_SinglePerson_cam02.mp4") as source:
        assert (source.info.width, source.info.height, source.info.num_frames) == (1080, 1920, 100)
        times = []
        for frame in source:
            times.append(frame.time_s)
            if len(times) == 30:
                break
    assert times == pytest.approx([i / 60 for i in range(30)], abs=1e-3)


@pytest.mark.slow
def test_vp9_sports2d_all_frames(shared_dir):
    with open_source(shared_dir / "data" / "videos" / "sports2d_demo.mp4") as source:
        assert isinstance(source, AvVideoSource)
        assert (source.info.width, source.info.height, source.info.fps) == (1768, 994, 30)
        times = [f.time_s for f in source]
    assert len(times) == 230 and source.frames_read == 230 and not source.truncated
    assert np.all(np.diff(times) > 0)
    assert times[-1] == pytest.approx(229 / 30, abs=1e-3)


def test_only_decoder_errors_fall_back_to_opencv(tmp_path, monkeypatch):
    # A PyAV decoding error means "try OpenCV"; any other exception is a bug and must surface.
    import av

    from posecli import video

    clip = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (32, 24))
    for _ in range(3):
        writer.write(np.zeros((24, 32, 3), np.uint8))
    writer.release()

    def fails_with(exc):
        def init(self, path):
            raise exc
        return init

    monkeypatch.setattr(video.AvVideoSource, "__init__", fails_with(av.error.InvalidDataError(1094995529, "bad")))
    assert isinstance(video.open_video(clip), video.OpenCVVideoSource)
    monkeypatch.setattr(video.AvVideoSource, "__init__", fails_with(TypeError("a bug")))
    with pytest.raises(TypeError, match="a bug"):
        video.open_video(clip)
