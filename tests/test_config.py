"""Run options are checked when they are made, before any heavy import."""

import subprocess
import sys

import pytest

from posecli import config
from posecli.config import PipelineConfig
from posecli.errors import PoseCliError


def test_choices_are_those_of_the_implementing_modules():
    from posecli.detect import DETECTORS
    from posecli.models.loading import DTYPES
    from posecli.sinks import FORMATS
    from posecli.smooth import KINDS

    assert set(config.SMOOTHING_KINDS) == set(KINDS)
    assert set(config.OUTPUT_FORMATS) == set(FORMATS)
    assert set(config.DETECTOR_NAMES) == set(DETECTORS)
    assert set(config.DTYPES) == {"auto", *DTYPES}


@pytest.mark.parametrize("options, message", [
    ({"window": 4}, "--window must be odd"),
    ({"window": 0}, "--window must be odd"),
    ({"steps": 0}, "--steps must be at least 1"),
    ({"device": "gpu"}, "--device must be one of auto, cpu, cuda, not 'gpu'"),
    ({"dtype": "half"}, "--dtype must be one of"),
    ({"smooth": "kalman"}, "--smooth must be one of"),
    ({"formats": ("json", "xml")}, "--format must be one of .* not 'xml'"),
    ({"formats": ()}, "--format names no output format"),
    ({"detector": "yolo"}, "--detector must be one of"),
    ({"neighbour_crops": "nearest"}, "--neighbour-crops must be one of"),
    ({"detect_every": 0}, "--detect-every must be at least 1"),
    ({"prefetch": -1}, "--prefetch must be at least 0"),
    ({"score_threshold": 1.5}, "--score-threshold must be between 0 and 1"),
])
def test_bad_options_are_refused_on_creation(options, message):
    with pytest.raises(PoseCliError, match=message):
        PipelineConfig(**options)


def test_good_options_pass():
    PipelineConfig(window=1, steps=1, formats=(), overlay=True, prefetch=0, score_threshold=0.0)
    PipelineConfig(window=5, device="cpu", dtype="float32", smooth="none", formats=("csv", "coco"))


def test_an_option_error_answers_before_torch_or_decoders_are_imported(tmp_path):
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from posecli.cli import app\n"
        "result = CliRunner().invoke(app, ['run', 'clip.mp4', '--window', '4'])\n"
        "print(result.exit_code, result.output.strip())\n"
        "print(sorted(m for m in ('torch', 'cv2', 'scipy', 'numpy', 'onnxruntime', 'av') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    status, loaded = done.stdout.strip().splitlines()
    assert status.startswith("1 error: --window must be odd")
    assert loaded == "[]"
