"""Teleoperation: which device drives the demonstrations and how its inputs map onto ee_delta actions."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from coirl_ros.configs.loading import ConfigModel
from coirl_ros.configs.robot import TopicName

Fraction = Annotated[float, Field(ge=0, le=1)]
AxisIndex = Annotated[int, Field(ge=-1)]


class JoyConfig(ConfigModel):
    """sensor_msgs/Joy: a gamepad through `joy`, a SpaceMouse through `spacenav` (/spacenav/joy).

    `axes[i]` is the Joy axis driving action dimension i of (x, y, z, roll, pitch, yaw), -1 for none;
    `scale[i]` multiplies it (a negative scale flips the direction). The defaults fit spacenav, whose
    six axes are already in that order.
    """

    topic: TopicName = "/joy"
    axes: Annotated[list[AxisIndex], Field(min_length=6, max_length=6)] = [0, 1, 2, 3, 4, 5]
    scale: Annotated[list[float], Field(min_length=6, max_length=6)] = [1.0, 1.0, 1.0, 1.0, 1.0, 1.0]
    deadzone: Annotated[float, Field(ge=0, lt=1)] = 0.1
    close_button: Annotated[int, Field(ge=-1)] = 0  # -1: none
    open_button: Annotated[int, Field(ge=-1)] = 1
    timeout_s: Annotated[float, Field(gt=0)] = 0.5  # older Joy input: no motion (a dropped device stops)

    @model_validator(mode="after")
    def _distinct_buttons(self) -> JoyConfig:
        if self.close_button >= 0 and self.close_button == self.open_button:
            raise ValueError(f"close_button and open_button must differ, both are {self.close_button}")
        return self


class KeyboardConfig(ConfigModel):
    """Terminal keys (see coirl_ros/control/teleop.py KEY_BINDINGS)."""

    speed: Fraction = 0.5  # share of a full-scale action while a key is held
    key_hold_s: Annotated[float, Field(gt=0, le=2)] = 0.15  # a press moves this long (auto-repeat extends it)


class ScriptedConfig(ConfigModel):
    """The task's scripted expert as a teleop source (sim only): follows /sim/state in a mirror env."""

    task: str = ""  # "" = task.yaml's name
    noise: Annotated[float, Field(ge=0)] = 0.002  # m, carrot noise: varied demos (as `coirl demos`)
    seed: int = 0


class TeleopConfig(ConfigModel):
    """Which device drives and its settings."""

    source: Literal["joy", "keyboard", "scripted"] = "joy"
    joy: JoyConfig = JoyConfig()
    keyboard: KeyboardConfig = KeyboardConfig()
    scripted: ScriptedConfig = ScriptedConfig()
