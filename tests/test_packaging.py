"""A regular (non-editable) install: the wheel and sdist carry the manifest and our checkpoints."""

import os
import shutil
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from pathlib import Path

import pytest
from setuptools import find_packages

from conftest import cut_clip

REPO = Path(__file__).resolve().parents[1]
# What pyproject.toml's package-data ships from weights/ (the patterns, not a list of files).
SHIPPED_PATTERNS = ("*.pt", "*.toml", "NOTICE", "MODEL_CARD.md")


def shipped_files() -> list[str]:
    """Names of the files in the repository's weights/ that a wheel must carry."""
    return sorted({p.name for pattern in SHIPPED_PATTERNS for p in (REPO / "weights").glob(pattern)})


def build(kind: str, source: Path, out: Path) -> Path:
    """Run the PEP 517 build hook (``wheel`` or ``sdist``) of the project in ``source`` into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    code = f"import setuptools.build_meta as b; print(b.build_{kind}({str(out)!r}))"
    done = subprocess.run([sys.executable, "-c", code], cwd=source, capture_output=True, text=True, check=True)
    return out / done.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def source_copy(tmp_path_factory) -> Path:
    """The files a build reads, copied, so that building leaves nothing in the checkout."""
    root = tmp_path_factory.mktemp("src")
    shutil.copytree(REPO / "posecli", root / "posecli", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "weights", root / "weights")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, root / name)
    return root


@pytest.fixture(scope="module")
def wheel(source_copy, tmp_path_factory) -> Path:
    return build("wheel", source_copy, tmp_path_factory.mktemp("wheel"))


def test_listed_packages_are_the_source_tree():
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    found = set(find_packages(str(REPO), include=["posecli", "posecli.*"]))
    assert set(config["packages"]) == found | {"posecli.shipped_weights"}
    assert config["package-dir"]["posecli.shipped_weights"] == "weights"


def test_wheel_carries_every_weights_file_as_package_data(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    assert shipped_files() and "manifest.toml" in shipped_files()
    for name in shipped_files():
        assert f"posecli/shipped_weights/{name}" in names
    assert not any(n.startswith("weights/") for n in names)  # nothing at the top of site-packages
    assert {"posecli/eval/evaluate.py", "posecli/models/diffpose_movenet.py", "posecli/train/loop.py"} <= names


@pytest.mark.slow
def test_sdist_builds_a_wheel_with_the_weights(source_copy, tmp_path):
    sdist = build("sdist", source_copy, tmp_path / "sdist")
    with tarfile.open(sdist) as tar:
        tar.extractall(tmp_path / "unpacked", filter="data")
    (root,) = (tmp_path / "unpacked").iterdir()
    assert sorted(p.name for p in (root / "weights").iterdir()) == shipped_files()
    names = set(zipfile.ZipFile(build("wheel", root, tmp_path / "wheel")).namelist())
    assert {f"posecli/shipped_weights/{name}" for name in shipped_files()} <= names


@pytest.mark.slow
def test_wheel_in_a_fresh_venv_runs_a_clip(wheel, shared_dir, tmp_path):
    """pip-installs the wheel into a new venv (dependencies borrowed from this one) and runs a clip
    from a folder outside the repository, with and without POSECLI_HOME."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
                    "--no-index", "--quiet", str(wheel)], check=True)
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                          capture_output=True, text=True, check=True).stdout.strip()
    # torch, cv2, … from this environment; a path in a .pth is not itself scanned for .pth files,
    # so this environment's editable posecli stays invisible.
    deps = [p for p in sys.path if p.endswith("site-packages")]
    Path(site, "deps.pth").write_text("\n".join(deps) + "\n")
    home = tmp_path / "home"
    (home / "weights").mkdir(parents=True)
    shutil.copy(shared_dir / "weights" / "yolox_nano.onnx", home / "weights")
    clip = cut_clip(shared_dir / "data" / "videos" / "sports2d_demo.mp4", tmp_path / "clip.mp4", 30, 3)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "POSECLI_HOME")}
    env.update(XDG_CACHE_HOME=str(tmp_path / "cache"), COLUMNS="200")
    posecli = str(venv / "bin" / "posecli")

    where = subprocess.run([python, "-c", "import posecli; print(posecli.__file__)"], cwd=tmp_path, env=env,
                           capture_output=True, text=True, check=True).stdout
    assert where.startswith(site)
    listed = subprocess.run([posecli, "weights", "list"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert listed.returncode == 0 and "Traceback" not in listed.stderr, listed.stderr
    assert "shipped_weights" in listed.stdout
    # Without the detector anywhere (and a proxy that refuses, so the download fails at once):
    # one line that says how to fix it, no traceback.
    offline = {**env, "https_proxy": "http://127.0.0.1:9", "http_proxy": "http://127.0.0.1:9"}
    missing = subprocess.run([posecli, "run", str(clip), "--out", "out"], cwd=tmp_path, env=offline,
                             capture_output=True, text=True)
    assert missing.returncode == 1 and "Traceback" not in missing.stderr
    assert "error: yolox_nano.onnx (yolox-nano.coco80-v1) not found" in missing.stderr
    done = subprocess.run([posecli, "run", str(clip), "--out", "out", "--window", "1", "--smooth", "none"],
                          cwd=tmp_path, env={**env, "POSECLI_HOME": str(home)}, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out" / "clip.json").is_file()
