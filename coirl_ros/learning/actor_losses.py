"""The actor objectives of the online phase: CSIL's KL-regularised ones (DESIGN.md 2.4, 2.5) and the
sparse baseline's entropy-regularised one."""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from coirl_ros.learning.distributions import gaussian_kl


def frozen_copy(policy: nn.Module) -> nn.Module:
    """A frozen copy of π_BC, the KL prior; the actor itself starts as another (trainable) copy."""
    prior = copy.deepcopy(policy).eval()
    for p in prior.parameters():
        p.requires_grad_(False)
    return prior


@contextmanager
def _critic_as_function(critic: nn.Module) -> Iterator[nn.Module]:
    """The critic in eval mode with its parameters frozen, restored afterwards.

    Eval mode: batch-norm statistics (XQC) must not couple the rows of the actor's batch. Frozen
    parameters: the actor only needs ∇_a Q; computing weight gradients too roughly doubles the
    critic's backward cost and would leave stale gradients on the critic.
    """
    was_training = critic.training
    flags = [p.requires_grad for p in critic.parameters()]
    critic.eval()
    critic.requires_grad_(False)
    try:
        yield critic
    finally:
        critic.train(was_training)
        for p, flag in zip(critic.parameters(), flags, strict=True):
            p.requires_grad_(flag)


MAX_ADAPTIVE_BETA = 100.0  # see AdaptiveKLWeight


class AdaptiveKLWeight(nn.Module):
    """β as the Lagrange multiplier of the constraint E_s[KL(π_θ ‖ π_BC)] ≤ `target`.

    Dual gradient descent on log β (as SAC adapts its temperature): β grows while the actor's KL is
    above the target and shrinks below it, so the actor may move as far from π_BC as the budget
    allows whatever the critic's scale. Log-parameterised so β stays positive and moves by factors.
    Capped at `MAX_ADAPTIVE_BETA`: a target below what the actor's optimiser can hold (Adam moves
    every weight by ~lr per step, a KL floor of ~0.005 on the test problem) would otherwise raise β
    without bound, and β also weighs the log-ratio in the critic's target, where it would swamp the
    reward.
    """

    def __init__(self, initial: float, target: float) -> None:
        super().__init__()
        if initial <= 0 or target <= 0:
            raise ValueError(f"initial beta ({initial}) and KL target ({target}) must be > 0")
        self.target = target
        self.log_beta = nn.Parameter(torch.tensor(math.log(initial)))

    @property
    def value(self) -> float:
        """The current β (a plain float: the losses treat it as a constant)."""
        return float(self.log_beta.detach().exp())

    def loss(self, kl_mean: Tensor) -> Tensor:
        """−log β · (KL − target): its gradient step raises β when the KL is over the target."""
        return -self.log_beta * (kl_mean.detach() - self.target)

    def clamp_(self) -> None:
        """Keep β at or below MAX_ADAPTIVE_BETA (call after each optimiser step)."""
        with torch.no_grad():
            self.log_beta.clamp_(max=math.log(MAX_ADAPTIVE_BETA))


def kl_regularised_actor_loss(
    policy: nn.Module, bc_prior: nn.Module, critic: nn.Module, obs: Tensor, beta: float
) -> tuple[Tensor, dict[str, Tensor]]:
    """L(θ) = E_s[ β·KL(π_θ(·|s) ‖ π_BC(·|s)) − Q(s, a) ],  a ~ π_θ(·|s) (reparameterised).

    The KL is the analytic one between the pre-squash Gaussians (CSIL++): exact, zero-variance,
    and exactly 0 at initialisation when the actor is a copy of π_BC, which is what makes the
    start coherent. `obs` mixes demonstration and replay states. The critic is read as a fixed
    function (eval mode, no parameter gradients; see `_critic_as_function`).
    """
    dist = policy(obs)
    action, _ = dist.rsample()
    with torch.no_grad():
        prior = bc_prior(obs)
    kl = gaussian_kl(dist.mean, dist.std, prior.mean, prior.std)
    with _critic_as_function(critic):
        q = critic(obs, action)
    loss = (beta * kl - q).mean()
    metrics = {
        "losses/actor": loss.detach(),
        "actor/kl_to_bc": kl.mean().detach(),
        "actor/q": q.mean().detach(),
    }
    return loss, metrics


def advantage_weighted_actor_loss(
    policy: nn.Module,
    bc_prior: nn.Module,
    critic: nn.Module,
    obs: Tensor,
    action: Tensor,
    beta: float,
    temperature: float,
    max_weight: float,
) -> tuple[Tensor, dict[str, Tensor]]:
    """L(θ) = E_(s,a)~batch[ −w(s, a) · log π_θ(a|s) ] + β · E_s[ KL(π_θ(·|s) ‖ π_BC(·|s)) ],

        w(s, a) = min( exp(A(s, a) / temperature), max_weight ),  A(s, a) = Q(s, a) − Q(s, tanh(μ_θ(s))),

    with (s, a) the batch's recorded pairs (demonstrations and rollouts). The advantage is taken
    against the actor's mean action, the one the robot runs when it does not explore. Q is read only
    at recorded actions and at the mean, never at an action no rollout tried, which is what keeps a
    critic fitted to a few hundred near-mean episodes from leading the actor off its support (AWR,
    AWAC). The weights carry no gradient; the KL is the analytic one of `kl_regularised_actor_loss`.
    """
    dist = policy(obs)
    with torch.no_grad(), _critic_as_function(critic):
        # One forward for both actions (eval mode: the rows do not see each other).
        q_recorded, q_mean = critic(torch.cat([obs, obs]), torch.cat([action, dist.mode()])).chunk(2)
        advantage = q_recorded - q_mean
        weight = torch.exp(advantage / temperature).clamp(max=max_weight)
        prior = bc_prior(obs)
    log_likelihood = dist.log_prob(action)
    kl = gaussian_kl(dist.mean, dist.std, prior.mean, prior.std)
    loss = (-weight * log_likelihood + beta * kl).mean()
    metrics = {
        "losses/actor": loss.detach(),
        "actor/kl_to_bc": kl.mean().detach(),
        "actor/advantage": advantage.mean(),
        "actor/advantage_std": advantage.std(),
        "actor/weight_max": weight.max(),
        "actor/log_likelihood": log_likelihood.mean().detach(),
    }
    return loss, metrics


def entropy_regularised_actor_loss(
    policy: nn.Module, critic: nn.Module, obs: Tensor, temperature: float
) -> tuple[Tensor, dict[str, Tensor]]:
    """The sparse-reward baseline's actor (SAC with a fixed temperature, no BC prior):

        L(θ) = E_s[ temperature · log π_θ(a|s) − Q(s, a) ],  a ~ π_θ(·|s) (reparameterised).

    Q lives in [0, 1] there (success probability), so the temperature must be small (1e-3) or the
    entropy bonus drowns the signal. The critic is read as a fixed function, as in
    `kl_regularised_actor_loss`.
    """
    action, log_pi = policy(obs).rsample()
    with _critic_as_function(critic):
        q = critic(obs, action)
    loss = (temperature * log_pi - q).mean()
    return loss, {
        "losses/actor": loss.detach(),
        "actor/log_pi": log_pi.mean().detach(),
        "actor/q": q.mean().detach(),
    }
