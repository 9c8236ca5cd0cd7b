"""Training shards: patches keep pixels and labels, the label rules apply when reading, training runs."""

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from conftest import TINY_MODEL_KWARGS
from posecli.errors import PoseCliError
from posecli.train.augment import AugmentConfig, make_example
from posecli.train.datasets import CocoKeypoints, VideoPseudoLabels
from posecli.train.loop import DatasetSpec, TrainConfig, build_sources, train
from posecli.train.shard import open_shards, write_shards

INPUT_HW = (256, 192)


@pytest.fixture(scope="module")
def shard(shared_dir, tmp_path_factory):
    """20 LSP-Extended persons (teacher face labels, suspect limbs) and 10 clip windows."""
    data = shared_dir / "data"
    lsp = CocoKeypoints(data / "lspet" / "train.json", face_teacher_weight=1.0, drop_lr_suspect=False, limit=20)
    clip = VideoPseudoLabels(data / "videos" / "pose2sim_SinglePerson_cam01.pseudo.json", 3,
                             tmp_path_factory.mktemp("cache"))
    clip.items = clip.items[:10]
    out = tmp_path_factory.mktemp("shard") / "s"
    write_shards([lsp, clip], [0.8, 0.2], out, INPUT_HW, 3, max_mb=0.5)
    return out


def _crop(sample):
    return make_example(sample.frames, sample.box_xyxy, sample.keypoints, sample.weights, 3, INPUT_HW,
                        AugmentConfig.none(), np.random.default_rng(0))


def test_shard_crops_match_crops_of_the_original_images(shard, shared_dir, tmp_path):
    sources, weights = open_shards(shard, 3, face_teacher_weight=0.0, drop_lr_suspect=True)
    assert weights == [0.8, 0.2] and len(json.loads((shard / "manifest.json").read_text())["files"]) > 1
    lsp = CocoKeypoints(shared_dir / "data" / "lspet" / "train.json", limit=20)
    clip = VideoPseudoLabels(shared_dir / "data" / "videos" / "pose2sim_SinglePerson_cam01.pseudo.json", 3,
                             tmp_path)
    for original, packed, count in ((lsp, sources[0], 20), (clip, sources[1], 10)):
        assert len(packed) == count
        for i in (0, count // 2, count - 1):
            a, b = _crop(original.load(i)), _crop(packed.load(i))
            np.testing.assert_array_equal(a.weights, b.weights)
            labelled = a.weights > 0
            assert np.abs(a.keypoints - b.keypoints)[labelled].max() < 1.0
            assert a.crops.shape == b.crops.shape
            assert np.abs(a.crops.astype(float) - b.crops.astype(float)).mean() < 8.0


def test_label_rules_apply_when_reading(shard, shared_dir):
    for teacher in (0.0, 0.5):
        for drop in (False, True):
            packed = open_shards(shard, 3, face_teacher_weight=teacher, drop_lr_suspect=drop)[0][0]
            original = CocoKeypoints(shared_dir / "data" / "lspet" / "train.json", face_teacher_weight=teacher,
                                     drop_lr_suspect=drop, limit=20)
            assert len(packed) == len(original)
            for i in range(len(original)):
                np.testing.assert_array_equal(packed.load(i).weights, original.load(i).weights)
    with_teacher = open_shards(shard, 3, face_teacher_weight=0.5, drop_lr_suspect=True)[0][0]
    assert any((with_teacher.load(i).weights[:5] == 0.5).any() for i in range(len(with_teacher)))


def test_window_must_match_the_clip_windows(shard):
    with pytest.raises(PoseCliError, match="3-frame clip windows"):
        open_shards(shard, 5, face_teacher_weight=0.0, drop_lr_suspect=True)


def test_training_runs_from_a_shard_folder(shard, tmp_path, tiny_checkpoint, pytorch_trunk):
    config = TrainConfig(datasets=(DatasetSpec(str(shard), 1.0),), out_dir=tmp_path / "run", steps=2,
                         batch_size=2, num_workers=0, threads=1, input_size=(64, 64), window=3,
                         val_json=None, checkpoint_every=1000, log_every=1,
                         init_checkpoint=tiny_checkpoint, model_kwargs=TINY_MODEL_KWARGS)
    with pytest.raises(PoseCliError, match="3-frame clip windows"):
        build_sources(replace(config, window=5))
    sources, weights = build_sources(config)
    assert [s.name for s in sources] == ["lspet/train.json (shard)", "pose2sim_SinglePerson_cam01.pseudo.json (shard)"]
    assert train(config).is_file()


def test_shard_refuses_a_folder_that_holds_shards(shard, shared_dir):
    lsp = CocoKeypoints(shared_dir / "data" / "lspet" / "train.json", limit=1)
    with pytest.raises(PoseCliError, match="already holds shards"):
        write_shards([lsp], [1.0], shard, INPUT_HW, 3)


def test_a_failed_packing_leaves_no_shards(shared_dir, tmp_path):
    lsp = CocoKeypoints(shared_dir / "data" / "lspet" / "train.json", limit=6)
    lsp.items[4] = ("missing.jpg", *lsp.items[4][1:])
    with pytest.raises(PoseCliError, match="cannot read image"):
        write_shards([lsp], [1.0], tmp_path / "s", INPUT_HW, 3, max_mb=0.01)
    assert list((tmp_path / "s").iterdir()) == []


def test_shard_command_refuses_a_shard_folder_as_input(shard, tmp_path):
    from typer.testing import CliRunner

    from posecli.cli import app

    result = CliRunner().invoke(app, ["shard", "--data", f"{shard}:1.0", "--out", str(tmp_path / "again")])
    assert result.exit_code == 1
    assert "is already a shard folder" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "again").exists()
