"""Shared fixtures, and the CI rule: in CI (``CI=true``) nothing may be skipped.

Locally a test that needs ``../shared`` (data and third-party weights) or an optional dev
dependency skips, and ``-rs`` (in ``pyproject.toml``) prints why. In CI a missing ``../shared``
or dev dependency stops the run before any test, and any skip that still happens fails its test.
"""

import os
import re
import tomllib
from importlib import metadata
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
IN_CI = os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def _missing_dev_dependencies() -> list[str]:
    """Requirements of the ``dev`` extra that are not installed."""
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    missing = []
    for requirement in extras["dev"]:
        name = re.split(r"[\s<>=!~\[;]", requirement, maxsplit=1)[0]
        try:
            metadata.version(name)
        except metadata.PackageNotFoundError:
            missing.append(name)
    return missing


def pytest_sessionstart(session: pytest.Session) -> None:
    if not IN_CI:
        return
    problems = []
    if not SHARED.is_dir():
        problems.append(f"{SHARED} (data and third-party weights) is missing")
    missing = _missing_dev_dependencies()
    if missing:
        problems.append(f"dev dependencies not installed: {', '.join(missing)} (pip install -e '.[dev]')")
    if problems:
        pytest.exit("CI=true, so these cannot be skipped: " + "; ".join(problems), returncode=1)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    report = outcome.get_result()
    if IN_CI and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped in CI, where every test must run: {reason}"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip("../shared (data and third-party weights) is not present")
    return SHARED


@pytest.fixture
def detector_home(shared_dir: Path, tmp_path: Path, monkeypatch) -> Path:
    """A POSECLI_HOME holding only the YOLOX-nano detector (as if downloaded), and an empty cache."""
    import shutil

    home = tmp_path / "home"
    (home / "weights").mkdir(parents=True)
    shutil.copy(shared_dir / "weights" / "yolox_nano.onnx", home / "weights")
    monkeypatch.setenv("POSECLI_HOME", str(home))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return home


def cut_clip(source: Path, target: Path, first: int, count: int) -> Path:
    """Write frames ``first … first+count-1`` of ``source`` to ``target`` (mp4v), for short real inputs."""
    import cv2

    capture = cv2.VideoCapture(str(source))
    for _ in range(first):
        assert capture.grab()
    writer = None
    for _ in range(count):
        ok, frame = capture.read()
        assert ok
        if writer is None:
            writer = cv2.VideoWriter(str(target), cv2.VideoWriter_fourcc(*"mp4v"), 30.0, frame.shape[1::-1])
        writer.write(frame)
    writer.release()
    capture.release()
    return target
