"""Random minibatches of transitions (s, a, r, done, s', a') from an episode store.

The learner's access pattern is uniform random transitions over everything committed so far,
re-drawn thousands of times a second, while new episodes keep arriving. So low-dimensional
arrays of every episode are loaded once into flat in-memory buffers, and a batch is one fancy
index into them. Images either stay on disk and are read per batch (`images="lazy"`: bounded
memory, slower) or are loaded with their episode (`images="preload"`: fast, memory grows with
the data; right for the 84x84 images a learner trains on).

Derived per-frame arrays (`derived=`) are computed from an episode once, as it is loaded, by the
`on_load` hook, and then sampled like the state: the image learner caches its frozen encoder's
keypoints this way, so an update never touches a pixel.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import zarr

from coirl_ros.constants import (
    ACTION,
    ACTION_BASE,
    ACTION_RESIDUAL,
    DEMO_SOURCES,
    DONE,
    NEXT,
    OBS_ENV_STATE,
    OBS_STATE,
    REWARD,
    TIMESTAMP,
)
from coirl_ros.data.episode_store import CorruptEpisodeError, Episode, EpisodeMeta, EpisodeStore, StoreError

log = logging.getLogger(__name__)

LOWDIM_KEYS = (OBS_STATE, ACTION, ACTION_BASE, ACTION_RESIDUAL, REWARD, DONE, TIMESTAMP)
Subset = Literal["all", "demo", "rollout"]


class _EpisodeVanished(Exception):
    """A lazily read episode was deleted; the sampler refreshes and draws again."""


class _GrowableArray:
    """An append-only array with amortised O(1) appends (capacity doubling)."""

    def __init__(self, frame_shape: tuple[int, ...], dtype: np.dtype) -> None:
        self._data = np.empty((64, *frame_shape), dtype)
        self.size = 0

    def append(self, values: np.ndarray) -> None:
        need = self.size + len(values)
        if need > len(self._data):
            grown = np.empty((max(need, 2 * len(self._data)), *self._data.shape[1:]), self._data.dtype)
            grown[: self.size] = self._data[: self.size]
            self._data = grown
        self._data[self.size : need] = values
        self.size = need

    @property
    def view(self) -> np.ndarray:
        return self._data[: self.size]


@dataclass
class _LoadedEpisode:
    meta: EpisodeMeta
    offset: int  # first frame's row in the flat buffers
    images: dict[str, zarr.Array] = field(default_factory=dict)  # lazy mode only
    attrs_stamp: tuple[int, int] = (0, 0)  # its zarr.json's (mtime, size) when loaded: a relabel rewrites it
    recorded_last: tuple[float, bool] = (0.0, False)  # last frame's reward and done as recorded


def _apply_success_label(episode: Episode) -> None:
    """The episode's success label decides its last frame: labelled a success, it is terminal with
    reward 1 (what the recorder writes at a successful stop); labelled a failure, a last frame recorded
    as a success terminal loses reward and terminal flag. So a label corrected after the episode was
    committed reaches the sparse reward and the terminal bootstrap; the store's arrays stay as recorded.
    """
    if episode.meta.num_frames:
        _apply_success_label_to(episode.data[REWARD], episode.data[DONE], episode.meta.success)


def _apply_success_label_to(reward: np.ndarray, done: np.ndarray, success: bool | None) -> None:
    """`_apply_success_label` on an episode's reward and done arrays (its last row), in place."""
    if success is None:
        return
    if success:
        reward[-1], done[-1] = 1.0, True
    elif reward[-1] > 0:
        reward[-1], done[-1] = 0.0, False


