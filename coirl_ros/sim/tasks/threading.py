"""Threading: pass the needle's tip through the ring on the tripod (MimicGen "Threading").

The tripod stands at a slightly randomised place and yaw, its ring upright with its axis
horizontal. The needle lies flat anywhere on the robot's side of it, its tip pointing up to
103 degrees either way from the ring's axis. The needle's square shaft clears the ring by 5.6 mm
(at its corners) to 7.7 mm, so it must be lined up in height, sideways and yaw before it goes in.

Success: the needle's tip is at least 15 mm past the ring's plane along the ring's axis, the
shaft's root (where it leaves the handle) is still on the near side, and the shaft's axis crosses
the ring's plane within the ring's inner radius (12.7 mm) of its centre.
"""

from __future__ import annotations

from collections.abc import Iterator

import mujoco
import numpy as np

from coirl_ros.sim.env import ManipulationEnv
from coirl_ros.sim.expert import CLOSED, OPEN, Waypoint, offset
from coirl_ros.sim.kinematics import top_down_rotation
from coirl_ros.sim.task import Task, free_pose, set_fixture_pose, set_free_pose, yaw_of

# Dimensions, mirrored from sim/threading.xml.
RING_HEIGHT = 0.06  # ring centre above the table (tripod frame: axis along x)
RING_INNER = 0.0127  # inner radius of the 10-capsule ring
HANDLE_HALF = np.array([0.025, 0.012, 0.012])
SHAFT_DROP = 0.007  # shaft axis below the handle's centre
TIP_PAST = 0.015  # the tip must be this far past the ring plane

# Randomisation.
TRIPOD_XY_LOW, TRIPOD_XY_HIGH = (0.60, -0.12), (0.66, 0.12)
TRIPOD_YAW = 0.4  # rad, uniform in +-
NEEDLE_XY_LOW, NEEDLE_XY_HIGH = (0.36, -0.22), (0.54, 0.22)
NEEDLE_TURN = 1.8  # rad: the tip points within +- this of the ring's axis
NEEDLE_TRIPOD_MIN_DIST = 0.10  # from any point of the needle's axis to the tripod's post

# Expert.
GRASP_DEPTH = 0.010  # TCP this far below the handle's top (fingertips 8 mm lower still)
SAFE_Z = 0.14  # TCP height for turning and carrying the needle (shaft clears the ring's top)
PRE_INSERT = 0.03  # tip this far before the ring plane before pushing in
INSERT = 0.027  # ... and this far past it at the end of the push
YAW_RANGE = (-1.8, 3.4)  # TCP yaws the arm reaches comfortably when pointing down


def ring_pose(model: mujoco.MjModel, data: mujoco.MjData) -> tuple[np.ndarray, float]:
    """The ring's centre and the yaw of its axis (the tripod's x axis)."""
    mocap = model.body("tripod").mocapid[0]
    yaw = yaw_of(data.mocap_quat[mocap])
    return data.mocap_pos[mocap] + np.array([0.0, 0.0, RING_HEIGHT]), yaw


def to_ring(centre: np.ndarray, yaw: float, point: np.ndarray) -> np.ndarray:
    """`point` in the ring's frame: x along the ring's axis, z up, origin at the ring's centre."""
    c, s = np.cos(yaw), np.sin(yaw)
    x, y, z = point - centre
    return np.array([c * x + s * y, -s * x + c * y, z])


def needle_sites(model: mujoco.MjModel, data: mujoco.MjData) -> tuple[np.ndarray, np.ndarray]:
    """World positions of the shaft's root and of the tip."""
    return data.site("needle_root").xpos.copy(), data.site("needle_tip").xpos.copy()


def threaded(model: mujoco.MjModel, data: mujoco.MjData) -> bool:
    centre, yaw = ring_pose(model, data)
    root, tip = (to_ring(centre, yaw, p) for p in needle_sites(model, data))
    if tip[0] < TIP_PAST or root[0] >= 0.0:
        return False
    cross = root + (tip - root) * (-root[0] / (tip[0] - root[0]))
    return bool(np.hypot(cross[1], cross[2]) < RING_INNER)


