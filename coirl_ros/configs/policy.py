"""The acting policy: a frozen chunked base (pi0.5 or a local BC base) plus a per-step residual."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from coirl_ros.configs.loading import ConfigModel


class Pi05Options(ConfigModel):
    """What pi0.5 needs beyond a checkpoint (coirl_ros/policies/pi05_base.py; README "π0.5 base policy")."""

    # "" = <checkpoint>/tokenizer/ if present, else the name the checkpoint's preprocessor records
    # (google/paligemma-3b-pt-224), from the local Hugging Face cache. Never downloaded.
    tokenizer: str = ""
    # auto: bfloat16 on CUDA (half the memory, what pi0.5 is served in), float32 on CPU.
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"
    # Normalisation statistics: the checkpoint's own (a pi0.5 fine-tuned with LeRobot carries them),
    # or computed from the demonstrations in `stats_store` (e.g. for lerobot/pi05_base, which has none).
    stats: Literal["checkpoint", "store"] = "checkpoint"
    stats_store: str = ""
    # robot camera name -> the checkpoint's camera name (observation.images.<name>); unmapped robot
    # cameras keep their own name. Checkpoint cameras left without an image get pi0.5's masked blank.
    camera_map: dict[str, str] = {}
    # Flow-matching denoising steps per chunk; null = the checkpoint's (10). Fewer = faster, coarser.
    num_inference_steps: Annotated[int, Field(gt=0)] | None = None

    @model_validator(mode="after")
    def _store_given(self) -> Pi05Options:
        if self.stats == "store" and not self.stats_store:
            raise ValueError("stats: store needs stats_store (the episode store of the demonstrations)")
        return self


class BasePolicyConfig(ConfigModel):
    """Frozen base policy that emits action chunks, re-queried every `requery_every` control steps."""

    type: Literal["local_bc", "pi05"] = "local_bc"
    checkpoint: str = ""  # local directory, or a hub id already in the local Hugging Face cache
    chunk_size: Annotated[int, Field(gt=0)] = 10
    requery_every: Annotated[int, Field(gt=0)] = 10
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # Asynchronous chunking (coirl_ros/policies/async_chunker.py): the next chunk is requested this
    # many control steps earlier than the measured inference latency alone would require.
    latency_margin_steps: Annotated[int, Field(ge=0)] = 1
    pi05: Pi05Options = Pi05Options()

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
