"""DiffPose: spatio-temporal diffusion over keypoint heatmaps, adapted to CPU scale.

Our implementation of Feng et al., "DiffPose: SpatioTemporal Diffusion Model for Video-Based
Human Pose Estimation", ICCV 2023: a per-frame backbone, STRL (spatio-temporal transformer fusing
the window into one key-frame feature), and a pose decoder with LMSFI that turns a noisy heatmap
x_t into the clean x̂0, sampled at inference with a few DDIM steps (see ``diffusion.py``).

Deviations from the paper (all deliberate, for CPU training/inference and the weights we have):
    * Backbone: ImageNet EfficientNet-Lite0 trunk up to stride 16 (112 channels, stages 1-5), not
      a COCO-pretrained ViT/HRNet; optionally its first stages frozen (BN kept in eval mode).
    * One stride-16 feature map per frame; the 1/8 and 1/4 decoder scales come from transposed
      convolutions of the fused feature.
    * Sizes far below the paper's: input 256×192, heatmaps 64×48, STRL token dim 128, 2 encoder
      layers, 4 heads; decoder widths 128/64/32; one transformer layer at 1/16.
    * STRL patch embedding is a 2×2-cell patchify of the stride-16 backbone features (8×6 tokens
      per frame), not of pixels; the fused tokens are un-patched by a transposed convolution and
      added to a 1×1 projection of the key frame's own features (a skip the paper does not have);
      the temporal fusion MLP adds a residual on the key frame's token.
    * Timestep conditioning: sinusoidal embedding → MLP → per-keypoint scale *and* shift of x_t
      (zero-initialised, so it starts as the identity).
    * LMSFI: besides feature and mask ⊙ feature, the heatmap embedding itself is concatenated at
      each scale (the mask alone drops which joint is where); convolutions at 1/8 and 1/4 are
      depthwise-separable residual blocks; the scales are summed after 1×1 projections and
      bilinear upsampling to 1/4.
    * Heatmap signal range (2h − 1)·signal_scale with signal_scale 1.0 (DiffusionDet-style), cosine
      schedule with T = 1000; DDIM with 1-4 steps, intermediate x̂0 clipped to the signal range;
      the initial noise is drawn per item from a re-seeded generator, so results do not depend
      on batching.
    * Backbone input: ImageNet mean/std normalized RGB, converted inside the backbone to the
      (pixel − 127)/128 range its TensorFlow weights expect; TF "SAME" padding kept.
    * Window: default T = 3 (a short window for CPU cost); T = 1 (single frame) is supported, and
      single images are fed as T replicated frames.
    * Loss: visibility-masked L2 on x̂0 (no auxiliary losses), by default with the heatmap peaks
      weighted and half the timesteps from the top of the schedule (``train/loss.py``).
"""

from __future__ import annotations

import torch
from torch import nn

from .backbone import FEATURE_CHANNELS, FEATURE_STRIDE, EfficientNetLite0
from .decoder import PoseDecoder
from .strl import STRL

HEATMAP_STRIDE = 4


class DiffPose(nn.Module):
    """Backbone → STRL → LMSFI pose decoder.

    Args:
        num_keypoints: K (17 for COCO).
        window: frames per window T (key frame at T // 2).
        input_size: (H, W) of the crops; both divisible by 16.
        frozen_stages: EfficientNet-Lite0 stages frozen (stem + first N; 0 = none, max 5).
        strl_dim: STRL token dimension (= fused feature channels).
        strl_depth: STRL transformer layers.
        strl_heads: STRL attention heads.
        strl_patch: STRL patch size in stride-16 cells (2: one token per 32×32 input pixels).
        decoder_channels: decoder widths at 1/16, 1/8, 1/4.
        decoder_heads: heads of the decoder's 1/16 transformer layer.
        time_dim: timestep embedding size.
        timesteps: number of diffusion steps of the schedule the model is trained with (recorded in
            checkpoints; the network itself accepts any integer t).
    """

    def __init__(self, num_keypoints: int = 17, window: int = 3, input_size: tuple[int, int] = (256, 192),
                 frozen_stages: int = 0, strl_dim: int = 128, strl_depth: int = 2, strl_heads: int = 4,
                 strl_patch: int = 2,
                 decoder_channels: tuple[int, int, int] = (128, 64, 32), decoder_heads: int = 4,
                 time_dim: int = 128, timesteps: int = 1000) -> None:
        super().__init__()
        h, w = input_size
        if h % FEATURE_STRIDE or w % FEATURE_STRIDE:
            raise ValueError(f"input_size must be divisible by {FEATURE_STRIDE}, got {input_size}")
        if window < 1:
            raise ValueError("window must be at least 1")
        # Everything needed to rebuild this exact model (JSON-able; see checkpoint.py).
        self.init_kwargs = dict(
            num_keypoints=num_keypoints, window=window, input_size=[h, w], frozen_stages=frozen_stages,
            strl_dim=strl_dim, strl_depth=strl_depth, strl_heads=strl_heads, strl_patch=strl_patch,
            decoder_channels=list(decoder_channels), decoder_heads=decoder_heads, time_dim=time_dim,
            timesteps=timesteps,
        )
        self.num_keypoints = num_keypoints
        self.window = window
        self.input_size = (h, w)
        self.feature_size = (h // FEATURE_STRIDE, w // FEATURE_STRIDE)
        self.heatmap_size = (h // HEATMAP_STRIDE, w // HEATMAP_STRIDE)
        self.timesteps = timesteps
        self.backbone = EfficientNetLite0(include_top=False, frozen_stages=frozen_stages)
        self.strl = STRL(FEATURE_CHANNELS, dim=strl_dim, depth=strl_depth, heads=strl_heads,
                         window=window, feature_hw=self.feature_size, patch=strl_patch)
        self.decoder = PoseDecoder(num_keypoints, cond_channels=strl_dim,
                                   channels=tuple(decoder_channels), time_dim=time_dim, heads=decoder_heads)

    def encode_frames(self, images: torch.Tensor) -> torch.Tensor:
        """Per-frame backbone features.

        Args:
            images: [B, 3, H, W] ImageNet-normalized RGB crops.

        Returns:
            [B, 112, H/16, W/16].
        """
        return self.backbone.forward_features(images)

    def fuse(self, features: torch.Tensor) -> torch.Tensor:
        """STRL over a window of features [B, T, 112, h, w] → cond [B, strl_dim, h, w] (key frame T // 2)."""
        return self.strl(features)

    def denoise(self, x_t: torch.Tensor, cond: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Pose decoder: x_t [B, K, H/4, W/4], cond, t [B] long → x̂0 [B, K, H/4, W/4]."""
        return self.decoder(x_t, cond, t)

    def forward(self, images: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Full model for training.

        Args:
            images: [B, T, 3, H, W] normalized frames.
            x_t: [B, K, H/4, W/4] noisy heatmaps.
            t: [B] long timesteps.

        Returns:
            x̂0 [B, K, H/4, W/4].
        """
        b, t_win = images.shape[:2]
        feats = self.encode_frames(images.flatten(0, 1))
        cond = self.fuse(feats.view(b, t_win, *feats.shape[1:]))
        return self.denoise(x_t, cond, t)
