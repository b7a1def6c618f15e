"""Message conversions of the control nodes: state vectors by name, commands as robot.yaml says."""

from __future__ import annotations

import numpy as np
import pytest
from builtin_interfaces.msg import Time
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray
from trajectory_msgs.msg import JointTrajectory

from coirl_ros.configs import RobotConfig, load_config
from coirl_ros.nodes.control_messages import command_messages, state_vector, weights_message, weights_payload
from coirl_ros.paths import config_dir

ROBOT = load_config(config_dir() / "robot.yaml", RobotConfig)
NAMES = [*ROBOT.joint_names, ROBOT.gripper.joint]


def test_state_vector_follows_names_and_refuses_missing_joints() -> None:
    shuffled = list(reversed(NAMES))
    msg = JointState(name=shuffled, position=[float(i) for i in range(8)])
    np.testing.assert_array_equal(state_vector(msg, NAMES), np.arange(8.0)[::-1])
    np.testing.assert_array_equal(state_vector(JointState(position=list(range(8))), NAMES), np.arange(8.0))
    with pytest.raises(ValueError, match="lacks joints"):
        state_vector(JointState(name=NAMES[:7], position=[0.0] * 7), NAMES)
    with pytest.raises(ValueError, match="positions"):
        state_vector(JointState(position=[0.0] * 7), NAMES)


def test_commands_as_forward_position_or_joint_trajectory() -> None:
    command = np.linspace(-1, 1, 8)
    arm, gripper = command_messages(command, ROBOT, Time(sec=3), 0.05)
    assert isinstance(arm, Float64MultiArray) and list(arm.data) == pytest.approx(command[:7].tolist())
    assert list(gripper.data) == [pytest.approx(1.0)]
    robot = ROBOT.model_copy(
        update={"command": ROBOT.command.model_copy(update={"interface": "joint_trajectory"})}
    )
    arm, gripper = command_messages(command, robot, Time(sec=3), 0.05)
    assert isinstance(arm, JointTrajectory) and arm.joint_names == ROBOT.joint_names
    assert len(arm.points) == 1 and arm.points[0].time_from_start.nanosec == 50_000_000
    assert gripper.joint_names == [ROBOT.gripper.joint] and list(gripper.points[0].positions) == [1.0]


def test_weights_round_trip_through_the_message() -> None:
    payload = bytes(range(256)) * 3
    assert weights_payload(weights_message(payload)) == payload
