"""The pipeline: frames → person boxes → temporal windows → DiffPose → DARK → tracks → sinks.

``Pipeline`` loads the pose model and the detector once and can then process any number of
inputs. ``Pipeline.poses(path)`` streams :class:`~posecli.types.FrameResult` objects (for use as a
library); ``Pipeline.process(path, out_dir)`` writes them to the output files.

Memory stays flat in video length: frames are read one at a time, the temporal window keeps only
the 2δ+1 frames it needs, key frames are batched up to a fixed number of person-windows, and the
sinks stream.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from posecli import weights as weights_lib
from posecli.config import PipelineConfig
from posecli.crop import crop_transform, warp_crop
from posecli.decode import dark_decode, heatmaps_to_frame
from posecli.detect import DETECTORS, BoxesFileDetector, PersonDetector
from posecli.errors import PoseCliError
from posecli.sinks import make_sinks, output_paths
from posecli.smooth import KINDS as SMOOTHING_KINDS
from posecli.smooth import PoseSmoother
from posecli.track import PoseTracker, drop_short_tracks
from posecli.types import Detections, Frame, FrameResult, ModelInfo, Poses, SourceInfo
from posecli.video import open_source
from posecli.window import TemporalWindows, Window


# Key frames held back waiting for a full batch; bounds memory when frames have no people.
MAX_PENDING_FRAMES = 32

ProgressCallback = Callable[[int, int], None]  # (frames done, frames expected)


@dataclass
class StageTimes:
    """Seconds spent per stage, accumulated over a run."""

    seconds: dict[str, float] = field(default_factory=dict)

    def add(self, stage: str, since: float) -> float:
        now = time.perf_counter()
        self.seconds[stage] = self.seconds.get(stage, 0.0) + now - since
        return now


@dataclass(frozen=True)
class RunSummary:
    """What one input produced."""

    input: Path
    frames: int
    poses: int
    tracks: int
    seconds: float
    outputs: tuple[Path, ...]
    truncated: bool
    stage_seconds: dict[str, float]


def resolve_device(device: str) -> str:
    """``auto`` → ``cuda`` when available, else ``cpu``; ``cuda`` without a GPU is an error."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise PoseCliError("--device cuda was asked for, but no CUDA GPU is available (use --device cpu)")
    if device not in ("cpu", "cuda"):
        raise PoseCliError(f"--device must be auto, cpu or cuda, not {device!r}")
    return device


