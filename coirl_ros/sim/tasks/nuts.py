"""Nuts on pegs, shared by the `square` and `nut_assembly` tasks: geometry, pegs, success, expert moves.

The scenes (sim/square.xml, sim/nut_assembly.xml) build the nuts from boxes: a flat ring 1.6 cm
thick with a 2.9 cm hole (a square, or a 12-gon with that inscribed diameter for the round nut)
and a 2 cm wide handle sticking out along the nut's +x axis, which the gripper grasps. Pegs are
10 cm tall, 2.4 cm square or 2.4 cm across: 2.5 mm clearance per side. Pegs are mocap bodies (no
joint; physics never moves them), so their pose is randomised in `data.mocap_pos`/`mocap_quat`.
The nut's body frame sits at the centre of its hole, so its free-joint position is the hole centre.
"""

from __future__ import annotations

from collections.abc import Iterator

import mujoco
import numpy as np

from coirl_ros.sim.env import ManipulationEnv
from coirl_ros.sim.expert import CLOSED, OPEN, Waypoint, grasp_yaw, offset
from coirl_ros.sim.task import free_pose, set_fixture_pose, yaw_of

PEG_HEIGHT = 0.10
NUT_HALF_HEIGHT = 0.008  # the nut rests with its centre at this height
HANDLE_X = 0.047  # handle centre (the grasp point) along the nut's x axis from the hole centre
# Success: the nut's centre within CENTRE_TOL (xy) of the peg axis and below SEATED_Z, i.e. the nut
# has gone down the peg to within 12 mm of the table (it rests at 8 mm), and no finger touches it.
CENTRE_TOL = 0.006
SEATED_Z = 0.02

GRASP_Z = 0.013  # TCP height that grasps a nut lying on the table (fingertips 5 mm above it)
RELEASE_Z = 0.003  # the nut's bottom above the table when the fingers open (held all the way down)
ENTRY_DEPTH = 0.015  # how far down the peg the nut goes at ENTRY_SPEED before the faster descent
ENTRY_TRIES = 3
ENTRY_SPEED = 0.03  # m/s while the hole slides onto the peg top: a noisy wrist catches its edge less
CARRY_CLEARANCE = 0.03  # nut bottom above the peg tops while carrying
MAX_WRIST_YAW = 2.0  # |gripper yaw| the plan stays within (joint 7 range, with margin)
GRIPPER_BODIES = ("panda_hand", "panda_leftfinger", "panda_rightfinger")


def rot2(yaw: float) -> np.ndarray:
    c, s = np.cos(yaw), np.sin(yaw)
    return np.array([[c, -s], [s, c]])


def wrap(angle: float) -> float:
    return float((angle + np.pi) % (2 * np.pi) - np.pi)


def check_handle(model: mujoco.MjModel, geom: str) -> None:
    """The scene's handle must be where the plans grasp it (catches an XML edited on its own)."""
    pos = model.geom(geom).pos
    if not np.allclose(pos, [HANDLE_X, 0.0, 0.0]):
        raise ValueError(f"{geom} at {pos}, nuts.py expects ({HANDLE_X}, 0, 0)")


# ---- pegs ----------------------------------------------------------------------------------------
def set_peg(model: mujoco.MjModel, data: mujoco.MjData, body: str, xy, yaw: float = 0.0) -> None:
    set_fixture_pose(model, data, body, xy[0], xy[1], yaw)


def peg_pose(model: mujoco.MjModel, data: mujoco.MjData, body: str) -> tuple[np.ndarray, float]:
    """Peg axis (xy) and yaw."""
    mocap = model.body(body).mocapid[0]
    return data.mocap_pos[mocap][:2].copy(), yaw_of(data.mocap_quat[mocap])


def peg_state(model: mujoco.MjModel, data: mujoco.MjData, body: str) -> np.ndarray:
    """Peg position (3) and quaternion (4, wxyz), for object_state."""
    mocap = model.body(body).mocapid[0]
    return np.concatenate([data.mocap_pos[mocap], data.mocap_quat[mocap]])


