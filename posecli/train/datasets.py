"""Training data: COCO-format keypoint sets, pseudo-labelled video clips, and their mixture.

A *source* lists persons and loads one as a :class:`PersonSample` (frames + key-frame box +
joints + per-joint loss weights). :class:`MixedDataset` draws persons from several sources with
given probabilities and turns them into augmented windows and heatmap targets. Every random
choice of item ``i`` comes from a generator seeded with ``(seed, i)``, so a run is reproducible
whatever the number of DataLoader workers, and a resumed run sees the same stream.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from posecli.crop import BOX_ENLARGE
from posecli.errors import PoseCliError
from posecli.pseudo_labels import read_pseudo_labels
from posecli.train.augment import AugmentConfig, make_example
from posecli.train.targets import HEATMAP_SIGMA, HEATMAP_STRIDE, gaussian_heatmaps

log = logging.getLogger(__name__)

FACE = (0, 1, 2, 3, 4)
ARMS = (5, 6, 7, 8, 9, 10)
LEGS = (11, 12, 13, 14, 15, 16)


@dataclass(frozen=True)
class PersonSample:
    """One labelled person, before augmentation.

    Attributes:
        frames: one still image, or T consecutive clip frames with the key frame at T // 2;
            H×W×3 uint8 BGR.
        box_xyxy: [4] key-frame person box.
        keypoints: [K, 2] key-frame joints in frame pixels.
        weights: [K] float loss weights, 0 for unlabelled joints.
    """

    frames: list[np.ndarray]
    box_xyxy: np.ndarray
    keypoints: np.ndarray
    weights: np.ndarray


@dataclass(frozen=True)
class PersonLabels:
    """A person's labels as the data gives them, before the training rules.

    Attributes:
        xy: [K, 2] joints (frame pixels).
        weights: [K] loss weights of the dataset's own labels (0: unlabelled).
        teacher: [K, 3] teacher labels (x, y, confidence); confidence 0 where there are none.
        suspect: [K] joints of limb groups flagged as likely left/right swapped.
    """

    xy: np.ndarray
    weights: np.ndarray
    teacher: np.ndarray
    suspect: np.ndarray

    @staticmethod
    def plain(xy: np.ndarray, weights: np.ndarray) -> "PersonLabels":
        k = len(weights)
        return PersonLabels(xy, weights, np.zeros((k, 3), np.float32), np.zeros(k, bool))

    def resolve(self, face_teacher_weight: float, drop_lr_suspect: bool,
                teacher_min_conf: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
        """(xy [K, 2] float64, weights [K] float32) for the loss.

        ``drop_lr_suspect`` gives suspect joints weight 0; ``face_teacher_weight`` > 0 fills
        unlabelled face joints (0–4) with teacher labels of confidence >= ``teacher_min_conf``.
        """
        xy = np.asarray(self.xy, np.float64).copy()
        weights = np.asarray(self.weights, np.float32).copy()
        if drop_lr_suspect:
            weights[np.asarray(self.suspect, bool)] = 0.0
        if face_teacher_weight > 0:
            for j in FACE:
                if weights[j] == 0 and self.teacher[j, 2] >= teacher_min_conf:
                    xy[j], weights[j] = self.teacher[j, :2], face_teacher_weight
        return xy, weights


def read_image(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise PoseCliError(f"cannot read image {path}")
    return image


def _xywh_to_xyxy(bbox: list[float]) -> np.ndarray:
    x, y, w, h = (float(v) for v in bbox)
    return np.array([x, y, x + w, y + h], np.float64)


def default_image_dir(json_path: Path) -> Path:
    """The image folder next to a COCO JSON: ``images/`` (lspet, fixtures) or ``<stem>2017/``."""
    for candidate in (json_path.parent / "images", json_path.parent / f"{json_path.stem}2017"):
        if candidate.is_dir():
            return candidate
    raise PoseCliError(f"no image folder found next to {json_path} (looked for images/ and "
                       f"{json_path.stem}2017/)")


class CocoKeypoints:
    """Persons of a COCO-format keypoint JSON (coco-mini, LSP-Extended, fixtures).

    Args:
        json_path: annotation file.
        image_dir: image folder (default: found next to the JSON).
        face_teacher_weight: LSP-Extended has no human face labels; when > 0, face joints
            (0–4) of ``pseudo_keypoints`` (MoveNet teacher) with confidence >= teacher_min_conf
            enter the loss with this weight. 0 leaves the face unlabelled.
        teacher_min_conf: confidence threshold for teacher joints.
        drop_lr_suspect: give weight 0 to limb groups flagged in ``lr_swap_suspect`` (likely
            left/right swapped human labels).
        limit: keep only the first ``limit`` persons (in file order).
    """

    def __init__(self, json_path: Path | str, image_dir: Path | str | None = None,
                 face_teacher_weight: float = 0.0, teacher_min_conf: float = 0.3,
                 drop_lr_suspect: bool = True, limit: int | None = None) -> None:
        self.json_path = Path(json_path)
        if not self.json_path.is_file():
            raise PoseCliError(f"annotation file not found: {self.json_path}")
        self.image_dir = Path(image_dir) if image_dir else default_image_dir(self.json_path)
        data = json.loads(self.json_path.read_text())
        files = {im["id"]: im["file_name"] for im in data["images"]}
        self.items: list[tuple[str, np.ndarray, np.ndarray, np.ndarray, int]] = []
        self._labels: list[PersonLabels] = []
        self.num_teacher_face = 0
        for ann in data["annotations"]:
            if ann.get("iscrowd", 0) or ann["bbox"][2] < 2 or ann["bbox"][3] < 2:
                continue
            kp = np.asarray(ann["keypoints"], np.float64).reshape(-1, 3)
            suspect = np.zeros(len(kp), bool)
            for group in ann.get("lr_swap_suspect", []):
                suspect[list(ARMS if group == "arms" else LEGS)] = True
            teacher = (np.asarray(ann["pseudo_keypoints"], np.float32).reshape(-1, 3)
                       if "pseudo_keypoints" in ann else np.zeros((len(kp), 3), np.float32))
            labels = PersonLabels(kp[:, :2], (kp[:, 2] > 0).astype(np.float32), teacher, suspect)
            xy, weights = labels.resolve(face_teacher_weight, drop_lr_suspect, teacher_min_conf)
            if weights.sum() <= 0:
                continue
            self.num_teacher_face += int(np.sum((weights > 0) & (labels.weights == 0)))
            self.items.append((files[ann["image_id"]], _xywh_to_xyxy(ann["bbox"]), xy, weights,
                               int(ann["id"])))
            self._labels.append(labels)
            if limit is not None and len(self.items) >= limit:
                break
        self.name = f"{self.json_path.parent.name}/{self.json_path.name}"

    def __len__(self) -> int:
        return len(self.items)

    def load(self, index: int) -> PersonSample:
        file_name, box, xy, weights, _ = self.items[index]
        return PersonSample([read_image(self.image_dir / file_name)], box, xy, weights)

    def labels(self, index: int) -> PersonLabels:
        return self._labels[index]

    def describe(self) -> dict:
        return {"name": self.name, "file": str(self.json_path), "persons": len(self),
                "teacher_face_joints": self.num_teacher_face}


class VideoPseudoLabels:
    """Tracked persons of a ``*.pseudo.json`` clip, as real T-frame windows.

    Frames t-δ … t+δ (clamped at the clip ends, i.e. edge replication) are decoded once and
    cached as JPEGs under ``cache_dir``, downscaled so the longer side is at most ``max_side``
    (the pose2sim clips are 1920 px tall, and person crops are 256 px: full-size frames only cost
    decode time). Persons of ``static_track`` tracks (a skeleton model on a stand) are skipped.
    The label third value is a confidence: joints with confidence >= min_conf get weight
    ``label_weight``, the others 0.

    Args:
        pseudo_json: the pseudo-label file.
        window: T (odd).
        cache_dir: where decoded frames are cached.
        video_path: the clip (default: ``videos[0].file_name`` next to the JSON).
        min_conf: confidence threshold for a labelled joint.
        label_weight: loss weight of pseudo-labelled joints.
        max_side: longest side of cached frames.
    """

    def __init__(self, pseudo_json: Path | str, window: int, cache_dir: Path | str,
                 video_path: Path | str | None = None, min_conf: float = 0.3,
                 label_weight: float = 1.0, max_side: int = 960) -> None:
        self.json_path = Path(pseudo_json)
        labels = read_pseudo_labels(self.json_path)
        self.video_path = Path(video_path) if video_path else self.json_path.parent / labels.video_file
        self.num_frames = labels.num_frames
        self.scale = min(1.0, max_side / max(labels.width, labels.height))
        self.window = window
        delta = window // 2
        self.items: list[tuple[int, np.ndarray, np.ndarray, np.ndarray]] = []
        for person in labels.moving():
            kp = person.keypoints
            weights = np.where(kp[:, 2] >= min_conf, label_weight, 0.0).astype(np.float32)
            if weights.sum() <= 0:
                continue
            s = self.scale  # pixel centres at integers: x' = (x + 0.5) s - 0.5
            xy = (kp[:, :2] + 0.5) * s - 0.5
            box = (person.box_xyxy + 0.5) * s - 0.5
            self.items.append((person.frame, box, xy, weights))
        needed = sorted({min(max(f + d, 0), self.num_frames - 1)
                         for f, *_ in self.items for d in range(-delta, delta + 1)})
        self.frame_dir = Path(cache_dir) / f"{self.video_path.stem}_s{max_side}"
        self._cache_frames(needed)
        self.name = self.json_path.name

    def _frame_file(self, index: int) -> Path:
        return self.frame_dir / f"{index:06d}.jpg"

    def _cache_frames(self, needed: list[int]) -> None:
        missing = [f for f in needed if not self._frame_file(f).is_file()]
        if not missing:
            return
        import decord  # decoded once per clip; later runs read the JPEG cache

        self.frame_dir.mkdir(parents=True, exist_ok=True)
        log.info("decoding %d frames of %s into %s", len(missing), self.video_path, self.frame_dir)
        # VP9 clips stop decoding after ~12 frames with automatic threading (data/README.md).
        reader = decord.VideoReader(str(self.video_path), num_threads=1)
        for start in range(0, len(missing), 32):
            chunk = missing[start:start + 32]
            batch = reader.get_batch(chunk).asnumpy()  # [n, H, W, 3] RGB
            for index, rgb in zip(chunk, batch):
                image = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
                if self.scale < 1.0:
                    size = (round(image.shape[1] * self.scale), round(image.shape[0] * self.scale))
                    image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
                tmp = self.frame_dir / f".{index:06d}.{os.getpid()}.tmp.jpg"
                cv2.imwrite(str(tmp), image, [cv2.IMWRITE_JPEG_QUALITY, 95])
                os.replace(tmp, self._frame_file(index))

    def __len__(self) -> int:
        return len(self.items)

    def load(self, index: int) -> PersonSample:
        frame, box, xy, weights = self.items[index]
        delta = self.window // 2
        indices = [min(max(frame + d, 0), self.num_frames - 1) for d in range(-delta, delta + 1)]
        frames = [read_image(self._frame_file(i)) for i in indices]
        return PersonSample(frames, box, xy, weights)

    def labels(self, index: int) -> PersonLabels:
        _, _, xy, weights = self.items[index]
        return PersonLabels.plain(xy, weights)

    def describe(self) -> dict:
        return {"name": self.name, "file": str(self.json_path), "video": str(self.video_path),
                "persons": len(self), "frame_scale": self.scale}


class MixedDataset(torch.utils.data.Dataset):
    """Augmented training windows drawn from several sources with mixing probabilities.

    Item ``i`` picks a source with probability ∝ its weight and a person uniformly within it,
    both from ``default_rng((seed, i))``; ``length`` is the number of items (steps × batch).

    Returns dicts of tensors:
        ``crops`` [T, H, W, 3] uint8 BGR, ``heatmaps`` [K, h, w] float32 in [0, 1],
        ``weights`` [K] float32, ``to_key`` [T, 2, 3] float32 (each frame's crop → the key frame's
        crop, see ``augment.Example.to_key``), ``source`` int.
    """

    def __init__(self, sources: list, mix_weights: list[float], length: int, window: int,
                 input_hw: tuple[int, int], augment: AugmentConfig, seed: int,
                 sigma: float = HEATMAP_SIGMA, stride: int = HEATMAP_STRIDE,
                 enlarge: float = BOX_ENLARGE) -> None:
        if len(sources) != len(mix_weights) or not sources:
            raise ValueError("need one mixing weight per source")
        if any(len(s) == 0 for s in sources):
            raise PoseCliError("a training source has no usable persons: "
                               + ", ".join(s.name for s in sources if len(s) == 0))
        p = np.asarray(mix_weights, np.float64)
        self.sources, self.p = sources, p / p.sum()
        self.length, self.window, self.input_hw = length, window, tuple(input_hw)
        self.augment, self.seed, self.sigma, self.stride = augment, seed, sigma, stride
        self.enlarge = enlarge
        self.heatmap_hw = (self.input_hw[0] // stride, self.input_hw[1] // stride)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng((self.seed, index))
        k = int(rng.choice(len(self.sources), p=self.p))
        source = self.sources[k]
        sample = source.load(int(rng.integers(len(source))))
        ex = make_example(sample.frames, sample.box_xyxy, sample.keypoints, sample.weights,
                          self.window, self.input_hw, self.augment, rng, self.enlarge)
        heatmaps, weights = gaussian_heatmaps(ex.keypoints, ex.weights, self.heatmap_hw,
                                              self.stride, self.sigma)
        return {"crops": torch.from_numpy(ex.crops), "heatmaps": torch.from_numpy(heatmaps),
                "weights": torch.from_numpy(weights), "to_key": torch.from_numpy(ex.to_key()),
                "source": torch.tensor(k)}


def eval_persons(source: CocoKeypoints, window: int, input_hw: tuple[int, int], enlarge: float = BOX_ENLARGE):
    """Un-augmented key-frame crops for validation.

    Yields ``(crops [T, H, W, 3] uint8, matrix [2, 3] frame → crop, keypoints [K, 2],
    weights [K], box_xyxy [4])``; still images are replicated T times.
    """
    no_aug = AugmentConfig.none()
    for i in range(len(source)):
        sample = source.load(i)
        ex = make_example(sample.frames, sample.box_xyxy, sample.keypoints, sample.weights,
                          window, input_hw, no_aug, np.random.default_rng(0), enlarge)
        yield ex.crops, ex.matrices[window // 2], sample.keypoints, sample.weights, sample.box_xyxy

