"""Episode store on zarr v3: one zarr group per episode, made visible by an atomic rename.

Layout (`<root>` is e.g. `runs/episodes.zarr`)::

    <root>/zarr.json             root group; attrs: format version, EpisodeSpec, next episode index
    <root>/episodes/ep_000042/   one committed episode: arrays [T, ...] + attrs (EpisodeMeta)
    <root>/.staging/ep_000043/   the episode being written (flushed as it goes, never listed)
    <root>/.trash/               deleted episodes on their way out
    <root>/.writer.lock          flock held by the single writer

Why a group per episode rather than one concatenated buffer: committing is one `rename(2)`, so
readers in other processes never see half an episode; a writer killed mid-episode leaves earlier
episodes untouched and its partial data in `.staging` for `verify` to report; a corrupt chunk
damages one episode only; relabel and delete touch one episode. Sampling speed comes from the
sampler's in-memory index, not from the on-disk layout (see `transition_sampler.py`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import zarr

from coirl_ros.constants import EPISODE_SOURCES
from coirl_ros.data.episode_spec import EpisodeSpec
from coirl_ros.durable_files import fsync_dir

if TYPE_CHECKING:
    from coirl_ros.data.episode_writer import EpisodeWriter

STORE_FORMAT = "coirl-episodes"
STORE_VERSION = 1
EPISODES_DIR = "episodes"
STAGING_DIR = ".staging"
TRASH_DIR = ".trash"
LOCK_FILE = ".writer.lock"


class StoreError(RuntimeError):
    """The store cannot be opened or changed as asked."""


class CorruptEpisodeError(StoreError):
    """A committed episode whose data or metadata does not match the store's spec."""

    def __init__(self, index: int, reason: str) -> None:
        super().__init__(f"episode {index}: {reason}")
        self.index = index
        self.reason = reason


def episode_name(index: int) -> str:
    return f"ep_{index:06d}"


def parse_episode_name(name: str) -> int | None:
    if name.startswith("ep_") and name[3:].isdigit():
        return int(name[3:])
    return None


