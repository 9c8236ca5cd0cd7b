"""DiffPose pose model: network, diffusion schedule and DDIM sampler, checkpoints, predictor.

Importing this package imports torch; the CLI imports it inside commands only.
"""

from .backbone import EfficientNetLite0, load_imagenet_weights
from .checkpoint import load_checkpoint, save_checkpoint
from .diffpose import DiffPose
from .diffusion import DDIMSampler, NoiseSchedule, heatmap_to_signal, signal_to_heatmap
from .predictor import HeatmapPredictor
from .preprocess import MEAN_RGB, STD_RGB, crops_to_tensor

__all__ = [
    "DDIMSampler", "DiffPose", "EfficientNetLite0", "HeatmapPredictor", "MEAN_RGB", "NoiseSchedule",
    "STD_RGB", "crops_to_tensor", "heatmap_to_signal", "load_checkpoint",
    "load_imagenet_weights", "save_checkpoint", "signal_to_heatmap",
]
