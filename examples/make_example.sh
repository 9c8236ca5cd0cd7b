#!/usr/bin/env bash
# Cut the first N frames of a video into a new mp4 (OpenCV, mp4v): make_example.sh IN OUT [N]
set -euo pipefail
in=${1:?usage: make_example.sh IN OUT [FRAMES]}
out=${2:?usage: make_example.sh IN OUT [FRAMES]}
frames=${3:-60}
here=$(cd "$(dirname "$0")/.." && pwd)
"$here/.venv/bin/python" - "$in" "$out" "$frames" <<'PY'
import sys

import cv2

src, dst, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
cap = cv2.VideoCapture(src)
if not cap.isOpened():
    sys.exit(f"error: cannot open {src}")
fps = cap.get(cv2.CAP_PROP_FPS) or 30.0
ok, frame = cap.read()
if not ok:
    sys.exit(f"error: no frame in {src}")
h, w = frame.shape[:2]
writer = cv2.VideoWriter(dst, cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
written = 0
while ok and written < n:
    writer.write(frame)
    written += 1
    ok, frame = cap.read()
writer.release()
print(f"{dst}: {written} frames, {w}x{h}, {fps:.2f} fps")
PY
