"""A DiffPose v2 checkpoint with the temporal prior switched on, over a wider window.

The trained weights are kept (``diffpose_movenet.with_temporal_prior``); the shipped
``diffpose.coco17-v2`` is the second training run's checkpoint made this way::

    python tools/temporal_prior.py runs/v2m/final.pt weights/diffpose_coco17_v2.pt --window 5
"""

from __future__ import annotations

import argparse
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="a diffpose-movenet checkpoint")
    parser.add_argument("out", type=Path, help="where to write the new checkpoint")
    parser.add_argument("--window", type=int, default=5, help="frames of the temporal prior (odd)")
    args = parser.parse_args()

    from posecli.models.checkpoint import load_checkpoint, model_keys, save_checkpoint
    from posecli.models.diffpose_movenet import with_temporal_prior

    model, config = load_checkpoint(args.source)
    widened = with_temporal_prior(model, args.window)
    # The settings of the source (steps, schedule, training record, …); the model's own keys anew.
    settings = {k: v for k, v in config.items() if k not in model_keys(model)}
    written = save_checkpoint(args.out, widened, settings)
    print(f"{args.out}: window {written['window']}, trained parts on {widened.learned_window} frames")


if __name__ == "__main__":
    main()
