"""Person detectors: YOLOX-nano and RTMDet-nano through onnxruntime (for photos also in quarter
turns), and boxes read from a file.

Every detector is called as ``detector(frame) -> Detections`` with a :class:`~posecli.types.Frame`
(the pipeline's way) or, for the image detectors, a bare H×W×3 uint8 BGR image.
Boxes come back in frame pixels (``types.py`` coordinates), clipped to the pixel centres of the
frame (``0 … W-1``, ``0 … H-1``), sorted by score, highest first.

The network input specifications are those of ``../shared/weights/README.md``: both models take
BGR, letterboxed with the resized image in the top-left corner and padding value 114. Both see
the frame at its own aspect, the short side padded to a multiple of 32 (long side 512 for
YOLOX-nano, 416 for RTMDet-nano), not a padded square: YOLOX-nano's graph declares 416×416, but
its layers take any size, so the declaration is freed when the graph is loaded
(:func:`free_spatial_input`).
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
from posecli.track import box_iou
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


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    """A protobuf varint at ``pos``: (value, position after it)."""
    value = shift = 0
    while True:
        byte = data[pos]
        value |= (byte & 0x7F) << shift
        pos += 1
        if byte < 0x80:
            return value, pos
        shift += 7


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        out.append((value & 0x7F) | (0x80 if value > 0x7F else 0))
        value >>= 7
        if not value:
            return bytes(out)


def _fields(data: bytes) -> list[tuple[int, int, bytes]]:
    """The top-level fields of a protobuf message: (number, wire type, raw payload) in order."""
    fields, pos = [], 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            end = _varint(data, pos)[1]
        elif wire == 1:
            end = pos + 8
        elif wire == 2:
            size, pos = _varint(data, pos)
            end = pos + size
        elif wire == 5:
            end = pos + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        fields.append((number, wire, data[pos:end]))
        pos = end
    return fields


def _message(fields: list[tuple[int, int, bytes]]) -> bytes:
    out = bytearray()
    for number, wire, payload in fields:
        out += _encode_varint(number << 3 | wire)
        if wire == 2:
            out += _encode_varint(len(payload))
        out += payload
    return bytes(out)


def _replace(data: bytes, path: tuple[int, ...], edit: Callable[[bytes], bytes]) -> bytes:
    """``data`` with ``edit`` applied to the first message at the field-number ``path``."""
    fields = _fields(data)
    for i, (number, wire, payload) in enumerate(fields):
        if number == path[0] and wire == 2:
            inner = edit(payload) if len(path) == 1 else _replace(payload, path[1:], edit)
            fields[i] = (number, wire, inner)
            return _message(fields)
    raise ValueError(f"no field {path[0]} in the message")


def free_spatial_input(model: bytes) -> bytes:
    """An ONNX model with the height and width of its first input (and its outputs' sizes) freed.

    For graphs whose layers take any input size but whose input declares a fixed one, as
    YOLOX-nano's ``[1, 3, 416, 416]`` (its convolutions, scale-factor resizes and ``[1, 85, -1]``
    reshapes work at any size with sides a multiple of 32). The file's bytes are edited in
    memory at the protobuf level: ``graph.input[0]``'s dims 2 and 3 become the symbols
    ``height`` and ``width``, every output dim but the batch becomes a symbol, and the stored
    intermediate shapes (``graph.value_info``) are dropped; onnxruntime infers them again.

    Args:
        model: the serialised ``ModelProto``.

    Returns:
        The serialised model with the free input size; weights and nodes unchanged.
    """
    graph_field, input_field, output_field, value_info_field = 7, 11, 12, 13
    shape_path = (2, 1, 2)  # ValueInfoProto.type → TypeProto.tensor_type → Tensor.shape

    def free_dims(names: dict[int, str]) -> Callable[[bytes], bytes]:
        def edit(shape: bytes) -> bytes:
            dims = _fields(shape)
            dim_index = 0
            for i, (number, wire, payload) in enumerate(dims):
                if number == 1:  # TensorShapeProto.dim
                    if dim_index in names:  # Dimension.dim_param (field 2) instead of dim_value
                        symbol = names[dim_index].encode()
                        dims[i] = (1, 2, _message([(2, 2, symbol)]))
                    dim_index += 1
            return _message(dims)
        return edit

    def edit_graph(graph: bytes) -> bytes:
        fields = [f for f in _fields(graph) if f[0] != value_info_field]
        first_input = next(i for i, f in enumerate(fields) if f[0] == input_field)
        number, wire, payload = fields[first_input]
        fields[first_input] = (number, wire, _replace(payload, shape_path,
                                                      free_dims({2: "height", 3: "width"})))
        for i, (number, wire, payload) in enumerate(fields):
            if number == output_field:
                names = {d: f"output_dim{d}" for d in range(1, 8)}
                fields[i] = (number, wire, _replace(payload, shape_path, free_dims(names)))
        return _message(fields)

    return _replace(model, (graph_field,), edit_graph)


class OnnxNetwork:
    """An ONNX graph run by onnxruntime on the CPU: ``network(blob) -> [outputs in graph order]``.

    onnxruntime rather than OpenCV DNN: on the 2-core development machine it runs YOLOX-nano at
    416×416 in 23 ms against OpenCV's 42 ms (one thread; 16 vs 26 ms on two), outputs equal within
    1.3e-4, and it runs RTMDet's in-graph NMS without OpenCV 5's fixed output sizing.
    """

    def __init__(self, path: str | Path, threads: int | None = None, free_input: bool = False) -> None:
        """
        Args:
            path: the ``.onnx`` file.
            threads: intra-op threads (None: onnxruntime's choice, one per core).
            free_input: the graph's layers take any input size even where its input declares a
                fixed one: the declaration is freed (:func:`free_spatial_input`); a graph that then
                fails on a small probe input is run as declared.
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

        def session(model: str | bytes):  # noqa: ANN202
            return onnxruntime.InferenceSession(model, options, providers=["CPUExecutionProvider"])

        try:
            self.session = session(str(p))
        except Exception as exc:  # onnxruntime raises its own exception types for unreadable graphs
            reason = str(exc).strip().splitlines()[-1][:160]
            raise PoseCliError(f"{p.name}: cannot be loaded as an ONNX model ({reason})") from exc
        if free_input and self._fixed_hw() is not None:
            try:
                freed = session(free_spatial_input(p.read_bytes()))
                freed.run(None, {freed.get_inputs()[0].name: np.zeros((1, 3, 64, 96), np.float32)})
                self.session = freed
            except Exception:  # noqa: BLE001 - a graph whose layers need the declared size
                pass
        self.input_name = self.session.get_inputs()[0].name
        fixed = self._fixed_hw()
        # The square input side when the graph fixes it, else None.
        self.fixed_side = fixed[0] if fixed and fixed[0] == fixed[1] else None

    def _fixed_hw(self) -> tuple[int, int] | None:
        """(height, width) the graph's input declares, None where either is free."""
        height, width = self.session.get_inputs()[0].shape[2:4]
        return (height, width) if isinstance(height, int) and isinstance(width, int) else None

    def __call__(self, blob: np.ndarray) -> list[np.ndarray]:
        return self.session.run(None, {self.input_name: blob})


class _LetterboxDetector:
    """A detector on a letterboxed input: subclasses turn the network input into boxes.

    The frame keeps its aspect (long side ``input_size``, short side padded to a multiple of 32)
    unless the graph fixes a square input or ``square`` asks for the padded square.
    """

    DEFAULT_INPUT_SIZE = 416

    def __init__(self, onnx_path: str | Path, score_threshold: float = 0.4, nms_iou: float = 0.45,
                 input_size: int | None = None, min_box_height: float = 0.0,
                 threads: int | None = None, square: bool = False) -> None:
        """
        Args:
            onnx_path: the detector's ``.onnx`` file.
            score_threshold: minimum person score (0.4 made our pseudo-labels).
            nms_iou: IoU above which the lower-scoring of two boxes is suppressed.
            input_size: long side of the network input, a multiple of 32 (None: the graph's
                own fixed side, else ``DEFAULT_INPUT_SIZE``).
            min_box_height: boxes shorter than this (frame pixels) are dropped (32 made the
                pseudo-labels; people that small give poor poses).
            threads: onnxruntime intra-op threads (None: one per core).
            square: pad to an ``input_size`` square instead of the frame's aspect (YOLOX-nano
                at 416 square made the pseudo-labels of ``../shared/data``).
        """
        self.network = OnnxNetwork(onnx_path, threads, free_input=True)
        fixed = self.network.fixed_side
        size = input_size or fixed or self.DEFAULT_INPUT_SIZE
        if size <= 0 or size % 32:
            raise PoseCliError(f"detector input size must be a positive multiple of 32, got {size}")
        if fixed and size != fixed:
            raise PoseCliError(f"{Path(onnx_path).name} takes {fixed}×{fixed} inputs, not {size}")
        self.score_threshold = score_threshold
        self.nms_iou = nms_iou
        self.input_size = size
        self.square_input = square or bool(fixed)
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
    """YOLOX-nano (80 COCO classes, person = class 0), at the frame's aspect with long side 512.

    The exported graph has no box decoding: each row of its ``[1, A, 85]`` output is
    ``(tx, ty, tw, th, objectness, 80 class scores)`` for one anchor point of the stride-8, 16
    and 32 grids (in that order, row-major), scores already sigmoid-activated. Box centre
    ``(t + grid) * stride``, size ``exp(t) * stride``; score = objectness × person score.

    Input size, measured on hand-checked frames (``tests/data/visible_persons.json``): the
    416×416 square the graph declares finds 24 of 40 visible persons in sports2d_demo.mp4 (it
    misses the backlit man on the roof in most frames: at that scale the network gives no box
    on him at any score, so neither the score threshold nor NMS is the cause), 28 of 30 in
    pose2sim_MultiPerson_cam02.mp4 and 58 of 61 in vtest.mp4. The frame's aspect at the same
    long side finds exactly as many (the padding costs time, not recall); long side 512 finds
    31, 30 and 60 with 4 false boxes against 12. A 16:9 or 9:16 frame at 512 (512×288,
    320×512) has fewer pixels than the 416 square, a 4:3 one (512×384) 1.14× as many.
    """

    DEFAULT_INPUT_SIZE = 512
    STRIDES = (8, 16, 32)

    def __init__(self, onnx_path: str | Path, **options: float | int | bool | None) -> None:
        super().__init__(onnx_path, **options)
        self._grids: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}

    def _grid(self, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
        """Anchor cells (A×2 x, y indices) and strides (A×1) of an input of this size."""
        if (height, width) not in self._grids:
            grids, strides = [], []
            for stride in self.STRIDES:
                ys, xs = np.meshgrid(np.arange(height // stride), np.arange(width // stride), indexing="ij")
                grids.append(np.stack([xs.ravel(), ys.ravel()], axis=1))
                strides.append(np.full((xs.size, 1), stride))
            self._grids[height, width] = (np.concatenate(grids).astype(np.float32),
                                          np.concatenate(strides).astype(np.float32))
        return self._grids[height, width]

    def _boxes(self, padded: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # Raw BGR 0..255 in NCHW; the model has no mean/std normalisation.
        out = self.network(cv2.dnn.blobFromImage(padded))[0][0]  # A×85
        grid, stride = self._grid(*padded.shape[:2])
        scores = out[:, 4] * out[:, 5]
        keep = scores >= self.score_threshold
        out, scores = out[keep], scores[keep]
        grid, stride = grid[keep], stride[keep]
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
    MEAN = np.array([103.53, 116.28, 123.675], np.float32)  # BGR
    STD = np.array([57.375, 57.12, 58.395], np.float32)

    def _boxes(self, padded: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        blob = ((padded.astype(np.float32) - self.MEAN) / self.STD).transpose(2, 0, 1)[None]
        dets, labels = self.network(np.ascontiguousarray(blob))
        dets, labels = dets[0], labels[0]
        keep = (labels == 0) & (dets[:, 4] >= self.score_threshold)
        return dets[keep, :4], dets[keep, 4]


# Turned views' scores are multiplied by this (a person found only turned is less sure), and a
# turned view's box is added only where it overlaps no upright box by more than this IoU: on
# everyday photos the turned views find hardly anyone new, but parts of people found upright. Chosen
# on training sets only (YOLOX-nano; recall = labelled persons with a box at IoU >= 0.5, score 0.4,
# 600 LSP-Extended training images; OKS AP with the model's poses on coco-mini train, score 0.1):
# upright only 0.762 / 0.3958. All boxes suppressed together, turned scores × 1.0, 0.7, 0.5: 0.878 /
# 0.3908, 0.865 / 0.3959, 0.803 / 0.3983. As here (× 0.7, upright boxes kept) with overlap 0.45,
# 0.2, 0.1, 0.0: 0.863 / 0.3924, 0.853 / 0.3965, 0.852 / 0.3968, 0.848 / 0.3958.
TURNED_SCORE_SCALE = 0.7
TURNED_MAX_OVERLAP = 0.1


def turned_back_boxes(boxes_xyxy: np.ndarray, turns: int, image_hw: tuple[int, int]) -> np.ndarray:
    """Boxes found in an image turned anticlockwise by ``turns`` quarter turns (``np.rot90``), in
    the upright image's pixels.

    Args:
        boxes_xyxy: N×4 boxes in the turned image.
        turns: anticlockwise quarter turns of the image the boxes were found in.
        image_hw: (height, width) of the upright image.
    """
    boxes = np.asarray(boxes_xyxy, np.float64).reshape(-1, 4)
    xs, ys = boxes[:, [0, 2, 0, 2]], boxes[:, [1, 1, 3, 3]]
    rows = image_hw[0] if turns % 2 == 0 else image_hw[1]  # of the turned image
    cols = image_hw[1] if turns % 2 == 0 else image_hw[0]
    for _ in range(turns % 4):
        # One anticlockwise turn of an R×C image moves its point (x, y) to (y, C − x), in an
        # image of C rows: undone, (x', y') of the turned image comes from (rows − y', x').
        xs, ys = rows - ys, xs
        rows, cols = cols, rows
    return np.stack([xs.min(1), ys.min(1), xs.max(1), ys.max(1)], axis=1).astype(np.float32)


class QuarterTurnDetector:
    """A detector that also looks at each photo turned by 90°, 180° and 270°.

    Person detectors, like pose models, learn from mostly upright people, and miss many who lie,
    hang or stand on their hands: on LSP-Extended training images (gymnastics, parkour) YOLOX-nano
    finds 76 % of the labelled persons upright and 85 % with the turned views added. The turned
    views' boxes are turned back (exactly: ``np.rot90`` moves whole pixels), their scores scaled by
    ``score_scale``, and they go through the detector's non-maximum suppression among themselves;
    one is added where its score is still at least the detector's least score and it overlaps no
    upright box by more than ``max_overlap`` IoU; every upright box is kept as it was.
    4× the detector's time; for photos, not video frames.
    """

    def __init__(self, detector: _LetterboxDetector, score_scale: float = TURNED_SCORE_SCALE,
                 max_overlap: float = TURNED_MAX_OVERLAP) -> None:
        self.detector = detector
        self.score_scale = score_scale
        self.max_overlap = max_overlap

    def __call__(self, frame: Frame | np.ndarray) -> Detections:
        image = _image_of(frame)
        upright = self.detector(image)
        boxes, scores = [], []
        for turns in (1, 2, 3):
            seen = self.detector(np.ascontiguousarray(np.rot90(image, turns)))
            boxes.append(turned_back_boxes(seen.boxes_xyxy, turns, image.shape[:2]))
            scores.append(seen.scores * self.score_scale)
        turned, turned_scores = _nms(np.concatenate(boxes), np.concatenate(scores), self.detector.nms_iou)
        new = turned_scores >= self.detector.score_threshold
        if len(upright):
            new &= box_iou(turned, upright.boxes_xyxy).max(axis=1, initial=0.0) <= self.max_overlap
        return _to_detections(np.concatenate([upright.boxes_xyxy, turned[new]]),
                              np.concatenate([upright.scores, turned_scores[new]]), image.shape[:2],
                              self.detector.min_box_height)


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
