"""``posecli bench``: where the time goes, end to end, next to a baseline timed in the same run.

The report holds seconds per stage (decode, detect, crop, backbone, denoise, DARK, track, write),
frames/s and person-frames/s for the whole pipeline, peak memory, the settings, and the same clip
run through the baseline pipeline of ``../shared/weights`` (YOLOX-nano boxes + MoveNet Lightning
per person, one after the other in one thread). The ratio of the two does not depend on how loaded
the machine is, as far as both see the same load; the ratio of CPU seconds per frame (all threads of
this process) is given too, as it depends even less on other processes (but counts time spent on
two cores twice).

Stage seconds: with a prefetch thread (``settings.prefetch`` > 0; see ``pipeline.resolve_threads``)
decoding and detection overlap the model's stages (``overlapped_stages``), so the stages add up
to more than the wall time, and ``wait`` is the time the model's thread spent waiting for them. On CUDA the clock is read after a synchronisation,
so GPU time lands in the stage that queued it.

``--repeat N`` feeds the clip N times in a row as one long stream (frame indices and times keep
increasing), which is how memory flatness in video length is checked without a long file.

With ``pseudo_labels`` (a clip's ``.pseudo.json``) the report also scores the run's poses against
them (first pass of the clip only): PCK and jitter as ``posecli eval --video`` computes them, on
the persons matched to a predicted pose, plus how many persons were matched at all, so that the
accuracy cost of a speed option (``detect_every``, ``neighbour_crops``, ``dtype``) is measured on
the same run as its speed.
"""

from __future__ import annotations

import platform
import resource
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

import numpy as np

from posecli.config import PipelineConfig
from posecli.errors import PoseCliError
from posecli.pseudo_labels import read_pseudo_labels
from posecli.types import Frame, FrameResult, SourceInfo
from posecli.video import open_source

# Least IoU between a predicted pose's box and a pseudo-label box for the two to be the same person.
MATCH_IOU = 0.3
# Pseudo-label joints at or above this confidence count (as in ``posecli eval --video``).
PSEUDO_CONFIDENCE = 0.3


def repeated_frames(path: Path, repeat: int, tile: int = 1) -> tuple[Iterator[Frame], SourceInfo]:
    """The clip's frames ``repeat`` times over, as one stream with increasing index and time.

    ``tile`` > 1 puts each frame ``tile`` × ``tile`` times side by side, so every person appears
    ``tile``² times: a many-person stream from a few-person clip.
    """
    with open_source(path) as source:
        info = source.info

    def frames() -> Iterator[Frame]:
        index, offset = 0, 0.0
        for _ in range(repeat):
            last = 0.0
            with open_source(path) as source:
                for frame in source:
                    image = np.tile(frame.image, (tile, tile, 1)) if tile > 1 else frame.image
                    yield Frame(index, offset + frame.time_s, image, frame.file)
                    index += 1
                    last = frame.time_s
            offset += last + 1.0 / max(info.fps, 1e-6)

    return frames(), replace(info, num_frames=info.num_frames * repeat, width=info.width * tile,
                             height=info.height * tile)


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far, MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def cpu_seconds() -> float:
    """CPU time (user + system, all threads) this process has used so far, seconds."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def current_rss_mib() -> float:
    """Resident memory of this process now, MiB (Linux; 0 where ``/proc`` is missing)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return 0.0
    return pages * resource.getpagesize() / 2**20


def time_baseline(path: Path, detector, pose_model, repeat: int = 1,  # noqa: ANN001
                  detector_name: str = "yolox-nano", tile: int = 1) -> dict:
    """Decode → detect → top-down pose per box, no tracking or writing: the baseline pipeline."""
    frames, _ = repeated_frames(path, repeat, tile)
    seconds = {"decode": 0.0, "detect": 0.0, "pose": 0.0}
    count = persons = 0
    cpu0 = cpu_seconds()
    t0 = time.perf_counter()
    for frame in frames:
        t1 = time.perf_counter()
        seconds["decode"] += t1 - t0
        detections = detector(frame)
        t2 = time.perf_counter()
        seconds["detect"] += t2 - t1
        if len(detections):
            pose_model.predict([frame.image], detections.boxes_xyxy)
        t0 = time.perf_counter()
        seconds["pose"] += t0 - t2
        count += 1
        persons += len(detections)
    total = sum(seconds.values())
    return {"name": f"{detector_name} + {pose_model.name}", "frames": count, "person_frames": persons,
            "seconds": total, "fps": count / total, "person_fps": persons / total,
            "cpu_seconds": cpu_seconds() - cpu0, "stage_seconds": seconds}


