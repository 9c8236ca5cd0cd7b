"""Teacher labels for the clips: MoveNet Thunder run on every pseudo-labelled box, optionally smoothed.

``relabel_clip`` reads a ``*.pseudo.json`` (boxes and tracks of the shared clips), runs Thunder
(our PyTorch port, ``models/movenet.py``) top-down on each box with Thunder's own framing (square
crop of 1.15 × the longer box side, 256×256) and writes a file of the same format whose keypoints
are Thunder's, confidence kept. ``smooth_labels`` smooths each track's joints of such a file over
time (``smooth.savgol_smooth``): training targets that are consistent from frame to frame, which a
model that sees the neighbouring frames can learn from and a single-frame model cannot.
"""

from __future__ import annotations

import json
import logging
import os
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from posecli.crop import crop_transform, warp_crop
from posecli.decode import heatmaps_to_frame
from posecli.models.diffpose_movenet import decode_views
from posecli.models.movenet import MoveNet

log = logging.getLogger("posecli.train")

THUNDER_SIDE = 256
THUNDER_ENLARGE = 1.15


def thunder_keypoints(model: MoveNet, image: np.ndarray, boxes_xyxy: np.ndarray,
                      mirror: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """MoveNet single-pose decode of each box, in frame pixels.

    Args:
        model: a loaded MoveNet (Thunder).
        image: H×W×3 uint8 BGR frame.
        boxes_xyxy: [N, 4].
        mirror: merge the decodes of each crop and its mirror image, as DiffPose v2's prior does
            (``diffpose_movenet.decode_views``).

    Returns:
        ``xy`` [N, K, 2] frame pixels (pixel centres at integers), ``scores`` [N, K].
    """
    boxes = np.asarray(boxes_xyxy, np.float64).reshape(-1, 4)
    if len(boxes) == 0:
        return np.zeros((0, model.num_keypoints, 2), np.float32), np.zeros((0, model.num_keypoints), np.float32)
    hw = (THUNDER_SIDE, THUNDER_SIDE)
    mats = [crop_transform(b, hw, enlarge=THUNDER_ENLARGE) for b in boxes]
    crops = np.stack([warp_crop(image, m, hw)[..., ::-1] for m in mats])  # RGB
    with torch.inference_mode():
        x = torch.from_numpy(np.ascontiguousarray(crops)).permute(0, 3, 1, 2).float()
        # The same decode and cell → heatmap pixel mapping as DiffPose v2's prior.
        _, xy, scores = decode_views(model, x, mirror)
    xy = heatmaps_to_frame(xy.numpy(), 4, np.stack(mats))
    return xy, scores.numpy().astype(np.float32)


def relabel_clip(pseudo_json: str | Path, out_json: str | Path, model: MoveNet, mirror: bool = False) -> dict:
    """Write Thunder teacher labels (per frame) for every annotation of a pseudo-labelled clip.

    Args:
        pseudo_json: source ``*.pseudo.json`` (its boxes, tracks and frames are kept).
        out_json: destination (written atomically); its ``videos[0].file_name`` is the clip's
            absolute path, so the file can live anywhere.
        model: MoveNet Thunder.
        mirror: see :func:`thunder_keypoints`.

    Returns:
        Summary: annotations, mean confidence.
    """
    from posecli.video import open_video

    src = Path(pseudo_json)
    data = json.loads(src.read_text())
    video = data["videos"][0]
    video_path = (src.parent / video["file_name"]).resolve()
    frame_of = {im["id"]: im["frame_index"] for im in data["images"]}
    by_frame: dict[int, list[dict]] = defaultdict(list)
    for ann in data["annotations"]:
        by_frame[frame_of[ann["image_id"]]].append(ann)
    source = open_video(video_path)
    try:
        for frame in source:
            anns = by_frame.get(frame.index, [])
            if not anns:
                continue
            boxes = np.array([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2],
                               a["bbox"][1] + a["bbox"][3]] for a in anns])
            xy, scores = thunder_keypoints(model, frame.image, boxes, mirror)
            for ann, p, s in zip(anns, xy, scores):
                ann["keypoints"] = np.concatenate([p, s[:, None]], axis=1).round(2).ravel().tolist()
                ann["num_keypoints"] = int((s >= 0.3).sum())
    finally:
        source.close()
    video["file_name"] = str(video_path)
    data.setdefault("info", {})["teacher"] = {"model": "movenet-thunder (posecli port)", "crop": "square 1.15x",
                                              "mirror": mirror, "source": src.name}
    _write_json(out_json, data)
    conf = [k for a in data["annotations"] for k in a["keypoints"][2::3]]
    summary = {"annotations": len(data["annotations"]), "mean_confidence": float(np.mean(conf)) if conf else 0.0}
    log.info("relabelled %s → %s: %s", src.name, out_json, summary)
    return summary


def smooth_labels(pseudo_json: str | Path, out_json: str | Path, window: int) -> None:
    """Each track's keypoints of a pseudo-label file smoothed over its frames (Savitzky–Golay,
    ``smooth.savgol_smooth``, order 2), confidences kept; written atomically to ``out_json``."""
    from posecli.smooth import savgol_smooth

    data = json.loads(Path(pseudo_json).read_text())
    frame_of = {im["id"]: im["frame_index"] for im in data["images"]}
    tracks: dict[int, list[dict]] = defaultdict(list)
    for ann in data["annotations"]:
        tracks[ann["track_id"]].append(ann)
    for anns in tracks.values():
        anns.sort(key=lambda a: frame_of[a["image_id"]])
        frames = np.array([frame_of[a["image_id"]] for a in anns])
        kp = np.array([a["keypoints"] for a in anns], np.float64).reshape(len(anns), -1, 3)
        # Dense frame axis (NaN where the track is absent) so that gaps are gaps.
        dense = np.full((frames.max() - frames.min() + 1, kp.shape[1], 2), np.nan)
        conf = np.zeros(dense.shape[:2])
        dense[frames - frames.min()] = kp[..., :2]
        conf[frames - frames.min()] = kp[..., 2]
        smoothed = savgol_smooth(dense, conf, window=window, polyorder=2, score_threshold=0.0)
        for a, f, row in zip(anns, frames, kp):
            s = smoothed[f - frames.min()]
            row[:, :2] = np.where(np.isfinite(s), s, row[:, :2])
            a["keypoints"] = row.round(2).ravel().tolist()
    data.setdefault("info", {}).setdefault("teacher", {})["smooth_window"] = window
    _write_json(out_json, data)


def _write_json(path: str | Path, data: dict) -> None:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, out)
