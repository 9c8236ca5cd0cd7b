"""``--shard I/N``: a split that covers every input exactly once, the same on every machine."""

import json
import random
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import cut_clip
from posecli.batch import assign_shards, parse_shard, select_shard
from posecli.cli import app
from posecli.errors import PoseCliError


def test_parse_shard():
    assert parse_shard("1/1") == (1, 1)
    assert parse_shard(" 3 / 8 ") == (3, 8)
    for bad in ("0/3", "4/3", "3", "1/0", "-1/3", "a/b", "1/3/5", ""):
        with pytest.raises(PoseCliError, match="--shard"):
            parse_shard(bad)


@pytest.mark.parametrize("count", [1, 2, 3, 4, 7, 40])
def test_every_input_lands_in_exactly_one_shard_whatever_the_order(count):
    rng = random.Random(count)
    # Ties (many equal sizes, zeros) are where an order-dependent split would show.
    sizes = [rng.choice([0, 10, 10, 10, 500, rng.randrange(1, 10**9)]) for _ in range(23)]
    names = [f"clip{i:02d}" for i in range(len(sizes))]
    shards = dict(zip(names, assign_shards(sizes, names, count)))
    assert set(shards.values()) <= set(range(count))
    for _ in range(5):
        order = list(range(len(sizes)))
        rng.shuffle(order)
        again = assign_shards([sizes[i] for i in order], [names[i] for i in order], count)
        assert {names[i]: s for i, s in zip(order, again)} == shards
    # Balanced: no shard holds more than the average plus one input (the greedy bound).
    loads = [sum(s for s, n in zip(sizes, names) if shards[n] == k) for k in range(count)]
    assert max(loads) <= sum(sizes) / count + max(sizes)


def test_split_balances_sizes():
    sizes = [90, 50, 40, 30, 20, 10]
    shards = assign_shards(sizes, [str(i) for i in range(len(sizes))], 2)
    loads = [sum(s for s, k in zip(sizes, shards) if k == shard) for shard in (0, 1)]
    assert loads == [120, 120]
    # More shards than inputs: each input alone, the extra shards empty.
    assert sorted(assign_shards([5, 3], ["a", "b"], 4)) == [0, 1]
    # Equal sizes (empty files) are spread by count, not piled on the first shard.
    shards = assign_shards([0] * 10, [str(i) for i in range(10)], 3)
    assert sorted(shards.count(k) for k in range(3)) == [3, 3, 4]


def test_split_ignores_where_the_folder_is_mounted(tmp_path):
    """Two machines that see the same files under different paths and list them in different
    orders make the same split."""
    sizes = {"b.mp4": 300, "a.mp4": 300, "c.mp4": 50, "d.mp4": 1000, "e.mp4": 0, "f.mp4": 300}
    splits = []
    for mount in (tmp_path / "node1" / "videos", tmp_path / "deeper" / "mnt" / "share" / "videos"):
        mount.mkdir(parents=True)
        for name, size in sizes.items():
            (mount / name).write_bytes(b"\0" * size)
        for order in (sorted, lambda names: sorted(names, reverse=True)):
            paths = [mount / name for name in order(sizes)]
            stems = {p: p.stem for p in paths}
            splits.append([sorted(p.name for p in select_shard(paths, stems, i, 3)) for i in (1, 2, 3)])
    assert all(split == splits[0] for split in splits)
    assert sorted(name for shard in splits[0] for name in shard) == sorted(sizes)
    assert splits[0] == [["d.mp4"], ["a.mp4", "f.mp4"], ["b.mp4", "c.mp4", "e.mp4"]]


def test_image_folders_weigh_their_images(tmp_path):
    small, big = tmp_path / "small", tmp_path / "big"
    for folder, size in ((small, 10), (big, 1000)):
        folder.mkdir()
        for i in range(3):
            (folder / f"{i}.jpg").write_bytes(b"\0" * size)
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"\0" * 2000)
    paths = [small, big, clip]
    stems = {p: p.stem for p in paths}
    # 3000 bytes of images outweigh the 2000-byte clip; the clip joins the 30-byte folder.
    assert select_shard(paths, stems, 1, 2) == [big]
    assert select_shard(paths, stems, 2, 2) == [small, clip]


