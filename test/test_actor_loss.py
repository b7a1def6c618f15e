"""The CSIL actor losses: coherent at initialisation, follow Q, held back by β·KL; the advantage-weighted
one chooses among recorded actions and never extrapolates past them."""

from __future__ import annotations

import pytest
import torch

from coirl_ros.learning.actor_losses import (
    advantage_weighted_actor_loss,
    frozen_copy,
    kl_regularised_actor_loss,
)
from coirl_ros.learning.critics import LayerNormCritic
from coirl_ros.learning.hetstat import HetStatPolicy

torch.set_num_threads(1)


class LinearQ(torch.nn.Module):
    """Q(s, a) = w·a: a critic whose best action is known (the +w corner)."""

    def __init__(self, w: torch.Tensor) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(w, requires_grad=False)

    def forward(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        return action @ self.w


def test_kl_is_exactly_zero_when_the_actor_is_a_copy_of_the_prior() -> None:
    torch.manual_seed(0)
    bc = HetStatPolicy(obs_dim=4, action_dim=3, hidden_sizes=(32, 32), num_features=32)
    actor = frozen_copy(bc)  # same weights; trainability does not matter for the value
    _, metrics = kl_regularised_actor_loss(
        actor, bc, LayerNormCritic(4, 3, (32,)), torch.randn(64, 4), beta=0.01
    )
    assert metrics["actor/kl_to_bc"].item() == 0.0


def _train(beta: float, steps: int = 150) -> tuple[float, float]:
    torch.manual_seed(0)
    bc = HetStatPolicy(obs_dim=2, action_dim=2, hidden_sizes=(32, 32), num_features=32)
    prior = frozen_copy(bc)
    actor = bc  # the actor starts as π_BC
    critic = LinearQ(torch.tensor([1.0, -1.0]))
    opt = torch.optim.Adam(actor.parameters(), lr=3e-3)
    obs = torch.randn(128, 2)
    for _ in range(steps):
        loss, metrics = kl_regularised_actor_loss(actor, prior, critic, obs, beta)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        mode = actor(obs).mode().mean(0)
    return float(mode[0] - mode[1]), float(metrics["actor/kl_to_bc"])


def test_actor_moves_toward_higher_q_and_beta_holds_it_back() -> None:
    free_gain, free_kl = _train(beta=0.0)
    held_gain, held_kl = _train(beta=10.0)
    assert free_gain > 0.5, "with β=0 the actor must climb Q = a0 - a1"
    assert held_gain < free_gain and held_kl < free_kl, "a strong KL weight must keep the actor near π_BC"


def _either_loss(kind: str, bc: HetStatPolicy, critic: torch.nn.Module) -> torch.Tensor:
    obs = torch.randn(16, 4)
    if kind == "reparameterised":
        return kl_regularised_actor_loss(bc, frozen_copy(bc), critic, obs, beta=0.01)[0]
    recorded = torch.rand(16, 3) * 2 - 1
    return advantage_weighted_actor_loss(bc, frozen_copy(bc), critic, obs, recorded, 0.01, 1.0, 20.0)[0]


@pytest.mark.parametrize("kind", ["reparameterised", "advantage_weighted"])
def test_critic_mode_is_restored_and_the_actor_gets_gradients(kind: str) -> None:
    torch.manual_seed(0)
    bc = HetStatPolicy(obs_dim=4, action_dim=3, hidden_sizes=(32, 32), num_features=32)
    critic = LayerNormCritic(4, 3, (32,)).train()
    _either_loss(kind, bc, critic).backward()
    assert critic.training, "the critic's train/eval mode must be restored"
    assert any(p.grad is not None for p in bc.parameters())


@pytest.mark.parametrize("kind", ["reparameterised", "advantage_weighted"])
def test_actor_loss_leaves_the_critic_without_gradients_and_trainable(kind: str) -> None:
    torch.manual_seed(0)
    bc = HetStatPolicy(obs_dim=4, action_dim=3, hidden_sizes=(32, 32), num_features=32)
    critic = LayerNormCritic(4, 3, (32,)).train()
    _either_loss(kind, bc, critic).backward()
    assert all(p.grad is None for p in critic.parameters()), "the actor step must not touch critic grads"
    assert all(p.requires_grad for p in critic.parameters()), "the critic must stay trainable afterwards"


def test_advantage_weighted_actor_picks_the_better_recorded_action_and_stays_on_it() -> None:
    """Two recorded actions per state, [0.3, -0.3] (higher Q = a0 - a1) and [-0.3, 0.3]. The
    advantage-weighted actor settles on the better one; the reparameterised actor, on the same critic,
    runs on toward the corner no rollout tried (the extrapolation critic_guided_eval found failing)."""
    torch.manual_seed(0)
    bc = HetStatPolicy(obs_dim=2, action_dim=2, hidden_sizes=(32, 32), num_features=32)
    prior = frozen_copy(bc)
    critic = LinearQ(torch.tensor([1.0, -1.0]))
    obs = torch.randn(64, 2).repeat(2, 1)
    good, bad = torch.tensor([0.3, -0.3]), torch.tensor([-0.3, 0.3])
    recorded = torch.cat([good.expand(64, 2), bad.expand(64, 2)])
    opt = torch.optim.Adam(bc.parameters(), lr=3e-3)
    for _ in range(400):
        loss, metrics = advantage_weighted_actor_loss(bc, prior, critic, obs, recorded, 0.0, 0.1, 20.0)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        mode = bc(obs).mode()
    assert torch.allclose(mode.mean(0), good, atol=0.05), mode.mean(0)
    assert float(metrics["actor/weight_max"]) <= 20.0
    # Ascending the same critic's gradient goes well past anything recorded.
    corner_gain, _ = _train(beta=0.0, steps=400)
    assert corner_gain > 1.2  # measured 1.98, against 0.60 for the recorded [0.3, -0.3]
