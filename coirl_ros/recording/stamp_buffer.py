"""A time-ordered ring buffer of stamped values, looked up by stamp."""

from __future__ import annotations

import bisect
from typing import Generic, TypeVar

T = TypeVar("T")


class StampedBuffer(Generic[T]):  # noqa: UP046 -- the explicit TypeVar reads better in docs
    """Values keyed by stamp (seconds), kept for `horizon_s` behind the newest one.

    Inserts may arrive out of order (two publishers, DDS reordering); lookups are O(log n).
    """

    def __init__(self, horizon_s: float, max_items: int = 100_000) -> None:
        self.horizon_s = horizon_s
        self.max_items = max_items
        self._stamps: list[float] = []
        self._values: list[T] = []

    def __len__(self) -> int:
        return len(self._stamps)

    @property
    def newest_stamp(self) -> float | None:
        return self._stamps[-1] if self._stamps else None

    def add(self, stamp: float, value: T) -> None:
        i = bisect.bisect_right(self._stamps, stamp)
        self._stamps.insert(i, stamp)
        self._values.insert(i, value)
        cutoff = self._stamps[-1] - self.horizon_s
        drop = max(bisect.bisect_left(self._stamps, cutoff), len(self._stamps) - self.max_items)
        if drop > 0:
            del self._stamps[:drop], self._values[:drop]

    def nearest(self, stamp: float, tolerance: float) -> tuple[float, T] | None:
        """The entry closest to `stamp` if within `tolerance`, else None."""
        i = bisect.bisect_left(self._stamps, stamp)
        best: tuple[float, T] | None = None
        for j in (i - 1, i):
            if not 0 <= j < len(self._stamps) or abs(self._stamps[j] - stamp) > tolerance:
                continue
            if best is None or abs(self._stamps[j] - stamp) < abs(best[0] - stamp):
                best = (self._stamps[j], self._values[j])
        return best

    def at_or_before(self, stamp: float) -> tuple[float, T] | None:
        """The newest entry with a stamp <= `stamp`."""
        i = bisect.bisect_right(self._stamps, stamp)
        return (self._stamps[i - 1], self._values[i - 1]) if i > 0 else None

    def clear(self) -> None:
        self._stamps.clear()
        self._values.clear()
