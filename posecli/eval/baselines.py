"""Third-party single-person pose models, run top-down on person boxes, as evaluation baselines.

All follow the input/output specifications in ``shared/weights/README.md`` and implement the
``evaluate.TopDownPoseModel`` protocol on single frames (of a window only the key frame, index
``T // 2``, is used).

Runtime: the TFLite files run with Google's LiteRT interpreter (PyPI ``ai-edge-litert``, the
successor of ``tflite-runtime``; ``tflite-runtime`` is used if it is the one installed). OpenCV's DNN
module was tried first and cannot be used: OpenCV 5.0's TFLite importer rejects the int8 MoveNet
graph ("Unknown opcode for INT8 Eltwise layer 'SUB'"), and for BlazePose it exposes only one of the
five outputs (``Identity_1``) — asking for the landmark output ``Identity`` by name fails.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from posecli import weights as weights_lib
from posecli.crop import apply_affine, crop_transform, invert_affine, warp_crop
from posecli.errors import PoseCliError

# File name, full sha256 and public URL of each baseline's weights (shared/weights/README.md).
# Baseline name → its weights manifest entry (file, sha256, URL).
BASELINE_ENTRIES = {"movenet": "movenet.lightning-int8-v1", "thunder": "movenet.thunder-float-v1",
                    "lightning": "movenet.lightning-float-v1", "blazepose": "blazepose.full-v1"}
# MoveNet variants: baseline name → input side of the square crop.
MOVENET_SIDES = {"movenet": 192, "thunder": 256, "lightning": 192}
# BlazePose-33 landmark index of each COCO-17 keypoint.
BLAZEPOSE_TO_COCO: tuple[int, ...] = (0, 2, 5, 7, 8, 11, 12, 13, 14, 15, 16, 23, 24, 25, 26, 27, 28)


def _interpreter(path: Path, num_threads: int):
    """A LiteRT (TFLite) interpreter with its tensors allocated."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        try:
            from tflite_runtime.interpreter import Interpreter
        except ImportError:
            raise PoseCliError(
                "the baseline models need a TFLite runtime: pip install ai-edge-litert"
            ) from None
    if not Path(path).is_file():
        raise PoseCliError(f"baseline weights not found: {path}")
    interpreter = Interpreter(model_path=str(path), num_threads=num_threads)
    interpreter.allocate_tensors()
    return interpreter


