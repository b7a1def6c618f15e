"""Square: put the square nut onto the square peg (robosuite/MimicGen "Square").

The nut lies flat anywhere in front of the peg with any yaw; the peg stands at a slightly
randomised place and yaw. The hole leaves 2.5 mm per side around the peg, so the nut must be
lined up within about 13 degrees (modulo 90) and 2.5 mm before it slides down the peg.
"""

from __future__ import annotations

from collections.abc import Iterator

import mujoco
import numpy as np

from coirl_ros.sim.env import ManipulationEnv
from coirl_ros.sim.expert import Waypoint
from coirl_ros.sim.task import Task, free_pose, set_free_pose
from coirl_ros.sim.tasks import nuts

PEG_XY_LOW, PEG_XY_HIGH = (0.57, 0.10), (0.63, 0.16)
PEG_YAW = np.pi / 8  # peg yaw uniform in +-PEG_YAW
NUT_XY_LOW, NUT_XY_HIGH = (0.42, -0.22), (0.66, 0.06)
NUT_PEG_MIN_DIST = 0.13  # nut centre to peg axis at reset (the handle reaches 7 cm)


class SquareTask(Task):
    name = "square"
    scene = "square.xml"
    horizon = 330
    instruction = "put the square nut onto the square peg"

    def bind(self, model: mujoco.MjModel) -> None:
        nuts.check_handle(model, "square_nut_handle")

    def reset(self, model: mujoco.MjModel, data: mujoco.MjData, rng: np.random.Generator) -> None:
        peg = rng.uniform(PEG_XY_LOW, PEG_XY_HIGH)
        nuts.set_peg(model, data, "square_peg", peg, rng.uniform(-PEG_YAW, PEG_YAW))
        xy = nuts.sample_clear_xy(rng, NUT_XY_LOW, NUT_XY_HIGH, [peg], NUT_PEG_MIN_DIST)
        pos = [xy[0], xy[1], nuts.NUT_HALF_HEIGHT]
        set_free_pose(model, data, "square_nut", pos, yaw=rng.uniform(-np.pi, np.pi))

    def object_state(self, model: mujoco.MjModel, data: mujoco.MjData) -> np.ndarray:
        """Nut position and quaternion (7), peg position and quaternion (7)."""
        return np.concatenate(
            [free_pose(model, data, "square_nut"), nuts.peg_state(model, data, "square_peg")]
        )

    def success(self, model: mujoco.MjModel, data: mujoco.MjData) -> bool:
        return nuts.nut_on_peg(model, data, "square_nut", "square_peg")

    def place_solved(self, model: mujoco.MjModel, data: mujoco.MjData) -> None:
        """Solved (tests): the nut resting on the table around the peg, lined up with it."""
        axis, yaw = nuts.peg_pose(model, data, "square_peg")
        set_free_pose(
            model, data, "square_nut", [axis[0], axis[1], nuts.NUT_HALF_HEIGHT + 0.002], yaw + 0.5 * np.pi
        )

    def place_near_miss(self, model: mujoco.MjModel, data: mujoco.MjData) -> None:
        """Not solved (tests): the nut turned 45 degrees, so it cannot slide down, sitting on the peg's
        top (its centre 7 mm off the peg axis, away from the handle, so that it balances there)."""
        axis, yaw = nuts.peg_pose(model, data, "square_peg")
        nut_yaw = yaw + 0.25 * np.pi
        xy = axis - 0.007 * np.array([np.cos(nut_yaw), np.sin(nut_yaw)])
        top = nuts.PEG_HEIGHT + nuts.NUT_HALF_HEIGHT + 0.001
        set_free_pose(model, data, "square_nut", [xy[0], xy[1], top], nut_yaw)


def square_plan(env: ManipulationEnv) -> Iterator[Waypoint]:
    """Grasp the handle, carry the nut over the peg, turn it to fit, lower it down the peg, let go."""
    yield from nuts.pick_nut(env, "square_nut")
    yield from nuts.place_nut(env, "square_nut", "square_peg", symmetry=np.pi / 2)


TASK = SquareTask
PLAN = square_plan
