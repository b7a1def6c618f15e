"""One recording session on the episode store: start, frames, stop with a success label, discard.

The recorder is the store's single writer for as long as it runs. Frames go to `EpisodeWriter`
(validated, flushed in the background, committed atomically by `save_episode`), so a recorder
killed mid-episode leaves every committed episode intact. The last frame is held back until the
episode ends: a successful episode is terminal, and the learner's sampler expects the sparse
signal there (reward 1, done on the last frame; see `TransitionSampler` and `sim/demos.py`); an
episode stopped without success (time limit, operator) keeps reward 0 and done False, so its last
frame is never bootstrapped from.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from coirl_ros.configs.policy import EE_DELTA_DIM, ActionSpace
from coirl_ros.configs.robot import RobotConfig
from coirl_ros.constants import DONE, REWARD, TIMESTAMP
from coirl_ros.data import EpisodeSpec, EpisodeStore
from coirl_ros.data.episode_store import EpisodeMeta, PartialEpisode, StoreError


def recording_spec(robot: RobotConfig, action_space: ActionSpace, env_state_dim: int = 0) -> EpisodeSpec:
    """The store's spec for a robot config: 8-dim state, the policy's action space, the robot's
    cameras at their configured sizes, the control rate, and the sim's object state if any."""
    action_dim = EE_DELTA_DIM if action_space == "ee_delta" else robot.action_dim
    cams = tuple((c.name, (c.height, c.width)) for c in robot.cameras)
    return EpisodeSpec(robot.state_dim, action_dim, cams, robot.control_rate_hz, env_state_dim)


@dataclass
class EpisodeStats:
    """What happened in the episode being recorded."""

    index: int
    frames: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    policy_versions: set[int] = field(default_factory=set)
    first_stamp: float | None = None


class EpisodeRecorder:
    """Owns the store's writer; frames in, committed episodes out."""

    def __init__(
        self, root: str | Path, spec: EpisodeSpec, robot_config_hash: str = "", flush_every: int = 30
    ) -> None:
        self.store = EpisodeStore.create(root, spec, exist_ok=True)  # StoreError names a spec mismatch
        self.writer = self.store.writer(flush_every=flush_every, robot_config_hash=robot_config_hash)
        # Taken after the lock: every partial episode now belongs to a dead writer.
        self.abandoned: list[PartialEpisode] = [
            p for p in self.store.partial_episodes() if not p.writer_alive
        ]
        self.stats: EpisodeStats | None = None
        self._held: dict[str, np.ndarray] | None = None

    @property
    def recording(self) -> bool:
        return self.stats is not None

    def start(self, task: str, source: str, policy_version: int | None = None) -> int:
        if self.stats is not None:
            raise StoreError(f"episode {self.stats.index} is being recorded; stop or discard it first")
        index = self.writer.begin_episode(task, source, policy_version=policy_version)
        self.stats = EpisodeStats(index)
        self._held = None
        return index

    def add(self, frame: dict[str, np.ndarray], stamp: float, policy_version: int) -> None:
        """Append a frame (observation `stamp` in seconds); timestamps count from the first frame."""
        if self.stats is None:
            raise StoreError("no episode is being recorded")
        if self.stats.first_stamp is None:
            self.stats.first_stamp = stamp
        frame = dict(frame)
        frame[TIMESTAMP] = np.float64(stamp - self.stats.first_stamp)
        if self._held is not None:
            self.writer.add_frame(self._held)
        self._held = frame
        self.stats.frames += 1
        self.stats.policy_versions.add(int(policy_version))

    def skip(self, kind: str) -> None:
        if self.stats is not None:
            self.stats.skipped[kind] = self.stats.skipped.get(kind, 0) + 1

    def stop(self, success: bool | None) -> tuple[EpisodeMeta, EpisodeStats]:
        """Commit the episode; success marks the last frame terminal with reward 1.

        An episode without frames cannot be committed: it is discarded and StoreError raised.
        """
        stats = self.stats
        if stats is None:
            raise StoreError("no episode is being recorded")
        if self._held is None:
            self.discard()
            raise StoreError(f"episode {stats.index} has no frames (no /coirl/step was paired); discarded")
        self._held[REWARD] = np.float32(1.0 if success else 0.0)
        self._held[DONE] = np.bool_(bool(success))
        self.writer.add_frame(self._held)
        self._held = None
        try:
            meta = self.writer.save_episode(success=success)
        except StoreError:
            self.writer.discard_episode()
            self.stats = None
            raise
        self.stats = None
        return meta, stats

    def discard(self) -> EpisodeStats | None:
        stats, self.stats, self._held = self.stats, None, None
        if stats is not None:
            self.writer.discard_episode()
        return stats

    def close(self) -> None:
        """Discards an unfinished episode (nothing committed is touched) and releases the store."""
        self.writer.close()
        self.stats, self._held = None, None
