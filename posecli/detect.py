"""Person detectors: YOLOX-nano and RTMDet-nano through onnxruntime, and boxes read from a file.

Every detector is called as ``detector(frame) -> Detections`` with a :class:`~posecli.types.Frame`
(the pipeline's way) or, for the image detectors, a bare H×W×3 uint8 BGR image.
Boxes come back in frame pixels (``types.py`` coordinates), clipped to the pixel centres of the
frame (``0 … W-1``, ``0 … H-1``), sorted by score, highest first.

The network input specifications are those of ``../shared/weights/README.md``: both models take
BGR, letterboxed with the resized image in the top-left corner and padding value 114: to a
416×416 square for YOLOX-nano (its graph's fixed size), to the frame's own aspect for RTMDet-nano
(whose graph takes any size).
No half-pixel shift is applied when mapping boxes back (a box is only accurate to a few pixels,
and the pseudo-labels in ``../shared/data`` were made the same way).

Each detector owns its onnxruntime session; its thread count is a constructor option.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from posecli.errors import PoseCliError
from posecli.types import Detections, Frame

PAD_VALUE = 114


class PersonDetector(Protocol):
    """Anything that finds person boxes in a frame."""

    def __call__(self, frame: Frame | np.ndarray) -> Detections:
        """Person boxes of one frame (a ``Frame``, or an H×W×3 uint8 BGR image)."""
        ...


def _image_of(frame: Frame | np.ndarray) -> np.ndarray:
    image = frame.image if isinstance(frame, Frame) else frame
    if not (isinstance(image, np.ndarray) and image.ndim == 3 and image.shape[2] == 3
            and image.dtype == np.uint8):
        raise ValueError("detector input must be a Frame or an H×W×3 uint8 BGR image")
    return image


def letterbox(image: np.ndarray, size: int, square: bool = True) -> tuple[np.ndarray, float]:
    """Resize ``image`` to fit a ``size``×``size`` square, top-left aligned, padded with 114.

    Args:
        image: H×W×3 uint8.
        size: side of the square network input.
        square: False pads only up to the next multiple of 32 on the short side (for networks
            with free input sizes): a 16:9 frame at 416 becomes 416×256, 62 % of the square.

    Returns:
        (padded H'×W'×3 uint8 image, resize ratio r); input pixel = frame pixel × r.
    """
    h, w = image.shape[:2]
    r = min(size / h, size / w)
    # int() rather than round(): the YOLOX reference preprocessing (and our pseudo-labels) do so.
    new_w, new_h = max(int(w * r), 1), max(int(h * r), 1)
    out_h, out_w = (size, size) if square else (-(-new_h // 32) * 32, -(-new_w // 32) * 32)
    padded = np.full((out_h, out_w, 3), PAD_VALUE, np.uint8)
    padded[:new_h, :new_w] = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    return padded, r


def _to_detections(boxes_xyxy: np.ndarray, scores: np.ndarray, image_hw: tuple[int, int],
                   min_box_height: float) -> Detections:
    """Clip boxes (frame pixels, N×4) to the frame, drop empty or short ones, sort by score."""
    h, w = image_hw
    boxes = np.asarray(boxes_xyxy, np.float32).reshape(-1, 4).copy()
    scores = np.asarray(scores, np.float32).reshape(-1)
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, w - 1)
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, h - 1)
    heights = boxes[:, 3] - boxes[:, 1]
    keep = (boxes[:, 2] > boxes[:, 0]) & (heights > 0) & (heights >= min_box_height)
    boxes, scores = boxes[keep], scores[keep]
    order = np.argsort(-scores, kind="stable")
    return Detections(boxes[order], scores[order])


def _nms(boxes_xyxy: np.ndarray, scores: np.ndarray, iou: float) -> tuple[np.ndarray, np.ndarray]:
    """Non-maximum suppression: keep a box unless a higher-scoring kept box overlaps it > ``iou``."""
    if len(boxes_xyxy) == 0:
        return boxes_xyxy, scores
    xywh = np.concatenate([boxes_xyxy[:, :2], boxes_xyxy[:, 2:] - boxes_xyxy[:, :2]], axis=1)
    index = cv2.dnn.NMSBoxes(xywh.astype(np.float64), scores.astype(np.float64), 0.0, iou)
    index = np.asarray(index, np.int64).reshape(-1)
    return boxes_xyxy[index], scores[index]


class OnnxNetwork:
    """An ONNX graph run by onnxruntime on the CPU: ``network(blob) -> [outputs in graph order]``.

    onnxruntime rather than OpenCV DNN: on the 2-core development machine it runs YOLOX-nano at
    416×416 in 23 ms against OpenCV's 42 ms (one thread; 16 vs 26 ms on two), outputs equal within
    1.3e-4, and it runs RTMDet's in-graph NMS without OpenCV 5's fixed output sizing.
    """

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        """
        Args:
            path: the ``.onnx`` file.
            threads: intra-op threads (None: onnxruntime's choice, one per core).
        """
        import onnxruntime

        p = Path(path)
        if not p.is_file():
            raise PoseCliError(f"detector weights {p} not found")
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3
        options.inter_op_num_threads = 1
        if threads:
            options.intra_op_num_threads = threads
        # Idle worker threads sleep rather than spin: they share the cores with the pose model.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = onnxruntime.InferenceSession(str(p), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types for unreadable graphs
            reason = str(exc).strip().splitlines()[-1][:160]
            raise PoseCliError(f"{p.name}: cannot be loaded as an ONNX model ({reason})") from exc
        graph_input = self.session.get_inputs()[0]
        self.input_name = graph_input.name
        height, width = graph_input.shape[2:4]
        # The square input side when the graph fixes it, else None.
        self.fixed_side = height if isinstance(height, int) and height == width else None

    def __call__(self, blob: np.ndarray) -> list[np.ndarray]:
        return self.session.run(None, {self.input_name: blob})


class _LetterboxDetector:
    """A detector on a letterboxed square input: subclasses turn the network input into boxes."""

    DEFAULT_INPUT_SIZE = 416
    # Networks that take any input size get the frame's aspect (see ``letterbox``), not a square.
    SQUARE_INPUT = True

    def __init__(self, onnx_path: str | Path, score_threshold: float = 0.4, nms_iou: float = 0.45,
                 input_size: int | None = None, min_box_height: float = 0.0,
                 threads: int | None = None) -> None:
        """
        Args:
            onnx_path: the detector's ``.onnx`` file.
            score_threshold: minimum person score (0.4 made our pseudo-labels).
            nms_iou: IoU above which the lower-scoring of two boxes is suppressed.
            input_size: side of the square network input, a multiple of 32 (None: the graph's
                own, else ``DEFAULT_INPUT_SIZE``).
            min_box_height: boxes shorter than this (frame pixels) are dropped (32 made the
                pseudo-labels; people that small give poor poses).
            threads: onnxruntime intra-op threads (None: one per core).
        """
        self.network = OnnxNetwork(onnx_path, threads)
        fixed = self.network.fixed_side
        size = input_size or fixed or self.DEFAULT_INPUT_SIZE
        if size <= 0 or size % 32:
            raise PoseCliError(f"detector input size must be a positive multiple of 32, got {size}")
        if fixed and size != fixed:
            raise PoseCliError(f"{Path(onnx_path).name} takes {fixed}×{fixed} inputs, not {size}")
        self.score_threshold = score_threshold
        self.nms_iou = nms_iou
        self.input_size = size
        self.square_input = self.SQUARE_INPUT or bool(fixed)
        self.min_box_height = min_box_height

    def _boxes(self, padded: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Person boxes (N×4 xyxy, network input pixels) and scores above the threshold."""
        raise NotImplementedError

    def __call__(self, frame: Frame | np.ndarray) -> Detections:
        image = _image_of(frame)
        padded, r = letterbox(image, self.input_size, square=self.square_input)
        boxes, scores = self._boxes(padded)
        boxes, scores = _nms(boxes / r, scores, self.nms_iou)
        return _to_detections(boxes, scores, image.shape[:2], self.min_box_height)


class YoloxDetector(_LetterboxDetector):
    """YOLOX-nano (80 COCO classes, person = class 0); the graph's input is 416×416.

    The exported graph has no box decoding: each row of its ``[1, A, 85]`` output is
    ``(tx, ty, tw, th, objectness, 80 class scores)`` for one anchor point of the stride-8, 16
    and 32 grids (in that order, row-major), scores already sigmoid-activated. Box centre
    ``(t + grid) * stride``, size ``exp(t) * stride``; score = objectness × person score.
    """

    STRIDES = (8, 16, 32)

    def __init__(self, onnx_path: str | Path, **options: float | int | None) -> None:
        super().__init__(onnx_path, **options)
        grids, strides = [], []
        for stride in self.STRIDES:
            n = self.input_size // stride
            ys, xs = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
            grids.append(np.stack([xs.ravel(), ys.ravel()], axis=1))
            strides.append(np.full((n * n, 1), stride))
        self._grid = np.concatenate(grids).astype(np.float32)  # A×2 (x, y) cell indices
        self._stride = np.concatenate(strides).astype(np.float32)  # A×1

    def _boxes(self, padded: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # Raw BGR 0..255 in NCHW; the model has no mean/std normalisation.
        out = self.network(cv2.dnn.blobFromImage(padded))[0][0]  # A×85
        scores = out[:, 4] * out[:, 5]
        keep = scores >= self.score_threshold
        out, scores = out[keep], scores[keep]
        grid, stride = self._grid[keep], self._stride[keep]
        centre = (out[:, :2] + grid) * stride
        size = np.exp(out[:, 2:4]) * stride
        return np.concatenate([centre - size / 2, centre + size / 2], axis=1), scores


class RtmdetDetector(_LetterboxDetector):
    """RTMDet-nano person detector (MMDeploy end-to-end export, NMS inside the graph).

    Input ``[1, 3, H, W]`` BGR normalised with the mean/std below (trained at 320×320); outputs
    ``dets`` ``[1, N, 5]`` ``(x1, y1, x2, y2, score)`` in input pixels and ``labels`` ``[1, N]``
    (0 = person). Our NMS runs again after the graph's own (IoU 0.6): it removes the upper-body
    boxes the graph keeps beside a full-body box.

    The graph takes any input size, so the frame keeps its aspect (long side 416, short side
    padded to a multiple of 32) instead of a padded square: measured in one run on every second
    frame of sports2d_demo.mp4 (1768×994), the man on the roof is found in 47 of 115 frames
    against 31 with the 320×320 square (YOLOX-nano: 21), at 0.83× YOLOX-nano's time (the square:
    0.87×).
    """

    DEFAULT_INPUT_SIZE = 416
    SQUARE_INPUT = False
    MEAN = np.array([103.53, 116.28, 123.675], np.float32)  # BGR
    STD = np.array([57.375, 57.12, 58.395], np.float32)

    def _boxes(self, padded: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        blob = ((padded.astype(np.float32) - self.MEAN) / self.STD).transpose(2, 0, 1)[None]
        dets, labels = self.network(np.ascontiguousarray(blob))
        dets, labels = dets[0], labels[0]
        keep = (labels == 0) & (dets[:, 4] >= self.score_threshold)
        return dets[keep, :4], dets[keep, 4]


class BoxesFileDetector:
    """Person boxes given by the user (``--boxes FILE``) instead of a detector.

    The file is JSON in one of two COCO-style layouts:

    * a list of detections (the COCO results format)::

        [{"frame": 0, "bbox": [x, y, w, h], "score": 0.9, "category_id": 1}, ...]

    * a COCO dataset object, e.g. the ``*.pseudo.json`` files: ``{"images": [...],
      "annotations": [{"image_id": 1, "bbox": [x, y, w, h], ...}, ...]}``.

    Frames are matched by index: ``"frame"`` is the 0-based frame index (decode order, or the
    position in the naturally sorted image folder); without it, ``"image_id"`` is 1-based as in
    COCO video files (frame = image_id − 1), unless the dataset's ``images`` give each id a
    ``"frame_index"``, which is then used. ``bbox`` is ``[x, y, w, h]`` in frame pixels with
    ``w, h > 0``; ``score`` defaults to 1; entries whose ``category_id`` is not 1 (person) are
    ignored. Frames without entries have no persons. Boxes are clipped to the frame when used.

    Raises:
        PoseCliError: the file is missing, not JSON, or an entry is malformed (the message names it).
    """

    def __init__(self, path: str | Path, score_threshold: float = 0.0,
                 min_box_height: float = 0.0) -> None:
        p = Path(path)
        if not p.is_file():
            raise PoseCliError(f"boxes file {p} not found")
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise PoseCliError(f"boxes file {p.name} is not valid JSON ({exc})") from exc
        self.path = p
        self.score_threshold = score_threshold
        self.min_box_height = min_box_height
        self._boxes = _parse_boxes(data, p.name)

    @property
    def frames(self) -> list[int]:
        """Frame indices that have at least one box, ascending."""
        return sorted(self._boxes)

    def __call__(self, frame: Frame | np.ndarray) -> Detections:
        if not isinstance(frame, Frame):
            raise TypeError("BoxesFileDetector needs the Frame (its index), not a bare image")
        entry = self._boxes.get(frame.index)
        if entry is None:
            return Detections.empty()
        boxes, scores = entry
        keep = scores >= self.score_threshold
        return _to_detections(boxes[keep], scores[keep], frame.image.shape[:2], self.min_box_height)


def _parse_boxes(data: object, name: str) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Validate a boxes file's JSON; returns frame index → (N×4 xyxy float32, N float32)."""
    image_frames: dict[int, int] = {}
    if isinstance(data, dict):
        if not isinstance(data.get("annotations"), list):
            raise PoseCliError(f"boxes file {name}: expected a list of detections or a COCO "
                               "object with an 'annotations' list")
        for image in data.get("images") or []:
            if isinstance(image, dict) and _is_int(image.get("id")) and _is_int(image.get("frame_index")):
                image_frames[image["id"]] = image["frame_index"]
        records = data["annotations"]
    elif isinstance(data, list):
        records = data
    else:
        raise PoseCliError(f"boxes file {name}: expected a list of detections, got {type(data).__name__}")

    per_frame: dict[int, list[list[float]]] = {}
    for i, record in enumerate(records):
        where = f"boxes file {name}, entry {i}"
        if not isinstance(record, dict):
            raise PoseCliError(f"{where}: expected an object, got {type(record).__name__}")
        category = record.get("category_id", 1)
        if not _is_int(category):
            raise PoseCliError(f"{where}: category_id must be an integer")
        if category != 1:
            continue
        if "frame" in record:
            frame = record["frame"]
            if not _is_int(frame) or frame < 0:
                raise PoseCliError(f"{where}: 'frame' must be a 0-based frame index, got {frame!r}")
        elif "image_id" in record:
            image_id = record["image_id"]
            if not _is_int(image_id):
                raise PoseCliError(f"{where}: 'image_id' must be an integer, got {image_id!r}")
            frame = image_frames.get(image_id, image_id - 1)
            if frame < 0:
                raise PoseCliError(f"{where}: 'image_id' is 1-based (frame + 1), got {image_id}")
        else:
            raise PoseCliError(f"{where}: needs 'frame' (0-based) or 'image_id' (1-based)")
        bbox = record.get("bbox")
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(_is_number(v) for v in bbox)):
            raise PoseCliError(f"{where}: 'bbox' must be [x, y, w, h] numbers, got {bbox!r}")
        x, y, w, h = (float(v) for v in bbox)
        if w <= 0 or h <= 0:
            raise PoseCliError(f"{where}: bbox width and height must be positive, got {bbox!r}")
        score = record.get("score", 1.0)
        if not _is_number(score):
            raise PoseCliError(f"{where}: 'score' must be a number, got {score!r}")
        per_frame.setdefault(frame, []).append([x, y, x + w, y + h, float(score)])
    return {frame: (np.array(rows, np.float32)[:, :4], np.array(rows, np.float32)[:, 4])
            for frame, rows in per_frame.items()}


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


# Detector name (as on the command line and in the weights manifest's ``arch``) → factory taking
# the weights path and keyword options.
DETECTORS: dict[str, Callable[..., PersonDetector]] = {
    "yolox-nano": YoloxDetector,
    "rtmdet-nano": RtmdetDetector,
}
