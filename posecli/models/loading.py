"""The pose model as the pipeline uses it: checkpoint found and verified, sampler and predictor set up."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from posecli import weights as weights_lib
from posecli.errors import PoseCliError
from posecli.types import ModelInfo

from .checkpoint import load_checkpoint
from .diffpose import HEATMAP_STRIDE
from .diffusion import DDIMSampler, NoiseSchedule
from .predictor import HeatmapPredictor

# The manifest entry `posecli run` uses when no --weights is given.
DEFAULT_POSE_WEIGHTS = "diffpose.coco17-v1"


class PoseModel:
    """A loaded DiffPose checkpoint ready for inference.

    Attributes:
        info: name, sha256, window and steps, as recorded in outputs.
        window: frames per window T used at inference.
        input_hw: crop size (H, W).
        stride: input pixels per heatmap pixel.
    """

    def __init__(self, path: Path, name: str, sha256: str, device: str, window: int | None,
                 steps: int | None, seed: int, batch_size: int) -> None:
        model, config = load_checkpoint(path, device="cpu")
        self.config = config
        self.window = window or int(config["window"])
        if self.window % 2 == 0:
            raise PoseCliError(f"--window must be odd (the key frame sits in the middle), got {self.window}")
        steps = steps or int(config["steps"])
        self.input_hw = tuple(int(v) for v in config["input_size"])
        self.stride = HEATMAP_STRIDE
        schedule = NoiseSchedule(timesteps=int(config["timesteps"]), kind=config["schedule"])
        sampler = DDIMSampler(schedule, steps=steps, seed=seed, signal_scale=float(config["signal_scale"]))
        dtype = torch.bfloat16 if device == "cuda" else torch.float32
        self.predictor = HeatmapPredictor(model, sampler, device=device, dtype=dtype, batch_size=batch_size)
        self.info = ModelInfo(name=name, sha256=sha256, window=self.window, steps=steps)

    def heatmaps(self, crops: np.ndarray, times=None) -> np.ndarray:  # noqa: ANN001 - StageTimes
        """Heatmaps [N, K, h, w] for windows of crops [N, T, H, W, 3] (uint8 BGR).

        The model's own window T_model may differ from the run's: the run's T frames are spread
        over the model's T_model slots by nearest index, so ``--window 1`` replicates a frame.
        """
        n, t = crops.shape[:2]
        t0 = time.perf_counter()
        feats = self.predictor.features(crops.reshape(n * t, *crops.shape[2:]))
        feats = feats.view(n, t, *feats.shape[1:])
        model_t = self.predictor.window
        if t != model_t and t != 1:
            index = torch.round(torch.linspace(0, t - 1, model_t)).long().to(feats.device)
            feats = feats.index_select(1, index)
        if times is not None:
            t0 = times.add("backbone", t0)
        heatmaps = self.predictor.heatmaps_from_features(feats)
        if times is not None:
            times.add("denoise", t0)
        return heatmaps


def load_pose_model(weights: Path | None, *, device: str, window: int | None, steps: int | None,
                    seed: int, batch_size: int) -> PoseModel:
    """Find (``--weights`` or the default manifest entry), verify and load the pose model.

    Raises:
        PoseCliError: weights missing or with a wrong sha256, or options that do not fit them.
    """
    path = weights_lib.resolve(weights if weights is not None else DEFAULT_POSE_WEIGHTS)
    sha256 = weights_lib.sha256_file(path)
    name = next((e.name for e in weights_lib.list_entries() if e.sha256 == sha256), path.stem)
    try:
        return PoseModel(path, name, sha256, device, window, steps, seed, batch_size)
    except (KeyError, RuntimeError, ValueError) as exc:
        raise PoseCliError(f"{path}: not a usable posecli checkpoint ({exc})") from exc
