"""DiffPose pose model: network, diffusion schedule and DDIM sampler, checkpoints, predictor.

Importing this package imports torch; the CLI imports it inside commands only.
"""

from .checkpoint import load_checkpoint, save_checkpoint
from .diffpose_movenet import DiffPoseMoveNet
from .diffusion import DDIMSampler, NoiseSchedule, heatmap_to_signal, signal_to_heatmap
from .predictor import HeatmapPredictor
from .preprocess import RAW_MEAN_RGB, RAW_STD_RGB, crops_to_tensor

__all__ = [
    "DDIMSampler", "DiffPoseMoveNet", "HeatmapPredictor", "NoiseSchedule", "RAW_MEAN_RGB", "RAW_STD_RGB",
    "crops_to_tensor", "heatmap_to_signal", "load_checkpoint", "save_checkpoint", "signal_to_heatmap",
]
