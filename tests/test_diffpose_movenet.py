"""DiffPose on MoveNet's layers: priors, alignment, the untrained model's identity with MoveNet."""

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import tiny_pose_model

from posecli.crop import crop_to_crop, crop_transform, warp_crop
from posecli.decode import dark_decode, heatmaps_to_frame
from posecli.models.diffpose_movenet import (MIRROR_AGREE_PX, TEMPORAL_AGREE_PX, DiffPoseMoveNet, binomial_weights,
                                             merge_mirrored, movenet_to_heatmap_xy, one_frame_jumps, render_gaussians,
                                             temporal_prior, with_temporal_prior)
from posecli.models.diffusion import DDIMSampler, NoiseSchedule
from posecli.models.movenet import decode_single_pose, movenet_spec, read_tfjs_weights
from posecli.models.predictor import HeatmapPredictor
from posecli.models.preprocess import RAW_MEAN_RGB, RAW_STD_RGB
from posecli.train.loss import _encode_distinct, weighted_diffusion_loss
from posecli.types import COCO_FLIP_INDEX

SIDE = (256, 256)


@pytest.fixture(scope="module")
def thunder(shared_dir: Path):
    weights = read_tfjs_weights(shared_dir / "weights/movenet-thunder.json")
    torch.manual_seed(0)
    model = DiffPoseMoveNet(movenet_spec(weights), window=3, input_size=SIDE)
    model.trunk.load_tfjs(weights)
    return model.eval()