def test_ray_is_imported_only_by_a_run_on_it():
    code = ("import sys, posecli.cli, posecli.runner, posecli.batch, posecli.distributed\n"
            "from posecli import process_many\n"
            "assert not [m for m in sys.modules if m == 'ray' or m.startswith('ray.')], 'ray was imported'")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_ray_missing_is_a_one_line_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    monkeypatch.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # posecli sets it before importing ray
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"\0" * 100)
    result = CliRunner().invoke(app, ["run", str(clip), "--out", str(tmp_path / "out"), "--ray"])
    assert result.exit_code == 1
    assert "error: --ray needs Ray: pip install 'posecli[ray]'" in result.output
    assert "Traceback" not in result.output


# -- real runs ------------------------------------------------------------------------------

FRAMES = 16


@pytest.fixture
def clips(shared_dir, tmp_path, monkeypatch):
    """A folder of three short real clips, and POSECLI_HOME with the detector."""
    home = tmp_path / "home"
    (home / "weights").mkdir(parents=True)
    shutil.copy(shared_dir / "weights" / "yolox_nano.onnx", home / "weights")
    monkeypatch.setenv("POSECLI_HOME", str(home))
    videos = shared_dir / "data" / "videos"
    folder = tmp_path / "clips"
    folder.mkdir()
    cut_clip(videos / "sports2d_demo.mp4", folder / "walk.mp4", 60, FRAMES)
    cut_clip(videos / "pose2sim_MultiPerson_cam01.mp4", folder / "multi.mp4", 0, FRAMES)
    cut_clip(videos / "pose2sim_SinglePerson_cam02.mp4", folder / "single.mp4", 0, FRAMES)
    return folder


def run(*args: str) -> None:
    result = CliRunner().invoke(app, ["run", *args, "--seed", "0"])
    assert result.exit_code == 0, result.output
    return result.output


def assert_same_poses(expected: Path, actual: Path) -> None:
    """Same output files; per frame the same track ids and keypoints within 0.01 px."""
    names = sorted(p.name for p in expected.iterdir())
    assert sorted(p.name for p in actual.iterdir()) == names
    for name in names:
        if not name.endswith(".json"):
            continue
        a, b = (json.loads((folder / name).read_text()) for folder in (expected, actual))
        assert len(a["frames"]) == len(b["frames"]) == FRAMES
        for fa, fb in zip(a["frames"], b["frames"]):
            assert [p["track_id"] for p in fa["poses"]] == [p["track_id"] for p in fb["poses"]]
            for pa, pb in zip(fa["poses"], fb["poses"]):
                np.testing.assert_allclose(np.array(pa["keypoints"], float)[:, :2],
                                           np.array(pb["keypoints"], float)[:, :2], atol=0.01)


@pytest.mark.slow
def test_shards_together_make_what_one_run_makes(clips, tmp_path):
    plain, sharded = tmp_path / "plain", tmp_path / "sharded"
    run(str(clips), "--out", str(plain), "--format", "json,csv")
    made = []
    for i in (1, 2, 3):
        before = set(sharded.iterdir()) if sharded.exists() else set()
        output = run(str(clips), "--out", str(sharded), "--format", "json,csv", "--shard", f"{i}/3")
        assert f"shard {i}/3: 1 of 3 inputs" in output
        made.append({p.name for p in set(sharded.iterdir()) - before})
    assert all(len(names) == 2 for names in made)  # one input (json + csv) per shard
    assert_same_poses(plain, sharded)

    # A lost shard is rerun with --skip-existing: only its missing outputs are made.
    (sharded / "multi.json").unlink()
    kept = {p.name: p.stat().st_mtime_ns for p in sharded.iterdir()}
    for i in (1, 2, 3):
        run(str(clips), "--out", str(sharded), "--format", "json,csv", "--shard", f"{i}/3", "--skip-existing")
    changed = {p.name for p in sharded.iterdir() if kept.get(p.name) != p.stat().st_mtime_ns}
    assert changed == {"multi.json", "multi.csv"}
    assert_same_poses(plain, sharded)
