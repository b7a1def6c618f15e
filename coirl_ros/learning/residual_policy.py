"""The small per-step policy that acts on top of the frozen base: inputs, normalisation, acting.

It sees x = [robot state, object state (sim only), base action] (or, with camera images, [image
keypoints, robot state, base action]: image_policy.py) and outputs u in [-1, 1]^d, a
tanh-squashed HetStat distribution (hetstat.py). How u becomes the executed action is the
composition (policies/composition.py): residual a = clip(a_base + scale·u), ensemble a = ½(a_base + u).
So the learner works entirely in u-space, and `policy_action_from_executed` maps recorded
(executed, base) pairs - demonstrations included - back into it.

The observation statistics are buffers of the module: they travel with every snapshot, so the policy
node needs nothing but the published weights to act exactly as the learner evaluated.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import nn

from coirl_ros.constants import ACTION_BASE, NEXT, OBS_ENV_STATE, OBS_STATE
from coirl_ros.learning.distributions import TanhNormal
from coirl_ros.learning.hetstat import HetStatPolicy

# Std floor of the observation normaliser: a constant input (e.g. a fixed object) must not divide by 0.
_MIN_STD = 1e-3


def unclipped_policy_action(
    executed: np.ndarray, base: np.ndarray, composition: str, scale: float
) -> np.ndarray:
    """The policy output that would produce `executed` on top of `base`, before clipping to [-1, 1].

    residual: (a - a_base) / scale; ensemble: 2a - a_base. Values beyond ±1 mean the policy cannot
    reach that action (the learner reports how often demos need that).
    """
    if composition == "residual":
        return (executed - base) / scale
    if composition == "ensemble":
        return 2.0 * executed - base
    raise ValueError(f"composition must be 'residual' or 'ensemble', got {composition!r}")


def policy_action_from_executed(
    executed: np.ndarray, base: np.ndarray, composition: str, scale: float
) -> np.ndarray:
    """The policy output u in [-1, 1]^d that produced `executed` on top of `base`.

    The clipped `unclipped_policy_action`. Where the executed action was itself clipped at the
    action bound, u is the smallest output giving the same action.
    """
    u = unclipped_policy_action(executed, base, composition, scale)
    return np.clip(u, -1.0, 1.0).astype(np.float32)


def observation_keys(env_state_dim: int) -> tuple[str, ...]:
    """The arrays concatenated into the policy input, in order (the base action always last)."""
    return (OBS_STATE, OBS_ENV_STATE, ACTION_BASE) if env_state_dim else (OBS_STATE, ACTION_BASE)


def policy_input(
    batch: Mapping[str, np.ndarray], keys: Sequence[str], next_state: bool = False
) -> np.ndarray:
    """x [B, D] from a sampler batch (`next_state`: from its `next.*` arrays)."""
    prefix = NEXT if next_state else ""
    return np.concatenate([np.asarray(batch[prefix + k], np.float32) for k in keys], axis=-1)


class ResidualPolicy(nn.Module):
    """π(u | x) with x = [state, env_state, a_base]: a normaliser in front of a HetStat policy.

    Only the observation part of x is standardised (fixed statistics from the demonstrations);
    the base action is already in [-1, 1]. forward(x, faithful) has HetStat's signature, so the
    BC loss, coherent reward and actor loss all take this module unchanged.
    """

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        hidden_sizes: Sequence[int] = (256, 256),
        bottleneck: int = 12,
        num_features: int = 256,
    ) -> None:
        super().__init__()
        self.obs_dim, self.action_dim = obs_dim, action_dim
        self.register_buffer("obs_mean", torch.zeros(obs_dim))
        self.register_buffer("obs_std", torch.ones(obs_dim))
        self.net = HetStatPolicy(obs_dim + action_dim, action_dim, hidden_sizes, bottleneck, num_features)

    @property
    def input_dim(self) -> int:
        return self.obs_dim + self.action_dim

    @torch.no_grad()
    def fit_normaliser(self, x: np.ndarray | torch.Tensor, identity_dims: int = 0) -> None:
        """Set the observation statistics from inputs x [N, input_dim] (the demonstrations).

        The first `identity_dims` observation columns keep mean 0 and std 1: image keypoints, which are
        bounded in [-1, 1] already and whose statistics change while the encoder trains with π_BC.
        """
        obs = torch.as_tensor(np.asarray(x)[:, : self.obs_dim], dtype=torch.float32)
        self.obs_mean.copy_(obs.mean(0))
        self.obs_std.copy_(obs.std(0).clamp_min(_MIN_STD) if len(obs) > 1 else torch.ones(self.obs_dim))
        self.obs_mean[:identity_dims] = 0.0
        self.obs_std[:identity_dims] = 1.0

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        obs = (x[..., : self.obs_dim] - self.obs_mean) / self.obs_std
        return torch.cat([obs, x[..., self.obs_dim :]], dim=-1)

    def forward(self, x: torch.Tensor, faithful: bool = False) -> TanhNormal:
        """π(·|x) for x [B, input_dim] (raw, un-normalised observations)."""
        return self.net(self.normalise(x), faithful=faithful)

    @torch.no_grad()
    def act(self, x: np.ndarray, deterministic: bool = True, temperature: float = 1.0) -> np.ndarray:
        """u [d] for one input x [input_dim]: the mode (evaluation, deployment) or a sample (exploration)
        at `temperature` (TanhNormal.sample)."""
        dist = self(torch.as_tensor(np.asarray(x, np.float32)).unsqueeze(0))
        u = dist.mode() if deterministic else dist.sample(temperature)
        return u.squeeze(0).numpy()
