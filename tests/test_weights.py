import hashlib
import io
import os
import shutil
from pathlib import Path

import pytest

from posecli import weights
from posecli.errors import PoseCliError

YOLOX_SHA = "695e750a5d5754bb5a8d5325643b59282191a7e7a564e435a415fd3c578eab14"


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """No test sees the real user cache, POSECLI_HOME, or the network."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("POSECLI_HOME", raising=False)
    monkeypatch.setattr(weights, "PACKAGE_WEIGHTS_DIR", tmp_path / "repo-weights")
    weights._HASHES.clear()

    def no_network(url, *args, **kwargs):
        if not str(url).startswith("file:"):
            raise OSError("network disabled in tests")
        return real_urlopen(url, *args, **kwargs)

    real_urlopen = weights.urllib.request.urlopen
    monkeypatch.setattr(weights.urllib.request, "urlopen", no_network)


@pytest.fixture
def yolox(shared_dir) -> Path:
    return shared_dir / "weights" / "yolox_nano.onnx"


class Raw(str):
    """A value written into the TOML as is (an inline table)."""


def write_manifest(path: Path, **fields) -> Path:
    entry = {
        "name": "toy.test-v1", "kind": "detector", "file": "toy.bin",
        "sha256": hashlib.sha256(b"toy weights").hexdigest(), "license": "MIT",
        "source": "tests", "input_size": [32, 32],
    }
    entry.update(fields)
    lines = ["format = 1", "", "[[weights]]"]
    for key, value in entry.items():
        if value is None:
            continue
        if isinstance(value, Raw):
            text = value
        elif isinstance(value, str):
            text = f'"{value}"'
        else:
            text = str(value).replace("'", '"')
        lines.append(f"{key} = {text}")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_repository_manifest_lists_both_detectors():
    entries = {e.name: e for e in weights.list_entries()}
    yolox = entries["yolox-nano.coco80-v1"]
    rtmdet = entries["rtmdet-nano.person-v1"]
    assert yolox.kind == rtmdet.kind == "detector"
    assert yolox.sha256 == YOLOX_SHA and yolox.file == "yolox_nano.onnx"
    assert rtmdet.sha256 == "b8585adb6d1352796f6e86337e09c3459b830645a7e7192d9381670bea2facbd"
    assert yolox.url.startswith("https://") and rtmdet.url.startswith("https://")
    assert yolox.input_size == (416, 416) and rtmdet.input_size == (320, 320)
    assert yolox.license == rtmdet.license == "Apache-2.0"
    # Detector names in the registry are the manifest archs.
    from posecli.detect import DETECTORS

    assert {e.arch for e in entries.values() if e.kind == "detector"} <= set(DETECTORS)


def test_lookup_by_name_arch_and_file():
    assert weights.find_entry("yolox-nano").name == "yolox-nano.coco80-v1"
    assert weights.find_entry("yolox_nano.onnx").name == "yolox-nano.coco80-v1"
    assert weights.find_entry("rtmdet-nano.person-v1").arch == "rtmdet-nano"
    with pytest.raises(PoseCliError, match="unknown weights 'nope'.*yolox-nano.coco80-v1"):
        weights.find_entry("nope")


def test_arch_picks_newest_version_and_rejects_ambiguity(tmp_path):
    sha = "0" * 64
    text = "format = 1\n" + "".join(
        f'[[weights]]\nname = "{n}"\nkind = "detector"\nfile = "{n}.onnx"\nsha256 = "{sha}"\n'
        f'license = "x"\nsource = "x"\ninput_size = [32, 32]\n'
        for n in ("a.t-v1", "a.t-v2", "b.t-v1", "b.u-v1"))
    manifest = tmp_path / "m.toml"
    manifest.write_text(text)
    assert weights.find_entry("a", manifest).name == "a.t-v2"
    with pytest.raises(PoseCliError, match="ambiguous"):
        weights.find_entry("b", manifest)


def test_found_in_posecli_home_and_verified(tmp_path, monkeypatch, yolox):
    home = tmp_path / "home"
    (home / "weights").mkdir(parents=True)
    (home / "weights" / "yolox_nano.onnx").symlink_to(yolox)
    monkeypatch.setenv("POSECLI_HOME", str(home))
    path = weights.resolve("yolox-nano", allow_download=False)
    assert path == home / "weights" / "yolox_nano.onnx"
    assert weights.verify("yolox-nano") == path
    assert weights.sha256_file(path) == YOLOX_SHA


def test_search_order(tmp_path, monkeypatch):
    manifest = write_manifest(tmp_path / "m.toml")
    home, repo, cache = tmp_path / "home" / "weights", weights.PACKAGE_WEIGHTS_DIR, weights.cache_dir()
    for folder in (home, repo, cache):
        folder.mkdir(parents=True)
        (folder / "toy.bin").write_bytes(b"toy weights")
    monkeypatch.setenv("POSECLI_HOME", str(tmp_path / "home"))
    assert weights.resolve("toy", manifest=manifest) == home / "toy.bin"
    (home / "toy.bin").unlink()
    assert weights.resolve("toy", manifest=manifest) == repo / "toy.bin"
    (repo / "toy.bin").unlink()
    assert weights.resolve("toy", manifest=manifest) == cache / "toy.bin"
    assert weights.find_local("toy", manifest=manifest) == cache / "toy.bin"
    # An explicit path wins over everything.
    own = tmp_path / "own.bin"
    own.write_bytes(b"toy weights")
    assert weights.resolve("toy", explicit_path=own, manifest=manifest) == own


def test_explicit_path_of_a_different_file_is_used_with_a_warning(tmp_path, caplog):
    manifest = write_manifest(tmp_path / "m.toml")
    own = tmp_path / "finetuned.bin"
    own.write_bytes(b"my own weights")
    assert weights.resolve("toy", explicit_path=own, manifest=manifest) == own
    assert "not the manifest's toy.test-v1" in caplog.text
    with pytest.raises(PoseCliError, match="not found"):
        weights.resolve("toy", explicit_path=tmp_path / "missing.bin", manifest=manifest)


def test_a_path_instead_of_a_name(tmp_path):
    own = tmp_path / "model.onnx"
    own.write_bytes(b"x")
    assert weights.resolve(own) == own
    with pytest.raises(PoseCliError, match="weights file .*missing.onnx not found"):
        weights.resolve(tmp_path / "missing.onnx")


def test_sha_mismatch_names_file_hashes_and_fix(tmp_path, monkeypatch, yolox):
    home = tmp_path / "home" / "weights"
    home.mkdir(parents=True)
    damaged = home / "yolox_nano.onnx"
    data = bytearray(yolox.read_bytes())
    data[1000] ^= 0xFF
    damaged.write_bytes(bytes(data))
    monkeypatch.setenv("POSECLI_HOME", str(tmp_path / "home"))
    with pytest.raises(PoseCliError) as info:
        weights.resolve("yolox-nano")
    message = str(info.value)
    assert str(damaged) in message and YOLOX_SHA in message
    assert hashlib.sha256(bytes(data)).hexdigest() in message
    assert "posecli weights fetch yolox-nano.coco80-v1" in message
    assert "\n" not in message


def test_hash_is_cached_by_path_size_and_mtime(tmp_path, monkeypatch):
    f = tmp_path / "w.bin"
    f.write_bytes(b"abc")
    first = weights.sha256_file(f)
    calls = []
    real_sha256 = hashlib.sha256
    monkeypatch.setattr(weights.hashlib, "sha256", lambda: calls.append(1) or real_sha256())
    assert weights.sha256_file(f) == first and calls == []
    f.write_bytes(b"abcd")  # new size: hashed again
    assert weights.sha256_file(f) == real_sha256(b"abcd").hexdigest() and calls == [1]


def test_download_from_file_url_into_cache(tmp_path, yolox):
    manifest = write_manifest(tmp_path / "m.toml", name="yolox-nano.coco80-v1", file="yolox_nano.onnx",
                              sha256=YOLOX_SHA, url=yolox.as_uri())
    seen = []
    path = weights.fetch("yolox-nano", progress=lambda done, total: seen.append((done, total)),
                         manifest=manifest)
    assert path == weights.cache_dir() / "yolox_nano.onnx"
    assert path.read_bytes() == yolox.read_bytes()
    assert seen[-1] == (yolox.stat().st_size, yolox.stat().st_size)
    assert os.listdir(weights.cache_dir()) == ["yolox_nano.onnx"]  # no temporary file left
    # Found in the cache next time, no download.
    assert weights.resolve("yolox-nano", allow_download=False, manifest=manifest) == path


def test_download_with_wrong_hash_leaves_nothing(tmp_path):
    source = tmp_path / "served.bin"
    source.write_bytes(b"not the toy weights")
    manifest = write_manifest(tmp_path / "m.toml", url=source.as_uri())
    with pytest.raises(PoseCliError, match="downloaded toy.bin does not match toy.test-v1"):
        weights.fetch("toy", manifest=manifest)
    assert os.listdir(weights.cache_dir()) == []


def test_interrupted_download_leaves_nothing(tmp_path, monkeypatch):
    manifest = write_manifest(tmp_path / "m.toml", url="https://example.invalid/toy.bin")

    class Broken(io.BytesIO):
        headers = {"Content-Length": "1000"}

        def read(self, n=-1):
            if self.tell() >= 4:
                raise ConnectionResetError("connection reset")
            return super().read(4)

    monkeypatch.setattr(weights.urllib.request, "urlopen", lambda url, timeout: Broken(b"toy weights"))
    with pytest.raises(PoseCliError, match="could not be downloaded \\(connection reset\\)"):
        weights.resolve("toy", manifest=manifest)
    assert os.listdir(weights.cache_dir()) == []


def test_monkeypatched_opener_success(tmp_path, monkeypatch):
    manifest = write_manifest(tmp_path / "m.toml", url="https://example.invalid/toy.bin")

    class Response(io.BytesIO):
        headers: dict = {}

    monkeypatch.setattr(weights.urllib.request, "urlopen", lambda url, timeout: Response(b"toy weights"))
    seen = []
    path = weights.resolve("toy", progress=lambda done, total: seen.append(total), manifest=manifest)
    assert path.read_bytes() == b"toy weights"
    assert seen == [None]  # no Content-Length and no size in the manifest


def test_offline_and_missing_says_how_to_fix(tmp_path, yolox):
    manifest = write_manifest(tmp_path / "m.toml", name="yolox-nano.coco80-v1", file="yolox_nano.onnx",
                              sha256=YOLOX_SHA, url="https://github.com/x/yolox_nano.onnx")
    with pytest.raises(PoseCliError) as info:
        weights.resolve("yolox-nano", manifest=manifest)
    message = str(info.value)
    assert message.startswith("yolox_nano.onnx (yolox-nano.coco80-v1) not found and could not be downloaded")
    assert "network disabled in tests" in message
    assert "https://github.com/x/yolox_nano.onnx" in message and str(weights.cache_dir()) in message
    assert "POSECLI_HOME" in message and "--detector-weights" in message
    with pytest.raises(PoseCliError, match="downloading not allowed"):
        weights.resolve("yolox-nano", allow_download=False, manifest=manifest)
    assert not weights.cache_dir().exists() or os.listdir(weights.cache_dir()) == []


def test_pose_entry_needs_its_fields(tmp_path):
    bad = write_manifest(tmp_path / "bad.toml", kind="pose")
    with pytest.raises(PoseCliError, match="pose entries need heatmap_size"):
        weights.list_entries(bad)
    good = write_manifest(tmp_path / "good.toml", kind="pose", heatmap_size=[64, 48],
                          mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225], keypoints="coco17",
                          window=3, steps=2, metrics=Raw("{ ap = 0.5 }"))
    (entry,) = weights.list_entries(good)
    assert entry.heatmap_size == (64, 48) and entry.window == 3 and entry.metrics == {"ap": 0.5}


@pytest.mark.parametrize("field, value, message", [
    ("sha256", "abc", "sha256 must be 64"),
    ("name", "no-version", "arch.tag-vN"),
    ("kind", "segmenter", "kind must be one of"),
    ("file", "../escape.bin", "bare file name"),
    ("input_size", [0, 32], "input_size"),
])
def test_manifest_validation(tmp_path, field, value, message):
    with pytest.raises(PoseCliError, match=message):
        weights.list_entries(write_manifest(tmp_path / "m.toml", **{field: value}))


def test_manifest_not_toml(tmp_path):
    bad = tmp_path / "m.toml"
    bad.write_text("[[weights]\nname=")
    with pytest.raises(PoseCliError, match="not valid TOML"):
        weights.list_entries(bad)


def test_copy_in_repo_weights_folder_is_found(tmp_path, yolox):
    weights.PACKAGE_WEIGHTS_DIR.mkdir()
    shutil.copy(yolox, weights.PACKAGE_WEIGHTS_DIR / "yolox_nano.onnx")
    assert weights.resolve("yolox-nano").parent == weights.PACKAGE_WEIGHTS_DIR
