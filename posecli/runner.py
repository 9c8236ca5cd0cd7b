"""What the ``run``, ``info`` and ``weights`` commands do, with rich output on a terminal.

Kept apart from ``cli.py`` so that the CLI only parses options, and apart from ``pipeline.py`` so
that the library never prints.
"""

from __future__ import annotations

import logging
import platform
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.progress import (
    BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn,
)
from rich.table import Table

from posecli.config import PipelineConfig
from posecli.errors import PoseCliError

if TYPE_CHECKING:  # Ray is imported only by a run on it
    from collections.abc import Callable

    from posecli.distributed import RayOptions

log = logging.getLogger(__name__)


def expand_inputs(inputs: list[Path]) -> list[Path]:
    """Video files and image folders to process: folders of videos become their videos.

    Raises:
        PoseCliError: an input is missing or of an unsupported kind.
    """
    from posecli.video import InputKind, classify_input, list_videos

    expanded: list[Path] = []
    for path in inputs:
        kind = classify_input(path)
        expanded.extend(list_videos(path) if kind is InputKind.VIDEO_FOLDER else [path])
    return expanded


def output_stems(paths: list[Path]) -> dict[Path, str]:
    """Output name per input, a different one for each: its stem (``clip``) where no other input has
    it, else the file name (``clip_mp4``), else the file name after as many parent folders as tell
    the inputs apart (``a_clip_mp4`` and ``b_clip_mp4`` for ``a/clip.mp4`` and ``b/clip.mp4``).

    Raises:
        PoseCliError: an input is given twice, or two inputs cannot be told apart by their names
            (their outputs would overwrite each other).
    """
    first_seen: dict[Path, Path] = {}
    for p in paths:
        earlier = first_seen.setdefault(p.resolve(), p)
        if earlier is not p:
            raise PoseCliError(f"{p} is given twice (also as {earlier}); pass each input once")

    def name(p: Path, level: int) -> str:
        if level == 0:
            return p.stem
        folders = p.resolve().parent.parts[1:]  # without the root
        kept = folders[len(folders) - min(level - 1, len(folders)):]
        return "_".join([*kept, p.name.replace(".", "_")])

    levels = dict.fromkeys(paths, 0)
    while True:
        names = {p: name(p, level) for p, level in levels.items()}
        counts = Counter(names.values())
        clashing = [p for p in paths if counts[names[p]] > 1]
        if not clashing:
            return names
        a, b = [p for p in clashing if names[p] == names[clashing[0]]][:2]
        if levels[a] > len(a.resolve().parts) and levels[b] > len(b.resolve().parts):
            raise PoseCliError(f"{a} and {b} would both write {names[a]}.*; rename one of them")
        for p in clashing:
            levels[p] += 1


def _wide_console(stderr: bool = False) -> Console:
    """A console for tables: the terminal's width, or wide enough not to squeeze them in a pipe."""
    console = Console(stderr=stderr)
    return console if console.is_terminal else Console(stderr=stderr, width=200)


def _print_error(console: Console, exc: Exception) -> None:
    console.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)


class _FpsColumn(TextColumn):
    def __init__(self) -> None:
        super().__init__("")

    def render(self, task):  # noqa: ANN001 - rich's signature
        speed = task.finished_speed or task.speed
        return f"{speed:5.1f} fps" if speed else "   -- fps"


