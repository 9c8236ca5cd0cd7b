"""Running a batch of videos on a Ray cluster (``posecli run --ray``, :func:`process_many`).

One long-lived Ray actor per worker holds a loaded :class:`~posecli.pipeline.Pipeline`, so the
model and the detector are loaded once per worker, not once per video. The driver hands videos
out one at a time, largest file first (the longest videos start early, so the run does not end
waiting for one of them), to whichever worker is free (``ray.wait`` on the calls in flight).
Each worker writes its outputs itself, with the usual temporary-file-and-rename rule, into the
output folder: on a real cluster that folder (and the inputs) must be on a file system that every
node sees under the same path.

Failures:

* A video the pipeline rejects (a damaged file, no frame decoded: a
  :class:`~posecli.errors.PoseCliError`) fails as in a plain run, and is not retried.
* A lost worker (its process killed, out of memory, its node gone) or another error: the
  video's partial files are removed and it goes back to the queue, to be tried on another worker,
  up to ``max_attempts`` times in all; then it is reported as failed. A lost worker is replaced by
  a new one (a bounded number of times), and the other workers go on meanwhile.
* A worker that cannot load the pipeline (bad options, missing weights) stops the whole run with
  that error, as a plain run would.

Ray is imported only here, and only when a batch runs on it: it is an optional extra
(``pip install 'posecli[ray]'``).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from posecli.config import PipelineConfig
from posecli.errors import PoseCliError
from posecli.pipeline import RunSummary

log = logging.getLogger(__name__)

# Seconds between two looks at the calls in flight (a Ctrl-C is noticed within this).
_POLL_S = 0.5


@dataclass(frozen=True)
class RayOptions:
    """Where and how wide a batch runs on Ray.

    Attributes:
        address: a running cluster (``ray://…``, ``HOST:PORT`` or ``auto``); None starts a local
            Ray on this machine, reachable on the loopback interface only.
        workers: actors to start; None: as many as the cluster's CPUs and GPUs fit.
        cpus_per_worker: CPU cores reserved for each worker (the pipeline sizes its threads to it).
        gpus_per_worker: GPUs reserved for each worker (fractions share a GPU); 0: CPU workers.
        max_attempts: tries of one video when its worker is lost, before it counts as failed.
    """

    address: str | None = None
    workers: int | None = None
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    max_attempts: int = 3

    def __post_init__(self) -> None:
        if self.workers is not None and self.workers < 1:
            raise PoseCliError(f"--workers must be at least 1, not {self.workers}")
        if self.cpus_per_worker <= 0:
            raise PoseCliError(f"--cpus-per-worker must be more than 0, not {self.cpus_per_worker}")
        if self.gpus_per_worker < 0:
            raise PoseCliError(f"--gpus-per-worker must be 0 or more, not {self.gpus_per_worker}")
        if self.max_attempts < 1:
            raise PoseCliError(f"max_attempts must be at least 1, not {self.max_attempts}")


@dataclass(frozen=True)
class VideoOutcome:
    """What became of one input of a distributed batch.

    Attributes:
        input: the input as given.
        summary: what it produced; None when it failed or was skipped.
        error: why it failed (None when it did not).
        attempts: workers that were given it (0: skipped).
        worker: where it was last tried (host, process id, device); empty when skipped.
    """

    input: Path
    summary: RunSummary | None
    error: str | None
    attempts: int
    worker: str = ""

    @property
    def skipped(self) -> bool:
        return self.attempts == 0


class PoseWorker:
    """The body of one Ray actor: a pipeline loaded once, then any number of videos."""

    def __init__(self, config: PipelineConfig) -> None:
        self._config = config
        self._pipeline = None

    def load(self) -> str:
        """Build the pipeline (model, detector); returns where this worker runs, for the log."""
        import socket

        from posecli.pipeline import Pipeline

        self._pipeline = Pipeline(self._config)
        return f"{socket.gethostname()} pid {os.getpid()} ({self._pipeline.device})"

    def process(self, path: Path, out_dir: Path, stem: str) -> RunSummary:
        return self._pipeline.process(path, out_dir, stem=stem)


def partial_files(target: Path) -> list[Path]:
    """Temporary files a sink left next to ``target`` (``.<name>.<random>.part<suffix>``, see ``sinks``)."""
    pattern = re.compile(re.escape(f".{target.name}.") + r"[0-9a-f]+" + re.escape(f".part{target.suffix}"))
    try:
        return [p for p in target.parent.iterdir() if pattern.fullmatch(p.name)]
    except FileNotFoundError:
        return []


def _import_ray(local: bool):
    if local:
        # Ray binds a local cluster to the machine's network address unless told this; set before
        # Ray is imported, it makes every process of the local cluster listen on 127.0.0.1 only.
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    try:
        import ray
    except ImportError:
        raise PoseCliError("--ray needs Ray: pip install 'posecli[ray]'") from None
    return ray


def _worker_count(ray, options: RayOptions) -> int:
    """``options.workers``, or as many workers as the cluster's resources fit (at least one)."""
    resources = ray.cluster_resources()
    fit = resources.get("CPU", 0.0) / options.cpus_per_worker
    if options.gpus_per_worker > 0:
        fit = min(fit, resources.get("GPU", 0.0) / options.gpus_per_worker)
    if options.workers is not None:
        return options.workers
    if fit < 1 and options.address is None:
        raise PoseCliError(f"this machine has {resources.get('CPU', 0):g} CPUs and {resources.get('GPU', 0):g} "
                           f"GPUs: not enough for one worker with {options.cpus_per_worker:g} CPUs and "
                           f"{options.gpus_per_worker:g} GPUs")
    return max(int(fit), 1)


def _absolute(config: PipelineConfig) -> PipelineConfig:
    """The config with its file paths made absolute, for workers on other machines."""
    return dataclasses.replace(config, **{
        name: Path(value).absolute() for name in ("weights", "detector_weights", "boxes_file")
        if (value := getattr(config, name)) is not None
    })


def run_on_ray(jobs: Sequence[tuple[Path, str]], out_dir: Path, config: PipelineConfig, options: RayOptions,
               *, on_start: Callable[[int, str], None] | None = None,
               on_done: Callable[[VideoOutcome], None] | None = None) -> list[VideoOutcome]:
    """Process ``(input, output stem)`` pairs on Ray workers; see the module docstring.

    Args:
        jobs: the inputs and the stem of each one's output files, all to be made.
        out_dir: output folder, seen by every worker under this path.
        on_start: called once the workers are asked for, with their count and the cluster's address.
        on_done: called with each input's outcome as it is known.

    Returns:
        One outcome per job, in the order of ``jobs``.

    Raises:
        PoseCliError: Ray is missing, or a worker cannot load the pipeline.
    """
    from posecli.batch import input_size
    from posecli.sinks import output_paths

    local = options.address is None
    ray = _import_ray(local)
    started = not ray.is_initialized()
    if started:
        try:
            ray.init(address=options.address, include_dashboard=False if local else None,
                     logging_level=logging.WARNING)
        except Exception as exc:  # ConnectionError, or a bare Exception when a local Ray times out starting
            where = f"the Ray cluster at {options.address}" if options.address else "a local Ray"
            raise PoseCliError(f"could not start or join {where}: {exc}") from exc
    try:
        workers = _worker_count(ray, options)
        if on_start is not None:
            on_start(workers, ray.get_runtime_context().gcs_address)
        return _Scheduler(ray, jobs, out_dir, config, options, workers, on_done,
                          lambda stem: output_paths(out_dir, stem, config.formats, config.overlay).values(),
                          input_size).run()
    finally:
        if started:
            ray.shutdown()


class _Scheduler:
    """The driver's loop: workers in, videos out, retries; one instance per batch."""

    def __init__(self, ray, jobs, out_dir, config, options, workers, on_done, targets, size) -> None:
        cpus = max(int(options.cpus_per_worker), 1)
        self.ray = ray
        self.actor_class = ray.remote(PoseWorker).options(
            num_cpus=options.cpus_per_worker, num_gpus=options.gpus_per_worker, max_restarts=0)
        # Workers of a local Ray start in this process's directory, so paths go as given (and the
        # outputs name their source as a plain run does); a cluster's workers get absolute paths.
        self.where = (lambda path: Path(path)) if options.address is None else (lambda path: Path(path).absolute())
        config = config if options.address is None else _absolute(config)
        self.config = dataclasses.replace(config, cpus=config.cpus or cpus)
        self.out_dir = self.where(out_dir)
        self.options = options
        self.workers = workers
        self.on_done = on_done
        self.targets = targets
        self.jobs = list(jobs)
        # Largest (longest) first; a retried video goes back to the front.
        self.queue = deque(sorted(range(len(self.jobs)), key=lambda i: -size(self.jobs[i][0])))
        self.attempts = [0] * len(self.jobs)
        self.outcomes: dict[int, VideoOutcome] = {}
        self.loading: dict = {}  # load() call → actor
        self.running: dict = {}  # process() call → (actor, job index)
        self.where_loaded: dict = {}  # actor → what its load() said
        self.last_worker = [""] * len(self.jobs)
        self.last_actor: list = [None] * len(self.jobs)
        self.idle: list = []
        self.losses_left = workers * options.max_attempts  # replacements of lost workers

    def run(self) -> list[VideoOutcome]:
        try:
            for _ in range(self.workers):
                self._start_worker()
            while self.queue or self.running:
                self._dispatch()
                if not self.loading and not self.running:
                    for index in list(self.queue):
                        self._finish(index, None, "no worker left: every worker was lost")
                    self.queue.clear()
                    break
                ready, _ = self.ray.wait([*self.loading, *self.running], num_returns=1, timeout=_POLL_S)
                for ref in ready:
                    if ref in self.loading:
                        self._loaded(ref)
                    else:
                        self._processed(ref)
        finally:
            self._stop()
        return [self.outcomes[i] for i in range(len(self.jobs))]

    def _start_worker(self) -> None:
        actor = self.actor_class.remote(self.config)
        self.loading[actor.load.remote()] = actor

    def _dispatch(self) -> None:
        while self.queue and self.idle:
            index = self.queue.popleft()
            # A retried video goes to another worker than the one it failed on, where one is free.
            actor = next((a for a in reversed(self.idle) if a != self.last_actor[index]), self.idle[-1])
            self.idle.remove(actor)
            path, stem = self.jobs[index]
            self.attempts[index] += 1
            self.last_worker[index], self.last_actor[index] = self.where_loaded[actor], actor
            self.running[actor.process.remote(self.where(path), self.out_dir, stem)] = (actor, index)

    def _loaded(self, ref) -> None:
        actor = self.loading.pop(ref)
        try:
            self.where_loaded[actor] = self.ray.get(ref)
        except self.ray.exceptions.RayTaskError as exc:
            if isinstance(exc.cause, PoseCliError):
                raise PoseCliError(str(exc.cause)) from None
            self._lost(actor)
        except self.ray.exceptions.RayError:
            self._lost(actor)
        else:
            self.idle.append(actor)

    def _processed(self, ref) -> None:
        actor, index = self.running.pop(ref)
        try:
            summary = self.ray.get(ref)
        except self.ray.exceptions.RayTaskError as exc:
            # The worker is alive: the error came from the pipeline.
            self.idle.append(actor)
            if isinstance(exc.cause, PoseCliError):
                self._finish(index, None, str(exc.cause))
            else:
                self._retry(index, f"{type(exc.cause).__name__}: {exc.cause}")
        except self.ray.exceptions.RayError as exc:
            self._lost(actor)
            self._retry(index, f"worker lost ({type(exc).__name__})")
        else:
            self.idle.append(actor)
            self._finish(index, summary, None)

    def _lost(self, actor) -> None:
        self.ray.kill(actor, no_restart=True)
        if self.losses_left > 0:
            self.losses_left -= 1
            self._start_worker()

    def _retry(self, index: int, reason: str) -> None:
        self._remove_partial_files(index)
        if self.attempts[index] < self.options.max_attempts:
            log.warning("%s: %s; trying again (attempt %d of %d)", self.jobs[index][0], reason,
                        self.attempts[index] + 1, self.options.max_attempts)
            self.queue.appendleft(index)
        else:
            self._finish(index, None, f"{self.jobs[index][0]}: failed {self.attempts[index]} times, last: {reason}")

    def _remove_partial_files(self, index: int) -> None:
        for target in self.targets(self.jobs[index][1]):
            for part in partial_files(target):
                part.unlink(missing_ok=True)

    def _finish(self, index: int, summary: RunSummary | None, error: str | None) -> None:
        outcome = VideoOutcome(self.jobs[index][0], summary, error, self.attempts[index], self.last_worker[index])
        self.outcomes[index] = outcome
        if self.on_done is not None:
            self.on_done(outcome)

    def _stop(self) -> None:
        """Stop every worker; the videos still in flight (an interrupted run) leave no partial file."""
        for actor in [*self.loading.values(), *(a for a, _ in self.running.values()), *self.idle]:
            self.ray.kill(actor, no_restart=True)
        if self.running:
            # ray.kill does not wait: give the killed workers a moment before their files go.
            self.ray.wait(list(self.running), num_returns=len(self.running), timeout=10)
        for _, index in self.running.values():
            self._remove_partial_files(index)


def process_many(inputs: Sequence[str | Path], out_dir: str | Path, config: PipelineConfig = PipelineConfig(), *,
                 skip_existing: bool = False, address: str | None = None, workers: int | None = None,
                 cpus_per_worker: float = 1.0, gpus_per_worker: float = 0.0,
                 max_attempts: int = 3) -> list[VideoOutcome]:
    """Fan a batch out over Ray workers from Python (a notebook); ``posecli run --ray`` does the same.

    Args:
        inputs: video files, image folders and folders of videos (expanded as by ``posecli run``).
        out_dir: output folder (created if missing), on a file system every worker sees.
        config: the pipeline's options, as for :class:`~posecli.pipeline.Pipeline`.
        skip_existing: leave out inputs whose output files are all there.
        address, workers, cpus_per_worker, gpus_per_worker, max_attempts: see :class:`RayOptions`.
            Without ``address``, a Ray already started in this process (``ray.init``) is used, else a
            local one is started for the call.

    Returns:
        One outcome per input, in input order (``summary`` None for a failed or skipped one).

    Raises:
        PoseCliError: an input is missing or unsupported, the output folder is not writable, Ray
            is missing, or the pipeline cannot be loaded.

    Example:
        >>> from posecli.distributed import process_many
        >>> outcomes = process_many(["videos/"], "results", workers=4, gpus_per_worker=0.5)
        >>> [o.input.name for o in outcomes if o.error]
    """
    from posecli.runner import expand_inputs, output_stems
    from posecli.sinks import ensure_writable_dir, output_paths

    options = RayOptions(address=address, workers=workers, cpus_per_worker=cpus_per_worker,
                         gpus_per_worker=gpus_per_worker, max_attempts=max_attempts)
    paths = expand_inputs([Path(p) for p in inputs])
    stems = output_stems(paths)
    out_dir = ensure_writable_dir(out_dir)
    todo = [(p, stems[p]) for p in paths if not (
        skip_existing and all(t.is_file() for t in output_paths(out_dir, stems[p], config.formats, config.overlay).values()))]
    done = {o.input: o for o in run_on_ray(todo, out_dir, config, options)} if todo else {}
    return [done.get(p, VideoOutcome(p, None, None, 0)) for p in paths]
