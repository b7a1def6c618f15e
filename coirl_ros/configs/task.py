"""A manipulation task: what the policy is told and how long an episode may run."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from coirl_ros.configs.loading import ConfigModel


class TaskConfig(ConfigModel):
    """Task name (the episode store's `task` attribute), language instruction, episode horizon."""

    name: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$")]
    instruction: Annotated[str, Field(min_length=1)]
    max_episode_steps: Annotated[int, Field(gt=0)] = 400
