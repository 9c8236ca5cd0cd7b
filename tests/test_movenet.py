"""The PyTorch MoveNet port against Google's float TFLite graphs, on real crops."""

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from posecli.crop import crop_transform, warp_crop
from posecli.models.movenet import (
    MoveNet,
    center_cells,
    decode_single_pose,
    load_movenet,
    movenet_spec,
    read_tfjs_weights,
)

# LSP-Extended val persons (first annotations) and COCO-mini val persons of crowded images.
LSP_PERSONS = 4
COCO_IMAGES = ("000000350679.jpg", "000000160012.jpg")


def _crops(shared_dir: Path, side: tuple[int, int]) -> list[np.ndarray]:
    """RGB uint8 crops (MoveNet framing: square 1.15 × the longer box side) of real persons."""
    out = []
    for folder, name in (("lspet", "val.json"), ("coco-mini", "val.json")):
        data = json.loads((shared_dir / "data" / folder / name).read_text())
        images = {i["id"]: i for i in data["images"]}
        anns = [a for a in data["annotations"] if a.get("num_keypoints", 0) > 0]
        if folder == "lspet":
            anns = anns[:LSP_PERSONS]
        else:
            anns = [a for a in anns if images[a["image_id"]]["file_name"] in COCO_IMAGES][:4]
        image_dir = shared_dir / "data" / folder / ("images" if folder == "lspet" else "val2017")
        for ann in anns:
            image = cv2.imread(str(image_dir / images[ann["image_id"]]["file_name"]))
            x, y, w, h = ann["bbox"]
            matrix = crop_transform(np.array([x, y, x + w, y + h]), side, enlarge=1.15)
            out.append(np.ascontiguousarray(warp_crop(image, matrix, side)[..., ::-1]))
    return out


def _tflite(path: Path):
    litert = pytest.importorskip("ai_edge_litert.interpreter", reason="ai-edge-litert is not installed")
    interpreter = litert.Interpreter(model_path=str(path), num_threads=1)
    interpreter.allocate_tensors()
    return interpreter


@pytest.mark.parametrize("name,side", [("thunder", 256), ("lightning", 192)])
def test_port_matches_the_tflite_graph(shared_dir: Path, name: str, side: int) -> None:
    weights = shared_dir / "weights"
    model = load_movenet(weights / f"movenet-{name}.json")
    interpreter = _tflite(weights / f"movenet_{name}_float32.tflite")
    inp = interpreter.get_input_details()[0]
    out = interpreter.get_output_details()[0]
    crops = _crops(shared_dir, (side, side))
    assert len(crops) >= 6
    for crop in crops:
        interpreter.set_tensor(inp["index"], crop[None].astype(inp["dtype"]))
        interpreter.invoke()
        ref = interpreter.get_tensor(out["index"]).reshape(17, 3)
        with torch.inference_mode():
            yx, scores = decode_single_pose(model(torch.from_numpy(crop).permute(2, 0, 1)[None].float()))
        grid = side // 4
        # The graph's output: (y, x) normalised to the input, score = sigmoid(heatmap) there.
        np.testing.assert_allclose(yx[0].numpy() / grid, ref[:, :2], atol=0.5 / side)  # 0.5 px
        np.testing.assert_allclose(scores[0].numpy(), ref[:, 2], atol=1e-3)


def test_heatmaps_match_the_tflite_graph_intermediate(shared_dir: Path) -> None:
    """The keypoint heatmap itself (not only the decode): sigmoid maps agree within 1e-3."""
    weights = shared_dir / "weights"
    model = load_movenet(weights / "movenet-thunder.json")
    litert = pytest.importorskip("ai_edge_litert.interpreter", reason="ai-edge-litert is not installed")
    interpreter = litert.Interpreter(model_path=str(weights / "movenet_thunder_float32.tflite"),
                                     experimental_preserve_all_tensors=True, num_threads=1)
    interpreter.allocate_tensors()
    heat = [d for d in interpreter.get_tensor_details() if d["name"].endswith("Sigmoid") or d["name"] == "Sigmoid"]
    heat = [d for d in heat if tuple(d["shape"]) == (1, 64, 64, 17)]
    assert heat, "the TFLite graph has no [1, 64, 64, 17] sigmoid tensor"
    crop = _crops(shared_dir, (256, 256))[0]
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], crop[None].astype(np.int32))
    interpreter.invoke()
    ref = interpreter.get_tensor(heat[0]["index"])[0]  # [64, 64, 17]
    with torch.inference_mode():
        ours = torch.sigmoid(model(torch.from_numpy(crop).permute(2, 0, 1)[None].float()).heatmap)[0]
    np.testing.assert_allclose(ours.permute(1, 2, 0).numpy(), ref, atol=1e-3)


