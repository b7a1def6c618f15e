"""Robot description as the policy sees it: joints and limits, gripper, topics, cameras."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from coirl_ros.configs.loading import ConfigModel

PositiveFloat = Annotated[float, Field(gt=0)]
TopicName = Annotated[str, Field(pattern=r"^/?[A-Za-z_~{][A-Za-z0-9_/{}~]*$")]


class JointConfig(ConfigModel):
    """One arm joint: the name published in /joint_states and its position/velocity limits."""

    name: Annotated[str, Field(min_length=1)]
    lower: float
    upper: float
    max_velocity: PositiveFloat

    @model_validator(mode="after")
    def _lower_below_upper(self) -> JointConfig:
        if not self.lower < self.upper:
            raise ValueError(f"joint {self.name!r}: lower ({self.lower}) must be < upper ({self.upper})")
        return self


class GripperConfig(ConfigModel):
    """Parallel gripper driven by one joint; the policy's last action dimension."""

    joint: Annotated[str, Field(min_length=1)]
    open: float
    closed: float
    max_velocity: PositiveFloat

    @model_validator(mode="after")
    def _distinct_positions(self) -> GripperConfig:
        if self.open == self.closed:
            raise ValueError(f"gripper {self.joint!r}: open and closed positions must differ")
        return self


class CommandConfig(ConfigModel):
    """How commands reach ros2_control."""

    interface: Literal["forward_position", "joint_trajectory"] = "forward_position"
    topic: TopicName = "/forward_position_controller/commands"
    gripper_topic: TopicName = "/gripper_controller/commands"


class EEDeltaConfig(ConfigModel):
    """How `ee_delta` actions become joint targets on this robot (coirl_ros/control/action_space.py).

    A full-scale action moves the commanded TCP by `max_ee_step` / `max_rot_step` per control step;
    the commanded TCP stays within `max_ee_lead` of the measured one. The sim (`EnvConfig`) uses the
    same defaults: demonstrations, base, residual and robot must mean the same motion by an action.
    `model` is the MJCF the IK solves on, relative to the package share directory unless absolute;
    its first joints must be the arm joints of `joints`, in order (checked when the IK is built).
    """

    model: Annotated[str, Field(min_length=1)] = "sim/panda.xml"
    tcp_site: Annotated[str, Field(min_length=1)] = "tcp"
    max_ee_step: Annotated[float, Field(gt=0, le=0.2)] = 0.02  # m per step (0.4 m/s at 20 Hz)
    max_rot_step: Annotated[float, Field(gt=0, le=1.0)] = 0.1  # rad per step
    max_ee_lead: Annotated[float, Field(gt=0, le=0.5)] = 0.05  # m


class CameraConfig(ConfigModel):
    """One RGB camera: where frames come from, their size and rate, and the topic they go to."""

    name: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$")]
    source: Literal["realsense", "opencv", "sim"]
    width: Annotated[int, Field(gt=0, le=4096)]
    height: Annotated[int, Field(gt=0, le=4096)]
    fps: Annotated[float, Field(gt=0, le=240)] = 30.0
    device: str = ""  # RealSense serial number or V4L2 device path/index; empty = first found
    topic: TopicName | None = None  # default: /cameras/<name>/image_raw

    @property
    def image_topic(self) -> str:
        return self.topic or f"/cameras/{self.name}/image_raw"


class RobotConfig(ConfigModel):
    """Everything robot-specific; its hash is stored with each episode to catch mixed robots."""

    name: Annotated[str, Field(min_length=1)]
    joints: Annotated[list[JointConfig], Field(min_length=1)]
    gripper: GripperConfig
    joint_states_topic: TopicName = "/joint_states"
    command: CommandConfig = CommandConfig()
    control_rate_hz: Annotated[float, Field(gt=0, le=1000)] = 20.0
    state_timeout_s: PositiveFloat = 0.2
    cameras: list[CameraConfig] = []
    ee_delta: EEDeltaConfig = EEDeltaConfig()

    @model_validator(mode="after")
    def _unique_names(self) -> RobotConfig:
        names = [j.name for j in self.joints] + [self.gripper.joint]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"joint names must be unique, repeated: {dup}")
        cams = [c.name for c in self.cameras]
        dup = sorted({n for n in cams if cams.count(n) > 1})
        if dup:
            raise ValueError(f"camera names must be unique, repeated: {dup}")
        return self

    @property
    def joint_names(self) -> list[str]:
        return [j.name for j in self.joints]

    @property
    def state_dim(self) -> int:
        """Joint positions plus the gripper opening."""
        return len(self.joints) + 1

    @property
    def action_dim(self) -> int:
        """Joint position targets plus the gripper command."""
        return len(self.joints) + 1
