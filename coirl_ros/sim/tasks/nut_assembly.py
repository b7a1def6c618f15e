"""Nut assembly: the square nut onto the square peg and the round nut onto the round peg
(robosuite/MimicGen "NutAssembly").

Both nuts lie flat in front of the pegs at random places and yaws; the pegs stand side by side
(square on the left, round on the right, seen from the robot) at slightly randomised places, the
square one at a slightly randomised yaw. Each hole leaves 2.5 mm per side around its peg. The
square nut also fits over the round peg, which does not count.
"""

from __future__ import annotations

from collections.abc import Iterator

import mujoco
import numpy as np

from coirl_ros.sim.env import ManipulationEnv
from coirl_ros.sim.expert import Waypoint
from coirl_ros.sim.task import Task, free_pose, set_free_pose
from coirl_ros.sim.tasks import nuts

SQUARE_PEG_LOW, SQUARE_PEG_HIGH = (0.63, 0.10), (0.67, 0.14)
ROUND_PEG_LOW, ROUND_PEG_HIGH = (0.63, -0.14), (0.67, -0.10)
PEG_YAW = np.pi / 8  # square peg yaw uniform in +-PEG_YAW
NUT_XY_LOW, NUT_XY_HIGH = (0.40, -0.22), (0.52, 0.22)
# Nut centre to either peg axis, and between the nuts, at reset: a nut (7 cm to its handle tip) clears
# both a peg with the other nut seated on it and the other nut.
MIN_DIST = 0.15
PAIRS = (("square_nut", "square_peg"), ("round_nut", "round_peg"))


class NutAssemblyTask(Task):
    name = "nut_assembly"
    scene = "nut_assembly.xml"
    horizon = 700
    instruction = "put the square nut on the square peg and the round nut on the round peg"

    def bind(self, model: mujoco.MjModel) -> None:
        nuts.check_handle(model, "square_nut_handle")
        nuts.check_handle(model, "round_nut_handle")

    def reset(self, model: mujoco.MjModel, data: mujoco.MjData, rng: np.random.Generator) -> None:
        square = rng.uniform(SQUARE_PEG_LOW, SQUARE_PEG_HIGH)
        round_ = rng.uniform(ROUND_PEG_LOW, ROUND_PEG_HIGH)
        nuts.set_peg(model, data, "square_peg", square, rng.uniform(-PEG_YAW, PEG_YAW))
        nuts.set_peg(model, data, "round_peg", round_)
        taken = [square, round_]
        for nut in ("square_nut", "round_nut"):
            xy = nuts.sample_clear_xy(rng, NUT_XY_LOW, NUT_XY_HIGH, taken, MIN_DIST)
            taken.append(xy)
            set_free_pose(model, data, nut, [xy[0], xy[1], nuts.NUT_HALF_HEIGHT], rng.uniform(-np.pi, np.pi))

    def object_state(self, model: mujoco.MjModel, data: mujoco.MjData) -> np.ndarray:
        """Square nut, round nut, square peg, round peg: position and quaternion (7) each."""
        return np.concatenate(
            [free_pose(model, data, "square_nut"), free_pose(model, data, "round_nut")]
            + [nuts.peg_state(model, data, peg) for peg in ("square_peg", "round_peg")]
        )

    def success(self, model: mujoco.MjModel, data: mujoco.MjData) -> bool:
        return all(nuts.nut_on_peg(model, data, nut, peg) for nut, peg in PAIRS)

    def place_solved(self, model: mujoco.MjModel, data: mujoco.MjData) -> None:
        """Solved (tests): each nut resting on the table around its own peg, handles pointing back."""
        for nut, peg in PAIRS:
            axis, yaw = nuts.peg_pose(model, data, peg)
            set_free_pose(model, data, nut, [axis[0], axis[1], nuts.NUT_HALF_HEIGHT + 0.002], yaw + np.pi)

    def place_near_miss(self, model: mujoco.MjModel, data: mujoco.MjData) -> None:
        """Not solved (tests): the square nut down around the round peg (it fits, but it is the wrong
        peg), the round nut lying on the table in front of the square peg."""
        axis, _ = nuts.peg_pose(model, data, "round_peg")
        set_free_pose(model, data, "square_nut", [axis[0], axis[1], nuts.NUT_HALF_HEIGHT + 0.002], np.pi)
        axis, _ = nuts.peg_pose(model, data, "square_peg")
        set_free_pose(model, data, "round_nut", [axis[0] - 0.1, axis[1], nuts.NUT_HALF_HEIGHT], np.pi)


def nut_assembly_plan(env: ManipulationEnv) -> Iterator[Waypoint]:
    """The square nut onto its peg, then the round nut onto its (any yaw fits the round peg)."""
    yield from nuts.pick_nut(env, "square_nut")
    yield from nuts.place_nut(env, "square_nut", "square_peg", symmetry=np.pi / 2)
    yield from nuts.pick_nut(env, "round_nut")
    yield from nuts.place_nut(env, "round_nut", "round_peg", symmetry=None)


TASK = NutAssemblyTask
PLAN = nut_assembly_plan
