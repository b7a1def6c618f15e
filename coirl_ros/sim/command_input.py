"""The sim's side of ros2_control's command interfaces: what joint targets hold at a given time.

Like the real controllers: the last command stays in force until the next one; with no command
yet (or after a reset) the arm holds the home pose. Forward position commands replace the target
at once; a joint trajectory is followed by linear interpolation between its points in time, from
the target in force when it arrived (as ros2_control's joint_trajectory_controller does from the
current state), and its last point holds afterwards. Joints a trajectory does not name keep their
targets. Bad commands raise ValueError and change nothing.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from itertools import pairwise

import numpy as np


class JointCommandInput:
    """Targets for [arm joints..., gripper joint] as a function of (sim) time; thread-safe."""

    def __init__(self, arm_joints: Sequence[str], gripper_joint: str, home: np.ndarray) -> None:
        self.names = (*arm_joints, gripper_joint)
        self.n_arm = len(arm_joints)
        home = np.asarray(home, dtype=float)
        if home.shape != (len(self.names),):
            raise ValueError(f"home has {home.shape} values for {len(self.names)} joints")
        self.home = home.copy()
        self._lock = threading.Lock()
        self._base = home.copy()  # target in force before the active trajectory (or the target itself)
        self._base_time = 0.0
        self._knots: list[tuple[float, np.ndarray]] = []  # (absolute time, full target) after base
        self.commands = 0

    def reset(self) -> None:
        """Back to holding home (a new episode: no command from the last one may act on it)."""
        with self._lock:
            self._base, self._knots = self.home.copy(), []

    def set_arm(self, values: Sequence[float], now: float) -> None:
        """Forward position command for the arm joints (rad)."""
        values = self._finite(values, self.n_arm, "arm command")
        with self._lock:
            target = self._target_locked(now)
            target[: self.n_arm] = values
            self._base, self._base_time, self._knots = target, now, []
            self.commands += 1

    def set_gripper(self, values: Sequence[float], now: float) -> None:
        """Forward position command for the gripper joint (one value; m per finger for the Panda)."""
        values = self._finite(values, 1, "gripper command")
        with self._lock:
            target = self._target_locked(now)
            target[self.n_arm] = values[0]
            # A gripper command must not cut an arm trajectory short: shift it onto the new base.
            self._base, self._base_time = target, now
            for _, knot in self._knots:
                knot[self.n_arm] = values[0]
            self.commands += 1

    def set_trajectory(
        self, joint_names: Sequence[str], points: Sequence[tuple[float, Sequence[float]]], now: float
    ) -> bool:
        """Follow `points` [(seconds from now, positions in `joint_names` order)]; returns whether
        the gripper joint is among the names."""
        unknown = [n for n in joint_names if n not in self.names]
        if unknown:
            raise ValueError(f"trajectory names unknown joints {unknown}; this robot has {list(self.names)}")
        if len(set(joint_names)) != len(joint_names):
            raise ValueError(f"trajectory repeats joint names: {list(joint_names)}")
        if not points:
            raise ValueError("trajectory has no points")
        columns = [self.names.index(n) for n in joint_names]
        times = [float(t) for t, _ in points]
        if any(not math.isfinite(t) or t < 0 for t in times) or any(b <= a for a, b in pairwise(times)):
            raise ValueError(f"trajectory times must be finite, >= 0 and increasing, got {times}")
        rows = [self._finite(p, len(joint_names), f"trajectory point {i}") for i, (_, p) in enumerate(points)]
        with self._lock:
            start = self._target_locked(now)
            knots = []
            for t, row in zip(times, rows, strict=True):
                target = start.copy() if not knots else knots[-1][1].copy()
                target[columns] = row
                knots.append((now + t, target))
            self._base, self._base_time, self._knots = start, now, knots
            self.commands += 1
        return self.names[-1] in joint_names

    def target(self, now: float) -> np.ndarray:
        """The joint targets in force at `now`."""
        with self._lock:
            return self._target_locked(now)

    def _target_locked(self, now: float) -> np.ndarray:
        prev_t, prev = self._base_time, self._base
        for t, knot in self._knots:
            if now < t:
                if t <= prev_t:
                    return knot.copy()
                a = (now - prev_t) / (t - prev_t)
                return prev + max(0.0, a) * (knot - prev)
            prev_t, prev = t, knot
        return prev.copy()

    @staticmethod
    def _finite(values: Sequence[float], n: int, what: str) -> np.ndarray:
        arr = np.asarray(values, dtype=float).reshape(-1)
        if arr.shape != (n,):
            raise ValueError(f"{what}: expected {n} values, got {arr.shape[0]}")
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{what}: contains NaN or inf: {arr.tolist()}")
        return arr
