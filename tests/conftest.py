from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip("../shared (data and third-party weights) is not present")
    return SHARED


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