@pytest.fixture(scope="module")
def person(shared_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """(image BGR, box xyxy) of the first LSP-Extended val person."""
    data = json.loads((shared_dir / "data/lspet/val.json").read_text())
    ann = data["annotations"][0]
    image = next(i for i in data["images"] if i["id"] == ann["image_id"])
    x, y, w, h = ann["bbox"]
    return cv2.imread(str(shared_dir / "data/lspet/images" / image["file_name"])), np.array([x, y, x + w, y + h])


def test_render_gaussians_peaks_at_sub_pixel_positions_near_borders() -> None:
    # Peaks one pixel in from the edges (DARK keeps a plain argmax on the outermost row/column).
    xy = torch.tensor([[[3.3, 60.7], [1.2, 1.4], [46.4, 12.25]]], dtype=torch.float64)
    amp = torch.tensor([[0.8, 1.0, 0.5]], dtype=torch.float64)
    maps = render_gaussians(xy, amp, (64, 48), sigma=2.0)
    assert maps.shape == (1, 3, 64, 48)
    found, scores = dark_decode(maps.numpy().astype(np.float32), kernel=None)
    # DARK without modulation recovers a Gaussian's centre, also next to the map's edges.
    np.testing.assert_allclose(found[0], xy[0].numpy(), atol=0.02)
    np.testing.assert_allclose(maps.amax(dim=(2, 3))[0].numpy(), amp[0].numpy(), atol=0.04)
    # Anisotropic position: x and y are not swapped.
    assert maps[0, 0, 61, 3] > maps[0, 0, 3, 61 % 48]


def test_movenet_cells_map_to_the_pixels_the_graph_means(thunder, person) -> None:
    """MoveNet's normalised output × side is measured from the crop's outer edge (as the TFLite
    baselines read it); our heatmap pixels → frame must land on the same frame pixels."""
    image, box = person
    matrix = crop_transform(box, SIDE, enlarge=1.15)
    crop = warp_crop(image, matrix, SIDE)
    with torch.inference_mode():
        yx, _ = decode_single_pose(thunder.trunk(torch.from_numpy(np.ascontiguousarray(crop[..., ::-1]))
                                                 .permute(2, 0, 1)[None].float()))
    ours = heatmaps_to_frame(movenet_to_heatmap_xy(yx).numpy(), 4, matrix[None])
    edge_uv = yx[0].flip(-1).numpy() / 64 * 256  # the graph's normalised output × input side
    inv = cv2.invertAffineTransform(matrix)
    expected = (edge_uv - 0.5) @ inv[:, :2].T + inv[:, 2]
    np.testing.assert_allclose(ours[0], expected, atol=1e-3)


def test_untrained_model_reproduces_movenet_keypoints(thunder, person) -> None:
    """Zero residual: x̂0 is the rendered prior, so DARK gives back MoveNet's own keypoints."""
    image, box = person
    matrix = crop_transform(box, SIDE, enlarge=1.15)
    crop = warp_crop(image, matrix, SIDE)
    sampler = DDIMSampler(NoiseSchedule(1000, "cosine"), steps=1, seed=0)
    predictor = HeatmapPredictor(thunder, sampler, mean=RAW_MEAN_RGB, std=RAW_STD_RGB)
    heatmaps = predictor(crop[None, None])
    xy, scores = dark_decode(heatmaps)
    with torch.inference_mode():
        yx, ref_scores = decode_single_pose(thunder.trunk(torch.from_numpy(np.ascontiguousarray(crop[..., ::-1]))
                                                          .permute(2, 0, 1)[None].float()))
    ref = movenet_to_heatmap_xy(yx).numpy()
    inside = (ref[0] > 3) & (ref[0] < 60)  # away from the modulation blur's border effect
    inside = inside.all(axis=1)
    assert inside.sum() >= 10
    np.testing.assert_allclose(xy[0][inside], ref[0][inside], atol=0.03)
    np.testing.assert_allclose(scores[0], ref_scores[0].numpy(), atol=0.03)


def test_neighbour_priors_are_moved_into_the_key_crop(thunder) -> None:
    """Frame points seen in a neighbour's own crop (rotated, scaled, shifted box) land on the key
    crop's pixels of the same frame points, and are rendered there."""
    rng = np.random.default_rng(3)
    frame_pts = rng.uniform(100, 400, (17, 2))
    key_matrix = crop_transform(np.array([90.0, 80.0, 380.0, 430.0]), SIDE, enlarge=1.15)
    angle = np.deg2rad(20.0)
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]) * np.array([[1.3], [0.8]])
    other = np.hstack([rot @ key_matrix[:, :2], (rot @ key_matrix[:, 2:] + np.array([[9.0], [-14.0]]))])

    def heatmap_xy(matrix: np.ndarray) -> np.ndarray:  # frame → crop pixels → heatmap pixels
        px = frame_pts @ matrix[:, :2].T + matrix[:, 2]
        return (px - 1.5) / 4.0

    prior_xy = torch.from_numpy(np.stack([heatmap_xy(other), heatmap_xy(key_matrix), heatmap_xy(key_matrix)])[None])
    scores = torch.ones(1, 3, 17, dtype=torch.float64)
    to_key = torch.from_numpy(np.stack([crop_to_crop(m, key_matrix) for m in (other, key_matrix, key_matrix)])[None])
    aligned_xy = thunder.aligned_xy(prior_xy, to_key)
    want = heatmap_xy(key_matrix)
    for t in range(3):
        np.testing.assert_allclose(aligned_xy[0, t].numpy(), want, atol=1e-9)
    assert np.abs(thunder.aligned_xy(prior_xy, None)[0, 0].numpy() - want).max() > 2.0
    aligned = render_gaussians(aligned_xy, scores, thunder.heatmap_size, thunder.prior_sigma)
    inside = ((want > 2) & (want < 61)).all(axis=1)
    assert inside.sum() >= 8
    got, _ = dark_decode(aligned[0, 0].numpy()[None].astype(np.float32), kernel=None)
    np.testing.assert_allclose(got[0][inside], want[inside], atol=0.02)


