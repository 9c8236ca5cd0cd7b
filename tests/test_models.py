import copy
import io
import json

import numpy as np
import pytest
import torch

from conftest import TINY_TRUNK, tiny_pose_model
from posecli.errors import PoseCliError
from posecli.models import (DDIMSampler, DiffPoseMoveNet, HeatmapPredictor, NoiseSchedule, crops_to_tensor,
                            load_checkpoint, save_checkpoint)
from posecli.models.checkpoint import FORMAT
from posecli.models.predictor import fuse_batchnorm

torch.set_num_threads(1)


def _frames(batch, window, hw=(64, 64), seed=0):
    """[B, T, 3, H, W] random RGB in 0..255 (MoveNet's input range)."""
    return torch.rand(batch, window, 3, *hw, generator=torch.Generator().manual_seed(seed)) * 255


@pytest.mark.parametrize("window", [1, 3, 5])
def test_forward_shapes(window):
    model = tiny_pose_model(window=window, input_size=(64, 96)).eval()
    images = _frames(2, window, (64, 96))
    with torch.no_grad():
        feats = model.encode_frames(images.flatten(0, 1))
        assert feats.shape == (2 * window, model.layout.size)
        cond = model.fuse(feats.view(2, window, -1))
        assert cond["cond"].shape == (2, 32, 4, 6)
        assert cond["extra"].shape == (2, (window + 1) * 17, 16, 24)
        x0 = model.denoise(torch.randn(2, 17, 16, 24), cond, torch.tensor([0, 999]))
        assert x0.shape == (2, 17, 16, 24)
        assert model(images, torch.randn(2, 17, 16, 24), torch.tensor([5, 6])).shape == (2, 17, 16, 24)


def test_window_mismatch_is_an_error():
    model = tiny_pose_model(window=3).eval()
    feats = model.encode_frames(_frames(2, 1).flatten(0, 1))
    with pytest.raises(ValueError):
        model.fuse(feats.view(1, 2, -1))


def test_key_frame_is_the_centre_of_the_window():
    # Zero every STRL weight except the key-frame skip: the output then depends on frame T//2 only.
    model = tiny_pose_model(window=3).eval()
    with torch.no_grad():
        for name, p in model.strl.named_parameters():
            if not name.startswith("key_skip"):
                p.zero_()
        tokens = torch.randn(1, 3, 17 + 8, 4, 4)
        other = tokens.clone()
        other[:, [0, 2]] = torch.randn(1, 2, 17 + 8, 4, 4)
        assert torch.equal(model.strl(tokens), model.strl(other))
        other[:, 1] += 1
        assert not torch.equal(model.strl(tokens), model.strl(other))


def test_trunk_is_frozen_and_stays_in_eval_mode():
    model = tiny_pose_model(window=1).train()
    assert not any(p.requires_grad for p in model.trunk.parameters())
    assert not model.trunk.training and model.strl.training and model.decoder.training
    assert all(p.requires_grad for p in model.strl.parameters())
    assert all(p.requires_grad for p in model.decoder.parameters())


def test_fused_predictor_model_matches_unfused():
    model = tiny_pose_model().eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 2)
        images = _frames(2, 3)
        x_t, t = torch.randn(2, 17, 16, 16), torch.tensor([3, 900])
        ref = model(images, x_t, t)
    fused = fuse_batchnorm(copy.deepcopy(model))
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.decoder.modules())
    with torch.no_grad():
        assert torch.allclose(fused(images, x_t, t), ref, atol=1e-4)


