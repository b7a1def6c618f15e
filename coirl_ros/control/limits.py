"""Joint position and velocity limits on commands: no action can drive the arm faster than it allows."""

from __future__ import annotations

import numpy as np

from coirl_ros.configs.robot import RobotConfig


class CommandLimiter:
    """Clips joint targets [n + 1] to the position limits and to what the velocity limits allow
    since the previous command (`max_velocity * dt` per control step)."""

    def __init__(self, lower: np.ndarray, upper: np.ndarray, max_velocity: np.ndarray, dt: float) -> None:
        lower, upper = np.asarray(lower, dtype=float), np.asarray(upper, dtype=float)
        max_velocity = np.asarray(max_velocity, dtype=float)
        if not lower.shape == upper.shape == max_velocity.shape or lower.ndim != 1:
            raise ValueError("lower, upper and max_velocity must be 1-d arrays of one length")
        if not np.all(lower < upper) or not np.all(max_velocity > 0) or not dt > 0:
            raise ValueError("need lower < upper, max_velocity > 0 and dt > 0")
        self.lower, self.upper, self.dt = lower, upper, float(dt)
        self.max_velocity = max_velocity
        self.max_step = max_velocity * dt

    @classmethod
    def from_robot_config(cls, robot: RobotConfig, dt: float | None = None) -> CommandLimiter:
        """Limits of `robot.yaml` (the gripper between its open and closed positions) at its control rate."""
        g = robot.gripper
        lower = np.array([j.lower for j in robot.joints] + [min(g.open, g.closed)])
        upper = np.array([j.upper for j in robot.joints] + [max(g.open, g.closed)])
        velocity = np.array([j.max_velocity for j in robot.joints] + [g.max_velocity])
        return cls(lower, upper, velocity, dt if dt is not None else 1.0 / robot.control_rate_hz)

    @property
    def dim(self) -> int:
        return len(self.lower)

    def limit(self, target: np.ndarray, previous: np.ndarray) -> np.ndarray:
        """`target` moved at most one step's worth from `previous`, then clipped to the joint limits."""
        step = self.max_step
        return np.clip(np.clip(target, previous - step, previous + step), self.lower, self.upper)


def all_finite(*arrays: np.ndarray | None) -> bool:
    """True when every given array holds only finite numbers (None entries are skipped)."""
    return all(a is None or bool(np.all(np.isfinite(a))) for a in arrays)
