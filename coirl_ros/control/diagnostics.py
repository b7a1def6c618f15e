"""Control-loop timing: tick latency, period jitter and missed ticks, over a rolling window."""

from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np


class TickStats:
    """Per-tick timing of a fixed-rate loop.

    `latency` is the wall time a tick's computation took; `interval` the time between consecutive tick
    starts on the loop's own clock (ROS time: sim time under `use_sim_time`). An interval longer than
    1.5 periods means ticks were missed: round(interval / period) - 1 of them.
    """

    def __init__(self, period_s: float, window: int = 1000) -> None:
        if not period_s > 0:
            raise ValueError(f"period_s must be > 0, got {period_s}")
        self.period_s = float(period_s)
        self.latency_s: deque[float] = deque(maxlen=window)
        self.interval_s: deque[float] = deque(maxlen=window)
        self.ticks = 0
        self.missed = 0
        self._last_start: float | None = None

    def record(self, start: float, latency_s: float) -> None:
        """One tick that started at `start` (loop clock) and computed for `latency_s` (wall)."""
        self.ticks += 1
        self.latency_s.append(latency_s)
        if self._last_start is not None:
            interval = start - self._last_start
            if interval <= 0:
                self._last_start = start  # the clock jumped back (sim reset): no interval to judge
                return
            self.interval_s.append(interval)
            if interval > 1.5 * self.period_s:
                self.missed += round(interval / self.period_s) - 1
        self._last_start = start

    def summary(self) -> dict[str, Any]:
        """Figures for the diagnostics topic (milliseconds, None before there is data)."""
        lat = np.asarray(self.latency_s) * 1e3
        dev = (np.asarray(self.interval_s) - self.period_s) * 1e3
        return {
            "ticks": self.ticks,
            "missed_ticks": self.missed,
            "period_ms": round(self.period_s * 1e3, 3),
            "tick_latency_ms": _quantiles(lat),
            # Deviation of the tick interval from the period: std and the largest absolute values.
            "jitter_ms": {
                "std": round(float(dev.std()), 3) if len(dev) else None,
                "p99_abs": round(float(np.quantile(np.abs(dev), 0.99)), 3) if len(dev) else None,
                "max_abs": round(float(np.abs(dev).max()), 3) if len(dev) else None,
            },
        }


def _quantiles(values: np.ndarray) -> dict[str, float | None]:
    if not len(values):
        return {"p50": None, "p99": None, "max": None}
    return {
        "p50": round(float(np.quantile(values, 0.5)), 3),
        "p99": round(float(np.quantile(values, 0.99)), 3),
        "max": round(float(values.max()), 3),
    }
