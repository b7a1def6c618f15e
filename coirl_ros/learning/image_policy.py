"""The residual policy on camera images: a frozen keypoint encoder in front of a `ResidualPolicy`.

In `observation: images` mode the policy input is

    x = [keypoints of every camera (2K each, in camera order), robot state, base action]

with no privileged object state: what a real robot has. The encoder (image_encoder.py, one conv net
per camera with spatial-softmax keypoints) is trained jointly with π_BC on the demonstrations and then
frozen; every other network (actor, reward, prior, critic) trains on the cached keypoints as on a flat
state (learner.py says why). `ImageResidualPolicy` is what acts and what is published: its state_dict
holds the encoder's weights, the observation normaliser and the HetStat weights, so the policy node
needs nothing but a snapshot to map raw camera frames + joint state + base action to u.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from coirl_ros.constants import OBS_STATE, image_key
from coirl_ros.learning.distributions import TanhNormal
from coirl_ros.learning.image_encoder import ObservationEncoder
from coirl_ros.learning.residual_policy import ResidualPolicy

__all__ = ["IMAGE_FEATURES", "ImageResidualPolicy", "make_image_encoder"]

# The derived per-frame array holding the frozen encoder's keypoints (TransitionSampler `derived=`).
# Not a store key: it exists only in the learner's memory, recomputed from the images on every load.
IMAGE_FEATURES = "observation.image_features"


def make_image_encoder(
    cameras: Mapping[str, tuple[int, int]] | Sequence[tuple[str, tuple[int, int]]],
    num_keypoints: int,
    conv_layers: Sequence[Sequence[int]],
    shift_pad: int = 4,
) -> ObservationEncoder:
    """The images-only encoder (`state_dim=0`: the state joins the input after it, unencoded)."""
    layers = tuple((int(c), int(k), int(s)) for c, k, s in conv_layers)
    return ObservationEncoder(
        cameras, state_dim=0, num_keypoints=num_keypoints, shift_pad=shift_pad, conv_layers=layers
    )


class ImageResidualPolicy(nn.Module):
    """π(u | images, state, a_base): frozen `ObservationEncoder` (images only) + `ResidualPolicy`.

    `policy.obs_dim` must be the encoder's keypoint dimension plus the state dimension. The encoder is
    always run in eval mode (no DrQ shift): once trained it is frozen, and acting must be deterministic.
    Both modules are held, not copied: the learner's encoder and actor train (or stay frozen) in place
    and this wrapper always acts with their current weights.
    """

    def __init__(self, encoder: ObservationEncoder, policy: ResidualPolicy) -> None:
        super().__init__()
        if encoder.state_dim != 0:
            raise ValueError("ImageResidualPolicy takes an images-only encoder (state_dim=0)")
        if policy.obs_dim <= encoder.out_dim:
            raise ValueError(
                f"policy obs_dim {policy.obs_dim} must be the encoder's {encoder.out_dim} keypoint"
                " numbers plus the robot state"
            )
        self.encoder, self.policy = encoder, policy
        self.state_dim = policy.obs_dim - encoder.out_dim
        self.encoder.eval()

    def train(self, mode: bool = True) -> ImageResidualPolicy:
        super().train(mode)
        self.encoder.eval()  # frozen: never augments
        return self

    @property
    def obs_keys(self) -> tuple[str, ...]:
        """The observation arrays it reads: every camera's images, then the robot state."""
        return (*(image_key(c) for c in self.encoder.camera_names), OBS_STATE)

    def policy_input(self, obs: Mapping[str, Any], base_action: Tensor | np.ndarray) -> Tensor:
        """x [B, input_dim] from `obs[image_key(cam)]` [B, H, W, 3] uint8 and `obs[OBS_STATE]` [B, S]."""
        if OBS_STATE not in obs:
            raise ValueError(f"missing {OBS_STATE!r}; the observation has keys {sorted(obs)}")
        device = self.policy.obs_mean.device
        state = torch.as_tensor(np.asarray(obs[OBS_STATE], np.float32), device=device)
        base = torch.as_tensor(np.asarray(base_action, np.float32), device=device)
        if state.ndim != 2 or state.shape[1] != self.state_dim:
            raise ValueError(f"{OBS_STATE!r}: expected [B, {self.state_dim}], got {tuple(state.shape)}")
        if base.shape != (state.shape[0], self.policy.action_dim):
            raise ValueError(
                f"base action: expected [{state.shape[0]}, {self.policy.action_dim}], got {tuple(base.shape)}"
            )
        return torch.cat([self.encoder(obs), state, base], dim=-1)

    def forward(self, obs: Mapping[str, Any], base_action: Tensor | np.ndarray) -> TanhNormal:
        return self.policy(self.policy_input(obs, base_action))

    @torch.no_grad()
    def act(
        self,
        obs: Mapping[str, np.ndarray],
        base_action: np.ndarray,
        deterministic: bool = True,
        temperature: float = 1.0,
    ) -> np.ndarray:
        """u [d] for one raw observation (images [H, W, 3] uint8 per camera, state [S]) and base action;
        `temperature` scales the exploration spread as in `ResidualPolicy.act`."""
        batch = {k: np.asarray(obs[k])[None] for k in self.obs_keys if k in obs}
        dist = self(batch, np.asarray(base_action, np.float32)[None])
        u = dist.mode() if deterministic else dist.sample(temperature)
        return u.squeeze(0).cpu().numpy()
