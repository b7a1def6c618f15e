"""The gymnasium environment: Panda + task scene, joint-position or end-effector-delta actions.

Action modes (one action per step at `control_hz`, default 20 Hz):

- ``joint`` (8) -- what a ros2_control forward position controller takes: 7 absolute joint
  position targets (rad) and the finger position target (m, 0 = closed, 0.04 = open).
- ``ee_delta`` (7) -- in [-1, 1]: TCP translation (x, y, z, times `max_ee_step` m), rotation
  (axis-angle, times `max_rot_step` rad) and the gripper (-1 open, +1 closed). Deltas move the
  *commanded* TCP pose, as a Cartesian motion generator does: applied to the measured pose they
  would be eaten by the position servo's lag. The commanded pose is kept within
  `max_ee_lead` of the measured one, so pushing against an obstacle cannot wind it up. It is
  converted to joint targets by differential IK, then limited exactly like the joint mode.

Both conversions live in the control core (`coirl_ros.control`), which the policy and teleop nodes use
on the robot: the sim runs the very same code on its commands.

Either way targets are clipped to the joint limits and rate-limited to the joint velocity limits
(config/robot.yaml values), so no action can drive the arm faster than the real robot allows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import gymnasium as gym
import mujoco
import numpy as np

from coirl_ros.control.action_space import EEDeltaActionSpace
from coirl_ros.control.limits import CommandLimiter
from coirl_ros.sim.kinematics import HOME_QPOS, ArmIK
from coirl_ros.sim.task import Task

ARM_DOFS = 7
FINGER_OPEN = 0.04
# Panda joint velocity limits (rad/s) and the gripper's (m/s), as in config/robot.yaml.
MAX_JOINT_VELOCITY = np.array([2.175, 2.175, 2.175, 2.175, 2.61, 2.61, 2.61, 0.2])
ActionMode = Literal["joint", "ee_delta"]


@dataclass(frozen=True)
class EnvConfig:
    """Environment settings; `image_size=None` renders no images (state-only, fastest)."""

    control_hz: float = 20.0
    action_mode: ActionMode = "joint"
    image_size: tuple[int, int] | None = None  # (height, width)
    cameras: tuple[str, ...] = ("front", "wrist")
    horizon: int | None = None  # None: the task's own
    max_ee_step: float = 0.02  # m per step at full action (0.4 m/s at 20 Hz)
    max_rot_step: float = 0.1  # rad per step at full action
    max_ee_lead: float = 0.05  # m the commanded TCP may lead the measured one

    def __post_init__(self) -> None:
        if self.action_mode not in ("joint", "ee_delta"):
            raise ValueError(f"action_mode must be 'joint' or 'ee_delta', got {self.action_mode!r}")
        if not 1.0 <= self.control_hz <= 500.0:
            raise ValueError(f"control_hz must be in [1, 500], got {self.control_hz}")
        if self.image_size is not None and min(self.image_size) <= 0:
            raise ValueError(f"image_size must be positive, got {self.image_size}")


class ManipulationEnv(gym.Env):
    """One task in the Panda work cell. `info["success"]` is the sparse signal."""

    metadata = {"render_modes": []}

    def __init__(self, task: Task, config: EnvConfig | None = None) -> None:
        self.task = task
        self.config = config or EnvConfig()
        self.model = mujoco.MjModel.from_xml_path(str(task.scene_path()))
        self.data = mujoco.MjData(self.model)
        self.task.bind(self.model)
        self.ik = ArmIK(self.model)
        physics_hz = 1.0 / self.model.opt.timestep
        self.n_substeps = round(physics_hz / self.config.control_hz)
        if self.n_substeps < 1 or abs(self.n_substeps * self.config.control_hz - physics_hz) > 1e-6:
            valid = [f"{physics_hz / k:g}" for k in (1, 2, 4, 5, 10, 20, 25, 50) if physics_hz / k <= 500]
            raise ValueError(
                f"control_hz={self.config.control_hz} does not divide the {physics_hz:g} Hz physics rate;"
                f" use one of {', '.join(valid)} (or any {physics_hz:g}/k)"
            )
        self.dt = self.n_substeps * self.model.opt.timestep
        # Task horizons are written at 20 Hz: keep the same time budget at any control rate.
        self.horizon = self.config.horizon or round(task.horizon * self.config.control_hz / 20.0)
        self._tcp = self.model.site("tcp").id
        self._finger = self.model.joint("panda_finger_joint1").qposadr[0]
        self.lower = np.append(self.model.jnt_range[:ARM_DOFS, 0], 0.0)
        self.upper = np.append(self.model.jnt_range[:ARM_DOFS, 1], FINGER_OPEN)
        self.limiter = CommandLimiter(self.lower, self.upper, MAX_JOINT_VELOCITY, self.dt)
        cfg = self.config
        # Holds the commanded TCP pose; the teleop node's scripted expert reads it through ee_target().
        self.ee_action = EEDeltaActionSpace(
            self.ik, cfg.max_ee_step, cfg.max_rot_step, cfg.max_ee_lead, FINGER_OPEN, 0.0
        )
        self._renderer: mujoco.Renderer | None = None
        if self.config.image_size is not None:
            h, w = self.config.image_size
            self.model.vis.global_.offheight = max(self.model.vis.global_.offheight, h)
            self.model.vis.global_.offwidth = max(self.model.vis.global_.offwidth, w)
            self._renderer = mujoco.Renderer(self.model, h, w)
        self.action_space = self._make_action_space()
        self.observation_space = self._make_observation_space()
        self._steps = 0

    # ---- spaces --------------------------------------------------------------------------------
    def _make_action_space(self) -> gym.spaces.Box:
        if self.config.action_mode == "joint":
            return gym.spaces.Box(self.lower.astype(np.float32), self.upper.astype(np.float32))
        return gym.spaces.Box(-1.0, 1.0, shape=(7,), dtype=np.float32)

    def _make_observation_space(self) -> gym.spaces.Dict:
        inf = np.inf
        n_obj = len(self.task.object_state(self.model, self.data))
        spaces: dict[str, gym.spaces.Space] = {
            "state": gym.spaces.Box(-inf, inf, (ARM_DOFS + 1,), np.float32),
            "joint_pos": gym.spaces.Box(-inf, inf, (ARM_DOFS,), np.float32),
            "joint_vel": gym.spaces.Box(-inf, inf, (ARM_DOFS,), np.float32),
            # Contacts and the joint-limit constraint let the fingers overshoot by fractions of a mm.
            "gripper": gym.spaces.Box(-0.002, FINGER_OPEN + 0.002, (1,), np.float32),
            "ee_pos": gym.spaces.Box(-inf, inf, (3,), np.float32),
            "ee_quat": gym.spaces.Box(-1.0, 1.0, (4,), np.float32),
            "object": gym.spaces.Box(-inf, inf, (n_obj,), np.float32),
        }
        if self.config.image_size is not None:
            for cam in self.config.cameras:
                spaces[cam] = gym.spaces.Box(0, 255, (*self.config.image_size, 3), np.uint8)
        return gym.spaces.Dict(spaces)

    # ---- gymnasium API -------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        mujoco.mj_resetData(self.model, self.data)
        self.data.qpos[:ARM_DOFS] = HOME_QPOS
        self.data.qpos[self._finger : self._finger + 2] = FINGER_OPEN
        self.data.ctrl[:ARM_DOFS] = HOME_QPOS
        self.data.ctrl[ARM_DOFS] = FINGER_OPEN
        self.task.reset(self.model, self.data, self.np_random)
        mujoco.mj_forward(self.model, self.data)
        # Let objects settle onto their supports before the first observation.
        for _ in range(int(0.2 / self.model.opt.timestep)):
            mujoco.mj_step(self.model, self.data)
        self._steps = 0
        self.ee_action.reset(tcp_pose=self.tcp_pose())
        return self._observation(), {"success": self.task.success(self.model, self.data)}

    def step(self, action: np.ndarray):
        action = np.asarray(action, dtype=float)
        if action.shape != self.action_space.shape:
            mode, want = self.config.action_mode, self.action_space.shape
            raise ValueError(f"{mode} action must have shape {want}, got {action.shape}")
        if not np.all(np.isfinite(action)):
            raise ValueError(f"action contains NaN or inf: {action}")
        if self.config.action_mode == "ee_delta":
            measured, _ = self.tcp_pose()
            target = self.ee_action.to_joint_targets(action, self.data.qpos[:ARM_DOFS], measured)
        else:
            target = action
        self.data.ctrl[: ARM_DOFS + 1] = self.limit_joint_targets(target)
        for _ in range(self.n_substeps):
            mujoco.mj_step(self.model, self.data)
        self._steps += 1
        success = self.task.success(self.model, self.data)
        truncated = self._steps >= self.horizon
        return self._observation(), float(success), success, truncated, {"success": success}

    def close(self) -> None:
        # Closing explicitly avoids EGL errors at interpreter exit.
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None

    # ---- actions -------------------------------------------------------------------------------
    def limit_joint_targets(self, target: np.ndarray) -> np.ndarray:
        """Clip to joint limits and to what the velocity limits allow since the last command."""
        return self.limiter.limit(target, self.data.ctrl[: ARM_DOFS + 1])

    def ee_target(self) -> tuple[np.ndarray, np.ndarray]:
        """The commanded TCP pose that ee_delta actions move (position, rotation matrix)."""
        return self.ee_action.commanded_pose()

    # ---- observations --------------------------------------------------------------------------
    def tcp_pose(self) -> tuple[np.ndarray, np.ndarray]:
        return self.data.site_xpos[self._tcp].copy(), self.data.site_xmat[self._tcp].reshape(3, 3).copy()

    def tcp_yaw(self) -> float:
        """The TCP's yaw about the world z axis (rad, in (-pi, pi])."""
        _, rot = self.tcp_pose()
        return float(np.arctan2(rot[1, 0], rot[0, 0]))

    def finger_opening(self) -> float:
        """How far one finger stands open (m): FINGER_OPEN wide open, 0 closed on nothing."""
        return float(self.data.qpos[self._finger])

    def _observation(self) -> dict[str, np.ndarray]:
        pos, rot = self.tcp_pose()
        quat = np.empty(4)
        mujoco.mju_mat2Quat(quat, rot.ravel())
        joint_pos = self.data.qpos[:ARM_DOFS]
        finger = self.data.qpos[self._finger : self._finger + 1]
        obs = {
            "state": np.concatenate([joint_pos, finger]).astype(np.float32),
            "joint_pos": joint_pos.astype(np.float32),
            "joint_vel": self.data.qvel[:ARM_DOFS].astype(np.float32),
            "gripper": finger.astype(np.float32),
            "ee_pos": pos.astype(np.float32),
            "ee_quat": quat.astype(np.float32),
            "object": self.task.object_state(self.model, self.data).astype(np.float32),
        }
        if self._renderer is not None:
            for cam in self.config.cameras:
                self._renderer.update_scene(self.data, camera=cam)
                obs[cam] = self._renderer.render()
        return obs
