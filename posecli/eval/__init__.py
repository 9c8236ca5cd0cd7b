"""Measuring posecli: keypoint metrics (``metrics``), COCO and clip evaluation (``evaluate``),
tracking metrics (``tracking_eval``), third-party baselines (``baselines``) and the speed/accuracy
benchmark (``bench``). Not imported by inference code."""
