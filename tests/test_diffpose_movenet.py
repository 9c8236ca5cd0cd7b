"""DiffPose on MoveNet's layers: priors, alignment, the untrained model's identity with MoveNet."""

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from posecli.crop import crop_to_crop, crop_transform, warp_crop
from posecli.decode import dark_decode, heatmaps_to_frame
from posecli.models.diffpose_movenet import DiffPoseMoveNet, movenet_to_heatmap_xy, render_gaussians
from posecli.models.diffusion import DDIMSampler, NoiseSchedule
from posecli.models.movenet import decode_single_pose, movenet_spec, read_tfjs_weights
from posecli.models.predictor import HeatmapPredictor
from posecli.models.preprocess import RAW_MEAN_RGB, RAW_STD_RGB
from posecli.train.loss import _encode_distinct

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
    """Frame points seen in a neighbour's own crop (rotated, scaled, shifted box) are rendered at
    the key crop's pixels of the same frame points."""
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
    aligned = thunder.aligned_priors(prior_xy, scores, to_key)
    unaligned = thunder.aligned_priors(prior_xy, scores, None)
    want = heatmap_xy(key_matrix)
    inside = ((want > 2) & (want < 61)).all(axis=1)
    assert inside.sum() >= 8
    got, _ = dark_decode(aligned[0, 0].numpy()[None].astype(np.float32), kernel=None)
    np.testing.assert_allclose(got[0][inside], want[inside], atol=0.02)
    raw, _ = dark_decode(unaligned[0, 0].numpy()[None].astype(np.float32), kernel=None)
    assert np.abs(raw[0][inside] - want[inside]).max() > 2.0


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


def test_onnxruntime_trunk_agrees_with_pytorch(thunder, person) -> None:
    from posecli.models.onnx_trunk import OnnxTrunk

    image, box = person
    crops = np.stack([warp_crop(image, crop_transform(box * s, SIDE, enlarge=1.15), SIDE)[..., ::-1]
                      for s in (1.0, 0.9)])
    rgb = torch.from_numpy(np.ascontiguousarray(crops)).permute(0, 3, 1, 2).float()
    runner = OnnxTrunk(thunder.trunk, SIDE, threads=1)
    with torch.inference_mode():
        ours = thunder.encode_frames(rgb, runner)
        reference = thunder.encode_frames(rgb)
    torch.testing.assert_close(ours, reference, rtol=1e-3, atol=1e-3)
    parts = thunder.layout.unpack(ours)
    assert parts["prior_xy"].shape == (2, 17, 2) and float(parts["prior_score"].max()) > 0.5