def test_encoding_only_distinct_frames_changes_nothing(thunder) -> None:
    torch.manual_seed(1)
    still = torch.rand(1, 3, 64, 64).mul(255).repeat(3, 1, 1, 1)  # one image repeated
    moving = torch.rand(3, 3, 64, 64) * 255
    images = torch.stack([still, moving])  # [B=2, T=3, 3, H, W]
    small = DiffPoseMoveNet(thunder.init_kwargs["trunk"], window=3, input_size=(64, 64)).eval()
    small.trunk.load_state_dict(thunder.trunk.state_dict())
    with torch.inference_mode():
        expected = small.encode_frames(images.flatten(0, 1)).view(2, 3, -1)
        got = _encode_distinct(small, images)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_openvino_trunk_agrees_with_pytorch(thunder, person) -> None:
    from posecli.models.openvino_trunk import OpenVinoTrunk

    image, box = person
    crops = np.stack([warp_crop(image, crop_transform(box * s, SIDE, enlarge=1.15), SIDE)[..., ::-1]
                      for s in (1.0, 0.9)])
    rgb = torch.from_numpy(np.ascontiguousarray(crops)).permute(0, 3, 1, 2).float()
    runner = OpenVinoTrunk(thunder.trunk, SIDE, threads=1)
    with torch.inference_mode():
        ours = thunder.encode_frames(rgb, runner)
        reference = thunder.encode_frames(rgb)
    torch.testing.assert_close(ours, reference, rtol=1e-3, atol=1e-3)
    parts = thunder.layout.unpack(ours)
    assert parts["prior_xy"].shape == (2, 17, 2) and float(parts["prior_score"].max()) > 0.5



def test_openvino_graph_cache_is_read_back_and_never_stale(thunder, person, tmp_path, monkeypatch, caplog) -> None:
    """A converted graph is written once and read back without converting; a trunk with one changed
    weight gets its own graph (its outputs, not the cached ones); a damaged cached file is converted
    again; an unwritable cache folder still gives a working trunk."""
    import copy

    from posecli.models import openvino_trunk
    from posecli.models.openvino_trunk import OpenVinoTrunk

    image, box = person
    crop = warp_crop(image, crop_transform(box, SIDE, enlarge=1.15), SIDE)[..., ::-1]
    rgb = torch.from_numpy(np.ascontiguousarray(crop[None])).permute(0, 3, 1, 2).float()

    def agrees(model, runner) -> None:
        with torch.inference_mode():
            torch.testing.assert_close(model.encode_frames(rgb, runner), model.encode_frames(rgb), rtol=1e-3, atol=1e-3)

    cache = tmp_path / "openvino"
    agrees(thunder, OpenVinoTrunk(thunder.trunk, SIDE, threads=1, cache=cache))
    written = sorted(p.name for p in cache.iterdir())
    assert len(written) == 2 and {Path(n).suffix for n in written} == {".xml", ".bin"}  # no partial left

    convert = openvino_trunk._convert
    monkeypatch.setattr(openvino_trunk, "_convert", lambda *a: pytest.fail("converted although cached"))
    agrees(thunder, OpenVinoTrunk(thunder.trunk, SIDE, threads=1, cache=cache))

    changed = copy.deepcopy(thunder)
    with torch.no_grad():
        first = next(p for p in changed.trunk.parameters() if p.dim() == 4)
        first[0] *= -1.0  # one filter of the first convolution
    monkeypatch.setattr(openvino_trunk, "_convert", convert)
    agrees(changed, OpenVinoTrunk(changed.trunk, SIDE, threads=1, cache=cache))
    assert len(list(cache.glob("*.xml"))) == 2

    xml = cache / next(n for n in written if n.endswith(".xml"))
    xml.write_text(xml.read_text()[:1000])
    agrees(thunder, OpenVinoTrunk(thunder.trunk, SIDE, threads=1, cache=cache))
    assert "unreadable" in caplog.text and xml.stat().st_size > 1000  # converted and written again

    blocked = tmp_path / "a-file"
    blocked.write_text("")
    agrees(thunder, OpenVinoTrunk(thunder.trunk, SIDE, threads=1, cache=blocked / "openvino"))

