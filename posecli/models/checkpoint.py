"""DiffPose checkpoints: half-precision state dict + JSON config, loaded with ``weights_only=True``.

File layout (a ``torch.save`` dict): ``{"format": "posecli-checkpoint/1", "config": <JSON str>,
"state_dict": {name: tensor}}``. Floating tensors are stored as float16 (halves the file; the
models are trained in fp32 and lose nothing measurable), integer buffers as they are. The config
holds everything needed to rebuild the exact network and run it: ``arch``, ``model`` (every
``DiffPoseMoveNet`` constructor argument), ``window``, ``input_size``, ``heatmap_size``, ``sigma``,
``steps``, ``signal_scale``, ``schedule``, ``timesteps``, ``mean``/``std`` and whatever else the
caller records (e.g. a ``training`` record).
"""

from __future__ import annotations

import json
import os
import pickle
import tempfile
from pathlib import Path
from typing import Any

import torch

from posecli.errors import PoseCliError

from .diffpose_movenet import DiffPoseMoveNet
from .diffusion import DEFAULT_SIGNAL_SCALE
from .preprocess import RAW_MEAN_RGB, RAW_STD_RGB

FORMAT = "posecli-checkpoint/1"
# Architecture name in a checkpoint's config → the network class it rebuilds.
ARCHITECTURES: dict[str, type] = {"diffpose-movenet": DiffPoseMoveNet}
# Architectures of earlier checkpoints that this version cannot run, with what they were.
RETIRED_ARCHITECTURES = {"diffpose": "DiffPose v1 on EfficientNet-Lite0, diffpose.coco17-v1"}


def arch_of(model) -> str:  # noqa: ANN001 - one of ARCHITECTURES' classes
    """The checkpoint architecture name of ``model``."""
    for name, cls in ARCHITECTURES.items():
        if type(model) is cls:
            return name
    raise TypeError(f"no checkpoint architecture for {type(model).__name__}")


def model_keys(model: DiffPoseMoveNet) -> dict[str, Any]:
    """The config keys ``model`` itself determines: arch, constructor arguments, window, sizes, timesteps."""
    return {
        "arch": arch_of(model),
        "model": dict(model.init_kwargs),
        "window": model.window,
        "input_size": list(model.input_size),
        "heatmap_size": list(model.heatmap_size),
        "timesteps": model.timesteps,
    }


def checkpoint_config(model: DiffPoseMoveNet, config: dict[str, Any] | None = None) -> dict[str, Any]:
    """The full config saved with ``model``: the caller's keys plus what the model defines.

    Keys the model determines (``arch``, ``model``, ``window``, ``input_size``, ``heatmap_size``,
    ``timesteps``) must agree with the caller's if given; ``steps`` (1), ``signal_scale`` (1.0),
    ``schedule`` ("cosine"), ``sigma`` (2.0), ``mean``/``std`` (plain 0..255 RGB) get defaults.
    """
    out: dict[str, Any] = {"sigma": 2.0, "steps": 1, "signal_scale": DEFAULT_SIGNAL_SCALE,
                           "schedule": "cosine", "mean": list(RAW_MEAN_RGB), "std": list(RAW_STD_RGB)}
    out.update(config or {})
    for key, value in model_keys(model).items():
        if key in out and json.loads(json.dumps(out[key])) != json.loads(json.dumps(value)):
            raise ValueError(f"config[{key!r}] = {out[key]!r} disagrees with the model ({value!r})")
        out[key] = value
    return json.loads(json.dumps(out))  # fails early on anything not JSON-able


def save_checkpoint(path: str | os.PathLike, model: DiffPoseMoveNet,
                    config: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write ``model`` (fp16) and its config to ``path`` atomically (temp file + ``os.replace``).

    Args:
        path: destination file (``.pt``).
        model: the network to save (left unchanged).
        config: extra JSON-able settings (sigma, steps, signal_scale, schedule, training, …).

    Returns:
        The config as written.
    """
    full = checkpoint_config(model, config)
    state = {k: (v.detach().to("cpu", torch.float16) if v.is_floating_point() else v.detach().cpu()).contiguous()
             for k, v in model.state_dict().items()}
    payload = {"format": FORMAT, "config": json.dumps(full, sort_keys=True), "state_dict": state}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return full


def load_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu"
                    ) -> tuple[DiffPoseMoveNet, dict[str, Any]]:
    """Rebuild the saved network (fp32, eval mode) on ``device``.

    Only plain tensors and strings are unpickled (``weights_only=True``); the model is built from
    the config's constructor arguments, so no training-only package is imported.

    Returns:
        (model, config).

    Raises:
        PoseCliError: a checkpoint of a retired architecture (``RETIRED_ARCHITECTURES``).
        ValueError: not a posecli checkpoint, or one that does not fit its own config.
    """
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, EOFError, RuntimeError) as exc:  # another file, cut short, foreign pickle
        raise ValueError(f"{path} is not a {FORMAT} file ({type(exc).__name__})") from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{path} is not a {FORMAT} file")
    config = json.loads(payload["config"])
    if config.get("arch") in RETIRED_ARCHITECTURES:
        raise PoseCliError(f"{path}: architecture {config['arch']!r} ({RETIRED_ARCHITECTURES[config['arch']]}) "
                           "is no longer supported; use the default diffpose.coco17-v2")
    if config.get("arch") not in ARCHITECTURES:
        raise ValueError(f"{path}: unsupported arch {config.get('arch')!r}")
    kwargs = dict(config["model"])
    kwargs["input_size"] = tuple(kwargs["input_size"])
    kwargs["decoder_channels"] = tuple(kwargs["decoder_channels"])
    model = ARCHITECTURES[config["arch"]](**kwargs)
    state = {k: (v.float() if v.is_floating_point() else v) for k, v in payload["state_dict"].items()}
    model.load_state_dict(state, strict=True)
    if list(model.heatmap_size) != list(config["heatmap_size"]):
        raise ValueError(f"{path}: heatmap_size {config['heatmap_size']} does not match the model")
    return model.to(device).eval(), config

