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


@pytest.fixture(scope="session", autouse=True)
def user_cache(tmp_path_factory: pytest.TempPathFactory):
    """The tests' ``$XDG_CACHE_HOME``, one folder for the session: nothing lands in the user's own
    cache, and MoveNet's OpenVINO graph is converted once per session, not per loaded model."""
    with pytest.MonkeyPatch.context() as patch:
        folder = tmp_path_factory.mktemp("user-cache")
        patch.setenv("XDG_CACHE_HOME", str(folder))
        yield folder


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


# MoveNet's layer structure (17 inverted-residual blocks with the same strides, FPN taps and four
# heads, 17 keypoints) at 8-16 channels: random weights for the tests that need a pose network of the
# shipped architecture, not its accuracy (Thunder's own layers are 6.2 M parameters).
TINY_TRUNK = {
    "stem": 8,
    "blocks": [[8, 8]] + [[16, 8] for _ in range(16)],
    "top": 16,
    "laterals": [[16, 8], [8, 8], [8, 8], [8, 8]],
    "smooths": [[8, 8], [8, 8], [8, 8]],
    "heads": {"center": [8, 8, 1], "regress": [8, 8, 34], "heatmap": [8, 8, 17], "offset": [8, 8, 34]},
    "input_scale": 1 / 127.5,
    "input_shift": 1.0,
}


# Layer sizes of the stand-in besides its trunk (also the ``model_kwargs`` of training runs from it).
TINY_MODEL_KWARGS = {"strl_dim": 32, "strl_depth": 1, "strl_heads": 2, "decoder_channels": (32, 16, 8),
                     "decoder_heads": 2, "time_dim": 32}


def tiny_pose_model(window: int = 3, input_size: tuple[int, int] = (64, 64), seed: int = 0, **kwargs):
    """A small random ``DiffPoseMoveNet`` on :data:`TINY_TRUNK` (train mode, as constructed).

    Its residual head is random too: the real model's starts at zero (x̂0 = MoveNet's prior), which
    would hide what the decoder, STRL and the sampler do from the tests that use this stand-in.
    """
    import copy

    import torch

    from posecli.models.diffpose_movenet import DiffPoseMoveNet

    torch.manual_seed(seed)
    args = dict(TINY_MODEL_KWARGS, window=window, input_size=input_size)
    args.update(kwargs)
    model = DiffPoseMoveNet(copy.deepcopy(TINY_TRUNK), **args)
    head = model.decoder.head[-1]
    torch.nn.init.normal_(head.weight, std=0.05)
    torch.nn.init.normal_(head.bias, std=0.05)
    return model


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """:func:`tiny_pose_model` (64×64 input, window 3) as a checkpoint file (1 DDIM step, the shipped
    model's crop framing); training runs start from it with ``init_checkpoint``."""
    from posecli.models import save_checkpoint

    path = tmp_path_factory.mktemp("tiny-weights") / "tiny.pt"
    save_checkpoint(path, tiny_pose_model(window=3).eval(), {"steps": 1, "crop_enlarge": 1.15})
    return path


@pytest.fixture
def tiny_weights(tiny_checkpoint: Path, monkeypatch) -> Path:
    """:func:`tiny_checkpoint`, loaded by ``posecli.models.loading`` with MoveNet's layers in PyTorch:
    their conversion to OpenVINO takes 5-12 s per load on two cores whatever the width, and the
    tests of the shipped weights go that way."""
    monkeypatch.setattr("posecli.models.loading.openvino_trunk_or_none", lambda trunk, input_hw, threads: None)
    return tiny_checkpoint


@pytest.fixture
def pytorch_trunk(monkeypatch) -> None:
    """Training runs MoveNet's layers in PyTorch, not OpenVINO: the conversion costs 5-12 s per run
    on two cores (up to 30 on a busy machine) whatever the width; that the OpenVINO trunk computes
    what PyTorch does is ``test_diffpose_movenet``'s."""
    monkeypatch.setattr("posecli.models.openvino_trunk.openvino_trunk_or_none", lambda trunk, input_hw, threads: None)
