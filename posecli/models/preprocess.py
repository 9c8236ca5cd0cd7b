"""Crops to network input: BGR uint8 → RGB float, normalised with the checkpoint's mean/std."""

from __future__ import annotations

import numpy as np
import torch

# Identity normalisation: RGB stays in 0..255 (MoveNet scales its input inside the graph).
RAW_MEAN_RGB = (0.0, 0.0, 0.0)
RAW_STD_RGB = (1.0 / 255.0,) * 3


def crops_to_tensor(crops: np.ndarray, device: torch.device | str = "cpu",
                    dtype: torch.dtype = torch.float32, mean: tuple[float, ...] = RAW_MEAN_RGB,
                    std: tuple[float, ...] = RAW_STD_RGB) -> torch.Tensor:
    """Normalize BGR uint8 crops for the model.

    Args:
        crops: [..., H, W, 3] uint8 BGR images (any leading dims, e.g. N or N×T).
        device, dtype: of the result.
        mean, std: RGB normalisation in units of 1/255 (the checkpoint's ``mean``/``std``; the
            default ``RAW_MEAN_RGB``/``RAW_STD_RGB`` gives plain 0..255 values, MoveNet's input).

    Returns:
        [..., 3, H, W] RGB, ``(x / 255 − mean) / std``.
    """
    crops = np.asarray(crops)
    if crops.dtype != np.uint8 or crops.ndim < 3 or crops.shape[-1] != 3:
        raise ValueError(f"crops must be [..., H, W, 3] uint8, got {crops.shape} {crops.dtype}")
    # The uint8 → float conversion happens on the device: 4× less to copy than float32.
    x = torch.from_numpy(np.ascontiguousarray(crops[..., ::-1])).to(device)
    x = x.movedim(-1, -3).to(torch.float32)
    mean = torch.tensor(mean, device=device).view(3, 1, 1) * 255.0
    std = torch.tensor(std, device=device).view(3, 1, 1) * 255.0
    return ((x - mean) / std).to(dtype)