# ---- success -------------------------------------------------------------------------------------
def gripper_touches(model: mujoco.MjModel, data: mujoco.MjData, body: str) -> bool:
    """Whether any geom of `body` is in contact with the hand or a finger."""
    bodies = model.geom_bodyid[data.contact.geom[: data.ncon]]  # (ncon, 2)
    grippers = [model.body(name).id for name in GRIPPER_BODIES]
    target = model.body(body).id
    pairs = ((bodies[:, 0] == target) & np.isin(bodies[:, 1], grippers)) | (
        (bodies[:, 1] == target) & np.isin(bodies[:, 0], grippers)
    )
    return bool(pairs.any())


def nut_on_peg(model: mujoco.MjModel, data: mujoco.MjData, nut: str, peg: str) -> bool:
    """The nut (free joint and body named `nut`) is down around the peg, released."""
    pose = free_pose(model, data, nut)
    axis, _ = peg_pose(model, data, peg)
    centred = np.linalg.norm(pose[:2] - axis) < CENTRE_TOL
    return bool(centred and pose[2] < SEATED_Z and not gripper_touches(model, data, nut))


# ---- placement -----------------------------------------------------------------------------------
def sample_clear_xy(
    rng: np.random.Generator, low, high, avoid: list[np.ndarray], min_dist: float, tries: int = 100
) -> np.ndarray:
    """A uniform xy in the box [low, high] at least `min_dist` from every point in `avoid`."""
    xy = rng.uniform(low, high)
    for _ in range(tries):
        if all(np.linalg.norm(xy - np.asarray(p)) >= min_dist for p in avoid):
            return xy
        xy = rng.uniform(low, high)
    return xy


# ---- expert --------------------------------------------------------------------------------------
def _turn_steps(env: ManipulationEnv, yaw: float) -> int:
    """Control steps the expert's wrist still needs to reach `yaw` (it turns 0.1 rad a step)."""
    return int(np.ceil(abs(yaw - env.tcp_yaw()) / 0.1)) + 2


def pick_nut(env: ManipulationEnv, nut: str) -> Iterator[Waypoint]:
    """Top-down grasp of the nut's handle, the fingers closing across it; lift above the pegs."""
    pose = free_pose(env.model, env.data, nut)
    nut_yaw = yaw_of(pose[3:])
    handle = pose[:2] + rot2(nut_yaw) @ [HANDLE_X, 0.0]
    # TCP x along the handle, either way round: the turn from the wrist's yaw now that stays in range.
    base, now = grasp_yaw(nut_yaw, np.pi), env.tcp_yaw()
    options = [y for y in (base - np.pi, base, base + np.pi) if abs(y) <= MAX_WRIST_YAW]
    yaw = min(options, key=lambda y: abs(y - now))
    grasp = np.array([handle[0], handle[1], GRASP_Z])
    above = offset(grasp, dz=0.09)
    yield Waypoint(above, yaw, OPEN, tol=0.01)
    # Wait for the wrist to finish turning before the open fingers go down beside the handle.
    yield Waypoint(above, yaw, OPEN, tol=0.01, settle=_turn_steps(env, yaw), max_steps=40)
    yield Waypoint(grasp, yaw, OPEN, speed=0.15, tol=0.004, settle=2, max_steps=60)
    yield Waypoint(grasp, yaw, CLOSED, settle=6, max_steps=40)
    # Up until the nut's bottom (at the table now, GRASP_Z below the TCP) clears the pegs.
    yield Waypoint(offset(grasp, dz=PEG_HEIGHT + CARRY_CLEARANCE), yaw, CLOSED, tol=0.01, max_steps=60)