def test_merge_mirrored_maps_back_averages_agreement_and_keeps_the_confident_one() -> None:
    width = 48  # anisotropic crop: the mirror is about x = (w - 1) / 2, y untouched
    torch.manual_seed(3)
    xy = torch.rand(2, 17, 2) * torch.tensor([width - 1.0, 63.0])
    score = torch.rand(2, 17)
    index = list(COCO_FLIP_INDEX)
    mirrored = xy[:, index].clone()  # the mirror view's own joint order and pixels
    mirrored[..., 0] = (width - 1) - mirrored[..., 0]
    exact = merge_mirrored(xy, score, mirrored, score[:, index], width)
    torch.testing.assert_close(exact[..., :2], xy)  # a perfectly mirrored finding changes nothing
    # One joint found 1 px to the right in the mirror view (= 1 px left after mapping back): the mean.
    shifted = mirrored.clone()
    shifted[0, 9, 0] += 1.0  # mirror view's left wrist = the crop's right wrist (10)
    mean = merge_mirrored(xy, score, shifted, score[:, index], width)
    assert float(mean[0, 10, 0]) == pytest.approx(float(xy[0, 10, 0]) - 0.5, abs=1e-5)
    # Far apart: the more confident view wins, whichever it is; the score is the mean of both.
    far = mirrored.clone()
    far[1, 5, 1] += MIRROR_AGREE_PX + 2.0  # the crop's right shoulder (6), lower in the mirror view
    low, high = score.clone(), score[:, index].clone()
    low[1, 6], high[1, 5] = 0.2, 0.9
    picked = merge_mirrored(xy, low, far, high, width)
    assert float(picked[1, 6, 1]) == pytest.approx(float(xy[1, 6, 1]) + MIRROR_AGREE_PX + 2.0, abs=1e-5)
    assert float(picked[1, 6, 2]) == pytest.approx(0.55, abs=1e-6)
    kept = merge_mirrored(xy, high[:, index], far, low[:, index], width)
    torch.testing.assert_close(kept[1, 6, :2], xy[1, 6])


def test_binomial_weights_are_pascals_row() -> None:
    torch.testing.assert_close(binomial_weights(1), torch.tensor([1.0]))
    torch.testing.assert_close(binomial_weights(3), torch.tensor([0.25, 0.5, 0.25]))
    torch.testing.assert_close(binomial_weights(5), torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0]) / 16)


def test_temporal_prior_keeps_steady_motion_averages_wobble_and_gates_other_limbs() -> None:
    torch.manual_seed(4)
    key = torch.rand(2, 17, 2) * 60
    velocity = torch.tensor([1.7, -2.9])  # 3.4 px a frame: inside the gate, diagonal
    steady = torch.stack([key - velocity, key, key + velocity], dim=1)  # [N, T, K, 2]
    score = torch.rand(2, 3, 17)
    xy, fused_score = temporal_prior(steady, score)
    torch.testing.assert_close(xy, key)  # constant velocity: no lag, no shrink
    torch.testing.assert_close(fused_score, (score[:, 0] + 2 * score[:, 1] + score[:, 2]) / 4)
    wobble = steady.clone()
    wobble[:, 1] += torch.tensor([1.0, -0.5])  # the key frame's decode off by (1, -0.5)
    xy, _ = temporal_prior(wobble, score)
    torch.testing.assert_close(xy, key + torch.tensor([0.5, -0.25]))  # halved by the [¼, ½, ¼] mean
    # A neighbour on another limb (past the gate, in y only) gets no weight, nor does its partner on
    # the other side of the key frame (a one-sided mean would lean towards the next frame).
    gated = wobble.clone()
    gated[0, 0, 9, 1] += TEMPORAL_AGREE_PX + 3.0
    xy, fused_score = temporal_prior(gated, score)
    torch.testing.assert_close(xy[0, 9], wobble[0, 1, 9])
    assert float(fused_score[0, 9]) == pytest.approx(float(score[0, 1, 9]), abs=1e-6)
    torch.testing.assert_close(xy[1], key[1] + torch.tensor([0.5, -0.25]))  # the other person is untouched
    # The key frame alone, but the frames before and after it 6.7 px apart (past the gate): a fast
    # limb, not a one-frame jump; the key frame's own decode is kept.
    swing = steady.clone()
    swing[0, 1, 4] += torch.tensor([0.0, TEMPORAL_AGREE_PX + 5.0])
    xy, _ = temporal_prior(swing, score)
    torch.testing.assert_close(xy[0, 4], swing[0, 1, 4])
    # Both neighbours elsewhere: the key frame's own decode.
    alone = steady.clone()
    alone[1, 0, 3] += 40.0
    alone[1, 2, 3] -= 40.0
    xy, fused_score = temporal_prior(alone, score)
    torch.testing.assert_close(xy[1, 3], key[1, 3])
    assert float(fused_score[1, 3]) == pytest.approx(float(score[1, 1, 3]), abs=1e-6)


