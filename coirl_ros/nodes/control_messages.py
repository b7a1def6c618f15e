"""Messages of the policy, teleop and learner nodes <-> the control core's arrays, in one place."""

from __future__ import annotations

import array
import json
from collections.abc import Sequence
from typing import Any

import numpy as np
from builtin_interfaces.msg import Duration, Time
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray, String, UInt8MultiArray
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from coirl_ros.configs.robot import RobotConfig


def state_vector(msg: JointState, names: Sequence[str]) -> np.ndarray:
    """Positions in `names` order (the policy's state vector). /coirl/state already comes in config
    order; names, when the message carries them, are checked and used, so a reordering cannot slip by.
    Raises ValueError when a joint is missing or the sizes disagree."""
    position = np.asarray(msg.position, dtype=np.float64)
    if not msg.name:
        if len(position) != len(names):
            raise ValueError(f"state has {len(position)} positions, expected {len(names)} ({list(names)})")
        return position
    if len(msg.name) != len(position):
        raise ValueError(f"state names ({len(msg.name)}) and positions ({len(position)}) differ in length")
    index = {name: i for i, name in enumerate(msg.name)}
    missing = [n for n in names if n not in index]
    if missing:
        raise ValueError(f"state lacks joints {missing}")
    return position[[index[n] for n in names]]


def command_messages(
    command: np.ndarray, robot: RobotConfig, stamp: Time, period_s: float
) -> tuple[Float64MultiArray | JointTrajectory, Float64MultiArray | JointTrajectory]:
    """(arm message, gripper message) for joint targets [arm..., gripper], as robot.yaml `command:` says:
    forward_position: Float64MultiArray each; joint_trajectory: one point reached one period from now."""
    n = len(robot.joints)
    arm, gripper = [float(v) for v in command[:n]], [float(command[n])]
    if robot.command.interface == "forward_position":
        return Float64MultiArray(data=arm), Float64MultiArray(data=gripper)
    when = Duration(sec=int(period_s), nanosec=round((period_s % 1.0) * 1e9))

    def trajectory(names: list[str], positions: list[float]) -> JointTrajectory:
        msg = JointTrajectory(joint_names=names)
        msg.header.stamp = stamp
        msg.points = [JointTrajectoryPoint(positions=positions, time_from_start=when)]
        return msg

    return trajectory(robot.joint_names, arm), trajectory([robot.gripper.joint], gripper)


def weights_message(data: bytes) -> UInt8MultiArray:
    """A `WeightSnapshot.to_bytes()` payload as the weights topic carries it."""
    return UInt8MultiArray(data=array.array("B", data))


def weights_payload(msg: UInt8MultiArray) -> bytes:
    return bytes(msg.data)


def json_message(payload: dict[str, Any]) -> String:
    """A JSON status/diagnostics message (NaN is not JSON: such values must be None already)."""
    return String(data=json.dumps(payload, allow_nan=False, default=_plain))


def parse_json(msg: String) -> dict[str, Any]:
    """A JSON object from a String message; ValueError if it is not one."""
    data = json.loads(msg.data)
    if not isinstance(data, dict):
        raise ValueError(f"expected a JSON object, got {type(data).__name__}")
    return data


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
