"""Weights files: the manifest, finding a file, checking its sha256, downloading it.

The manifest (``weights/manifest.toml``, format described at its top) lists one entry per file,
named ``arch.tag-vN``. A file is looked for, in order:

1. an explicit path (``--weights`` / ``--detector-weights``),
2. ``$POSECLI_HOME/weights/``,
3. the weights shipped with posecli: the repository's ``weights/`` folder, which a wheel carries as
   ``posecli/shipped_weights/`` (together with the manifest),
4. the user cache, ``$XDG_CACHE_HOME/posecli`` or ``~/.cache/posecli``,
5. the entry's URL, downloaded into the user cache (temporary file in the same folder, sha256
   checked, then renamed into place, so a file there is always complete).

A file found by name always has its full sha256 checked against the manifest; the result is
remembered for the process by (path, size, mtime), so a batch of videos hashes it once. A file
the user names explicitly is used as given (it may be their own model): a differing hash is only
logged.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import tempfile
import tomllib
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from posecli.errors import PoseCliError

log = logging.getLogger(__name__)


def _shipped_weights_dir() -> Path:
    """``posecli/shipped_weights/`` in an installed wheel, else the source tree's ``weights/``."""
    installed = Path(__file__).resolve().parent / "shipped_weights"
    return installed if installed.is_dir() else Path(__file__).resolve().parents[1] / "weights"