def test_diffusion_loss_is_masked_by_visibility():
    from posecli.train.loss import weighted_diffusion_loss as diffusion_loss  # plain masked L2 by default

    class Zero(torch.nn.Module):  # predicts x̂0 = 0, so the loss is the visible joints' mean x0²
        def forward(self, images, x_t, t):
            return torch.zeros_like(x_t)

    schedule = NoiseSchedule(1000)
    images = _frames(2, 1)
    heatmaps = torch.rand(2, 17, 16, 16)
    vis = torch.zeros(2, 17)
    assert float(diffusion_loss(Zero(), schedule, images, heatmaps, vis)) == 0.0
    vis[0, 3] = vis[1, 7] = 1
    x0 = heatmaps * 2 - 1
    expected = (x0[0, 3].pow(2).mean() + x0[1, 7].pow(2).mean()) / 2
    assert torch.allclose(diffusion_loss(Zero(), schedule, images, heatmaps, vis), expected)
    changed = heatmaps.clone()
    changed[0, 5] = torch.rand(16, 16)  # an unlabelled joint's target does not count
    assert torch.allclose(diffusion_loss(Zero(), schedule, images, changed, vis), expected)
    # And the real model's trained parts get gradients from it, through both ways in; its trunk none.
    to_key = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]).expand(2, 1, 2, 3)
    for key in (None, to_key):
        model = tiny_pose_model(window=1).train()
        loss = diffusion_loss(model, schedule, images, heatmaps, vis, torch.Generator().manual_seed(0), to_key=key)
        loss.backward()
        assert model.decoder.head[-1].weight.grad.abs().sum() > 0
        assert model.strl.patch_embed.weight.grad.abs().sum() > 0
        assert all(p.grad is None for p in model.trunk.parameters())


def test_single_image_windows_are_replicated():
    model = tiny_pose_model(window=3).eval()
    predictor = HeatmapPredictor(model, DDIMSampler(NoiseSchedule(1000), steps=2), batch_size=2)
    rng = np.random.default_rng(0)
    crops = rng.integers(0, 256, (3, 1, 64, 64, 3), dtype=np.uint8)
    single = predictor(crops)
    replicated = predictor(np.repeat(crops, 3, axis=1))
    assert single.shape == (3, 17, 16, 16) and single.dtype == np.float32
    np.testing.assert_allclose(single, replicated, atol=1e-5)


def test_predictor_split_and_batch_independence():
    model = tiny_pose_model(window=3).eval()
    predictor = HeatmapPredictor(model, DDIMSampler(NoiseSchedule(1000), steps=2, seed=1), batch_size=2)
    rng = np.random.default_rng(1)
    crops = rng.integers(0, 256, (5, 3, 64, 64, 3), dtype=np.uint8)
    full = predictor(crops)
    feats = predictor.features(crops.reshape(15, 64, 64, 3))
    assert feats.shape == (15, model.layout.size)
    split = predictor.heatmaps_from_features(feats.view(5, 3, -1))
    np.testing.assert_allclose(full, split, atol=1e-5)
    # A window's heatmaps do not depend on which other windows share its batch.
    np.testing.assert_allclose(predictor(crops[3:4]), full[3:4], atol=1e-5)
    assert predictor(crops[:0]).shape == (0, 17, 16, 16)
    assert predictor.features(crops[:0, 0]).shape == (0, model.layout.size)


def test_predictor_output_is_heatmap_scale():
    model = tiny_pose_model(window=1).eval()
    sampler = DDIMSampler(NoiseSchedule(1000), steps=1, signal_scale=2.0)
    predictor = HeatmapPredictor(model, sampler)
    crops = np.random.default_rng(2).integers(0, 256, (1, 1, 64, 64, 3), dtype=np.uint8)
    with torch.no_grad():
        x = crops_to_tensor(crops[:, 0])
        cond = model.fuse(model.encode_frames(x)[:, None])
        x0 = sampler.sample(lambda x_t, t: model.denoise(x_t, cond, t), (1, 17, 16, 16))
    np.testing.assert_allclose(predictor(crops), ((x0 / 2.0 + 1) / 2).numpy(), atol=1e-5)


def test_preprocess_is_bgr_to_normalized_rgb():
    crop = np.zeros((1, 2, 2, 3), np.uint8)
    crop[..., 0] = 255  # blue in BGR
    crop[0, 1, 1] = (0, 51, 102)  # green 51, red 102
    # By default plain RGB in 0..255, the range MoveNet's layers take.
    x = crops_to_tensor(crop)
    assert x.shape == (1, 3, 2, 2)
    assert x[0, :, 0, 0].tolist() == [0.0, 0.0, 255.0]
    assert x[0, :, 1, 1].tolist() == [102.0, 51.0, 0.0]
    # Any other mean/std (a checkpoint's): (x / 255 − mean) / std per RGB channel.
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    x = crops_to_tensor(crop, mean=mean, std=std)
    expected = (torch.tensor([0.0, 0.0, 1.0]) - torch.tensor(mean)) / torch.tensor(std)
    assert torch.allclose(x[0, :, 0, 0], expected, atol=1e-6)