def _aligned(env: ManipulationEnv, nut: str, peg_xy: np.ndarray, nut_yaw: float | None):
    """TCP xy and yaw that put the held nut's centre on `peg_xy` with yaw `nut_yaw` (None: keep the
    wrist's yaw), from the nut's pose in the hand now; and the TCP height above the nut's bottom."""
    tcp, _ = env.tcp_pose()
    gyaw = env.tcp_yaw()
    pose = free_pose(env.model, env.data, nut)
    cur = yaw_of(pose[3:])
    in_nut = rot2(-cur) @ (tcp[:2] - pose[:2])  # the TCP in the nut's frame
    target_yaw = nut_yaw if nut_yaw is not None else cur
    new_gyaw = gyaw + wrap(target_yaw - cur)
    xy = peg_xy + rot2(target_yaw) @ in_nut
    above_bottom = tcp[2] - (pose[2] - NUT_HALF_HEIGHT)
    return xy, new_gyaw, above_bottom


def place_nut(env: ManipulationEnv, nut: str, peg: str, symmetry: float | None) -> Iterator[Waypoint]:
    """Carry the held nut above its peg, line its hole up (yaw modulo `symmetry`; None: any yaw),
    lower it down the peg to just above the table, let go and back off.

    The hole is re-aligned from the nut's measured pose before it meets the peg, so a grasp that
    slipped or a wrist that lags still threads it.
    """
    peg_xy, peg_yaw = peg_pose(env.model, env.data, peg)
    nut_yaw = None
    if symmetry is not None:
        # Of the nut yaws that fit the peg, the one needing the smallest wrist turn within range.
        cur = yaw_of(free_pose(env.model, env.data, nut)[3:])
        gyaw = env.tcp_yaw()
        options = [peg_yaw + k * symmetry for k in range(-8, 9)]
        options = [y for y in options if abs(gyaw + wrap(y - cur)) <= MAX_WRIST_YAW] or options
        nut_yaw = min(options, key=lambda y: abs(wrap(y - cur)))
    xy, yaw, above = _aligned(env, nut, peg_xy, nut_yaw)
    carry = PEG_HEIGHT + CARRY_CLEARANCE + above
    yield Waypoint(np.array([xy[0], xy[1], carry]), yaw, CLOSED, tol=0.003, settle=3, max_steps=100)
    yield Waypoint(np.array([xy[0], xy[1], carry]), yaw, CLOSED, tol=0.003, settle=_turn_steps(env, yaw))
    for _ in range(ENTRY_TRIES):
        # Re-aligned from the measured nut pose just above the peg top, then onto the peg slowly, in
        # 3 mm steps, watching for the hole catching the peg's top edge (the nut then rides up
        # between the fingers and tilts): if it does, back off and try again from the new grip.
        xy, yaw, above = _aligned(env, nut, peg_xy, nut_yaw)
        engage = np.array([xy[0], xy[1], PEG_HEIGHT + 0.006 + above])
        yield Waypoint(engage, yaw, CLOSED, speed=0.1, tol=0.002, settle=3, max_steps=60)
        xy, yaw, above = _aligned(env, nut, peg_xy, nut_yaw)
        caught = False
        for depth in np.arange(0.003, -ENTRY_DEPTH - 1e-6, -0.003):
            step = np.array([xy[0], xy[1], PEG_HEIGHT + depth + above])
            yield Waypoint(step, yaw, CLOSED, speed=ENTRY_SPEED, tol=0.003, max_steps=20)
            caught = _aligned(env, nut, peg_xy, nut_yaw)[2] < above - 0.0015
            if caught:
                break
        if not caught:
            break
        yield Waypoint(offset(engage, dz=0.01), yaw, CLOSED, speed=0.1, tol=0.004, settle=5, max_steps=40)
    low = np.array([xy[0], xy[1], RELEASE_Z + above])
    yield Waypoint(low, yaw, CLOSED, speed=0.08, tol=0.004, settle=1, max_steps=80)
    yield Waypoint(low, yaw, OPEN, settle=4, max_steps=30)
    yield Waypoint(offset(low, dz=0.1), yaw, OPEN, speed=0.25, tol=0.01, max_steps=40)