PACKAGE_WEIGHTS_DIR = _shipped_weights_dir()
DEFAULT_MANIFEST = PACKAGE_WEIGHTS_DIR / "manifest.toml"
KINDS = ("detector", "pose", "baseline")
POSE_FIELDS = ("heatmap_size", "mean", "std", "keypoints", "window", "steps", "metrics")
_NAME = re.compile(r"^(?P<arch>[a-z0-9][a-z0-9_-]*)\.(?P<tag>[a-z0-9][a-z0-9_-]*?)-v(?P<version>\d+)$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_CHUNK = 1 << 20

# Progress callback for downloads: (bytes so far, total bytes or None when unknown).
Progress = Callable[[int, "int | None"], None]


@dataclass(frozen=True)
class WeightsEntry:
    """One manifest entry. Pose-only fields are None for detectors; other keys go to ``extra``."""

    name: str
    kind: str
    file: str
    sha256: str
    license: str
    source: str
    input_size: tuple[int, int]  # (height, width)
    url: str | None = None
    size: int | None = None
    heatmap_size: tuple[int, int] | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    keypoints: str | None = None
    window: int | None = None
    steps: int | None = None
    metrics: dict | None = None
    extra: dict = field(default_factory=dict)

    @property
    def arch(self) -> str:
        """The architecture part of the name (``yolox-nano`` in ``yolox-nano.coco80-v1``)."""
        return self.name.split(".", 1)[0]

    @property
    def version(self) -> int:
        return int(_NAME.match(self.name)["version"])

    @property
    def family(self) -> str:
        """The name without its version (``yolox-nano.coco80``)."""
        return self.name.rsplit("-v", 1)[0]


def _parse_entry(raw: dict, where: str) -> WeightsEntry:
    def need(key: str, kind: type | tuple[type, ...]) -> object:
        value = raw.get(key)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise PoseCliError(f"{where}: '{key}' is missing or not a {getattr(kind, '__name__', kind)}")
        return value

    def pair(key: str) -> tuple[int, int]:
        value = need(key, list)
        if len(value) != 2 or not all(isinstance(v, int) and v > 0 for v in value):
            raise PoseCliError(f"{where}: '{key}' must be [height, width] positive integers")
        return (value[0], value[1])

    name = need("name", str)
    where = f"{where} ({name})"
    if not _NAME.match(name):
        raise PoseCliError(f"{where}: name must look like 'arch.tag-vN'")
    kind = need("kind", str)
    if kind not in KINDS:
        raise PoseCliError(f"{where}: kind must be one of {', '.join(KINDS)}, not {kind!r}")
    sha = need("sha256", str)
    if not _SHA256.match(sha):
        raise PoseCliError(f"{where}: sha256 must be 64 lower-case hex digits")
    known = {"name", "kind", "file", "sha256", "license", "source", "input_size", "url", "size",
             *POSE_FIELDS}
    values: dict = dict(
        name=name, kind=kind, file=need("file", str), sha256=sha, license=need("license", str),
        source=need("source", str), input_size=pair("input_size"),
        url=raw.get("url"), size=raw.get("size"),
        extra={k: v for k, v in raw.items() if k not in known},
    )
    if kind == "pose":
        missing = [k for k in POSE_FIELDS if k not in raw]
        if missing:
            raise PoseCliError(f"{where}: pose entries need {', '.join(missing)}")
        values.update(heatmap_size=pair("heatmap_size"), mean=tuple(need("mean", list)),
                      std=tuple(need("std", list)), keypoints=need("keypoints", str),
                      window=need("window", int), steps=need("steps", int),
                      metrics=need("metrics", dict))
    if Path(values["file"]).name != values["file"]:
        raise PoseCliError(f"{where}: 'file' must be a bare file name")
    return WeightsEntry(**values)


def load_manifest(manifest: str | Path | None = None) -> dict[str, WeightsEntry]:
    """Read and validate a manifest (default: the one shipped with posecli).

    Returns:
        entry name → entry, in file order.
    """
    path = Path(manifest) if manifest is not None else DEFAULT_MANIFEST
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise PoseCliError(f"weights manifest {path} not found") from exc
    except tomllib.TOMLDecodeError as exc:
        raise PoseCliError(f"weights manifest {path} is not valid TOML ({exc})") from exc
    entries: dict[str, WeightsEntry] = {}
    for i, raw in enumerate(data.get("weights", [])):
        entry = _parse_entry(raw, f"{path.name} entry {i}")
        if entry.name in entries:
            raise PoseCliError(f"{path.name}: entry {entry.name} appears twice")
        entries[entry.name] = entry
    return entries


def list_entries(manifest: str | Path | None = None) -> list[WeightsEntry]:
    """All manifest entries, in file order."""
    return list(load_manifest(manifest).values())


def find_entry(name: str, manifest: str | Path | None = None) -> WeightsEntry:
    """The entry called ``name``: a full name, an arch (its newest version), or a file name.

    Raises:
        PoseCliError: no entry matches, or an arch has several families (tags) to choose from.
    """
    entries = load_manifest(manifest)
    entry = _lookup(name, entries)
    if entry is None:
        raise PoseCliError(_unknown(name, entries))
    return entry


def _unknown(name: str, entries: dict[str, WeightsEntry]) -> str:
    return f"unknown weights {name!r}; known: {', '.join(entries) or '(none)'}"


def _lookup(name: str, entries: dict[str, WeightsEntry]) -> WeightsEntry | None:
    if name in entries:
        return entries[name]
    by_file = [e for e in entries.values() if e.file == name]
    if by_file:
        return max(by_file, key=lambda e: e.version)
    by_arch = [e for e in entries.values() if e.arch == name]
    if not by_arch:
        return None
    families = sorted({e.family for e in by_arch})
    if len(families) > 1:
        raise PoseCliError(f"weights {name!r} is ambiguous; choose one of "
                           + ", ".join(e.name for e in by_arch))
    return max(by_arch, key=lambda e: e.version)


def cache_dir() -> Path:
    """The user cache for downloaded weights: ``$XDG_CACHE_HOME/posecli`` or ``~/.cache/posecli``."""
    base = os.environ.get("XDG_CACHE_HOME")
    return (Path(base) if base else Path.home() / ".cache") / "posecli"


def search_dirs() -> list[Path]:
    """Folders searched for weights by file name, in order (see the module docstring)."""
    dirs = []
    home = os.environ.get("POSECLI_HOME")
    if home:
        dirs.append(Path(home).expanduser() / "weights")
    dirs += [PACKAGE_WEIGHTS_DIR, cache_dir()]
    return dirs


# (resolved path, size, mtime_ns) → sha256 hex digest, for this process.
_HASHES: dict[tuple[str, int, int], str] = {}


def sha256_file(path: str | Path) -> str:
    """Full sha256 of a file (hex), remembered while the file's size and mtime stay the same."""
    p = Path(path).resolve()
    st = p.stat()
    key = (str(p), st.st_size, st.st_mtime_ns)
    if key not in _HASHES:
        digest = hashlib.sha256()
        with open(p, "rb") as f:
            while chunk := f.read(_CHUNK):
                digest.update(chunk)
        _HASHES[key] = digest.hexdigest()
    return _HASHES[key]


def _check_hash(path: Path, entry: WeightsEntry) -> Path:
    actual = sha256_file(path)
    if actual != entry.sha256:
        fix = (f"delete it and run `posecli weights fetch {entry.name}`" if entry.url
               else f"restore the original {entry.file}")
        raise PoseCliError(f"{path} does not match {entry.name}: sha256 is {actual}, expected "
                           f"{entry.sha256} (damaged or a different file); {fix}")
    return path


def find_local(name: str, manifest: str | Path | None = None) -> Path | None:
    """Where the entry's file is found without downloading (not hash-checked), or None."""
    entry = find_entry(name, manifest)
    for folder in search_dirs():
        candidate = folder / entry.file
        if candidate.is_file():
            return candidate
    return None


def _flag(entry: WeightsEntry) -> str:
    return {"detector": "--detector-weights", "pose": "--weights"}.get(entry.kind, "--baseline-dir")


def resolve(name_or_path: str | Path, explicit_path: str | Path | None = None,
            allow_download: bool = True, progress: Progress | None = None,
            manifest: str | Path | None = None) -> Path:
    """Find (or download) a weights file and check it.

    Args:
        name_or_path: a manifest name (full, arch, or file name), or a path to a weights file.
        explicit_path: a file the user chose for this entry; it wins over the search.
        allow_download: whether to download from the entry's URL when no local copy exists.
        progress: called with (bytes so far, total or None) while downloading.
        manifest: manifest to use instead of the repository's.

    Returns:
        Path of a file whose sha256 matches the manifest (or the user's own file, as given).

    Raises:
        PoseCliError: unknown name, missing file, hash mismatch, or a failed download; the message
            says how to fix it.
    """
    text = str(name_or_path)
    entries = load_manifest(manifest)
    entry = _lookup(text, entries)
    if entry is None:
        path = Path(text).expanduser()
        if path.is_file():
            return path
        looks_like_path = not _NAME.match(text) and (path.suffix or "/" in text or os.sep in text)
        raise PoseCliError(f"weights file {path} not found" if looks_like_path
                           else _unknown(text, entries))
    if explicit_path is not None:
        path = Path(explicit_path).expanduser()
        if not path.is_file():
            raise PoseCliError(f"weights file {path} not found")
        if sha256_file(path) != entry.sha256:
            log.warning("%s is not the manifest's %s (sha256 differs); using it as given",
                        path, entry.name)
        return path
    for folder in search_dirs():
        candidate = folder / entry.file
        if candidate.is_file():
            return _check_hash(candidate, entry)
    if not allow_download or not entry.url:
        reason = "downloading not allowed" if entry.url else "it has no download URL"
        raise _missing(entry, reason)
    try:
        return _download(entry, cache_dir(), progress)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise _missing(entry, str(getattr(exc, "reason", None) or exc)) from exc


def _missing(entry: WeightsEntry, reason: str) -> PoseCliError:
    where = f"download {entry.url} and put it in {cache_dir()}" if entry.url \
        else f"put {entry.file} in {cache_dir()}"
    return PoseCliError(f"{entry.file} ({entry.name}) not found and could not be downloaded "
                        f"({reason}); {where}, or set POSECLI_HOME / pass {_flag(entry)}")


def _download(entry: WeightsEntry, folder: Path, progress: Progress | None) -> Path:
    """Download ``entry.url`` into ``folder/entry.file`` atomically, checking the sha256.

    The bytes go to a temporary file in the same folder, which is renamed into place only after
    its hash matched; on any failure it is removed, so no partial or wrong file is ever left.
    """
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / entry.file
    fd, tmp_name = tempfile.mkstemp(prefix=f".{entry.file}.", suffix=".part", dir=folder)
    tmp = Path(tmp_name)
    log.info("downloading %s from %s", entry.file, entry.url)
    try:
        digest = hashlib.sha256()
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(entry.url, timeout=60) as response:
            length = response.headers.get("Content-Length")
            total = int(length) if length else entry.size
            done = 0
            while chunk := response.read(_CHUNK):
                out.write(chunk)
                digest.update(chunk)
                done += len(chunk)
                if progress is not None:
                    progress(done, total)
            out.flush()
            os.fsync(out.fileno())
        actual = digest.hexdigest()
        if actual != entry.sha256:
            raise PoseCliError(f"downloaded {entry.file} does not match {entry.name}: sha256 is "
                               f"{actual}, expected {entry.sha256} ({entry.url} serves a different "
                               f"file); download the right file into {folder} by hand")
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    st = target.stat()
    _HASHES[(str(target.resolve()), st.st_size, st.st_mtime_ns)] = actual
    return target


def verify(name: str, manifest: str | Path | None = None) -> Path:
    """Check the local copy of an entry (no download); returns its path.

    Raises:
        PoseCliError: the file is missing or its sha256 differs.
    """
    return resolve(name, allow_download=False, manifest=manifest)


def fetch(name: str, progress: Progress | None = None, manifest: str | Path | None = None) -> Path:
    """Make an entry's file available locally (downloading it if needed); returns its path."""
    return resolve(name, allow_download=True, progress=progress, manifest=manifest)
