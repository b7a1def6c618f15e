"""Coffee: put the pod into the coffee machine's holder and close the lid (MimicGen "Coffee").

The machine (a fixed, mocap-placed fixture) stands at a randomised place and yaw with its lid open
100 degrees, past vertical, so gravity holds it open. The pod, a short cylinder, stands upright
anywhere on the table around it. The holder leaves 4 mm around the pod, and the closed lid clears a
seated pod by only 4 mm, so the lid closes only over a pod that is seated upright in the holder.

Success: the pod's centre lies within the holder's inner radius (23 mm) of the holder axis and
below its rim, the pod stands within 15 degrees of upright, and the lid is within 3 degrees of
closed.
"""

from __future__ import annotations

from collections.abc import Iterator

import mujoco
import numpy as np

from coirl_ros.sim.env import ManipulationEnv
from coirl_ros.sim.expert import CLOSED, OPEN, Waypoint, offset
from coirl_ros.sim.task import Task, free_pose, set_fixture_pose, set_free_pose, yaw_of

# Dimensions, mirrored from sim/coffee.xml (machine frame: holder axis at the origin, front to -x).
POD_RADIUS, POD_HALF = 0.019, 0.02
HOLDER_INNER = 0.023  # inner apothem of the hexagonal cup
HOLDER_FLOOR = 0.06  # z of the holder floor (the base top)
HOLDER_RIM = HOLDER_FLOOR + 0.024
HINGE = np.array([0.036, 0.0, 0.104])  # lid hinge (axis along the machine's y)
LID_THICKNESS = 0.01
LID_OPEN = 1.75  # rad, the joint's upper limit: 100 degrees up
LID_CLOSED_TOL = np.deg2rad(3.0)
POD_TILT_TOL = np.deg2rad(15.0)

# Randomisation.
MACHINE_XY_LOW, MACHINE_XY_HIGH = (0.55, -0.15), (0.62, 0.15)
MACHINE_YAW = 0.35  # rad, uniform in +-
POD_XY_LOW, POD_XY_HIGH = (0.38, -0.25), (0.66, 0.25)
POD_MACHINE_MIN_DIST = 0.13  # pod axis to the machine base's centre

# Expert.
GRASP_DEPTH = 0.010  # TCP this far below the pod's top (fingertips 8 mm lower still)
CARRY_Z = 0.20  # pod bottom height while carrying it over the machine (the open lid reaches 0.18)
RELEASE_GAP = 0.006  # pod bottom above the holder floor when the fingers open


def machine_pose(model: mujoco.MjModel, data: mujoco.MjData) -> tuple[np.ndarray, float]:
    """Position and yaw of the machine frame."""
    mocap = model.body("coffee_machine").mocapid[0]
    return data.mocap_pos[mocap].copy(), yaw_of(data.mocap_quat[mocap])


def to_world(model: mujoco.MjModel, data: mujoco.MjData, local) -> np.ndarray:
    """A point given in the machine frame, in world coordinates."""
    pos, yaw = machine_pose(model, data)
    c, s = np.cos(yaw), np.sin(yaw)
    x, y, z = local
    return pos + np.array([c * x - s * y, s * x + c * y, z])


def to_machine(model: mujoco.MjModel, data: mujoco.MjData, world) -> np.ndarray:
    """A world point in the machine frame."""
    pos, yaw = machine_pose(model, data)
    c, s = np.cos(yaw), np.sin(yaw)
    x, y, z = np.asarray(world, dtype=float)[:3] - pos
    return np.array([c * x + s * y, -s * x + c * y, z])


def lid_angle(model: mujoco.MjModel, data: mujoco.MjData) -> float:
    return float(data.qpos[model.joint("coffee_lid").qposadr[0]])


def pod_axis(pose: np.ndarray) -> np.ndarray:
    """The pod's cylinder axis (its body z) in the world frame."""
    mat = np.empty(9)
    mujoco.mju_quat2Mat(mat, pose[3:7])
    return mat.reshape(3, 3)[:, 2]


def pod_in_holder(model: mujoco.MjModel, data: mujoco.MjData) -> bool:
    pose = free_pose(model, data, "coffee_pod")
    rel = to_machine(model, data, pose[:3])
    upright = abs(pod_axis(pose)[2]) > np.cos(POD_TILT_TOL)
    return bool(np.hypot(rel[0], rel[1]) < HOLDER_INNER and rel[2] < HOLDER_RIM and upright)


