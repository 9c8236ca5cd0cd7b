"""Options of a run, gathered in one frozen object the CLI builds and the pipeline reads."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from posecli.errors import PoseCliError

# How the neighbour frames of a window are cropped (see ``posecli.pipeline``).
NEIGHBOUR_CROPS = ("key", "own")
# The choices of the other options, here so that a bad one is refused before torch, the detector
# or scipy are imported (tests/test_config.py keeps them equal to the modules that implement them).
DEVICES = ("auto", "cpu", "cuda")
DTYPES = ("auto", "float32", "bfloat16", "float16")
DETECTOR_NAMES = ("yolox-nano", "rtmdet-nano")
SMOOTHING_KINDS = ("none", "oneeuro", "savgol")
OUTPUT_FORMATS = ("json", "jsonl", "csv", "coco", "mmaction", "npz")


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
    # Image inputs: True takes the images as unrelated photos (each alone: no window, tracking or
    # smoothing across them), False as frames of one shot; None: photos when their sizes vary.
    photos: bool | None = None
    # Photos: the detector looks at each photo, and the model at each person, also turned by quarter
    # turns (``detect.QuarterTurnDetector``, ``models/orientation.py``).
    rotations: bool = True
    # COCO dataset file whose images' file names give the ``image_id`` of the ``coco`` format.
    coco_dataset: Path | None = None

    def __post_init__(self) -> None:
        """Refuse bad options at once, with the command-line option's name (cheap: no imports)."""
        def choose(option: str, value: str, choices: tuple[str, ...]) -> None:
            if value not in choices:
                raise PoseCliError(f"{option} must be one of {', '.join(choices)}, not {value!r}")

        def at_least(option: str, value: int | None, least: int) -> None:
            if value is not None and value < least:
                raise PoseCliError(f"{option} must be at least {least}, not {value}")

        choose("--device", self.device, DEVICES)
        choose("--dtype", self.dtype, DTYPES)
        choose("--neighbour-crops", self.neighbour_crops, NEIGHBOUR_CROPS)
        choose("--detector", self.detector, DETECTOR_NAMES)
        choose("--smooth", self.smooth, SMOOTHING_KINDS)
        for fmt in self.formats:
            choose("--format", fmt, OUTPUT_FORMATS)
        if self.coco_dataset is not None and "coco" not in self.formats:
            raise PoseCliError("--coco-dataset gives the image ids of --format coco, which is not asked for")
        if not self.formats and not self.overlay:
            raise PoseCliError("--format names no output format; choose from " + ", ".join(OUTPUT_FORMATS))
        if self.window is not None and (self.window < 1 or self.window % 2 == 0):
            raise PoseCliError(f"--window must be odd (the key frame sits in the middle: 1, 3, 5, …), not {self.window}")
        for option, value in (("--steps", self.steps), ("--batch-size", self.batch_size),
                              ("--detect-every", self.detect_every), ("--threads", self.threads),
                              ("cpus", self.cpus)):
            at_least(option, value, 1)
        at_least("--prefetch", self.prefetch, 0)
        if not 0.0 <= self.score_threshold <= 1.0:
            raise PoseCliError(f"--score-threshold must be between 0 and 1, not {self.score_threshold}")
