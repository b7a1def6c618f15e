"""The simulated robot behind the real robot's topics (sim_node): task, seeds, pacing."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from coirl_ros.configs.loading import ConfigModel


class SimConfig(ConfigModel):
    """How sim_node runs the MuJoCo task; the robot (joints, command topics, control rate,
    cameras with `source: sim`) comes from the robot config, the task name from task.yaml."""

    task: str = ""  # "" = task.yaml's name
    seed: Annotated[int, Field(ge=0)] = 0  # start-up scene; /sim/reset k uses seed + k
    # Free-running pace: 1.0 = real time, 2.0 = twice as fast, 0 = as fast as the CPU allows.
    real_time_factor: Annotated[float, Field(ge=0)] = 1.0
    # Lockstep: each control step waits for its command (arm, plus gripper once a gripper command
    # publisher exists); after `lockstep_timeout_s` without one it steps on the last command.
    lockstep: bool = False
    lockstep_timeout_s: Annotated[float, Field(gt=0)] = 1.0
    publish_environment_state: bool = True  # privileged object state on /coirl/environment_state
