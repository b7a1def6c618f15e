"""Behaviour-cloning losses for the BC policy π_BC (DESIGN 2.2)."""

from __future__ import annotations

from typing import Protocol

import torch

from coirl_ros.learning.distributions import TanhNormal


class FaithfulPolicy(Protocol):
    """A policy whose `faithful=True` call stops the variance's gradient into shared features."""

    def __call__(self, obs: torch.Tensor, faithful: bool = False) -> TanhNormal: ...


def faithful_bc_loss(
    policy: FaithfulPolicy, obs: torch.Tensor, action: torch.Tensor
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Faithful heteroscedastic BC: the mean is fitted by MSE, the variance by NLL around a frozen mean.

    L = mean_{b,i} (tanh(μ(s_b))_i − a_{b,i})²  −  mean_b log N_tanh(a_b; sg[μ(s_b)], σ(s_b))

    sg = stop-gradient. The MSE term alone trains the mean, so a wide variance cannot excuse a poor
    mean fit (as it would under plain NLL); the NLL term only trains the variance, and through
    `policy(obs, faithful=True)` only the variance head, not the shared features.
    Metrics (detached scalars): `losses/bc_mse`, `losses/bc_nll`.
    """
    dist = policy(obs, faithful=True)
    mse = (dist.mode() - action).square().mean()
    nll = -TanhNormal(dist.mean.detach(), dist.std).log_prob(action).mean()
    return mse + nll, {"losses/bc_mse": mse.detach(), "losses/bc_nll": nll.detach()}


def distillation_bc_loss(
    policy: FaithfulPolicy,
    obs: torch.Tensor,
    action: torch.Tensor,
    perturbed_obs: torch.Tensor,
    teacher_action: torch.Tensor,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """`faithful_bc_loss` with the mean fitted to a teacher's actions around the demonstrations:

    L = mean_{b,i} (tanh(μ(s̃_b))_i − ā(s̃_b)_i)²  −  mean_b log N_tanh(a_b; sg[μ(s_b)], σ(s_b))

    s̃ = the demonstration inputs s perturbed, ā = the teacher's action there (the mean of several
    π_BC fits). The variance still learns from the demonstrations a at s, so σ keeps its meaning (the
    demonstrator's spread), which the coherent reward and exploration rely on: fitted to a
    deterministic teacher it would collapse.
    """
    mean_fit = policy(perturbed_obs, faithful=True)
    mse = (mean_fit.mode() - teacher_action).square().mean()
    dist = policy(obs, faithful=True)
    nll = -TanhNormal(dist.mean.detach(), dist.std).log_prob(action).mean()
    return mse + nll, {"losses/bc_mse": mse.detach(), "losses/bc_nll": nll.detach()}
