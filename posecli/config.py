"""Options of a run, gathered in one frozen object the CLI builds and the pipeline reads."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# How the neighbour frames of a window are cropped (see ``posecli.pipeline``).
NEIGHBOUR_CROPS = ("key", "own")


@dataclass(frozen=True)
class TrackingConfig:
    """Pose tracker options (see ``posecli.track``)."""

    max_age: int = 30  # frames a lost track is kept for re-identification
    oks_threshold: float = 0.3  # least pose similarity for a match
    iou_threshold: float = 0.3  # least box overlap for a match
    min_track_length: int = 1  # tracks seen in fewer frames are dropped from the outputs


@dataclass(frozen=True)
class PipelineConfig:
    """Everything the pipeline needs that is not an input path.

    ``window`` and ``steps`` of ``None`` take the values recorded in the weights.

    Speed options (``posecli.pipeline`` explains them; ``posecli bench --pseudo-labels`` measures
    their speed and accuracy together):
    ``batch_size`` None sizes batches itself (16 on a CPU, from the free memory on a GPU);
    ``dtype`` "auto" is bfloat16 autocast where the hardware has it, else float32 (CPU) or
    float16 (older GPUs); ``neighbour_crops`` "own" crops each frame of a window with its own box
    so the backbone runs once per (frame, box), "key" crops them with the key frame's box (the
    paper; T backbone passes per person and frame); ``detect_every`` k runs the detector on every
    k-th frame and moves the tracked persons' boxes in between; ``prefetch`` frames are decoded and
    detected ahead in a background thread (0: no thread) and ``threads`` is the model's CPU thread
    count (None for either: chosen from the cores, see ``pipeline.resolve_threads``).

    Defaults, measured on sports2d_demo.mp4 and pose2sim_MultiPerson_cam02.mp4 against their
    pseudo-labels (2-core CPU): "own" crops and bfloat16 each change PCK@0.2 by less than 0.002
    and jitter by less than 2 %, and make the pipeline about 1.7× and 1.3× faster;
    ``detect_every`` stays 1 because skipped frames lose the persons the detector missed on the
    frame before (2.6 % of persons for k = 2, 5.2 % for k = 3, for 15-30 % less time).
    """

    weights: Path | None = None
    device: str = "auto"  # auto | cpu | cuda
    window: int | None = None
    steps: int | None = None
    seed: int = 0
    batch_size: int | None = None  # person-windows per model call; None: automatic
    dtype: str = "auto"  # auto | float32 | bfloat16 | float16
    neighbour_crops: str = "own"  # own | key
    detect_every: int = 1
    prefetch: int | None = None  # frames decoded/detected ahead in a thread; None: automatic
    threads: int | None = None
    cpus: int | None = None  # CPU cores the run may use (a Ray worker's share); None: all it may run on
    compile: bool = False  # torch.compile the network: minutes up front, for long videos
    detector: str = "yolox-nano"
    detector_weights: Path | None = None
    boxes_file: Path | None = None
    score_threshold: float = 0.4
    keypoint_threshold: float = 0.3  # drawing only
    tracking: TrackingConfig = TrackingConfig()
    smooth: str = "savgol"  # measured best: jitter −92 %, PCK kept (see eval-tracks)
    formats: tuple[str, ...] = ("json",)
    overlay: bool = False