class Pipeline:
    """Tracked 2D poses from videos and image sequences.

    Args:
        config: run options; the defaults give the shipped model and the YOLOX-nano detector.

    Example:
        >>> from posecli import Pipeline
        >>> for result in Pipeline().poses("clip.mp4"):
        ...     print(result.frame.index, result.poses.track_ids)
    """

    def __init__(self, config: PipelineConfig = PipelineConfig()) -> None:
        from posecli.models.loading import load_pose_model

        if config.smooth not in SMOOTHING_KINDS:
            raise PoseCliError(f"--smooth must be one of {', '.join(SMOOTHING_KINDS)}, not {config.smooth!r}")
        self.config = config
        self.device = resolve_device(config.device)
        self.model = load_pose_model(config.weights, device=self.device, window=config.window,
                                     steps=config.steps, seed=config.seed, batch_size=config.batch_size)
        self._detector: PersonDetector | None = None

    @property
    def model_info(self) -> ModelInfo:
        return self.model.info

    def make_detector(self) -> PersonDetector:
        if self.config.boxes_file is not None:
            return BoxesFileDetector(self.config.boxes_file)
        if self._detector is None:
            factory = DETECTORS.get(self.config.detector)
            if factory is None:
                raise PoseCliError(f"unknown detector {self.config.detector!r}; choose one of {', '.join(DETECTORS)}")
            path = weights_lib.resolve(self.config.detector, explicit_path=self.config.detector_weights)
            self._detector = factory(path, score_threshold=self.config.score_threshold)
        return self._detector

    # -- streaming core ----------------------------------------------------------------------

    def _estimate(self, batch: list[tuple[Frame, list[Frame], Detections]], times: StageTimes) -> Iterator[FrameResult]:
        """Run the pose model on every person of a batch of key frames."""
        t0 = time.perf_counter()
        input_hw = self.model.input_hw
        crops, matrices, owners = [], [], []
        for i, (_, frames, detections) in enumerate(batch):
            for box in detections.boxes_xyxy:
                matrix = crop_transform(box, input_hw)
                # Every frame of the window is cropped with the key frame's box (as in the paper).
                crops.append(np.stack([warp_crop(f.image, matrix, input_hw) for f in frames]))
                matrices.append(matrix)
                owners.append(i)
        t0 = times.add("crop", t0)
        if crops:
            heatmaps = self.model.heatmaps(np.stack(crops), times)
            t0 = time.perf_counter()
            xy_hm, scores = dark_decode(heatmaps)
            xy = heatmaps_to_frame(xy_hm, self.model.stride, np.stack(matrices))
            times.add("dark", t0)
        owners_arr = np.asarray(owners, np.int64)
        for i, (key, _, detections) in enumerate(batch):
            mine = np.flatnonzero(owners_arr == i)
            if len(mine) == 0:
                yield FrameResult(key, Poses.empty())
                continue
            yield FrameResult(key, Poses(
                detections.boxes_xyxy.astype(np.float32), detections.scores.astype(np.float32),
                xy[mine].astype(np.float32), scores[mine].astype(np.float32),
            ))

    def untracked(self, frames: Iterable[Frame], times: StageTimes | None = None) -> Iterator[FrameResult]:
        """Poses per frame before tracking and smoothing (``track_ids`` all -1), in frame order."""
        times = times if times is not None else StageTimes()
        detector = self.make_detector()
        windows: TemporalWindows[tuple[Frame, Detections]] = TemporalWindows(self.model.window)
        batch: list[tuple[Frame, list[Frame], Detections]] = []
        persons = 0

        def ready(items: Iterable[Window[tuple[Frame, Detections]]]) -> Iterator[FrameResult]:
            nonlocal batch, persons
            for window in items:
                key, detections = window.key
                batch.append((key, [frame for frame, _ in window.items], detections))
                persons += len(detections)
                if persons >= self.config.batch_size or len(batch) >= MAX_PENDING_FRAMES:
                    yield from self._estimate(batch, times)
                    batch, persons = [], 0

        t0 = time.perf_counter()
        for frame in frames:
            t0 = times.add("decode", t0)
            detections = detector(frame)
            t0 = times.add("detect", t0)
            yield from ready(windows.push((frame, detections)))
            t0 = time.perf_counter()
        yield from ready(windows.flush())
        if batch:
            yield from self._estimate(batch, times)

    def poses(self, path: str | Path, times: StageTimes | None = None) -> Iterator[FrameResult]:
        """Stream tracked poses of one input (video file or image folder), frame by frame."""
        times = times if times is not None else StageTimes()
        with open_source(path) as source:
            yield from self._tracked(source, times)

    def _tracked(self, frames: Iterable[Frame], times: StageTimes) -> Iterator[FrameResult]:
        tracking = self.config.tracking
        tracker = PoseTracker(max_age=tracking.max_age, oks_threshold=tracking.oks_threshold,
                              iou_threshold=tracking.iou_threshold)
        smoother = PoseSmoother(self.config.smooth)

        def track(results: Iterable[FrameResult]) -> Iterator[FrameResult]:
            for result in results:
                t0 = time.perf_counter()
                tracked = FrameResult(result.frame, tracker.update(result.poses))
                times.add("track", t0)
                yield tracked

        stream = track(self.untracked(frames, times))
        stream = drop_short_tracks(stream, tracking.min_track_length, max_age=tracking.max_age)
        yield from smoother.smooth(stream)

    # -- files -------------------------------------------------------------------------------

    def output_paths(self, stem: str, out_dir: str | Path) -> list[Path]:
        """The files :meth:`process` writes for an input whose outputs are named ``stem``."""
        return list(output_paths(Path(out_dir), stem, self.config.formats, self.config.overlay).values())

    def process(self, path: str | Path, out_dir: str | Path, stem: str | None = None,
                progress: ProgressCallback | None = None) -> RunSummary:
        """Estimate tracked poses for one input and write every requested output.

        Args:
            path: video file or image folder.
            out_dir: output folder (created if missing).
            stem: output file name stem; default the input's stem.
            progress: called with (frames done, frames expected) after each frame.

        Output files appear complete or not at all, also when interrupted (Ctrl-C).

        Raises:
            PoseCliError: bad input, unwritable output folder.
        """
        path = Path(path)
        with open_source(path) as source:
            summary = self.write(source, source.info, out_dir, stem or path.stem, progress)
            truncated = source.truncated
        return RunSummary(input=path, frames=summary.frames, poses=summary.poses, tracks=summary.tracks,
                          seconds=summary.seconds, outputs=summary.outputs, truncated=truncated,
                          stage_seconds=summary.stage_seconds)

    def write(self, frames: Iterable[Frame], info: SourceInfo, out_dir: str | Path, stem: str,
              progress: ProgressCallback | None = None) -> RunSummary:
        """Estimate tracked poses for a stream of frames and write the outputs named ``stem``.

        Raises:
            PoseCliError: no frame in the stream, unwritable output folder.
        """
        start = time.perf_counter()
        times = StageTimes()
        sinks = make_sinks(Path(out_dir), stem, self.config.formats, self.config.overlay,
                           info, self.model_info, score_threshold=self.config.keypoint_threshold)
        count = poses = 0
        track_ids: set[int] = set()
        try:
            for result in self._tracked(frames, times):
                t0 = time.perf_counter()
                for sink in sinks:
                    sink.write(result)
                times.add("write", t0)
                count += 1
                poses += len(result.poses)
                track_ids.update(int(t) for t in result.poses.track_ids)
                if progress is not None:
                    progress(count, max(info.num_frames, count))
            if count == 0:
                raise PoseCliError(f"{Path(info.path).name}: no frame could be decoded")
            t0 = time.perf_counter()
            for sink in sinks:
                sink.close()
            times.add("write", t0)
        except BaseException:
            for sink in sinks:
                sink.abort()
            raise
        return RunSummary(
            input=Path(info.path), frames=count, poses=poses, tracks=len(track_ids),
            seconds=time.perf_counter() - start, outputs=tuple(s.path for s in sinks),
            truncated=False, stage_seconds=dict(times.seconds),
        )
