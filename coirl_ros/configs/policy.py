"""The acting policy: a frozen chunked base (pi0.5 or a local BC base) plus a per-step residual."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from coirl_ros.configs.loading import ConfigModel


class BasePolicyConfig(ConfigModel):
    """Frozen base policy that emits action chunks, re-queried every `requery_every` control steps."""

    type: Literal["local_bc", "pi05"] = "local_bc"
    checkpoint: str = ""  # local directory (or hub id where a hub is reachable)
    chunk_size: Annotated[int, Field(gt=0)] = 10
    requery_every: Annotated[int, Field(gt=0)] = 10
    device: Literal["auto", "cpu", "cuda"] = "auto"

    @model_validator(mode="after")
    def _requery_within_chunk(self) -> BasePolicyConfig:
        if self.requery_every > self.chunk_size:
            raise ValueError(
                f"requery_every ({self.requery_every}) must be <= chunk_size ({self.chunk_size}):"
                " the loop would run out of base actions"
            )
        return self


class ResidualConfig(ConfigModel):
    """How the small per-step policy combines with the base action (DESIGN.md 2.5)."""

    composition: Literal["residual", "ensemble"] = "residual"
    # residual = scale * tanh(.), in normalised units. The network is the learner's BC policy
    # architecture (learner.yaml `bc:`): the actor starts as a copy of pi_BC.
    scale: Annotated[float, Field(gt=0, le=1)] = 0.1


# The normalised action space the base, the residual, the learner and the episode store share.
# ee_delta: 7 numbers in [-1, 1] (TCP translation, axis-angle rotation, gripper -1 open .. +1 closed),
# turned into joint targets by IK on the robot side (coirl_ros/sim/env.py documents the scaling);
# joint: one number per joint plus the gripper, the robot's joint limits mapped onto [-1, 1].
ActionSpace = Literal["ee_delta", "joint"]
EE_DELTA_DIM = 7


class PolicyConfig(ConfigModel):
    """Base + residual; `residual: null` runs the base alone (the 'base only' baseline)."""

    action_space: ActionSpace = "ee_delta"
    base: BasePolicyConfig = BasePolicyConfig()
    residual: ResidualConfig | None = ResidualConfig()
