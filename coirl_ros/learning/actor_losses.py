"""The KL-regularised actor objective of the online phase (DESIGN.md 2.4, 2.5)."""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from coirl_ros.learning.distributions import gaussian_kl


def frozen_copy(policy: nn.Module) -> nn.Module:
    """A frozen copy of π_BC, the KL prior; the actor itself starts as another (trainable) copy."""
    prior = copy.deepcopy(policy).eval()
    for p in prior.parameters():
        p.requires_grad_(False)
    return prior


def kl_regularised_actor_loss(
    policy: nn.Module, bc_prior: nn.Module, critic: nn.Module, obs: Tensor, beta: float
) -> tuple[Tensor, dict[str, Tensor]]:
    """L(θ) = E_s[ β·KL(π_θ(·|s) ‖ π_BC(·|s)) − Q(s, a) ],  a ~ π_θ(·|s) (reparameterised).

    The KL is the analytic one between the pre-squash Gaussians (CSIL++): exact, zero-variance,
    and exactly 0 at initialisation when the actor is a copy of π_BC, which is what makes the
    start coherent. `obs` mixes demonstration and replay states. The critic is read in eval mode
    so that batch-norm statistics (XQC) do not couple the rows of the actor's batch. The critic's
    parameters also accumulate gradients here: step only the actor's optimiser, and zero the
    critic's gradients before its own update.
    """
    dist = policy(obs)
    action, _ = dist.rsample()
    with torch.no_grad():
        prior = bc_prior(obs)
    kl = gaussian_kl(dist.mean, dist.std, prior.mean, prior.std)
    was_training = critic.training
    critic.eval()
    try:
        q = critic(obs, action)
    finally:
        critic.train(was_training)
    loss = (beta * kl - q).mean()
    metrics = {
        "losses/actor": loss.detach(),
        "actor/kl_to_bc": kl.mean().detach(),
        "actor/q": q.mean().detach(),
    }
    return loss, metrics
