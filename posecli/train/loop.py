"""The DiffPose training loop: AdamW, warmup + cosine LR, masked diffusion loss, validation,
resumable training state and fp16 inference checkpoints. STRL and the decoder of
``DiffPoseMoveNet`` learn; MoveNet's layers stay frozen.

Outputs under ``config.out_dir``:
    ``train.log``       the log (also on stderr), loss every ``log_every`` steps.
    ``metrics.jsonl``   one JSON object per log line / validation.
    ``state.pt``        resumable state (fp32 weights, optimizer, step, elapsed time), atomic.
    ``latest.pt``       fp16 inference checkpoint (``models.checkpoint.save_checkpoint``), atomic,
                        rewritten at every checkpoint; ``step_XXXXXX.pt`` keeps each one.
    ``final.pt``        the inference checkpoint at the end of training.

Run with ``posecli train`` (see ``posecli train --help``), which builds a :class:`TrainConfig`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from posecli.errors import PoseCliError
from posecli.train.augment import AugmentConfig
from posecli.train.datasets import CocoKeypoints, MixedDataset, VideoPseudoLabels, eval_persons
from posecli.train.loss import weighted_diffusion_loss
from posecli.train.targets import HEATMAP_SIGMA, HEATMAP_STRIDE

log = logging.getLogger("posecli.train")


@dataclass(frozen=True)
class DatasetSpec:
    """One training source and its mixing weight: a COCO keypoint JSON, a ``*.pseudo.json`` clip,
    or a shard folder (``posecli shard``; its sources keep their recorded weights, times this one).

    ``limit`` keeps the first persons only (tests, quick runs).
    """

    path: str
    weight: float = 1.0
    limit: int | None = None

    @staticmethod
    def parse(text: str) -> "DatasetSpec":
        """``PATH`` or ``PATH:WEIGHT`` (e.g. ``lspet/train.json:0.7``)."""
        path, sep, weight = text.rpartition(":")
        if sep and path and _is_float(weight):
            return DatasetSpec(path, float(weight))
        return DatasetSpec(text)


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class TrainConfig:
    """Every option of a training run.

    Attributes:
        datasets: training sources with mixing weights (probability of drawing from each).
        out_dir: run folder (logs, state, checkpoints).
        steps: optimizer steps (the LR schedule length).
        batch_size: person-windows per step.
        lr: peak learning rate (AdamW).
        weight_decay: AdamW decoupled weight decay.
        warmup_steps: linear warmup from 0 to ``lr``; then cosine to ``lr * min_lr_ratio``.
        min_lr_ratio: final LR as a fraction of ``lr``.
        max_minutes: wall-clock budget; when set, the schedule's progress is
            ``max(step / steps, elapsed / max_minutes)`` and training stops at 1, so the LR
            reaches its end value on time even on a shared, slower machine.
        grad_clip: max gradient norm (0 = off).
        seed: seeds the model init, the data stream and the diffusion noise.
        checkpoint_every: steps between checkpoints; checkpoint_minutes: and at least this often.
        stop_after: end this session after this many steps in total (the schedule still spans
            ``steps``; continue later with ``resume``). None = run to the end.
        resume: continue from ``out_dir/state.pt`` if it exists.
        init_checkpoint: start from an inference checkpoint's weights (fine-tuning).
        device: ``auto`` | ``cpu`` | ``cuda``.
        amp: ``auto`` (bf16 on CUDA if supported, else fp16; off on CPU) | ``none`` | ``bf16`` | ``fp16``.
        threads: torch CPU threads (0 = leave torch's default). On a shared CPU set the
            environment variable ``OMP_WAIT_POLICY=PASSIVE`` before torch is imported: with
            spinning OpenMP threads, 2 threads on a loaded 2-core machine were 4× slower than 1.
        num_workers: DataLoader worker processes.
        trunk: the TFJS MoveNet graph model (``movenet-thunder.json``) whose layers start the
            run (or ``init_checkpoint``).
        window: frames per window T.
        input_size: model input (H, W), multiples of 32 (MoveNet's square 256×256 by default).
        crop_enlarge: crop region as a multiple of the person box (``crop.crop_transform``; 1.15
            of the longer side in a square crop is MoveNet's own framing).
        teacher_weight: loss weight of unlabelled joints learnt from the model's MoveNet prior
            (see ``train/loss.py``).
        prior_scores: labelled joints' target peaks are the MoveNet prior's scores, not 1
            (see ``train/loss.py``).
        model_kwargs: other ``DiffPoseMoveNet`` keyword arguments (widths, depths, timesteps, …).
        sigma: target Gaussian sigma in heatmap pixels.
        signal_scale: diffusion signal range.
        fg_weight: extra loss weight of heatmap peak pixels, ``1 + fg_weight · h`` (0 = the
            paper's plain L2; see ``train/loss.py``).
        high_t_fraction: share of samples with t from the top 10 % of the schedule (0 = uniform).
        face_teacher_weight: loss weight of teacher face joints on LSP-Extended (0 = unused).
        drop_lr_suspect: zero the limb groups flagged ``lr_swap_suspect`` in LSP-Extended.
        pseudo_min_conf: pseudo-label confidence from which a clip joint counts as labelled.
        augment: augmentation ranges.
        val_json: COCO JSON (or a shard folder of one) for validation (PCK); None = no validation.
        val_limit: first persons of ``val_json`` used.
        val_every: steps between validations (0 = only at the end of the session).
        val_steps: DDIM steps used to predict in validation.
        log_every: steps between loss log lines.
        cache_dir: decoded clip frames (default ``out_dir/../cache``).
    """

    datasets: tuple[DatasetSpec, ...]
    out_dir: Path
    steps: int = 2000
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_steps: int = 100
    min_lr_ratio: float = 0.02
    max_minutes: float | None = None
    grad_clip: float = 1.0
    seed: int = 0
    checkpoint_every: int = 200
    checkpoint_minutes: float = 10.0
    stop_after: int | None = None
    resume: bool = False
    init_checkpoint: Path | None = None
    device: str = "auto"
    amp: str = "auto"
    threads: int = 0
    num_workers: int = 1
    trunk: Path | None = None
    window: int = 3
    input_size: tuple[int, int] = (256, 256)
    crop_enlarge: float = 1.15
    teacher_weight: float = 0.0
    prior_scores: bool = False
    model_kwargs: dict = field(default_factory=dict)
    sigma: float = HEATMAP_SIGMA
    signal_scale: float = 1.0
    fg_weight: float = 20.0
    high_t_fraction: float = 0.5
    face_teacher_weight: float = 0.0
    drop_lr_suspect: bool = True
    pseudo_min_conf: float = 0.3
    augment: AugmentConfig = AugmentConfig()
    val_json: Path | None = None
    val_limit: int = 100
    val_every: int = 200
    val_steps: int = 1
    log_every: int = 10
    cache_dir: Path | None = None

    def to_json(self) -> dict:
        d = asdict(self)
        return json.loads(json.dumps(d, default=str))


def build_sources(config: TrainConfig) -> tuple[list, list[float]]:
    """Instantiate the training sources of ``config.datasets``."""
    from posecli.train.shard import is_shard_dir, open_shards

    cache = Path(config.cache_dir) if config.cache_dir else Path(config.out_dir).parent / "cache"
    sources, weights = [], []
    for spec in config.datasets:
        path = Path(spec.path)
        if is_shard_dir(path):
            found, mix = open_shards(path, config.window, config.face_teacher_weight, config.drop_lr_suspect)
            mix = [w * spec.weight for w in mix]
        elif path.name.endswith(".pseudo.json"):
            found = [VideoPseudoLabels(path, config.window, cache, min_conf=config.pseudo_min_conf)]
            mix = [spec.weight]
        else:
            found = [CocoKeypoints(path, face_teacher_weight=config.face_teacher_weight,
                                   drop_lr_suspect=config.drop_lr_suspect, limit=spec.limit)]
            mix = [spec.weight]
        if spec.limit is not None:
            for source in found:
                source.items = source.items[: spec.limit]
        sources += found
        weights += mix
    return sources, weights


def open_val_source(config: TrainConfig):  # noqa: ANN201 - a training source
    """The validation persons: all labelled joints, no teacher labels, the first ``val_limit``."""
    from posecli.train.shard import is_shard_dir, open_shards

    if config.val_json is None:
        return None
    if is_shard_dir(config.val_json):
        source = open_shards(config.val_json, config.window, 0.0, False)[0][0]
        source.items = source.items[: config.val_limit]
        return source
    return CocoKeypoints(config.val_json, face_teacher_weight=0.0, drop_lr_suspect=False, limit=config.val_limit)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise PoseCliError("--device cuda was requested but CUDA is not available")
    if name not in ("cpu", "cuda"):
        raise PoseCliError(f"unknown device {name!r} (use auto, cpu or cuda)")
    return torch.device(name)


def autocast_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype for ``amp`` on ``device`` (None = full fp32)."""
    if amp == "none" or (amp == "auto" and device.type != "cuda"):
        return None
    if amp == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if amp in ("bf16", "fp16"):
        return torch.bfloat16 if amp == "bf16" else torch.float16
    raise PoseCliError(f"unknown amp mode {amp!r} (use auto, none, bf16 or fp16)")


def lr_factor(progress: float, step: int, warmup_steps: int, min_ratio: float) -> float:
    """Linear warmup over ``warmup_steps``, then cosine from 1 to ``min_ratio`` over progress [0, 1]."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    cosine = 0.5 * (1.0 + math.cos(math.pi * min(max(progress, 0.0), 1.0)))
    return min_ratio + (1.0 - min_ratio) * cosine


def build_model(config: TrainConfig):
    """A fresh ``DiffPoseMoveNet`` on the layers of ``trunk``, or the weights of ``init_checkpoint``.

    From a checkpoint the model keeps that checkpoint's design (mirror and temporal prior, learned
    window, sizes) except where ``model_kwargs`` says otherwise; ``window`` and ``input_size`` are
    the run's.

    Raises:
        PoseCliError: neither a trunk nor a checkpoint, or a window the checkpoint's design cannot take.
    """
    from posecli.models.checkpoint import load_checkpoint
    from posecli.models.diffpose_movenet import DiffPoseMoveNet
    from posecli.models.movenet import movenet_spec, read_tfjs_weights

    if config.trunk is None and not config.init_checkpoint:
        raise PoseCliError("posecli train needs --trunk movenet-thunder.json (MoveNet's layers) or --init CHECKPOINT")
    init_model, kwargs = None, {}
    if config.init_checkpoint:
        init_model, init_config = load_checkpoint(config.init_checkpoint)
        kwargs.update(init_config["model"])
    kwargs.update(config.model_kwargs)
    kwargs.update(window=config.window, input_size=tuple(config.input_size))
    weights = read_tfjs_weights(config.trunk) if config.trunk else None
    if weights is not None:
        kwargs["trunk"] = movenet_spec(weights)
    try:
        model = DiffPoseMoveNet(**kwargs)
    except ValueError as exc:
        raise PoseCliError(f"--window {config.window} does not fit the model ({exc})") from exc
    if weights is not None:
        model.trunk.load_tfjs(weights)
    if init_model is not None:
        model.load_state_dict({k: v.float() for k, v in init_model.state_dict().items()})
    return model


def predict_keypoints(predictor, crops: np.ndarray, matrices: np.ndarray) -> np.ndarray:
    """Keypoints in frame pixels, predicted exactly as at inference (``HeatmapPredictor`` + DARK).

    Args:
        crops: [N, T, H, W, 3] uint8 BGR windows.
        matrices: [N, 2, 3] frame → crop affines of the key frames.

    Returns:
        [N, K, 2] float32.
    """
    from posecli.decode import dark_decode, heatmaps_to_frame

    xy, _ = dark_decode(predictor(crops))
    return heatmaps_to_frame(xy, HEATMAP_STRIDE, matrices)


def validate(model, config: TrainConfig, val_source, device: torch.device) -> dict:
    """PCK@0.1/0.2 (distance / sqrt(box w·h), the data README's normaliser) on ``val_source``."""
    from posecli.eval.metrics import pck
    from posecli.models.diffusion import DDIMSampler, NoiseSchedule
    from posecli.models.predictor import HeatmapPredictor

    schedule = NoiseSchedule(model.timesteps, "cosine")
    sampler = DDIMSampler(schedule, steps=config.val_steps, seed=0, signal_scale=config.signal_scale)
    predictor = HeatmapPredictor(model, sampler, device=device)  # an eval-mode copy; RGB 0..255 input
    preds, gts, labelled, sizes = [], [], [], []
    batch: list = []

    def flush() -> None:
        crops = np.stack([b[0] for b in batch])
        mats = np.stack([b[1] for b in batch])
        preds.append(predict_keypoints(predictor, crops, mats))
        for _, _, kp, w, box in batch:
            gts.append(kp)
            labelled.append(w > 0)
            sizes.append(math.sqrt(max(box[2] - box[0], 0) * max(box[3] - box[1], 0)))
        batch.clear()

    for item in eval_persons(val_source, config.window, tuple(config.input_size), config.crop_enlarge):
        batch.append(item)
        if len(batch) == 16:
            flush()
    if batch:
        flush()
    result = pck(np.concatenate(preds), np.stack(gts), np.stack(labelled), np.asarray(sizes))
    return {"pck@0.1": result["pck@0.1"]["overall"], "pck@0.2": result["pck@0.2"]["overall"],
            "pck@0.2_groups": result["pck@0.2"], "persons": len(gts)}


def _atomic_torch_save(obj, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def inference_config(config: TrainConfig, record: dict) -> dict:
    """What the inference checkpoint records beyond what ``checkpoint_config`` derives from the model."""
    from posecli.models.preprocess import RAW_MEAN_RGB, RAW_STD_RGB

    return {"sigma": config.sigma, "steps": config.val_steps, "signal_scale": config.signal_scale,
            "schedule": "cosine", "mean": list(RAW_MEAN_RGB), "std": list(RAW_STD_RGB),
            "crop_enlarge": config.crop_enlarge,
            "training": record}


def save_inference(path: Path, model, config: TrainConfig, record: dict) -> None:
    """fp16 inference checkpoint (``save_checkpoint`` writes it atomically)."""
    from posecli.models.checkpoint import save_checkpoint

    save_checkpoint(path, model, inference_config(config, record))


def _setup_logging(out_dir: Path) -> list[logging.Handler]:
    """Log INFO to ``out_dir/train.log``, and to stderr unless the application set up logging."""
    logger = logging.getLogger("posecli")
    handlers: list[logging.Handler] = [logging.FileHandler(out_dir / "train.log")]
    if not logger.hasHandlers():
        handlers.append(logging.StreamHandler())
    for handler in handlers:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        handler.setLevel(logging.INFO)
        logger.addHandler(handler)
    return handlers


def train(config: TrainConfig) -> Path:
    """Train DiffPose; returns the path of the final inference checkpoint.

    Deterministic for a given seed on CPU (data stream, augmentation and noise are seeded per
    item/step), except that with ``max_minutes`` the LR schedule follows wall time.
    """
    out = Path(config.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    logger = logging.getLogger("posecli")
    old_level = logger.level
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)
    handlers = _setup_logging(out)
    try:
        return _train(config, out)
    finally:
        for handler in handlers:
            logger.removeHandler(handler)
            handler.close()
        logger.setLevel(old_level)


def _train(config: TrainConfig, out: Path) -> Path:
    if config.threads > 0:
        torch.set_num_threads(config.threads)
    device = resolve_device(config.device)
    amp_dtype = autocast_dtype(config.amp, device)
    torch.manual_seed(config.seed)
    np.random.seed(config.seed)

    sources, mix = build_sources(config)
    val_source = open_val_source(config)
    model = build_model(config).to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim > 1]
    no_decay = [p for p in params if p.ndim <= 1]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=config.lr)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)

    from posecli.models.diffusion import NoiseSchedule
    from posecli.models.preprocess import crops_to_tensor

    schedule = NoiseSchedule(model.timesteps, "cosine")
    step, elapsed, history = 0, 0.0, []
    state_path = out / "state.pt"
    if config.resume and state_path.is_file():
        state = torch.load(state_path, map_location=device, weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        step, elapsed, history = state["step"], state["elapsed"], state["history"]
        log.info("resumed from %s at step %d (%.1f min trained)", state_path, step, elapsed / 60)
        now = config.to_json()
        changed = {k: [state["config"].get(k), v] for k, v in now.items()
                   if k not in ("resume", "stop_after") and state["config"].get(k) != v}
        if changed:
            history.append({"step": step, "config_changed": changed})
            log.info("options changed on resume: %s", changed)
    (out / "config.json").write_text(json.dumps(config.to_json(), indent=2))

    dataset = MixedDataset(sources, mix, config.steps * config.batch_size, config.window,
                           tuple(config.input_size), config.augment, config.seed, config.sigma,
                           enlarge=config.crop_enlarge)
    # MoveNet's layers are frozen: on the CPU OpenVINO runs them (3× PyTorch eager), as at inference.
    trunk = None
    if device.type == "cpu":
        from posecli.models.openvino_trunk import openvino_trunk_or_none

        trunk = openvino_trunk_or_none(model.trunk, tuple(config.input_size), torch.get_num_threads())
    remaining = torch.utils.data.Subset(dataset, range(step * config.batch_size, len(dataset)))
    loader = torch.utils.data.DataLoader(
        remaining, batch_size=config.batch_size, shuffle=False, num_workers=config.num_workers,
        drop_last=True, persistent_workers=False,
        worker_init_fn=_worker_init if config.num_workers > 0 else None,
        prefetch_factor=4 if config.num_workers > 0 else None,
        # Spawned, not forked: a forked worker hung in torch.set_num_threads once the parent had
        # decoded clip frames with decord's threads (OpenMP state copied mid-use).
        multiprocessing_context="spawn" if config.num_workers > 0 else None,
    )
    n_params = sum(p.numel() for p in params)
    log.info("training on %s: %s; %d trainable parameters; device %s, amp %s, threads %d",
             ", ".join(f"{s.name} ({len(s)} persons, w={w})" for s, w in zip(sources, mix)),
             config.out_dir, n_params, device, amp_dtype, torch.get_num_threads())

    def record(final: bool = False) -> dict:
        return {"datasets": [dict(s.describe(), weight=w) for s, w in zip(sources, mix)],
                "steps": step, "batch_size": config.batch_size, "samples": step * config.batch_size,
                "seed": config.seed, "lr": config.lr,
                "teacher_weight": config.teacher_weight, "prior_scores": config.prior_scores,
                "crop_enlarge": config.crop_enlarge,
                "face_teacher_weight": config.face_teacher_weight, "augment": asdict(config.augment),
                "fg_weight": config.fg_weight, "high_t_fraction": config.high_t_fraction,
                "minutes": round(elapsed / 60, 2), "device": str(device), "final": final,
                "metrics": next((h for h in reversed(history) if "pck@0.2" in h), {}),
                "torch": torch.__version__}

    def checkpoint(final: bool = False) -> Path:
        _atomic_torch_save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                            "scaler": scaler.state_dict(), "step": step, "elapsed": elapsed,
                            "history": history, "config": config.to_json()}, state_path)
        rec = record(final)
        save_inference(out / "latest.pt", model, config, rec)
        target = out / ("final.pt" if final else f"step_{step:06d}.pt")
        save_inference(target, model, config, rec)
        log.info("checkpoint at step %d: %s", step, target)
        return target

    def run_validation() -> None:
        if val_source is None:
            return
        t0 = time.perf_counter()
        metrics = validate(model, config, val_source, device)
        entry = {"step": step, "pck@0.1": metrics["pck@0.1"], "pck@0.2": metrics["pck@0.2"],
                 "persons": metrics["persons"], "seconds": round(time.perf_counter() - t0, 1)}
        history.append(entry)
        _append_jsonl(out / "metrics.jsonl", dict(entry, groups=metrics["pck@0.2_groups"]))
        log.info("val step %d: PCK@0.1 %.3f PCK@0.2 %.3f (%d persons, %.0fs)", step,
                 metrics["pck@0.1"] or 0.0, metrics["pck@0.2"] or 0.0, metrics["persons"],
                 entry["seconds"])

    noise = torch.Generator()
    model.train()
    last_ckpt = time.perf_counter()
    window_loss, window_n, window_t = 0.0, 0, time.perf_counter()
    t_start = time.perf_counter() - elapsed
    done = False
    for batch in loader:
        progress = step / config.steps
        if config.max_minutes:
            progress = max(progress, elapsed / (config.max_minutes * 60))
        if progress >= 1.0:
            done = True
            break
        if config.stop_after is not None and step >= config.stop_after:
            break
        factor = lr_factor(progress, step, config.warmup_steps, config.min_lr_ratio)
        for group in optimizer.param_groups:
            group["lr"] = config.lr * factor
        images = crops_to_tensor(batch["crops"].numpy(), device)  # RGB 0..255, MoveNet's input
        heatmaps = batch["heatmaps"].to(device)
        weights = batch["weights"].to(device)
        noise.manual_seed(config.seed * 1_000_003 + step)  # same t and ε after a resume
        with (torch.autocast(device.type, dtype=amp_dtype) if amp_dtype else contextlib.nullcontext()):
            loss = weighted_diffusion_loss(model, schedule, images, heatmaps, weights, generator=noise,
                                           signal_scale=config.signal_scale, fg_weight=config.fg_weight,
                                           high_t_fraction=config.high_t_fraction,
                                           to_key=batch["to_key"].to(device),
                                           teacher_weight=config.teacher_weight,
                                           prior_scores=config.prior_scores, trunk=trunk)
        if not torch.isfinite(loss):
            raise RuntimeError(f"loss is {loss.item()} at step {step}")
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if config.grad_clip > 0:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        step += 1
        elapsed = time.perf_counter() - t_start
        window_loss, window_n = window_loss + loss.item(), window_n + 1
        if step % config.log_every == 0:
            rate = window_n * config.batch_size / (time.perf_counter() - window_t)
            entry = {"step": step, "loss": window_loss / window_n, "lr": config.lr * factor,
                     "samples_per_s": round(rate, 2), "minutes": round(elapsed / 60, 2)}
            history.append(entry)
            _append_jsonl(out / "metrics.jsonl", entry)
            log.info("step %d/%d loss %.5f lr %.2e %.2f samples/s %.1f min", step, config.steps,
                     entry["loss"], entry["lr"], rate, elapsed / 60)
            window_loss, window_n, window_t = 0.0, 0, time.perf_counter()
        if config.val_every and step % config.val_every == 0:
            run_validation()
        if (step % config.checkpoint_every == 0
                or time.perf_counter() - last_ckpt > config.checkpoint_minutes * 60):
            checkpoint()
            last_ckpt = time.perf_counter()
        if step >= config.steps:
            break
    done = done or step >= config.steps
    if not history or "pck@0.2" not in history[-1]:
        run_validation()
    final = checkpoint(final=done)
    log.info("training %s after %d steps (%.1f min): %s",
             "finished" if done else "paused (resume to continue)", step, elapsed / 60, final)
    return final


def _worker_init(worker_id: int) -> None:
    # Each worker decodes and warps images with OpenCV; one thread each keeps the cores for the model.
    torch.set_num_threads(1)
    import cv2

    cv2.setNumThreads(1)


def _append_jsonl(path: Path, entry: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(entry) + "\n")