def run_inputs(inputs: list[Path], out_dir: Path, config: PipelineConfig, *, skip_existing: bool = False,
               shard: tuple[int, int] | None = None, ray: RayOptions | None = None,
               console: Console | None = None) -> int:
    """Process every input, one progress bar each, and print a summary table.

    One bad input does not stop the others: its error is printed and counted.

    Args:
        shard: ``(I, N)``: process only the I-th of N parts of the inputs (``posecli.batch``).
        ray: run on Ray workers (``posecli.distributed``) instead of in this process.

    Returns:
        The number of inputs that failed.

    Raises:
        PoseCliError: a problem that concerns every input (bad options, weights, output folder).
    """
    from posecli.sinks import ensure_writable_dir

    console = console or _wide_console(stderr=True)
    paths = []
    failures = 0
    for path in inputs:
        try:
            paths.extend(expand_inputs([path]))
        except PoseCliError as exc:
            _print_error(console, exc)
            failures += 1
    if not paths:
        return failures
    if config.boxes_file is not None and len(paths) > 1:
        raise PoseCliError("--boxes gives the boxes of one video: pass a single input with it")
    stems = output_stems(paths)  # of the whole batch, so that every shard names its outputs alike
    title = "posecli run"
    if shard is not None:
        from posecli.batch import select_shard

        count = len(paths)
        paths = select_shard(paths, stems, *shard)
        title += f", shard {shard[0]}/{shard[1]}: {len(paths)} of {count} inputs"
        if not paths:
            console.print(f"{title}: nothing to do", markup=False, highlight=False)
            return failures
    ensure_writable_dir(out_dir)
    table = Table(title=title)
    for column in ("input", "frames", "poses", "tracks", "seconds", "fps", "outputs"):
        # Paths fold onto more lines rather than being cut: the table is where the outputs are listed.
        table.add_column(column, justify="right" if column in ("frames", "poses", "tracks", "seconds", "fps") else "left",
                         overflow="fold")
    from posecli.sinks import output_paths

    def skipped(path: Path) -> bool:
        """With ``skip_existing``: every output of ``path`` is there already."""
        return skip_existing and all(
            p.is_file() for p in output_paths(out_dir, stems[path], config.formats, config.overlay).values())

    if ray is not None:
        return failures + _run_on_ray(paths, stems, out_dir, config, ray, skipped, table, console)
    from posecli.pipeline import Pipeline  # torch and the model: only once the inputs are known good

    # Not loaded at all when every input is skipped (a finished shard run again).
    pipeline = None if all(skipped(p) for p in paths) else Pipeline(config)
    with _progress(console) as progress:
        for path in paths:
            if skipped(path):
                table.add_row(str(path), "-", "-", "-", "-", "-", "skipped (outputs exist)")
                continue
            task = progress.add_task(path.name, total=None)
            try:
                summary = pipeline.process(path, out_dir, stem=stems[path],
                                           progress=lambda done, total: progress.update(task, completed=done, total=total))
            except PoseCliError as exc:
                progress.remove_task(task)
                _print_error(console, exc)
                failures += 1
                table.add_row(str(path), "-", "-", "-", "-", "-", "failed")
                continue
            # The last frames come out together (windows, smoothing and batches hold them back):
            # the bar is left at the frame count, also for a file that ended before its header said.
            progress.update(task, completed=summary.frames, total=summary.frames)
            progress.stop_task(task)
            table.add_row(*_summary_row(path, summary))
    _print_summary(console, table)
    return failures


def _print_summary(console: Console, table: Table) -> None:
    if any(cell != "failed" for cell in table.columns[-1].cells):  # else it repeats the errors
        console.print(table)


def _summary_row(path: Path, summary) -> tuple[str, ...]:  # noqa: ANN001 - a pipeline.RunSummary
    return (str(path), str(summary.frames), str(summary.poses), str(summary.tracks),
            f"{summary.seconds:.1f}", f"{summary.frames / max(summary.seconds, 1e-9):.1f}",
            "\n".join(str(p) for p in summary.outputs))


