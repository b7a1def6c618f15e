"""Differential inverse kinematics for the arm's tool-centre point (damped least squares)."""

from __future__ import annotations

import mujoco
import numpy as np

HOME_QPOS = np.array([0.0, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785])
# TCP pointing straight down with the fingers closing along world y (the home orientation).
DOWN = np.array([[1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, -1.0]])


def top_down_rotation(yaw: float) -> np.ndarray:
    """Gripper pointing down, rotated by `yaw` about the world z axis."""
    c, s = np.cos(yaw), np.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]) @ DOWN


def rotation_error(target: np.ndarray, current: np.ndarray) -> np.ndarray:
    """Axis-angle vector (world frame) rotating `current` onto `target`."""
    quat = np.empty(4)
    mujoco.mju_mat2Quat(quat, (target @ current.T).ravel())
    vel = np.empty(3)
    mujoco.mju_quat2Vel(vel, quat, 1.0)
    return vel


class ArmIK:
    """Joint positions that put the TCP at a target pose, from a given seed configuration.

    Uses a private MjData so solving never disturbs the simulation. A null-space pull toward the
    home posture keeps the 7-DoF arm away from joint limits and elbow flips between solves.
    """

    def __init__(self, model: mujoco.MjModel, site: str = "tcp", arm_dofs: int = 7) -> None:
        self.model = model
        self.data = mujoco.MjData(model)
        self.site_id = model.site(site).id
        self.n = arm_dofs
        self.lower = model.jnt_range[:arm_dofs, 0].copy()
        self.upper = model.jnt_range[:arm_dofs, 1].copy()
        self._jacp = np.zeros((3, model.nv))
        self._jacr = np.zeros((3, model.nv))

    def tcp_pose(self, qpos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.data.qpos[: self.n] = qpos
        mujoco.mj_kinematics(self.model, self.data)
        return self.data.site_xpos[self.site_id].copy(), self.data.site_xmat[self.site_id].reshape(
            3, 3
        ).copy()

    def solve(
        self,
        q_seed: np.ndarray,
        pos: np.ndarray,
        rot: np.ndarray,
        iterations: int = 8,
        damping: float = 0.05,
        nullspace_gain: float = 0.1,
    ) -> np.ndarray:
        """Joint positions reaching (pos, rot), starting from q_seed; clipped to the joint limits."""
        q = np.array(q_seed, dtype=float)
        for _ in range(iterations):
            cur_pos, cur_rot = self.tcp_pose(q)
            err = np.concatenate([pos - cur_pos, rotation_error(rot, cur_rot)])
            if np.linalg.norm(err[:3]) < 1e-4 and np.linalg.norm(err[3:]) < 1e-3:
                break
            mujoco.mj_comPos(self.model, self.data)
            mujoco.mj_jacSite(self.model, self.data, self._jacp, self._jacr, self.site_id)
            jac = np.vstack([self._jacp[:, : self.n], self._jacr[:, : self.n]])
            jjt = jac @ jac.T + damping**2 * np.eye(6)
            dq = jac.T @ np.linalg.solve(jjt, err)
            null = np.eye(self.n) - jac.T @ np.linalg.solve(jjt, jac)
            dq += null @ (nullspace_gain * (HOME_QPOS - q))
            q = np.clip(q + dq, self.lower, self.upper)
        return q
