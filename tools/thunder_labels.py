"""MoveNet Thunder teacher labels for the shared clips (training targets and evaluation references).

For a clip with a shared ``<name>.pseudo.json`` its boxes and tracks are kept and Thunder's
keypoints replace the old teacher's (``posecli.train.relabel.relabel_clip``). For a clip without
one (``vtest``, ``mmpose_demo``), boxes and track ids come from a ``posecli run`` of the clip
(detector + tracker), written as a pseudo-label file first. Both a raw (per-frame) and a
temporally smoothed file are written (``--mirror``: Thunder on each crop and on its mirror image,
merged as DiffPose v2's prior is)::

    POSECLI_HOME=../shared python tools/thunder_labels.py --out runs/labels       # every shared clip
    POSECLI_HOME=../shared python tools/thunder_labels.py --out runs/labels vtest # some
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
SMOOTH_WINDOW = 7


def boxes_from_run(video: Path, out_json: Path) -> Path:
    """A pseudo-label file (boxes, track ids, no keypoints yet) from ``posecli run`` on ``video``."""
    from posecli import Pipeline, PipelineConfig

    with tempfile.TemporaryDirectory() as tmp:
        Pipeline(PipelineConfig(device="cpu", smooth="none")).process(video, tmp)
        doc = json.loads((Path(tmp) / f"{video.stem}.json").read_text())
    source = doc["source"]
    images, annotations = [], []
    for frame in doc["frames"]:
        images.append({"id": frame["frame"] + 1, "video_id": 1, "frame_index": frame["frame"],
                       "width": source["width"], "height": source["height"]})
        for pose in frame["poses"]:
            x1, y1, x2, y2 = pose["bbox"]
            annotations.append({"id": len(annotations) + 1, "image_id": frame["frame"] + 1, "category_id": 1,
                                "track_id": pose["track_id"], "bbox": [x1, y1, x2 - x1, y2 - y1],
                                "area": (x2 - x1) * (y2 - y1), "keypoints": [0.0] * 51,
                                "score": pose["bbox_score"]})
    data = {"videos": [{"id": 1, "file_name": str(video.resolve()), "fps": source["fps"],
                        "width": source["width"], "height": source["height"],
                        "num_frames": source["num_frames"]}],
            "images": images, "annotations": annotations,
            "categories": [{"id": 1, "name": "person"}]}
    out_json.write_text(json.dumps(data))
    return out_json


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("clips", nargs="*", help="clip names (default: every video in shared/data/videos)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--trunk", type=Path, default=SHARED / "weights/movenet-thunder.json")
    parser.add_argument("--mirror", action="store_true",
                        help="merge Thunder on each crop and its mirror image (files *.thunder-mirror*)")
    args = parser.parse_args(argv)

    import torch

    from posecli.models.movenet import load_movenet
    from posecli.train.relabel import relabel_clip, smooth_labels

    torch.set_num_threads(2)
    model = load_movenet(args.trunk)
    videos = SHARED / "data/videos"
    names = args.clips or sorted(p.stem for p in videos.glob("*.mp4"))
    args.out.mkdir(parents=True, exist_ok=True)
    for name in names:
        pseudo = videos / f"{name}.pseudo.json"
        if not pseudo.is_file():
            pseudo = boxes_from_run(videos / f"{name}.mp4", args.out / f"{name}.boxes.pseudo.json")
        kind = "thunder-mirror" if args.mirror else "thunder"
        raw = args.out / f"{name}.{kind}.pseudo.json"
        relabel_clip(pseudo, raw, model, args.mirror)
        smooth_labels(raw, args.out / f"{name}.{kind}-smooth.pseudo.json", SMOOTH_WINDOW)
        print(name, file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
