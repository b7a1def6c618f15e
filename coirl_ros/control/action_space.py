"""Normalised actions in [-1, 1] to joint position targets: the one implementation sim and robot share.

Two action spaces (`PolicyConfig.action_space`), each mapping an action to n arm joint targets plus
the gripper's finger position target:

- ``ee_delta`` (7): TCP translation (x, y, z) times `max_ee_step` metres, axis-angle rotation times
  `max_rot_step` radians, gripper -1 open .. +1 closed. Deltas move the *commanded* TCP pose, as a
  Cartesian motion generator does: applied to the measured pose they would be eaten by the position
  servo's lag. The commanded pose is kept within `max_ee_lead` of the measured one, so pushing against
  an obstacle cannot wind it up, and it is re-anchored on the measured pose by `reset` (episode start,
  after a hold). Damped least-squares IK (`ArmIK`) from the measured joints gives the joint targets.
- ``joint`` (n + 1): -1 .. +1 spans each arm joint's limits (lower .. upper); the gripper is -1 open
  .. +1 closed, as in ee_delta.

Targets come out unlimited; `limits.CommandLimiter` clips them to position and velocity limits.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import mujoco
import numpy as np

from coirl_ros.configs.policy import EE_DELTA_DIM, ActionSpace
from coirl_ros.configs.robot import RobotConfig
from coirl_ros.paths import share_dir
from coirl_ros.sim.kinematics import ArmIK

__all__ = [
    "ActionMapper",
    "EEDeltaActionSpace",
    "JointActionSpace",
    "load_arm_ik",
    "make_action_space",
]


class ActionMapper(Protocol):
    """Turns one normalised action into joint position targets (arm joints + gripper)."""

    kind: ActionSpace
    dim: int  # length of a normalised action

    def reset(self, q_measured: np.ndarray) -> None:
        """Forget per-episode state and anchor on the measured joints (episode start, end of a hold)."""
        ...

    def to_joint_targets(self, action: np.ndarray, q_measured: np.ndarray) -> np.ndarray:
        """Unlimited joint targets [n + 1] for `action` given the measured arm joints [n] (or [n + 1])."""
        ...


def _check_action(action: np.ndarray, dim: int, kind: str) -> np.ndarray:
    a = np.asarray(action, dtype=float)
    if a.shape != (dim,):
        raise ValueError(f"{kind} action must have shape ({dim},), got {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{kind} action contains NaN or inf: {a}")
    return a


class EEDeltaActionSpace:
    """ee_delta actions to joint targets through IK; holds the commanded TCP pose between steps.

    `ik` is shared with its owner (the sim env passes its own, so sim and robot run identical code).
    """

    kind: ActionSpace = "ee_delta"
    dim = EE_DELTA_DIM

    def __init__(
        self,
        ik: ArmIK,
        max_ee_step: float,
        max_rot_step: float,
        max_ee_lead: float,
        gripper_open: float,
        gripper_closed: float,
    ) -> None:
        if min(max_ee_step, max_rot_step, max_ee_lead) <= 0:
            raise ValueError("max_ee_step, max_rot_step and max_ee_lead must be > 0")
        self.ik = ik
        self.max_ee_step, self.max_rot_step, self.max_ee_lead = max_ee_step, max_rot_step, max_ee_lead
        self.gripper_open, self.gripper_closed = gripper_open, gripper_closed
        self._span = gripper_open - gripper_closed
        self._target: tuple[np.ndarray, np.ndarray] | None = None

    @classmethod
    def from_robot_config(cls, robot: RobotConfig) -> EEDeltaActionSpace:
        """The robot side: IK on `robot.ee_delta.model`, scaling and gripper range from the config."""
        cfg = robot.ee_delta
        ik = load_arm_ik(robot)
        return cls(
            ik, cfg.max_ee_step, cfg.max_rot_step, cfg.max_ee_lead, robot.gripper.open, robot.gripper.closed
        )

    @property
    def arm_dofs(self) -> int:
        return self.ik.n

    def reset(
        self,
        q_measured: np.ndarray | None = None,
        tcp_pose: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> None:
        """Commanded TCP := the measured one, from `tcp_pose` if given (the sim's), else FK of the joints."""
        if tcp_pose is None:
            if q_measured is None:
                raise ValueError("reset needs the measured joints or the measured TCP pose")
            tcp_pose = self.ik.tcp_pose(np.asarray(q_measured, dtype=float)[: self.ik.n])
        self._target = (np.array(tcp_pose[0], dtype=float), np.array(tcp_pose[1], dtype=float))

    def commanded_pose(self) -> tuple[np.ndarray, np.ndarray]:
        """The commanded TCP pose that actions move (position, rotation matrix); copies."""
        if self._target is None:
            raise RuntimeError("no commanded TCP pose yet: call reset() with the measured state first")
        return self._target[0].copy(), self._target[1].copy()

    def to_joint_targets(
        self, action: np.ndarray, q_measured: np.ndarray, measured_tcp_pos: np.ndarray | None = None
    ) -> np.ndarray:
        """Joint targets [n + 1]; `measured_tcp_pos` defaults to FK of `q_measured`.

        Advances the commanded pose: call once per control step.
        """
        if self._target is None:
            raise RuntimeError("no commanded TCP pose yet: call reset() with the measured state first")
        a = np.clip(_check_action(action, self.dim, self.kind), -1.0, 1.0)
        q = np.asarray(q_measured, dtype=float)[: self.ik.n]
        pos, rot = self._target
        if measured_tcp_pos is None:
            measured_tcp_pos, _ = self.ik.tcp_pose(q)
        target_pos = pos + a[:3] * self.max_ee_step
        lead = target_pos - measured_tcp_pos
        if np.linalg.norm(lead) > self.max_ee_lead:
            target_pos = measured_tcp_pos + lead * (self.max_ee_lead / np.linalg.norm(lead))
        angle = np.linalg.norm(a[3:6]) * self.max_rot_step
        target_rot = rot
        if angle > 1e-9:
            quat = np.empty(4)
            mujoco.mju_axisAngle2Quat(quat, a[3:6] / np.linalg.norm(a[3:6]), angle)
            delta = np.empty(9)
            mujoco.mju_quat2Mat(delta, quat)
            target_rot = delta.reshape(3, 3) @ rot
        self._target = (target_pos, target_rot)
        joints = self.ik.solve(q, target_pos, target_rot)
        # closed + span * (1 - a) / 2: -1 -> open, +1 -> closed (bit-equal to the sim's historic formula).
        return np.append(joints, self.gripper_closed + self._span * (1.0 - a[6]) / 2.0)


class JointActionSpace:
    """Joint actions: -1..+1 spans each arm joint's [lower, upper]; gripper -1 open .. +1 closed."""

    kind: ActionSpace = "joint"

    def __init__(
        self, lower: np.ndarray, upper: np.ndarray, gripper_open: float, gripper_closed: float
    ) -> None:
        lower, upper = np.asarray(lower, dtype=float), np.asarray(upper, dtype=float)
        if lower.shape != upper.shape or lower.ndim != 1 or not np.all(lower < upper):
            raise ValueError(f"need 1-d joint limits with lower < upper, got {lower} and {upper}")
        if gripper_open == gripper_closed:
            raise ValueError("gripper open and closed positions must differ")
        # Value at action -1 and at +1, per dimension (the gripper runs open -> closed).
        self._at_minus = np.append(lower, gripper_open)
        self._at_plus = np.append(upper, gripper_closed)
        self.dim = len(self._at_minus)

    @classmethod
    def from_robot_config(cls, robot: RobotConfig) -> JointActionSpace:
        return cls(
            np.array([j.lower for j in robot.joints]),
            np.array([j.upper for j in robot.joints]),
            robot.gripper.open,
            robot.gripper.closed,
        )

    def reset(self, q_measured: np.ndarray | None = None) -> None:
        """Stateless: absolute targets carry no per-episode state."""

    def to_joint_targets(self, action: np.ndarray, q_measured: np.ndarray | None = None) -> np.ndarray:
        a = np.clip(_check_action(action, self.dim, self.kind), -1.0, 1.0)
        return self._at_minus + (self._at_plus - self._at_minus) * (a + 1.0) / 2.0

    def from_joint_targets(self, targets: np.ndarray) -> np.ndarray:
        """The action in [-1, 1] that commands `targets` (clipped where a target lies outside the limits)."""
        t = np.asarray(targets, dtype=float)
        if t.shape != (self.dim,):
            raise ValueError(f"joint targets must have shape ({self.dim},), got {t.shape}")
        return np.clip(2.0 * (t - self._at_minus) / (self._at_plus - self._at_minus) - 1.0, -1.0, 1.0)


def load_arm_ik(robot: RobotConfig) -> ArmIK:
    """`ArmIK` on the robot's MJCF, after checking that its first joints are the configured arm joints."""
    cfg = robot.ee_delta
    path = Path(cfg.model)
    if not path.is_absolute():
        path = share_dir() / path
    if not path.is_file():
        raise FileNotFoundError(f"robot.yaml ee_delta.model: no MJCF file at {path}")
    model = mujoco.MjModel.from_xml_path(str(path))
    names = [model.joint(i).name for i in range(min(model.njnt, len(robot.joints)))]
    if names != robot.joint_names:
        raise ValueError(
            f"robot.yaml ee_delta.model {path}: first joints {names} are not the configured arm joints"
            f" {robot.joint_names} (in that order)"
        )
    try:
        model.site(cfg.tcp_site)
    except KeyError:
        raise ValueError(f"robot.yaml ee_delta.tcp_site: {path} has no site {cfg.tcp_site!r}") from None
    return ArmIK(model, site=cfg.tcp_site, arm_dofs=len(robot.joints))


def make_action_space(kind: ActionSpace, robot: RobotConfig) -> EEDeltaActionSpace | JointActionSpace:
    """The configured action space on the configured robot."""
    if kind == "ee_delta":
        return EEDeltaActionSpace.from_robot_config(robot)
    if kind == "joint":
        return JointActionSpace.from_robot_config(robot)
    raise ValueError(f"action_space must be 'ee_delta' or 'joint', got {kind!r}")