class TransitionSampler:
    """Uniform random transitions over the committed episodes of a store.

    A sampled transition at frame t of an episode pairs frame t with frame t+1 (`next.*` keys).
    The last frame of an episode has no successor: it is sampled only if it is terminal
    (`done`), with s' = s, which the TD target ignores through (1 - done). A last frame that
    is not terminal (time limit, operator stop) is never sampled: bootstrapping from it would
    need the true next observation, which was never recorded.
    """

    def __init__(
        self,
        store: EpisodeStore,
        images: Literal["none", "lazy", "preload"] = "none",
        on_load: Callable[[Episode], None] | None = None,
        derived: Mapping[str, tuple[tuple[int, ...], str | np.dtype]] | None = None,
        hook_keys: Sequence[str] = (),
        successes_as_demos: bool = False,
        follow_labels: bool = False,
    ) -> None:
        """`on_load(episode)` may rewrite an episode's low-dimensional arrays in place as it is loaded
        (same shapes and dtypes), e.g. fill in the base actions a teleoperated demo was recorded
        without; the store itself is never modified.

        `derived` declares further per-frame arrays, key -> (frame shape, dtype), that `on_load` must
        add to `episode.data` ([num_frames, *frame shape]); batches carry them and their `next.`
        versions like the state. `hook_keys` are store arrays read only for `on_load` (e.g. the images a
        derived array is computed from) and dropped after it, unless they are buffered anyway.

        `successes_as_demos`: policy episodes labelled successful join the "demo" subset (self-imitation).

        `follow_labels` (the learner): an episode's success label decides its last frame's reward and
        terminal flag (`_apply_success_label`). With it or `successes_as_demos`, an episode relabelled
        after it was loaded is re-labelled in place on the next `refresh()`: its last frame and the
        sampling index change, nothing is read again (so `on_load` must not depend on the label).
        """
        if images not in ("none", "lazy", "preload"):
            raise ValueError(f"images must be 'none', 'lazy' or 'preload', got {images!r}")
        self.store = store
        self.image_mode = images
        self.on_load = on_load
        self.image_keys = store.spec.image_keys() if images != "none" else []
        self.lowdim_keys = list(LOWDIM_KEYS) + ([OBS_ENV_STATE] if store.spec.env_state_dim else [])
        specs = store.spec.arrays()
        self.derived: dict[str, tuple[tuple[int, ...], np.dtype]] = {
            key: (tuple(int(n) for n in shape), np.dtype(dtype))
            for key, (shape, dtype) in (derived or {}).items()
        }
        clashing = sorted(set(self.derived) & (set(specs) | {"episode_index", "frame_index"}))
        if clashing:
            raise ValueError(f"derived arrays {clashing} clash with the store's own arrays")
        if self.derived and on_load is None:
            raise ValueError(f"derived arrays {sorted(self.derived)} need an on_load hook that computes them")
        unknown = sorted(set(hook_keys) - set(specs))
        if unknown:
            raise ValueError(f"hook_keys {unknown} are not arrays of the store; it has {sorted(specs)}")
        self.hook_keys = [k for k in hook_keys if k not in self._stored_keys()]
        self.successes_as_demos = successes_as_demos
        self.follow_labels = follow_labels
        self._reset()

    def _stored_keys(self) -> list[str]:
        """Store arrays kept in the flat buffers."""
        return self.lowdim_keys + (self.image_keys if self.image_mode == "preload" else [])

    def _reset(self) -> None:
        self.skipped: dict[int, str] = {}  # corrupt episodes left out, with the reason
        specs = self.store.spec.arrays()
        self._buffers = {k: _GrowableArray(specs[k].shape, specs[k].np_dtype) for k in self._stored_keys()}
        for key, (shape, dtype) in self.derived.items():
            self._buffers[key] = _GrowableArray(shape, dtype)
        self._episodes: dict[int, _LoadedEpisode] = {}
        self._frame_episode = _GrowableArray((), np.dtype(np.int64))
        self._frame_t = _GrowableArray((), np.dtype(np.int64))
        # Per frame, the last sampleable row of its episode: where an n-step window must stop.
        self._frame_last_valid = _GrowableArray((), np.dtype(np.int64))
        self._valid: dict[str, _GrowableArray] = {
            s: _GrowableArray((), np.dtype(np.int64)) for s in ("all", "demo", "rollout")
        }

    # ---- loading ------------------------------------------------------------------------------
    def refresh(self) -> int:
        """Load newly committed episodes; returns how many were added. Deletions trigger a reload."""
        present = set(self.store.episode_indices())
        if set(self._episodes) - present:
            self._reset()  # rare (an operator deleted an episode): rebuild rather than patch
        elif self.follow_labels or self.successes_as_demos:
            self._relabel(self._relabelled())
        self.skipped = {i: r for i, r in self.skipped.items() if i in present}
        added = 0
        for index in sorted(present - set(self._episodes) - set(self.skipped)):
            try:
                self._load(index)
                added += 1
            except CorruptEpisodeError as err:
                log.warning("skipping corrupt episode %d: %s", index, err.reason)
                self.skipped[index] = err.reason
            except StoreError:
                continue  # deleted while we were reading it
        return added

    def _attrs_stamp(self, index: int) -> tuple[int, int]:
        """(mtime, size) of the episode's metadata file: the size too, because a relabel within the
        filesystem's timestamp granularity of the last write would keep the mtime (true/false/null
        differ in length)."""
        try:
            st = (self.store.episode_path(index) / "zarr.json").stat()
        except FileNotFoundError:
            return (-1, -1)
        return (st.st_mtime_ns, st.st_size)

    def _relabelled(self) -> dict[int, EpisodeMeta]:
        """The loaded episodes whose success label changed since they were loaded (the dashboard's "mark
        success", `coirl episodes relabel`), with their new metadata. One stat per episode; the
        metadata is read only when its file changed."""
        changed = {}
        for index, loaded in self._episodes.items():
            stamp = self._attrs_stamp(index)
            if stamp == loaded.attrs_stamp:
                continue
            try:
                meta = self.store.read_meta(index)
            except StoreError:
                continue  # deleted or unreadable: the next refresh sees it
            loaded.attrs_stamp = stamp
            if meta.success != loaded.meta.success:
                changed[index] = meta
        return changed

    def _relabel(self, changed: Mapping[int, EpisodeMeta]) -> None:
        """Apply new labels in place: the last frame's reward and terminal flag (from what was recorded,
        so a label can be cleared again) and the sampling index. An operator marking each episode a
        success must not make the learner reload, and re-run `on_load` over, the whole store."""
        if not changed:
            return
        for index, meta in changed.items():
            loaded = self._episodes[index]
            loaded.meta = meta
            n = meta.num_frames
            if not self.follow_labels or n == 0:
                continue
            last = loaded.offset + n - 1
            reward, done = self._buffers[REWARD].view, self._buffers[DONE].view
            reward[last], done[last] = loaded.recorded_last
            _apply_success_label_to(reward[last : last + 1], done[last : last + 1], meta.success)
        for name in ("all", "demo", "rollout"):
            self._valid[name] = _GrowableArray((), np.dtype(np.int64))
        self._frame_last_valid = _GrowableArray((), np.dtype(np.int64))
        for loaded in self._episodes.values():  # load order: the frames' order in the buffers
            self._index(loaded)
        log.info("relabelled episodes %s in place", sorted(changed))

    def _load(self, index: int) -> None:
        keys = self._stored_keys()
        stamp = self._attrs_stamp(index)  # before reading: a relabel during the read shows next time
        # Everything that can fail (validation, a concurrent delete) happens before the first append.
        episode = self.store.read_episode(index, keys + self.hook_keys)
        n = episode.meta.num_frames
        recorded_last = (float(episode.data[REWARD][-1]), bool(episode.data[DONE][-1])) if n else (0.0, False)
        if self.follow_labels:
            _apply_success_label(episode)
        if self.on_load is not None:
            shapes = {k: (v.shape, v.dtype) for k, v in episode.data.items()}
            self.on_load(episode)
            changed = [
                k
                for k, v in episode.data.items()
                if k not in self.derived and (v.shape, v.dtype) != shapes.get(k)
            ]
            if changed:
                raise ValueError(
                    f"on_load changed the shape or dtype of {changed} in episode {index}"
                    f" (or added arrays that are not declared as derived: {sorted(self.derived)})"
                )
            self._check_derived(episode)
        for key in self.hook_keys:
            episode.data.pop(key, None)  # read for the hook only: do not hold the images
        images: dict[str, zarr.Array] = {}
        if self.image_mode == "lazy":
            try:
                group = zarr.open_group(self.store.episode_path(index), mode="r")
                images = {k: group[k] for k in self.image_keys}
            except (FileNotFoundError, KeyError) as err:
                raise StoreError(f"episode {index} vanished while loading: {err}") from None
        offset = self._buffers[OBS_STATE].size
        for key in [*keys, *self.derived]:
            self._buffers[key].append(episode.data[key])
        self._frame_episode.append(np.full(n, index, np.int64))
        self._frame_t.append(np.arange(n, dtype=np.int64))
        loaded = _LoadedEpisode(episode.meta, offset, images, stamp, recorded_last)
        self._index(loaded)
        self._episodes[index] = loaded

    def _index(self, loaded: _LoadedEpisode) -> None:
        """Append a buffered episode's rows to the sampling index (episodes in buffer order)."""
        n, offset = loaded.meta.num_frames, loaded.offset
        valid = offset + np.arange(n - 1, dtype=np.int64)
        if n and self._buffers[DONE].view[offset + n - 1]:
            valid = np.append(valid, offset + n - 1)
        self._frame_last_valid.append(np.full(n, offset + len(valid) - 1, np.int64))
        self._valid["all"].append(valid)
        promoted = self.successes_as_demos and loaded.meta.success is True
        demo = loaded.meta.source in DEMO_SOURCES or promoted
        self._valid["demo" if demo else "rollout"].append(valid)

    def _check_derived(self, episode: Episode) -> None:
        """Every declared derived array is present with [num_frames, *shape]; cast to its dtype."""
        n = episode.meta.num_frames
        for key, (shape, dtype) in self.derived.items():
            if key not in episode.data:
                raise ValueError(
                    f"on_load did not add the derived array {key!r} to episode {episode.meta.index}"
                    f" (it has {sorted(episode.data)})"
                )
            values = np.asarray(episode.data[key])
            if values.shape != (n, *shape):
                raise ValueError(
                    f"on_load: derived array {key!r} of episode {episode.meta.index} has shape"
                    f" {values.shape}, expected {(n, *shape)}"
                )
            episode.data[key] = values.astype(dtype, copy=False)

    # ---- sampling -----------------------------------------------------------------------------
    def num_transitions(self, subset: Subset = "all") -> int:
        return self._valid[subset].size

    @property
    def num_episodes(self) -> int:
        return len(self._episodes)

    @property
    def num_frames(self) -> int:
        """Frames loaded (every frame of every episode, sampleable or not)."""
        return self._frame_t.size

    def frames(self, keys: Sequence[str], subset: Subset = "all") -> dict[str, np.ndarray]:
        """The buffered arrays `keys` at every sampleable frame of `subset`, in load order (copies)."""
        rows = self._valid[subset].view
        missing = sorted(set(keys) - set(self._buffers))
        if missing:
            raise KeyError(f"{missing} are not loaded by this sampler; it holds {sorted(self._buffers)}")
        return {k: self._buffers[k].view[rows] for k in keys}

    def sample(
        self, batch_size: int, rng: np.random.Generator, subset: Subset = "all"
    ) -> dict[str, np.ndarray]:
        """A batch of `batch_size` transitions drawn uniformly with replacement from `subset`."""
        steps, _ = self.sample_windows(batch_size, rng, subset, horizon=1)
        return steps[0]

    def sample_windows(
        self, batch_size: int, rng: np.random.Generator, subset: Subset = "all", horizon: int = 1
    ) -> tuple[list[dict[str, np.ndarray]], np.ndarray]:
        """Windows of up to `horizon` consecutive transitions, for n-step returns.

        The first transition of each window is drawn as `sample` draws one; the window then follows
        its episode and stops early at the episode's last sampleable transition (a terminal frame, or
        the frame before an unfinished episode's last). Returns (steps, mask): `steps[i]` is a batch
        like `sample`'s holding transition i of every window, repeating the window's last transition
        once the window has ended, so `steps[-1]` always holds the transition to bootstrap from; mask
        [batch_size, horizon] is True where step i is part of its window.
        """
        if horizon < 1:
            raise ValueError(f"horizon must be at least 1, got {horizon}")
        for _ in range(3):
            try:
                return self._sample_windows(batch_size, rng, subset, horizon)
            except _EpisodeVanished:
                self.refresh()  # deleted under a lazy read: zarr would have returned black frames
        raise StoreError(f"{self.store.root}: episodes keep disappearing while sampling")

    def _sample_windows(
        self, batch_size: int, rng: np.random.Generator, subset: Subset, horizon: int
    ) -> tuple[list[dict[str, np.ndarray]], np.ndarray]:
        valid = self._valid[subset].view
        if len(valid) == 0:
            raise StoreError(f"no {subset!r} transitions in {self.store.root} yet")
        rows = valid[rng.integers(0, len(valid), batch_size)]
        length = np.minimum(horizon, self._frame_last_valid.view[rows] - rows + 1)
        steps = [self._gather(rows + np.minimum(i, length - 1)) for i in range(horizon)]
        mask = np.arange(horizon)[None, :] < length[:, None]
        return steps, mask

    def _gather(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        """The transitions at flat `rows`: frame t and its successor t+1 (itself at a terminal last frame)."""
        last = self._is_last_frame(rows)
        next_rows = np.where(last, rows, rows + 1)
        batch: dict[str, np.ndarray] = {}
        for key in self.lowdim_keys:
            batch[key] = self._buffers[key].view[rows]
        batch[NEXT + OBS_STATE] = self._buffers[OBS_STATE].view[next_rows]
        if OBS_ENV_STATE in self._buffers:
            batch[NEXT + OBS_ENV_STATE] = self._buffers[OBS_ENV_STATE].view[next_rows]
        batch[NEXT + ACTION] = self._buffers[ACTION].view[next_rows]
        # The residual policy at s' also sees the base action proposed there.
        batch[NEXT + ACTION_BASE] = self._buffers[ACTION_BASE].view[next_rows]
        for key in self.derived:
            batch[key] = self._buffers[key].view[rows]
            batch[NEXT + key] = self._buffers[key].view[next_rows]
        batch["episode_index"] = self._frame_episode.view[rows]
        batch["frame_index"] = self._frame_t.view[rows]
        if self.image_mode == "preload":
            for key in self.image_keys:
                batch[key] = self._buffers[key].view[rows]
                batch[NEXT + key] = self._buffers[key].view[next_rows]
        elif self.image_mode == "lazy":
            batch.update(self._read_images(rows, next_rows))
        return batch

    def _is_last_frame(self, rows: np.ndarray) -> np.ndarray:
        episodes = self._frame_episode.view
        nxt = np.minimum(rows + 1, len(episodes) - 1)
        return (rows + 1 >= len(episodes)) | (episodes[nxt] != episodes[rows])

    def _read_images(self, rows: np.ndarray, next_rows: np.ndarray) -> dict[str, np.ndarray]:
        """Read the frames of `rows` and `next_rows` from disk, one zarr call per episode and camera."""
        all_rows = np.concatenate([rows, next_rows])
        episodes = self._frame_episode.view[all_rows]
        ts = self._frame_t.view[all_rows]
        out = {}
        for key in self.image_keys:
            h, w, c = self.store.spec.arrays()[key].shape
            frames = np.empty((len(all_rows), h, w, c), np.uint8)
            for index in np.unique(episodes):
                sel = np.flatnonzero(episodes == index)
                uniq, inverse = np.unique(ts[sel], return_inverse=True)
                frames[sel] = self._episodes[int(index)].images[key].oindex[uniq][inverse]
                # zarr fills missing chunks with zeros instead of failing; delete is a rename, so
                # a vanished directory after the read means those frames are fill, not data.
                if not self.store.episode_path(int(index)).is_dir():
                    raise _EpisodeVanished(int(index))
            out[key] = frames[: len(rows)]
            out[NEXT + key] = frames[len(rows) :]
        return out