def test_temporal_prior_keeps_pairs_of_frames_so_a_fast_limb_is_not_pulled_to_one_side() -> None:
    """Five frames of a joint speeding up along x (1, 2, 4, 8 px steps, anisotropic in y): the frame
    two ahead is past the gate, so it and the frame two behind drop out; the middle three keep their
    (4, 6, 4) weights. Elsewhere, pairs inside the gate keep the full (1, 4, 6, 4, 1) mean."""
    x = torch.tensor([-3.0, -1.0, 0.0, 2.0, 2.0 + TEMPORAL_AGREE_PX + 1.0])
    track = torch.stack([x, 0.25 * x], dim=-1)  # [T, 2]
    xy = (torch.tensor([20.0, 30.0]) + track)[None, :, None].repeat(1, 1, 2, 1)  # [N=1, T=5, K=2, 2]
    xy[0, 4, 1] = xy[0, 3, 1] + torch.tensor([1.0, 0.25])  # joint 1: slows down, all five inside
    score = torch.full((1, 5, 2), 0.5)
    fused, _ = temporal_prior(xy, score)
    middle = (4 * xy[0, 1, 0] + 6 * xy[0, 2, 0] + 4 * xy[0, 3, 0]) / 14
    torch.testing.assert_close(fused[0, 0], middle)
    everything = (torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0])[:, None] * xy[0, :, 1]).sum(0) / 16
    torch.testing.assert_close(fused[0, 1], everything)


def test_a_one_frame_jump_of_the_key_decode_is_replaced_by_the_frames_around_it() -> None:
    """Five frames of two joints moving slowly (0.8 px a frame in x, 0.3 in y); joint 0's key decode
    jumps 7 px in y only for one frame (past the gate, an anisotropic jump), joint 1's jumps far
    in x but frame t + 2 jumps with it (two frames on the other limb: not a one-frame jump)."""
    steps = torch.arange(-2.0, 3.0)
    track = torch.stack([0.8 * steps, 0.3 * steps], dim=-1)  # [T, 2]
    xy = (torch.tensor([3.0, 60.0]) + track)[None, :, None].repeat(1, 1, 2, 1)  # near the map's edge
    xy[0, 2, 0, 1] += TEMPORAL_AGREE_PX + 1.0
    xy[0, 2, 1, 0] += 30.0
    xy[0, 4, 1, 0] += 30.0
    score = torch.tensor([0.6, 0.7, 0.2, 0.8, 0.5])[None, :, None].repeat(1, 1, 2)
    assert one_frame_jumps(xy).tolist() == [[True, False]]
    fused, fused_score = temporal_prior(xy, score)
    # Joint 0: the other four frames in their (1, 4, ·, 4, 1) weights, centred: the steady track's key point.
    torch.testing.assert_close(fused[0, 0], torch.tensor([3.0, 60.0]))
    assert float(fused_score[0, 0]) == pytest.approx((0.6 + 4 * 0.7 + 4 * 0.8 + 0.5) / 10, abs=1e-6)
    # Joint 1: the key decode is kept; t ± 1 are past its gate, and t ± 2 go with t + 2's partner.
    torch.testing.assert_close(fused[0, 1], xy[0, 2, 1])
    # Three frames: the jump is replaced by the midpoint of its neighbours.
    three = xy[:, 1:4]
    fused, fused_score = temporal_prior(three, score[:, 1:4])
    torch.testing.assert_close(fused[0, 0], (three[0, 0, 0] + three[0, 2, 0]) / 2)
    assert float(fused_score[0, 0]) == pytest.approx(0.75, abs=1e-6)
    # Neighbours that do not agree with each other (fast motion), or a still frame: no jump.
    fast = three.clone()
    fast[0, 2, 0, 0] += TEMPORAL_AGREE_PX + 1.0
    assert not one_frame_jumps(fast)[0, 0]
    still = xy[:, 2:3].repeat(1, 5, 1, 1)
    assert not one_frame_jumps(still).any() and not one_frame_jumps(xy[:, 2:3]).any()
    torch.testing.assert_close(temporal_prior(still, score)[0], xy[:, 2])