def _run_on_ray(paths: list[Path], stems: dict[Path, str], out_dir: Path, config: PipelineConfig,
                options: RayOptions, skipped: Callable[[Path], bool], table: Table, console: Console) -> int:
    """``run --ray``: one progress bar over all videos, the summary table; returns the failures."""
    from posecli.distributed import run_on_ray

    jobs = [(p, stems[p]) for p in paths if not skipped(p)]
    outcomes = {}
    if jobs:
        with _progress(console) as progress:
            task = progress.add_task("videos", total=len(jobs))

            def started(workers: int, address: str) -> None:
                log.info("ray: %d workers, cluster at %s", workers, address)
                progress.update(task, description=f"videos ({workers} Ray workers)")

            def done(outcome) -> None:  # noqa: ANN001 - a distributed.VideoOutcome
                if outcome.error is not None:
                    _print_error(console, outcome.error)
                progress.advance(task)

            outcomes = {o.input: o for o in run_on_ray(jobs, out_dir, config, options, on_start=started, on_done=done)}
    failures = 0
    for path in paths:
        outcome = outcomes.get(path)
        if outcome is None:
            table.add_row(str(path), "-", "-", "-", "-", "-", "skipped (outputs exist)")
        elif outcome.summary is None:
            failures += 1
            table.add_row(str(path), "-", "-", "-", "-", "-", "failed")
        else:
            table.add_row(*_summary_row(path, outcome.summary))
    _print_summary(console, table)
    return failures


def _progress(console: Console) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), _FpsColumn(),
                    TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
                    console=console, disable=not console.is_terminal)


def evaluate_and_print(ann_file: Path, *, images: Path | None, video: Path | None, weights: Path | None,
                       include_model: bool, baselines: tuple[str, ...], baseline_dirs: tuple[Path, ...],
                       boxes: str, detector: str, detector_weights: Path | None, score_threshold: float,
                       device: str, steps: int | None, window: int | None, seed: int, out_json: Path | None,
                       console: Console | None = None, results_files: tuple[Path, ...] = (),
                       rotations: bool = True) -> dict:
    """``posecli eval``: run the evaluation with a progress bar and print its table. With ``rotations``
    detector boxes of image sets come from each image and its quarter turns
    (``detect.QuarterTurnDetector``), as in ``posecli run`` on photos; every model gets the same boxes."""
    from posecli import weights as weights_lib
    from posecli.detect import DETECTORS, QuarterTurnDetector
    from posecli.eval.evaluate import render_table, run_eval
    from posecli.pipeline import resolve_device

    if boxes not in ("gt", "detector", "both"):
        raise PoseCliError(f"--boxes must be gt, detector or both, not {boxes!r}")
    person_detector = None
    if boxes != "gt":
        if detector not in DETECTORS:
            raise PoseCliError(f"unknown detector {detector!r}; choose one of {', '.join(DETECTORS)}")
        path = weights_lib.resolve(detector, explicit_path=detector_weights)
        person_detector = DETECTORS[detector](path, score_threshold=score_threshold)
        if rotations and video is None:
            person_detector = QuarterTurnDetector(person_detector)
    console = console or _wide_console(stderr=True)
    with _progress(console) as progress:
        task = progress.add_task(Path(video or ann_file).name, total=None)
        report = run_eval(weights, ann_file, image_dir=images, video=video, baselines=baselines, boxes=boxes,
                          device=resolve_device(device), steps=steps, window=window, out_json=out_json,
                          detector=person_detector, baseline_dirs=baseline_dirs, seed=seed,
                          include_model=include_model, results_files=results_files, rotations=rotations,
                          progress=lambda done, total: progress.update(task, completed=done, total=total))
    _wide_console().print(render_table(report))
    return report


