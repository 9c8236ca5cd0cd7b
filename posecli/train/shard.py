"""Compact training shards: every person of the training sources as a small JPEG patch.

A GPU machine receives the working tree in parts of at most 64 MiB, so the full-size training
images (LSP-Extended, COCO, decoded clip frames) do not travel as they are. ``posecli shard``
cuts each person's neighbourhood out of its image(s) — the model's crop region (box × 1.25,
aspect-corrected) enlarged by ``CONTEXT`` so that scale, rotation and synthetic-motion
augmentation still find real pixels — at no more than ``RESOLUTION`` × the model's input
resolution, and packs the JPEG patches with their labels into ``shard_NNN.npz`` files of at most
``max_mb`` each, plus ``manifest.json``. ``posecli train --data SHARD_DIR`` then trains from
them exactly as from the original sources: each source of the manifest keeps its mixing weight,
and labels are stored raw (human labels, teacher face labels, left/right-suspect joints), so
``--face-teacher-weight`` and the suspect rule apply at training time as for the JSON files.

Patch pixel centres follow the frame convention: frame point x maps to (x − x0 + 0.5)·s − 0.5.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from posecli.crop import BOX_ENLARGE, crop_window_xywh
from posecli.errors import PoseCliError
from posecli.train.datasets import PersonLabels, PersonSample

MANIFEST = "manifest.json"
SHARD_FORMAT = "posecli-shard/1"
CONTEXT = 1.5  # patch side / crop side
RESOLUTION = 1.0  # most patch pixels per model-input pixel (zoom-in augmentation upsamples)
JPEG_QUALITY = 90


@dataclass(frozen=True)
class Patch:
    """One person's patch: the frames cut and scaled, and the frame → patch mapping."""

    frames: list[np.ndarray]
    origin: np.ndarray  # [2] frame pixel (x0, y0) of the patch's top-left pixel before scaling
    scale: np.ndarray  # [2] patch pixels per frame pixel (x, y)

    def map(self, xy: np.ndarray) -> np.ndarray:
        """Frame points (…×2) to patch points."""
        return (np.asarray(xy, np.float64) - self.origin + 0.5) * self.scale - 0.5


