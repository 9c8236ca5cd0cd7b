"""STRL: SpatioTemporal Representation Learner (DiffPose, Feng et al., ICCV 2023).

Each frame's backbone feature map is cut into p×p patches of stride-16 cells and each patch
becomes a token (a p×p, stride-p convolution; p = 2 by default, so a 16×12 map gives 8×6 tokens
per frame: attention over T·h·w/p² tokens is what keeps STRL affordable on a CPU). Learnable
spatial (per token position) and temporal (per frame) position embeddings are added, the T frames'
tokens are concatenated into one sequence so attention mixes space and time, a few pre-LN
transformer encoder layers (MHSA + FFN) run over it, and an MLP fuses the T tokens of each spatial
position into one token of the key frame (centre index T // 2). The fused tokens are un-patched
back to h×w (a p×p transposed convolution) and added to a 1×1 projection of the key frame's own
feature map, which keeps the key frame's full stride-16 detail.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class STRL(nn.Module):
    """Spatio-temporal transformer over T frames' feature maps.

    Args:
        in_channels: backbone feature channels C_in.
        dim: token dimension D (also the output channels).
        depth: number of transformer encoder layers.
        heads: attention heads.
        mlp_ratio: FFN hidden size as a multiple of D.
        window: number of frames T.
        feature_hw: (h, w) of the feature map.
        patch: patch size p in feature cells (maps whose size is not a multiple of p are
            zero-padded at the bottom/right for tokenisation and cropped back afterwards).
        dropout: dropout inside the encoder layers.
    """

    def __init__(self, in_channels: int, dim: int = 128, depth: int = 2, heads: int = 4,
                 mlp_ratio: float = 2.0, window: int = 3, feature_hw: tuple[int, int] = (16, 12),
                 patch: int = 2, dropout: float = 0.0) -> None:
        super().__init__()
        self.window = window
        self.feature_hw = tuple(feature_hw)
        self.patch = patch
        self.token_hw = (-(-feature_hw[0] // patch), -(-feature_hw[1] // patch))  # ceil
        self.patch_embed = nn.Conv2d(in_channels, dim, kernel_size=patch, stride=patch)
        self.pos_spatial = nn.Parameter(torch.zeros(1, 1, self.token_hw[0] * self.token_hw[1], dim))
        self.pos_temporal = nn.Parameter(torch.zeros(1, window, 1, dim))
        nn.init.trunc_normal_(self.pos_spatial, std=0.02)
        nn.init.trunc_normal_(self.pos_temporal, std=0.02)
        layer = nn.TransformerEncoderLayer(dim, heads, int(dim * mlp_ratio), dropout=dropout,
                                           activation="gelu", batch_first=True, norm_first=True)
        # Nested-tensor fast path is for padded batches; ours are dense (and it warns with norm_first).
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        # Temporal fusion: the T tokens of one spatial cell, concatenated, → one key-frame token.
        self.fuse = nn.Sequential(nn.Linear(window * dim, dim), nn.GELU(), nn.Linear(dim, dim))
        self.unpatch = nn.ConvTranspose2d(dim, dim, kernel_size=patch, stride=patch)
        self.key_skip = nn.Conv2d(in_channels, dim, kernel_size=1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Fuse a window of feature maps.

        Args:
            features: [B, T, C_in, h, w] per-frame backbone features.

        Returns:
            [B, D, h, w] fused feature for the key frame.
        """
        b, t, c, h, w = features.shape
        if t != self.window:
            raise ValueError(f"STRL was built for windows of {self.window} frames, got {t}")
        if (h, w) != self.feature_hw:
            raise ValueError(f"STRL was built for {self.feature_hw} feature maps, got {(h, w)}")
        th, tw = self.token_hw
        n = th * tw
        frames = features.reshape(b * t, c, h, w)
        pad_h, pad_w = th * self.patch - h, tw * self.patch - w
        if pad_h or pad_w:
            frames = F.pad(frames, [0, pad_w, 0, pad_h])
        tokens = self.patch_embed(frames)  # [B·T, D, ⌈h/p⌉, ⌈w/p⌉]
        d = tokens.shape[1]
        tokens = tokens.flatten(2).transpose(1, 2).reshape(b, t, n, d)
        tokens = tokens + self.pos_spatial + self.pos_temporal
        tokens = self.encoder(tokens.reshape(b, t * n, d))
        tokens = self.norm(tokens).reshape(b, t, n, d)
        key = tokens[:, t // 2]  # [B, n, D]
        # Residual on the key frame's token, so the fusion starts near "key frame only".
        fused = key + self.fuse(tokens.permute(0, 2, 1, 3).reshape(b, n, t * d))
        fused = self.unpatch(fused.transpose(1, 2).reshape(b, d, th, tw))[:, :, :h, :w]  # [B, D, h, w]
        return fused + self.key_skip(features[:, t // 2])
