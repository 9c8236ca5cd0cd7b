"""posecli: video → tracked COCO-17 body keypoints with a spatiotemporal diffusion pose model."""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["Pipeline", "PipelineConfig", "process_many", "__version__"]


def __getattr__(name: str):
    # Lazy, so that `import posecli` (and the CLI's --help) does not pay for torch.
    if name == "Pipeline":
        from posecli.pipeline import Pipeline

        return Pipeline
    if name == "PipelineConfig":
        from posecli.config import PipelineConfig

        return PipelineConfig
    if name == "process_many":  # a batch on Ray workers (the optional extra posecli[ray])
        from posecli.distributed import process_many

        return process_many
    raise AttributeError(f"module 'posecli' has no attribute {name!r}")
