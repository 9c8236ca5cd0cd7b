"""Evaluation: our DiffPose and the baselines, through the same code, on the same boxes.

Every model is seen through :class:`TopDownPoseModel` (frames of a window + person boxes →
keypoints in frame pixels), so the metric code does not know which model it measures.

* Image sets (COCO-style JSON): each person annotation with keypoints is predicted from its
  ground-truth box ("gt"), and/or the model runs on a detector's boxes ("detector"). Metrics:
  COCO OKS AP/AR with pycocotools (skipped where the set leaves some of the 17 joints unlabelled
  everywhere, e.g. LSP-Extended's face, because OKS over 17 sigmas is then not comparable), and
  PCK@0.1/0.2 per joint group, normalised by ``sqrt(w·h)`` of the GT box, on labelled joints only.
  Still images are fed as a window of the image replicated T times.
* Videos with pseudo-labels (``videos/*.pseudo.json``): the model runs on the pseudo-label boxes,
  once with real neighbour frames (window T, edges replicated; each frame cropped with its own
  box of the person's track, the key frame standing in where the track has none, as ``posecli
  run`` crops them by default) and once with the key frame replicated T times. Metrics: PCK against the
  pseudo-labels (joints with confidence ≥ 0.3) and jitter, the mean normalised second difference
  along each track (see :func:`posecli.eval.metrics.second_differences`).

Report dicts are JSON-able; :func:`render_table` turns one into a ``rich`` table.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from pathlib import Path
from typing import Protocol, runtime_checkable

import cv2
import numpy as np

from posecli.crop import BOX_ENLARGE, crop_to_crop, crop_transform, warp_crop
from posecli.errors import PoseCliError
from posecli.eval.metrics import (JOINT_GROUPS, box_size, jitter_by_track, left_right_spread, oks_metrics,
                                  pck)
from posecli.pseudo_labels import read_pseudo_labels
from posecli.types import NUM_KEYPOINTS, Detections, Frame

REPORT_FORMAT = "posecli-eval/1"
PCK_NORMALISATION = "sqrt(w*h) of the reference box"
PSEUDO_CONFIDENCE = 0.3


@runtime_checkable
class TopDownPoseModel(Protocol):
    """A pose model that sees one person box at a time (through a window of frames).

    Attributes:
        name: short name used as the report key ("diffpose", "movenet", ...).
        window: frames T the model looks at (1 for single-frame models).
    """

    name: str
    window: int

    def predict(self, frames: Sequence[np.ndarray], boxes_xyxy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Keypoints of each box.

        Args:
            frames: T images H×W×3 uint8 BGR; the key frame is ``frames[T // 2]``, the boxes are in
                its pixels and all frames are cropped with them.
            boxes_xyxy: N×4 boxes.

        Returns:
            ``keypoints_xy`` N×K×2 (frame pixels of the key frame) and ``scores`` N×K in [0, 1].
        """
        ...


