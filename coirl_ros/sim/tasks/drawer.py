"""The cabinet drawer of the cleanup tasks (`sim/drawer.xml`): geometry, state and expert motions.

The cabinet is a mocap body placed at reset (its front faces -y, toward the middle of the work
cell); the drawer is a child body on a slide joint (0 = closed .. 0.25 m = open). The drawer
frame has its origin at the inner face of the drawer front, on the table plane; the interior is
x in [-0.10, 0.10], y in [0, 0.22] above a bottom at z = 0.02. Everything here works in that
frame, so the tasks and experts need not know where the cabinet stands or which way it opens.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator

import mujoco
import numpy as np

from coirl_ros.sim.env import ManipulationEnv
from coirl_ros.sim.expert import CLOSED, OPEN, Waypoint, offset
from coirl_ros.sim.task import free_pose, set_fixture_pose

JOINT = "drawer"
BODY = "drawer"
CABINET = "cabinet"
# Where the cabinet's front centre stands (uniform): far enough left that the open drawer's handle
# stays clear of the objects' area (y < -0.1), near enough that the closed handle is in reach.
CABINET_X = (0.50, 0.60)
CABINET_Y = (0.29, 0.31)
INNER_HALF_X = 0.10  # interior half-width across the slide axis (m)
INNER_Y = (0.0, 0.22)  # interior extent along the slide axis, front to back (m)
BOTTOM_Z = 0.02  # top surface of the drawer bottom (m)
HANDLE = np.array([0.0, -0.062, 0.10])  # centre of the handle bar, drawer frame
CLOSED_TOL = 0.01  # m: the drawer counts as closed below this opening
OPEN_TARGET = 0.225  # m: how far the expert opens it (the whole interior clears the cabinet)
# Finger opening (per finger) while reaching around the handle bar: 1.2 cm clear of the 1.6 cm bar
# and 1.5 cm clear of the drawer front, where fully open fingers would hit the front.
HANDLE_OPEN = 0.02
CARRY_Z = 0.22  # TCP height for carrying objects over the drawer front (its top is at 0.125 m)


def place_cabinet(model: mujoco.MjModel, data: mujoco.MjData, rng: np.random.Generator) -> None:
    """Stand the cabinet at a random place (front facing -y) with the drawer closed."""
    set_fixture_pose(model, data, CABINET, rng.uniform(*CABINET_X), rng.uniform(*CABINET_Y))
    set_opening(model, data, 0.0)


def cabinet_position(model: mujoco.MjModel, data: mujoco.MjData) -> np.ndarray:
    """Where the cabinet's front centre stands on the table (3)."""
    return data.mocap_pos[model.body(CABINET).mocapid[0]].copy()


def opening(model: mujoco.MjModel, data: mujoco.MjData) -> float:
    """How far the drawer is open (m)."""
    return float(data.qpos[model.joint(JOINT).qposadr[0]])


def set_opening(model: mujoco.MjModel, data: mujoco.MjData, value: float) -> None:
    """Put the drawer at `value` m open, at rest."""
    jnt = model.joint(JOINT)
    data.qpos[jnt.qposadr[0]] = value
    data.qvel[jnt.dofadr[0]] = 0.0


def frame(model: mujoco.MjModel, data: mujoco.MjData) -> tuple[np.ndarray, np.ndarray]:
    """World position and rotation matrix of the drawer frame (needs kinematics to be current)."""
    body = model.body(BODY).id
    return data.xpos[body].copy(), data.xmat[body].reshape(3, 3).copy()


def to_world(model: mujoco.MjModel, data: mujoco.MjData, local) -> np.ndarray:
    pos, rot = frame(model, data)
    return pos + rot @ np.asarray(local, dtype=float)


def to_drawer(model: mujoco.MjModel, data: mujoco.MjData, world) -> np.ndarray:
    pos, rot = frame(model, data)
    return rot.T @ (np.asarray(world, dtype=float)[:3] - pos)


def inside_xy(local: np.ndarray) -> bool:
    """Whether a point given in the drawer frame lies over the drawer's interior."""
    return bool(abs(local[0]) <= INNER_HALF_X and INNER_Y[0] <= local[1] <= INNER_Y[1])


def interior_centre(model: mujoco.MjModel, data: mujoco.MjData, height: float) -> np.ndarray:
    """World point over the middle of the interior, `height` above the drawer bottom."""
    return to_world(model, data, [0.0, sum(INNER_Y) / 2, BOTTOM_Z + height])


def pull_direction(model: mujoco.MjModel, data: mujoco.MjData) -> np.ndarray:
    """Unit world vector along which the drawer opens."""
    _, rot = frame(model, data)
    return rot @ model.jnt_axis[model.joint(JOINT).id]


def handle_yaw(model: mujoco.MjModel, data: mujoco.MjData) -> float:
    """Gripper yaw that closes the fingers along the slide axis, around the handle bar.

    The fingers close along the TCP's y axis, which is (sin yaw, -cos yaw) in the world."""
    axis = pull_direction(model, data)
    yaw = float(np.arctan2(axis[0], -axis[1]))
    return float((yaw + np.pi / 2) % np.pi - np.pi / 2)


