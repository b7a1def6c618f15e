"""The coherent reward r(s, a) = α (log π_BC(a|s) − log p(a)) (DESIGN 2.1)."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from coirl_ros.learning.distributions import TanhNormal, uniform_prior_log_prob
from coirl_ros.learning.hetstat import MIN_VAR

# Per-dimension bound on log π_BC − log p, hence on r with α = 1/d: a Normal whose variance is at
# least MIN_VAR has log density ≤ −½ log MIN_VAR (dropping the negative −½ log 2π), and −log p = log 2
# per dimension. HetStat's std is √0.75·tanh(√(MIN_VAR + σ²)) ≈ √(0.75·MIN_VAR) at least, and the
# dropped ½ log 2π ≈ 0.92 covers the 0.75. The bound ignores the tanh Jacobian, which adds up to
# −log(1 − a²) for actions near ±1 when the mean itself saturates; like the reference, the learner
# uses MAX_REWARD / (1 − γ) to clip bootstrapped values rather than as a hard guarantee.
MAX_REWARD = -0.5 * math.log(MIN_VAR) + math.log(2.0)


def coherent_reward(
    policy: Callable[[torch.Tensor], TanhNormal],
    obs: torch.Tensor,
    action: torch.Tensor,
    alpha: float | None = None,
    requires_grad: bool = False,
) -> torch.Tensor:
    """r(s, a) = α (log π_BC(a|s) − log p(a)) [B], α = 1/d by default, p uniform on [-1, 1]^d.

    With temperature α and prior p, π_BC is the soft-optimal policy for r with V = 0 (DESIGN 2.1).
    No gradient reaches the policy unless `requires_grad` (reward refinement trains a copy of π_BC).
    """
    action_dim = action.shape[-1]
    scale = 1.0 / action_dim if alpha is None else alpha
    with torch.set_grad_enabled(requires_grad):
        log_ratio = policy(obs).log_prob(action) - uniform_prior_log_prob(action_dim)
        return scale * log_ratio


def reward_refinement_loss(
    demo_reward: torch.Tensor, replay_reward: torch.Tensor
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """CSIL's online reward refinement (DESIGN 2.4; the reference's `refine_reward`):

        L(ψ) = − mean_demo r_ψ(s, a) + mean_replay [ exp(−max(r_ψ, −5)) − 1 + r_ψ ]

    from rewards r_ψ = `coherent_reward(ψ, ..., requires_grad=True)` of a trainable copy ψ of π_BC
    on demonstration and replay pairs (the learner computes them once per batch and reuses them,
    detached, in the critic's target). The first term raises the reward of demonstrated actions
    (more BC likelihood); the second is the non-negative estimator log(1/ρ)+ρ−1 of a KL (ρ = e^{−r})
    and pushes large rewards on the learner's own replay down, so the policy cannot farm reward where
    the demonstrations never went. Rewards below −5 are clipped inside the exp only: a few very
    unlikely replay actions would otherwise dominate the batch.
    """
    kl_estimate = (torch.exp(-replay_reward.clamp(min=-5.0)) - 1.0 + replay_reward).mean()
    loss = -demo_reward.mean() + kl_estimate
    return loss, {
        "losses/reward": loss.detach(),
        "reward/demo": demo_reward.mean().detach(),
        "reward/replay": replay_reward.mean().detach(),
    }
