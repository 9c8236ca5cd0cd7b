"""Training loss: the paper's masked L2 on x̂0, with two options for short CPU schedules.

* ``fg_weight``: per-pixel weights ``1 + fg_weight · h`` (h = target heatmap in [0, 1]). A σ = 2
  Gaussian covers under 1 % of a 64×48 map, so plain L2 is ~99 % background: the network first
  settles on an all-background prediction and escapes that plateau only after thousands of
  steps. Weighting the peak pixels (the idea of the weighted loss map of Adaptive Wing, Wang et
  al., ICCV 2019) shortens the plateau. 0 gives the paper's plain masked L2.
* ``high_t_fraction``: the fraction of samples whose timestep is drawn from the top 10 % of the
  schedule (the rest uniform). Inference runs 1–2 DDIM steps starting at t = T−1, where x_t is
  almost pure noise and x̂0 must come from the image; uniform t spends most updates on small t,
  where copying x_t already gives x0. 0 gives the paper's uniform t.
With both at 0 this is DiffPose's loss: L2 between x̂0 and x0, masked by joint visibility.

For DiffPose on MoveNet (``models/diffpose_movenet.py``, given ``to_key``), ``teacher_weight`` > 0
gives every joint without a label the model's own prior as target at that weight: the frozen
MoveNet's prediction on the same augmented crop (a teacher label made on the fly, so it follows
every augmentation). LSP-Extended's face joints and COCO's unlabelled joints are learnt from it,
and keypoint scores keep MoveNet's calibration where no human label says otherwise. With
``prior_scores`` the labelled joints' targets take the prior's score as their peak height too (instead
of 1): labels then say where a joint is and MoveNet's calibration says how sure to be, which keeps
keypoint scores (and so the ranking behind OKS AP) MoveNet's; trained with peaks of 1, v2's scores
ranked persons worse than MoveNet's (small-eval AP 0.607 with v2's scores on Thunder's keypoints
against 0.618 with Thunder's).
"""

from __future__ import annotations

import torch

from posecli.models.diffusion import NoiseSchedule, heatmap_to_signal


def _encode_distinct(model, images: torch.Tensor, trunk=None) -> torch.Tensor:  # noqa: ANN001 - MoveNet-like
    """Per-frame features [B, T, D] of images [B, T, 3, H, W], encoding each window's key frame and
    only those other frames that differ from it (a repeated still image costs one pass).
    ``trunk`` runs MoveNet's layers instead of the model's own (see ``encode_frames``)."""
    b, frames = images.shape[:2]
    key = frames // 2
    same = (images == images[:, key:key + 1]).flatten(2).all(dim=2)  # [B, T]
    feats = model.encode_frames(images[:, key], trunk)[:, None].repeat(1, frames, 1)
    if not bool(same.all()):
        feats[~same] = model.encode_frames(images[~same], trunk)
    return feats


def weighted_diffusion_loss(model, schedule: NoiseSchedule, images: torch.Tensor, heatmaps: torch.Tensor,
                            visibility: torch.Tensor, generator: torch.Generator | None = None,
                            signal_scale: float = 1.0, fg_weight: float = 0.0,
                            high_t_fraction: float = 0.0, to_key: torch.Tensor | None = None,
                            teacher_weight: float = 0.0, prior_scores: bool = False,
                            trunk=None) -> torch.Tensor:  # noqa: ANN001 - MoveNet-like
    """Masked, optionally foreground-weighted L2 between x̂0 and x0.

    Args:
        model: ``DiffPoseMoveNet`` (without ``to_key`` any ``model(images, x_t, t) -> x̂0``).
        schedule: the noise schedule.
        images: [B, T, 3, H, W] normalised frames.
        heatmaps: [B, K, h, w] targets in [0, 1].
        visibility: [B, K] joint loss weights (0 = unlabelled).
        generator: CPU generator for t and ε.
        signal_scale: diffusion signal range.
        fg_weight: extra weight of peak pixels (see module docstring).
        high_t_fraction: share of timesteps drawn from the top 10 % of the schedule.
        to_key: [B, T, 2, 3] frame-crop → key-crop affines (None: the plain forward pass, every
            frame taken as cropped like the key frame; no teacher or prior-score targets).
        teacher_weight: loss weight of unlabelled joints learnt from the prior (with ``to_key``).
        prior_scores: labelled joints' target peaks are the prior's scores (with ``to_key``).
        trunk: runs MoveNet's layers (``openvino_trunk.OpenVinoTrunk``; None: the model's own).

    Returns:
        Scalar loss.
    """
    b, steps = heatmaps.shape[0], schedule.timesteps
    t = torch.randint(0, steps, (b,), generator=generator)
    noise = torch.randn(heatmaps.shape, generator=generator, dtype=heatmaps.dtype)
    if high_t_fraction > 0:
        high = torch.rand(b, generator=generator) < high_t_fraction
        top = torch.randint(int(steps * 0.9), steps, (b,), generator=generator)
        t = torch.where(high, top, t)
    t, noise = t.to(heatmaps.device), noise.to(heatmaps.device)
    if to_key is None:
        x0 = heatmap_to_signal(heatmaps, signal_scale)
        pred = model(images, schedule.q_sample(x0, t, noise), t)
    else:
        cond = model.fuse(_encode_distinct(model, images, trunk), to_key)
        if prior_scores:
            heatmaps = heatmaps * cond["prior_score"].detach().to(heatmaps.dtype)[..., None, None]
        if teacher_weight > 0:
            unlabelled = visibility <= 0
            heatmaps = torch.where(unlabelled[..., None, None], cond["prior"].detach().to(heatmaps.dtype), heatmaps)
            visibility = torch.where(unlabelled, torch.full_like(visibility, teacher_weight), visibility)
        x0 = heatmap_to_signal(heatmaps, signal_scale)
        pred = model.denoise(schedule.q_sample(x0, t, noise), cond, t)
    sq = (pred.float() - x0.float()).pow(2)
    if fg_weight > 0:
        pixel_w = 1.0 + fg_weight * heatmaps.float()
        per_joint = (sq * pixel_w).sum(dim=(2, 3)) / pixel_w.sum(dim=(2, 3))
    else:
        per_joint = sq.mean(dim=(2, 3))
    weights = visibility.to(per_joint.dtype)
    return (per_joint * weights).sum() / weights.sum().clamp(min=1.0)
