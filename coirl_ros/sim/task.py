"""What a task is to the environment: a scene, object randomisation, privileged state, success."""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path

import mujoco
import numpy as np

from coirl_ros.paths import share_dir


class Task(ABC):
    """A manipulation task in the shared work cell.

    Subclasses name their scene file (in `sim/`), place objects at reset (deterministically from
    the generator they are given), report privileged object state, and decide success from the
    physics state alone (no hidden flags: the success check is the task's definition).
    """

    name: str
    scene: str  # file name in sim/
    horizon: int  # control steps at 20 Hz (the env scales it to its control rate)
    instruction: str

    def scene_path(self) -> Path:
        return share_dir() / "sim" / self.scene

    def bind(self, model: mujoco.MjModel) -> None:  # noqa: B027 -- optional hook, not abstract
        """Look up ids of bodies, joints and sites once the model is compiled (optional)."""

    @abstractmethod
    def reset(self, model: mujoco.MjModel, data: mujoco.MjData, rng: np.random.Generator) -> None:
        """Randomise object poses (and fixture states) in `data`; called before mj_forward."""

    @abstractmethod
    def object_state(self, model: mujoco.MjModel, data: mujoco.MjData) -> np.ndarray:
        """Privileged state of the task's objects (positions, orientations, fixture joints)."""

    @abstractmethod
    def success(self, model: mujoco.MjModel, data: mujoco.MjData) -> bool:
        """The sparse success signal."""

    @abstractmethod
    def place_solved(self, model: mujoco.MjModel, data: mujoco.MjData) -> None:
        """Arrange a solved configuration, robot at home (tests check `success` holds after 1 s of
        physics). The gripper is open unless the task needs holding (Lift: set ctrl and fingers)."""

    @abstractmethod
    def place_near_miss(self, model: mujoco.MjModel, data: mujoco.MjData) -> None:
        """Arrange an almost-solved configuration that must NOT count as success (tests)."""


def set_free_pose(model: mujoco.MjModel, data: mujoco.MjData, joint: str, pos, yaw: float = 0.0) -> None:
    """Put a free-jointed body at `pos` with a rotation `yaw` about z, at rest."""
    jnt = model.joint(joint)
    adr = jnt.qposadr[0]
    data.qpos[adr : adr + 3] = pos
    data.qpos[adr + 3 : adr + 7] = [np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2)]
    data.qvel[jnt.dofadr[0] : jnt.dofadr[0] + 6] = 0.0


def set_fixture_pose(
    model: mujoco.MjModel, data: mujoco.MjData, body: str, x: float, y: float, yaw: float = 0.0
) -> None:
    """Stand a mocap fixture (peg, cabinet, machine, tripod) on the table at (x, y), turned by `yaw`.

    Fixtures are mocap bodies: their pose lives in `data`, so reset can randomise it and physics
    never moves it.
    """
    mocap = model.body(body).mocapid[0]
    data.mocap_pos[mocap] = [x, y, 0.0]
    data.mocap_quat[mocap] = [np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2)]


def free_pose(model: mujoco.MjModel, data: mujoco.MjData, joint: str) -> np.ndarray:
    """Position (3) and quaternion (4, wxyz) of a free-jointed body."""
    adr = model.joint(joint).qposadr[0]
    return data.qpos[adr : adr + 7].copy()


def yaw_of(quat: np.ndarray) -> float:
    """Rotation about world z of a body whose z axis stays (roughly) vertical."""
    w, x, y, z = quat
    return float(np.arctan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z)))
