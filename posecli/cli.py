"""Command line: parse options, build a config, call the library, report.

This is the only module that imports typer. Heavy libraries (torch, cv2) are imported inside the
commands so that ``posecli --help`` stays fast.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Optional

import typer
from typer.core import TyperCommand, TyperGroup

from posecli import __version__
from posecli.errors import PoseCliError


def _value_name(param) -> str:  # noqa: ANN001 - a click parameter
    """What the help calls a value of ``param``: its metavar, else a word for its type (``N``, ``PATH``)."""
    if param.metavar:
        return param.metavar
    # click's parameters have a type object; typer's own (0.29 on) keep the Python annotation.
    kind = (getattr(getattr(param, "type", None), "name", "")
            or str(getattr(getattr(param, "type_descriptor", None), "annotation", ""))).lower()
    word = "PATH" if "path" in kind else "X" if "float" in kind else "N" if "int" in kind else "TEXT"
    return " ".join([word] * param.nargs) if param.nargs > 1 else word


def _bounds(param) -> tuple[float | None, float | None]:  # noqa: ANN001 - a click parameter
    """(least, largest) value allowed, None where unbounded."""
    holder = param if getattr(param, "min", None) is not None or getattr(param, "max", None) is not None \
        else getattr(param, "type", None)
    return getattr(holder, "min", None), getattr(holder, "max", None)


def _argument_name(param) -> str:  # noqa: ANN001 - a click argument
    name = (param.metavar or param.name).upper() + ("..." if param.nargs == -1 else "")
    return name if param.required else f"[{name}]"


def _option_help(param) -> str:  # noqa: ANN001 - a click option
    """The option's help text with its default or range, as the user would type them."""
    notes = []
    default = param.default
    if param.required:
        notes.append("required")
    elif param.is_flag and param.secondary_opts and default is not None:
        notes.append(f"default: {param.opts[-1] if default else param.secondary_opts[-1]}")
    elif param.show_default and not param.is_flag and default not in (None, (), []):
        values = default if isinstance(default, (list, tuple)) else [default]
        # A repeatable option's values as one would type them (json,csv), a tuple's spaced (256 192).
        notes.append("default: " + (" " if param.nargs > 1 else ",").join(map(str, values)))
    low, high = _bounds(param)
    if low is not None and high is not None:
        notes.append(f"{low:g} to {high:g}")
    elif low is not None:
        notes.append(f"at least {low:g}")
    return " ".join([param.help or "", f"[{'; '.join(notes)}]" if notes else ""]).strip()


def _write_help(command, ctx, formatter) -> None:  # noqa: ANN001 - click's objects
    """Plain help: usage with value names (``--out DIR``, ``INPUT...``), not Python types; the
    description's ``\\b`` paragraphs (examples) as written; then arguments, options, commands."""
    params = [p for p in command.get_params(ctx) if not getattr(p, "hidden", False)]
    arguments = [p for p in params if p.param_type_name == "argument"]
    options = [p for p in params if p.param_type_name == "option"]
    pieces = ["[OPTIONS]"] + [_argument_name(p) for p in arguments]
    if isinstance(command, TyperGroup):
        pieces.append("COMMAND [ARGS]...")
    formatter.write_usage(ctx.command_path, " ".join(pieces))
    if command.help:
        formatter.write_paragraph()
        with formatter.indentation():
            formatter.write_text(command.help)
    if arguments:
        with formatter.section("Arguments"):
            formatter.write_dl([(_argument_name(p), p.help or "") for p in arguments])
    with formatter.section("Options"):
        rows = []
        for p in options:
            names = ", ".join(sorted(p.opts, key=len))
            if p.secondary_opts:
                names += " / " + ", ".join(p.secondary_opts)
            if not p.is_flag:
                names += f" {_value_name(p)}"
            rows.append((names, _option_help(p)))
        formatter.write_dl(rows)
    if isinstance(command, TyperGroup):
        with formatter.section("Commands"):
            commands = [(name, command.get_command(ctx, name)) for name in command.list_commands(ctx)]
            # The first sentence whole; write_dl wraps it.
            formatter.write_dl([(name, cmd.get_short_help_str(200)) for name, cmd in commands if not cmd.hidden])


class _Command(TyperCommand):
    """A command with plain help (:func:`_write_help`)."""

    def format_help(self, ctx, formatter) -> None:  # noqa: ANN001 - click's signature
        _write_help(self, ctx, formatter)


