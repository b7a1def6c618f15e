"""Stale and corrupt observations: the latest finite value of each input, and whether it may be used.

Every input the loop needs (the joint state always; object state or camera frames when the base or the
residual reads them) is kept with its capture stamp. An input that never arrived, is older than the
timeout, or arrived with NaN/inf makes the loop hold. A non-finite message never replaces the last
finite one: the hold command is built from the last *valid* joint measurement, so it never jumps.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Stamped:
    """One input's latest finite value and its capture time (seconds, the loop's clock)."""

    value: np.ndarray
    stamp: float


class ObservationWatchdog:
    """Latest value per named input plus a per-input verdict at tick time (see the module docstring)."""

    def __init__(self, timeout_s: float, required: tuple[str, ...]) -> None:
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        self.timeout_s = float(timeout_s)
        self.required = tuple(required)
        self.latest: dict[str, Stamped] = {}
        self.rejected: dict[str, int] = {}  # non-finite messages dropped, per input
        self._bad: set[str] = set()  # inputs whose most recent message was non-finite

    def set_required(self, required: tuple[str, ...]) -> None:
        """Change which inputs must be fresh (e.g. once a residual that reads object state is loaded)."""
        self.required = tuple(required)

    def update(self, name: str, value: np.ndarray, stamp: float) -> bool:
        """Record a new message; returns False (and keeps the previous value) if it is not finite.

        Only numeric arrays are checked for finiteness; images (uint8) always are.
        """
        arr = np.asarray(value)
        if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
            self.rejected[name] = self.rejected.get(name, 0) + 1
            self._bad.add(name)
            return False
        self._bad.discard(name)
        self.latest[name] = Stamped(arr, float(stamp))
        return True

    def value(self, name: str) -> np.ndarray | None:
        entry = self.latest.get(name)
        return None if entry is None else entry.value

    def stamp(self, name: str) -> float | None:
        entry = self.latest.get(name)
        return None if entry is None else entry.stamp

    def check(self, now: float) -> str | None:
        """None when every required input is usable at `now`, else why not (the hold reason)."""
        for name in self.required:
            entry = self.latest.get(name)
            if name in self._bad:
                return f"non_finite:{name}"
            if entry is None:
                return f"missing:{name}"
            age = now - entry.stamp
            if age > self.timeout_s:
                return f"stale:{name}"
        return None

    def clear(self) -> None:
        """Forget every input (e.g. after the clock jumped back: a sim reset)."""
        self.latest.clear()
        self._bad.clear()
