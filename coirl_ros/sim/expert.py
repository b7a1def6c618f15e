"""Scripted experts: task-specific waypoints in TCP space, followed with IK at the control rate.

A task's expert is a generator of `Waypoint`s. The generator is resumed only when the previous
waypoint is reached, so later waypoints are planned from the state at that moment (where the
object ended up after the grasp, say), which makes experts closed-loop and robust. Between
waypoints the expert moves a carrot toward the target at bounded speed and asks IK for the
joint targets that put the TCP on the carrot; Gaussian noise on the carrot (`noise`, metres)
makes demonstrations varied the way human ones are.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from coirl_ros.sim.env import FINGER_OPEN, ManipulationEnv
from coirl_ros.sim.kinematics import rotation_error, top_down_rotation

OPEN, CLOSED = FINGER_OPEN, 0.0


@dataclass(frozen=True)
class Waypoint:
    """Where the TCP should go, with which yaw and gripper command, and when it counts as reached."""

    pos: np.ndarray
    yaw: float
    gripper: float = OPEN
    speed: float = 0.25  # m/s of the carrot
    tol: float = 0.006  # m, TCP distance that counts as reached
    settle: int = 0  # extra steps to hold once reached (a gripper closing, an object settling)
    max_steps: int = 120  # give up on this waypoint after this many steps and move on


Plan = Callable[[ManipulationEnv], Iterator[Waypoint]]


def offset(pos: np.ndarray, dx: float = 0.0, dy: float = 0.0, dz: float = 0.0) -> np.ndarray:
    """`pos` shifted by (dx, dy, dz) in the world frame (a new array)."""
    return np.asarray(pos, dtype=float)[:3] + np.array([dx, dy, dz])


def grasp_yaw(object_yaw: float, symmetry: float = np.pi / 2) -> float:
    """The object's yaw folded into (-symmetry/2, symmetry/2]: the smallest wrist turn that fits."""
    return float((object_yaw + symmetry / 2) % symmetry - symmetry / 2)


class WaypointExpert:
    """Follows a task's waypoint plan; `act(obs)` returns an action in the env's action mode."""

    def __init__(self, env: ManipulationEnv, plan: Plan, noise: float = 0.0, seed: int | None = None) -> None:
        self.env = env
        self.plan = plan
        self.noise = noise
        self.base_seed = seed
        self.rng = np.random.default_rng(seed)
        self.done = False

    def reset(self, episode_seed: int | None = None) -> None:
        """Start the plan; with `episode_seed` the noise depends on that episode alone, so any
        single episode of a batch can be reproduced on its own."""
        if episode_seed is not None:
            self.rng = np.random.default_rng([self.base_seed or 0, episode_seed])
        self._waypoints = self.plan(self.env)
        self._carrot, _ = self.env.tcp_pose()
        self._yaw = self.env.tcp_yaw()
        self._gripper = OPEN
        self.done = False
        self._next()

    def _next(self) -> None:
        self._wp = next(self._waypoints, None)
        self._steps_on_wp = 0
        self._settled = 0
        if self._wp is None:
            self.done = True

    def act(self, obs: dict[str, np.ndarray] | None = None) -> np.ndarray:
        if self._wp is not None:
            self._advance()
        wp = self._wp
        if wp is not None:
            step = wp.speed * self.env.dt
            delta = wp.pos - self._carrot
            dist = np.linalg.norm(delta)
            self._carrot = wp.pos.copy() if dist <= step else self._carrot + delta * (step / dist)
            self._yaw += np.clip(wp.yaw - self._yaw, -0.1, 0.1)
            self._gripper = wp.gripper
        carrot = self._carrot + self.rng.normal(0.0, self.noise, 3) if self.noise > 0 else self._carrot
        rot = top_down_rotation(self._yaw)
        if self.env.config.action_mode == "joint":
            q = self.env.ik.solve(self.env.data.qpos[:7], carrot, rot)
            return np.append(q, self._gripper).astype(np.float32)
        pos, cur_rot = self.env.ee_target()
        dpos = np.clip((carrot - pos) / self.env.config.max_ee_step, -1, 1)
        drot = np.clip(rotation_error(rot, cur_rot) / self.env.config.max_rot_step, -1, 1)
        grip = 1.0 - 2.0 * self._gripper / OPEN
        return np.concatenate([dpos, drot, [grip]]).astype(np.float32)

    def _advance(self) -> None:
        wp = self._wp
        assert wp is not None
        self._steps_on_wp += 1
        pos, _ = self.env.tcp_pose()
        reached = np.linalg.norm(pos - wp.pos) < wp.tol and np.allclose(self._carrot, wp.pos)
        if reached:
            self._settled += 1
        if (reached and self._settled > wp.settle) or self._steps_on_wp >= wp.max_steps:
            self._next()


def run_episode(
    env: ManipulationEnv, expert: WaypointExpert, seed: int, on_step: Callable | None = None
) -> bool:
    """Roll the expert out for one episode; `on_step(obs, action, reward, done)` sees every step."""
    obs, info = env.reset(seed=seed)
    expert.reset(seed)
    success = False
    for _ in range(env.horizon):
        action = expert.act(obs)
        next_obs, reward, terminated, truncated, info = env.step(action)
        if on_step is not None:
            on_step(obs, action, reward, terminated)
        obs = next_obs
        success = bool(info["success"])
        if terminated or truncated:
            break
    return success
