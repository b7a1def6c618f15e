"""Typed configuration: shipped files load, bad files fail with file, key and expectation named."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from coirl_ros.configs import (
    ConfigError,
    LearnerConfig,
    PolicyConfig,
    RobotConfig,
    TaskConfig,
    config_from_dict,
    config_hash,
    load_config,
)
from coirl_ros.paths import config_dir


def test_shipped_configs_load() -> None:
    robot = load_config(config_dir() / "robot.yaml", RobotConfig)
    assert robot.joint_names[0] == "panda_joint1" and len(robot.joints) == 7
    assert robot.state_dim == robot.action_dim == 8
    assert [c.name for c in robot.cameras] == ["front", "wrist"]
    assert load_config(config_dir() / "task.yaml", TaskConfig).name == "square"
    assert load_config(config_dir() / "policy.yaml", PolicyConfig).residual.composition == "residual"
    learner = load_config(config_dir() / "learner.yaml", LearnerConfig)
    assert learner.method == "csil" and learner.beta == 1.0


def write_robot(tmp_path: Path, mutate) -> Path:
    data = yaml.safe_load((config_dir() / "robot.yaml").read_text())
    mutate(data)
    path = tmp_path / "robot.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_wrong_type_names_file_key_and_value(tmp_path: Path) -> None:
    path = write_robot(tmp_path, lambda d: d["joints"][2].update(lower="abc"))
    with pytest.raises(ConfigError) as err:
        load_config(path, RobotConfig)
    msg = str(err.value)
    assert str(path) in msg and "joints[2].lower" in msg and "'abc'" in msg and "number" in msg


def test_unknown_key_lists_the_valid_ones(tmp_path: Path) -> None:
    path = write_robot(tmp_path, lambda d: d["gripper"].update(opne=0.04))
    with pytest.raises(ConfigError, match=r"gripper\.opne': unknown key; expected one of: closed, joint"):
        load_config(path, RobotConfig)


def test_inverted_joint_limits_are_rejected(tmp_path: Path) -> None:
    path = write_robot(tmp_path, lambda d: d["joints"][3].update(lower=1.0, upper=-1.0))
    with pytest.raises(ConfigError, match=r"joints\[3\].*lower \(1.0\) must be < upper \(-1.0\)"):
        load_config(path, RobotConfig)


def test_duplicate_joint_names_are_rejected(tmp_path: Path) -> None:
    path = write_robot(tmp_path, lambda d: d["joints"][1].update(name="panda_joint1"))
    with pytest.raises(ConfigError, match="repeated: \\['panda_joint1'\\]"):
        load_config(path, RobotConfig)


def test_missing_required_key(tmp_path: Path) -> None:
    path = write_robot(tmp_path, lambda d: d.pop("gripper"))
    with pytest.raises(ConfigError, match="key 'gripper': required key is missing"):
        load_config(path, RobotConfig)


def test_bad_choice_and_missing_file_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"method.*'csil', 'sparse', 'bc' or 'base'"):
        config_from_dict(LearnerConfig, {"method": "ppo"}, source="learner.yaml")
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml", TaskConfig)
    bad = tmp_path / "task.yaml"
    bad.write_text("name: lift\ninstruction: [unclosed\n")
    with pytest.raises(ConfigError, match=r"task.yaml: not valid YAML at line \d+"):
        load_config(bad, TaskConfig)
    bad.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(bad, TaskConfig)


def test_requery_cannot_exceed_chunk() -> None:
    with pytest.raises(ConfigError, match=r"requery_every \(20\) must be <= chunk_size \(10\)"):
        config_from_dict(PolicyConfig, {"base": {"chunk_size": 10, "requery_every": 20}})


def test_configs_are_frozen_and_hash_tracks_content() -> None:
    robot = load_config(config_dir() / "robot.yaml", RobotConfig)
    with pytest.raises(Exception, match="frozen"):
        robot.control_rate_hz = 50.0  # type: ignore[misc]
    same = load_config(config_dir() / "robot.yaml", RobotConfig)
    changed = robot.model_copy(update={"control_rate_hz": 50.0})
    assert config_hash(robot) == config_hash(same)
    assert config_hash(robot) != config_hash(changed)