@dataclass(frozen=True)
class EpisodeMeta:
    """Attributes of one episode (stored as the episode group's zarr attributes)."""

    index: int
    task: str
    source: str
    num_frames: int
    fps: float
    success: bool | None = None
    policy_version: int | None = None
    robot_config_hash: str = ""
    has_policy_actions: bool = False  # False: action.base / action.residual are zero-filled
    created_at: float = 0.0

    @classmethod
    def from_attrs(cls, attrs: dict[str, Any], index: int) -> EpisodeMeta:
        """Build from stored attributes, raising `CorruptEpisodeError` on anything malformed."""
        try:
            meta = cls(**{k: attrs[k] for k in cls.__dataclass_fields__ if k in attrs})
        except TypeError as err:
            raise CorruptEpisodeError(index, f"attributes incomplete: {err}") from None
        checks = [
            (meta.index == index, f"attribute index={meta.index} does not match its name"),
            (isinstance(meta.task, str) and meta.task != "", "attribute 'task' must be a non-empty string"),
            (meta.source in EPISODE_SOURCES, f"attribute source={meta.source!r} not in {EPISODE_SOURCES}"),
            (isinstance(meta.num_frames, int) and meta.num_frames > 0, "attribute num_frames must be > 0"),
            (meta.success in (True, False, None), f"attribute success={meta.success!r} not bool/null"),
        ]
        for ok, reason in checks:
            if not ok:
                raise CorruptEpisodeError(index, reason)
        return meta

    def to_attrs(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Episode:
    """A committed episode read back: its metadata and arrays [T, ...] keyed as in EpisodeSpec."""

    meta: EpisodeMeta
    data: dict[str, np.ndarray]

    def __len__(self) -> int:
        return self.meta.num_frames


@dataclass
class PartialEpisode:
    """An episode left in `.staging` (being written, or abandoned by a killed writer)."""

    name: str
    frames_flushed: int
    writer_alive: bool
    attrs: dict[str, Any]


@dataclass
class VerifyReport:
    """Result of `EpisodeStore.verify()`."""

    ok: list[int] = field(default_factory=list)
    corrupt: list[tuple[int, str]] = field(default_factory=list)
    partial: list[PartialEpisode] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not self.corrupt and not any(not p.writer_alive for p in self.partial)


def fsync_tree(root: Path) -> None:
    """fsync every file and directory under `root` (an episode: a few dozen files with sharding)."""
    for dirpath, _, filenames in os.walk(root, topdown=False):
        for name in filenames:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(Path(dirpath))


class EpisodeStore:
    """A directory of episodes shared by one writer and any number of readers (other processes too)."""

    def __init__(self, root: Path, spec: EpisodeSpec) -> None:
        self.root = Path(root)
        self.spec = spec

    # ---- opening -------------------------------------------------------------------------------
    @classmethod
    def create(cls, root: str | Path, spec: EpisodeSpec, exist_ok: bool = False) -> EpisodeStore:
        """Create an empty store; with `exist_ok`, open an existing one whose spec matches."""
        root = Path(root)
        if (root / "zarr.json").exists():
            if not exist_ok:
                raise StoreError(f"{root}: a store already exists here")
            store = cls.open(root)
            if store.spec != spec:
                raise StoreError(
                    f"{root}: existing store has spec {store.spec.to_dict()}, asked for {spec.to_dict()}"
                )
            return store
        group = zarr.open_group(root, mode="w-")
        group.attrs.update(
            {"format": STORE_FORMAT, "version": STORE_VERSION, "spec": spec.to_dict(), "next_index": 0}
        )
        zarr.open_group(root / EPISODES_DIR, mode="w-")
        for sub in (STAGING_DIR, TRASH_DIR):
            # exist_ok: a reader that opens the store as soon as zarr.json exists makes them too
            # (`open`); CI once saw the dashboard's store view win that race.
            (root / sub).mkdir(exist_ok=True)
        return cls(root, spec)

    @classmethod
    def open(cls, root: str | Path) -> EpisodeStore:
        """Open an existing store (read and relabel/delete; writing goes through `writer()`)."""
        root = Path(root)
        if not (root / "zarr.json").is_file():
            raise StoreError(f"{root}: no episode store here (create one with EpisodeStore.create)")
        try:
            attrs = dict(zarr.open_group(root, mode="r").attrs)
        except Exception as err:  # zarr raises several types for unreadable metadata
            raise StoreError(f"{root}: store metadata unreadable: {err}") from None
        if attrs.get("format") != STORE_FORMAT:
            raise StoreError(f"{root}: not a coirl episode store (format={attrs.get('format')!r})")
        if attrs.get("version") != STORE_VERSION:
            raise StoreError(
                f"{root}: store version {attrs.get('version')} not supported (want {STORE_VERSION})"
            )
        try:
            spec = EpisodeSpec.from_dict(attrs["spec"])
        except (KeyError, TypeError, ValueError) as err:
            raise StoreError(f"{root}: store spec malformed: {err}") from None
        for sub in (STAGING_DIR, TRASH_DIR):
            with contextlib.suppress(OSError):  # a read-only copy of a store is still readable
                (root / sub).mkdir(exist_ok=True)
        return cls(root, spec)

    def writer(self, **kwargs: Any) -> EpisodeWriter:
        """The store's single writer (raises `StoreError` if another process holds it)."""
        from coirl_ros.data.episode_writer import EpisodeWriter

        return EpisodeWriter(self, **kwargs)

    # ---- listing and reading -------------------------------------------------------------------
    def episode_indices(self) -> list[int]:
        """Committed episode indices, ascending (cheap: one directory listing)."""
        try:
            names = os.listdir(self.root / EPISODES_DIR)
        except FileNotFoundError:
            return []
        return sorted(i for i in map(parse_episode_name, names) if i is not None)

    def episode_path(self, index: int) -> Path:
        return self.root / EPISODES_DIR / episode_name(index)

    def read_meta(self, index: int) -> EpisodeMeta:
        path = self.episode_path(index)
        if not path.is_dir():
            raise StoreError(f"episode {index} does not exist in {self.root}")
        try:
            attrs = dict(zarr.open_group(path, mode="r").attrs)
        except Exception as err:
            raise CorruptEpisodeError(index, f"metadata unreadable ({type(err).__name__}: {err})") from None
        return EpisodeMeta.from_attrs(attrs, index)

    def list_episodes(self, problems: list[tuple[int, str]] | None = None) -> list[EpisodeMeta]:
        """Metadata of every readable committed episode; unreadable ones go to `problems`."""
        metas = []
        for index in self.episode_indices():
            try:
                metas.append(self.read_meta(index))
            except CorruptEpisodeError as err:
                if problems is not None:
                    problems.append((index, err.reason))
            except StoreError:
                continue  # deleted between listing and reading
        return metas

    def read_episode(self, index: int, keys: list[str] | None = None) -> Episode:
        """Read and validate one episode (all arrays, or only `keys`)."""
        meta = self.read_meta(index)
        specs = self.spec.arrays()
        wanted = list(specs) if keys is None else keys
        try:
            group = zarr.open_group(self.episode_path(index), mode="r")
        except Exception as err:
            raise CorruptEpisodeError(index, f"group unreadable: {err}") from None
        data: dict[str, np.ndarray] = {}
        for key in wanted:
            if key not in specs:
                raise KeyError(f"{key!r} is not an episode key; expected one of {sorted(specs)}")
            spec = specs[key]
            try:
                arr = group[key]
            except KeyError:
                raise CorruptEpisodeError(index, f"array {key!r} missing") from None
            except Exception as err:
                raise CorruptEpisodeError(index, f"array {key!r} metadata unreadable: {err}") from None
            expected = (meta.num_frames, *spec.shape)
            if tuple(arr.shape) != expected or arr.dtype != spec.np_dtype:
                raise CorruptEpisodeError(
                    index, f"array {key!r} is {arr.dtype}{tuple(arr.shape)}, expected {spec.dtype}{expected}"
                )
            try:
                values = arr[...]
            except Exception as err:  # truncated or garbled chunk: codec errors of many kinds
                raise CorruptEpisodeError(
                    index, f"array {key!r} unreadable ({type(err).__name__}: {err})"
                ) from None
            if values.dtype.kind == "f" and not np.all(np.isfinite(values)):
                raise CorruptEpisodeError(index, f"array {key!r} contains NaN or inf")
            data[key] = values
        return Episode(meta, data)

    def iter_episodes(
        self, keys: list[str] | None = None, problems: list[tuple[int, str]] | None = None
    ) -> Iterator[Episode]:
        """Every readable episode; corrupt ones are skipped and recorded in `problems`."""
        for index in self.episode_indices():
            try:
                yield self.read_episode(index, keys)
            except CorruptEpisodeError as err:
                if problems is not None:
                    problems.append((index, err.reason))
            except StoreError:
                continue

    # ---- changing committed episodes -----------------------------------------------------------
    def relabel(self, index: int, success: bool | None) -> EpisodeMeta:
        """Set (or clear, with None) an episode's success label; zarr writes attrs atomically."""
        self.read_meta(index)  # exists and is sound
        group = zarr.open_group(self.episode_path(index), mode="r+")
        group.attrs["success"] = success
        return self.read_meta(index)

    def delete(self, index: int) -> None:
        """Remove an episode: readers stop seeing it at once (rename), the files go afterwards."""
        path = self.episode_path(index)
        if not path.is_dir():
            raise StoreError(f"episode {index} does not exist in {self.root}")
        trash = self.root / TRASH_DIR / f"{episode_name(index)}.{uuid.uuid4().hex[:8]}"
        os.rename(path, trash)
        fsync_dir(path.parent)
        shutil.rmtree(trash, ignore_errors=True)

    # ---- integrity -----------------------------------------------------------------------------
    def partial_episodes(self) -> list[PartialEpisode]:
        """Episodes in `.staging`: in progress (writer alive) or abandoned by a killed writer."""
        from coirl_ros.data.episode_writer import live_writer

        live = live_writer(self.root)
        out = []
        staging = self.root / STAGING_DIR
        for name in sorted(os.listdir(staging)) if staging.is_dir() else []:
            attrs: dict[str, Any] = {}
            frames = 0
            try:
                group = zarr.open_group(staging / name, mode="r")
                attrs = dict(group.attrs)
                frames = int(attrs.get("frames_flushed", 0))
            except Exception:
                pass  # killed before its metadata was written: still worth reporting
            in_progress = live is not None and attrs.get("writer_token") == live.get("token")
            out.append(PartialEpisode(name, frames, in_progress, attrs))
        return out

    def verify(self) -> VerifyReport:
        """Read every episode in full; report corrupt ones and partial (uncommitted) ones."""
        report = VerifyReport()
        for index in self.episode_indices():
            try:
                self.read_episode(index)
                report.ok.append(index)
            except CorruptEpisodeError as err:
                report.corrupt.append((index, err.reason))
            except StoreError:
                continue
        report.partial = self.partial_episodes()
        return report

    def remove_abandoned(self) -> list[str]:
        """Delete partial episodes whose writer is gone; returns their names."""
        removed = []
        for p in self.partial_episodes():
            if not p.writer_alive:
                shutil.rmtree(self.root / STAGING_DIR / p.name, ignore_errors=True)
                removed.append(p.name)
        return removed

    def summary(self) -> dict[str, Any]:
        metas = self.list_episodes()
        return {
            "root": str(self.root),
            "spec": self.spec.to_dict(),
            "episodes": len(metas),
            "frames": sum(m.num_frames for m in metas),
            "tasks": sorted({m.task for m in metas}),
            "updated": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