@dataclass
class PoseRecorder:
    """Keeps the keypoints of every result of the first ``num_frames`` frames (no images)."""

    num_frames: int
    frames: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=dict)

    def __call__(self, result: FrameResult) -> None:
        if result.frame.index < self.num_frames:
            poses = result.poses
            self.frames[result.frame.index] = (poses.boxes_xyxy.copy(), poses.keypoints_xy.copy(),
                                               poses.keypoint_scores.copy(), poses.track_ids.copy())


def score_against_pseudo_labels(recorded: dict[int, tuple[np.ndarray, ...]], pseudo_file: Path) -> dict:
    """PCK and jitter of recorded poses against a clip's pseudo-labels.

    Each pseudo-labelled person (``static_track`` ones left out, as in ``posecli eval``) is matched
    to at most one predicted pose of its frame (Hungarian on box IoU, at least ``MATCH_IOU``).
    PCK (:func:`posecli.eval.metrics.pck`, joints with confidence ≥ 0.3, normalised by the pseudo box's
    ``sqrt(w·h)``) is given over the matched persons (``pck``) and with unmatched persons' joints
    counted wrong (``pck_all``). Jitter (:func:`posecli.eval.metrics.jitter`) follows the matched
    predictions along each pseudo-label track, as ``evaluate_video`` does; ``reference_jitter`` is
    the pseudo-labels' own.

    Args:
        recorded: frame index → (boxes N×4, keypoints N×K×2, scores N×K, track ids N).
        pseudo_file: ``<clip>.pseudo.json`` (COCO-video style).

    Returns:
        ``{"persons", "matched", "recall", "pck", "pck_all", "jitter", "jitter_median",
        "reference_jitter"}``.
    """
    from scipy.optimize import linear_sum_assignment

    from posecli.eval.metrics import box_size, jitter_by_track, pck
    from posecli.track import box_iou

    rows = [(p.frame, p.track_id, p.box_xywh, p.keypoints) for p in read_pseudo_labels(pseudo_file).moving()]
    rows = [r for r in rows if r[0] in recorded]
    if not rows:
        raise PoseCliError(f"{pseudo_file}: no labelled frame among the frames that were run")
    by_frame: dict[int, list[int]] = defaultdict(list)
    for i, row in enumerate(rows):
        by_frame[row[0]].append(i)
    reference = np.stack([r[3] for r in rows])
    sizes = np.array([float(box_size(r[2])) for r in rows])
    valid = reference[..., 2] >= PSEUDO_CONFIDENCE
    predicted = np.full((len(rows), reference.shape[1], 2), np.nan)
    matched = np.zeros(len(rows), bool)
    for frame, members in by_frame.items():
        boxes, keypoints = recorded[frame][0], recorded[frame][1]
        if len(boxes) == 0:
            continue
        xywh = np.stack([rows[i][2] for i in members])
        truth = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
        iou = box_iou(truth, boxes)
        for r, c in zip(*linear_sum_assignment(-iou)):
            if iou[r, c] >= MATCH_IOU:
                predicted[members[r]] = keypoints[c]
                matched[members[r]] = True
    track_jitter = partial(jitter_by_track, track_ids=np.array([r[1] for r in rows]),
                           frame_index=np.array([r[0] for r in rows]), size=sizes, valid=valid)
    far = np.where(matched[:, None, None], predicted, np.inf)  # unmatched persons: every joint wrong
    ours = track_jitter(np.nan_to_num(predicted), use=matched)
    return {
        "pseudo_labels": str(pseudo_file), "persons": len(rows), "matched": int(matched.sum()),
        "recall": float(matched.mean()),
        "pck": pck(predicted[matched], reference[matched, :, :2], valid[matched], sizes[matched])
        if matched.any() else None,
        "pck_all": pck(far, reference[..., :2], valid, sizes),
        "jitter": ours["jitter"], "jitter_median": ours["jitter_median"],
        "reference_jitter": track_jitter(reference[..., :2])["jitter"],
    }


