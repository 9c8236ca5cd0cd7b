"""``run --ray`` on a local Ray with two workers: the outputs of a plain run, lost workers and a lost driver.

The expected poses come from a plain run made here, never from stored numbers. One local Ray (two
CPUs, loopback only) serves the tests that drive it from this process; the killed driver runs in a
process of its own with the local Ray it starts itself.
"""

import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import cut_clip
from test_batch import assert_same_poses

if importlib.util.find_spec("ray") is None:
    if os.environ.get("CI"):
        raise RuntimeError("CI installs posecli[ray] (.ci/run): the Ray tests must run there")
    pytest.skip("Ray is not installed (pip install 'posecli[ray]')", allow_module_level=True)

from posecli.cli import app  # noqa: E402
from posecli.config import PipelineConfig  # noqa: E402
from posecli.distributed import process_many  # noqa: E402

FRAMES = 16


@pytest.fixture(scope="module")
def batch(shared_dir, tmp_path_factory):
    """Three short real clips, POSECLI_HOME with the detector, and a plain run's outputs."""
    root = tmp_path_factory.mktemp("ray")
    home = root / "home"
    (home / "weights").mkdir(parents=True)
    shutil.copy(shared_dir / "weights" / "yolox_nano.onnx", home / "weights")
    videos, clips = shared_dir / "data" / "videos", root / "clips"
    clips.mkdir()
    cut_clip(videos / "sports2d_demo.mp4", clips / "walk.mp4", 60, FRAMES)
    cut_clip(videos / "pose2sim_MultiPerson_cam01.mp4", clips / "multi.mp4", 0, FRAMES)
    cut_clip(videos / "pose2sim_SinglePerson_cam02.mp4", clips / "single.mp4", 0, FRAMES)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("POSECLI_HOME", str(home))
        result = CliRunner().invoke(app, ["run", str(clips), "--out", str(root / "plain")])
    assert result.exit_code == 0, result.output
    return clips, root / "plain", home


