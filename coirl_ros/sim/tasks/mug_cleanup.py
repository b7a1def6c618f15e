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
    yield from drawer.open_drawer(env)
    yield from stow_mug(env)


def stow_mug(env: ManipulationEnv) -> Iterator[Waypoint]:
    """From the mug standing on the table and the drawer open: grasp, carry, put down, close."""
    model, data = env.model, env.data
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
    yield from carry_to_drawer_and_close(env, yaw)


def carry_to_drawer_and_close(env: ManipulationEnv, yaw: float) -> Iterator[Waypoint]:
    """With the mug held high: over the drawer, turned so that the long hand lies across it; down in
    the middle; let go; push the drawer shut."""
    yield from drawer.put_in_drawer(env, "mug", [0.0, 0.0, 0.0], drawer.place_yaw(env.model, env.data, yaw))
    yield from drawer.close_drawer(env)


HELD_GAP = 0.01  # m: the mug's bottom this far above the table, next to a closed hand, counts as held
HELD_REACH = 0.05  # m: horizontal distance from the TCP to the mug's axis within which it can be held
DRAWER_OPEN_ENOUGH = 0.18  # m: opening that lets the mug in without touching the cabinet


def mug_held(env: ManipulationEnv) -> bool:
    """Whether the mug hangs in the gripper: off the table, beside the TCP, fingers not wide open."""
    model, data = env.model, env.data
    tcp, _ = env.tcp_pose()
    mug = free_pose(model, data, "mug")
    off_table = drawer.lowest_z(model, data, "mug") > HELD_GAP
    beside = np.linalg.norm(mug[:2] - tcp[:2]) < HELD_REACH and abs(mug[2] - tcp[2]) < 0.08
    return bool(off_table and beside and env.finger_opening() < 0.9 * OPEN)


def mug_cleanup_resume_plan(env: ManipulationEnv) -> Iterator[Waypoint]:
    """The expert's plan from wherever the episode stands: what an operator taking over mid-episode
    does (HG-DAgger). Holding the mug: lift it, open the drawer first if needed (putting the mug back
    down), then stow it. Not holding it: let go, rise clear, then close the drawer if the mug is
    already in it, or open the drawer as far as still missing and stow the mug. A mug lying on its
    side is past what the expert can fix: the plan is then empty."""
    model, data = env.model, env.data
    tcp, _ = env.tcp_pose()
    yaw = env.tcp_yaw()
    clear_z = max(tcp[2], drawer.CARRY_Z)
    if mug_held(env):
        yield Waypoint(offset(tcp, dz=clear_z - tcp[2]), yaw, CLOSED, speed=0.2, tol=0.01, max_steps=60)
        if drawer.opening(model, data) >= DRAWER_OPEN_ENOUGH:
            yield from carry_to_drawer_and_close(env, yaw)
            return
        # The drawer needs both hands' worth of gripper: stand the mug back where it was picked.
        lift = tcp[2] - drawer.lowest_z(model, data, "mug")
        down, _ = env.tcp_pose()
        down[2] = lift + 0.004
        yield Waypoint(down, yaw, CLOSED, speed=0.15, settle=3)
        yield Waypoint(down, yaw, OPEN, settle=6)
        tcp = offset(down, dz=0.0)
    else:
        yield Waypoint(tcp, yaw, OPEN, settle=4)
    yield Waypoint(offset(tcp, dz=max(0.0, drawer.CARRY_Z - tcp[2])), yaw, OPEN, speed=0.25, tol=0.015)
    if data.xmat[model.body("mug").id][8] < UPRIGHT_COS:
        return
    local = drawer.to_drawer(model, data, free_pose(model, data, "mug")[:3])
    if drawer.inside_xy(local):
        yield from drawer.close_drawer(env)
        return
    if drawer.opening(model, data) < drawer.OPEN_TARGET - 0.02:
        yield from drawer.open_drawer(env)
    yield from stow_mug(env)


TASK = MugCleanupTask
PLAN = mug_cleanup_plan
RESUME_PLAN = mug_cleanup_resume_plan