class CoffeeTask(Task):
    name = "coffee"
    scene = "coffee.xml"
    horizon = 320
    instruction = "put the pod in the coffee machine and close the lid"

    def reset(self, model: mujoco.MjModel, data: mujoco.MjData, rng: np.random.Generator) -> None:
        xy = rng.uniform(MACHINE_XY_LOW, MACHINE_XY_HIGH)
        yaw = rng.uniform(-MACHINE_YAW, MACHINE_YAW)
        set_fixture_pose(model, data, "coffee_machine", xy[0], xy[1], yaw)
        data.qpos[model.joint("coffee_lid").qposadr[0]] = LID_OPEN
        base = to_world(model, data, [0.01, 0.0, 0.0])[:2]  # centre of the machine's footprint
        while True:
            pod = rng.uniform(POD_XY_LOW, POD_XY_HIGH)
            if np.linalg.norm(pod - base) > POD_MACHINE_MIN_DIST:
                break
        set_free_pose(model, data, "coffee_pod", [pod[0], pod[1], POD_HALF], yaw=rng.uniform(-np.pi, np.pi))

    def object_state(self, model: mujoco.MjModel, data: mujoco.MjData) -> np.ndarray:
        """Pod position and quaternion (7), machine position and quaternion (7), lid angle (1)."""
        mocap = model.body("coffee_machine").mocapid[0]
        return np.concatenate(
            [
                free_pose(model, data, "coffee_pod"),
                data.mocap_pos[mocap],
                data.mocap_quat[mocap],
                [lid_angle(model, data)],
            ]
        )

    def success(self, model: mujoco.MjModel, data: mujoco.MjData) -> bool:
        return pod_in_holder(model, data) and lid_angle(model, data) < LID_CLOSED_TOL

    def place_solved(self, model: mujoco.MjModel, data: mujoco.MjData) -> None:
        """Solved (tests): the pod seated in the holder, the lid closed over it."""
        _, yaw = machine_pose(model, data)
        set_free_pose(model, data, "coffee_pod", to_world(model, data, [0, 0, HOLDER_FLOOR + POD_HALF]), yaw)
        data.qpos[model.joint("coffee_lid").qposadr[0]] = 0.0

    def place_near_miss(self, model: mujoco.MjModel, data: mujoco.MjData) -> None:
        """Not solved (tests): the pod seated in the holder but the lid left open."""
        _, yaw = machine_pose(model, data)
        set_free_pose(model, data, "coffee_pod", to_world(model, data, [0, 0, HOLDER_FLOOR + POD_HALF]), yaw)
        data.qpos[model.joint("coffee_lid").qposadr[0]] = LID_OPEN


def _nearest(angle: float, reference: float, period: float) -> float:
    """`angle` plus the multiple of `period` that brings it closest to `reference`."""
    return float(angle + period * np.round((reference - angle) / period))


def coffee_plan(env: ManipulationEnv) -> Iterator[Waypoint]:
    """Grasp the pod's top, carry it over the holder, lower it in, let go; then get behind the open
    lid, push it over past vertical and press it shut."""
    m, d = env.model, env.data
    pod = free_pose(m, d, "coffee_pod")
    base = to_world(m, d, [0.01, 0.0, 0.0])
    _, machine_yaw = machine_pose(m, d)
    # Fingers close across the line to the machine, so the long hand stays clear of it.
    yaw = _nearest(np.arctan2(base[1] - pod[1], base[0] - pod[0]), 0.0, np.pi)
    grasp = offset(pod, dz=POD_HALF - GRASP_DEPTH)
    yield Waypoint(offset(grasp, dz=0.08), yaw, OPEN, tol=0.01)
    yield Waypoint(grasp, yaw, OPEN, speed=0.15, settle=2)
    yield Waypoint(grasp, yaw, CLOSED, settle=6)
    carry = CARRY_Z + 2 * POD_HALF - GRASP_DEPTH  # TCP height with the pod's bottom at CARRY_Z
    yield Waypoint(offset(grasp, dz=carry - grasp[2]), yaw, CLOSED, speed=0.2, tol=0.01)

    # Over the holder with the long hand along the hinge (clear of the open lid), then down.
    place_yaw = _nearest(machine_yaw, yaw, np.pi)
    settle = int(np.ceil(abs(place_yaw - yaw) / 0.1))  # the expert turns the wrist 0.1 rad a step
    yaw = place_yaw
    holder = to_world(m, d, [0.0, 0.0, HOLDER_FLOOR])
    above = _pod_bottom_at(env, offset(holder, dz=CARRY_Z - HOLDER_FLOOR))
    yield Waypoint(above, yaw, CLOSED, tol=0.01, settle=settle)
    # Re-read the pod in the hand each time: its bottom centre goes onto the holder axis.
    yield Waypoint(
        _pod_bottom_at(env, offset(holder, dz=0.045)), yaw, CLOSED, speed=0.15, tol=0.004, settle=3
    )
    release = _pod_bottom_at(env, offset(holder, dz=RELEASE_GAP))
    yield Waypoint(release, yaw, CLOSED, speed=0.06, tol=0.003, settle=3)
    yield Waypoint(release, yaw, OPEN, settle=5)

    # Close the lid: from behind, push it over past vertical, then press it down.
    up = HINGE[2] + 0.09
    yield Waypoint(offset(release, dz=up - release[2]), yaw, OPEN, speed=0.2, tol=0.01)
    yield Waypoint(to_world(m, d, [HINGE[0] + 0.05, 0.0, up]), yaw, CLOSED, speed=0.2, tol=0.008)
    push_z = HINGE[2] + 0.045
    yield Waypoint(to_world(m, d, [HINGE[0] + 0.05, 0.0, push_z]), yaw, CLOSED, speed=0.15)
    yield Waypoint(to_world(m, d, [HINGE[0] - 0.01, 0.0, push_z]), yaw, CLOSED, speed=0.12)
    yield Waypoint(to_world(m, d, [-0.01, 0.0, push_z]), yaw, CLOSED, speed=0.15)
    press = HINGE[2] + LID_THICKNESS + 0.008 - 0.003
    yield Waypoint(to_world(m, d, [-0.01, 0.0, press]), yaw, CLOSED, speed=0.08, settle=10)


def _pod_bottom_at(env: ManipulationEnv, point: np.ndarray) -> np.ndarray:
    """The TCP position that puts the held pod's bottom centre at `point`, as the pod sits now."""
    tcp, _ = env.tcp_pose()
    pose = free_pose(env.model, env.data, "coffee_pod")
    bottom = pose[:3] - POD_HALF * pod_axis(pose)
    return point - (bottom - tcp)


TASK = CoffeeTask
PLAN = coffee_plan