def run_bench(path: Path, config: PipelineConfig, repeat: int = 1, baseline: bool = True,
              baseline_dirs: tuple[Path, ...] = (), pseudo_labels: Path | None = None,
              tile: int = 1, baseline_names: tuple[str, ...] = ("movenet", "thunder")) -> dict:
    """Time the full pipeline (and the baseline) on ``path``; returns the JSON-able report.

    Args:
        path: a video file.
        config: the pipeline's options.
        repeat: feed the clip this many times as one stream.
        baseline: also time the baseline pipelines on the same clip (same repeat): YOLOX-nano +
            each of ``baseline_names`` (``eval.baselines``: MoveNet Lightning int8, Thunder, …).
        baseline_dirs: where to look for the baselines' ``.tflite``.
        pseudo_labels: score the poses of the clip's first pass against this ``.pseudo.json``.
        tile: show each frame ``tile`` × ``tile`` times side by side (see :func:`repeated_frames`).

    Raises:
        PoseCliError: ``tile`` > 1 with pseudo-labels or a boxes file (both are for the untiled clip).
    """
    import torch

    if tile > 1 and (pseudo_labels is not None or config.boxes_file is not None):
        raise PoseCliError("--tile needs the detector: pseudo-labels and boxes files describe the untiled clip")

    from posecli.pipeline import Pipeline, StageTimes

    pipeline = Pipeline(config)
    model = pipeline.model
    frames, info = repeated_frames(path, repeat, tile)
    # One call on blank crops first: one-off costs (kernel selection, lazy CUDA init, allocator
    # growth, torch.compile) are not what a long video pays per frame. Two windows, as a batch of
    # one is a special case for torch.compile's dynamic shapes.
    warmup = time.perf_counter()
    model.heatmaps(np.zeros((2, model.window, *model.input_hw, 3), np.uint8))
    warmup = time.perf_counter() - warmup
    if pipeline.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    rss_before = current_rss_mib()
    cpu0 = cpu_seconds()
    recorder = PoseRecorder(info.num_frames // repeat) if pseudo_labels is not None else None
    times = StageTimes(sync_cuda=pipeline.device == "cuda")
    with tempfile.TemporaryDirectory(prefix="posecli-bench-") as out_dir:
        summary = pipeline.write(frames, info, out_dir, Path(path).stem, times=times, observe=recorder)
    report = {
        "format": "posecli-bench/1",
        "input": str(path), "repeat": repeat, "tile": tile, "frames": summary.frames,
        "person_frames": summary.poses, "tracks": summary.tracks,
        "seconds": summary.seconds,
        "fps": summary.frames / summary.seconds,
        "person_fps": summary.poses / summary.seconds,
        "cpu_seconds": round(cpu_seconds() - cpu0, 2),
        "stage_seconds": {k: round(v, 4) for k, v in sorted(summary.stage_seconds.items(), key=lambda kv: -kv[1])},
        "overlapped_stages": ["decode", "detect"] if pipeline.threads.prefetch > 0 else [],
        "warmup_seconds": round(warmup, 2),
        "rss_before_run_mib": round(rss_before, 1),
        "peak_rss_mib": round(peak_rss_mib(), 1),
        "settings": {
            "device": pipeline.device, "dtype": str(model.dtype).replace("torch.", ""),
            "window": model.window, "steps": model.info.steps,
            "batch_size": model.batch_size, "threads": pipeline.threads.model,
            "detector_threads": pipeline.threads.detector,
            "neighbour_crops": config.neighbour_crops, "detect_every": pipeline.detect_every,
            "prefetch": pipeline.threads.prefetch, "compile": config.compile,
            "detector": "boxes file" if config.boxes_file is not None else config.detector,
            "model": pipeline.model_info.name,
        },
        "machine": {"cpu": platform.processor() or platform.machine(), "python": platform.python_version(),
                    "torch": torch.__version__},
    }
    if pipeline.device == "cuda":
        report["cuda_max_allocated_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        report["machine"]["gpu"] = torch.cuda.get_device_name(0)
    if recorder is not None:
        report["accuracy"] = score_against_pseudo_labels(recorder.frames, pseudo_labels)
    if baseline:
        from posecli.eval.baselines import load_baseline

        report["baselines"] = {}
        for name in baseline_names:
            base = time_baseline(path, pipeline.make_detector(), load_baseline(name, baseline_dirs), repeat,
                                 detector_name=report["settings"]["detector"], tile=tile)
            base["speed_ratio"] = round(report["fps"] / base["fps"], 3)  # ours / baseline
            # CPU seconds per frame, baseline over ours: less sensitive to other processes' load.
            base["cpu_ratio"] = round(base["cpu_seconds"] / base["frames"]
                                      / (report["cpu_seconds"] / report["frames"]), 3)
            report["baselines"][name] = base
    return report