class _Group(TyperGroup):
    """A command group with plain help that turns a library error from any of its commands into one
    ``error: …`` line and exit code 1."""

    def format_help(self, ctx, formatter) -> None:  # noqa: ANN001 - click's signature
        _write_help(self, ctx, formatter)

    def invoke(self, ctx):  # noqa: ANN001, ANN201 - click's signature
        try:
            return super().invoke(ctx)
        except PoseCliError as exc:
            _fail(str(exc))


app = typer.Typer(
    cls=_Group, add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
    help="Video → tracked COCO-17 body keypoints with a spatiotemporal diffusion pose model.",
)
weights_app = typer.Typer(cls=_Group, no_args_is_help=True, help="List, download and verify model weights.")
app.add_typer(weights_app, name="weights")


class _LineFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return f"{record.levelname.lower()}: {record.getMessage()}"


def _version(value: bool) -> None:
    if value:
        typer.echo(f"posecli {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the version and exit."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log details to stderr."),
) -> None:
    # Library warnings (a damaged stream, a skipped image) go to stderr as "warning: …" lines.
    logger = logging.getLogger("posecli")
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_LineFormatter())
    logger.addHandler(handler)
    logger.setLevel(logging.INFO if verbose else logging.WARNING)
    logger.propagate = False


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(1)


