"""What the benchmark scripts share: the commit and machine line of a table, medians, timing,
the data folder, and the peak memory of a child process."""

from __future__ import annotations

import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# this checkout's package, not a copy an environment has installed: a table's commit is what ran
sys.path.insert(0, str(ROOT))
# $NS_PLUGINS_DATA: a folder with gcide.txt.gz and the evaluation sets
DATA = Path(os.environ["NS_PLUGINS_DATA"]) if os.environ.get("NS_PLUGINS_DATA") else None


def commit() -> str:
    """The checkout's short commit, with '+' when it has uncommitted changes."""
    try:
        head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True).stdout.strip()  # fmt: skip
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "-uno"],
                               capture_output=True, text=True).stdout.strip()  # fmt: skip
    except OSError:
        return "unknown"
    return (head or "unknown") + ("+" if dirty else "")


def machine_line(**settings) -> str:
    """One line for the top of a table: date, commit, processor, CPUs, load, settings."""
    extra = ", ".join(f"{k} {v}" for k, v in settings.items())
    return (
        f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC | commit {commit()} | "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs | "
        f"load {os.getloadavg()[0]:.2f}" + (f" | {extra}" if extra else "")
    )


def median_time(fn, repeat: int, warmup: int = 1) -> float:
    """Median seconds of ``fn()`` over ``repeat`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def spread(values) -> str:
    """'median (min-max)' of a list of figures."""
    return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"


def peak_rss_mib() -> float:
    """Peak resident memory of this process and its waited-for children, MiB (Linux: KiB)."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, kids) / 1024
