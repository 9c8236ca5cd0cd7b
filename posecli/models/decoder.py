"""Pose decoder f(x_t, F, t) with LMSFI (DiffPose, Feng et al., ICCV 2023).

1. Timestep conditioning: a sinusoidal embedding of t goes through an MLP to a per-keypoint
   scale and shift that modulate the noisy heatmap x_t.
2. LMSFI (lightweight multi-scale feature interaction) at three scales, 1/16, 1/8, 1/4 of the
   input: the fused STRL feature is upsampled 1×/2×/4× by transposed convolutions and the
   modulated heatmap is brought to each scale by strided convolutions. At each scale the refined
   heatmap is squeezed (max over channels) into a sigmoid spatial mask; mask ⊙ feature is
   concatenated with the feature (and the heatmap embedding) and mixed — by a small transformer
   at 1/16, by convolutions at 1/8 and 1/4.
3. All scales are brought to 1/4, summed, and a 3×3 convolution head outputs K heatmaps.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of integer timesteps (Vaswani et al.; as in DDPM).

    Args:
        t: [B] timesteps.
        dim: even embedding size.

    Returns:
        [B, dim] float32: ``[cos(t·f_i), sin(t·f_i)]`` with f_i = max_period^(−i/(dim/2)).
    """
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=1)