def test_temporal_prior_is_the_base_of_the_output_and_still_frames_change_nothing(thunder) -> None:
    """The model's prior from a window with the option: the fused position (aligned decodes);
    a window of one image repeated (a photo) gives the same prior as without the option."""
    kwargs = {**thunder.init_kwargs, "input_size": (64, 64)}
    plain = DiffPoseMoveNet(**kwargs).eval()
    fused = DiffPoseMoveNet(**{**kwargs, "temporal_prior": True}).eval()
    fused.load_state_dict(plain.state_dict())
    torch.manual_seed(5)
    features = torch.randn(1, 3, plain.layout.size)
    parts = plain.layout.unpack(features)
    key_xy = torch.rand(1, 17, 2) * 10 + 3
    step = torch.tensor([0.0, 1.0])  # moving down 1 heatmap px a frame
    parts["prior_xy"][:] = torch.stack([key_xy - step, key_xy + torch.tensor([0.8, 0.0]), key_xy + step], dim=1)
    parts["prior_score"][:] = 0.9
    features = plain.layout.pack({name: value.flatten(0, 1) for name, value in parts.items()}).view(1, 3, -1)
    with torch.inference_mode():
        base, with_window = plain.fuse(features), fused.fuse(features)
        still = features[:, 1:2].expand(-1, 3, -1)
        torch.testing.assert_close(fused.fuse(still)["prior"], plain.fuse(still)["prior"])
    got, _ = dark_decode(with_window["prior"].numpy().astype(np.float32), kernel=None)
    own, _ = dark_decode(base["prior"].numpy().astype(np.float32), kernel=None)
    np.testing.assert_allclose(got[0], (key_xy + torch.tensor([0.4, 0.0]))[0].numpy(), atol=0.02)
    np.testing.assert_allclose(own[0], (key_xy + torch.tensor([0.8, 0.0]))[0].numpy(), atol=0.02)
    torch.testing.assert_close(with_window["extra"], base["extra"])  # the decoder's inputs are unchanged


