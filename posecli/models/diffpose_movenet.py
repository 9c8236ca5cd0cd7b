"""DiffPose on MoveNet Thunder's pose-pretrained layers (``diffpose.coco17-v2``).

Our implementation of Feng et al., "DiffPose: SpatioTemporal Diffusion Model for Video-Based Human
Pose Estimation", ICCV 2023, built on the MobileNetV2-1.75 + FPN trunk of Google's MoveNet Thunder
(Apache-2.0; ported in ``movenet.py``):

1. **Per-frame encoder.** Each crop of the window goes through the trunk (backbone + FPN) and
   MoveNet's four heads. Kept per frame: the stride-16 FPN map with the keypoint heatmaps pooled
   to it (STRL's input), the stride-8 and stride-4 FPN maps and the keypoint heatmaps (the key
   frame's decoder skips), and MoveNet's own single-person decode (keypoints + scores). With
   ``mirror_prior`` (the shipped v2) MoveNet also decodes the crop's mirror image, and the two
   decodes are merged (:func:`merge_mirrored`): same trunk, two views, the classic flip test of
   pose estimation. Measured on the untrained model (= MoveNet Thunder), ground-truth boxes:
   OKS AP 0.618 → 0.671 on small-eval, 0.468 → 0.486 on coco-mini val, LSP-Extended val PCK@0.2
   0.834 → 0.849; it costs a second trunk pass per crop.
2. **Prior.** The keypoint heatmaps of these layers fire on every person in a crop; MoveNet's
   centre and regression heads are what pick the person in the middle (heatmap-only decoding loses
   0.03–0.11 AP on crowded sets). So each frame's MoveNet decode is rendered as Gaussian heatmaps
   (amplitude = its score) *in the key frame's crop coordinates* — frames are cropped with their
   own boxes, and the frame → key-crop affines are given to the model — and the decoder sees the
   aligned priors. The key frame's prior is also the base of the output: x̂0 = prior + residual
   with the residual head zero-initialised, so before training the model reproduces MoveNet's
   keypoints exactly, and training learns corrections (person choice, label conventions). The
   prior's person centre is only looked for near the crop's middle (``CENTRE_BAND``): a second
   person in the box's crop, more visible than the boxed one, is not taken instead.
   With ``temporal_prior`` (the shipped v2) that base is the window's, not the key frame's alone
   (:func:`temporal_prior`): per joint the binomial-weighted mean of the aligned decodes that lie
   within ``TEMPORAL_AGREE_PX`` of the key frame's, frames t ± k kept or dropped in pairs — a
   centred filter that keeps steady motion and averages out the frame-to-frame wobble of
   single-frame decodes, while a neighbour on another limb or person gets no weight. Where the key
   frame's own decode of a joint is a one-frame jump (no other frame of the window agrees with it,
   the frames either side of it agree with each other: :func:`one_frame_jumps`), the mean is taken
   around those two frames instead and the key frame's decode is left out. The shipped
   window is 5 frames (``window``) while STRL and the decoder see the middle 3
   (``learned_window``, their trained size). Measured on the training
   clips (own-box crops as ``posecli run`` makes them, ``--smooth none``): jitter −53 % on
   pose2sim_SinglePerson_cam01 against the same checkpoint on single frames, where the old key
   prior gave −8 %; the prior alone (residual left out) gives −75 %, so the trained residual, a
   per-frame correction, puts some wobble back. A still image is a window of one frame repeated:
   the same prior as without the option.
3. **STRL** fuses the stride-16 tokens of the learned window's frames (spatial + temporal position
   embeddings, pre-LN transformer, MLP fusion into the key frame; ``strl.py``).
4. **Pose decoder with LMSFI** at 1/16, 1/8, 1/4 (``decoder.py``): the noisy heatmap x_t,
   rescaled by the timestep embedding, together with the learned window's aligned priors and the
   key frame's MoveNet heatmaps, is refined against the fused feature; the key frame's stride-8
   and stride-4 FPN maps join the 1/8 and 1/4 scales. DDIM sampling (``diffusion.py``).

Deviations from the paper (all deliberate, for CPU training/inference and the weights we have):

* Trunk: a pose-pretrained CNN (MoveNet's) instead of a ViT (no ViT pose weights can be had here);
  it and MoveNet's heads stay frozen in training, only STRL and the decoder learn. MoveNet's own
  decode is a prior and the output's base (above).
* Crops: square 256×256 of 1.15 × the longer box side, MoveNet's own framing (on LSP-Extended val its
  heatmaps score PCK@0.2 0.830 on these crops against 0.797 on 3:4 crops of 1.25 × the box).
* Sizes far below the paper's: STRL token dim 128, 2 encoder layers, 4 heads; decoder widths
  128/64/32; one transformer layer at 1/16.
* STRL's patch embedding is a 2×2-cell patchify of the stride-16 features, not of pixels; the fused
  tokens are un-patched by a transposed convolution and added to a 1×1 projection of the key
  frame's own features (a skip the paper does not have); the temporal fusion MLP adds a residual on
  the key frame's token.
* Timestep conditioning: sinusoidal embedding → MLP → per-keypoint scale *and* shift of x_t
  (zero-initialised, so it starts as the identity).
* LMSFI: besides feature and mask ⊙ feature, the heatmap embedding itself is concatenated at each
  scale (the mask alone drops which joint is where); convolutions at 1/8 and 1/4 are
  depthwise-separable residual blocks; the scales are summed after 1×1 projections and bilinear
  upsampling to 1/4.
* Heatmap signal range (2h − 1)·signal_scale with signal_scale 1.0 (DiffusionDet-style), cosine
  schedule with T = 1000; DDIM with 1-4 steps, intermediate x̂0 clipped to the signal range; the
  initial noise is one draw from a re-seeded generator, so results do not depend on batching.
* Precision: MoveNet's layers always run in float32 (under bfloat16 autocast its keypoints moved
  3.6 px on average, a quarter of them by over 2 px, on 40 LSP crops); autocast applies to STRL and
  the decoder only.
* Loss: visibility-masked L2 on x̂0 (no auxiliary losses), the heatmap peaks weighted and half the
  timesteps from the top of the schedule; joints without a label learn the prior itself at a low
  weight, which keeps MoveNet's scores where no human label says otherwise (``train/loss.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from posecli.types import COCO_FLIP_INDEX

from .decoder import PoseDecoder
from .movenet import MoveNet, MoveNetOutputs, decode_single_pose
from .strl import STRL

HEATMAP_STRIDE = 4
STRL_STRIDE = 16
# Two decodes of a joint (crop and mirror image) closer than this, in heatmap pixels (12 input
# pixels, 5 % of a 256 crop), are one finding and averaged; farther apart, one of them is on
# another limb or person and the more confident one is kept.
MIRROR_AGREE_PX = 3.0
# A neighbour frame's decode of a joint (aligned to the key crop) within this distance of the key
# frame's, in heatmap pixels (24 input pixels, 9 % of a 256 crop), is the same joint a frame or two
# away and joins the key frame's temporal prior; farther, it is another limb or person (or fast
# motion) and is left out. Measured on the training clips (pose2sim *_cam01; window 3, key-box
# crops): 3 px cut jitter by 28 %/18 %, 6 px by 33 %/21 %, no gate by 32 %/23 %; the gate is kept
# for crowds and fast limbs.
TEMPORAL_AGREE_PX = 6.0
# MoveNet's centre head picks the person whose centre scores highest (weighted by closeness to the
# crop's middle); where a crop of one person's box holds a second, more visible person, that one
# can win and the prior follows them. The prior's centre is kept within this fraction of the crop
# side of the middle (in x and in y; the crop is centred on the box, the box spans 1 / 1.15 of the
# crop's side along its longer side). Chosen on coco-mini train (OKS AP ground-truth / detector
# boxes): MoveNet's own 0.405 / 0.397; 0.3: 0.406 / 0.397; 0.2: 0.405 / 0.407; 0.15: 0.408 /
# 0.405 (the training clips' persons never leave 0.2: identical outputs there).
CENTRE_BAND = 0.2


@dataclass(frozen=True)
class FrameLayout:
    """Where each per-frame tensor sits in the flat feature vector of one crop.

    The pipeline caches one vector per crop and stacks them into windows, so the encoder's
    several maps travel as one ``[D]`` row; this layout packs and unpacks them.
    """

    shapes: tuple[tuple[str, tuple[int, ...]], ...]

    @property
    def size(self) -> int:
        return sum(int(torch.tensor(s).prod()) for _, s in self.shapes)

    def pack(self, parts: dict[str, torch.Tensor]) -> torch.Tensor:
        """{name: [M, *shape]} → [M, D]."""
        return torch.cat([parts[name].flatten(1).float() for name, _ in self.shapes], dim=1)

    def unpack(self, packed: torch.Tensor) -> dict[str, torch.Tensor]:
        """[..., D] → {name: [..., *shape]}."""
        out, start = {}, 0
        lead = packed.shape[:-1]
        for name, shape in self.shapes:
            n = int(torch.tensor(shape).prod())
            out[name] = packed[..., start:start + n].reshape(*lead, *shape)
            start += n
        return out


def render_gaussians(xy: torch.Tensor, amplitude: torch.Tensor, hw: tuple[int, int], sigma: float) -> torch.Tensor:
    """Gaussian heatmaps at sub-pixel positions.

    Args:
        xy: [..., K, 2] positions in heatmap pixels (x, y; pixel centres at integers).
        amplitude: [..., K] peak heights.
        hw: (h, w) of the maps.
        sigma: standard deviation in heatmap pixels.

    Returns:
        [..., K, h, w].
    """
    h, w = hw
    xs = torch.arange(w, device=xy.device, dtype=xy.dtype)
    ys = torch.arange(h, device=xy.device, dtype=xy.dtype)
    gx = torch.exp(-(xs - xy[..., 0:1]) ** 2 / (2 * sigma ** 2))  # [..., K, w]
    gy = torch.exp(-(ys - xy[..., 1:2]) ** 2 / (2 * sigma ** 2))  # [..., K, h]
    return amplitude[..., None, None] * gy[..., :, None] * gx[..., None, :]


def movenet_to_heatmap_xy(yx_cells: torch.Tensor) -> torch.Tensor:
    """MoveNet's (y, x) in stride-4 cells → our heatmap pixels (x, y).

    MoveNet's normalised output × input size is measured from the crop's outer edge, so cell
    coordinate c is input pixel 4c − 0.5 (pixel centres at integers), which is heatmap pixel
    (4c − 0.5 − 1.5) / 4 = c − 0.5 (``crop.input_to_heatmap`` with stride 4).
    """
    return yx_cells.flip(-1) - 0.5


def merge_mirrored(xy: torch.Tensor, score: torch.Tensor, xy_mirror: torch.Tensor, score_mirror: torch.Tensor,
                   width: int) -> torch.Tensor:
    """One decode from MoveNet's decodes of a crop and of its mirror image.

    Args:
        xy: [M, K, 2] keypoints of the crop, heatmap pixels (x, y; pixel centres at integers).
        score: [M, K].
        xy_mirror, score_mirror: the same for the horizontally mirrored crop, in its own pixels
            and joint order (its "left wrist" is the crop's right wrist).
        width: heatmap width w (the mirror maps x to w − 1 − x).

    Returns:
        [M, K, 3]: x, y and score. Per joint, the mean of both where they agree within
        ``MIRROR_AGREE_PX``; otherwise the more confident of the two. Score: the mean of both.
    """
    index = list(COCO_FLIP_INDEX)
    back = xy_mirror[:, index].clone()
    back[..., 0] = (width - 1) - back[..., 0]
    back_score = score_mirror[:, index]
    agree = (xy - back).norm(dim=-1, keepdim=True) <= MIRROR_AGREE_PX
    confident = torch.where((score >= back_score)[..., None], xy, back)
    merged = torch.where(agree, (xy + back) / 2, confident)
    return torch.cat([merged, ((score + back_score) / 2)[..., None]], dim=-1)


def decode_views(run: Callable[[torch.Tensor], MoveNetOutputs], rgb: torch.Tensor,
                 mirror: bool, centre_band: float | None = None) -> tuple[MoveNetOutputs, torch.Tensor, torch.Tensor]:
    """MoveNet's single-person decode of crops, optionally merged with that of their mirror images.

    Args:
        run: MoveNet (or a runner like it): [B, 3, H, W] → :class:`MoveNetOutputs`.
        rgb: [M, 3, H, W] crops.
        mirror: also run the mirror images and merge the decodes (:func:`merge_mirrored`).
        centre_band: see ``movenet.center_cells`` (None: MoveNet's own decode).

    Returns:
        MoveNet's outputs (2M rows with ``mirror``: the crops, then their mirror images), the
        keypoints [M, K, 2] in heatmap pixels and the scores [M, K] of the M crops.
    """
    m = rgb.shape[0]
    out = run(torch.cat([rgb, rgb.flip(-1)]) if mirror else rgb)
    yx, scores = decode_single_pose(out, centre_band)
    xy = movenet_to_heatmap_xy(yx)
    if mirror:
        merged = merge_mirrored(xy[:m], scores[:m], xy[m:], scores[m:], out.heatmap.shape[-1])
        xy, scores = merged[..., :2], merged[..., 2]
    return out, xy, scores


def binomial_weights(window: int) -> torch.Tensor:
    """[window] weights of a binomial (discrete Gaussian) filter, summing to 1: [¼, ½, ¼] for 3."""
    row = torch.tensor([1.0])
    for _ in range(window - 1):
        row = torch.cat([row, torch.zeros(1)]) + torch.cat([torch.zeros(1), row])
    return row / row.sum()


def one_frame_jumps(xy: torch.Tensor, agree_px: float = TEMPORAL_AGREE_PX) -> torch.Tensor:
    """Joints whose key-frame decode is a one-frame jump: [N, K] bool.

    A jump is a key frame's decode that no other frame of the window agrees with (all farther than
    ``agree_px``) while the frames just before and after it agree with each other: the decode left
    the joint for one frame, to another limb or person, and came back.

    Args:
        xy: [N, T, K, 2] decodes in the key crop's heatmap pixels (key frame at T // 2).
        agree_px: agreement radius in heatmap pixels.
    """
    t = xy.shape[1]
    key = t // 2
    if t < 3:
        return torch.zeros(xy.shape[0], xy.shape[2], dtype=torch.bool, device=xy.device)
    from_key = (xy - xy[:, key:key + 1]).norm(dim=-1)  # [N, T, K]
    others = torch.cat([from_key[:, :key], from_key[:, key + 1:]], dim=1)
    neighbours_agree = (xy[:, key - 1] - xy[:, key + 1]).norm(dim=-1) <= agree_px
    return (others > agree_px).all(dim=1) & neighbours_agree


def temporal_prior(xy: torch.Tensor, score: torch.Tensor, agree_px: float = TEMPORAL_AGREE_PX
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """The key frame's prior from the T frames' aligned decodes.

    Per joint, the binomial-weighted mean (:func:`binomial_weights`) of the decodes within
    ``agree_px`` of a centre: the key frame's decode, or, where that is a one-frame jump
    (:func:`one_frame_jumps`), the midpoint of the frames just before and after it, the key frame
    then left out. A decode farther from the centre is on another limb or person and gets no
    weight. Neighbours count in pairs, ``t - k`` with ``t + k``: one of them past the gate drops
    both, so the filter stays centred whichever frames it keeps. Constant-velocity motion is kept
    exactly and the frame-to-frame wobble of single-frame decodes is averaged out; a fast limb (a
    low frame rate) whose frames leave the gate on one side only is not pulled towards the other
    side, which made the output jump as frames crossed the gate (jitter against the key decode
    alone, on Thunder's labels of the three training clips taken at every 6th frame, 10 frames/s:
    −25 … −30 % one-sided, −32 … −40 % in pairs; at their 60 frames/s −74 … −80 % and −73 … −78 %).
    Without the jump rule a key frame's jump went straight into the output (the model on the
    training clip pose2sim_MultiPerson_cam01: jitter −53 % → −58 % against single frames).

    Args:
        xy: [N, T, K, 2] decodes in the key crop's heatmap pixels (key frame at T // 2).
        score: [N, T, K].
        agree_px: gate radius in heatmap pixels.

    Returns:
        xy [N, K, 2] and score [N, K] (the same weighted mean of the scores).
    """
    key = xy.shape[1] // 2
    jump = one_frame_jumps(xy, agree_px)  # [N, K]; never for T < 3
    centre = xy[:, key]
    if xy.shape[1] >= 3:
        centre = torch.where(jump[..., None], (xy[:, key - 1] + xy[:, key + 1]) / 2, centre)
    weights = binomial_weights(xy.shape[1]).to(xy)[None, :, None]
    near = (xy - centre[:, None]).norm(dim=-1) <= agree_px  # [N, T, K]
    near[:, key] = ~jump  # a jump's own decode is out; any other key decode is its own centre
    weights = weights * (near & near.flip(1))  # frame t + k with t - k (the key at the middle)
    weights = weights / weights.sum(dim=1, keepdim=True)
    return (xy * weights[..., None]).sum(dim=1), (score * weights).sum(dim=1)


class DiffPoseMoveNet(nn.Module):
    """MoveNet trunk + prior → STRL → LMSFI pose decoder (see the module docstring).

    Args:
        trunk: :func:`movenet.movenet_spec` of the MoveNet whose layers are used.
        num_keypoints: K (17).
        window: frames per window T (key frame at T // 2); the temporal prior spans them all.
        learned_window: the centred frames STRL and the decoder see (odd, ≤ window; default:
            window): the trained parts keep their size while the prior's window widens.
        input_size: (H, W) of the crops, multiples of 32.
        prior_sigma: Gaussian sigma of the rendered priors, in heatmap pixels.
        strl_dim, strl_depth, strl_heads, strl_patch: STRL sizes (patch in stride-16 cells).
        decoder_channels: decoder widths at 1/16, 1/8, 1/4.
        decoder_heads: heads of the decoder's 1/16 transformer layer.
        time_dim: timestep embedding size.
        timesteps: diffusion steps of the training schedule (recorded in checkpoints).
        mirror_prior: the prior merges MoveNet's decodes of each crop and of its mirror image.
        temporal_prior: the key frame's prior (the output's base) is :func:`temporal_prior` of
            the window's aligned decodes instead of the key frame's decode alone.
    """

    def __init__(self, trunk: dict, num_keypoints: int = 17, window: int = 3,
                 input_size: tuple[int, int] = (256, 256), prior_sigma: float = 2.0,
                 strl_dim: int = 128, strl_depth: int = 2, strl_heads: int = 4, strl_patch: int = 2,
                 decoder_channels: tuple[int, int, int] = (128, 64, 32), decoder_heads: int = 4,
                 time_dim: int = 128, timesteps: int = 1000, mirror_prior: bool = False,
                 temporal_prior: bool = False, learned_window: int | None = None) -> None:
        super().__init__()
        h, w = input_size
        if h % 32 or w % 32:
            raise ValueError(f"input_size must be multiples of 32, got {input_size}")
        if window < 1:
            raise ValueError("window must be at least 1")
        learned_window = window if learned_window is None else learned_window
        if not 1 <= learned_window <= window or (window - learned_window) % 2:
            raise ValueError(f"learned_window must be ≤ window ({window}) and centred in it, got {learned_window}")
        self.init_kwargs = dict(
            trunk=trunk, num_keypoints=num_keypoints, window=window, input_size=[h, w],
            prior_sigma=prior_sigma, strl_dim=strl_dim, strl_depth=strl_depth, strl_heads=strl_heads,
            strl_patch=strl_patch, decoder_channels=list(decoder_channels), decoder_heads=decoder_heads,
            time_dim=time_dim, timesteps=timesteps, mirror_prior=mirror_prior, temporal_prior=temporal_prior,
            learned_window=learned_window)
        self.mirror_prior = mirror_prior
        self.temporal_prior = temporal_prior
        self.num_keypoints = k = num_keypoints
        self.window = window
        self.learned_window = learned_window
        self.input_size = (h, w)
        self.heatmap_size = hm = (h // HEATMAP_STRIDE, w // HEATMAP_STRIDE)
        self.feature_size = fs = (h // STRL_STRIDE, w // STRL_STRIDE)
        self.timesteps = timesteps
        self.prior_sigma = prior_sigma
        self.trunk = MoveNet(**trunk)
        if self.trunk.num_keypoints != k:
            raise ValueError(f"the trunk predicts {self.trunk.num_keypoints} keypoints, not {k}")
        self.trunk.requires_grad_(False)
        c4, c8, c16, _ = self.trunk.feature_channels
        self.layout = FrameLayout((
            ("tokens", (c16 + k, *fs)),
            ("fpn8", (c8, hm[0] // 2, hm[1] // 2)),
            ("fpn4", (c4, *hm)),
            ("heat", (k, *hm)),
            ("prior_xy", (k, 2)),
            ("prior_score", (k,)),
        ))
        self.strl = STRL(c16 + k, dim=strl_dim, depth=strl_depth, heads=strl_heads, window=learned_window,
                         feature_hw=fs, patch=strl_patch)
        self.decoder = PoseDecoder(k, cond_channels=strl_dim, channels=tuple(decoder_channels),
                                   time_dim=time_dim, heads=decoder_heads,
                                   extra_heat_channels=(learned_window + 1) * k, skip_channels=(c8, c4))
        # Zero residual at the start: x̂0 = the key frame's prior (MoveNet's own keypoints).
        nn.init.zeros_(self.decoder.head[-1].weight)
        nn.init.zeros_(self.decoder.head[-1].bias)

    def train(self, mode: bool = True) -> "DiffPoseMoveNet":
        super().train(mode)
        self.trunk.eval()  # frozen: no dropout/BN state to update, and folded BN anyway
        return self

    def encode_frames(self, rgb: torch.Tensor, trunk=None) -> torch.Tensor:  # noqa: ANN001 - MoveNet-like
        """Per-crop features, packed.

        Args:
            rgb: [M, 3, H, W] float RGB in 0..255.
            trunk: runs MoveNet's layers instead of ``self.trunk`` (``openvino_trunk.OpenVinoTrunk`` on the CPU).

        Returns:
            [M, D] (``self.layout``): STRL tokens input, FPN /8 and /4 maps, MoveNet heatmaps
            (sigmoid) and MoveNet's decoded keypoints (heatmap pixels, x y) and scores.
        """
        # MoveNet's layers always in float32, also under autocast: rounding them to bfloat16 moves the
        # heatmap peaks (and MoveNet's argmax can jump to another cell).
        with torch.no_grad(), torch.autocast(rgb.device.type, enabled=False):
            m = rgb.shape[0]
            # NHWC: oneDNN's depthwise convolutions are ~1.5× faster on the CPU in this layout.
            out, xy, scores = decode_views(
                lambda views: (trunk or self.trunk)(views.float().contiguous(memory_format=torch.channels_last)),
                rgb, self.mirror_prior, CENTRE_BAND)
            heat = torch.sigmoid(out.heatmap[:m].float())
            fpn4, fpn8, fpn16 = (f[:m] for f in out.features[:3])
            tokens = torch.cat([fpn16.float(), F.adaptive_max_pool2d(heat, fpn16.shape[-2:])], dim=1)
            return self.layout.pack({"tokens": tokens, "fpn8": fpn8, "fpn4": fpn4, "heat": heat,
                                     "prior_xy": xy, "prior_score": scores})

    @staticmethod
    def aligned_xy(prior_xy: torch.Tensor, to_key: torch.Tensor | None) -> torch.Tensor:
        """Each frame's MoveNet keypoints in the key frame's heatmap coordinates.

        Args:
            prior_xy: [N, T, K, 2] heatmap pixels of each frame's own crop.
            to_key: [N, T, 2, 3] affine from each frame's crop pixels to the key crop's pixels
                (identity for the key frame), or None when all frames share the key frame's crop.

        Returns:
            [N, T, K, 2].
        """
        if to_key is None:
            return prior_xy
        s = HEATMAP_STRIDE
        px = prior_xy * s + (s - 1) / 2.0  # heatmap → input pixels (crop.heatmap_to_input)
        px = torch.einsum("ntij,ntkj->ntki", to_key[..., :2].to(px.dtype), px) + to_key[..., None, :, 2].to(px.dtype)
        return (px - (s - 1) / 2.0) / s

    def fuse(self, features: torch.Tensor, to_key: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Condition for the decoder from a window of packed features.

        Args:
            features: [N, T, D] from :meth:`encode_frames` (T = window; key frame at T // 2).
            to_key: see :meth:`aligned_xy`.

        Returns:
            dict: ``cond`` [N, C, H/16, W/16], ``skips`` (FPN /8, /4 of the key frame),
            ``extra`` [N, (L+1)·K, h, w] (the aligned priors of the L = ``learned_window``
            centred frames and the key frame's MoveNet heatmaps),
            ``prior`` [N, K, h, w] the key frame's prior in [0, 1] (its own decode, or with
            ``temporal_prior`` the window's), ``prior_score`` [N, K] its scores.
        """
        parts = self.layout.unpack(features)
        key = features.shape[1] // 2
        xy = self.aligned_xy(parts["prior_xy"], to_key)
        learned = slice(key - self.learned_window // 2, key + self.learned_window // 2 + 1)
        priors = render_gaussians(xy[:, learned], parts["prior_score"][:, learned], self.heatmap_size,
                                  self.prior_sigma)
        n, t, k, h, w = priors.shape
        cond = self.strl(parts["tokens"][:, learned])
        extra = torch.cat([priors.reshape(n, t * k, h, w), parts["heat"][:, key]], dim=1)
        if self.temporal_prior:
            key_xy, key_score = temporal_prior(xy, parts["prior_score"])
            prior = render_gaussians(key_xy, key_score, self.heatmap_size, self.prior_sigma)
        else:
            prior, key_score = priors[:, t // 2], parts["prior_score"][:, key]
        return {"cond": cond, "skips": (parts["fpn8"][:, key], parts["fpn4"][:, key]),
                "extra": extra, "prior": prior, "prior_score": key_score}

    def denoise(self, x_t: torch.Tensor, cond: dict[str, torch.Tensor], t: torch.Tensor) -> torch.Tensor:
        """x_t [N, K, h, w] (signal range), cond from :meth:`fuse`, t [N] → x̂0 [N, K, h, w]."""
        residual = self.decoder(x_t, cond["cond"], t, extra_heat=cond["extra"], skips=cond["skips"])
        # In float32 also under autocast: a bfloat16 prior would move its peak by rounding alone.
        return (2.0 * cond["prior"].float() - 1.0) + residual.float()

    def forward(self, images: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor,
                to_key: torch.Tensor | None = None) -> torch.Tensor:
        """Full model for training.

        Args:
            images: [B, T, 3, H, W] RGB 0..255 frames.
            x_t: [B, K, h, w] noisy heatmaps; t: [B] timesteps.
            to_key: [B, T, 2, 3] frame-crop → key-crop affines (see :meth:`aligned_xy`).

        Returns:
            x̂0 [B, K, h, w].
        """
        b, t_win = images.shape[:2]
        feats = self.encode_frames(images.flatten(0, 1)).view(b, t_win, -1)
        return self.denoise(x_t, self.fuse(feats, to_key), t)


def with_temporal_prior(model: DiffPoseMoveNet, window: int) -> DiffPoseMoveNet:
    """The same trained network with the temporal prior on, over ``window`` frames.

    STRL and the decoder keep the frames they were trained on (``learned_window`` = the model's
    learned window) and their weights; the window around them widens to ``window`` for the prior.

    Raises:
        ValueError: ``window`` smaller than the learned window or not centred on it.
    """
    widened = DiffPoseMoveNet(**{**model.init_kwargs, "window": window, "learned_window": model.learned_window,
                                 "temporal_prior": True})
    widened.load_state_dict(model.state_dict(), strict=True)
    return widened.train(model.training)