def test_reads_float16_weights_and_int32_constants(shared_dir: Path) -> None:
    weights = read_tfjs_weights(shared_dir / "weights/movenet-thunder.json")
    stem = weights["model/Conv1/Conv2D_weights"]
    assert stem.dtype == np.float32 and stem.shape == (3, 3, 3, 56)
    # float16-stored values widen exactly: every value is representable in float16.
    assert np.array_equal(stem.astype(np.float16).astype(np.float32), stem)
    assert weights["Reshape_11/shape"].dtype == np.int32
    assert weights["Reshape_11/shape"].tolist() == [17, 17, -1]
    spec = movenet_spec(weights)
    assert spec["stem"] == 56 and spec["top"] == 1280 and spec["blocks"][-1] == [1680, 560]


def test_rebuilds_from_its_spec_and_runs_on_3_by_4_crops(shared_dir: Path) -> None:
    weights = read_tfjs_weights(shared_dir / "weights/movenet-lightning.json")
    model = MoveNet(**movenet_spec(weights)).load_tfjs(weights).eval()
    with torch.inference_mode():
        out = model(torch.full((2, 3, 256, 192), 127.0))
    assert out.heatmap.shape == (2, 17, 64, 48) and out.features[0].shape == (2, 24, 64, 48)
    assert [f.shape[-2:] for f in out.features] == [(64, 48), (32, 24), (16, 12), (8, 6)]
    with pytest.raises(ValueError, match="multiples of 32"):
        model(torch.zeros(1, 3, 250, 192))


def test_centre_prior_prefers_the_middle_on_a_non_square_grid() -> None:
    """Two equal centre peaks: the one nearer the grid centre (h/2, w/2) wins, on 64×48."""
    logits = torch.full((1, 1, 64, 48), -10.0)
    logits[0, 0, 30, 24] = 5.0  # 2 cells from the centre (32, 24)
    logits[0, 0, 5, 40] = 5.0
    assert center_cells(logits).item() == 30 * 48 + 24
    logits[0, 0, 5, 40] = 9.0  # much more confident far away: the prior still trades off
    far = center_cells(logits).item()
    near_score = torch.sigmoid(torch.tensor(5.0)) / (2.0 + 1.8)
    far_score = torch.sigmoid(torch.tensor(9.0)) / (((27 ** 2 + 16 ** 2) ** 0.5) + 1.8)
    assert far == (30 * 48 + 24 if near_score > far_score else 5 * 48 + 40)


def test_a_centre_band_keeps_the_centre_near_the_middle_on_a_non_square_grid() -> None:
    """With ``band`` 0.2 on 64×48 cells the centre may be at most 9.6 cells off the middle in x and
    12.8 in y: a confident centre 11 cells to the side, which wins without the band, is passed over
    for a faint one in the middle; one 12 cells below the middle (inside in y, not in x) may win."""
    logits = torch.full((1, 1, 64, 48), -10.0)
    logits[0, 0, 32, 25] = -2.0  # faint, 1 cell from the middle (32, 24)
    logits[0, 0, 32, 35] = 9.0  # 11 cells to the right
    assert center_cells(logits).item() == 32 * 48 + 35
    assert center_cells(logits, band=0.2).item() == 32 * 48 + 25
    logits[0, 0, 32, 33] = 9.0  # 9 cells to the right: inside the band
    assert center_cells(logits, band=0.2).item() == 32 * 48 + 33
    logits[0, 0, 32, 33] = -10.0
    logits[0, 0, 44, 24] = 9.0  # 12 cells below
    assert center_cells(logits, band=0.2).item() == 44 * 48 + 24
