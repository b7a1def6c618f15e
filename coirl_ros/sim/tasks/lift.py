"""Lift: pick a cube up at least 8 cm off the table (the easy smoke task)."""

from __future__ import annotations

from collections.abc import Iterator

import mujoco
import numpy as np

from coirl_ros.sim.env import ManipulationEnv
from coirl_ros.sim.expert import CLOSED, OPEN, Waypoint, grasp_yaw, offset
from coirl_ros.sim.task import Task, free_pose, set_free_pose, yaw_of

CUBE_HALF = 0.022
LIFT_HEIGHT = 0.08


class LiftTask(Task):
    name = "lift"
    scene = "lift.xml"
    horizon = 100
    instruction = "pick up the red cube"

    def reset(self, model: mujoco.MjModel, data: mujoco.MjData, rng: np.random.Generator) -> None:
        pos = [rng.uniform(0.45, 0.65), rng.uniform(-0.15, 0.15), CUBE_HALF]
        set_free_pose(model, data, "cube", pos, yaw=rng.uniform(-np.pi, np.pi))

    def object_state(self, model: mujoco.MjModel, data: mujoco.MjData) -> np.ndarray:
        return free_pose(model, data, "cube")

    def success(self, model: mujoco.MjModel, data: mujoco.MjData) -> bool:
        return bool(free_pose(model, data, "cube")[2] > CUBE_HALF + LIFT_HEIGHT)

    def place_solved(self, model: mujoco.MjModel, data: mujoco.MjData) -> None:
        """Solved (tests): the cube held in the closed gripper at the home pose, 45 cm up."""
        tcp = data.site_xpos[model.site("tcp").id]
        set_free_pose(model, data, "cube", tcp.copy())
        finger = model.joint("panda_finger_joint1").qposadr[0]
        data.qpos[finger : finger + 2] = CUBE_HALF
        data.ctrl[7] = 0.0

    def place_near_miss(self, model: mujoco.MjModel, data: mujoco.MjData) -> None:
        """Not solved (tests): the cube resting on the table right under the open gripper."""
        set_free_pose(model, data, "cube", [0.45, 0.0, CUBE_HALF])


def lift_plan(env: ManipulationEnv) -> Iterator[Waypoint]:
    """Above the cube, down, close, up."""
    cube = free_pose(env.model, env.data, "cube")
    yaw = grasp_yaw(yaw_of(cube[3:]))
    yield Waypoint(offset(cube, dz=0.10), yaw, OPEN, tol=0.01)
    yield Waypoint(offset(cube, dz=0.002), yaw, OPEN, speed=0.15, settle=2)
    yield Waypoint(offset(cube, dz=0.002), yaw, CLOSED, settle=6)
    yield Waypoint(offset(cube, dz=0.16), yaw, CLOSED, speed=0.2, max_steps=60)


TASK = LiftTask
PLAN = lift_plan