def test_a_wider_window_reaches_the_trained_parts_only_through_the_temporal_prior(thunder) -> None:
    """window 5 with learned_window 3: STRL and the decoder see the centred 3 frames exactly as a
    window-3 model with the same weights; the outer frames move the key frame's prior only."""
    kwargs = {**thunder.init_kwargs, "input_size": (64, 64), "temporal_prior": True}
    three = DiffPoseMoveNet(**{**kwargs, "window": 3}).eval()
    five = DiffPoseMoveNet(**{**kwargs, "window": 5, "learned_window": 3}).eval()
    five.load_state_dict(three.state_dict())
    torch.manual_seed(6)
    features = torch.randn(1, 5, three.layout.size)
    parts = three.layout.unpack(features)
    parts["prior_xy"][:] = torch.rand(1, 1, 17, 2) * 10 + 3  # one pose, still
    parts["prior_score"][:] = 0.8
    parts["prior_xy"][:, 0] += torch.tensor([1.6, 0.0])  # frame t-2 decoded 1.6 px right
    features = three.layout.pack({name: value.flatten(0, 1) for name, value in parts.items()}).view(1, 5, -1)
    with torch.inference_mode():
        wide, narrow = five.fuse(features), three.fuse(features[:, 1:4])
    torch.testing.assert_close(wide["cond"], narrow["cond"])
    torch.testing.assert_close(wide["extra"], narrow["extra"])
    got, _ = dark_decode(wide["prior"].numpy().astype(np.float32), kernel=None)
    want = parts["prior_xy"][0, 2] + torch.tensor([1.6 / 16, 0.0])  # weight 1/16 on frame t-2
    np.testing.assert_allclose(got[0], want.numpy(), atol=0.02)
    with pytest.raises(ValueError, match="learned_window"):
        DiffPoseMoveNet(**{**kwargs, "window": 5, "learned_window": 2})


def test_with_temporal_prior_keeps_the_trained_network_and_widens_its_window() -> None:
    trained = tiny_pose_model(window=3).eval()
    widened = with_temporal_prior(trained, 5)
    assert (widened.window, widened.learned_window, widened.temporal_prior) == (5, 3, True)
    assert not widened.training
    for name, value in trained.state_dict().items():
        torch.testing.assert_close(widened.state_dict()[name], value, rtol=0, atol=0)
    torch.manual_seed(7)
    features = trained.layout.pack({"tokens": torch.randn(1, *trained.layout.shapes[0][1]),
                                    **{name: torch.randn(1, *shape) for name, shape in trained.layout.shapes[1:4]},
                                    "prior_xy": torch.rand(1, 17, 2) * 12 + 2, "prior_score": torch.rand(1, 17)})
    with torch.inference_mode():  # a still image: the same condition and prior as the trained model's
        wide, narrow = widened.fuse(features[:, None].expand(-1, 5, -1)), trained.fuse(features[:, None].expand(-1, 3, -1))
    for key in ("cond", "extra", "prior", "prior_score"):
        torch.testing.assert_close(wide[key], narrow[key])
    with pytest.raises(ValueError, match="learned_window"):
        with_temporal_prior(trained, 1)


