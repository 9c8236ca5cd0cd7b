"""The COCO results export loads against the dataset its images came from."""

import json
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from posecli.cli import app
from posecli.errors import PoseCliError
from posecli.sinks import coco_image_id, load_coco_image_ids
from posecli.types import Frame

IMAGE = np.zeros((4, 4, 3), np.uint8)


def test_image_ids_from_names_from_a_dataset_or_the_frame_index():
    assert coco_image_id(Frame(0, 0.0, IMAGE, file="000000350679.jpg")) == 350679
    assert coco_image_id(Frame(4, 0.0, IMAGE, file="17.png")) == 17
    assert coco_image_id(Frame(4, 0.0, IMAGE, file="img_17.png")) == 5
    assert coco_image_id(Frame(4, 0.0, IMAGE, file="-17.png")) == 5
    assert coco_image_id(Frame(9, 0.3, IMAGE)) == 10  # a video frame
    ids = {"a.jpg": 42}
    assert coco_image_id(Frame(0, 0.0, IMAGE, file="a.jpg"), ids) == 42
    assert coco_image_id(Frame(0, 0.0, IMAGE, file="000000350679.jpg"), ids) is None


def test_dataset_file_is_read_by_file_name(shared_dir, tmp_path):
    ids = load_coco_image_ids(shared_dir / "data" / "coco-mini" / "val.json")
    assert ids["000000000139.jpg"] == 139 and len(ids) == 32
    (tmp_path / "results.json").write_text("[]")
    with pytest.raises(PoseCliError, match="not a COCO dataset file"):
        load_coco_image_ids(tmp_path / "results.json")


@pytest.fixture
def env(detector_home):
    return detector_home


@pytest.mark.slow
def test_export_loads_against_the_dataset_with_the_ap_posecli_eval_reports(env, shared_dir, tmp_path):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    ann_file = shared_dir / "data" / "coco-mini" / "val.json"
    folder = tmp_path / "val2017"
    folder.mkdir()
    names = sorted(p.name for p in (shared_dir / "data" / "coco-mini" / "val2017").iterdir())[:6]
    for name in names:
        shutil.copy(shared_dir / "data" / "coco-mini" / "val2017" / name, folder / name)
    cli = CliRunner()
    result = cli.invoke(app, ["run", str(folder), "--out", str(tmp_path / "out"), "--format", "coco"])
    assert result.exit_code == 0, result.output
    export = tmp_path / "out" / "val2017.coco.json"

    coco = COCO(str(ann_file))
    results = json.loads(export.read_text())
    assert results and {r["image_id"] for r in results} <= {int(n.split(".")[0]) for n in names}
    evaluator = COCOeval(coco, coco.loadRes(str(export)), iouType="keypoints")
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    report_file = tmp_path / "eval.json"
    result = cli.invoke(app, ["eval", str(ann_file), "--no-model", "--baselines", "none", "--results", str(export),
                              "--out-json", str(report_file)])
    assert result.exit_code == 0, result.output
    reported = json.loads(report_file.read_text())["models"]["val2017.coco.json"]["oks"]
    assert reported["AP"] == pytest.approx(evaluator.stats[0], abs=1e-9)
    assert reported["AR"] == pytest.approx(evaluator.stats[5], abs=1e-9)
    assert evaluator.stats[0] > 0  # the poses land on their own images' people

    # Names without the id: the dataset file maps them; an image it does not list is left out.
    renamed = tmp_path / "renamed"
    renamed.mkdir()
    shutil.copy(folder / names[0], renamed / "first.jpg")
    shutil.copy(folder / names[0], renamed / "zz_unknown.jpg")
    ids = {"first.jpg": int(names[0].split(".")[0])}
    dataset = tmp_path / "mine.json"
    dataset.write_text(json.dumps({"images": [{"id": ids["first.jpg"], "file_name": "sub/first.jpg"}]}))
    result = cli.invoke(app, ["run", str(renamed), "--out", str(tmp_path / "out"), "--format", "coco",
                              "--coco-dataset", str(dataset)])
    assert result.exit_code == 0, result.output
    assert "1 image(s) not in the COCO dataset file" in result.output
    assert {r["image_id"] for r in json.loads((tmp_path / "out" / "renamed.coco.json").read_text())} == {ids["first.jpg"]}


def test_results_with_foreign_image_ids_are_a_clear_error(shared_dir, tmp_path):
    results = tmp_path / "clip.coco.json"
    results.write_text(json.dumps([{"image_id": 1, "category_id": 1, "keypoints": [0] * 51, "score": 1.0}]))
    result = CliRunner().invoke(app, ["eval", str(shared_dir / "data" / "coco-mini" / "val.json"), "--no-model",
                                      "--baselines", "none", "--results", str(results)])
    assert result.exit_code == 1
    assert "image_id 1 (and 0 more) not in" in result.output and "Traceback" not in result.output
