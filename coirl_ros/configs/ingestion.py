"""Sensor ingestion (camera_node, joint_node): retry policy, frame freshness, diagnostics."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, model_validator

from coirl_ros.configs.loading import ConfigModel

PositiveFloat = Annotated[float, Field(gt=0)]


class CameraIngestionConfig(ConfigModel):
    """What camera_node does when a device is missing or slow."""

    retry_initial_s: PositiveFloat = 0.5  # first wait after a failed open; doubles up to retry_max_s
    retry_max_s: PositiveFloat = 10.0
    frame_timeout_s: PositiveFloat = 2.0  # no frame for this long = device lost: close, reopen
    # Frames older than this when they could be published are dropped (0 = never by age).
    max_frame_age_s: Annotated[float, Field(ge=0)] = 0.5

    @model_validator(mode="after")
    def _ordered(self) -> CameraIngestionConfig:
        if self.retry_max_s < self.retry_initial_s:
            raise ValueError(
                f"retry_max_s ({self.retry_max_s}) must be >= retry_initial_s ({self.retry_initial_s})"
            )
        return self


class JointIngestionConfig(ConfigModel):
    """joint_node's inputs beyond the robot config."""

    # Where the gripper joint is published when not with the arm ("" = the robot's joint_states_topic).
    gripper_joint_states_topic: str = ""
    diagnostics_period_s: PositiveFloat = 1.0


class IngestionConfig(ConfigModel):
    """config/ingestion.yaml."""

    camera: CameraIngestionConfig = CameraIngestionConfig()
    joint: JointIngestionConfig = JointIngestionConfig()
