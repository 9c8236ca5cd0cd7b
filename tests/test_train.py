"""Training side: targets, augmentation geometry, datasets, and a tiny training run."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import TINY_MODEL_KWARGS, tiny_pose_model
from posecli.crop import apply_affine, crop_transform, heatmap_to_input
from posecli.errors import PoseCliError
from posecli.decode import dark_decode
from posecli.train.augment import AugmentConfig, about_centre, make_example
from posecli.train.datasets import CocoKeypoints, MixedDataset, VideoPseudoLabels
from posecli.train.loop import DatasetSpec, TrainConfig, build_model, lr_factor, train
from posecli.train.targets import gaussian_heatmaps
from posecli.types import COCO_FLIP_INDEX

INPUT_HW = (256, 192)


@pytest.fixture(autouse=True)
def _one_thread():
    # A training run may own the cores; keep the tests light.
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _blob_image(points: np.ndarray, hw=(300, 400)) -> np.ndarray:
    """Black image with a small Gaussian blob (sigma 1.5 px) at each point."""
    yy, xx = np.mgrid[0:hw[0], 0:hw[1]]
    img = np.zeros(hw, np.float64)
    for x, y in points:
        img += np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * 1.5**2))
    return np.repeat((np.clip(img, 0, 1) * 255).astype(np.uint8)[..., None], 3, axis=2)


def _centroid(gray: np.ndarray, near: np.ndarray, radius: int = 6) -> np.ndarray:
    x0, y0 = np.round(near).astype(int)
    ys, xs = np.mgrid[y0 - radius:y0 + radius + 1, x0 - radius:x0 + radius + 1]
    w = gray[ys, xs].astype(np.float64)
    return np.array([(w * xs).sum() / w.sum(), (w * ys).sum() / w.sum()])


def test_gaussian_target_peaks_at_the_subpixel_joint():
    kp = np.array([[50.3, 120.7], [100.0, 30.0], [-40.0, 10.0]])  # input pixels; the last is outside
    hm, w = gaussian_heatmaps(kp, np.array([1.0, 0.0, 1.0]), (64, 48), stride=4, sigma=2.0)
    assert hm.shape == (3, 64, 48) and hm.dtype == np.float32
    assert w.tolist() == [1.0, 0.0, 0.0]  # unlabelled stays 0; outside the heatmap becomes 0
    assert hm[1].max() == 0 and hm[2].max() == 0
    xy, _ = dark_decode(hm[None, :1], kernel=None)
    np.testing.assert_allclose(heatmap_to_input(xy[0, 0], 4), kp[0], atol=0.05)


def test_flip_mirrors_and_swaps_left_right():
    rng_pts = np.random.default_rng(1)
    kp = rng_pts.uniform([120, 60], [280, 240], (17, 2))
    weights = np.ones(17, np.float32)
    weights[3] = 0.0  # left ear unlabelled → after the swap, slot 4 (right ear) is unlabelled
    image = np.zeros((300, 400, 3), np.uint8)
    box = np.array([110.0, 50.0, 290.0, 250.0])
    cfg = AugmentConfig.none()
    plain = make_example([image], box, kp, weights, 1, INPUT_HW, cfg, np.random.default_rng(0))
    flipped = make_example([image], box, kp, weights, 1, INPUT_HW, replace(cfg, flip_prob=1.0),
                           np.random.default_rng(0))
    assert flipped.flipped and not plain.flipped
    idx = np.asarray(COCO_FLIP_INDEX)
    expected = plain.keypoints[idx].copy()
    expected[:, 0] = (INPUT_HW[1] - 1) - expected[:, 0]
    np.testing.assert_allclose(flipped.keypoints, expected, atol=1e-4)
    # Left shoulder (5) now holds the mirrored right shoulder (6).
    np.testing.assert_allclose(flipped.keypoints[5, 0], INPUT_HW[1] - 1 - plain.keypoints[6, 0], atol=1e-4)
    assert flipped.weights[4] == 0 and flipped.weights[3] == 1


def test_flip_moves_the_image_content_with_the_keypoints():
    kp = np.zeros((17, 2))
    kp[:] = [200.0, 150.0]
    kp[5] = [170.0, 120.0]  # a single bright dot at the left shoulder
    image = _blob_image(kp[5:6])
    box = np.array([130.0, 60.0, 270.0, 240.0])
    ex = make_example([image], box, kp, np.ones(17, np.float32), 1, INPUT_HW,
                      replace(AugmentConfig.none(), flip_prob=1.0), np.random.default_rng(0))
    # After the flip the dot is the *right* shoulder's position (slot 6).
    np.testing.assert_allclose(_centroid(ex.crops[0, :, :, 0], ex.keypoints[6]), ex.keypoints[6], atol=0.3)


def test_synthetic_motion_keeps_each_frame_consistent_with_its_crop():
    points = np.array([[180.0, 110.0], [230.0, 190.0]])
    image = _blob_image(points)
    kp = np.zeros((17, 2))
    kp[:2] = points
    box = np.array([140.0, 70.0, 270.0, 240.0])
    cfg = replace(AugmentConfig.none(), motion_shift=0.05, motion_scale=0.05, motion_rotate_deg=5.0,
                  scale=0.2, rotate_deg=20.0, rotate_prob=1.0)
    ex = make_example([image], box, kp, np.ones(17, np.float32), 5, INPUT_HW, cfg,
                      np.random.default_rng(3))
    assert ex.crops.shape == (5, 256, 192, 3) and ex.matrices.shape == (5, 2, 3)
    # The frames really differ (synthetic motion), the key frame is the centre one.
    assert not np.allclose(ex.matrices[0], ex.matrices[2])
    np.testing.assert_allclose(apply_affine(points, ex.matrices[2]), ex.keypoints[:2], atol=1e-4)
    for j in range(5):
        for p in apply_affine(points, ex.matrices[j]):
            np.testing.assert_allclose(_centroid(ex.crops[j, :, :, 0], p), p, atol=0.3)


def test_real_clip_windows_share_the_key_frame_crop():
    frames = [np.full((300, 400, 3), v, np.uint8) for v in (10, 20, 30)]
    kp = np.full((17, 2), 150.0)
    box = np.array([100.0, 50.0, 250.0, 280.0])
    ex = make_example(frames, box, kp, np.ones(17, np.float32), 3, INPUT_HW, AugmentConfig(),
                      np.random.default_rng(0))
    assert np.allclose(ex.matrices, ex.matrices[1])
    no_aug = make_example(frames, box, kp, np.ones(17, np.float32), 3, INPUT_HW,
                          AugmentConfig.none(), np.random.default_rng(0))
    np.testing.assert_allclose(no_aug.matrices[1], crop_transform(box, INPUT_HW))
    assert [int(c[128, 96, 0]) for c in no_aug.crops] == [10, 20, 30]


def test_about_centre_rotates_about_the_crop_centre():
    m = about_centre(1.0, 90.0, (0.0, 0.0), INPUT_HW)
    c = np.array([(INPUT_HW[1] - 1) / 2, (INPUT_HW[0] - 1) / 2])
    np.testing.assert_allclose(apply_affine(c, m[:2]), c, atol=1e-9)
    np.testing.assert_allclose(apply_affine(c + [10, 0], m[:2]), c + [0, -10], atol=1e-9)


def test_lspet_items_shapes_weights_and_teacher_face(shared_dir: Path):
    path = shared_dir / "data/lspet/val.json"
    plain = CocoKeypoints(path, limit=20)
    teach = CocoKeypoints(path, face_teacher_weight=0.5, limit=20)
    assert len(plain) == 20
    w0 = np.stack([it[3] for it in plain.items])
    w1 = np.stack([it[3] for it in teach.items])
    assert (w0[:, :5] == 0).all() and set(np.unique(w1[:, :5])) == {0.0, 0.5}
    np.testing.assert_array_equal(w0[:, 5:], w1[:, 5:])
    ds = MixedDataset([plain], [1.0], 4, 3, INPUT_HW, AugmentConfig(), seed=0)
    item = ds[0]
    assert item["crops"].shape == (3, 256, 192, 3) and item["crops"].dtype == torch.uint8
    assert item["heatmaps"].shape == (17, 64, 48) and item["weights"].shape == (17,)
    assert float(item["heatmaps"].max()) <= 1.0
    # Deterministic per index, whatever was drawn before.
    again = MixedDataset([plain], [1.0], 4, 3, INPUT_HW, AugmentConfig(), seed=0)[0]
    assert torch.equal(item["crops"], again["crops"]) and torch.equal(item["heatmaps"], again["heatmaps"])


def test_lr_suspect_groups_are_dropped(shared_dir: Path):
    path = shared_dir / "data/lspet/val.json"
    data = json.loads(path.read_text())
    suspects = [a for a in data["annotations"] if "arms" in a.get("lr_swap_suspect", [])]
    assert suspects
    by_id = {it[4]: it[3] for it in CocoKeypoints(path).items}
    kept = {it[4]: it[3] for it in CocoKeypoints(path, drop_lr_suspect=False).items}
    ann = suspects[0]
    assert (by_id[ann["id"]][5:11] == 0).all() and (kept[ann["id"]][5:11] > 0).any()


@pytest.mark.slow
def test_video_pseudo_labels_skip_static_tracks_and_give_real_windows(shared_dir: Path, tmp_path: Path):
    path = shared_dir / "data/videos/pose2sim_SinglePerson_cam01.pseudo.json"
    src = VideoPseudoLabels(path, window=3, cache_dir=tmp_path)
    assert len(src) == 100  # track 2 (static skeleton model) is skipped
    sample = src.load(50)
    assert len(sample.frames) == 3 and sample.frames[0].shape == (960, 540, 3)
    assert not np.array_equal(sample.frames[0], sample.frames[2])  # consecutive, different frames
    assert set(np.unique(sample.weights)) <= {0.0, 1.0}


def test_dataset_spec_parse():
    assert DatasetSpec.parse("a/b.json:0.5") == DatasetSpec("a/b.json", 0.5)
    assert DatasetSpec.parse("a/b.json") == DatasetSpec("a/b.json", 1.0)


def test_lr_schedule_warms_up_then_decays():
    assert lr_factor(0.0, 0, 10, 0.1) == pytest.approx(0.1)
    assert lr_factor(0.0, 10, 10, 0.1) == pytest.approx(1.0)
    assert lr_factor(1.0, 100, 10, 0.1) == pytest.approx(0.1)


def test_weighted_loss_without_options_is_the_papers_masked_l2():
    from posecli.models.diffusion import NoiseSchedule
    from posecli.train.loss import weighted_diffusion_loss

    class Echo(torch.nn.Module):  # x̂0 = x_t / 2: a cheap stand-in with a t-dependent error
        def forward(self, images, x_t, t):
            return x_t * 0.5

    schedule = NoiseSchedule(1000)
    heatmaps, _ = gaussian_heatmaps(np.array([[20.0, 30.0], [5.0, 9.0]]), np.ones(2), (16, 12))
    heatmaps = torch.from_numpy(np.stack([heatmaps, heatmaps[::-1]]))
    vis = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    images = torch.zeros(2, 3, 3, 64, 48)

    def loss(**kw):
        return float(weighted_diffusion_loss(Echo(), schedule, images, heatmaps, vis,
                                             generator=torch.Generator().manual_seed(5), **kw))

    # The paper's loss written out: t ~ U{0…T−1}, ε ~ N(0, I) (drawn in that order), x_t by the
    # forward process, squared error of x̂0 per joint, averaged over the visible joints.
    g = torch.Generator().manual_seed(5)
    t = torch.randint(0, 1000, (2,), generator=g)
    eps = torch.randn(heatmaps.shape, generator=g, dtype=heatmaps.dtype)
    ab = torch.cumprod(1.0 - schedule.betas, 0)[t].view(-1, 1, 1, 1).float()
    x0 = 2.0 * heatmaps - 1.0
    x_t = ab.sqrt() * x0 + (1.0 - ab).sqrt() * eps
    per_joint = (0.5 * x_t - x0).pow(2).mean(dim=(2, 3))
    expected = float((per_joint * vis).sum() / vis.sum())
    assert loss() == pytest.approx(expected, rel=1e-5)
    assert loss(fg_weight=20.0) != pytest.approx(expected, rel=1e-3)
    assert loss(high_t_fraction=1.0) != pytest.approx(expected, rel=1e-3)


def _tiny_config(shared_dir: Path, out: Path, steps: int, init: Path) -> TrainConfig:
    """A short run from ``init`` (``conftest.tiny_checkpoint``: its layer sizes are the model_kwargs)."""
    data = shared_dir / "data"
    return TrainConfig(
        datasets=(DatasetSpec(str(data / "lspet/train.json"), 1.0, limit=8),), out_dir=out,
        steps=steps, batch_size=4, lr=3e-3, warmup_steps=2, checkpoint_every=1000, num_workers=0,
        threads=1, input_size=(64, 64), window=3, augment=AugmentConfig.none(),
        val_json=data / "lspet/val.json", val_limit=4, val_every=0, log_every=5,
        face_teacher_weight=0.0, init_checkpoint=init, model_kwargs=TINY_MODEL_KWARGS,
    )



def test_fine_tuning_keeps_the_checkpoints_design_unless_told_otherwise(tmp_path: Path):
    """``--init`` of a mirror-view, temporal-prior checkpoint (window 5, STRL and decoder on 3): the model
    built for training has that design and those weights; a run option overrides one part; a window
    the learned frames do not fit in is a one-line error."""
    from posecli.models import save_checkpoint

    source = tiny_pose_model(window=5, learned_window=3, mirror_prior=True, temporal_prior=True).eval()
    init = tmp_path / "shipped.pt"
    save_checkpoint(init, source, {"steps": 1, "crop_enlarge": 1.15})
    config = TrainConfig(datasets=(), out_dir=tmp_path / "run", window=5, input_size=(64, 64), init_checkpoint=init)
    model = build_model(config)
    assert (model.window, model.learned_window, model.mirror_prior, model.temporal_prior) == (5, 3, True, True)
    for name, value in model.state_dict().items():  # float tensors as saved, in half precision
        saved = source.state_dict()[name]
        torch.testing.assert_close(value, saved.half().float() if saved.is_floating_point() else saved, msg=name)
    plain = build_model(replace(config, model_kwargs={"temporal_prior": False}))
    assert (plain.learned_window, plain.mirror_prior, plain.temporal_prior) == (3, True, False)
    with pytest.raises(PoseCliError, match="--window 1 does not fit"):
        build_model(replace(config, window=1))


def _fixed_loss(model, config: TrainConfig) -> float:
    """Mean training loss (the run's options) over the 8 training persons, with fixed timesteps and noise."""
    from posecli.models.diffusion import NoiseSchedule
    from posecli.models.preprocess import crops_to_tensor
    from posecli.train.loop import build_sources
    from posecli.train.loss import weighted_diffusion_loss

    sources, _ = build_sources(config)
    ds = MixedDataset(sources, [1.0], 8, config.window, config.input_size, AugmentConfig.none(), 0,
                      enlarge=config.crop_enlarge)
    batch = torch.utils.data.default_collate([ds[i] for i in range(8)])
    images = crops_to_tensor(batch["crops"].numpy())
    losses = []
    with torch.no_grad():
        for seed in range(4):
            g = torch.Generator().manual_seed(seed)
            losses.append(float(weighted_diffusion_loss(
                model.eval(), NoiseSchedule(model.timesteps), images, batch["heatmaps"], batch["weights"],
                generator=g, fg_weight=config.fg_weight, high_t_fraction=config.high_t_fraction,
                to_key=batch["to_key"])))
    return float(np.mean(losses))


@pytest.mark.slow
def test_tiny_training_run_lowers_loss_and_checkpoint_round_trips(shared_dir: Path, tmp_path: Path,
                                                                  tiny_checkpoint: Path, pytorch_trunk):
    from posecli.models.checkpoint import load_checkpoint
    from posecli.models.diffusion import DDIMSampler, NoiseSchedule
    from posecli.models.predictor import HeatmapPredictor

    config = _tiny_config(shared_dir, tmp_path / "run", steps=25, init=tiny_checkpoint)
    torch.manual_seed(config.seed)
    before = _fixed_loss(build_model(config), config)
    final = train(config)
    assert final == tmp_path / "run" / "final.pt" and (tmp_path / "run" / "latest.pt").is_file()
    loaded, saved_config = load_checkpoint(final)
    after = _fixed_loss(loaded, config)
    assert after < 0.5 * before, (before, after)
    record = saved_config["training"]
    assert record["steps"] == 25 and record["seed"] == 0 and "pck@0.2" in record["metrics"]
    assert record["datasets"][0]["persons"] == 8
    assert "train.log" in {p.name for p in (tmp_path / "run").iterdir()}
    assert "step 25/25" in (tmp_path / "run" / "train.log").read_text()

    # The fp32 training state rounded to fp16 predicts exactly what the loaded checkpoint predicts.
    state = torch.load(tmp_path / "run" / "state.pt", weights_only=False)
    model = build_model(config)
    model.load_state_dict({k: (v.half().float() if v.is_floating_point() else v)
                           for k, v in state["model"].items()})
    crops = np.random.default_rng(0).integers(0, 256, (2, 3, 64, 64, 3), dtype=np.uint8)

    def predict(m):
        sampler = DDIMSampler(NoiseSchedule(m.timesteps), steps=2, seed=7)
        return HeatmapPredictor(m, sampler)(crops)

    np.testing.assert_array_equal(predict(model), predict(loaded))


@pytest.mark.slow
def test_resume_continues_the_same_run(shared_dir: Path, tmp_path: Path, tiny_checkpoint: Path, pytorch_trunk):
    straight = replace(_tiny_config(shared_dir, tmp_path / "a", steps=6, init=tiny_checkpoint), val_json=None)
    train(straight)
    paused = replace(straight, out_dir=tmp_path / "b", stop_after=3)
    assert train(paused).name == "step_000003.pt"
    assert train(replace(paused, stop_after=None, resume=True)).name == "final.pt"
    a = torch.load(tmp_path / "a" / "state.pt", weights_only=True)  # plain tensors and containers only
    b = torch.load(tmp_path / "b" / "state.pt", weights_only=True)
    assert a["step"] == b["step"] == 6
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k


@pytest.mark.slow
@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_mixed_precision_training_lowers_the_loss(shared_dir: Path, tmp_path: Path, amp: str, tiny_checkpoint: Path,
                                                  pytorch_trunk):
    # The autocast and gradient-scaler path that CUDA training takes, run on the CPU.
    from posecli.models.checkpoint import load_checkpoint

    config = replace(_tiny_config(shared_dir, tmp_path / "run", steps=25, init=tiny_checkpoint), amp=amp)
    torch.manual_seed(config.seed)
    before = _fixed_loss(build_model(config), config)
    loaded, _ = load_checkpoint(train(config))
    assert _fixed_loss(loaded, config) < 0.5 * before
    scaler = torch.load(tmp_path / "run" / "state.pt", weights_only=False)["scaler"]
    assert bool(scaler) == (amp == "fp16")  # the scaler only runs for float16