def _key_frame(frames: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
    if len(frames) == 0:
        raise ValueError("predict needs at least one frame")
    return frames[len(frames) // 2]


def _square_crop(image: np.ndarray, box_xyxy: np.ndarray, side: int,
                 enlarge: float) -> tuple[np.ndarray, np.ndarray]:
    """Square crop around the box centre, side ``enlarge`` × the longer box side, to side×side RGB.

    Returns the RGB crop and the frame→crop affine. ``crop_transform`` with a square input grows
    the shorter side to the longer one, which is exactly this square; its pixel-centre convention
    maps the square's outer edges to the crop's outer pixel edges.
    """
    matrix = crop_transform(box_xyxy, (side, side), enlarge=enlarge)
    crop = warp_crop(image, matrix, (side, side))
    return cv2.cvtColor(crop, cv2.COLOR_BGR2RGB), matrix


def _edge_to_frame(uv_edges: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Crop coordinates measured from the crop's top-left *edge* → frame pixels (centre convention)."""
    return apply_affine(np.asarray(uv_edges, np.float64) - 0.5, invert_affine(matrix))


class MoveNetSinglePose:
    """Google's MoveNet SinglePose (Lightning int8, Lightning or Thunder float), top-down on a box.

    Crop: square, side 1.15 × the longer box side, same centre, warped to side×side RGB (192 for
    Lightning, 256 for Thunder) in the input tensor's type (uint8 for int8 Lightning, int32 for the
    float graphs); pixels outside the frame are black (as when the video pseudo-labels were made).
    Output ``(y, x, score)`` normalised to the crop, mapped back with the inverse affine. The graph
    decodes with its own centre prior, so the person in the middle of the crop is the one found.

    Args:
        path: the ``.tflite`` file.
        name: report key ("movenet", "lightning", "thunder").
        input_side: crop side (the graph's input).
    """

    window = 1
    enlarge = 1.15

    def __init__(self, path: str | Path, num_threads: int = 1, name: str = "movenet", input_side: int = 192) -> None:
        self.path = Path(path)
        self.name = name
        self.input_side = input_side
        self._interpreter = _interpreter(self.path, num_threads)
        detail = self._interpreter.get_input_details()[0]
        self._input, self._input_dtype = detail["index"], detail["dtype"]
        if tuple(detail["shape"][1:3]) != (input_side, input_side):
            raise PoseCliError(f"{self.path}: input {tuple(detail['shape'])} is not {input_side}×{input_side}")
        self._output = self._interpreter.get_output_details()[0]["index"]

    def predict(self, frames: Sequence[np.ndarray] | np.ndarray,
                boxes_xyxy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Keypoints of each box in the key frame.

        Args:
            frames: T images H×W×3 uint8 BGR; only ``frames[T // 2]`` is used.
            boxes_xyxy: N×4 person boxes in frame pixels.

        Returns:
            ``keypoints_xy`` N×17×2 float32 frame pixels, ``scores`` N×17 float32 in [0, 1].
        """
        image = _key_frame(frames)
        boxes = np.asarray(boxes_xyxy, np.float64).reshape(-1, 4)
        keypoints = np.zeros((len(boxes), 17, 2), np.float32)
        scores = np.zeros((len(boxes), 17), np.float32)
        for i, box in enumerate(boxes):
            crop, matrix = _square_crop(image, box, self.input_side, self.enlarge)
            self._interpreter.set_tensor(self._input, crop[None].astype(self._input_dtype))
            self._interpreter.invoke()
            out = self._interpreter.get_tensor(self._output).reshape(17, 3)
            # Normalised (y, x): 0 and 1 are the crop's outer edges.
            uv = out[:, [1, 0]] * self.input_side
            keypoints[i] = _edge_to_frame(uv, matrix)
            scores[i] = out[:, 2]
        return keypoints, scores


class BlazePoseFull:
    """BlazePose GHUM full landmark model (MediaPipe), top-down on a box, 33 → COCO-17 landmarks.

    Crop: square, side ``enlarge`` × the longer box side, same centre, 256×256 RGB float in [0, 1];
    pixels outside the frame are black. MediaPipe feeds this model a square ROI of its own (1.25× a
    body circle from its detector), which is looser than a tight person box. ``enlarge`` was chosen
    on training splits only, on GT boxes: COCO-mini train OKS AP 0.140 / 0.136 / 0.169 / 0.162 and
    LSP-Extended train (first 400) PCK@0.2 0.565 / 0.593 / 0.612 / 0.629 for 1.15 / 1.25 / 1.35 / 1.5,
    so 1.35. Scores are ``sigmoid(visibility logit)``.
    """

    name = "blazepose"
    window = 1
    input_side = 256

    def __init__(self, path: str | Path, num_threads: int = 1, enlarge: float = 1.35) -> None:
        self.path = Path(path)
        self.enlarge = enlarge
        self._interpreter = _interpreter(self.path, num_threads)
        self._input = self._interpreter.get_input_details()[0]["index"]
        outputs = {d["name"]: d["index"] for d in self._interpreter.get_output_details()}
        self._landmarks = outputs["Identity"]

    def predict(self, frames: Sequence[np.ndarray] | np.ndarray,
                boxes_xyxy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Keypoints of each box in the key frame; same contract as :meth:`MoveNetSinglePose.predict`."""
        image = _key_frame(frames)
        boxes = np.asarray(boxes_xyxy, np.float64).reshape(-1, 4)
        keypoints = np.zeros((len(boxes), 17, 2), np.float32)
        scores = np.zeros((len(boxes), 17), np.float32)
        index = list(BLAZEPOSE_TO_COCO)
        for i, box in enumerate(boxes):
            crop, matrix = _square_crop(image, box, self.input_side, self.enlarge)
            self._interpreter.set_tensor(self._input, (crop.astype(np.float32) / 255.0)[None])
            self._interpreter.invoke()
            # 39 × (x, y, z, visibility logit, presence logit); x, y in input pixels 0..256,
            # measured from the crop's top-left edge.
            landmarks = self._interpreter.get_tensor(self._landmarks).reshape(39, 5)[index]
            keypoints[i] = _edge_to_frame(landmarks[:, :2], matrix)
            scores[i] = 0.5 * (1.0 + np.tanh(0.5 * landmarks[:, 3]))  # sigmoid, no exp overflow
        return keypoints, scores


def find_baseline_file(name: str, search_dirs: Sequence[str | Path] = (), allow_download: bool = True) -> Path:
    """Locate (or download) and verify a baseline's weights file.

    Looks in ``search_dirs``, then where :func:`posecli.weights.resolve` looks
    (``$POSECLI_HOME/weights``, the repository's ``weights/``, the user cache), then downloads it.
    The full sha256 is always checked.

    Raises:
        PoseCliError: unknown name, file missing (with where to get it) or checksum mismatch.
    """
    if name not in BASELINE_ENTRIES:
        raise PoseCliError(f"unknown baseline {name!r}; choose from {', '.join(BASELINE_ENTRIES)}")
    entry = weights_lib.find_entry(BASELINE_ENTRIES[name])
    for folder in search_dirs:
        path = Path(folder) / entry.file
        if path.is_file():
            digest = weights_lib.sha256_file(path)
            if digest != entry.sha256:
                raise PoseCliError(f"{path}: sha256 {digest} does not match the expected {entry.sha256}")
            return path
    return weights_lib.resolve(entry.name, allow_download=allow_download)


def load_baseline(name: str, search_dirs: Sequence[str | Path] = (), num_threads: int = 1):
    """A baseline by name: "movenet" (Lightning int8), "lightning" / "thunder" (float), "blazepose"."""
    path = find_baseline_file(name, search_dirs)
    if name in MOVENET_SIDES:
        return MoveNetSinglePose(path, num_threads=num_threads, name=name, input_side=MOVENET_SIDES[name])
    return BlazePoseFull(path, num_threads=num_threads)
