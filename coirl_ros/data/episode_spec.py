"""The single source of truth for what an episode holds: keys, per-frame shapes and dtypes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from coirl_ros.constants import (
    ACTION,
    ACTION_BASE,
    ACTION_RESIDUAL,
    DONE,
    OBS_ENV_STATE,
    OBS_STATE,
    REWARD,
    TIMESTAMP,
    image_key,
)


class FrameError(ValueError):
    """A frame handed to the writer does not match the store's spec; the frame is not recorded."""


@dataclass(frozen=True)
class ArraySpec:
    """Shape of one frame's entry (without the time axis) and its dtype."""

    shape: tuple[int, ...]
    dtype: str

    @property
    def np_dtype(self) -> np.dtype:
        return np.dtype(self.dtype)


@dataclass(frozen=True)
class EpisodeSpec:
    """Dimensions of the data recorded for one robot; stored in the store's root attributes.

    `cameras` maps camera name to (height, width); images are uint8 RGB. `env_state_dim` > 0
    adds `observation.environment_state`: privileged object state, which only a simulator has.
    """

    state_dim: int
    action_dim: int
    cameras: tuple[tuple[str, tuple[int, int]], ...] = ()
    fps: float = 20.0
    env_state_dim: int = 0

    def __post_init__(self) -> None:
        if self.state_dim <= 0 or self.action_dim <= 0:
            raise ValueError(f"state_dim and action_dim must be > 0, got {self.state_dim}, {self.action_dim}")
        if self.env_state_dim < 0:
            raise ValueError(f"env_state_dim must be >= 0, got {self.env_state_dim}")
        if not self.fps > 0:
            raise ValueError(f"fps must be > 0, got {self.fps}")
        for name, (h, w) in self.cameras:
            if h <= 0 or w <= 0:
                raise ValueError(f"camera {name!r}: image size must be positive, got {h}x{w}")

    @classmethod
    def from_robot_config(cls, robot: Any, image_size: tuple[int, int] | None = None) -> EpisodeSpec:
        """Spec for a `RobotConfig`; `image_size` (h, w) overrides the cameras' native size."""
        cams = tuple(
            (c.name, image_size if image_size is not None else (c.height, c.width)) for c in robot.cameras
        )
        return cls(robot.state_dim, robot.action_dim, cams, robot.control_rate_hz)

    @property
    def camera_names(self) -> list[str]:
        return [name for name, _ in self.cameras]

    def arrays(self) -> dict[str, ArraySpec]:
        """Every per-frame array of an episode, keyed by its name in the store."""
        out = {
            OBS_STATE: ArraySpec((self.state_dim,), "float32"),
            ACTION: ArraySpec((self.action_dim,), "float32"),
            ACTION_BASE: ArraySpec((self.action_dim,), "float32"),
            ACTION_RESIDUAL: ArraySpec((self.action_dim,), "float32"),
            REWARD: ArraySpec((), "float32"),
            DONE: ArraySpec((), "bool"),
            TIMESTAMP: ArraySpec((), "float64"),
        }
        if self.env_state_dim:
            out[OBS_ENV_STATE] = ArraySpec((self.env_state_dim,), "float32")
        for name, (h, w) in self.cameras:
            out[image_key(name)] = ArraySpec((h, w, 3), "uint8")
        return out

    def image_keys(self) -> list[str]:
        return [image_key(name) for name in self.camera_names]

    def to_dict(self) -> dict[str, Any]:
        return {
            "state_dim": self.state_dim,
            "action_dim": self.action_dim,
            "cameras": {name: [h, w] for name, (h, w) in self.cameras},
            "fps": self.fps,
            "env_state_dim": self.env_state_dim,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EpisodeSpec:
        cams = tuple((str(n), (int(hw[0]), int(hw[1]))) for n, hw in data.get("cameras", {}).items())
        env_dim = int(data.get("env_state_dim", 0))
        return cls(int(data["state_dim"]), int(data["action_dim"]), cams, float(data["fps"]), env_dim)

    def validate_frame(self, frame: dict[str, Any], frame_index: int, fps: float) -> dict[str, np.ndarray]:
        """Check one frame against the spec and return it as arrays of the stored dtypes.

        Required: state, action and every camera. Optional: base/residual actions (zeros when
        absent, e.g. teleop), reward (0), done (False), timestamp (frame_index / fps).
        """
        specs = self.arrays()
        unknown = sorted(set(frame) - set(specs))
        if unknown:
            raise FrameError(
                f"frame {frame_index}: unknown keys {unknown}; expected keys from {sorted(specs)}"
            )
        required = [OBS_STATE, ACTION, *self.image_keys()] + ([OBS_ENV_STATE] if self.env_state_dim else [])
        missing = [k for k in required if k not in frame]
        if missing:
            raise FrameError(f"frame {frame_index}: missing required keys {missing}")
        defaults: dict[str, Any] = {
            ACTION_BASE: np.zeros(self.action_dim, np.float32),
            ACTION_RESIDUAL: np.zeros(self.action_dim, np.float32),
            REWARD: 0.0,
            DONE: False,
            TIMESTAMP: frame_index / fps,
        }
        out: dict[str, np.ndarray] = {}
        for key, spec in specs.items():
            value = np.asarray(frame[key] if key in frame else defaults[key])
            if value.shape != spec.shape:
                raise FrameError(f"frame {frame_index}: {key} has shape {value.shape}, expected {spec.shape}")
            if spec.dtype == "uint8" and value.dtype != np.uint8:
                # Silently casting float images would wrap or truncate pixel values.
                raise FrameError(f"frame {frame_index}: {key} must be uint8 RGB, got {value.dtype}")
            if spec.dtype != "uint8" and value.dtype.kind not in "biuf":
                raise FrameError(f"frame {frame_index}: {key} must be numeric, got {value.dtype}")
            if value.dtype.kind == "f" and not np.all(np.isfinite(value)):
                raise FrameError(f"frame {frame_index}: {key} contains NaN or inf: {value}")
            # Always a copy: callers reuse buffers (RealSense frame pools, a preallocated state
            # vector) and the frame is only written to disk later, by the flush thread.
            out[key] = np.array(value, dtype=spec.np_dtype, copy=True)
        return out