class ThreadingTask(Task):
    name = "threading"
    scene = "threading.xml"
    horizon = 240
    instruction = "thread the needle through the ring"

    def reset(self, model: mujoco.MjModel, data: mujoco.MjData, rng: np.random.Generator) -> None:
        xy = rng.uniform(TRIPOD_XY_LOW, TRIPOD_XY_HIGH)
        ring_yaw = rng.uniform(-TRIPOD_YAW, TRIPOD_YAW)
        set_fixture_pose(model, data, "tripod", xy[0], xy[1], ring_yaw)
        while True:
            pos = rng.uniform(NEEDLE_XY_LOW, NEEDLE_XY_HIGH)
            yaw = ring_yaw + rng.uniform(-NEEDLE_TURN, NEEDLE_TURN)
            axis = np.array([np.cos(yaw), np.sin(yaw)])
            along = np.linspace(-HANDLE_HALF[0], 0.115, 15)
            if np.min(np.linalg.norm(pos + along[:, None] * axis - xy, axis=1)) > NEEDLE_TRIPOD_MIN_DIST:
                break
        set_free_pose(model, data, "needle", [pos[0], pos[1], HANDLE_HALF[2]], yaw)

    def object_state(self, model: mujoco.MjModel, data: mujoco.MjData) -> np.ndarray:
        """Needle position and quaternion (7), tripod position and quaternion (7)."""
        mocap = model.body("tripod").mocapid[0]
        return np.concatenate(
            [free_pose(model, data, "needle"), data.mocap_pos[mocap], data.mocap_quat[mocap]]
        )

    def success(self, model: mujoco.MjModel, data: mujoco.MjData) -> bool:
        return threaded(model, data)

    def _place_along_axis(
        self, model: mujoco.MjModel, data: mujoco.MjData, tip_past: float, side: float, z: float
    ) -> None:
        centre, yaw = ring_pose(model, data)
        axis = np.array([np.cos(yaw), np.sin(yaw), 0.0])
        lateral = np.array([-np.sin(yaw), np.cos(yaw), 0.0])
        pos = centre + axis * (tip_past - 0.115) + lateral * side
        pos[2] = z
        set_free_pose(model, data, "needle", pos, yaw)

    def place_solved(self, model: mujoco.MjModel, data: mujoco.MjData) -> None:
        """Solved (tests): the shaft through the ring, its tip 4 cm past it, let go (the needle then
        tips over onto its handle, resting on the ring)."""
        self._place_along_axis(model, data, 0.04, 0.0, RING_HEIGHT + SHAFT_DROP)

    def place_near_miss(self, model: mujoco.MjModel, data: mujoco.MjData) -> None:
        """Not solved (tests): the needle lying on the table beside the tripod, parallel to the ring's
        axis with its tip 3 cm past the ring's plane, but outside the ring."""
        self._place_along_axis(model, data, 0.03, 0.07, HANDLE_HALF[2])


def _wrap(angle: float) -> float:
    return float((angle + np.pi) % (2 * np.pi) - np.pi)


def _insertion_pose(env: ManipulationEnv, tip_past: float, yaw_near: float) -> tuple[np.ndarray, float]:
    """TCP position and yaw that put the held needle's axis through the ring centre with its tip
    `tip_past` beyond the ring plane, from where the needle sits in the hand now."""
    m, d = env.model, env.data
    tcp, tcp_rot = env.tcp_pose()
    root, tip = needle_sites(m, d)
    # The needle's axis and tip in the TCP frame.
    axis_tcp = tcp_rot.T @ (tip - root) / np.linalg.norm(tip - root)
    tip_tcp = tcp_rot.T @ (tip - tcp)
    centre, ring_yaw = ring_pose(m, d)
    v = top_down_rotation(0.0) @ axis_tcp
    yaw = ring_yaw - np.arctan2(v[1], v[0])
    yaw += 2 * np.pi * np.round((yaw_near - yaw) / (2 * np.pi))
    rot = top_down_rotation(yaw)
    axis = rot @ axis_tcp
    normal = np.array([np.cos(ring_yaw), np.sin(ring_yaw), 0.0])
    tip_target = centre + axis * (tip_past / float(axis @ normal))
    return tip_target - rot @ tip_tcp, float(yaw)


def threading_plan(env: ManipulationEnv) -> Iterator[Waypoint]:
    """Grasp the handle top-down, lift, turn the needle to the ring's axis, line the shaft up with
    the ring in front of it, push it through."""
    m, d = env.model, env.data
    needle = free_pose(m, d, "needle")
    _, ring_yaw = ring_pose(m, d)
    tip_yaw = yaw_of(needle[3:])
    turn = _wrap(ring_yaw - tip_yaw)
    # Grasp yaw: across the handle (either way round), so that it and the yaw after the turn stay
    # well inside what the wrist reaches.
    mid = 0.5 * (YAW_RANGE[0] + YAW_RANGE[1])
    options = [tip_yaw + k * np.pi for k in range(-3, 4)]
    yaw = min(options, key=lambda a: max(abs(a - mid), abs(a + turn - mid)))
    grasp = offset(needle, dz=HANDLE_HALF[2] - GRASP_DEPTH)
    yield Waypoint(offset(grasp, dz=0.08), yaw, OPEN, tol=0.01)
    yield Waypoint(grasp, yaw, OPEN, speed=0.15, settle=2)
    yield Waypoint(grasp, yaw, CLOSED, settle=6)
    yield Waypoint(offset(grasp, dz=SAFE_Z - grasp[2]), yaw, CLOSED, speed=0.2, tol=0.01)
    yield from insert_held_needle(env, yaw, yaw + turn)


