"""The store's single writer: begin_episode / add_frame / save_episode / discard_episode.

Frames are validated as they arrive (a bad frame is refused, the episode goes on) and flushed
to `.staging/<episode>` every `flush_every` frames, so a crash loses at most that many frames
and leaves the flushed ones on disk for `coirl episodes verify` to report. `save_episode`
writes the final attributes and renames the group into `episodes/`: the commit point.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import time
from dataclasses import replace
from pathlib import Path
from typing import IO, Any

import numpy as np
import zarr
from zarr.codecs import BloscCodec

from coirl_ros.constants import EPISODE_SOURCES
from coirl_ros.data.episode_spec import EpisodeSpec
from coirl_ros.data.episode_store import (
    EPISODES_DIR,
    LOCK_FILE,
    STAGING_DIR,
    EpisodeMeta,
    EpisodeStore,
    StoreError,
    episode_name,
    fsync_dir,
)

# lz4 without shuffling: ~3 GB/s per core on uint8 images, so compression is never the
# bottleneck of a 30 Hz recording; low-dim arrays compress better with zstd and are tiny anyway.
IMAGE_CODEC = BloscCodec(cname="lz4", clevel=5, shuffle="noshuffle")
LOWDIM_CODEC = BloscCodec(cname="zstd", clevel=3, shuffle="shuffle")
LOWDIM_CHUNK_FRAMES = 1024


def live_writer_pid(root: Path) -> int | None:
    """PID of the process holding the store's writer lock, or None if no writer is alive."""
    lock_path = Path(root) / LOCK_FILE
    if not lock_path.exists():
        return None
    with open(lock_path, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            try:
                return int(json.loads(fh.read())["pid"])
            except (ValueError, KeyError, TypeError):
                return -1  # alive, but mid-way through writing its pid
        fcntl.flock(fh, fcntl.LOCK_UN)
        return None


class EpisodeWriter:
    """Appends episodes to an `EpisodeStore`; one per store at a time (an advisory file lock)."""

    def __init__(self, store: EpisodeStore, flush_every: int = 30, robot_config_hash: str = "") -> None:
        if flush_every <= 0:
            raise ValueError(f"flush_every must be > 0, got {flush_every}")
        self.store = store
        self.spec: EpisodeSpec = store.spec
        self.flush_every = flush_every
        self.robot_config_hash = robot_config_hash
        self._lock_fh: IO[str] | None = self._acquire_lock()
        self._group: zarr.Group | None = None
        self._meta: EpisodeMeta | None = None
        self._buffer: list[dict[str, np.ndarray]] = []
        self._num_frames = 0

    # ---- lock ---------------------------------------------------------------------------------
    def _acquire_lock(self) -> IO[str]:
        fh = open(self.store.root / LOCK_FILE, "a+")  # noqa: SIM115 -- held for the writer's lifetime
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "unknown"
            fh.close()
            raise StoreError(f"{self.store.root}: another writer holds the store ({holder})") from None
        fh.seek(0)
        fh.truncate()
        fh.write(json.dumps({"pid": os.getpid(), "since": time.time()}))
        fh.flush()
        return fh

    def close(self) -> None:
        """Discard any unsaved episode and release the lock."""
        if self._group is not None:
            self.discard_episode()
        if self._lock_fh is not None:
            fcntl.flock(self._lock_fh, fcntl.LOCK_UN)
            self._lock_fh.close()
            self._lock_fh = None

    def __enter__(self) -> EpisodeWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- episodes -----------------------------------------------------------------------------
    @property
    def recording(self) -> bool:
        return self._group is not None

    @property
    def num_frames(self) -> int:
        """Frames accepted so far in the current episode (flushed or buffered)."""
        return self._num_frames

    def begin_episode(
        self,
        task: str,
        source: str,
        policy_version: int | None = None,
        has_policy_actions: bool | None = None,
    ) -> int:
        """Start a new episode in staging and return the index it will have once saved."""
        if self._lock_fh is None:
            raise StoreError("writer is closed")
        if self._group is not None:
            raise StoreError("an episode is already being recorded; save or discard it first")
        if source not in EPISODE_SOURCES:
            raise ValueError(f"source must be one of {EPISODE_SOURCES}, got {source!r}")
        if not task:
            raise ValueError("task must be a non-empty string")
        root_group = zarr.open_group(self.store.root, mode="r+")
        index = int(root_group.attrs.get("next_index", 0))
        index = max([index, *(i + 1 for i in self.store.episode_indices())])
        root_group.attrs["next_index"] = index + 1  # indices are never reused, even after delete

        path = self.store.root / STAGING_DIR / episode_name(index)
        if path.exists():
            shutil.rmtree(path)
        group = zarr.open_group(path, mode="w")
        for key, spec in self.spec.arrays().items():
            image = len(spec.shape) == 3
            group.create_array(
                key,
                shape=(0, *spec.shape),
                chunks=(1, *spec.shape) if image else (LOWDIM_CHUNK_FRAMES, *spec.shape),
                dtype=spec.np_dtype,
                compressors=[IMAGE_CODEC if image else LOWDIM_CODEC],
                fill_value=0,
            )
        self._meta = EpisodeMeta(
            index=index,
            task=task,
            source=source,
            num_frames=0,
            fps=self.spec.fps,
            policy_version=policy_version,
            robot_config_hash=self.robot_config_hash,
            has_policy_actions=source == "policy" if has_policy_actions is None else has_policy_actions,
            created_at=time.time(),
        )
        group.attrs.update({**self._meta.to_attrs(), "frames_flushed": 0, "writer_pid": os.getpid()})
        self._group = group
        self._buffer = []
        self._num_frames = 0
        return index

    def add_frame(self, frame: dict[str, Any]) -> None:
        """Validate and append one frame; a `FrameError` leaves the episode as it was."""
        if self._group is None:
            raise StoreError("no episode is being recorded; call begin_episode first")
        self._buffer.append(self.spec.validate_frame(frame, self._num_frames, self.spec.fps))
        self._num_frames += 1
        if len(self._buffer) >= self.flush_every:
            self._flush()

    def _flush(self) -> None:
        if not self._buffer or self._group is None:
            return
        for key in self.spec.arrays():
            self._group[key].append(np.stack([f[key] for f in self._buffer]))
        flushed = int(self._group.attrs.get("frames_flushed", 0)) + len(self._buffer)
        self._group.attrs["frames_flushed"] = flushed
        self._buffer = []

    def save_episode(self, success: bool | None = None) -> EpisodeMeta:
        """Flush, write the final attributes, and commit the episode atomically."""
        if self._group is None or self._meta is None:
            raise StoreError("no episode is being recorded")
        if self._num_frames == 0:
            raise StoreError("cannot save an empty episode; discard it instead")
        self._flush()
        meta = replace(self._meta, num_frames=self._num_frames, success=success)
        self._group.attrs.put(meta.to_attrs())  # replaces the staging-only keys
        staging = self.store.root / STAGING_DIR / episode_name(meta.index)
        final = self.store.root / EPISODES_DIR / episode_name(meta.index)
        os.rename(staging, final)  # the commit point: atomic on POSIX within one filesystem
        fsync_dir(final.parent)
        self._group, self._meta, self._buffer, self._num_frames = None, None, [], 0
        return meta

    def discard_episode(self) -> None:
        """Drop the episode being recorded (e.g. an operator-aborted demo)."""
        if self._meta is not None:
            shutil.rmtree(self.store.root / STAGING_DIR / episode_name(self._meta.index), ignore_errors=True)
        self._group, self._meta, self._buffer, self._num_frames = None, None, [], 0
