"""Helpers for the benchmarks: run whole processes, as a user would, and read what they wrote."""

from __future__ import annotations

import json
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines()
                   if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    gpu = f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    python, threads = platform.python_version(), torch.get_num_threads()
    return f"{cpu}, {threads} threads{gpu}; Python {python}, torch {torch.__version__}"


def run(cmd: list[str]) -> tuple[float, str]:
    """Run a process to the end; (wall seconds, stdout).  Fails loudly if the process fails."""
    start = time.perf_counter()
    result = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{result.stdout}\n{result.stderr}")
    return seconds, result.stdout


def final_accuracy(stdout: str) -> float:
    return float(re.findall(r"^Test Accuracy: ([\d.]+)%", stdout, re.M)[-1])


def train_run(recipe: str, seed: int, data_dir: str, *extra: str) -> dict:
    """`digitrec train` as a whole process: wall time, final accuracy, per-epoch metrics."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        wall, stdout = run([sys.executable, "-m", "digitrec", "train", "--recipe", recipe, "--seed", str(seed),
                            "--data-dir", data_dir, "--out", str(out), "--progress", "lines", *extra])
        rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return {"seed": seed, "wall": wall, "accuracy": final_accuracy(stdout), "epochs": rows}


def mean_std(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def time_to_target(runs: list[dict], target: float = 99.0) -> tuple[float | None, list[dict], list[dict]]:
    """Mean wall time of the runs whose final accuracy reached `target` (percent), with the runs counted and
    the runs left out.  A run that ended below the target has no time to it: it is never averaged in."""
    reached = [r for r in runs if r["accuracy"] >= target]
    missed = [r for r in runs if r["accuracy"] < target]
    return (statistics.mean(r["wall"] for r in reached) if reached else None), reached, missed
