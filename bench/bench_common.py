"""What every benchmark script shares: a description of the machine and CSV output."""

from __future__ import annotations

import csv
import os
import platform
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np


def cpu_model() -> str:
    # platform.processor() is empty on most Linux builds; /proc/cpuinfo has the real name.
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(extra: dict[str, str] | None = None) -> dict[str, str]:
    """CPU, memory and Python/numpy versions, followed by the script's own `extra` entries."""
    mem = ""
    try:
        with open("/proc/meminfo") as fh:
            kb = int(fh.readline().split()[1])
            mem = f"{kb / 2**20:.1f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    info = {
        "cpu count": str(os.cpu_count()),
        "cpu model": cpu_model(),
        "memory": mem,
        "python": platform.python_version(),
        "numpy": np.__version__,
    }
    info.update(extra or {})
    return info


def device_sync(device: str) -> Callable[[], None]:
    """What a timer calls before reading the clock: CUDA kernels run asynchronously, so without a
    synchronise a timed block on a GPU would count their launch only. A no-op on the CPU."""
    if not device.startswith("cuda"):
        return lambda: None
    import torch  # only the GPU path needs it; the other helpers here stay torch-free

    return torch.cuda.synchronize


def read_csv(path: Path) -> list[dict[str, str]]:
    """A CSV file's rows as dicts of strings (the counterpart of `write_csv`)."""
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def write_csv(rows: Sequence[dict[str, Any]], path: Path) -> None:
    """Rows (dicts with the same keys) to a CSV file, creating its folder; prints where."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"csv: {path}")