@pytest.fixture(scope="module")
def local_ray(batch):
    """A Ray on this machine for the module (its workers find the detector through POSECLI_HOME)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("POSECLI_HOME", str(batch[2]))
        patch.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # loopback only, as posecli does
        import ray

        ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
        try:
            yield ray.get_runtime_context().gcs_address
        finally:
            ray.shutdown()


@pytest.fixture
def env(batch, local_ray, monkeypatch):
    monkeypatch.setenv("POSECLI_HOME", str(batch[2]))
    return batch


def partial_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".part" in p.name)


@pytest.mark.slow
def test_ray_run_makes_what_a_plain_run_makes(env, tmp_path):
    clips, plain, _ = env
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["run", str(clips), "--out", str(out), "--ray", "--workers", "2"])
    assert result.exit_code == 0, result.output
    assert_same_poses(plain, out)
    assert partial_files(out) == []
    for name in ("walk.mp4", "multi.mp4", "single.mp4"):
        assert name in result.output  # one summary row each


def kill_writers(out: Path, kills: dict[str, int], stop: threading.Event, killed: list) -> None:
    """SIGKILL the process that holds a partial output of input STEM open (a worker in the middle of
    that video), up to ``kills[STEM]`` times; ``killed`` gets the stem of each kill."""
    pids: set[int] = set()  # a killed process lingers a moment in /proc with its files open
    while not stop.is_set():
        time.sleep(0.005)
        parts = {os.path.realpath(p): p.name.split(".")[1] for p in out.glob(".*.part*")} if out.is_dir() else {}
        parts = {path: stem for path, stem in parts.items() if killed.count(stem) < kills.get(stem, 0)}
        if not parts:
            continue
        for pid in (int(p) for p in os.listdir("/proc") if p.isdigit() and int(p) not in pids | {os.getpid()}):
            try:
                held = {os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")}
            except OSError:
                continue
            if held & parts.keys():
                os.kill(pid, signal.SIGKILL)
                pids.add(pid)
                killed.append(parts[min(held & parts.keys())])
                break


@pytest.mark.slow
def test_workers_killed_in_the_middle_of_videos(env, tmp_path):
    """walk.mp4's worker is killed once: walk is made by another worker. single.mp4's worker is
    killed at each of its 2 attempts: it is reported as failed, and the others are still made."""
    clips, plain, _ = env
    out = tmp_path / "out"
    stop, killed = threading.Event(), []
    killer = threading.Thread(target=kill_writers, args=(out, {"walk": 1, "single": 2}, stop, killed))
    killer.start()
    try:
        outcomes = {o.input.stem: o for o in process_many([clips], out, PipelineConfig(), workers=2, max_attempts=2)}
    finally:
        stop.set()
        killer.join()
    assert sorted(killed) == ["single", "single", "walk"]
    assert (outcomes["walk"].error, outcomes["walk"].attempts) == (None, 2)
    assert (outcomes["multi"].error, outcomes["multi"].attempts) == (None, 1)
    assert outcomes["single"].summary is None and outcomes["single"].attempts == 2
    assert "failed 2 times" in outcomes["single"].error and "worker lost" in outcomes["single"].error
    assert partial_files(out) == []
    (plain_walk_multi := tmp_path / "expected").mkdir()
    for name in ("walk.json", "multi.json"):
        shutil.copy(plain / name, plain_walk_multi / name)
    assert_same_poses(plain_walk_multi, out)


@pytest.mark.slow
def test_a_killed_driver_is_rerun_with_skip_existing(env, tmp_path):
    clips, plain, home = env
    out = tmp_path / "out"
    command = [sys.executable, "-m", "posecli.cli", "run", str(clips), "--out", str(out), "--ray", "--workers", "1"]
    log = tmp_path / "driver.log"
    with open(log, "w") as stderr:
        driver = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True,
                                  env={**without_loopback_variable(), "POSECLI_HOME": str(home)})
    try:
        deadline = time.monotonic() + 300
        while not (out.is_dir() and any(not p.name.startswith(".") for p in out.iterdir())):
            assert driver.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.01)
        assert listening_addresses(driver.pid) <= {"127.0.0.1"}  # the driver's local Ray: loopback only
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait()
    finally:
        # The local Ray the driver started (its session): workers and agents go with it.
        with_session = [int(p) for p in os.listdir("/proc") if p.isdigit() and _session(int(p)) == driver.pid]
        for pid in with_session:
            os.kill(pid, signal.SIGKILL)

    def complete() -> dict[str, tuple[int, int]]:
        return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in out.iterdir() if not p.name.startswith(".")}

    left = complete()
    stale = partial_files(out)
    assert 1 <= len(left) < 3

    result = CliRunner().invoke(app, ["run", str(clips), "--out", str(out), "--ray", "--workers", "2",
                                      "--skip-existing"])
    assert result.exit_code == 0, result.output
    assert result.output.count("skipped (outputs exist)") == len(left)
    now = complete()
    assert len(now) == 3 and {name: now[name] for name in left} == left  # the ones there untouched
    assert set(partial_files(out)) <= set(stale), result.output  # the rerun leaves none of its own
    for name in stale:
        (out / name).unlink(missing_ok=True)
    assert_same_poses(plain, out)


def without_loopback_variable() -> dict[str, str]:
    """This process's environment without the variable the local_ray fixture set: posecli must set it."""
    return {k: v for k, v in os.environ.items() if k != "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"}


def listening_addresses(session: int) -> set[str]:
    """IPv4 addresses that the processes of a session listen on (TCP, from /proc)."""
    inodes = set()
    for pid in (int(p) for p in os.listdir("/proc") if p.isdigit()):
        if _session(pid) != session:
            continue
        try:
            links = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
        except OSError:
            continue
        inodes.update(link[8:-1] for link in links if link.startswith("socket:["))
    addresses = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                hex_ip = fields[1].split(":")[0][-8:]  # IPv4, or the IPv4 of an IPv4-mapped IPv6 address
                addresses.add(".".join(str(int(hex_ip[i:i + 2], 16)) for i in (6, 4, 2, 0)))
    assert addresses, "found no listening socket of the driver's Ray"
    return addresses


def _session(pid: int) -> int | None:
    try:
        return os.getsid(pid)
    except OSError:
        return None
