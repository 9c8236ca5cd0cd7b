"""The pose model as the pipeline uses it: checkpoint found and verified, sampler and predictor set up.

Two ways in:
    * :meth:`PoseModel.heatmaps` takes windows of crops ``[N, T, H, W, 3]`` (every frame of a
      window cropped with the key frame's box; what ``posecli eval`` uses);
    * :meth:`PoseModel.features` + :meth:`PoseModel.heatmaps_from_features` split the per-frame
      backbone from the rest, so that a crop shared by several windows (a frame cropped with its
      own box) goes through the backbone once. Features stay on the model's device (no round
      trip to the host between the two calls on a GPU).

Precision: ``dtype="auto"`` runs bfloat16 autocast wherever the hardware computes it natively (CUDA
GPUs with bf16, CPUs with AVX512-BF16/AMX), else float16 on older GPUs and float32 on other CPUs.
See :func:`resolve_dtype` for the measured accuracy cost.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from posecli import weights as weights_lib
from posecli.crop import BOX_ENLARGE
from posecli.errors import PoseCliError
from posecli.types import ModelInfo

from .checkpoint import load_checkpoint
from .diffpose_movenet import HEATMAP_STRIDE
from .diffusion import DDIMSampler, NoiseSchedule
from .openvino_trunk import openvino_trunk_or_none
from .orientation import pick_views, turned_back, turned_crops
from .predictor import HeatmapPredictor

# The manifest entry `posecli run` uses when no --weights is given.
DEFAULT_POSE_WEIGHTS = "diffpose.coco17-v2"

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# Person-windows per model call on a CPU: beyond this the per-call overhead is amortised
# (measured on 2 cores: 16 → 32 gains < 10 %) and memory stays small.
CPU_BATCH_SIZE = 16
# GPU memory one person-window takes through the model, per frame of the window: MoveNet's layers
# run in float32 on the crop and its mirror image (the 1.75-wide MobileNetV2's early 128×128 maps
# dominate), plus the decoder's share. Measured as the float32 PyTorch path's peak memory growth on
# a CPU for a call of 4 windows of 5 frames: 63 MiB per frame (``tests/test_pipeline.py`` keeps the
# estimate above what a call takes); with room for the GPU's own workspaces, used to size batches.
GPU_BYTES_PER_FRAME = 80 * 2**20
GPU_BYTES_PER_WINDOW = 8 * 2**20
MAX_GPU_BATCH = 256


def resolve_dtype(dtype: str, device: str) -> torch.dtype:
    """The autocast dtype for ``dtype`` ("auto", "float32", "bfloat16", "float16") on ``device``.

    "auto": bfloat16 on CUDA GPUs that support it (float16 on older ones) and on CPUs with native
    bf16 (oneDNN reports AVX512-BF16/AMX), float32 elsewhere. On the 2-core Sapphire Rapids
    development machine bf16 runs the model about 1.3-1.6× faster than float32. Keypoints vs
    float32 (two clips, pseudo-label boxes): median 0.2-0.5 px, 90th percentile 0.7-1.5 px, and
    2-3 % of joints jump to a competing peak, fewer than ±1 grey level of noise on the input
    frames makes float32 itself jump (4.7 %); PCK against the pseudo-labels is unchanged (±0.002).

    Raises:
        PoseCliError: an unknown name, or float16 on a CPU (no fast kernels; use bfloat16).
    """
    if dtype == "auto":
        if device == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.bfloat16 if _cpu_has_bf16() else torch.float32
    if dtype not in DTYPES:
        raise PoseCliError(f"--dtype must be auto, {', '.join(DTYPES)}, not {dtype!r}")
    if dtype == "float16" and device == "cpu":
        raise PoseCliError("--dtype float16 is for GPUs; on a CPU use bfloat16 or float32")
    return DTYPES[dtype]


def _cpu_has_bf16() -> bool:
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def auto_batch_size(device: str, window: int) -> int:
    """Person-windows per model call: fixed on a CPU, from the free memory on a GPU.

    On CUDA, half of the memory free right now divided by the (overestimated) cost of one
    person-window of ``window`` frames, between ``CPU_BATCH_SIZE`` and ``MAX_GPU_BATCH``.
    """
    if device != "cuda":
        return CPU_BATCH_SIZE
    free, _ = torch.cuda.mem_get_info()
    per_window = window * GPU_BYTES_PER_FRAME + GPU_BYTES_PER_WINDOW
    return int(min(max(free // 2 // per_window, CPU_BATCH_SIZE), MAX_GPU_BATCH))


class PoseModel:
    """A loaded pose checkpoint (``DiffPoseMoveNet``) ready for inference.

    Attributes:
        info: name, sha256, window and steps, as recorded in outputs.
        window: frames per window T used at inference.
        input_hw: crop size (H, W).
        stride: input pixels per heatmap pixel.
        device: "cpu" or "cuda".
        dtype: the autocast dtype (float32 = none).
        batch_size: person-windows per model call.
    """

    def __init__(self, path: Path, name: str, sha256: str, device: str, window: int | None,
                 steps: int | None, seed: int, batch_size: int | None, dtype: str = "auto",
                 compile: bool = False, threads: int | None = None) -> None:
        model, config = load_checkpoint(path, device="cpu")
        self.config = config
        self.window = window or int(config["window"])
        if self.window % 2 == 0:
            raise PoseCliError(f"--window must be odd (the key frame sits in the middle), got {self.window}")
        steps = steps or int(config["steps"])
        self.input_hw = tuple(int(v) for v in config["input_size"])
        self.crop_enlarge = float(config.get("crop_enlarge", BOX_ENLARGE))
        self.stride = HEATMAP_STRIDE
        self.device = device
        self.dtype = resolve_dtype(dtype, device)
        self.batch_size = batch_size or auto_batch_size(device, self.window)
        schedule = NoiseSchedule(timesteps=int(config["timesteps"]), kind=config["schedule"])
        sampler = DDIMSampler(schedule, steps=steps, seed=seed, signal_scale=float(config["signal_scale"]))
        self.predictor = HeatmapPredictor(model, sampler, device=device, dtype=self.dtype,
                                          batch_size=self.batch_size, mean=config["mean"], std=config["std"])
        # The decoder, STRL and trunk convolutions get NHWC weights here (same names and shapes, in the
        # predictor's own copy), which spares oneDNN a layout conversion per operator: 1.4-1.5× faster
        # decoding on the CPU, same outputs.
        for part in (self.predictor.model.strl, self.predictor.model.decoder, self.predictor.model.trunk):
            part.to(memory_format=torch.channels_last)
        if device == "cpu" and not compile:
            self.predictor.trunk_runner = openvino_trunk_or_none(self.predictor.model.trunk, self.input_hw,
                                                                 threads or torch.get_num_threads())
        if compile:
            _compile_network(self.predictor.model)
        self.info = ModelInfo(name=name, sha256=sha256, window=self.window, steps=steps)

    def features(self, crops: np.ndarray) -> torch.Tensor:
        """Backbone features ``[M, C, h, w]`` (on the model's device) of crops ``[M, H, W, 3]`` uint8 BGR."""
        return self.predictor.features(crops)

    def heatmaps_from_features(self, features: torch.Tensor, to_key: np.ndarray | None = None) -> np.ndarray:
        """Heatmaps ``[N, K, h, w]`` from windows of features ``[N, T, ...]`` (key frame at T // 2).

        The model's own window T_model may differ from the run's: the run's T frames are spread
        over the model's T_model slots by nearest index, so ``--window 1`` replicates a frame.
        ``to_key`` [N, T, 2, 3]: each frame's crop → the key frame's crop (None: one shared crop).
        """
        n, t = features.shape[:2]
        model_t = self.predictor.window
        if t != model_t and t != 1:
            index = torch.round(torch.linspace(0, t - 1, model_t)).long()
            features = features.index_select(1, index.to(features.device))
            if to_key is not None:
                to_key = np.asarray(to_key)[:, index.numpy()]
        return self.predictor.heatmaps_from_features(features, to_key)

    def heatmaps(self, crops: np.ndarray, times=None) -> np.ndarray:  # noqa: ANN001 - StageTimes
        """Heatmaps [N, K, h, w] for windows of crops [N, T, H, W, 3] (uint8 BGR).

        Args:
            crops: T = the run's window, or 1 (a still image; its features are replicated).
            times: optional ``pipeline.StageTimes`` that gets "backbone" and "denoise" seconds.
        """
        n, t = crops.shape[:2]
        t0 = time.perf_counter()
        feats = self.features(crops.reshape(n * t, *crops.shape[2:]))
        feats = feats.view(n, t, *feats.shape[1:])
        if times is not None:
            t0 = times.add("backbone", t0)
        heatmaps = self.heatmaps_from_features(feats)
        if times is not None:
            times.add("denoise", t0)
        return heatmaps

    def still_heatmaps(self, crops: np.ndarray, rotations: bool = True, times=None) -> np.ndarray:  # noqa: ANN001
        """Heatmaps [N, K, h, w] of crops [N, H, W, 3] (uint8 BGR) of still images, one per person.

        With ``rotations`` (square crops) each crop is also looked at turned by 90°, 180° and 270°
        and a turned view replaces the upright one where it shows the person upright and the
        upright one does not (``orientation.py``): 4× the model's time per person.
        """
        crops = np.asarray(crops)
        if not rotations or self.input_hw[0] != self.input_hw[1]:
            return self.heatmaps(crops[:, None], times)
        return pick_views(turned_back(self.heatmaps(turned_crops(crops)[:, None], times)))[0]


def _compile_network(network: torch.nn.Module) -> None:
    """Replace the network's three inference entry points with ``torch.compile``d versions.

    One compilation serves every batch size (``dynamic=True``); it happens on the first call and
    takes minutes: measured on the 2-core CPU, 1-2 minutes per entry point for a 1.5-2× faster
    model, which pays off only for videos of well over ten minutes there. On a GPU the fused
    kernels cut the launch overhead of this small network (untested here).
    """
    for name in ("encode_frames", "fuse", "denoise"):
        setattr(network, name, torch.compile(getattr(network, name), dynamic=True))


def load_pose_model(weights: Path | None, *, device: str, window: int | None, steps: int | None,
                    seed: int, batch_size: int | None, dtype: str = "auto", compile: bool = False,
                    threads: int | None = None) -> PoseModel:
    """Find (``--weights`` or the default manifest entry), verify and load the pose model.

    Args:
        batch_size: person-windows per model call; None sizes it (:func:`auto_batch_size`).
        dtype: see :func:`resolve_dtype`.
        compile: run the network through ``torch.compile`` (see :func:`_compile_network`).
        threads: CPU threads of the model (OpenVINO's for MoveNet's layers; None: torch's).

    Raises:
        PoseCliError: weights missing or with a wrong sha256, or options that do not fit them.
    """
    path = weights_lib.resolve(weights if weights is not None else DEFAULT_POSE_WEIGHTS)
    sha256 = weights_lib.sha256_file(path)
    name = next((e.name for e in weights_lib.list_entries() if e.sha256 == sha256), path.stem)
    try:
        return PoseModel(path, name, sha256, device, window, steps, seed, batch_size, dtype, compile, threads)
    except (KeyError, RuntimeError, ValueError) as exc:
        raise PoseCliError(f"{path}: not a usable posecli checkpoint ({exc})") from exc