def place_yaw(model: mujoco.MjModel, data: mujoco.MjData, current: float) -> float:
    """Gripper yaw closing the fingers across the slide axis, so the long hand lies across the
    drawer (clear of the front and the cabinet); of the two choices, the nearer to `current`."""
    base = handle_yaw(model, data) + np.pi / 2
    choices = [base + k * np.pi for k in (-2, -1, 0, 1)]
    return float(min(choices, key=lambda y: abs(y - current)))


def task_state(model: mujoco.MjModel, data: mujoco.MjData, object_joint: str) -> np.ndarray:
    """A drawer task's privileged state: object pose (7), cabinet position (3), drawer opening (1)."""
    return np.concatenate(
        [free_pose(model, data, object_joint), cabinet_position(model, data), [opening(model, data)]]
    )


def grasp_handle(env: ManipulationEnv) -> Generator[Waypoint, None, float]:
    """Come down on the handle from above and close on it; returns the grasp yaw."""
    model, data = env.model, env.data
    yaw = handle_yaw(model, data)
    handle = to_world(model, data, HANDLE)
    yield Waypoint(offset(handle, dz=0.08), yaw, HANDLE_OPEN, speed=0.3, tol=0.01)
    yield Waypoint(offset(handle, dz=-0.002), yaw, HANDLE_OPEN, speed=0.15, settle=2)
    yield Waypoint(offset(handle, dz=-0.002), yaw, CLOSED, settle=6)
    return yaw


def open_drawer(env: ManipulationEnv, target: float = OPEN_TARGET) -> Iterator[Waypoint]:
    """Grasp the handle from above, pull the drawer open to `target`, let go and back off upward."""
    model, data = env.model, env.data
    yaw = yield from grasp_handle(env)
    # Pull from where the handle is now, by what is still missing.
    grip, _ = env.tcp_pose()
    goal = grip + pull_direction(model, data) * (target - opening(model, data))
    yield Waypoint(goal, yaw, CLOSED, speed=0.15, settle=3, max_steps=80)
    yield Waypoint(goal, yaw, HANDLE_OPEN, settle=5)
    yield Waypoint(offset(goal, dz=0.08), yaw, HANDLE_OPEN, speed=0.25, tol=0.015)


def close_drawer(env: ManipulationEnv) -> Iterator[Waypoint]:
    """Grasp the handle of the open drawer from above, push it shut, let go and back off upward."""
    model, data = env.model, env.data
    yaw = yield from grasp_handle(env)
    # Push 3 mm past closed: the joint's end stop takes the rest.
    grip, _ = env.tcp_pose()
    goal = grip - pull_direction(model, data) * (opening(model, data) + 0.003)
    yield Waypoint(goal, yaw, CLOSED, speed=0.15, settle=3, max_steps=80)
    yield Waypoint(goal, yaw, HANDLE_OPEN, settle=5)
    yield Waypoint(offset(goal, dz=0.08), yaw, HANDLE_OPEN, speed=0.25, tol=0.015)


def lowest_z(model: mujoco.MjModel, data: mujoco.MjData, body: str) -> float:
    """World height of the lowest point of a body's box and cylinder geoms (a cylinder counted as
    its bounding box: exact while it stands upright)."""
    lowest = np.inf
    corners = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], dtype=float)
    for geom in range(model.ngeom):
        if model.geom_bodyid[geom] != model.body(body).id or model.geom_contype[geom] == 0:
            continue
        size = model.geom_size[geom]
        if model.geom_type[geom] == mujoco.mjtGeom.mjGEOM_CYLINDER:
            size = np.array([size[0], size[0], size[1]])
        rot = data.geom_xmat[geom].reshape(3, 3)
        lowest = min(lowest, float(np.min(data.geom_xpos[geom][2] + corners @ (rot @ np.diag(size))[2])))
    return lowest


def put_in_drawer(
    env: ManipulationEnv, body: str, reference, yaw: float, carry_z: float = CARRY_Z, drop: float = 0.004
) -> Iterator[Waypoint]:
    """With `body` held in the closed gripper high over the table: carry it over the open drawer
    turning the hand to `yaw`, then lower it so that its `reference` point (body frame) comes down
    over the middle of the drawer and its lowest point `drop` above the drawer bottom, measuring
    where the object sits in the hand once the hand has turned; let go and back off upward."""
    model, data = env.model, env.data
    above = interior_centre(model, data, 0.0)
    above[2] = carry_z
    yield Waypoint(above, yaw, CLOSED, speed=0.25, tol=0.01, settle=8)
    tcp, _ = env.tcp_pose()
    obj = model.body(body).id
    point = data.xpos[obj] + data.xmat[obj].reshape(3, 3) @ np.asarray(reference, dtype=float)
    target = interior_centre(model, data, drop) + tcp - point
    target[2] = to_world(model, data, [0.0, 0.0, BOTTOM_Z + drop])[2] + tcp[2] - lowest_z(model, data, body)
    yield Waypoint(offset(target, dz=carry_z - target[2]), yaw, CLOSED, speed=0.15, settle=2)
    yield Waypoint(target, yaw, CLOSED, speed=0.15, settle=3)
    yield Waypoint(target, yaw, OPEN, settle=6)
    yield Waypoint(offset(target, dz=0.12), yaw, OPEN, speed=0.25, tol=0.015)