def _conv_bn_relu(cin: int, cout: int, kernel: int = 3, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


def _deconv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    # kernel 4, stride 2, padding 1: exact 2× upsampling.
    return nn.Sequential(nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class MaskedInteraction(nn.Module):
    """One LMSFI scale: heatmap-derived spatial mask on the feature, then mixing.

    ``mask = σ(max_c(heat))``; ``y = mix([feat, mask ⊙ feat, heat])`` with a 1×1 projection back to
    ``channels`` followed by either a transformer layer (``transformer=True``, for the coarsest
    scale where tokens are few) or a 3×3 depthwise-separable convolution block.
    """

    def __init__(self, channels: int, transformer: bool, heads: int = 4) -> None:
        super().__init__()
        self.project = _conv_bn_relu(3 * channels, channels, kernel=1)
        self.transformer = transformer
        if transformer:
            self.mix = nn.TransformerEncoderLayer(channels, heads, 2 * channels, dropout=0.0,
                                                  activation="gelu", batch_first=True, norm_first=True)
        else:
            self.mix = nn.Sequential(
                nn.Conv2d(channels, channels, 3, 1, 1, groups=channels, bias=False),
                nn.BatchNorm2d(channels), nn.ReLU(inplace=True),
                nn.Conv2d(channels, channels, 1, bias=False), nn.BatchNorm2d(channels),
            )

    def forward(self, feat: torch.Tensor, heat: torch.Tensor) -> torch.Tensor:
        mask = torch.sigmoid(heat.amax(dim=1, keepdim=True))
        y = self.project(torch.cat([feat, mask * feat, heat], dim=1))
        if self.transformer:
            b, c, h, w = y.shape
            return self.mix(y.flatten(2).transpose(1, 2)).transpose(1, 2).reshape(b, c, h, w)
        return F.relu(y + self.mix(y))


class PoseDecoder(nn.Module):
    """Predict x̂0 heatmaps from the noisy heatmap, the fused feature and the timestep.

    Args:
        num_keypoints: K.
        cond_channels: channels of the STRL output (at 1/16 of the input).
        channels: (c16, c8, c4) widths at 1/16, 1/8, 1/4.
        time_dim: sinusoidal embedding size.
        heads: attention heads of the 1/16 transformer layer.
        extra_heat_channels: further 1/4-scale maps entering the heatmap branch next to the
            modulated x_t (v2: the aligned priors and the key frame's MoveNet heatmaps).
        skip_channels: channels of feature maps added at 1/8 and 1/4 after 1×1 projections
            (v2: the key frame's FPN maps); (0, 0) = none.
    """

    def __init__(self, num_keypoints: int = 17, cond_channels: int = 128,
                 channels: tuple[int, int, int] = (128, 64, 32), time_dim: int = 128, heads: int = 4,
                 extra_heat_channels: int = 0, skip_channels: tuple[int, int] = (0, 0)) -> None:
        super().__init__()
        c16, c8, c4 = channels
        k = num_keypoints
        self.time_dim = time_dim
        self.time_mlp = nn.Sequential(nn.Linear(time_dim, time_dim), nn.SiLU(), nn.Linear(time_dim, 2 * k))
        # Zero init: at the start the modulation is the identity (scale 1, shift 0).
        nn.init.zeros_(self.time_mlp[-1].weight)
        nn.init.zeros_(self.time_mlp[-1].bias)
        # Feature pyramid: 1× (1×1 conv), 2× and 4× (transposed convs).
        self.feat16 = _conv_bn_relu(cond_channels, c16, kernel=1)
        self.feat8 = _deconv_bn_relu(c16, c8)
        self.feat4 = _deconv_bn_relu(c8, c4)
        # Heatmap pyramid: 1/4 (stride 1), 1/8 and 1/16 (stride-2 convs).
        self.heat4 = _conv_bn_relu(k + extra_heat_channels, c4)
        self.skip8 = _conv_bn_relu(skip_channels[0], c8, kernel=1) if skip_channels[0] else None
        self.skip4 = _conv_bn_relu(skip_channels[1], c4, kernel=1) if skip_channels[1] else None
        self.heat8 = _conv_bn_relu(c4, c8, stride=2)
        self.heat16 = _conv_bn_relu(c8, c16, stride=2)
        self.lmsfi16 = MaskedInteraction(c16, transformer=True, heads=heads)
        self.lmsfi8 = MaskedInteraction(c8, transformer=False)
        self.lmsfi4 = MaskedInteraction(c4, transformer=False)
        self.to4_from16 = nn.Conv2d(c16, c4, 1)
        self.to4_from8 = nn.Conv2d(c8, c4, 1)
        self.head = nn.Sequential(_conv_bn_relu(c4, c4), nn.Conv2d(c4, k, 3, 1, 1))

    def forward(self, x_t: torch.Tensor, cond: torch.Tensor, t: torch.Tensor,
                extra_heat: torch.Tensor | None = None,
                skips: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """Args:
            x_t: [B, K, H/4, W/4] noisy heatmaps (signal range).
            cond: [B, C, H/16, W/16] fused STRL feature.
            t: [B] long timesteps.
            extra_heat: [B, extra_heat_channels, H/4, W/4] or None.
            skips: ([B, s8, H/8, W/8], [B, s4, H/4, W/4]) or None.

        Returns:
            [B, K, H/4, W/4] predicted clean heatmaps x̂0 (signal range).
        """
        scale, shift = self.time_mlp(timestep_embedding(t, self.time_dim).to(x_t.dtype)).chunk(2, dim=1)
        x = x_t * (1.0 + scale[:, :, None, None]) + shift[:, :, None, None]
        f16 = self.feat16(cond)
        f8 = self.feat8(f16)
        if self.skip8 is not None:
            f8 = f8 + self.skip8(skips[0].to(f8.dtype))
        f4 = self.feat4(f8)
        if self.skip4 is not None:
            f4 = f4 + self.skip4(skips[1].to(f4.dtype))
        if extra_heat is not None:
            x = torch.cat([x, extra_heat.to(x.dtype)], dim=1)
        h4 = self.heat4(x)
        h8 = self.heat8(h4)
        h16 = self.heat16(h8)
        y16 = self.lmsfi16(f16, h16)
        y8 = self.lmsfi8(f8, h8)
        y4 = self.lmsfi4(f4, h4)
        size = y4.shape[-2:]
        y = (y4 + F.interpolate(self.to4_from8(y8), size=size, mode="bilinear", align_corners=False)
             + F.interpolate(self.to4_from16(y16), size=size, mode="bilinear", align_corners=False))
        return self.head(y)
