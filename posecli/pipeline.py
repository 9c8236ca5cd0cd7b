"""The pipeline: frames → person boxes → temporal windows → DiffPose → DARK → tracks → sinks.

``Pipeline`` loads the pose model and the detector once and can then process any number of
inputs. ``Pipeline.poses(path)`` streams :class:`~posecli.types.FrameResult` objects (for use as a
library); ``Pipeline.process(path, out_dir)`` writes them to the output files.

How the work is laid out (see ``PipelineConfig`` for the options):

* Decoding and detection run in a background thread, a few frames ahead of the pose model
  (``prefetch``; OpenCV, decord and torch release the GIL), so they overlap with model work, given
  a GPU or 3 or more cores (on 2 cores one thread measured faster: :func:`resolve_threads`).
* Key frames are batched: person-windows of several key frames go through the model together
  (``batch_size``); crops go to the device as uint8 and features stay there until the heatmaps
  come back, once per batch.
* ``neighbour_crops="key"`` crops every frame of a window with the key frame's box (as in the
  DiffPose paper): T backbone passes per person and frame. ``"own"`` crops each neighbour with its
  own box (the neighbour's detection that overlaps the key box most, IoU ≥ 0.3; where none does,
  the key frame's own crop stands in for that frame, as past the clip's ends), so a (frame, box)
  crop is shared by the T windows that contain it and goes through the backbone once: its
  features are cached while the frame is inside the window.
* ``detect_every=k`` runs the detector on every k-th frame; the frames in between get boxes moved
  along with the tracked persons (``posecli.propagate``): the latest detector frame's boxes while
  they are fresh enough, else the boxes of the latest frame whose poses are known. Poses lag δ+1
  frames (δ = window // 2: a key frame's window needs δ later frames), so detector boxes at most
  δ+1 frames old are used as they are (moved by the tracks' motion) and older ones make the
  pending batch run first, so that its poses can be moved instead.
* Threads: :func:`resolve_threads` splits the cores between the model and the detector; the
  thread counts hold for the duration of a run and are restored after.

Memory stays flat in video length: the prefetch queue holds at most ``prefetch`` frames, the
temporal window the 2δ+1 frames it needs, key frames wait for a batch up to a fixed number of
person-windows or ``MAX_PENDING_FRAMES`` frames, cached features are dropped when their frame
leaves the window, and the sinks stream.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from posecli import weights as weights_lib
from posecli.config import PipelineConfig
from posecli.crop import crop_to_crop, crop_transform, warp_crop
from posecli.decode import dark_decode, heatmaps_to_frame
from posecli.detect import DETECTORS, BoxesFileDetector, PersonDetector, QuarterTurnDetector
from posecli.errors import PoseCliError
from posecli.prefetch import prefetch
from posecli.propagate import BoxPropagator
from posecli.sinks import load_coco_image_ids, make_sinks
from posecli.smooth import PoseSmoother
from posecli.track import PoseTracker, box_iou, drop_short_tracks
from posecli.types import Detections, Frame, FrameResult, ModelInfo, Poses, SourceInfo
from posecli.video import open_source
from posecli.window import TemporalWindows, Window

if TYPE_CHECKING:  # torch is imported when a pipeline is built, not with this module
    import torch

log = logging.getLogger(__name__)

# Key frames held back waiting for a full batch; bounds memory when frames have few people.
MAX_PENDING_FRAMES = 32
# A neighbour frame's detection is the key frame's person when their boxes overlap this much.
NEIGHBOUR_MIN_IOU = 0.3

ProgressCallback = Callable[[int, int], None]  # (frames done, frames expected)


@dataclass
class StageTimes:
    """Seconds spent per stage, accumulated over a run (thread-safe).

    Decoding and detection run in the prefetch thread, so their seconds overlap the model's;
    "wait" is the time the model's thread waited for them.

    Attributes:
        seconds: stage name → seconds.
        sync_cuda: wait for queued CUDA work before reading the clock, so that GPU time lands in
            the stage that queued it (the benchmark sets it; it costs a little overlap).
    """

    seconds: dict[str, float] = field(default_factory=dict)
    sync_cuda: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, stage: str, since: float, gpu: bool = True) -> float:
        """Add the time from ``since`` (a ``perf_counter`` value) to now to ``stage``; returns now.

        ``gpu=False`` for stages that queue no GPU work (no synchronisation needed).
        """
        if self.sync_cuda and gpu:
            import torch

            torch.cuda.synchronize()
        now = time.perf_counter()
        with self._lock:
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


@dataclass(frozen=True, eq=False)
class _Item:
    """One frame inside the temporal window: its stream position, image and person boxes.

    ``position`` counts the frames of this stream from 0 as they are read (the numbering of
    :attr:`Window.key_index <posecli.window.Window.key_index>` and of the box propagation);
    ``frame.index`` is the frame's number in its source, which is what outputs report.
    """

    position: int
    frame: Frame
    detections: Detections


@dataclass(frozen=True)
class CropKey:
    """Names one crop of one frame, whose backbone features may serve several windows.

    A frame is cropped either with one of its own boxes (``own_box``: that box's index), or, with
    ``neighbour_crops="key"``, with the box of a person in a key frame (``key_position``, ``key_person``).
    """

    position: int  # the cropped frame's stream position
    own_box: int | None = None
    key_position: int | None = None
    key_person: int | None = None

    @property
    def uses_key_box(self) -> bool:
        """Cropped with a key frame's box: of use to that key frame's window only."""
        return self.key_position is not None


class _WindowBatcher:
    """Collects complete windows into batches for the pose model and tracks their results.

    A batch runs once it holds ``batch_size`` persons or ``MAX_PENDING_FRAMES`` windows, or on
    :meth:`flush`. Results come out in window order; with a ``tracker`` each goes through it (and
    its tracks feed the ``propagator``, if any); ``keep_ids`` puts the track ids in the results.

    Args:
        estimate: ``(windows, feature cache) -> [(stream position, FrameResult)]``, one per window.
    """

    def __init__(self, estimate: Callable[[list[Window[_Item]], dict], list[tuple[int, FrameResult]]],
                 batch_size: int, tracker: PoseTracker | None, propagator: BoxPropagator | None,
                 keep_ids: bool, times: StageTimes) -> None:
        self._estimate = estimate
        self._batch_size = batch_size
        self._tracker, self._propagator, self._keep_ids = tracker, propagator, keep_ids
        self._times = times
        self._pending: list[Window[_Item]] = []
        self._persons = 0
        self._cache: dict[CropKey, torch.Tensor] = {}  # backbone features [C, h, w] of crops still needed

    def add(self, windows: Iterable[Window[_Item]]) -> Iterator[FrameResult]:
        """Queue complete windows; yields the results of the batches they fill."""
        for window in windows:
            self._pending.append(window)
            self._persons += len(window.key.detections)
            if self._persons >= self._batch_size or len(self._pending) >= MAX_PENDING_FRAMES:
                yield from self.flush()

    def flush(self) -> Iterator[FrameResult]:
        """Run the queued windows now (if any) and yield their results."""
        if not self._pending:
            return
        batch, self._pending, self._persons = self._pending, [], 0
        for position, result in self._estimate(batch, self._cache):
            if self._tracker is not None:
                t0 = time.perf_counter()
                tracked = self._tracker.update(result.poses)
                self._times.add("track", t0)
                if self._propagator is not None:
                    self._propagator.update(position, tracked)
                if self._keep_ids:
                    result = FrameResult(result.frame, tracked)
            yield result


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


@dataclass(frozen=True)
class ThreadPlan:
    """Where the CPU work of a run goes.

    Attributes:
        model: intra-op threads of the pose model (torch).
        detector: onnxruntime threads of the detector.
        prefetch: frames decoded and detected ahead in a background thread (0: none, all in one).
    """

    model: int
    detector: int
    prefetch: int


# Frames decoded and detected ahead when a background thread pays off.
DEFAULT_PREFETCH = 4


def resolve_threads(config: PipelineConfig, device: str) -> ThreadPlan:
    """Split the cores between the pose model and decoding + detection.

    With a GPU, or 3 or more CPU cores, decoding and detection run in a background thread
    (``DEFAULT_PREFETCH`` frames ahead) with a quarter of the cores (at least one) for the detector,
    and the model gets the rest. With fewer cores everything runs in one thread: the model on one
    core, the detector on all of them. Measured on the 2-core development machine (``posecli bench``,
    sports2d_demo.mp4, idle machine, 2 rounds, person-frames/s): one thread, model and detector on
    one core each: 17.4 / 19.7; detector on both cores: 21.0 / 21.2; model on both cores too:
    19.7 / 20.2; decoding and detection in a background thread on one core: 20.0 / 20.2 (the
    detector slows down by 20-30 % next to the model, and under load the thread loses more).
    ``config.threads`` and ``config.prefetch`` override the automatic choices; ``config.cpus``
    caps the cores counted (a worker that shares a machine with others).
    """
    import os

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    cores = min(cores, config.cpus) if config.cpus is not None else cores
    small = device == "cpu" and cores < 3
    prefetch = config.prefetch if config.prefetch is not None else (0 if small else DEFAULT_PREFETCH)
    detector = max(cores // 4, 1) if prefetch > 0 else cores
    if config.threads is not None:
        model = config.threads
    elif small:
        model = 1
    else:
        model = max(cores - (detector if prefetch > 0 else 0), 1)
    return ThreadPlan(model=model, detector=detector, prefetch=prefetch)


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

        self.config = config  # its options were checked when it was made
        self.device = resolve_device(config.device)
        self.threads = resolve_threads(config, self.device)
        self.model = load_pose_model(config.weights, device=self.device, window=config.window,
                                     steps=config.steps, seed=config.seed, batch_size=config.batch_size,
                                     dtype=config.dtype, compile=config.compile, threads=self._trunk_threads())
        self._detector: PersonDetector | None = None
        self._coco_image_ids = None if config.coco_dataset is None else load_coco_image_ids(config.coco_dataset)
        info = self.model.info
        log.info("pose model %s (sha256 %s…): window %d, %d DDIM steps, %s, %d person-windows per call",
                 info.name, info.sha256[:12], info.window, info.steps, str(self.model.dtype).removeprefix("torch."),
                 self.model.batch_size)
        log.info("device %s: %d model thread(s), detector on %d, %s", self.device, self.threads.model,
                 self.threads.detector, f"{self.threads.prefetch} frames decoded ahead in a background thread"
                 if self.threads.prefetch else "decoding in the same thread")

    @property
    def model_info(self) -> ModelInfo:
        return self.model.info

    @property
    def detect_every(self) -> int:
        """Frames per detector run; boxes from a file (``--boxes``) are used on every frame."""
        return 1 if self.config.boxes_file is not None else self.config.detect_every

    def _trunk_threads(self) -> int:
        """Threads of OpenVINO's MoveNet layers: the model's, or, where detection does not run
        beside the model (no prefetch thread), the detector's cores too. On the 2-core CPU that is
        2 threads, measured 1.23× the person-frames/s of 1 on sports2d_demo (13.7 vs 11.1)."""
        if self.threads.prefetch > 0:
            return self.threads.model
        return max(self.threads.model, self.threads.detector)

    def make_detector(self) -> PersonDetector:
        if self.config.boxes_file is not None:
            return BoxesFileDetector(self.config.boxes_file)
        if self._detector is None:
            factory = DETECTORS.get(self.config.detector)
            if factory is None:
                raise PoseCliError(f"unknown detector {self.config.detector!r}; choose one of {', '.join(DETECTORS)}")
            path = weights_lib.resolve(self.config.detector, explicit_path=self.config.detector_weights)
            self._detector = factory(path, score_threshold=self.config.score_threshold,
                                     threads=self.threads.detector)
            log.info("detector %s: %s, every %d frame(s), least score %.2f", self.config.detector, path,
                     self.detect_every, self.config.score_threshold)
        return self._detector

    # -- streaming core ----------------------------------------------------------------------

    def _detected(self, frames: Iterable[Frame], detector: PersonDetector, times: StageTimes, every: int
                  ) -> Iterator[tuple[int, Frame, Detections | None]]:
        """(stream position, frame, detections or None where the detector skips the frame).

        Runs in the prefetch thread, if any: decoding happens while this generator waits for
        ``frames``.
        """
        t0 = time.perf_counter()
        for position, frame in enumerate(frames):
            t0 = times.add("decode", t0, gpu=False)
            detections = None
            if position % every == 0:
                detections = detector(frame)
                times.add("detect", t0, gpu=False)
            yield position, frame, detections
            t0 = time.perf_counter()

    def _crop_plan(self, windows: list[Window[_Item]]) -> tuple[
            list[list[CropKey]], dict[CropKey, tuple[np.ndarray, np.ndarray]], list[np.ndarray], list[int]]:
        """Which crop each frame of each person-window uses.

        Returns:
            ``plan``: per person-window (in window order, then box order) its T crop keys;
            ``crops``: crop key → (frame image, frame→crop affine) for every key used;
            ``matrices``: per person-window the key frame's affine (keypoints are mapped back
            through it); ``owners``: per person-window the index of its window.
        """
        input_hw, enlarge = self.model.input_hw, self.model.crop_enlarge
        own = self.config.neighbour_crops == "own"
        plan: list[list[CropKey]] = []
        crops: dict[CropKey, tuple[np.ndarray, np.ndarray]] = {}
        matrices: list[np.ndarray] = []
        owners: list[int] = []
        for w, window in enumerate(windows):
            key = window.key
            boxes = key.detections.boxes_xyxy
            for person, box in enumerate(boxes):
                key_matrix = crop_transform(box, input_hw, enlarge)
                keys: list[CropKey] = []
                for item in window.items:
                    if own:
                        match = person if item is key else _best_match(box, item.detections.boxes_xyxy)
                        if match < 0:
                            # No detection of the person in this frame: the key frame's own crop stands in
                            # (as past the clip's ends), instead of a backbone pass on a crop nobody was seen in.
                            item, match = key, person
                        crop_key = CropKey(item.position, own_box=match)
                        if crop_key not in crops:
                            crops[crop_key] = (item.frame.image,
                                               crop_transform(item.detections.boxes_xyxy[match], input_hw, enlarge))
                    else:
                        crop_key = CropKey(item.position, key_position=key.position, key_person=person)
                        crops.setdefault(crop_key, (item.frame.image, key_matrix))
                    keys.append(crop_key)
                plan.append(keys)
                matrices.append(key_matrix)
                owners.append(w)
        return plan, crops, matrices, owners

    def _estimate(self, windows: list[Window[_Item]], cache: dict[CropKey, torch.Tensor],
                  times: StageTimes, lag: int, photos: bool = False) -> list[tuple[int, FrameResult]]:
        """Run the pose model on every person of a batch of windows; (position, result) per window.

        ``cache`` maps crop keys to backbone features computed for earlier batches; it is updated
        with this batch's and pruned to the crops later windows can still use. ``lag``: frames
        before and after the key frame in a window (δ). ``photos``: windows of one photo each, whose
        persons the model also looks at turned where ``config.rotations`` says so.
        """
        import torch

        t0 = time.perf_counter()
        input_hw = self.model.input_hw
        plan, crops, matrices, owners = self._crop_plan(windows)
        if photos and plan:
            images = np.stack([warp_crop(*crops[keys[0]], input_hw) for keys in plan])
            t0 = times.add("crop", t0)
            heatmaps = self.model.still_heatmaps(images, self.config.rotations, times)
            t0 = time.perf_counter()
        elif plan:
            todo = [k for k in crops if k not in cache]
            images = [warp_crop(image, matrix, input_hw) for image, matrix in (crops[k] for k in todo)]
            t0 = times.add("crop", t0)
            if todo:
                features = self.model.features(np.stack(images))
                cache.update(zip(todo, features))
                t0 = times.add("backbone", t0)
            stacked = torch.stack([torch.stack([cache[k] for k in keys]) for keys in plan])
            # Each frame's crop → its window's key crop (own-box crops differ from frame to frame).
            to_key = np.stack([[crop_to_crop(crops[k][1], m) for k in keys] for keys, m in zip(plan, matrices)])
            heatmaps = self.model.heatmaps_from_features(stacked, to_key)
            t0 = times.add("denoise", t0)
        if plan:
            xy_hm, scores = dark_decode(heatmaps)
            xy = heatmaps_to_frame(xy_hm, self.model.stride, np.stack(matrices))
            times.add("dark", t0)
        # Later windows have later key frames, so they need frames from here on, own crops only.
        first_needed = windows[-1].key.position + 1 - lag
        for crop_key in [k for k in cache if k.uses_key_box or k.position < first_needed]:
            del cache[crop_key]
        owners_arr = np.asarray(owners, np.int64)
        out = []
        for w, window in enumerate(windows):
            key = window.key
            mine = np.flatnonzero(owners_arr == w)
            if len(mine) == 0:
                out.append((key.position, FrameResult(key.frame, Poses.empty())))
                continue
            detections = key.detections
            out.append((key.position, FrameResult(key.frame, Poses(
                detections.boxes_xyxy.astype(np.float32), detections.scores.astype(np.float32),
                xy[mine].astype(np.float32), scores[mine].astype(np.float32),
            ))))
        return out

    def _stream(self, frames: Iterable[Frame], times: StageTimes,
                tracker: PoseTracker | None, photos: bool = False) -> Iterator[FrameResult]:
        """Poses per frame, in frame order; tracked when ``tracker`` is given.

        With ``detect_every > 1`` the propagation needs track ids: without ``tracker`` a private
        one is used and the results keep ``track_ids`` of -1. ``photos``: every frame on its own
        (a window of 1 frame, the detector on every frame), for unrelated photos.
        """
        import torch

        window, every = (1, 1) if photos else (self.model.window, self.detect_every)
        propagator = BoxPropagator() if every > 1 else None
        keep_ids = tracker is not None
        if propagator is not None and tracker is None:
            tracking = self.config.tracking
            tracker = PoseTracker(max_age=tracking.max_age, oks_threshold=tracking.oks_threshold,
                                  iou_threshold=tracking.iou_threshold)
        # A key frame's window is complete δ frames after it is read: the lag of the poses.
        lag = window // 2
        windows: TemporalWindows[_Item] = TemporalWindows(window)
        batcher = _WindowBatcher(lambda batch, cache: self._estimate(batch, cache, times, lag, photos),
                                 self.model.batch_size, tracker, propagator, keep_ids, times)

        previous_threads = torch.get_num_threads()
        torch.set_num_threads(self.threads.model)
        detector = self.make_detector()
        if photos and self.config.rotations and self.config.boxes_file is None:
            detector = QuarterTurnDetector(detector)
        stream = prefetch(self._detected(frames, detector, times, every), depth=self.threads.prefetch)
        try:
            with contextlib.closing(stream):
                t0 = time.perf_counter()
                for position, frame, detections in stream:
                    if self.threads.prefetch:
                        times.add("wait", t0, gpu=False)
                    if detections is None:
                        # The boxes of a frame the detector skips are the latest detector boxes,
                        # moved by their tracks' motion, so those tracks must have seen that
                        # detector frame's poses. A flush gives the poses up to this frame's
                        # predecessor's key frame; only if the latest detection is older than
                        # that must the batch be run now instead of filling further.
                        newest_key_after_flush = position - 1 - lag
                        if propagator.latest_detection < newest_key_after_flush:
                            yield from batcher.flush()
                        t0 = time.perf_counter()
                        detections = propagator.boxes(position, frame.image.shape[:2])
                        times.add("propagate", t0)
                    elif propagator is not None:
                        propagator.detected(position, detections)
                    yield from batcher.add(windows.push(_Item(position, frame, detections)))
                    t0 = time.perf_counter()
            yield from batcher.add(windows.flush())
            yield from batcher.flush()
        finally:
            torch.set_num_threads(previous_threads)

    def untracked(self, frames: Iterable[Frame], times: StageTimes | None = None,
                  photos: bool = False) -> Iterator[FrameResult]:
        """Poses per frame before tracking and smoothing (``track_ids`` all -1), in frame order.

        ``photos``: each frame alone (no temporal window; the detector on every frame).
        """
        yield from self._stream(frames, times if times is not None else StageTimes(), tracker=None, photos=photos)

    def poses(self, path: str | Path, times: StageTimes | None = None) -> Iterator[FrameResult]:
        """Stream the poses of one input (video file or image folder), frame by frame: tracked, or
        each frame alone where the input is taken as photos (:meth:`source_info`)."""
        with open_source(path) as source:
            yield from self._results(source, self.source_info(source.info), times)

    def source_info(self, info: SourceInfo) -> SourceInfo:
        """``info`` with ``photos`` decided: an image input is taken as unrelated photos when
        ``config.photos`` says so or, left at None, when its images differ in size or it is one image."""
        guess = info.sizes_vary or info.num_frames == 1
        photos = info.kind == "images" and (guess if self.config.photos is None else self.config.photos)
        return dataclasses.replace(info, photos=photos)

    def _results(self, frames: Iterable[Frame], info: SourceInfo, times: StageTimes | None) -> Iterator[FrameResult]:
        return self.untracked(frames, times, photos=True) if info.photos else self.tracked(frames, times)

    def tracked(self, frames: Iterable[Frame], times: StageTimes | None = None) -> Iterator[FrameResult]:
        """Tracked (and, if configured, smoothed) poses of a stream of frames, in frame order."""
        times = times if times is not None else StageTimes()
        tracking = self.config.tracking
        tracker = PoseTracker(max_age=tracking.max_age, oks_threshold=tracking.oks_threshold,
                              iou_threshold=tracking.iou_threshold)
        smoother = PoseSmoother(self.config.smooth)
        stream = self._stream(frames, times, tracker)
        stream = drop_short_tracks(stream, tracking.min_track_length, max_age=tracking.max_age)
        yield from smoother.smooth(stream)

    # -- files -------------------------------------------------------------------------------

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
            summary = self.write(source, self.source_info(source.info), out_dir, stem or path.stem, progress)
            truncated = source.truncated
        if summary.frames and not summary.poses:
            # Outputs are written, with no poses; a line says so (a detector score too high for the input).
            log.warning("%s: no people found in %d frame(s) (--score-threshold lowers the least detector score)",
                        path, summary.frames)
        return RunSummary(input=path, frames=summary.frames, poses=summary.poses, tracks=summary.tracks,
                          seconds=summary.seconds, outputs=summary.outputs, truncated=truncated,
                          stage_seconds=summary.stage_seconds)

    def write(self, frames: Iterable[Frame], info: SourceInfo, out_dir: str | Path, stem: str,
              progress: ProgressCallback | None = None, times: StageTimes | None = None,
              observe: Callable[[FrameResult], None] | None = None) -> RunSummary:
        """Estimate tracked poses for a stream of frames and write the outputs named ``stem``.

        Args:
            info: what the outputs say about the input; ``info.photos`` takes each frame alone
                (no window, tracking or smoothing across frames; ``model.window`` 1 in the outputs).
            times: collects the seconds per stage (a fresh one by default; the summary has them).
            observe: called with every result as it is written (e.g. to score it).

        Raises:
            PoseCliError: no frame in the stream, unwritable output folder.
        """
        start = time.perf_counter()
        times = times if times is not None else StageTimes()
        model_info = dataclasses.replace(self.model_info, window=1) if info.photos else self.model_info
        sinks = make_sinks(Path(out_dir), stem, self.config.formats, self.config.overlay,
                           info, model_info, score_threshold=self.config.keypoint_threshold,
                           coco_image_ids=self._coco_image_ids)
        name = Path(info.path).name
        log.info("%s: %s%s, %d×%d%s, %g fps, %d frames announced", name, info.kind,
                 " taken as unrelated photos" if info.photos else "", info.width, info.height,
                 " at most (sizes vary)" if info.sizes_vary else "", info.fps, info.num_frames)
        count = poses = 0
        track_ids: set[int] = set()
        if progress is not None and info.num_frames:  # the total, before the first result
            progress(0, info.num_frames)
        try:
            for result in self._results(frames, info, times):
                t0 = time.perf_counter()
                for sink in sinks:
                    sink.write(result)
                times.add("write", t0)
                count += 1
                poses += len(result.poses)
                track_ids.update(int(t) for t in result.poses.track_ids if t >= 0)
                if observe is not None:
                    observe(result)
                if progress is not None:
                    progress(count, max(info.num_frames, count))
            if count == 0:
                raise PoseCliError(f"{name}: no frame could be decoded")
            t0 = time.perf_counter()
            for sink in sinks:
                sink.close()
            times.add("write", t0)
        except BaseException:
            for sink in sinks:
                sink.abort()
            raise
        log.info("%s: %d frames, %d poses in %d tracks, in %.1f s (%s)", name, count, poses, len(track_ids),
                 time.perf_counter() - start, ", ".join(f"{k} {v:.1f} s" for k, v in times.seconds.items()))
        return RunSummary(
            input=Path(info.path), frames=count, poses=poses, tracks=len(track_ids),
            seconds=time.perf_counter() - start, outputs=tuple(s.path for s in sinks),
            truncated=False, stage_seconds=dict(times.seconds),
        )


def _best_match(box: np.ndarray, boxes: np.ndarray) -> int:
    """Index of the box in ``boxes [M, 4]`` overlapping ``box [4]`` most (IoU ≥ 0.3), else -1."""
    if len(boxes) == 0:
        return -1
    iou = box_iou(np.asarray(box)[None], boxes)[0]
    best = int(np.argmax(iou))
    return best if iou[best] >= NEIGHBOUR_MIN_IOU else -1
