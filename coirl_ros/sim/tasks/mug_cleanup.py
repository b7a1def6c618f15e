"""Mug cleanup: open the drawer, put the mug in it and close it (after MimicGen's Mug Cleanup)."""

from __future__ import annotations

from collections.abc import Iterator

import mujoco
import numpy as np

from coirl_ros.sim.env import ManipulationEnv
from coirl_ros.sim.expert import CLOSED, OPEN, Waypoint, grasp_yaw, offset
from coirl_ros.sim.task import Task, free_pose, set_free_pose, yaw_of
from coirl_ros.sim.tasks import drawer

MUG_RADIUS = 0.03
MUG_HALF_HEIGHT = 0.035
REST_TOL = 0.005  # m: the mug's bottom within this of the drawer bottom counts as resting on it
UPRIGHT_COS = np.cos(np.radians(10.0))  # the mug's axis within 10 degrees of vertical


class MugCleanupTask(Task):
    name = "mug_cleanup"
    scene = "mug_cleanup.xml"
    horizon = 550
    instruction = "put the mug in the drawer and close it"

    def reset(self, model: mujoco.MjModel, data: mujoco.MjData, rng: np.random.Generator) -> None:
        drawer.place_cabinet(model, data, rng)
        pos = [rng.uniform(0.42, 0.66), rng.uniform(-0.25, -0.11), MUG_HALF_HEIGHT]
        set_free_pose(model, data, "mug", pos, yaw=rng.uniform(-np.pi, np.pi))

    def object_state(self, model: mujoco.MjModel, data: mujoco.MjData) -> np.ndarray:
        """Mug position and quaternion (7), cabinet position (3), drawer opening (1)."""
        return drawer.task_state(model, data, "mug")

    def success(self, model: mujoco.MjModel, data: mujoco.MjData) -> bool:
        """Drawer closed (< 1 cm), the mug's centre over the drawer's interior, its bottom within
        5 mm of the drawer bottom, and upright (within 10 degrees)."""
        if drawer.opening(model, data) >= drawer.CLOSED_TOL:
            return False
        mug = free_pose(model, data, "mug")
        local = drawer.to_drawer(model, data, mug[:3])
        resting = abs(local[2] - MUG_HALF_HEIGHT - drawer.BOTTOM_Z) < REST_TOL
        upright = data.xmat[model.body("mug").id][8] > UPRIGHT_COS
        return bool(drawer.inside_xy(local) and resting and upright)

    def _mug_in_drawer(self, model: mujoco.MjModel, data: mujoco.MjData, opening: float) -> None:
        drawer.set_opening(model, data, opening)
        mujoco.mj_kinematics(model, data)
        centre = drawer.interior_centre(model, data, MUG_HALF_HEIGHT + 0.001)
        set_free_pose(model, data, "mug", centre, yaw=0.3)

    def place_solved(self, model: mujoco.MjModel, data: mujoco.MjData) -> None:
        """Solved (tests): the mug upright in the middle of the closed drawer."""
        self._mug_in_drawer(model, data, 0.0)

    def place_near_miss(self, model: mujoco.MjModel, data: mujoco.MjData) -> None:
        """Not solved (tests): the mug in the drawer, but the drawer left 2 cm open."""
        self._mug_in_drawer(model, data, 0.02)


def mug_cleanup_plan(env: ManipulationEnv) -> Iterator[Waypoint]:
    """Open the drawer; grasp the mug from above across its body (fingers clear of the handle);
    carry it over the drawer turning the hand across the slide axis; put it down in the middle of
    the drawer, correcting for where the mug sits in the hand; let go; push the drawer shut."""
    model, data = env.model, env.data
    yield from drawer.open_drawer(env)

    mug = free_pose(model, data, "mug")
    # The fingers close across the handle's direction (TCP x along the handle).
    yaw = grasp_yaw(yaw_of(mug[3:]), symmetry=np.pi)
    grasp = offset(mug, dz=MUG_HALF_HEIGHT - 0.025)
    yield Waypoint(offset(grasp, dz=0.10), yaw, OPEN, speed=0.3, tol=0.01)
    mug = free_pose(model, data, "mug")  # re-aim at the mug, in case it was nudged
    grasp = offset(mug, dz=MUG_HALF_HEIGHT - 0.025)
    yield Waypoint(grasp, yaw, OPEN, speed=0.15, settle=2)
    yield Waypoint(grasp, yaw, CLOSED, settle=6)
    yield Waypoint(
        offset(grasp, dz=drawer.CARRY_Z - grasp[2]), yaw, CLOSED, speed=0.2, tol=0.01, max_steps=60
    )

    # Over the drawer, turned so that the long hand lies across it; then down in the middle.
    yield from drawer.put_in_drawer(env, "mug", [0.0, 0.0, 0.0], drawer.place_yaw(model, data, yaw))
    yield from drawer.close_drawer(env)


TASK = MugCleanupTask
PLAN = mug_cleanup_plan
