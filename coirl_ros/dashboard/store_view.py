"""The episode store as the dashboard shows it: episode rows, the success curve, relabelling.

A read-only reader beside the recorder (the store allows any number); relabelling writes one
episode's attributes and needs no writer lock. The store may not exist yet (the recorder creates it
at the first start): the view says so and looks again at the next refresh. Episode metadata is
cached and re-read only for episodes whose metadata file changed, so polling a store of thousands
of episodes every second costs a directory listing and one `stat` per episode.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from collections.abc import Iterable, Sequence

from coirl_ros.dashboard.models import CurvePoint, EpisodeList, EpisodeRow
from coirl_ros.data import EpisodeMeta, EpisodeStore, StoreError
from coirl_ros.data.episode_store import CorruptEpisodeError


def success_curve(metas: Iterable[EpisodeMeta], sources: Sequence[str], window: int) -> list[CurvePoint]:
    """Rolling success rate against cumulative environment steps, over episodes in index order.

    Only episodes whose source is in `sources` count (autonomous rollouts, by default); all their
    frames count as environment steps, but only labelled ones make a point and enter the rate, which
    is over the last `window` labelled episodes.
    """
    env_steps = 0
    labels: deque[bool] = deque(maxlen=window)
    points = []
    for meta in sorted(metas, key=lambda m: m.index):
        if meta.source not in sources:
            continue
        env_steps += meta.num_frames
        if meta.success is None:
            continue
        labels.append(bool(meta.success))
        points.append(
            CurvePoint(
                index=meta.index,
                env_steps=env_steps,
                success=bool(meta.success),
                success_rate=sum(labels) / len(labels),
                window=len(labels),
            )
        )
    return points


def row(meta: EpisodeMeta) -> EpisodeRow:
    return EpisodeRow(
        index=meta.index,
        task=meta.task,
        source=meta.source,
        length=meta.num_frames,
        success=meta.success,
        policy_version=meta.policy_version,
        created_at=meta.created_at,
    )


class StoreView:
    """Cached, refreshable view of one episode store (thread-safe)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        curve_sources: Sequence[str] = ("policy",),
        success_window: int = 20,
        min_refresh_s: float = 0.25,
    ) -> None:
        self.path = os.fspath(path)
        self.curve_sources = list(curve_sources)
        self.success_window = success_window
        self.min_refresh_s = min_refresh_s  # several page connections share one refresh
        self._lock = threading.Lock()
        self._store: EpisodeStore | None = None
        self._message = ""
        self._cache: dict[int, tuple[int, EpisodeMeta]] = {}  # index -> (metadata mtime_ns, meta)
        self._problems: dict[int, str] = {}
        self._key: tuple = ()
        self._revision = 0
        self._refreshed = float("-inf")
        self._list: EpisodeList | None = None

    def episodes(self) -> EpisodeList:
        """Rows and curve, re-read if the store changed since the last call (at most every min_refresh_s)."""
        with self._lock:
            if self._list is None or time.monotonic() - self._refreshed >= self.min_refresh_s:
                try:
                    self._refresh()
                except OSError as err:  # e.g. the store's disk went away: say so, keep serving the page
                    self._store, self._key = None, ()
                    self._revision += 1
                    self._list = EpisodeList(
                        store=self.path, revision=self._revision, available=False,
                        message=f"store unreadable: {err}", curve_sources=self.curve_sources,
                    )  # fmt: skip
            assert self._list is not None
            return self._list

    def relabel(self, index: int | None, success: bool | None) -> EpisodeRow:
        """Set an episode's success label (None: clear it); `index` None = the last committed episode.

        Raises LookupError when there is no such episode (or no store), StoreError when it cannot be
        written."""
        with self._lock:
            store = self._open()
            if store is None:
                raise LookupError(f"no episode store at {self.path} yet: {self._message}")
            indices = store.episode_indices()
            if index is None:
                if not indices:
                    raise LookupError(f"{self.path} has no episodes yet")
                index = indices[-1]
            elif index not in indices:
                raise LookupError(f"episode {index} is not in {self.path}")
            meta = store.relabel(index, success)
            self._refreshed = float("-inf")  # the next read shows the new label
            return row(meta)

    # ---- internals (under the lock) ------------------------------------------------------------
    def _open(self) -> EpisodeStore | None:
        if self._store is None:
            try:
                self._store = EpisodeStore.open(self.path)
                self._message = ""
            except StoreError as err:
                self._message = str(err)
        return self._store

    def _refresh(self) -> None:
        self._refreshed = time.monotonic()
        store = self._open()
        if store is None:
            if self._list is None or self._list.available or self._list.message != self._message:
                self._revision += 1
            self._list = EpisodeList(
                store=self.path, revision=self._revision, available=False, message=self._message,
                curve_sources=self.curve_sources,
            )  # fmt: skip
            return
        stamps = {}
        for index in store.episode_indices():
            try:
                stamps[index] = os.stat(store.episode_path(index) / "zarr.json").st_mtime_ns
            except OSError:
                continue  # deleted since the listing, or being renamed into place
        key = tuple(sorted(stamps.items()))
        if key == self._key and self._list is not None and self._list.available:
            return
        for index, mtime in stamps.items():
            cached = self._cache.get(index)
            if cached is not None and cached[0] == mtime:
                continue
            try:
                self._cache[index] = (mtime, store.read_meta(index))
                self._problems.pop(index, None)
            except CorruptEpisodeError as err:
                self._cache.pop(index, None)
                self._problems[index] = err.reason
            except StoreError:
                self._cache.pop(index, None)
        for gone in set(self._cache) - set(stamps):
            del self._cache[gone]
        for gone in set(self._problems) - set(stamps):
            del self._problems[gone]
        self._key = key
        self._revision += 1
        metas = [meta for _, meta in sorted(self._cache.values(), key=lambda c: c[1].index)]
        self._list = EpisodeList(
            store=self.path,
            revision=self._revision,
            available=True,
            episodes=[row(m) for m in metas],
            curve=success_curve(metas, self.curve_sources, self.success_window),
            curve_sources=self.curve_sources,
            problems=[f"episode {i}: {reason}" for i, reason in sorted(self._problems.items())],
        )
