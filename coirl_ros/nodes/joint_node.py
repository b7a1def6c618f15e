"""joint_node: the robot's /joint_states -> the policy's state on /coirl/state, checked.

Subscribes the robot config's `joint_states_topic` (and, if the gripper is published elsewhere,
`gripper_joint_states_topic`), picks the configured arm joints and the gripper joint by name (any
order, extra joints ignored) and publishes sensor_msgs/JointState in config order with the source
stamp. Future-stamped, unstamped, backwards, duplicate, NaN or incomplete data is never passed on;
a state that arrives late (older than `state_timeout_s`) is passed on with its stamp and flagged
(coirl_ros/ingestion/joint_state_mapper.py says why). Either is logged (throttled) and published as
JSON on /coirl/joint/diagnostics, at every status change and every `diagnostics_period_s`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence

from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_msgs.msg import String

from coirl_ros.configs.ingestion import IngestionConfig
from coirl_ros.configs.robot import RobotConfig
from coirl_ros.ingestion.joint_state_mapper import (
    IngestionHealth,
    JointSample,
    JointStateMapper,
    RobotState,
    StateProblem,
)
from coirl_ros.nodes.interfaces import (
    COMMAND_QOS,
    JOINT_DIAGNOSTICS_TOPIC,
    JOINT_INPUT_QOS,
    STATE_QOS,
    STATE_TOPIC,
)
from coirl_ros.nodes.node_runtime import run_node, stamp_seconds
from coirl_ros.nodes.ros_params import declare_config_file, declare_overrides


class JointNode(Node):
    """See module docstring."""

    def __init__(self) -> None:
        super().__init__("joint_node")
        robot = declare_config_file(self, "robot_config", "robot.yaml", RobotConfig)
        robot = declare_overrides(self, robot, ["joint_states_topic", "state_timeout_s"])
        ingestion = declare_config_file(self, "ingestion_config", "ingestion.yaml", IngestionConfig)
        joint_cfg = declare_overrides(
            self, ingestion.joint, ["gripper_joint_states_topic", "diagnostics_period_s"]
        )
        self.mapper = JointStateMapper(robot.joint_names, robot.gripper.joint, robot.state_timeout_s)
        self.health = IngestionHealth(robot.state_timeout_s)
        self._warned_at: dict[str, float] = {}
        self.pub_state = self.create_publisher(JointState, STATE_TOPIC, STATE_QOS)
        self.pub_diag = self.create_publisher(String, JOINT_DIAGNOSTICS_TOPIC, COMMAND_QOS)
        # Best effort: matches reliable and best-effort drivers alike, and never waits on a slow link.
        self.create_subscription(JointState, robot.joint_states_topic, self._on_joint_state, JOINT_INPUT_QOS)
        gripper_topic = joint_cfg.gripper_joint_states_topic
        if gripper_topic and gripper_topic != robot.joint_states_topic:
            self.create_subscription(JointState, gripper_topic, self._on_joint_state, JOINT_INPUT_QOS)
        self.create_timer(min(0.05, robot.state_timeout_s / 2), self._watchdog)
        self.create_timer(joint_cfg.diagnostics_period_s, self._publish_diagnostics)
        self.get_logger().info(
            f"joints {list(self.mapper.names)} from {robot.joint_states_topic}"
            f"{' + ' + gripper_topic if gripper_topic else ''} -> {STATE_TOPIC},"
            f" timeout {robot.state_timeout_s} s"
        )

    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _on_joint_state(self, msg: JointState) -> None:
        sample = JointSample(stamp_seconds(msg.header.stamp), msg.name, msg.position, msg.velocity)
        result = self.mapper.update(sample, self._now())
        if result is None:
            return
        if isinstance(result, StateProblem):
            # Throttled per kind: a flood of stale states must not hide the one NaN.
            if time.monotonic() - self._warned_at.get(result.kind, -1e9) > 2.0:
                self._warned_at[result.kind] = time.monotonic()
                self.get_logger().warn(f"joint state rejected ({result.kind}): {result.reason}")
            if self.health.observe_problem(result):
                self._publish_diagnostics()
            return
        self._publish_state(result, msg)
        changed = self.health.observe_state(result)
        if self.health.status == "stale":
            self.get_logger().warn(f"late joint state: {self.health.reason}", throttle_duration_sec=2.0)
        if changed:
            self._publish_diagnostics()

    def _publish_state(self, state: RobotState, source: JointState) -> None:
        out = JointState()
        out.header = source.header  # the source stamp: when the robot was in this state
        out.name = list(state.names)
        out.position = state.positions.tolist()
        if state.velocities is not None:
            out.velocity = state.velocities.tolist()
        self.pub_state.publish(out)

    def _watchdog(self) -> None:
        if self.health.check_timeout(self._now()):
            self.get_logger().warn(f"joint states stale: {self.health.reason}", throttle_duration_sec=2.0)
            self._publish_diagnostics()

    def _publish_diagnostics(self) -> None:
        self.pub_diag.publish(String(data=json.dumps(self.health.report(self._now()))))


def main(args: Sequence[str] | None = None) -> None:
    raise SystemExit(run_node(JointNode, args))


if __name__ == "__main__":
    main()
