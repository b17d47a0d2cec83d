"""CPU threads for PyTorch that do not fight other processes for the cores.

PyTorch uses one OpenMP thread per physical core. When other processes keep those
cores busy, its threads wait for each other at every barrier: measured here (2
cores, another training process running), EfficientNet-Lite0 training fell from
51 images/s with 1 thread to 1.3 images/s with 2. So with ``threads=0`` (auto)
labelaudit samples how many cores are idle right now and uses no more threads
than that (at least 1, at most PyTorch's default).
"""

from __future__ import annotations

import os
import time

import torch


def _cpu_times() -> tuple[float, float] | None:
    """(idle, total) jiffies from /proc/stat, or None where unavailable."""
    try:
        with open("/proc/stat", encoding="ascii") as fh:
            parts = fh.readline().split()
    except OSError:
        return None
    if not parts or parts[0] != "cpu":
        return None
    values = [float(v) for v in parts[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0.0)  # idle + iowait
    return idle, sum(values)


def idle_cores(sample_s: float = 0.3) -> float | None:
    """How many cores were idle during a short sample (None if unknown)."""
    first = _cpu_times()
    if first is None:
        return None
    time.sleep(sample_s)
    second = _cpu_times()
    if second is None or second[1] <= first[1]:
        return None
    fraction = (second[0] - first[0]) / (second[1] - first[1])
    return fraction * (os.cpu_count() or 1)


def auto_threads(default: int | None = None, sample_s: float = 0.3) -> int:
    """Threads to use now: PyTorch's default, reduced to the number of idle cores."""
    default = default or torch.get_num_threads()
    free = idle_cores(sample_s)
    if free is None:
        return default
    return max(1, min(default, int(free + 0.5)))