def cut_patch(frames: list[np.ndarray], box_xyxy: np.ndarray, input_hw: tuple[int, int]) -> Patch:
    """The region around ``box_xyxy`` (the same for every frame), black outside the frame."""
    cx, cy, w, h = crop_window_xywh(box_xyxy, input_hw, BOX_ENLARGE * CONTEXT)
    x0, y0 = math.floor(cx - w / 2), math.floor(cy - h / 2)
    width, height = max(math.ceil(w), 1), max(math.ceil(h), 1)
    r = min(1.0, RESOLUTION * input_hw[0] * CONTEXT / h)
    out_w, out_h = max(round(width * r), 1), max(round(height * r), 1)
    cut = []
    for frame in frames:
        fh, fw = frame.shape[:2]
        region = np.zeros((height, width, 3), np.uint8)
        sx0, sy0 = max(x0, 0), max(y0, 0)
        sx1, sy1 = min(x0 + width, fw), min(y0 + height, fh)
        if sx1 > sx0 and sy1 > sy0:
            region[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = frame[sy0:sy1, sx0:sx1]
        if (out_w, out_h) != (width, height):
            region = cv2.resize(region, (out_w, out_h), interpolation=cv2.INTER_AREA)
        cut.append(region)
    return Patch(cut, np.array([x0, y0], np.float64), np.array([out_w / width, out_h / height]))


class _ShardWriter:
    """Appends persons and writes ``shard_NNN.npz`` files of at most ``max_bytes`` each."""

    def __init__(self, out_dir: Path, max_bytes: int) -> None:
        self.out_dir, self.max_bytes = out_dir, max_bytes
        self.files: list[str] = []
        self._reset()

    def _reset(self) -> None:
        self.jpegs: list[bytes] = []
        self.rows: dict[str, list] = {k: [] for k in ("frame_start", "source", "box", "xy", "weights",
                                                      "teacher", "suspect")}
        self.size = 0

    def add(self, source: int, frames: list[np.ndarray], box: np.ndarray, labels: PersonLabels) -> None:
        encoded = []
        for frame in frames:
            ok, data = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
            if not ok:
                raise PoseCliError("JPEG encoding failed")
            encoded.append(data.tobytes())
        added = sum(len(e) for e in encoded) + 512  # labels and index entries, roughly
        if self.jpegs and self.size + added > self.max_bytes:
            self.flush()
        self.rows["frame_start"].append(len(self.jpegs))
        self.jpegs.extend(encoded)
        self.rows["source"].append(source)
        self.rows["box"].append(box)
        self.rows["xy"].append(labels.xy)
        self.rows["weights"].append(labels.weights)
        self.rows["teacher"].append(labels.teacher)
        self.rows["suspect"].append(labels.suspect)
        self.size += added

    def flush(self) -> None:
        if not self.jpegs:
            return
        offsets = np.cumsum([0] + [len(j) for j in self.jpegs]).astype(np.int64)
        name = f"shard_{len(self.files):03d}.npz"
        tmp = self.out_dir / f".{name}.{os.getpid()}.tmp"
        with open(tmp, "wb") as f:
            np.savez(f, jpeg=np.frombuffer(b"".join(self.jpegs), np.uint8), jpeg_offsets=offsets,
                     frame_start=np.array(self.rows["frame_start"] + [len(self.jpegs)], np.int64),
                     source=np.array(self.rows["source"], np.int32),
                     box=np.array(self.rows["box"], np.float32), xy=np.array(self.rows["xy"], np.float32),
                     weights=np.array(self.rows["weights"], np.float32),
                     teacher=np.array(self.rows["teacher"], np.float32),
                     suspect=np.array(self.rows["suspect"], bool))
        os.replace(tmp, self.out_dir / name)
        self.files.append(name)
        self._reset()


def write_shards(sources: list, mix_weights: list[float], out_dir: str | Path, input_hw: tuple[int, int],
                 window: int, max_mb: float = 48.0, progress=None) -> dict:  # noqa: ANN001 - callback
    """Pack every person of ``sources`` into shards under ``out_dir``; returns the manifest.

    Args:
        sources: training sources with ``labels(i)`` and ``load(i)`` (``CocoKeypoints`` opened
            with teacher labels kept and no suspect rule, ``VideoPseudoLabels``).
        mix_weights: each source's mixing weight, recorded for training.
        input_hw: the model input the patches are sized for.
        window: T of the clip sources' windows (still images keep one frame).
        max_mb: largest shard file.
        progress: called with (persons done, persons in all) now and then.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if (out / MANIFEST).exists():
        raise PoseCliError(f"{out} already holds shards; choose an empty folder")
    writer = _ShardWriter(out, int(max_mb * 2**20))
    total = sum(len(s) for s in sources)
    done = 0
    try:
        for k, source in enumerate(sources):
            for i in range(len(source)):
                sample = source.load(i)
                labels = source.labels(i)
                patch = cut_patch(sample.frames, sample.box_xyxy, input_hw)
                teacher = np.concatenate([patch.map(labels.teacher[:, :2]), labels.teacher[:, 2:]], axis=1)
                mapped = PersonLabels(patch.map(labels.xy).astype(np.float32), labels.weights,
                                      teacher.astype(np.float32), labels.suspect)
                box = patch.map(np.asarray(sample.box_xyxy, np.float64).reshape(2, 2)).reshape(4)
                writer.add(k, patch.frames, box.astype(np.float32), mapped)
                done += 1
                if progress is not None and done % 200 == 0:
                    progress(done, total)
        writer.flush()
    except BaseException:  # also Ctrl-C: no half-made shard folder is left behind
        for name in writer.files:
            (out / name).unlink(missing_ok=True)
        raise
    manifest = {"format": SHARD_FORMAT, "window": window, "input_size": list(input_hw),
                "context": CONTEXT, "resolution": RESOLUTION, "files": writer.files,
                "sources": [dict(source.describe(), weight=w, index=k)
                            for k, (source, w) in enumerate(zip(sources, mix_weights))]}
    tmp = out / f".{MANIFEST}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(manifest, indent=1))
    os.replace(tmp, out / MANIFEST)
    return manifest


@dataclass(frozen=True)
class PackedShards:
    """What :func:`pack_training_sets` wrote."""

    persons: int
    files: int
    mib: float


def pack_training_sets(data: Sequence[str], out_dir: str | Path, window: int, input_hw: tuple[int, int],
                       max_mb: float = 48.0, progress=None) -> PackedShards:  # noqa: ANN001 - callback
    """What ``posecli shard`` does: open the training sets as ``posecli train`` would and pack them.

    Args:
        data: ``PATH[:WEIGHT]`` training sets, as given to ``posecli train --data``.
        out_dir, window, input_hw, max_mb, progress: see :func:`write_shards`.

    Raises:
        PoseCliError: a set is already a shard folder, or cannot be read or packed.
    """
    from posecli.train.loop import DatasetSpec, TrainConfig, build_sources  # loop imports this module

    specs = tuple(DatasetSpec.parse(item) for item in data)
    for spec in specs:
        if is_shard_dir(spec.path):
            raise PoseCliError(f"{spec.path} is already a shard folder")
    # Teacher labels kept and no suspect rule: labels are stored raw, the rules apply when training.
    config = TrainConfig(datasets=specs, out_dir=Path(out_dir), window=window, input_size=tuple(input_hw),
                         face_teacher_weight=1.0, drop_lr_suspect=False)
    sources, weights = build_sources(config)
    manifest = write_shards(sources, weights, out_dir, tuple(input_hw), window, max_mb, progress=progress)
    size = sum((Path(out_dir) / f).stat().st_size for f in manifest["files"]) / 2**20
    return PackedShards(sum(s["persons"] for s in manifest["sources"]), len(manifest["files"]), size)


def is_shard_dir(path: str | Path) -> bool:
    return (Path(path) / MANIFEST).is_file()


class ShardSource:
    """The persons of one original source, read back from a shard folder.

    Labels go through the same rules as in :class:`~posecli.train.datasets.CocoKeypoints`
    (:meth:`PersonLabels.resolve`), so a shard trains like the files it was made from.
    """

    def __init__(self, shard_dir: Path, shards: list[dict[str, np.ndarray]], index: int, name: str,
                 face_teacher_weight: float, drop_lr_suspect: bool) -> None:
        """
        Args:
            shard_dir: the folder (for messages).
            shards: the arrays of every shard file, loaded once and shared by the folder's sources.
            index: this source's number in the manifest.
        """
        self.name = f"{name} (shard)"
        self.shard_dir = shard_dir
        self._shards = [(data["jpeg"], data["jpeg_offsets"], data["frame_start"]) for data in shards]
        self.items: list[tuple[int, int, np.ndarray, np.ndarray, np.ndarray]] = []
        for shard, data in enumerate(shards):
            for row in np.flatnonzero(data["source"] == index):
                labels = PersonLabels(data["xy"][row], data["weights"][row], data["teacher"][row],
                                      data["suspect"][row])
                xy, weights = labels.resolve(face_teacher_weight, drop_lr_suspect)
                if weights.sum() > 0:
                    self.items.append((shard, int(row), data["box"][row].astype(np.float64), xy, weights))

    def __len__(self) -> int:
        return len(self.items)

    def load(self, index: int) -> PersonSample:
        shard, row, box, xy, weights = self.items[index]
        jpeg, offsets, frame_start = self._shards[shard]
        frames = []
        for j in range(frame_start[row], frame_start[row + 1]):
            image = cv2.imdecode(jpeg[offsets[j]:offsets[j + 1]], cv2.IMREAD_COLOR)
            if image is None:
                raise PoseCliError(f"{self.shard_dir}: a damaged JPEG in shard {shard}")
            frames.append(image)
        return PersonSample(frames, box, xy, weights)

    def describe(self) -> dict:
        return {"name": self.name, "file": str(self.shard_dir), "persons": len(self)}


def open_shards(shard_dir: str | Path, window: int, face_teacher_weight: float,
                drop_lr_suspect: bool) -> tuple[list[ShardSource], list[float]]:
    """The sources of a shard folder and their mixing weights (as recorded when it was made).

    Raises:
        PoseCliError: not a shard folder, another format, or clip windows of another length.
    """
    folder = Path(shard_dir)
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise PoseCliError(f"{folder}: not a readable shard folder ({exc})") from exc
    if manifest.get("format") != SHARD_FORMAT:
        raise PoseCliError(f"{folder}: unknown shard format {manifest.get('format')!r}")
    clips = [s for s in manifest["sources"] if "video" in s]
    if clips and manifest["window"] != window:
        raise PoseCliError(f"{folder} holds {manifest['window']}-frame clip windows; train with "
                           f"--window {manifest['window']} or make the shards again")
    shards = [dict(np.load(folder / file)) for file in manifest["files"]]
    sources = [ShardSource(folder, shards, s["index"], s["name"], face_teacher_weight, drop_lr_suspect)
               for s in manifest["sources"]]
    return sources, [float(s["weight"]) for s in manifest["sources"]]