def _split_formats(formats: list[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(f.strip().lower() for item in formats for f in item.split(",") if f.strip()))


@app.command(cls=_Command)
def run(
    inputs: list[Path] = typer.Argument(..., metavar="INPUT", help="Video files, image folders, or folders of videos."),
    out: Path = typer.Option(Path("results"), "--out", "-o", metavar="DIR", help="Output folder."),
    formats: list[str] = typer.Option(["json"], "--format", "-f", metavar="FORMATS",
                                      help="Output formats, comma separated or repeated: "
                                           "json, jsonl, csv, coco, mmaction, npz."),
    overlay: bool = typer.Option(False, "--overlay", help="Also write an mp4 with skeletons drawn."),
    coco_dataset: Optional[Path] = typer.Option(None, "--coco-dataset", metavar="FILE",
                                                help="COCO dataset JSON (e.g. val.json) whose images' file names "
                                                     "give the image_id of --format coco. Default: the number an "
                                                     "image's name is (000000350679.jpg: 350679), else frame + 1."),
    photos: Optional[bool] = typer.Option(None, "--photos/--sequence",
                                          help="Image folders: unrelated photos, each taken alone (no temporal "
                                               "window, tracking or smoothing across them), or the frames of one "
                                               "shot. Default: photos where the images differ in size or there "
                                               "is one image, else frames."),
    rotations: bool = typer.Option(True, "--rotations/--no-rotations",
                                   help="Photos: also look for people in the photo turned by 90°, 180° and 270°, "
                                        "and at each person turned, keeping a turned view where it shows the "
                                        "person upright and the photo does not (people lying, upside down); "
                                        "4× the detector's and the model's time per photo."),
    device: str = typer.Option("auto", "--device", metavar="auto|cpu|cuda", help="Where the model runs."),
    window: Optional[int] = typer.Option(None, "--window", min=1,
                                         help="Frames per temporal window (odd; 1 = every frame alone). "
                                              "Default: from the weights."),
    steps: Optional[int] = typer.Option(None, "--steps", min=1, help="DDIM denoising steps. Default: from the weights."),
    seed: int = typer.Option(0, "--seed", help="Seed of the diffusion sampler."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", min=1,
                                             help="Person-windows per model call. Default: 16 on a CPU, "
                                                  "from the free memory on a GPU."),
    dtype: str = typer.Option("auto", "--dtype", metavar="NAME", help="Model precision: auto (bfloat16 where the hardware has "
                                                      "it), float32, bfloat16 or float16 (GPU)."),
    neighbour_crops: str = typer.Option("own", "--neighbour-crops", metavar="own|key",
                                        help="Crop a window's neighbour frames with their own boxes (own: each "
                                             "crop goes through the backbone once) or with the key frame's box "
                                             "(key, as in the DiffPose paper; slower)."),
    detect_every: int = typer.Option(1, "--detect-every", min=1,
                                     help="Run the detector on every k-th frame; boxes follow the tracked "
                                          "persons in between."),
    prefetch: Optional[int] = typer.Option(None, "--prefetch", min=0,
                                           help="Frames decoded and detected ahead in a background thread (0: "
                                                "none). Default: 4 with a GPU or 3+ cores, else 0."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1,
                                          help="CPU threads of the pose model. Default: from the cores."),
    compile_model: bool = typer.Option(False, "--compile", help="torch.compile the pose model: minutes up front, "
                                                                "faster after; for long videos."),
    weights: Optional[Path] = typer.Option(None, "--weights", metavar="FILE", help="DiffPose checkpoint file."),
    detector: str = typer.Option("yolox-nano", "--detector", metavar="NAME", help="Person detector: yolox-nano or rtmdet-nano."),
    detector_weights: Optional[Path] = typer.Option(None, "--detector-weights", metavar="FILE", help="Detector ONNX file."),
    boxes: Optional[Path] = typer.Option(None, "--boxes", metavar="FILE", help="Your own person boxes (COCO-style detections JSON) "
                                                                "instead of the detector; one input only."),
    score_threshold: float = typer.Option(0.4, "--score-threshold", min=0.0, max=1.0, help="Least detector score."),
    skip_existing: bool = typer.Option(False, "--skip-existing", help="Skip inputs whose outputs are complete."),
    max_age: int = typer.Option(30, "--max-age", min=0, help="Frames a lost track is kept for re-identification."),
    oks_threshold: float = typer.Option(0.3, "--oks-threshold", min=0.0, max=1.0,
                                        help="Least pose similarity (OKS) to continue a track."),
    min_track_length: int = typer.Option(1, "--min-track-length", min=1,
                                         help="Drop tracks seen in fewer frames than this."),
    smooth: str = typer.Option("savgol", "--smooth", metavar="savgol|oneeuro|none", help="Keypoint smoothing: savgol (offline, 13 frames delay), oneeuro (causal) or none."),
    shard: Optional[str] = typer.Option(None, "--shard", metavar="I/N", help="I/N: process only the I-th of N parts of the inputs "
                                                               "(the same split on every machine; for job arrays)."),
    use_ray: bool = typer.Option(False, "--ray", help="Run on Ray workers, each with the model loaded once "
                                                       "(pip install 'posecli[ray]')."),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", metavar="ADDRESS", help="Ray cluster to join (HOST:PORT, "
                                                                          "ray://…, auto). Default: a local Ray."),
    workers: Optional[int] = typer.Option(None, "--workers", min=1, help="Ray workers. Default: as many as the "
                                                                         "cluster's CPUs and GPUs fit."),
    cpus_per_worker: float = typer.Option(1.0, "--cpus-per-worker", min=0.01, help="CPU cores per Ray worker."),
    gpus_per_worker: float = typer.Option(0.0, "--gpus-per-worker", min=0.0, help="GPUs per Ray worker "
                                                                                 "(fractions share a GPU)."),
) -> None:
    """Estimate tracked poses for each input and write them to --out.

    An input is a video file, a folder of images or a folder of videos. Each input writes
    OUT/NAME.json (or whichever --format asks for: NAME.csv, NAME.coco.json, …) and, with
    --overlay, NAME.overlay.mp4; NAME is the input's own name, made longer where two inputs share
    one. A folder of images of different sizes is taken as unrelated photos (--photos, --sequence
    to choose).

    \b
    Examples:
      posecli run clip.mp4                          results/clip.json
      posecli run clip.mp4 -f json,csv --overlay    + results/clip.csv, results/clip.overlay.mp4
      posecli run videos/ -o out/ --skip-existing   every video in videos/, new ones only
      posecli run frames/ --window 5                image sequence, 5-frame windows
      posecli run photos/ --photos -f coco          each photo alone; COCO results file
    """
    from posecli.batch import parse_shard
    from posecli.config import PipelineConfig, TrackingConfig
    from posecli.runner import run_inputs

    config = PipelineConfig(
        weights=weights, device=device, window=window, steps=steps, seed=seed, batch_size=batch_size,
        dtype=dtype, neighbour_crops=neighbour_crops, detect_every=detect_every, prefetch=prefetch, threads=threads,
        compile=compile_model,
        detector=detector, detector_weights=detector_weights, boxes_file=boxes,
        score_threshold=score_threshold,
        tracking=TrackingConfig(max_age=max_age, oks_threshold=oks_threshold, min_track_length=min_track_length),
        smooth=smooth, formats=_split_formats(formats), overlay=overlay, photos=photos, coco_dataset=coco_dataset,
        rotations=rotations,
    )
    try:
        ray = None
        if use_ray or ray_address is not None:
            from posecli.distributed import RayOptions

            ray = RayOptions(address=ray_address, workers=workers, cpus_per_worker=cpus_per_worker,
                             gpus_per_worker=gpus_per_worker)
        failures = run_inputs(inputs, out, config, skip_existing=skip_existing,
                              shard=None if shard is None else parse_shard(shard), ray=ray)
    except PoseCliError as exc:
        _fail(str(exc))
    except KeyboardInterrupt:
        typer.echo("interrupted: no partial output files were left", err=True)
        raise typer.Exit(130)
    if failures:
        raise typer.Exit(1)


@app.command("eval", cls=_Command)
def eval_command(
    ann_file: Path = typer.Argument(..., help="COCO keypoint JSON, or a clip's COCO-video .pseudo.json with --video."),
    images: Optional[Path] = typer.Option(None, "--images", help="Image folder (default: next to ANN_FILE)."),
    video: Optional[Path] = typer.Option(None, "--video", help="Evaluate on this clip against ANN_FILE's labels: "
                                                               "temporal window vs single frames, PCK and jitter."),
    weights: Optional[Path] = typer.Option(None, "--weights", help="DiffPose checkpoint (default: the shipped one)."),
    no_model: bool = typer.Option(False, "--no-model", help="Evaluate the baselines only."),
    baselines: str = typer.Option("movenet,blazepose", "--baselines",
                                  help="Baseline models on the same boxes: movenet (Lightning int8), lightning, thunder (float), blazepose, or none."),
    baseline_dir: list[Path] = typer.Option([], "--baseline-dir", help="Folder holding the baselines' .tflite files."),
    boxes: str = typer.Option("gt", "--boxes", help="gt, detector or both."),
    detector: str = typer.Option("yolox-nano", "--detector", help="Detector for --boxes detector|both."),
    detector_weights: Optional[Path] = typer.Option(None, "--detector-weights", help="Detector ONNX file."),
    score_threshold: float = typer.Option(0.1, "--score-threshold", help="Least detector score (low for AP)."),
    device: str = typer.Option("cpu", "--device", help="auto, cpu or cuda."),
    steps: Optional[int] = typer.Option(None, "--steps", min=1),
    window: Optional[int] = typer.Option(None, "--window", min=1),
    seed: int = typer.Option(0, "--seed"),
    out_json: Optional[Path] = typer.Option(None, "--out-json", help="Write the report as JSON here."),
    results: list[Path] = typer.Option([], "--results", metavar="FILE",
                                       help="Also score this COCO results file (posecli run --format coco) on "
                                            "ANN_FILE as it is: OKS AP with its own boxes; repeatable."),
    rotations: bool = typer.Option(True, "--rotations/--no-rotations",
                                   help="Image sets: our model looks at each person also turned, and detector "
                                        "boxes come from the turned images too, as posecli run does with photos "
                                        "(the baselines get the same boxes)."),
) -> None:
    """Accuracy on labelled images or a labelled clip: OKS AP, PCK per joint group, jitter."""
    from posecli.runner import evaluate_and_print

    names = tuple(b.strip() for b in baselines.split(",") if b.strip() and b.strip() != "none")
    try:
        evaluate_and_print(ann_file, images=images, video=video, weights=weights, include_model=not no_model,
                           baselines=names, baseline_dirs=tuple(baseline_dir), boxes=boxes, detector=detector,
                           detector_weights=detector_weights, score_threshold=score_threshold, device=device,
                           steps=steps, window=window, seed=seed, out_json=out_json, results_files=tuple(results),
                           rotations=rotations)
    except PoseCliError as exc:
        _fail(str(exc))


@app.command(cls=_Command)
def train(
    data: list[str] = typer.Option(..., "--data", help="Training set PATH[:WEIGHT]: a COCO keypoint JSON (images "
                                                       "next to it), a clip's .pseudo.json or a shard folder "
                                                       "(posecli shard); repeatable."),
    out: Path = typer.Option(..., "--out", help="Run folder: logs, resumable state, checkpoints."),
    val: Optional[Path] = typer.Option(None, "--val", help="COCO keypoint JSON (or its shard folder) for the "
                                                           "periodic PCK check."),
    steps: int = typer.Option(2000, "--steps", min=1, help="Optimizer steps (length of the LR schedule)."),
    batch_size: int = typer.Option(16, "--batch-size", min=1),
    lr: float = typer.Option(1e-3, "--lr"),
    max_minutes: Optional[float] = typer.Option(None, "--max-minutes", help="Wall-clock budget; the LR schedule "
                                                                            "follows whichever of steps/time ends first."),
    stop_after: Optional[int] = typer.Option(None, "--stop-after", help="End this session after this many steps."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the run folder's state."),
    init: Optional[Path] = typer.Option(None, "--init", help="Start from this checkpoint's weights."),
    trunk: Optional[Path] = typer.Option(None, "--trunk", help="MoveNet TFJS graph model (movenet-thunder.json) "
                                                               "whose layers start the run (or --init)."),
    crop_enlarge: float = typer.Option(1.15, "--crop-enlarge", min=1.0,
                                       help="Crop region as a multiple of the box (1.15: MoveNet's own framing)."),
    teacher_weight: float = typer.Option(0.0, "--teacher-weight", min=0.0,
                                         help="Loss weight of unlabelled joints learnt from the MoveNet prior "
                                              "(0: unused)."),
    prior_scores: bool = typer.Option(False, "--prior-scores",
                                      help="Labelled joints keep the MoveNet prior's scores as target peaks "
                                           "(instead of 1)."),
    mirror_prior: Optional[bool] = typer.Option(None, "--mirror-prior/--no-mirror-prior",
                                                help="The prior merges MoveNet on each crop and on its mirror "
                                                     "image (two trunk passes). Default: --init's, else off."),
    temporal_prior: Optional[bool] = typer.Option(None, "--temporal-prior/--no-temporal-prior",
                                                  help="The output's base averages the window's MoveNet decodes "
                                                       "(see the model card). Default: --init's, else off."),
    learned_window: Optional[int] = typer.Option(None, "--learned-window", min=1,
                                                 help="Frames STRL and the decoder see, centred in --window "
                                                      "(odd). Default: --init's, else the window."),
    still_motion_prob: float = typer.Option(1.0, "--still-motion-prob", min=0.0, max=1.0,
                                            help="Share of still images given synthetic motion (the rest "
                                                 "are repeated frames)."),
    window: Optional[int] = typer.Option(None, "--window", min=1, help="Frames per window. Default: --init's, "
                                                                       "else 3."),
    input_size: tuple[int, int] = typer.Option((256, 256), "--input-size",
                                               help="Model input height width (multiples of 32)."),
    face_teacher_weight: float = typer.Option(0.0, "--face-teacher-weight", min=0.0,
                                              help="Loss weight of the shared files' teacher face labels on "
                                                   "LSP-Extended (0: unused; --teacher-weight covers the face)."),
    fg_weight: float = typer.Option(20.0, "--fg-weight", min=0.0,
                                    help="Extra loss weight of heatmap peak pixels (0: plain L2)."),
    high_t_fraction: float = typer.Option(0.5, "--high-t-fraction", min=0.0, max=1.0,
                                          help="Share of samples with timesteps from the top 10% of the schedule."),
    device: str = typer.Option("auto", "--device"),
    amp: str = typer.Option("auto", "--amp", help="auto, none, bf16 or fp16 (CUDA)."),
    threads: int = typer.Option(0, "--threads", min=0, help="CPU threads (0: torch's default)."),
    num_workers: int = typer.Option(1, "--num-workers", min=0),
    seed: int = typer.Option(0, "--seed"),
    checkpoint_every: int = typer.Option(200, "--checkpoint-every", min=1),
    val_every: int = typer.Option(200, "--val-every", min=0),
    val_limit: int = typer.Option(100, "--val-limit", min=1),
) -> None:
    """Train a DiffPose checkpoint (CPU or CUDA; resumable)."""
    # Spinning OpenMP threads made 2-thread training 4× slower on a busy 2-core machine.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from posecli.train.augment import AugmentConfig
    from posecli.train.loop import DatasetSpec, TrainConfig
    from posecli.train.loop import train as train_model

    logging.getLogger("posecli").setLevel(logging.INFO)
    if window is None:
        window = _checkpoint_window(init) if init else 3
    design = {"mirror_prior": mirror_prior, "temporal_prior": temporal_prior, "learned_window": learned_window}
    config = TrainConfig(
        datasets=tuple(DatasetSpec.parse(item) for item in data), out_dir=out, val_json=val, steps=steps,
        batch_size=batch_size, lr=lr, max_minutes=max_minutes, stop_after=stop_after, resume=resume,
        init_checkpoint=init, trunk=trunk, crop_enlarge=crop_enlarge, teacher_weight=teacher_weight,
        prior_scores=prior_scores, model_kwargs={k: v for k, v in design.items() if v is not None},
        window=window, input_size=tuple(input_size),
        augment=AugmentConfig(still_motion_prob=still_motion_prob),
        face_teacher_weight=face_teacher_weight, fg_weight=fg_weight, high_t_fraction=high_t_fraction,
        device=device, amp=amp, threads=threads,
        num_workers=num_workers, seed=seed, checkpoint_every=checkpoint_every, val_every=val_every,
        val_limit=val_limit,
    )
    try:
        checkpoint = train_model(config)
    except PoseCliError as exc:
        _fail(str(exc))
    typer.echo(str(checkpoint))


def _checkpoint_window(path: Path) -> int:
    """The window a checkpoint was saved with (``posecli train --init`` continues with it)."""
    from posecli.models.checkpoint import load_checkpoint

    try:
        return int(load_checkpoint(path)[1]["window"])
    except PoseCliError as exc:
        _fail(str(exc))
    except (OSError, KeyError, RuntimeError, ValueError) as exc:
        _fail(f"{path}: not a usable posecli checkpoint ({exc})")


@app.command(cls=_Command)
def shard(
    data: list[str] = typer.Option(..., "--data", help="Training set PATH[:WEIGHT], as for `posecli train`; repeatable."),
    out: Path = typer.Option(..., "--out", help="Empty folder for shard_NNN.npz files and manifest.json."),
    window: int = typer.Option(3, "--window", min=1, help="Frames of a clip window (as the training run will use)."),
    input_size: tuple[int, int] = typer.Option((256, 256), "--input-size", help="Model input height width."),
    max_mb: float = typer.Option(48.0, "--max-mb", min=1.0, help="Largest shard file, MiB."),
) -> None:
    """Pack training sets into compact shards (person patches as JPEG) for `posecli train --data DIR`."""
    from posecli.train.shard import pack_training_sets

    try:
        packed = pack_training_sets(data, out, window, tuple(input_size), max_mb,
                                    progress=lambda done, total: typer.echo(f"{done}/{total} persons", err=True))
    except PoseCliError as exc:
        _fail(str(exc))
    typer.echo(f"{packed.persons} persons in {packed.files} shards ({packed.mib:.1f} MiB): {out}")


@app.command(cls=_Command)
def bench(
    clip: Path = typer.Argument(..., help="Video file to time."),
    repeat: int = typer.Option(1, "--repeat", min=1, help="Feed the clip this many times as one long stream."),
    tile: int = typer.Option(1, "--tile", min=1, help="Put each frame K×K times side by side (K² copies of "
                                                       "every person): a many-person stream."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    window: Optional[int] = typer.Option(None, "--window", min=1),
    steps: Optional[int] = typer.Option(None, "--steps", min=1),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", min=1, help="Default: automatic."),
    dtype: str = typer.Option("auto", "--dtype", help="auto, float32, bfloat16 or float16 (GPU)."),
    neighbour_crops: str = typer.Option("own", "--neighbour-crops", help="own or key (see posecli run)."),
    detect_every: int = typer.Option(1, "--detect-every", min=1, help="Run the detector on every k-th frame."),
    prefetch: Optional[int] = typer.Option(None, "--prefetch", min=0,
                                           help="Frames decoded and detected ahead (0: none). Default: automatic."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="CPU threads of the pose model."),
    compile_model: bool = typer.Option(False, "--compile", help="torch.compile the pose model (compile time "
                                                                "is not counted in the run's seconds)."),
    weights: Optional[Path] = typer.Option(None, "--weights"),
    detector_weights: Optional[Path] = typer.Option(None, "--detector-weights"),
    boxes: Optional[Path] = typer.Option(None, "--boxes", help="Person boxes from a file instead of the detector "
                                                               "(e.g. the clip's .pseudo.json)."),
    pseudo_labels: Optional[Path] = typer.Option(None, "--pseudo-labels",
                                                 help="Also score the poses against this .pseudo.json "
                                                      "(PCK, jitter): the accuracy cost of the settings."),
    baseline: bool = typer.Option(True, "--baseline/--no-baseline",
                                  help="Also time YOLOX-nano + MoveNet Lightning on the same clip."),
    baseline_dir: list[Path] = typer.Option([], "--baseline-dir", help="Folder holding movenet's .tflite file."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the report as JSON here."),
) -> None:
    """Time each stage and the whole pipeline on a clip; report frames/s, person-frames/s, memory."""
    from posecli.config import PipelineConfig
    from posecli.runner import bench_and_print

    config = PipelineConfig(weights=weights, device=device, window=window, steps=steps, batch_size=batch_size,
                            dtype=dtype, neighbour_crops=neighbour_crops, detect_every=detect_every,
                            prefetch=prefetch, threads=threads, compile=compile_model,
                            detector_weights=detector_weights, boxes_file=boxes)
    try:
        bench_and_print(clip, config, repeat=repeat, baseline=baseline, baseline_dirs=tuple(baseline_dir),
                        json_out=json_out, pseudo_labels=pseudo_labels, tile=tile)
    except PoseCliError as exc:
        _fail(str(exc))


@app.command("eval-tracks", cls=_Command)
def eval_tracks(
    videos: Path = typer.Argument(..., help="Folder with <clip>.mp4 and <clip>.pseudo.json (shared/data/videos)."),
    clips: list[str] = typer.Option([], "--clip", help="Clip stems (repeat); default: the five pseudo-labelled clips."),
    weights: Optional[Path] = typer.Option(None, "--weights", help="DiffPose checkpoint (default: the shipped one)."),
    device: str = typer.Option("cpu", "--device", help="auto, cpu or cuda."),
    cache_dir: Path = typer.Option(Path("runs/trackeval/cache"), "--cache-dir",
                                   help="Untracked poses are computed once per clip and weights, and kept here."),
    match: str = typer.Option("iou", "--match", help="Hypothesis-to-truth matching: iou (box IoU ≥ 0.5) or oks."),
    miss_rate: float = typer.Option(0.1, "--miss-rate", min=0.0, max=1.0,
                                    help="Simulated missed detections for the occlusion test."),
    burst: int = typer.Option(10, "--burst", min=0, help="Frames of the simulated occlusion of each track."),
    tune: bool = typer.Option(False, "--tune", help="Also grid-search the smoothers on the tuning clips."),
    stress_seeds: int = typer.Option(3, "--stress-seeds", min=0,
                                     help="Seeds of the many-occlusions tracking summary (0 = skip it)."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the report as JSON here."),
) -> None:
    """Tracking (MOTA, IDF1, id switches) and smoothing (PCK, jitter) against the clips' pseudo-labels."""
    from posecli.config import PipelineConfig
    from posecli.eval.evaluate import write_json_atomic
    from posecli.eval.tracking_eval import EVALUATION_CLIPS, TUNING_CLIPS, render_report, run_report

    config = PipelineConfig(weights=weights, device=device)
    try:
        report = run_report(videos, config, cache_dir, clips=tuple(clips) or EVALUATION_CLIPS + TUNING_CLIPS,
                            match=match, miss_rate=miss_rate, burst=burst, tune=tune, stress_seeds=stress_seeds,
                            progress=lambda line: typer.echo(line, err=True))
    except PoseCliError as exc:
        _fail(str(exc))
    typer.echo(render_report(report))
    if json_out is not None:
        write_json_atomic(json_out, report)


@app.command(cls=_Command)
def info() -> None:
    """Print versions, the compute device, and the weights found with their status."""
    from posecli.runner import print_info

    print_info()


@weights_app.command("list", cls=_Command)
def weights_list() -> None:
    """List the known weights files and where each is found."""
    from posecli.runner import print_weights

    print_weights(verify=False)


@weights_app.command("verify", cls=_Command)
def weights_verify() -> None:
    """Check the sha256 of every weights file found locally."""
    from posecli.runner import print_weights

    if not print_weights(verify=True):
        raise typer.Exit(1)


@weights_app.command("fetch", cls=_Command)
def weights_fetch(name: str = typer.Argument(..., help="Entry name, as in `posecli weights list`.")) -> None:
    """Download a weights file into the user cache (sha256 checked)."""
    from posecli import weights as weights_lib

    try:
        path = weights_lib.fetch(name)
    except PoseCliError as exc:
        _fail(str(exc))
    typer.echo(str(path))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
