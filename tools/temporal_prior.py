"""A DiffPose v2 checkpoint with the temporal prior switched on, over a wider window.

The trained weights are kept (``diffpose_movenet.with_temporal_prior``); the shipped
``diffpose.coco17-v2`` is the second training run's checkpoint made this way::

    python tools/temporal_prior.py runs/v2m/final.pt weights/diffpose_coco17_v2.pt --window 5
"""

from __future__ import annotations

import argparse
from pathlib import Path

# Config keys the model itself defines; save_checkpoint derives them again from the new model.
MODEL_KEYS = ("arch", "model", "window", "input_size", "heatmap_size", "timesteps")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="a diffpose-movenet checkpoint")
    parser.add_argument("out", type=Path, help="where to write the new checkpoint")
    parser.add_argument("--window", type=int, default=5, help="frames of the temporal prior (odd)")
    args = parser.parse_args()

    from posecli.models.checkpoint import load_checkpoint, save_checkpoint
    from posecli.models.diffpose_movenet import with_temporal_prior

    model, config = load_checkpoint(args.source)
    widened = with_temporal_prior(model, args.window)
    written = save_checkpoint(args.out, widened, {k: v for k, v in config.items() if k not in MODEL_KEYS})
    print(f"{args.out}: window {written['window']}, trained parts on {widened.learned_window} frames")


if __name__ == "__main__":
    main()
