"""Options of a run, gathered in one frozen object the CLI builds and the pipeline reads."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


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
    """

    weights: Path | None = None
    device: str = "auto"  # auto | cpu | cuda
    window: int | None = None
    steps: int | None = None
    seed: int = 0
    batch_size: int = 16  # person-windows per model call
    detector: str = "yolox-nano"
    detector_weights: Path | None = None
    boxes_file: Path | None = None
    score_threshold: float = 0.4
    keypoint_threshold: float = 0.3  # drawing only
    tracking: TrackingConfig = TrackingConfig()
    smooth: str = "none"
    formats: tuple[str, ...] = ("json",)
    overlay: bool = False
