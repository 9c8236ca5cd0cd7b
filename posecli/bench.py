"""``posecli bench``: where the time goes, end to end, next to a baseline timed in the same run.

The report holds seconds per stage (decode, detect, crop, backbone, denoise, DARK, track, write),
frames/s and person-frames/s for the whole pipeline, peak memory, the settings, and the same clip
run through the baseline pipeline of ``../shared/weights`` (YOLOX-nano boxes + MoveNet Lightning
per person). The ratio of the two does not depend on how loaded the machine is.

``--repeat N`` feeds the clip N times in a row as one long stream (frame indices and times keep
increasing), which is how memory flatness in video length is checked without a long file.
"""

from __future__ import annotations

import platform
import resource
import tempfile
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

from posecli.config import PipelineConfig
from posecli.types import Frame, SourceInfo
from posecli.video import open_source


def repeated_frames(path: Path, repeat: int) -> tuple[Iterator[Frame], SourceInfo]:
    """The clip's frames ``repeat`` times over, as one stream with increasing index and time."""
    with open_source(path) as source:
        info = source.info

    def frames() -> Iterator[Frame]:
        index, offset = 0, 0.0
        for _ in range(repeat):
            last = 0.0
            with open_source(path) as source:
                for frame in source:
                    yield Frame(index, offset + frame.time_s, frame.image, frame.file)
                    index += 1
                    last = frame.time_s
            offset += last + 1.0 / max(info.fps, 1e-6)

    return frames(), replace(info, num_frames=info.num_frames * repeat)


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far, MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def time_baseline(path: Path, detector, pose_model, repeat: int = 1) -> dict:  # noqa: ANN001
    """Decode → detect → top-down pose per box, no tracking or writing: the baseline pipeline."""
    frames, _ = repeated_frames(path, repeat)
    seconds = {"decode": 0.0, "detect": 0.0, "pose": 0.0}
    count = persons = 0
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
    return {"name": f"yolox-nano + {pose_model.name}", "frames": count, "person_frames": persons,
            "seconds": total, "fps": count / total, "person_fps": persons / total,
            "stage_seconds": seconds}


def run_bench(path: Path, config: PipelineConfig, repeat: int = 1, baseline: bool = True,
              baseline_dirs: tuple[Path, ...] = ()) -> dict:
    """Time the full pipeline (and the baseline) on ``path``; returns the JSON-able report."""
    import torch

    from posecli.pipeline import Pipeline

    pipeline = Pipeline(config)
    frames, info = repeated_frames(path, repeat)
    with tempfile.TemporaryDirectory(prefix="posecli-bench-") as out_dir:
        summary = pipeline.write(frames, info, out_dir, Path(path).stem)
    report = {
        "format": "posecli-bench/1",
        "input": str(path), "repeat": repeat, "frames": summary.frames,
        "person_frames": summary.poses, "tracks": summary.tracks,
        "seconds": summary.seconds,
        "fps": summary.frames / summary.seconds,
        "person_fps": summary.poses / summary.seconds,
        "stage_seconds": {k: round(v, 4) for k, v in sorted(summary.stage_seconds.items(), key=lambda kv: -kv[1])},
        "peak_rss_mib": round(peak_rss_mib(), 1),
        "settings": {
            "device": pipeline.device, "dtype": str(pipeline.model.predictor.dtype).replace("torch.", ""),
            "window": pipeline.model.window, "steps": pipeline.model.info.steps,
            "batch_size": config.batch_size, "threads": torch.get_num_threads(),
            "detector": config.detector, "model": pipeline.model_info.name,
        },
        "machine": {"cpu": platform.processor() or platform.machine(), "python": platform.python_version(),
                    "torch": torch.__version__},
    }
    if pipeline.device == "cuda":
        report["cuda_max_allocated_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        report["machine"]["gpu"] = torch.cuda.get_device_name(0)
    if baseline:
        from posecli.baselines import load_baseline

        base = time_baseline(path, pipeline.make_detector(), load_baseline("movenet", baseline_dirs), repeat)
        report["baseline"] = base
        report["speed_ratio_vs_baseline"] = round(report["fps"] / base["fps"], 3)
    return report
