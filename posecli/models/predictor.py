"""Inference: uint8 crops → heatmaps, batched, with an optional per-frame feature cache split.

``HeatmapPredictor(crops)`` runs the per-crop encoder (MoveNet's layers and prior) → STRL →
DDIM-sampled decoder and returns heatmaps in the [0, 1] Gaussian-peak scale. Callers that can
reuse a frame's crop across windows call :meth:`HeatmapPredictor.features` once per distinct crop
and :meth:`HeatmapPredictor.heatmaps_from_features` per window.
"""

from __future__ import annotations

import contextlib
import copy

import numpy as np
import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from .diffpose_movenet import DiffPoseMoveNet
from .diffusion import DDIMSampler, signal_to_heatmap
from .preprocess import RAW_MEAN_RGB, RAW_STD_RGB, crops_to_tensor

_CONV = (nn.Conv2d, nn.ConvTranspose2d)


def fuse_batchnorm(model: nn.Module) -> nn.Module:
    """Fold every BatchNorm that directly follows a convolution in an ``nn.Sequential`` into it.

    Works in place and puts ``model`` in eval mode. Saves a pass over each activation map on the
    CPU; outputs agree with the unfused model to float rounding. Inference only: the result cannot
    be trained further. (MoveNet's layers have their BatchNorms folded already.)
    """
    model.eval()
    for module in model.modules():
        if not isinstance(module, nn.Sequential):
            continue
        names = list(module._modules)
        for a, b in zip(names, names[1:]):
            conv, bn = module._modules[a], module._modules[b]
            if isinstance(conv, _CONV) and isinstance(bn, nn.BatchNorm2d):
                module._modules[a] = fuse_conv_bn_eval(conv, bn, transpose=isinstance(conv, nn.ConvTranspose2d))
                module._modules[b] = nn.Identity()
    return model


class HeatmapPredictor:
    """Batched heatmap inference for a :class:`DiffPoseMoveNet`.

    Args:
        model: the network (not modified: the predictor works on a BN-fused copy in eval mode).
        sampler: DDIM sampler (steps, seed, hypotheses, signal_scale).
        device: "cpu", "cuda", … .
        dtype: float32, or bfloat16/float16 to run under autocast (CUDA; bfloat16 also on CPU).
        batch_size: windows per forward pass.
        mean, std: input normalisation (``preprocess.crops_to_tensor``; the checkpoint's).
    """

    def __init__(self, model: DiffPoseMoveNet, sampler: DDIMSampler, device: str | torch.device = "cpu",
                 dtype: torch.dtype = torch.float32, batch_size: int = 16,
                 mean: tuple[float, ...] = RAW_MEAN_RGB, std: tuple[float, ...] = RAW_STD_RGB) -> None:
        self.device = torch.device(device)
        self.mean, self.std = tuple(mean), tuple(std)
        # What runs MoveNet's layers (None: the model's own PyTorch trunk).
        self.trunk_runner = None
        self.dtype = dtype
        self.batch_size = batch_size
        self.sampler = sampler
        self.model = fuse_batchnorm(copy.deepcopy(model)).to(self.device).eval()
        self.window = model.window
        self.num_keypoints = model.num_keypoints
        self.input_size = model.input_size
        self.heatmap_size = model.heatmap_size

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    def features(self, crops: np.ndarray) -> torch.Tensor:
        """Per-crop features (``DiffPoseMoveNet.encode_frames``) of single crops.

        Args:
            crops: [M, H, W, 3] uint8 BGR crops of size ``input_size``.

        Returns:
            [M, D] packed features on the predictor's device (``model.layout``), ready to be cached
            and stacked into windows for :meth:`heatmaps_from_features`.
        """
        crops = np.asarray(crops)
        if crops.ndim != 4 or tuple(crops.shape[1:3]) != tuple(self.input_size):
            raise ValueError(f"crops must be [M, {self.input_size[0]}, {self.input_size[1]}, 3], got {crops.shape}")
        chunk = self.batch_size * self.window
        out = []
        with torch.inference_mode(), self._autocast():
            for i in range(0, len(crops), chunk):
                x = crops_to_tensor(crops[i:i + chunk], self.device, mean=self.mean, std=self.std)
                out.append(self.model.encode_frames(x, self.trunk_runner))
        if not out:
            return torch.zeros((0, self.model.layout.size), device=self.device)
        return torch.cat(out)

    def heatmaps_from_features(self, features: torch.Tensor, to_key: np.ndarray | None = None) -> np.ndarray:
        """Heatmaps from per-window stacks of features.

        Args:
            features: [N, T, D] from :meth:`features`, key frame at T // 2; T equals the
                model's window, or 1 (a single image, replicated to the window).
            to_key: [N, T, 2, 3] affines from each frame's crop to the key frame's crop (the
                frames' priors are aligned with them); None = all frames share the key frame's crop.

        Returns:
            [N, K, H/4, W/4] float32 heatmaps on the [0, 1] Gaussian-peak scale (not clamped:
            sampling may overshoot slightly).
        """
        n = features.shape[0]
        k, (hh, hw) = self.num_keypoints, self.heatmap_size
        if n == 0:
            return np.zeros((0, k, hh, hw), np.float32)
        if features.shape[1] == 1 and self.window > 1:
            features = features.expand(-1, self.window, *features.shape[2:])
            to_key = None
        if features.shape[1] != self.window:
            raise ValueError(f"windows must have {self.window} frames (or 1), got {features.shape[1]}")
        if to_key is not None:
            to_key = torch.as_tensor(np.asarray(to_key, np.float32), device=self.device)
        out = []
        with torch.inference_mode(), self._autocast():
            for i in range(0, n, self.batch_size):
                batch = features[i:i + self.batch_size].to(self.device)
                cond = self.model.fuse(batch, None if to_key is None else to_key[i:i + self.batch_size])
                x0 = self.sampler.sample(lambda x_t, t: self.model.denoise(x_t, cond, t),
                                         (batch.shape[0], k, hh, hw), device=self.device, dtype=torch.float32)
                out.append(signal_to_heatmap(x0.float(), self.sampler.signal_scale).cpu())
        return torch.cat(out).numpy().astype(np.float32, copy=False)

    def __call__(self, crops: np.ndarray, to_key: np.ndarray | None = None) -> np.ndarray:
        """Heatmaps for windows of crops.

        Args:
            crops: [N, T, H, W, 3] uint8 BGR crops (T = window, or 1 for single images).
            to_key: see :meth:`heatmaps_from_features`.

        Returns:
            [N, K, H/4, W/4] float32 heatmaps (see :meth:`heatmaps_from_features`).
        """
        crops = np.asarray(crops)
        if crops.ndim != 5:
            raise ValueError(f"crops must be [N, T, H, W, 3], got {crops.shape}")
        n, t = crops.shape[:2]
        if n == 0:
            return np.zeros((0, self.num_keypoints, *self.heatmap_size), np.float32)
        feats = self.features(crops.reshape(n * t, *crops.shape[2:]))
        return self.heatmaps_from_features(feats.view(n, t, *feats.shape[1:]), to_key)
