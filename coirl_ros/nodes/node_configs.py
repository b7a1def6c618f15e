"""The configuration the policy, teleop and learner nodes share, from YAML files plus ROS parameters.

Each node reads the same robot/policy/task/learner files (`<kind>_config` parameters, default the
shipped ones), so the policy node expects exactly the residual the learner node publishes. A few fields
can be overridden per node with parameters named after the field (`policy.base.checkpoint`,
`learner.store`, ...); the result is validated by the same models as the files.
"""

from __future__ import annotations

from rclpy.node import Node

from coirl_ros.configs import LearnerConfig, PolicyConfig, RobotConfig, TaskConfig, config_from_dict
from coirl_ros.nodes.ros_params import declare_config_file, declare_overrides


def load_robot_policy_task(node: Node) -> tuple[RobotConfig, PolicyConfig, TaskConfig]:
    """robot/policy/task YAML files (`*_config` parameters) with per-field parameter overrides."""
    robot = declare_config_file(node, "robot_config", "robot.yaml", RobotConfig)
    robot = declare_overrides(node, robot, ["control_rate_hz", "state_timeout_s"], "robot.")
    policy = declare_config_file(node, "policy_config", "policy.yaml", PolicyConfig)
    policy = declare_overrides(node, policy, ["action_space"], "policy.")
    base_fields = ["type", "checkpoint", "chunk_size", "requery_every", "device", "latency_margin_steps"]
    base = declare_overrides(node, policy.base, base_fields, "policy.base.")
    residual = policy.residual
    if residual is not None:
        residual = declare_overrides(node, residual, ["composition", "scale"], "policy.residual.")
    policy = config_from_dict(
        PolicyConfig,
        policy.model_dump() | {"base": base.model_dump(), "residual": residual and residual.model_dump()},
        source=f"ROS parameters of {node.get_name()} (policy.*)",
    )
    task = declare_config_file(node, "task_config", "task.yaml", TaskConfig)
    return robot, policy, task


def load_node_configs(node: Node) -> tuple[RobotConfig, PolicyConfig, TaskConfig, LearnerConfig]:
    """The above plus learner.yaml: what the policy and learner nodes both read, so the policy node
    expects exactly the residual the learner node publishes."""
    robot, policy, task = load_robot_policy_task(node)
    learner = declare_config_file(node, "learner_config", "learner.yaml", LearnerConfig)
    learner = declare_overrides(node, learner, ["method", "store", "observation"], "learner.")
    return robot, policy, task, learner