def _state_bytes(state):
    buf = io.BytesIO()
    torch.save({k: v for k, v in state.items()}, buf)
    return buf.getvalue()


def test_checkpoint_round_trip(tmp_path):
    model = tiny_pose_model(window=3, prior_sigma=1.5, mirror_prior=True)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.01)  # weights that are not exactly fp16 already
    path = tmp_path / "a.pt"
    config = save_checkpoint(path, model, {"sigma": 2.0, "steps": 2, "training": {"epochs": 1}})
    assert config["arch"] == "diffpose-movenet" and config["model"]["trunk"] == TINY_TRUNK
    assert config["model"]["prior_sigma"] == 1.5 and config["model"]["mirror_prior"] is True
    assert config["heatmap_size"] == [16, 16] and config["training"] == {"epochs": 1}
    assert config["mean"] == [0.0, 0.0, 0.0] and config["std"] == [1 / 255] * 3  # RGB 0..255
    loaded, cfg = load_checkpoint(path)
    assert cfg == config
    assert not loaded.training and all(p.dtype == torch.float32 for p in loaded.parameters())
    assert loaded.mirror_prior and loaded.prior_sigma == 1.5
    # save → load → save gives identical bytes.
    save_checkpoint(tmp_path / "b.pt", loaded, cfg)
    a = torch.load(path, weights_only=True)
    b = torch.load(tmp_path / "b.pt", weights_only=True)
    assert a["config"] == b["config"]
    assert _state_bytes(a["state_dict"]) == _state_bytes(b["state_dict"])
    assert path.read_bytes() == (tmp_path / "b.pt").read_bytes()
    # The loaded model equals the original with its weights rounded to fp16.
    rounded = tiny_pose_model(window=3, prior_sigma=1.5, mirror_prior=True)
    rounded.load_state_dict({k: v.half().float() if v.is_floating_point() else v
                             for k, v in model.state_dict().items()})
    rounded.eval()
    images, x_t, t = _frames(2, 3), torch.randn(2, 17, 16, 16), torch.tensor([1, 998])
    with torch.no_grad():
        assert torch.equal(loaded(images, x_t, t), rounded(images, x_t, t))
    assert not list(tmp_path.glob("*.tmp"))


def test_checkpoint_rejects_contradicting_config(tmp_path):
    with pytest.raises(ValueError):
        save_checkpoint(tmp_path / "a.pt", tiny_pose_model(window=3), {"window": 5})
    assert not (tmp_path / "a.pt").exists()


def test_checkpoint_of_the_retired_v1_architecture_says_so_in_one_line(tmp_path):
    from posecli.models.loading import load_pose_model

    path = tmp_path / "old.pt"  # the layout of a diffpose.coco17-v1 file: arch "diffpose"
    config = {"arch": "diffpose", "model": {"window": 3, "input_size": [256, 192], "frozen_stages": 3},
              "window": 3, "input_size": [256, 192], "heatmap_size": [64, 48]}
    torch.save({"format": FORMAT, "config": json.dumps(config), "state_dict": {}}, path)
    for load in (lambda: load_checkpoint(path),
                 lambda: load_pose_model(path, device="cpu", window=None, steps=None, seed=0, batch_size=1)):
        with pytest.raises(PoseCliError, match="architecture 'diffpose' .* is no longer supported") as caught:
            load()
        assert "\n" not in str(caught.value) and "diffpose.coco17-v2" in str(caught.value)
    unknown = tmp_path / "unknown.pt"
    torch.save({"format": FORMAT, "config": json.dumps(dict(config, arch="hrnet")), "state_dict": {}}, unknown)
    with pytest.raises(ValueError, match="unsupported arch 'hrnet'"):
        load_checkpoint(unknown)


def test_feature_maps_not_divisible_by_the_patch_size():
    model = tiny_pose_model(window=3, input_size=(96, 64), strl_patch=4).eval()  # 6×4 stride-16 cells
    with torch.no_grad():
        out = model(_frames(2, 3, (96, 64)), torch.randn(2, 17, 24, 16), torch.tensor([0, 500]))
    assert out.shape == (2, 17, 24, 16)
    with pytest.raises(ValueError):
        DiffPoseMoveNet(TINY_TRUNK, input_size=(250, 192))
