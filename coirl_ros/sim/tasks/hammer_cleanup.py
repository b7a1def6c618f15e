"""Hammer cleanup: open the drawer, put the hammer in it and close it (after MimicGen's Hammer
Cleanup). The hammer (19 cm long) only fits lying along the drawer (22 cm inside), so the expert
turns it on the way."""

from __future__ import annotations

from collections.abc import Iterator

import mujoco
import numpy as np

from coirl_ros.sim.env import ManipulationEnv
from coirl_ros.sim.expert import CLOSED, OPEN, Waypoint, grasp_yaw, offset
from coirl_ros.sim.task import Task, free_pose, set_free_pose, yaw_of
from coirl_ros.sim.tasks import drawer

HANDLE_HALF = 0.011  # the handle's half thickness: the body origin's height when lying flat
HANDLE_END = np.array([-0.08, 0.0, 0.0])  # body frame: the handle's free end
HEAD_CENTRE = np.array([0.095, 0.0, 0.003])  # body frame: the middle of the head
MIDDLE = np.array([0.015, 0.0, 0.0])  # body frame: half-way between the hammer's two ends
GRASP = np.array([0.055, 0.0, 0.004])  # body frame: on the handle, 4 mm from the centre of mass
REST_TOL = 0.005  # m: lying on the drawer bottom, give or take
FLAT_COS = np.cos(np.radians(10.0))  # the hammer's up axis within 10 degrees of vertical


class HammerCleanupTask(Task):
    name = "hammer_cleanup"
    scene = "hammer_cleanup.xml"
    horizon = 550
    instruction = "put the hammer in the drawer and close it"

    def reset(self, model: mujoco.MjModel, data: mujoco.MjData, rng: np.random.Generator) -> None:
        drawer.place_cabinet(model, data, rng)
        # The handle's centre; any yaw. Kept below y = -0.135 so the hand, 18 cm long across the
        # handle, stays clear of the open drawer's handle when it comes down to grasp.
        pos = [rng.uniform(0.42, 0.64), rng.uniform(-0.25, -0.135), HANDLE_HALF]
        set_free_pose(model, data, "hammer", pos, yaw=rng.uniform(-np.pi, np.pi))

    def object_state(self, model: mujoco.MjModel, data: mujoco.MjData) -> np.ndarray:
        """Hammer position and quaternion (7), cabinet position (3), drawer opening (1)."""
        return drawer.task_state(model, data, "hammer")

    def success(self, model: mujoco.MjModel, data: mujoco.MjData) -> bool:
        """Drawer closed (< 1 cm); both ends of the hammer (the handle's end, the head's centre)
        over the drawer's interior; lying flat (within 10 degrees) on the drawer bottom (its
        origin within 5 mm of the height it has lying there)."""
        if drawer.opening(model, data) >= drawer.CLOSED_TOL:
            return False
        body = model.body("hammer").id
        pos, rot = data.xpos[body], data.xmat[body].reshape(3, 3)
        ends = [drawer.to_drawer(model, data, pos + rot @ p) for p in (HANDLE_END, HEAD_CENTRE)]
        centre = drawer.to_drawer(model, data, pos)
        resting = abs(centre[2] - HANDLE_HALF - drawer.BOTTOM_Z) < REST_TOL
        flat = abs(rot[2, 2]) > FLAT_COS
        return bool(all(drawer.inside_xy(e) for e in ends) and resting and flat)

    def _hammer_in_drawer(self, model: mujoco.MjModel, data: mujoco.MjData, opening: float) -> None:
        drawer.set_opening(model, data, opening)
        mujoco.mj_kinematics(model, data)
        # Lying along the drawer, its middle over the middle of the interior.
        yaw = drawer.handle_yaw(model, data) + np.pi / 2
        middle = np.array([np.cos(yaw), np.sin(yaw), 0.0]) * MIDDLE[0]
        pos = drawer.interior_centre(model, data, HANDLE_HALF + 0.001) - middle
        set_free_pose(model, data, "hammer", pos, yaw=yaw)

    def place_solved(self, model: mujoco.MjModel, data: mujoco.MjData) -> None:
        """Solved (tests): the hammer lying along the middle of the closed drawer."""
        self._hammer_in_drawer(model, data, 0.0)

    def place_near_miss(self, model: mujoco.MjModel, data: mujoco.MjData) -> None:
        """Not solved (tests): the hammer in the drawer, but the drawer left 2 cm open."""
        self._hammer_in_drawer(model, data, 0.02)


def hammer_cleanup_plan(env: ManipulationEnv) -> Iterator[Waypoint]:
    """Open the drawer; grasp the handle from above near the centre of mass, fingers across it;
    carry the hammer over the drawer turning it along the drawer; put it down with its middle in
    the middle of the drawer, correcting for where it sits in the hand; let go; push the drawer
    shut."""
    model, data = env.model, env.data
    yield from drawer.open_drawer(env)

    def grasp_point() -> tuple[np.ndarray, float]:
        pose = free_pose(model, data, "hammer")
        body = model.body("hammer").id
        point = data.xpos[body] + data.xmat[body].reshape(3, 3) @ GRASP
        # TCP x along the handle: the fingers close across it.
        return point, grasp_yaw(yaw_of(pose[3:]), symmetry=np.pi)

    grasp, yaw = grasp_point()
    yield Waypoint(offset(grasp, dz=0.10), yaw, OPEN, speed=0.3, tol=0.01)
    grasp, yaw = grasp_point()  # re-aim, in case the hammer was nudged
    yield Waypoint(grasp, yaw, OPEN, speed=0.15, settle=2)
    yield Waypoint(grasp, yaw, CLOSED, settle=6)
    yield Waypoint(
        offset(grasp, dz=drawer.CARRY_Z - grasp[2]), yaw, CLOSED, speed=0.2, tol=0.01, max_steps=60
    )

    yield from drawer.put_in_drawer(env, "hammer", MIDDLE, drawer.place_yaw(model, data, yaw))
    yield from drawer.close_drawer(env)


TASK = HammerCleanupTask
PLAN = hammer_cleanup_plan