class DiffPoseTopDown:
    """Our DiffPose as a :class:`TopDownPoseModel`: crop → heatmaps → DARK → frame pixels.

    The same steps as ``Pipeline._estimate``: each frame of the window is cropped with the key
    frame's box, or with its own (:class:`OwnCropWindows`; ``crop.crop_transform``, the
    checkpoint's box enlargement, aspect-corrected), heatmaps are decoded with DARK and mapped
    back through the inverse affine of the key crop.

    Args:
        heatmaps: crops uint8 [N,T,H,W,3] BGR (T = window, or 1 for a still frame) → heatmaps
            [N,K,h,w] (``PoseModel.heatmaps`` or a ``HeatmapPredictor``).
        input_hw: model input (height, width), e.g. (256, 256).
        window: frames T per prediction.
        stride: input pixels per heatmap pixel (default: input height / heatmap height).
        name: report key.
        batch_size: person windows per ``heatmaps`` call.
        enlarge: crop region as a multiple of the box (the checkpoint's ``crop_enlarge``).
        encoder: crops uint8 [M,H,W,3] BGR → per-crop features [M, ...] (``PoseModel.features``),
            and ``from_features``: windows of them [N,T,...] and ``to_key`` → heatmaps
            (``PoseModel.heatmaps_from_features``); both or neither. With them, clips are
            evaluated on own-box crops (:class:`OwnCropWindows`), without them on key-box crops.
        still: crops uint8 [N,H,W,3] BGR of still images → heatmaps [N, ...]
            (``PoseModel.still_heatmaps``), used by :meth:`predict` for a still image; None: ``heatmaps``.
    """

    def __init__(self, heatmaps: Callable[[np.ndarray], np.ndarray], input_hw: tuple[int, int],
                 window: int, stride: int | None = None, name: str = "diffpose", batch_size: int = 16,
                 enlarge: float = BOX_ENLARGE, encoder: Callable | None = None,
                 from_features: Callable | None = None, still: Callable | None = None) -> None:
        self.heatmaps = heatmaps
        self.still = still
        self.encoder = encoder
        self.from_features = from_features
        self.enlarge = enlarge
        self.input_hw = (int(input_hw[0]), int(input_hw[1]))
        self.window = int(window)
        self.stride = stride
        self.name = name
        self.batch_size = batch_size

    @classmethod
    def from_model(cls, model, batch_size: int = 16, rotations: bool = True) -> "DiffPoseTopDown":  # noqa: ANN001
        """A loaded ``models.loading.PoseModel`` with its own crop size, enlargement, window and stride;
        ``rotations``: still images are also looked at turned, as ``posecli run`` does with photos."""
        return cls(model.heatmaps, model.input_hw, model.window, stride=model.stride, batch_size=batch_size,
                   enlarge=model.crop_enlarge, encoder=model.features, from_features=model.heatmaps_from_features,
                   still=partial(model.still_heatmaps, rotations=rotations))

    def predict(self, frames: Sequence[np.ndarray], boxes_xyxy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """See :meth:`TopDownPoseModel.predict`. A window of another length than ``self.window``
        is fitted to it around the key frame, repeating its end frames. A window of one frame
        repeated is a still image: it goes to ``still`` where given, else as T=1 (the predictor
        replicates its features), so it costs one backbone pass per view, not T."""
        crops, mats = self.crops(frames, boxes_xyxy)
        if crops.shape[1] == 1 and self.still is not None:
            return self._decode([(self.still(crops[i:i + self.batch_size, 0]), mats[i:i + self.batch_size])
                                 for i in range(0, len(crops), self.batch_size)])
        return self.predict_crops(crops, mats)

    def crops(self, frames: Sequence[np.ndarray], boxes_xyxy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The model inputs :meth:`predict` makes: crops uint8 [N, T, H, W, 3] (T = 1 for a window of
        one frame repeated) and the frame → crop affines [N, 2, 3]; several frames' crops can be
        concatenated and go to :meth:`predict_crops` together (a few persons per frame make
        small, slow batches)."""
        frames = _fit_window(frames, self.window)
        if all(f is frames[0] for f in frames):
            frames = frames[:1]
        mats = self.crop_matrices(boxes_xyxy)
        crops = np.array([[warp_crop(f, m, self.input_hw) for f in frames] for m in mats], np.uint8).reshape(
            len(mats), len(frames), *self.input_hw, 3)
        return crops, mats

    def crop_matrices(self, boxes_xyxy: np.ndarray) -> np.ndarray:
        """Frame → crop affines [N, 2, 3] of boxes [N, 4] (the checkpoint's enlargement)."""
        boxes = np.asarray(boxes_xyxy, np.float64).reshape(-1, 4)
        return np.array([crop_transform(b, self.input_hw, self.enlarge) for b in boxes], np.float64).reshape(-1, 2, 3)

    def predict_crops(self, crops: np.ndarray, mats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Keypoints [N, K, 2] (frame pixels) and scores [N, K] of :meth:`crops`' output."""
        return self._decode([(self.heatmaps(crops[i:i + self.batch_size]), mats[i:i + self.batch_size])
                             for i in range(0, len(crops), self.batch_size)])

    def predict_features(self, features, mats: np.ndarray, to_key: np.ndarray  # noqa: ANN001 - torch.Tensor
                         ) -> tuple[np.ndarray, np.ndarray]:
        """Keypoints and scores of windows of per-crop features [N, T, ...] (``self.encoder``'s rows),
        the key crops' affines [N, 2, 3] and each frame's crop → key crop affines [N, T, 2, 3]."""
        return self._decode([(self.from_features(features[i:i + self.batch_size], to_key[i:i + self.batch_size]),
                              mats[i:i + self.batch_size]) for i in range(0, len(features), self.batch_size)])

    def _decode(self, batches: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
        """(heatmaps [n, K, h, w], key affines [n, 2, 3]) batches → keypoints [N, K, 2] (frame
        pixels, DARK) and scores [N, K]."""
        from posecli.decode import dark_decode, heatmaps_to_frame

        keypoints, scores = [], []
        for heatmaps, mats in batches:
            stride = self.stride or self.input_hw[0] // heatmaps.shape[-2]
            xy_hm, sc = dark_decode(heatmaps)
            keypoints.append(heatmaps_to_frame(xy_hm, stride, mats))
            scores.append(sc)
        if not keypoints:
            return np.zeros((0, NUM_KEYPOINTS, 2), np.float32), np.zeros((0, NUM_KEYPOINTS), np.float32)
        return np.concatenate(keypoints).astype(np.float32), np.concatenate(scores).astype(np.float32)


class OwnCropWindows:
    """Windows of own-box crops, each (frame, box) crop encoded once, as ``posecli run`` caches them.

    A person's window holds, for each frame, the crop of its track's box in that frame (the key
    frame's own crop where the track has none, as ``posecli run`` does), the features of each crop
    computed once and reused by every window that holds the frame.

    Args:
        model: a :class:`DiffPoseTopDown` with ``encoder`` and ``from_features``.
    """

    def __init__(self, model: DiffPoseTopDown) -> None:
        self.model = model
        self.features: dict[tuple[int, tuple[float, ...]], object] = {}

    def windows(self, images: dict[int, np.ndarray], indices: Sequence[Sequence[int]], frame_boxes: np.ndarray
                ):  # noqa: ANN201 - torch.Tensor
        """Features [N, T, ...], key-crop affines [N, 2, 3] and frame-crop → key-crop affines [N, T, 2, 3].

        Args:
            images: frame number → image, for every frame the windows use.
            indices: [N][T] each person's frame numbers (key frame in the middle).
            frame_boxes: [N, T, 4] each person's box in each of those frames.
        """
        import torch

        boxes = np.asarray(frame_boxes, np.float64)
        keys = [[(f, tuple(box)) for f, box in zip(person_frames, person)]
                for person_frames, person in zip(indices, boxes)]
        missing = list(dict.fromkeys(k for person in keys for k in person if k not in self.features))
        if missing:
            mats = self.model.crop_matrices(np.array([box for _, box in missing]))
            crops = np.stack([warp_crop(images[f], m, self.model.input_hw) for (f, _), m in zip(missing, mats)])
            self.features.update(zip(missing, self.model.encoder(crops)))
        own = self.model.crop_matrices(boxes.reshape(-1, 4)).reshape(*boxes.shape[:2], 2, 3)
        key = own[:, boxes.shape[1] // 2]
        to_key = np.array([[crop_to_crop(m, k) for m in person] for person, k in zip(own, key)]).reshape(own.shape)
        return torch.stack([torch.stack([self.features[k] for k in person]) for person in keys]), key, to_key

    def forget_before(self, frame: int) -> None:
        """Drop the crops of frames before ``frame`` (no later window holds them)."""
        for k in [k for k in self.features if k[0] < frame]:
            del self.features[k]


def _fit_window(frames: Sequence[np.ndarray], length: int) -> list[np.ndarray]:
    """``length`` frames centred on ``frames[len // 2]``, repeating the end frames where short."""
    centre = len(frames) // 2
    half = length // 2
    return [frames[min(max(centre + o, 0), len(frames) - 1)] for o in range(-half, length - half)]


def _window_indices(frames: Sequence[np.ndarray], t: int, length: int) -> list[int]:
    """Frame numbers of ``_fit_window(frames, length)`` for the window of key frame ``t`` from
    :func:`iter_windows` (a frame repeated at either end of the clip keeps its own number)."""
    first = {id(f): i for i, f in reversed(list(enumerate(frames)))}
    return [max(t - len(frames) // 2 + first[id(f)], 0) for f in _fit_window(frames, length)]


def load_diffpose(weights_path: str | Path | None, device: str = "cpu", steps: int | None = None,
                  window: int | None = None, seed: int = 0, batch_size: int = 16,
                  rotations: bool = True) -> DiffPoseTopDown:
    """Our checkpoint, found and verified as ``posecli run`` does (``models.loading.load_pose_model``:
    ``None`` = the default manifest entry), as a :class:`DiffPoseTopDown`. ``steps``/``window`` of
    ``None`` take the checkpoint's values; ``rotations``: see :meth:`DiffPoseTopDown.from_model`."""
    from posecli.models.loading import load_pose_model

    from posecli.config import PipelineConfig
    from posecli.pipeline import resolve_threads

    model = load_pose_model(None if weights_path is None else Path(weights_path), device=device,
                            window=window, steps=steps, seed=seed, batch_size=batch_size)
    adapter = DiffPoseTopDown.from_model(model, batch_size=batch_size, rotations=rotations)
    # The model's thread count of `posecli run` (one thread on two cores): two threads that wait
    # for each other on a busy 2-core CPU made the model 2.6× slower per person, measured in one run.
    threads = resolve_threads(PipelineConfig(), device).model
    adapter.heatmaps, adapter.encoder, adapter.from_features, adapter.still = (
        _with_torch_threads(f, threads) for f in (model.heatmaps, model.features, model.heatmaps_from_features,
                                                  adapter.still))
    return adapter


def _with_torch_threads(function: Callable, threads: int) -> Callable:
    """``function`` run with ``threads`` torch threads; the caller's count is restored after each call."""
    import torch

    def call(*args):  # noqa: ANN002, ANN202 - the function's own
        previous = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            return function(*args)
        finally:
            torch.set_num_threads(previous)

    return call


# --------------------------------------------------------------------------------------------
# Image sets


def _quiet_coco(ann_file: Path):
    from pycocotools.coco import COCO

    if not ann_file.is_file():
        raise PoseCliError(f"annotation file not found: {ann_file}")
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            return COCO(str(ann_file))
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise PoseCliError(f"{ann_file}: not a COCO keypoint annotation file ({exc})") from None


def default_image_dir(ann_file: str | Path) -> Path:
    """The image folder of a COCO-style file laid out as in ``shared/data``: ``images/`` or
    ``<stem>2017/`` next to it, else the file's own folder."""
    ann = Path(ann_file)
    for candidate in (ann.parent / "images", ann.parent / f"{ann.stem}2017"):
        if candidate.is_dir():
            return candidate
    return ann.parent


def _xywh_to_xyxy(box: Sequence[float]) -> np.ndarray:
    x, y, w, h = (float(v) for v in box)
    return np.array([x, y, x + w, y + h], np.float64)


def _read_image(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise PoseCliError(f"cannot read image {path}")
    return image


def _coco_result(image_id: int, keypoints: np.ndarray, scores: np.ndarray, box_score: float) -> dict:
    flat = np.concatenate([keypoints, scores[:, None]], axis=1).reshape(-1)
    return {"image_id": int(image_id), "category_id": 1, "keypoints": [float(v) for v in flat],
            "score": float(box_score) * float(np.mean(scores))}


def evaluate(model: TopDownPoseModel, ann_file: str | Path, image_dir: str | Path | None = None,
             boxes: str = "gt", detector: Callable[[Frame], Detections] | None = None,
             window: int | None = None, progress: Callable[[int, int], None] | None = None) -> dict:
    """Evaluate a model on a COCO-style keypoint set.

    Args:
        model: any :class:`TopDownPoseModel`.
        ann_file: COCO keypoint JSON.
        image_dir: folder the images' ``file_name`` is relative to (default :func:`default_image_dir`).
        boxes: "gt" (ground-truth boxes of persons with keypoints: OKS AP/AR and PCK),
            "detector" (the detector's boxes: OKS AP/AR only, no one-to-one match for PCK) or
            "both".
        detector: ``detector(frame) -> Detections``, needed for "detector"/"both".
        window: frames per still image (the image replicated); default ``model.window``.
        progress: called as ``progress(done, total)`` after each image.

    Returns:
        ``{"name", "window", "boxes", "persons", "images", "oks", "oks_detector", "pck",
        "ms_per_person", "ms_per_person_detector"}``; absent metrics are ``None``.
    """
    if boxes not in ("gt", "detector", "both"):
        raise PoseCliError(f"boxes must be 'gt', 'detector' or 'both', not {boxes!r}")
    if boxes != "gt" and detector is None:
        raise PoseCliError("evaluating on detector boxes needs a detector")
    ann_path = Path(ann_file)
    coco = _quiet_coco(ann_path)
    folder = Path(image_dir) if image_dir is not None else default_image_dir(ann_path)
    t_window = int(window or model.window)

    persons_by_image: dict[int, list[dict]] = defaultdict(list)
    for ann in coco.dataset["annotations"]:
        if ann.get("num_keypoints", 0) > 0 and not ann.get("iscrowd", 0) and ann.get("category_id", 1) == 1:
            persons_by_image[ann["image_id"]].append(ann)
    image_ids = sorted(persons_by_image) if boxes == "gt" else sorted(coco.getImgIds())
    # OKS over the 17 COCO sigmas only means something when every joint is labelled somewhere.
    labelled_somewhere = np.zeros(NUM_KEYPOINTS, bool)
    for anns in persons_by_image.values():
        for ann in anns:
            labelled_somewhere |= np.asarray(ann["keypoints"], np.float64).reshape(-1, 3)[:NUM_KEYPOINTS, 2] > 0
    oks_comparable = bool(labelled_somewhere.all())

    gt_results: list[dict] = []
    det_results: list[dict] = []
    pred_xy, gt_xy, labelled, sizes = [], [], [], []
    gt_seconds = det_seconds = 0.0
    num_det_persons = 0
    for done, image_id in enumerate(image_ids, start=1):
        info = coco.imgs[image_id]
        image = _read_image(folder / info["file_name"])
        frames = [image] * t_window
        anns = persons_by_image.get(image_id, [])
        if boxes in ("gt", "both") and anns:
            gt_boxes = np.stack([_xywh_to_xyxy(a["bbox"]) for a in anns])
            start = time.perf_counter()
            kp, sc = model.predict(frames, gt_boxes)
            gt_seconds += time.perf_counter() - start
            for a, k, s in zip(anns, kp, sc):
                gt_results.append(_coco_result(image_id, k, s, 1.0))
                ref = np.asarray(a["keypoints"], np.float64).reshape(-1, 3)
                pred_xy.append(k)
                gt_xy.append(ref[:, :2])
                labelled.append(ref[:, 2] > 0)
                sizes.append(box_size(np.asarray(a["bbox"])))
        if boxes in ("detector", "both"):
            dets = detector(Frame(index=done - 1, time_s=0.0, image=image, file=info["file_name"]))
            if len(dets):
                start = time.perf_counter()
                kp, sc = model.predict(frames, dets.boxes_xyxy)
                det_seconds += time.perf_counter() - start
                num_det_persons += len(dets)
                det_results.extend(_coco_result(image_id, k, s, b) for k, s, b in zip(kp, sc, dets.scores))
        if progress is not None:
            progress(done, len(image_ids))

    num_persons = len(pred_xy)
    report = {
        "name": model.name, "window": t_window, "boxes": boxes,
        "images": len(image_ids), "persons": num_persons,
        "oks": None, "oks_detector": None, "pck": None,
        "ms_per_person": 1000.0 * gt_seconds / num_persons if num_persons else None,
        "ms_per_person_detector": 1000.0 * det_seconds / num_det_persons if num_det_persons else None,
    }
    if not oks_comparable:
        report["oks_note"] = "some joints are never labelled in this set: OKS AP not comparable, see PCK"
    if boxes in ("gt", "both") and num_persons:
        if oks_comparable:
            report["oks"] = oks_metrics(coco, gt_results, sorted(persons_by_image))
        report["pck"] = pck(np.stack(pred_xy), np.stack(gt_xy), np.stack(labelled), np.array(sizes))
    if boxes in ("detector", "both") and oks_comparable:
        report["oks_detector"] = oks_metrics(coco, det_results, image_ids)
    return report


# --------------------------------------------------------------------------------------------
# Videos with pseudo-labels


def _video_frames(path: Path) -> Iterator[np.ndarray]:
    """Decoded BGR frames in decode order (OpenCV decodes every clip in shared/data/videos)."""
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise PoseCliError(f"cannot open video {path}")
    try:
        while True:
            ok, image = capture.read()
            if not ok:
                return
            yield image
    finally:
        capture.release()


def iter_windows(frames: Iterator[np.ndarray], length: int) -> Iterator[tuple[int, list[np.ndarray]]]:
    """``(t, [frame t-δ … t+δ])`` for every frame, δ = length // 2, repeating the first/last frame
    at the clip's ends. Holds only ``length`` frames in memory."""
    half = length // 2
    buffer: dict[int, np.ndarray] = {}
    t = 0
    last = -1
    for last, image in enumerate(frames):
        buffer[last] = image
        while t + (length - 1 - half) <= last:
            yield t, [buffer[min(max(t + o, 0), last)] for o in range(-half, length - half)]
            buffer.pop(t - half, None)  # frame t-δ is the oldest one t+1 no longer needs
            t += 1
    while t <= last:
        yield t, [buffer[min(max(t + o, 0), last)] for o in range(-half, length - half)]
        buffer.pop(t - half, None)
        t += 1


def evaluate_video(models: Sequence[TopDownPoseModel], pseudo_file: str | Path, video: str | Path,
                   confidence: float = PSEUDO_CONFIDENCE,
                   include_static: bool = False,
                   progress: Callable[[int, int], None] | None = None) -> dict:
    """PCK against video pseudo-labels and jitter, with real neighbour frames vs a replicated frame.

    The video is decoded once for all models. Each model runs on the pseudo-label boxes in mode
    "replicated" (the key frame repeated ``T = model.window`` times) and, when ``T > 1``, in mode
    "temporal" (the real frames t-δ … t+δ, all cropped with frame t's box; the first/last frame
    repeated at the ends).

    Args:
        models: models to compare.
        pseudo_file: ``<name>.pseudo.json`` (COCO-video style, keypoints ``(x, y, confidence)``).
        video: the clip it labels.
        confidence: least pseudo-label confidence for a joint to count (PCK and jitter).
        include_static: also use tracks flagged ``static_track`` (e.g. the skeleton on a stand).
        progress: ``progress(done, total)`` per decoded frame.

    Returns:
        ``{"video", "pseudo_labels", "persons", "frames" (decoded), "confidence", "reference_jitter",
        "models": {name: {"window": T, "temporal": {...} | None, "replicated": {...}}}}``, each mode
        with ``pck`` (see :func:`posecli.eval.metrics.pck`), ``jitter``, ``triples``, ``left_right``
        (:func:`posecli.eval.metrics.left_right_spread`), ``smoothed_jitter`` (the jitter after the
        default smoother of ``posecli run``, per track), ``ms_per_person``.
        ``reference_jitter`` is the pseudo-labels' own jitter on the same joints.
    """
    pseudo_path, video_path = Path(pseudo_file), Path(video)
    labels = read_pseudo_labels(pseudo_path)
    by_frame = labels.by_frame(include_static)
    num_frames = labels.num_frames

    windows = {m.name: int(m.window) for m in models}
    modes = {m.name: (("temporal", "replicated") if windows[m.name] > 1 else ("replicated",)) for m in models}
    # (model, mode) → per-person rows; per-person reference rows are shared by all.
    rows: dict[tuple[str, str], list[tuple[np.ndarray, np.ndarray]]] = defaultdict(list)
    seconds: dict[tuple[str, str], float] = defaultdict(float)
    reference: list[tuple[int, int, np.ndarray, float]] = []  # (track, frame, 17×3, size)
    longest = max(windows.values(), default=1)
    # (model, mode) → crops and affines of persons not yet run: a few persons per frame would make
    # small batches, about 6× slower per person on the CPU than batches of 16.
    pending: dict[tuple[str, str], list[tuple]] = defaultdict(list)
    box_of = {(t, p.track_id): p.box_xyxy for t, persons in by_frame.items() for p in persons}
    own_crops = {m.name: OwnCropWindows(m) for m in models
                 if isinstance(m, DiffPoseTopDown) and m.encoder is not None and windows[m.name] > 1}

    def predict_pending(model: DiffPoseTopDown, key: tuple[str, str]) -> None:
        if pending[key]:
            parts = list(zip(*pending.pop(key)))
            if key[1] == "temporal" and key[0] in own_crops:  # features, key affines, frame → key affines
                import torch

                predicted = model.predict_features(torch.cat(parts[0]), *(np.concatenate(p) for p in parts[1:]))
            else:  # crops, key affines
                predicted = model.predict_crops(*(np.concatenate(p) for p in parts))
            rows[key].extend(zip(*predicted))

    decoded = 0
    for t, frames in iter_windows(_video_frames(video_path), longest):
        decoded = t + 1
        persons = by_frame.get(t, [])
        if progress is not None:
            progress(t + 1, num_frames)
        if not persons:
            continue
        boxes = np.stack([p.box_xyxy for p in persons])
        for p in persons:
            reference.append((p.track_id, t, p.keypoints, float(box_size(p.box_xywh))))
        centre = len(frames) // 2
        for model in models:
            for mode in modes[model.name]:
                length = windows[model.name]
                clip = (_fit_window(frames, length) if mode == "temporal" else [frames[centre]] * length)
                key = (model.name, mode)
                start = time.perf_counter()
                if mode == "temporal" and model.name in own_crops:
                    indices = _window_indices(frames, t, length)
                    # A frame without a box of the person's track: the key frame stands in, as in `posecli run`.
                    own = [[f if (f, p.track_id) in box_of else t for f in indices] for p in persons]
                    boxes_own = np.array([[box_of[(f, p.track_id)] for f in person] for p, person in zip(persons, own)])
                    pending[key].append(own_crops[model.name].windows(dict(zip(indices, clip)), own, boxes_own))
                    own_crops[model.name].forget_before(t - length // 2)
                    if sum(len(part[0]) for part in pending[key]) >= model.batch_size:
                        predict_pending(model, key)
                elif isinstance(model, DiffPoseTopDown):  # batched over frames, as in `posecli run`
                    crops, mats = model.crops(clip, boxes)
                    if pending[key] and pending[key][-1][0].shape[1] != crops.shape[1]:
                        predict_pending(model, key)
                    pending[key].append((crops, mats))
                    if sum(len(c) for c, _ in pending[key]) >= model.batch_size:
                        predict_pending(model, key)
                else:
                    rows[key].extend(zip(*model.predict(clip, boxes)))
                seconds[key] += time.perf_counter() - start
    for model in models:
        for mode in modes[model.name]:
            start = time.perf_counter()
            predict_pending(model, (model.name, mode))
            seconds[(model.name, mode)] += time.perf_counter() - start
    if not reference:
        raise PoseCliError(f"{pseudo_path}: no annotated frame of {video_path} was decoded")

    ref_kp = np.stack([r[2] for r in reference])
    ref_valid = ref_kp[..., 2] >= confidence
    ref_size = np.array([r[3] for r in reference])
    track_rows: dict[int, list[int]] = defaultdict(list)
    for i, (track, _, _, _) in enumerate(reference):
        track_rows[track].append(i)
    frames_idx = np.array([r[1] for r in reference])
    track_jitter = partial(jitter_by_track, track_ids=np.array([r[0] for r in reference]), frame_index=frames_idx,
                           size=ref_size, valid=ref_valid)

    def smoothed(xy: np.ndarray, scores: np.ndarray) -> np.ndarray:
        """Each track's keypoints through the default smoother of ``posecli run`` (Savitzky–Golay)."""
        from posecli.smooth import PoseSmoother, savgol_smooth

        defaults = PoseSmoother("savgol").savgol_args
        out = xy.astype(np.float64).copy()
        for idx in (np.array(v) for v in track_rows.values()):
            f = frames_idx[idx] - frames_idx[idx].min()
            dense = np.full((f.max() + 1, *xy.shape[1:]), np.nan)
            conf = np.zeros((f.max() + 1, xy.shape[1]))
            dense[f], conf[f] = xy[idx], scores[idx]
            s = savgol_smooth(dense, conf, **defaults)[f]
            out[idx] = np.where(np.isfinite(s), s, xy[idx])
        return out

    result: dict = {
        "video": str(video_path), "pseudo_labels": str(pseudo_path), "persons": len(reference),
        "frames": decoded, "confidence": confidence, "include_static": include_static,
        "reference_jitter": track_jitter(ref_kp[..., :2]), "models": {},
    }
    for model in models:
        entry: dict = {"name": model.name, "window": windows[model.name], "temporal": None, "replicated": None}
        for mode in modes[model.name]:
            pred = np.stack([r[0] for r in rows[(model.name, mode)]])
            entry[mode] = {
                "pck": pck(pred, ref_kp[..., :2], ref_valid, ref_size),
                **track_jitter(pred),
                "left_right": left_right_spread(pred, ref_size),
                "smoothed_jitter": track_jitter(smoothed(pred, np.stack([r[1] for r in rows[(model.name, mode)]]))),
                "ms_per_person": 1000.0 * seconds[(model.name, mode)] / len(pred),
            }
        result["models"][model.name] = entry
    return result


# --------------------------------------------------------------------------------------------
# Reports


def _fmt(value: float | None, digits: int = 3) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def render_table(report: dict):
    """A ``rich.table.Table`` of a :func:`run_eval` report (image set or video), one row per model
    (per mode for videos): OKS AP/AP50/AP75/AR, PCK@0.1/0.2 overall and PCK@0.2 per joint group,
    jitter (mean and median), and milliseconds per person."""
    from rich.table import Table

    groups = list(JOINT_GROUPS)
    if report.get("kind") == "video":
        table = Table(title=f"{Path(report['video']).name}: PCK vs pseudo-labels (conf ≥ "
                            f"{report['confidence']}), jitter (pseudo-labels: "
                            f"{_fmt(report['reference_jitter']['jitter'], 4)})")
        for column in ["model", "T", "frames", "PCK@0.1", "PCK@0.2", *groups, "jitter", "jitter med",
                       "L-R ankles", "L-R wrists", "ms/person"]:
            table.add_column(column, justify="left" if column in ("model", "frames") else "right")
        for entry in report["models"].values():
            for mode in ("temporal", "replicated"):
                res = entry.get(mode)
                if res is None:
                    continue
                p1, p2 = res["pck"]["pck@0.1"], res["pck"]["pck@0.2"]
                table.add_row(entry["name"], str(entry["window"]), mode, _fmt(p1["overall"]), _fmt(p2["overall"]),
                              *(_fmt(p2.get(g)) for g in groups), _fmt(res["jitter"], 4),
                              _fmt(res["jitter_median"], 4), _fmt(res["left_right"]["ankles"]["p50"]),
                              _fmt(res["left_right"]["wrists"]["p50"]), _fmt(res["ms_per_person"], 1))
        return table

    dataset = report["dataset"]
    table = Table(title=f"{Path(dataset['ann_file']).name}: {dataset['persons']} persons, "
                        f"{report['boxes']} boxes, PCK normalised by {PCK_NORMALISATION}")
    columns = ["model", "AP", "AP50", "AP75", "AR", "PCK@0.1", "PCK@0.2", *groups, "ms/person"]
    if report["boxes"] != "gt":
        columns[5:5] = ["AP det", "AR det"]
    for column in columns:
        table.add_column(column, justify="left" if column == "model" else "right")
    for res in report["models"].values():
        oks = res.get("oks") or {}
        det = res.get("oks_detector") or {}
        pck_res = res.get("pck") or {}
        p1, p2 = pck_res.get("pck@0.1", {}), pck_res.get("pck@0.2", {})
        cells = [res["name"], _fmt(oks.get("AP")), _fmt(oks.get("AP50")), _fmt(oks.get("AP75")), _fmt(oks.get("AR"))]
        if report["boxes"] != "gt":
            cells += [_fmt(det.get("AP")), _fmt(det.get("AR"))]
        cells += [_fmt(p1.get("overall")), _fmt(p2.get("overall")), *(_fmt(p2.get(g)) for g in groups),
                  _fmt(res.get("ms_per_person"), 1)]
        table.add_row(*cells)
    return table


def write_json_atomic(path: str | Path, payload: dict) -> None:
    """Write JSON through a temporary file in the same folder and rename it into place."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(payload, handle, indent=2)
            handle.write("\n")
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; a report is an ordinary file
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def score_results(ann_file: str | Path, results_file: str | Path) -> dict:
    """OKS AP/AR of a COCO keypoint results file (e.g. ``posecli run --format coco``) on ``ann_file``,
    with the results' own boxes and scores; in the shape of an :func:`evaluate` report ("oks").

    Raises:
        PoseCliError: unreadable results, or image ids the dataset does not have.
    """
    coco = _quiet_coco(Path(ann_file))
    try:
        results = json.loads(Path(results_file).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise PoseCliError(f"cannot read COCO results {results_file}: {exc}") from exc
    unknown = sorted({r.get("image_id") for r in results} - set(coco.getImgIds()), key=str)
    if unknown:
        raise PoseCliError(f"{results_file}: image_id {unknown[0]} (and {len(unknown) - 1} more) not in {ann_file}; "
                           "write the results with posecli run --coco-dataset to take the dataset's ids")
    persons = sum(1 for a in coco.dataset["annotations"] if a.get("num_keypoints", 0) > 0 and not a.get("iscrowd", 0))
    return {"name": Path(results_file).name, "window": None, "boxes": "results", "persons": persons,
            "images": len(coco.getImgIds()), "results": len(results), "oks": oks_metrics(coco, results),
            "oks_detector": None, "pck": None, "ms_per_person": None, "ms_per_person_detector": None}


def run_eval(weights_path: str | Path | None, ann_file: str | Path, image_dir: str | Path | None = None,
             video: str | Path | None = None, baselines: Sequence[str] = ("movenet", "blazepose"),
             boxes: str = "gt", device: str = "cpu", steps: int | None = None, window: int | None = None,
             out_json: str | Path | None = None, detector: Callable[[Frame], Detections] | None = None,
             baseline_dirs: Sequence[str | Path] = (), seed: int = 0, include_model: bool = True,
             progress: Callable[[int, int], None] | None = None, results_files: Sequence[str | Path] = (),
             rotations: bool = True) -> dict:
    """What ``posecli eval`` runs: our model (if ``weights_path``) and the baselines, same boxes.

    Args:
        weights_path: our DiffPose checkpoint (``None``: the default manifest entry).
        ann_file: COCO keypoint JSON, or with ``video`` its ``.pseudo.json``.
        image_dir: image folder for ``ann_file`` (default :func:`default_image_dir`).
        video: a clip; switches to video evaluation against the pseudo-labels in ``ann_file``.
        baselines: names of ``eval.baselines.BASELINE_ENTRIES`` ("movenet", "thunder", …).
        boxes: "gt", "detector" or "both" (image sets; ``detector`` must be given for the latter two).
        device, steps, window, seed: for our model (``None``: the checkpoint's values); ``window``
            is also the T of the video comparison.
        out_json: where to write the report (atomically).
        detector: ``detector(frame) -> Detections`` for detector boxes.
        baseline_dirs: extra folders searched for the baselines' TFLite files.
        include_model: ``False`` evaluates the baselines only.
        progress: ``progress(done, total)``, called per image / frame of each pass.
        results_files: COCO results files (``posecli run --format coco``) scored on ``ann_file``
            as they are (:func:`score_results`), next to the models; image sets only.
        rotations: our model also looks at each person of an image set turned
            (``PoseModel.still_heatmaps``), as ``posecli run`` does with photos.

    Returns:
        The report: ``{"format": "posecli-eval/1", "kind": "images"|"video", ...,
        "models": {name: metrics}}``.
    """
    from posecli.eval.baselines import load_baseline

    models: list[TopDownPoseModel] = []
    if include_model:
        models.append(load_diffpose(weights_path, device=device, steps=steps, window=window, seed=seed,
                                    rotations=rotations))
    models.extend(load_baseline(name, baseline_dirs) for name in baselines)
    if not models and not results_files:
        raise PoseCliError("nothing to evaluate: give weights, a baseline or a results file")
    if results_files and video is not None:
        raise PoseCliError("--results scores COCO results files on an image set, not on --video")

    if video is not None:
        report = {"format": REPORT_FORMAT, "kind": "video",
                  **evaluate_video(models, ann_file, video, progress=progress)}
    else:
        folder = Path(image_dir) if image_dir is not None else default_image_dir(ann_file)
        results = {}
        for model in models:
            results[model.name] = evaluate(model, ann_file, folder, boxes=boxes, detector=detector,
                                           progress=progress)
        for path in results_files:
            results[Path(path).name] = score_results(ann_file, path)
        first = next(iter(results.values()))
        report = {
            "format": REPORT_FORMAT, "kind": "images", "boxes": boxes,
            "dataset": {"ann_file": str(ann_file), "image_dir": str(folder), "images": first["images"],
                        "persons": first["persons"]},
            "pck_normalisation": PCK_NORMALISATION,
            "models": results,
        }
    if include_model:
        report["weights"] = None if weights_path is None else str(weights_path)
        report["steps"] = steps
        report["device"] = device
        if video is None:
            report["rotations"] = rotations
    if out_json is not None:
        write_json_atomic(out_json, report)
    return report