def test_mirror_view_lines_up_with_the_crop_on_real_people(thunder, shared_dir: Path) -> None:
    """MoveNet is nearly mirror-symmetric: on real crops its mirrored decode, mapped back, lands on
    the direct decode with no systematic x offset (an off-by-one mirror shifts it by 0.77 px)."""
    data = json.loads((shared_dir / "data/lspet/val.json").read_text())
    images = {i["id"]: i for i in data["images"]}
    crops = []
    for ann in data["annotations"][:8]:
        x, y, w, h = ann["bbox"]
        image = cv2.imread(str(shared_dir / "data/lspet/images" / images[ann["image_id"]]["file_name"]))
        crops.append(warp_crop(image, crop_transform(np.array([x, y, x + w, y + h]), SIDE, enlarge=1.15), SIDE))
    rgb = torch.from_numpy(np.ascontiguousarray(np.stack(crops)[..., ::-1])).permute(0, 3, 1, 2).float()
    mirror = DiffPoseMoveNet(thunder.init_kwargs["trunk"], window=3, input_size=SIDE, mirror_prior=True).eval()
    mirror.trunk.load_state_dict(thunder.trunk.state_dict())
    with torch.inference_mode():
        direct = thunder.layout.unpack(thunder.encode_frames(rgb))
        merged = mirror.layout.unpack(mirror.encode_frames(rgb))
    moved = merged["prior_xy"] - direct["prior_xy"]  # half the mirror view's disagreement where averaged
    averaged = moved.norm(dim=-1) < MIRROR_AGREE_PX / 2
    assert float(averaged.float().mean()) > 0.6
    assert abs(float(moved[..., 0][averaged].mean())) < 0.15
    assert float(moved.norm(dim=-1).median()) > 0.05  # the mirror view did contribute
    # Everything but the prior is the crop's own (up to float rounding: the trunk ran a larger batch).
    torch.testing.assert_close(merged["heat"], direct["heat"], rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(merged["tokens"], direct["tokens"], rtol=1e-3, atol=1e-3)


def test_prior_scores_make_the_untrained_model_exact_on_labels_at_its_own_keypoints(thunder) -> None:
    """With ``prior_scores`` a label where MoveNet put the joint asks for MoveNet's own heatmap
    (its score as peak): the untrained model (x̂0 = prior) has zero loss; with peaks of 1 it has not."""
    torch.manual_seed(2)
    small = DiffPoseMoveNet(thunder.init_kwargs["trunk"], window=3, input_size=(64, 64)).eval()
    small.trunk.load_state_dict(thunder.trunk.state_dict())
    images = (torch.rand(2, 1, 3, 64, 64) * 255).repeat(1, 3, 1, 1, 1)
    with torch.inference_mode():
        parts = small.layout.unpack(small.encode_frames(images[:, 1]))
    labels = render_gaussians(parts["prior_xy"], torch.ones(2, 17), small.heatmap_size, small.prior_sigma)
    visibility = torch.ones(2, 17)
    to_key = torch.eye(2, 3).expand(2, 3, 2, 3)
    schedule = NoiseSchedule(1000, "cosine")
    losses = [float(weighted_diffusion_loss(small, schedule, images, labels, visibility, torch.Generator().manual_seed(0),
                                            to_key=to_key, prior_scores=flag).detach()) for flag in (True, False)]
    assert losses[0] < 1e-8
    assert losses[1] > 1e-3


def test_the_prior_stays_with_the_person_in_the_box_when_a_second_one_is_more_visible(thunder, shared_dir) -> None:
    """pose2sim_MultiPerson_cam02, frame 52, track 2: the square crop of this person's box also
    holds another person, whose centre MoveNet's own decode takes (its hips land left of the box).
    The prior looks for the centre near the crop's middle (``CENTRE_BAND``): hips inside the box."""
    from posecli.video import open_source

    clip = shared_dir / "data/videos/pose2sim_MultiPerson_cam02"
    labels = json.loads(clip.with_suffix(".pseudo.json").read_text())
    frame_of = {i["id"]: i.get("frame_index", i["id"] - 1) for i in labels["images"]}
    x, y, w, h = next(a["bbox"] for a in labels["annotations"] if a["track_id"] == 2 and frame_of[a["image_id"]] == 52)
    box = np.array([x, y, x + w, y + h])
    with open_source(clip.with_suffix(".mp4")) as source:
        image = next(f.image for f in source if f.index == 52)
    matrix = crop_transform(box, SIDE, enlarge=1.15)
    crop = warp_crop(image, matrix, SIDE)
    rgb = torch.from_numpy(np.ascontiguousarray(crop[..., ::-1])).permute(2, 0, 1)[None].float()
    with torch.inference_mode():
        prior_xy = thunder.layout.unpack(thunder.encode_frames(rgb))["prior_xy"]
        own, _ = decode_single_pose(thunder.trunk(rgb))
    hips = heatmaps_to_frame(prior_xy.numpy(), 4, matrix[None])[0, [11, 12]]
    own_hips = heatmaps_to_frame(movenet_to_heatmap_xy(own).numpy(), 4, matrix[None])[0, [11, 12]]
    assert (own_hips[:, 0] < box[0]).all()  # MoveNet's own decode: the other person
    assert ((hips[:, 0] > box[0]) & (hips[:, 0] < box[2])).all(), hips
