"""Throughput of one batch three ways: one plain process, ``--ray --workers W``, W ``--shard`` processes.

Every way starts from a fresh process (model loading and Ray start-up are counted: that is what a
batch pays), writes into its own empty folder, and the ways take turns for ``--rounds`` rounds, so
that a machine that gets busier or quieter during the run shifts them alike. Reported: wall seconds
per round, input frames per second, and each way's speed as a ratio to the plain run of the same
round::

    python tools/batch_throughput.py VIDEOS_DIR [--workers 2] [--rounds 2] [--out runs/throughput]

The frame count is read from the plain run's JSON outputs.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

POSECLI = [sys.executable, "-m", "posecli.cli", "run"]


def plain(inputs: Path, out: Path, workers: int) -> list[list[str]]:
    return [[*POSECLI, str(inputs), "--out", str(out)]]


def on_ray(inputs: Path, out: Path, workers: int) -> list[list[str]]:
    return [[*POSECLI, str(inputs), "--out", str(out), "--ray", "--workers", str(workers)]]


def shards(inputs: Path, out: Path, workers: int) -> list[list[str]]:
    return [[*POSECLI, str(inputs), "--out", str(out), "--shard", f"{i}/{workers}"] for i in range(1, workers + 1)]


WAYS = {"plain": plain, "ray": on_ray, "shards": shards}


def timed(commands: list[list[str]]) -> float:
    """Wall seconds until every command (started together) has ended; raises if one fails."""
    start = time.perf_counter()
    processes = [subprocess.Popen(c, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for c in commands]
    for process, command in zip(processes, commands):
        _, err = process.communicate()
        if process.returncode:
            raise SystemExit(f"{' '.join(command)} failed ({process.returncode}):\n{err[-2000:]}")
    return time.perf_counter() - start


def frames_in(folder: Path) -> int:
    return sum(len(json.loads(p.read_text())["frames"]) for p in folder.glob("*.json"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("inputs", type=Path)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("runs/throughput"))
    args = parser.parse_args()
    seconds: dict[str, list[float]] = {way: [] for way in WAYS}
    frames = None
    for round_ in range(args.rounds):
        for way, commands in WAYS.items():
            out = args.out / f"{way}-{round_}"
            shutil.rmtree(out, ignore_errors=True)
            seconds[way].append(timed(commands(args.inputs, out, args.workers)))
            if frames is None and way == "plain":
                frames = frames_in(out)
            print(f"round {round_ + 1} {way}: {seconds[way][-1]:.1f} s", file=sys.stderr)
    print(f"{frames} frames, {args.workers} workers / shards, {args.rounds} rounds")
    print(f"{'way':8} {'seconds':>16} {'frames/s':>16} {'ratio to plain':>16}")
    for way, values in seconds.items():
        ratios = [plain_s / s for plain_s, s in zip(seconds["plain"], values)]
        print(f"{way:8} {' / '.join(f'{s:.1f}' for s in values):>16} "
              f"{' / '.join(f'{frames / s:.1f}' for s in values):>16} {' / '.join(f'{r:.2f}' for r in ratios):>16}")


if __name__ == "__main__":
    main()
