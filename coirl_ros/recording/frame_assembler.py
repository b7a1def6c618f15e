"""Pairs each per-tick step record with the observation it was computed from.

The policy (or teleop) node publishes one `StepRecord` per control tick naming the stamp of the
state it acted on. The recorder receives states, camera frames, object states and steps on
separate topics, in no guaranteed order, so everything is buffered by stamp and a step becomes a
frame only once its observation is complete:

- state: the one whose stamp equals the step's `observation_stamp` (within `stamp_tolerance_s`);
  a step whose state has not arrived yet waits up to `step_wait_s`;
- environment state (sim): likewise, by stamp;
- each camera: the newest frame at or before the observation, once a frame at or after it has
  arrived (so no fresher one can still be in flight) or the state stream has moved 1.5 camera
  periods past the observation, and no more than `max_image_lag_s` older than the observation;
  while the camera has no frame at or before it at all, the step waits up to `step_wait_s`.

That last wait is counted in stamps, not wall time: a recorder that stalls (a busy machine) finds
frames and states queued when it resumes, and must not take an older frame just because the wall
clock ran on meanwhile. Wall time (`step_wait_s` since the step arrived) only bounds waits for
streams that stopped. Steps are resolved strictly in order; one that cannot be paired is skipped
with a reason.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from coirl_ros.constants import ACTION, ACTION_BASE, ACTION_RESIDUAL, OBS_ENV_STATE, OBS_STATE, image_key
from coirl_ros.data.episode_spec import EpisodeSpec
from coirl_ros.ingestion.image_codec import resize_rgb
from coirl_ros.recording.stamp_buffer import StampedBuffer


class StepLike(Protocol):
    """What a step record carries (coirl_ros.nodes.interfaces.StepRecord; that module needs rclpy)."""

    stamp: float
    observation_stamp: float
    policy_version: int
    tick: int
    executed: np.ndarray
    base: np.ndarray
    residual: np.ndarray


@dataclass(frozen=True)
class Skip:
    """A step that could not become a frame: `kind` for counting, `reason` for people."""

    kind: str
    reason: str


class FrameAssembler:
    """Buffers observations by stamp and turns steps into episode frames (see module docstring)."""

    def __init__(
        self,
        spec: EpisodeSpec,
        camera_fps: Mapping[str, float],
        buffer_s: float = 5.0,
        step_wait_s: float = 2.0,
        max_image_lag_s: float = 0.5,
        stamp_tolerance_s: float = 1e-4,
    ) -> None:
        self.spec = spec
        self.camera_fps = dict(camera_fps)
        self.step_wait_s = step_wait_s
        self.max_image_lag_s = max_image_lag_s
        self.tolerance = stamp_tolerance_s
        self.states: StampedBuffer[np.ndarray] = StampedBuffer(buffer_s)
        self.env_states: StampedBuffer[np.ndarray] = StampedBuffer(buffer_s)
        self.images: dict[str, StampedBuffer[np.ndarray]] = {
            c: StampedBuffer(buffer_s) for c in spec.camera_names
        }
        self.resized_from: dict[str, tuple[int, int]] = {}
        self._pending: deque[tuple[StepLike, float]] = deque()

    # ---- observations ----------------------------------------------------------------------------
    def add_state(self, stamp: float, positions: np.ndarray) -> None:
        positions = np.asarray(positions, dtype=np.float32)
        if positions.shape != (self.spec.state_dim,):
            raise ValueError(
                f"state has {positions.shape[0]} values, the store expects {self.spec.state_dim}"
            )
        self.states.add(stamp, positions)

    def add_env_state(self, stamp: float, values: np.ndarray) -> None:
        self.env_states.add(stamp, np.asarray(values, dtype=np.float32))

    def add_image(self, camera: str, stamp: float, rgb: np.ndarray) -> None:
        """Store a camera frame at the store's size (resized if the camera publishes another)."""
        if camera not in self.images:
            raise KeyError(f"camera {camera!r} is not in the store's spec ({self.spec.camera_names})")
        h, w = dict(self.spec.cameras)[camera]
        if rgb.shape[:2] != (h, w):
            self.resized_from.setdefault(camera, (rgb.shape[0], rgb.shape[1]))
            rgb = resize_rgb(rgb, h, w)
        self.images[camera].add(stamp, rgb)

    # ---- steps -------------------------------------------------------------------------------------
    @property
    def pending(self) -> int:
        return len(self._pending)

    def submit(self, step: StepLike, now: float) -> None:
        """Queue a step; `now` is a monotonic wall time (waiting is measured in it)."""
        self._pending.append((step, now))

    def clear_pending(self) -> None:
        self._pending.clear()

    def drain(self, now: float, force: bool = False) -> list[tuple[StepLike, dict[str, np.ndarray] | Skip]]:
        """Resolve queued steps in order, stopping at the first that must still wait (unless `force`)."""
        out: list[tuple[StepLike, dict[str, np.ndarray] | Skip]] = []
        while self._pending:
            step, arrived = self._pending[0]
            result = self.assemble(step, now - arrived, force)
            if result is None:
                break
            self._pending.popleft()
            out.append((step, result))
        return out

    def assemble(
        self, step: StepLike, waited_s: float, force: bool = False
    ) -> dict[str, np.ndarray] | Skip | None:
        """The frame for `step`, a `Skip`, or None when it should wait for more data."""
        expired = force or waited_s >= self.step_wait_s
        d = self.spec.action_dim
        if len(step.executed) != d:
            return Skip("action_dim", f"step has {len(step.executed)}-dim actions, the store holds {d}")
        t = step.observation_stamp
        state = self.states.nearest(t, self.tolerance)
        if state is None:
            newest = self.states.newest_stamp
            if not expired and (newest is None or newest < t):
                return None
            return Skip("no_state", f"no state stamped {t:.6f} (newest {newest})")
        frame: dict[str, np.ndarray] = {
            OBS_STATE: state[1],
            ACTION: np.asarray(step.executed, np.float32),
            ACTION_BASE: np.asarray(step.base, np.float32),
            ACTION_RESIDUAL: np.asarray(step.residual, np.float32),
        }
        if self.spec.env_state_dim:
            env = self.env_states.nearest(t, self.tolerance)
            if env is None:
                newest = self.env_states.newest_stamp
                if not expired and (newest is None or newest < t):
                    return None
                return Skip("no_env_state", f"no environment state stamped {t:.6f} (newest {newest})")
            if env[1].shape != (self.spec.env_state_dim,):
                return Skip(
                    "env_state_dim",
                    f"environment state has {env[1].shape[0]} values,"
                    f" the store holds {self.spec.env_state_dim}",
                )
            frame[OBS_ENV_STATE] = env[1]
        newest_state = self.states.newest_stamp
        for camera, buffer in self.images.items():
            newest = buffer.newest_stamp
            settled = newest is not None and newest >= t - self.tolerance
            period = 1.0 / self.camera_fps.get(camera, 30.0)
            moved_on = newest_state is not None and newest_state >= t + 1.5 * period
            if not (settled or moved_on or expired):
                return None
            image = buffer.at_or_before(t + self.tolerance)
            if image is None:
                # The states moving on says no *fresher* frame is coming, not that none at all is: a
                # stream that has not delivered one yet (just subscribed, the first frames lost to
                # discovery) gets step_wait_s of wall time like a missing state.
                if not expired:
                    return None
                return Skip("no_image", f"no {camera} frame at or before {t:.6f}")
            if t - image[0] > self.max_image_lag_s:
                return Skip(
                    "image_lag", f"newest {camera} frame is {t - image[0]:.3f} s older than the observation"
                )
            frame[image_key(camera)] = image[1]
        return frame