def insert_held_needle(env: ManipulationEnv, yaw: float, yaw_near: float) -> Iterator[Waypoint]:
    """With the needle held at a safe height and the wrist at `yaw`: turn and carry it (wrist near
    `yaw_near`) to above the pre-insertion pose, line the shaft up with the ring in front of it, push
    it through. Each move re-reads where the needle sits in the hand."""
    pre, pre_yaw = _insertion_pose(env, -PRE_INSERT, yaw_near)
    settle = int(np.ceil(abs(pre_yaw - yaw) / 0.1))  # the expert turns the wrist 0.1 rad a step
    yield Waypoint(offset(pre, dz=SAFE_Z - pre[2]), pre_yaw, CLOSED, tol=0.01, settle=settle)
    pre, pre_yaw = _insertion_pose(env, -PRE_INSERT, pre_yaw)
    yield Waypoint(offset(pre, dz=SAFE_Z - pre[2]), pre_yaw, CLOSED, tol=0.004, settle=2)
    pre, pre_yaw = _insertion_pose(env, -PRE_INSERT, pre_yaw)
    yield Waypoint(pre, pre_yaw, CLOSED, speed=0.12, tol=0.003, settle=3)
    end, end_yaw = _insertion_pose(env, INSERT, pre_yaw)
    yield Waypoint(end, end_yaw, CLOSED, speed=0.05, tol=0.003, settle=5)


HELD_LIFT = 0.008  # m: the handle's centre this far above lying flat, next to a closed hand, is held
HELD_REACH = 0.03  # m: from the TCP to the handle's centre within which the needle can be held
FLAT_COS = np.cos(np.radians(10.0))  # a needle lying flat: its z axis within 10 degrees of vertical
RING_ZONE = 0.05  # m: a tip this close to the ring's axis and past the pre-insertion plane is in it


def needle_held(env: ManipulationEnv) -> bool:
    """Whether the needle hangs in the gripper: lifted, its handle at the TCP, fingers not wide open."""
    tcp, _ = env.tcp_pose()
    handle = free_pose(env.model, env.data, "needle")[:3]
    lifted = handle[2] > HANDLE_HALF[2] + HELD_LIFT
    return bool(lifted and np.linalg.norm(handle - tcp) < HELD_REACH and env.finger_opening() < 0.9 * OPEN)


def _wrist_yaw(env: ManipulationEnv) -> float:
    """The TCP's yaw, on the branch the expert's yaws use (inside YAW_RANGE where it can be)."""
    yaw = env.tcp_yaw()
    return yaw + 2 * np.pi if yaw < YAW_RANGE[0] else yaw


def threading_resume_plan(env: ManipulationEnv) -> Iterator[Waypoint]:
    """The expert's plan from wherever the episode stands: what an operator taking over mid-episode
    does (HG-DAgger). Holding the needle: draw it back out of the ring along the ring's axis if the
    tip is already at or in it, rise to the safe height, then turn, line up and push as from the
    reset. Not holding it: let go, rise clear, and start over from the needle where it lies. A needle
    not lying flat on the table (tipped onto the tripod, standing on its handle) is past what the
    expert can fix: the plan is then empty."""
    m, d = env.model, env.data
    tcp, _ = env.tcp_pose()
    yaw = _wrist_yaw(env)
    if needle_held(env):
        # The wrist's turn to the ring, taken the way round that stays inside what it reaches.
        _, target = _insertion_pose(env, -PRE_INSERT, yaw)
        target -= 2 * np.pi * (target > YAW_RANGE[1]) - 2 * np.pi * (target < YAW_RANGE[0])
        centre, ring_yaw = ring_pose(m, d)
        _, tip = needle_sites(m, d)
        tip_ring = to_ring(centre, ring_yaw, tip)
        if tip_ring[0] > -PRE_INSERT and np.hypot(tip_ring[1], tip_ring[2]) < RING_ZONE:
            normal = np.array([np.cos(ring_yaw), np.sin(ring_yaw), 0.0])
            back = tcp - normal * (tip_ring[0] + PRE_INSERT)
            yield Waypoint(back, yaw, CLOSED, speed=0.05, tol=0.004, settle=2)
            tcp = back
        yield Waypoint(offset(tcp, dz=max(0.0, SAFE_Z - tcp[2])), yaw, CLOSED, speed=0.2, tol=0.01)
        yield from insert_held_needle(env, yaw, target)
        return
    yield Waypoint(tcp, yaw, OPEN, settle=4)
    yield Waypoint(offset(tcp, dz=max(0.0, SAFE_Z - tcp[2])), yaw, OPEN, speed=0.25, tol=0.015)
    needle = free_pose(m, d, "needle")
    flat = d.xmat[m.body("needle").id][8] > FLAT_COS
    if not flat or abs(needle[2] - HANDLE_HALF[2]) > 0.005:
        return
    yield from threading_plan(env)


TASK = ThreadingTask
PLAN = threading_plan
RESUME_PLAN = threading_resume_plan
