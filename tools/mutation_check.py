"""Mutation check of the core pure functions: do the tests notice a small deliberate bug?

Each mutant is one small source edit (a flipped sign, an index off by one, a border check moved,
a factor dropped) in ``crop``, ``decode``, ``track``, ``models/diffusion``, the temporal prior,
the photos' quarter-turn views (model and detector), MoveNet's centre band or the OpenVINO graph
cache. For each, the package and the tests
are copied to a temporary folder, the edit is applied to the copy only, and the test files that
cover that module run there (``pytest -x``). A mutant is *caught* when the tests fail, *survives* when they pass. The
checkout itself is never edited, so an interrupted run (Ctrl-C) leaves nothing behind. The
``guard-*`` mutants break the pre-/post-processing around the network and run only
``tests/test_model_guard.py`` (the shipped model on labelled data from ``../shared``), to show
that the guard alone notices them.

Not part of the default test run (it runs the covering tests once per mutant, ~2–3 minutes on
two idle cores)::

    python tools/mutation_check.py            # all mutants; exit code 1 if any survives
    python tools/mutation_check.py --list     # names only
    python tools/mutation_check.py dark-hxy-sign track-oks-sigma-squared

A mutant whose original text no longer appears exactly once in its file is reported as stale
(the code changed under it) and makes the run fail, so the list is kept in step with the code.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

CROP_TESTS = ("tests/test_crop.py", "tests/test_decode.py")
DARK_TESTS = ("tests/test_decode.py",)
TRACK_TESTS = ("tests/test_track.py",)
ORIENTATION_TESTS = ("tests/test_orientation.py",)
DETECT_TESTS = ("tests/test_detect.py",)
DDIM_TESTS = ("tests/test_diffusion.py",)
MODEL_TESTS = ("tests/test_diffpose_movenet.py",)
GUARD_TESTS = ("tests/test_model_guard.py",)  # the shipped model on labelled data, alone


@dataclass(frozen=True)
class Mutant:
    name: str
    path: str  # relative to the repository root
    original: str  # must occur exactly once in the file
    mutated: str
    tests: tuple[str, ...]


MUTANTS = [
    # crop: frame ↔ crop ↔ heatmap geometry
    Mutant("crop-centre-half-pixel", "posecli/crop.py", "(out_w - 1) / 2.0 - sx * cx",
           "out_w / 2.0 - sx * cx", CROP_TESTS),
    Mutant("crop-aspect-comparison", "posecli/crop.py", "if w > h * aspect:", "if w < h * aspect:",
           CROP_TESTS),
    Mutant("crop-no-enlarge", "posecli/crop.py", "w, h = max(x2 - x1, 1.0) * enlarge, max(y2 - y1, 1.0) * enlarge",
           "w, h = max(x2 - x1, 1.0), max(y2 - y1, 1.0) * enlarge", CROP_TESTS),
    Mutant("crop-heatmap-centre", "posecli/crop.py", "* stride + (stride - 1) / 2.0",
           "* stride + stride / 2.0", CROP_TESTS),
    Mutant("crop-apply-affine-transposed", "posecli/crop.py", "pts @ matrix[:, :2].T + matrix[:, 2]",
           "pts @ matrix[:, :2] + matrix[:, 2]", CROP_TESTS),
    # DARK decode
    Mutant("dark-hxy-sign", "posecli/decode.py", "hxy = 0.25 * (", "hxy = -0.25 * (", DARK_TESTS),
    Mutant("dark-right-border", "posecli/decode.py", "(px <= w - 2)", "(px <= w - 1)", DARK_TESTS),
    Mutant("dark-bottom-border", "posecli/decode.py", "(py <= h - 2)", "(py <= h - 1)", DARK_TESTS),
    Mutant("dark-left-border", "posecli/decode.py", "(px >= 1)", "(px >= 0)", DARK_TESTS),
    Mutant("dark-top-border", "posecli/decode.py", "(py >= 1)", "(py >= 0)", DARK_TESTS),
    Mutant("dark-offset-x-cross-sign", "posecli/decode.py", "ox = -(hyy * gx - hxy * gy)",
           "ox = -(hyy * gx + hxy * gy)", DARK_TESTS),
    Mutant("dark-offset-y-cross-sign", "posecli/decode.py", "oy = -(-hxy * gx + hxx * gy)",
           "oy = -(hxy * gx + hxx * gy)", DARK_TESTS),
    Mutant("dark-no-step-limit", "posecli/decode.py", "ok &= (np.abs(ox) <= 1.0) & (np.abs(oy) <= 1.0)",
           "ok &= (np.abs(ox) <= 9.0) & (np.abs(oy) <= 9.0)", DARK_TESTS),
    Mutant("dark-no-definiteness-check", "posecli/decode.py", "ok = inner & (hxx < 0) & (det > 1e-12)",
           "ok = inner & (hxx < 0)", DARK_TESTS),
    Mutant("dark-gradient-factor", "posecli/decode.py", "gx = 0.5 * (at(1, 0) - at(-1, 0))",
           "gx = 1.0 * (at(1, 0) - at(-1, 0))", DARK_TESTS),
    Mutant("dark-no-zero-padding", "posecli/decode.py", "patch = np.where(inside, patch.astype(np.float64), 0.0)",
           "patch = patch.astype(np.float64)", DARK_TESTS),
    Mutant("dark-argmax-row-column-swapped", "posecli/decode.py", "py, px = np.divmod(idx, w)",
           "px, py = np.divmod(idx, w)", DARK_TESTS),
    # tracker
    Mutant("track-joint-velocity-not-per-frame", "posecli/track.py", "(xy - track.keypoints) / dt",
           "(xy - track.keypoints)", TRACK_TESTS),
    Mutant("track-lost-not-at-last-seen", "posecli/track.py", "_LOST_MOTION = (0.0, 1.0)",
           "_LOST_MOTION = (1.0,)", TRACK_TESTS),
    Mutant("track-lost-not-at-prediction", "posecli/track.py", "_LOST_MOTION = (0.0, 1.0)",
           "_LOST_MOTION = (0.0,)", TRACK_TESTS),
    Mutant("track-oks-sigma-squared", "posecli/track.py", "var = (2.0 * np.asarray(sigmas, np.float64)) ** 2",
           "var = 2.0 * np.asarray(sigmas, np.float64)", TRACK_TESTS),
    Mutant("track-oks-sum-of-areas", "posecli/track.py", "area = 0.5 * (area_a[:, None] + area_b[None, :])",
           "area = area_a[:, None] + area_b[None, :]", TRACK_TESTS),
    Mutant("track-oks-both-confident", "posecli/track.py",
           "(scores_a[:, None] >= keypoint_threshold) & (scores_b[None, :] >= keypoint_threshold)",
           "(scores_a[:, None] >= keypoint_threshold) | (scores_b[None, :] >= keypoint_threshold)", TRACK_TESTS),
    Mutant("track-iou-union", "posecli/track.py", "union = area_a[:, None] + area_b[None, :] - inter",
           "union = area_a[:, None] + area_b[None, :]", TRACK_TESTS),
    Mutant("track-limb-motion-unbounded", "posecli/track.py", "* min(dt, 1) * motion", "* dt * motion",
           TRACK_TESTS),
    Mutant("track-velocity-slope-uncentred", "posecli/track.py", "frames -= frames.mean()\n", "\n", TRACK_TESTS),
    Mutant("track-max-age-off-by-one", "posecli/track.py", "frame - t.last_frame <= self.max_age + 1",
           "frame - t.last_frame <= self.max_age", TRACK_TESTS),
    Mutant("track-gates-both", "posecli/track.py",
           "admissible = (best_oks >= self.oks_threshold) | (best_iou >= self.iou_threshold)",
           "admissible = (best_oks >= self.oks_threshold) & (best_iou >= self.iou_threshold)", TRACK_TESTS),
    Mutant("track-worse-candidate", "posecli/track.py", "better = sim > best_sim", "better = sim < best_sim",
           TRACK_TESTS),
    Mutant("track-lost-served-first", "posecli/track.py", "enumerate((recent, lost))", "enumerate((lost, recent))",
           TRACK_TESTS),
    # DDIM sampler
    Mutant("ddim-direction-coefficient", "posecli/models/diffusion.py",
           "math.sqrt(ab_prev) * x0 + math.sqrt(1.0 - ab_prev) * eps", "math.sqrt(ab_prev) * x0 + math.sqrt(1.0 - ab_t) * eps",
           DDIM_TESTS),
    Mutant("ddim-x0-coefficient", "posecli/models/diffusion.py",
           "math.sqrt(ab_prev) * x0 + math.sqrt(1.0 - ab_prev) * eps", "ab_prev * x0 + math.sqrt(1.0 - ab_prev) * eps",
           DDIM_TESTS),
    Mutant("ddim-no-clamp", "posecli/models/diffusion.py",
           "x0 = x0_pred.clamp(-self.signal_scale, self.signal_scale)", "x0 = x0_pred", DDIM_TESTS),
    Mutant("ddim-eps-sqrt", "posecli/models/diffusion.py", "eps = (x_t - math.sqrt(ab_t) * x0)",
           "eps = (x_t - ab_t * x0)", DDIM_TESTS),
    Mutant("ddim-final-step-condition", "posecli/models/diffusion.py",
           "        if t_prev < 0:\n            return x0_pred\n", "        if t_prev > 0:\n            return x0_pred\n",
           DDIM_TESTS),
    Mutant("ddim-noise-not-broadcast", "posecli/models/diffusion.py", "one = torch.randn((1, *shape[1:]),",
           "one = torch.randn(shape,", DDIM_TESTS),
    Mutant("q-sample-alpha-not-cumulative", "posecli/models/diffusion.py",
           "self.alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)", "self.alphas_cumprod = 1.0 - betas",
           DDIM_TESTS),
    Mutant("ddim-timesteps-not-reversed", "posecli/models/diffusion.py",
           "round().long().flip(0)", "round().long()", DDIM_TESTS),
    # models/diffpose_movenet: the temporal prior; models/openvino_trunk: the converted graph's cache
    Mutant("temporal-prior-one-sided", "posecli/models/diffpose_movenet.py",
           "weights = weights * (near & near.flip(1))", "weights = weights * near", MODEL_TESTS),
    Mutant("temporal-prior-uniform", "posecli/models/diffpose_movenet.py",
           "weights = binomial_weights(xy.shape[1]).to(xy)[None, :, None]",
           "weights = torch.ones(xy.shape[1]).to(xy)[None, :, None]", MODEL_TESTS),
    Mutant("temporal-prior-no-gate", "posecli/models/diffpose_movenet.py",
           "near = (xy - centre[:, None]).norm(dim=-1) <= agree_px", "near = (xy - centre[:, None]).norm(dim=-1) >= 0",
           MODEL_TESTS),
    Mutant("jump-decode-kept", "posecli/models/diffpose_movenet.py", "near[:, key] = ~jump", "near[:, key] = True",
           MODEL_TESTS),
    Mutant("jump-if-any-frame-disagrees", "posecli/models/diffpose_movenet.py", "(others > agree_px).all(dim=1)",
           "(others > agree_px).any(dim=1)", MODEL_TESTS),
    Mutant("jump-without-agreeing-neighbours", "posecli/models/diffpose_movenet.py",
           "return (others > agree_px).all(dim=1) & neighbours_agree", "return (others > agree_px).all(dim=1)",
           MODEL_TESTS),
    Mutant("jump-centre-kept", "posecli/models/diffpose_movenet.py",
           "(xy[:, key - 1] + xy[:, key + 1]) / 2, centre)", "centre, centre)", MODEL_TESTS),
    Mutant("prior-centre-anywhere", "posecli/models/diffpose_movenet.py", "rgb, self.mirror_prior, CENTRE_BAND)",
           "rgb, self.mirror_prior, None)", MODEL_TESTS),
    Mutant("centre-band-width-for-height", "posecli/models/movenet.py", "& ((ys - h / 2).abs() <= band * h)",
           "& ((ys - h / 2).abs() <= band * w)", ("tests/test_movenet.py",)),
    Mutant("openvino-cache-ignores-weights", "posecli/models/openvino_trunk.py",
           "digest.update(value.numpy().tobytes())", "digest.update(b\"\")", MODEL_TESTS),
    Mutant("orientation-turned-back-same-way", "posecli/models/orientation.py",
           "np.rot90(view, -k, axes=(2, 3))", "np.rot90(view, k, axes=(2, 3))", ORIENTATION_TESTS),
    Mutant("orientation-upright-kept-anyway", "posecli/models/orientation.py",
           "np.where(~upright[0] & (", "np.where((", ORIENTATION_TESTS),
    Mutant("orientation-up-angle-turned-wrong-way", "posecli/models/orientation.py",
           "clockwise_from_up - turns", "clockwise_from_up + turns", ORIENTATION_TESTS),
    Mutant("turned-boxes-rows-for-columns", "posecli/detect.py", "xs, ys = rows - ys, xs", "xs, ys = cols - ys, xs",
           DETECT_TESTS),
    Mutant("turned-boxes-size-not-swapped", "posecli/detect.py", "rows, cols = cols, rows", "rows, cols = rows, cols",
           DETECT_TESTS),
    Mutant("turned-scores-not-scaled", "posecli/detect.py", "scores.append(seen.scores * self.score_scale)",
           "scores.append(seen.scores)", DETECT_TESTS),
    Mutant("turned-overlap-not-checked", "posecli/detect.py", "<= self.max_overlap", "<= 1.0", DETECT_TESTS),
    Mutant("turned-views-one-only", "posecli/detect.py", "for turns in (1, 2, 3):", "for turns in (2,):",
           DETECT_TESTS),
    # The model guard alone must notice pre-/post-processing bugs around a correct network.
    Mutant("guard-channels-not-swapped", "posecli/models/preprocess.py", "np.ascontiguousarray(crops[..., ::-1])",
           "np.ascontiguousarray(crops)", GUARD_TESTS),
    Mutant("guard-no-subpixel-step", "posecli/decode.py", "ox, oy = np.where(ok, ox, 0.0), np.where(ok, oy, 0.0)",
           "ox, oy = 0.0 * ox, 0.0 * oy", GUARD_TESTS),
]


def _copy_checkout(target: Path) -> Path:
    """Copy the package, tests and project file to ``target/repo``; link data and weights (read-only use)."""
    repo = target / "repo"
    repo.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(REPO / "posecli", repo / "posecli", ignore=ignore)
    shutil.copytree(REPO / "tests", repo / "tests", ignore=ignore)
    shutil.copy2(REPO / "pyproject.toml", repo / "pyproject.toml")
    if (REPO / "weights").is_dir():
        (repo / "weights").symlink_to(REPO / "weights", target_is_directory=True)
    shared = REPO.parent / "shared"
    if shared.is_dir():  # tests find ../shared relative to the repository
        (target / "shared").symlink_to(shared, target_is_directory=True)
    return repo


def _run_tests(repo: Path, tests: tuple[str, ...], timeout_s: float) -> tuple[bool, str]:
    """(passed, last output line) of ``pytest -x`` on ``tests`` with the copied package first on the path."""
    env = dict(os.environ, PYTHONPATH=str(repo), PYTHONDONTWRITEBYTECODE="1")
    env.pop("CI", None)  # a missing optional input should not count as a caught mutant
    command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests]
    try:
        done = subprocess.run(command, cwd=repo, env=env, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return False, f"timed out after {timeout_s:.0f} s"
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    return done.returncode == 0, lines[-1] if lines else done.stderr.strip()[-200:]


def _check_import_path(repo: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(repo), PYTHONDONTWRITEBYTECODE="1")
    where = subprocess.run([sys.executable, "-c", "import posecli; print(posecli.__file__)"], cwd=repo,
                           env=env, capture_output=True, text=True, check=True).stdout.strip()
    if not Path(where).resolve().is_relative_to(repo.resolve()):
        raise SystemExit(f"error: the copy is not imported first (posecli comes from {where})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="mutants to run (default: all)")
    parser.add_argument("--list", action="store_true", help="print the mutant names and exit")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per test run")
    args = parser.parse_args(argv)
    if args.list:
        for m in MUTANTS:
            print(f"{m.name:40s} {m.path}")
        return 0
    by_name = {m.name: m for m in MUTANTS}
    unknown = [n for n in args.names if n not in by_name]
    if unknown:
        print(f"error: unknown mutant(s) {', '.join(unknown)} (see --list)", file=sys.stderr)
        return 1
    chosen = [by_name[n] for n in args.names] if args.names else MUTANTS

    with tempfile.TemporaryDirectory(prefix="posecli-mutation-") as tmp:
        repo = _copy_checkout(Path(tmp))
        _check_import_path(repo)
        suites = sorted({t for m in chosen for t in m.tests})
        passed, summary = _run_tests(repo, tuple(suites), args.timeout)
        if not passed:
            print(f"error: the tests fail without any mutant ({summary})", file=sys.stderr)
            return 1
        survivors, stale = [], []
        for m in chosen:
            source = repo / m.path
            original = source.read_text()
            if original.count(m.original) != 1:
                stale.append(m.name)
                print(f"STALE     {m.name}: its original text is not in {m.path} exactly once")
                continue
            start = time.monotonic()
            try:
                source.write_text(original.replace(m.original, m.mutated))
                passed, summary = _run_tests(repo, m.tests, args.timeout)
            finally:
                source.write_text(original)
            verdict = "SURVIVED" if passed else "caught"
            print(f"{verdict:9s} {m.name:40s} {time.monotonic() - start:5.1f} s  {summary}", flush=True)
            if passed:
                survivors.append(m.name)
    checked = len(chosen) - len(stale)
    print(f"\nmutation score: {checked - len(survivors)}/{checked} caught"
          + (f"; survivors: {', '.join(survivors)}" if survivors else "")
          + (f"; stale: {', '.join(stale)}" if stale else ""))
    return 1 if survivors or stale else 0


if __name__ == "__main__":
    sys.exit(main())
