"""The package shows what runs for a user and what measures: measurement lives in posecli.eval."""

import subprocess
import sys
from pathlib import Path

import typer.main

import posecli
from posecli.cli import app

PACKAGE = Path(posecli.__file__).parent
MEASUREMENT = ("evaluate", "tracking_eval", "metrics", "baselines", "bench")


def test_measurement_modules_are_in_the_eval_subpackage():
    for name in MEASUREMENT:
        assert (PACKAGE / "eval" / f"{name}.py").is_file()
        assert not (PACKAGE / f"{name}.py").exists()


def test_inference_imports_neither_measurement_nor_training():
    code = ("import sys, posecli.pipeline, posecli.runner, posecli.cli, posecli.sinks\n"
            "print(sorted({m.split('.')[1] for m in sys.modules if m.startswith(('posecli.eval', 'posecli.train'))}))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_the_measurement_commands_are_still_there():
    commands = typer.main.get_command(app).commands
    assert {"eval", "bench", "eval-tracks"} <= set(commands)
