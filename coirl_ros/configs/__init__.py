"""Typed configuration: YAML under config/ loaded into frozen, validated models."""

from coirl_ros.configs.learner import LearnerConfig
from coirl_ros.configs.loading import ConfigError, ConfigModel, config_from_dict, config_hash, load_config
from coirl_ros.configs.policy import PolicyConfig
from coirl_ros.configs.robot import CameraConfig, RobotConfig
from coirl_ros.configs.task import TaskConfig

__all__ = [
    "CameraConfig",
    "ConfigError",
    "ConfigModel",
    "LearnerConfig",
    "PolicyConfig",
    "RobotConfig",
    "TaskConfig",
    "config_from_dict",
    "config_hash",
    "load_config",
]