def bench_and_print(clip: Path, config: PipelineConfig, *, repeat: int, baseline: bool,
                    baseline_dirs: tuple[Path, ...], json_out: Path | None, console: Console | None = None,
                    pseudo_labels: Path | None = None, tile: int = 1) -> dict:
    """``posecli bench``: run the benchmark, print a table, optionally write the JSON report."""
    from posecli.eval.bench import run_bench
    from posecli.eval.evaluate import write_json_atomic

    report = run_bench(clip, config, repeat=repeat, baseline=baseline, baseline_dirs=baseline_dirs,
                       pseudo_labels=pseudo_labels, tile=tile)
    console = console or _wide_console()
    tiled = f", tiled {tile}×{tile}" if tile > 1 else ""
    table = Table(title=f"posecli bench: {clip.name} ×{repeat}{tiled}")
    table.add_column("what")
    table.add_column("value", justify="right")
    for key in ("frames", "person_frames", "tracks"):
        table.add_row(key, str(report[key]))
    table.add_row("seconds", f"{report['seconds']:.2f}")
    table.add_row("frames/s", f"{report['fps']:.2f}")
    table.add_row("person-frames/s", f"{report['person_fps']:.2f}")
    for stage, seconds in report["stage_seconds"].items():
        background = " (background thread)" if stage in report.get("overlapped_stages", ()) else ""
        table.add_row(f"  {stage} s{background}", f"{seconds:.2f} ({100 * seconds / report['seconds']:.0f}%)")
    table.add_row("peak RSS MiB", f"{report['peak_rss_mib']:.0f}")
    if "cuda_max_allocated_mib" in report:
        table.add_row("CUDA max allocated MiB", f"{report['cuda_max_allocated_mib']:.0f}")
    if "accuracy" in report:
        accuracy = report["accuracy"]
        for key in ("pck", "pck_all"):
            if accuracy[key] is not None:
                table.add_row(f"{key}@0.1 / @0.2 vs pseudo-labels", f"{accuracy[key]['pck@0.1']['overall']:.3f} / "
                                                                 f"{accuracy[key]['pck@0.2']['overall']:.3f}")
        table.add_row("persons matched", f"{accuracy['matched']} / {accuracy['persons']}")
        if accuracy["jitter"] is not None:
            table.add_row("jitter (pseudo-labels)", f"{accuracy['jitter']:.4f} ({accuracy['reference_jitter']:.4f})")
    for key, value in report["settings"].items():
        table.add_row(key, str(value))
    for base in report.get("baselines", {}).values():
        table.add_row(f"baseline ({base['name']}) frames/s", f"{base['fps']:.2f}")
        table.add_row(f"baseline ({base['name']}) person-frames/s", f"{base['person_fps']:.2f}")
        table.add_row(f"speed ratio (ours / {base['name']})", f"{base['speed_ratio']:.3f}")
        table.add_row(f"CPU-time ratio ({base['name']} / ours, per frame)", f"{base['cpu_ratio']:.3f}")
    console.print(table)
    if json_out is not None:
        write_json_atomic(json_out, report)
    return report


def print_weights(verify: bool, console: Console | None = None) -> bool:
    """A table of the manifest's weights: where each file is found and (optionally) its sha256 status.

    Returns:
        False when a file that was checked did not match its sha256.
    """
    from posecli import weights as weights_lib

    console = console or _wide_console()
    table = Table(title="weights")
    for column in ("name", "kind", "file", "found at", "status"):
        table.add_column(column, overflow="fold")
    ok = True
    for entry in weights_lib.list_entries():
        found = weights_lib.find_local(entry.name)
        status = "not found (fetched on first use)" if found is None else "found"
        if found is not None and verify:
            try:
                weights_lib.verify(entry.name)
                status = "sha256 ok"
            except PoseCliError as exc:
                status, ok = f"[red]{exc}[/red]", False
        table.add_row(entry.name, entry.kind, entry.file, str(found or "-"), status)
    console.print(table)
    return ok


def print_info(console: Console | None = None) -> None:
    """Versions, compute device and weights status."""
    import cv2
    import numpy
    import torch

    from posecli import __version__

    console = console or _wide_console()
    table = Table(title="posecli info", show_header=False)
    table.add_row("posecli", __version__)
    table.add_row("python", platform.python_version())
    table.add_row("torch", torch.__version__)
    table.add_row("opencv", cv2.__version__)
    table.add_row("numpy", numpy.__version__)
    try:
        import av

        table.add_row("av (FFmpeg)", f"{av.__version__} ({av.ffmpeg_version_info})")
    except ImportError:
        table.add_row("av (FFmpeg)", "not installed (OpenCV decodes videos)")
    cuda = torch.cuda.is_available()
    table.add_row("device (auto)", f"cuda: {torch.cuda.get_device_name(0)}" if cuda else f"cpu ({torch.get_num_threads()} threads)")
    console.print(table)
    print_weights(verify=True, console=console)
