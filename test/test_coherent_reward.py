"""The coherent reward r = α (log π_BC − log p) of a fitted HetStat policy (DESIGN 2.1, 2.4)."""

from __future__ import annotations

import math

import pytest
import torch

from coirl_ros.learning.bc_losses import faithful_bc_loss
from coirl_ros.learning.coherent_reward import MAX_REWARD, coherent_reward
from coirl_ros.learning.distributions import TanhNormal, uniform_prior_log_prob
from coirl_ros.learning.hetstat import HetStatPolicy

torch.set_num_threads(1)

FAR_OBS = torch.tensor([[-100.0], [-50.0], [50.0], [100.0]])


def toy_demos() -> tuple[torch.Tensor, torch.Tensor]:
    """1-D observations on [-1, 1] with a 2-D demo action that depends on them."""
    obs = torch.linspace(-1.0, 1.0, 64)[:, None]
    return obs, torch.cat([0.6 * torch.sin(2.0 * obs), 0.5 * obs - 0.2], dim=-1)


def action_grid(n: int, low: float = -0.95, high: float = 0.95) -> torch.Tensor:
    axis = torch.linspace(low, high, n)
    return torch.cartesian_prod(axis, axis)


@pytest.fixture(scope="module")
def policy() -> HetStatPolicy:
    torch.manual_seed(0)
    policy = HetStatPolicy(obs_dim=1, action_dim=2, hidden_sizes=(64, 64), num_features=256)
    obs, action = toy_demos()
    optimiser = torch.optim.Adam(policy.parameters(), lr=1e-3)
    for _ in range(400):
        loss, _ = faithful_bc_loss(policy, obs, action)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return policy


def test_reward_is_highest_at_the_demo_action(policy: HetStatPolicy) -> None:
    obs, action = toy_demos()
    grid = action_grid(39)
    # Interior demo states: after 400 steps the fit is still ≈ 0.1-0.15 off at the two ends of the
    # data, and the reward peaks at the BC mode, not at the demo itself.
    for i in range(4, 60, 7):
        demo_reward = coherent_reward(policy, obs[i : i + 1], action[i : i + 1])
        rewards = coherent_reward(policy, obs[i].expand(len(grid), 1), grid)
        assert (grid[rewards.argmax()] - action[i]).abs().max() < 0.075  # grid step 0.05
        distant = (grid - action[i]).abs().max(-1).values > 0.25
        assert demo_reward > rewards[distant].max() + 1.5
        assert demo_reward > 1.0  # demo-like actions in familiar states: clearly positive reward


def test_reward_is_near_zero_far_from_the_data(policy: HetStatPolicy) -> None:
    grid = action_grid(17, -0.8, 0.8)
    for far in FAR_OBS:
        rewards = coherent_reward(policy, far.expand(len(grid), 1), grid)
        assert rewards.abs().mean() < 0.4 and rewards.abs().max() < 1.5
    # Whereas in familiar states the same actions span a wide range of rewards.
    obs, _ = toy_demos()
    on_data = coherent_reward(policy, obs[32].expand(len(grid), 1), grid)
    assert on_data.max() - on_data.min() > 10.0


def test_soft_value_of_the_coherent_reward_is_zero(policy: HetStatPolicy) -> None:
    """Coherence: V(s) = α log ∫ p(a) exp(r(s,a)/α) da = α log ∫ π_BC(a|s) da = 0, on and off the data."""
    n = 1201
    grid = action_grid(n, -1 + 1e-4, 1 - 1e-4).double()
    axis = grid[::n, 0]
    for obs in ([0.3], [-0.9], [80.0]):
        with torch.no_grad():
            dist = policy(torch.tensor([obs]))
        # One state: evaluate π(·|s) once and broadcast it over the 1.4M-point action grid.
        mean, std = dist.mean.double().expand(len(grid), 2), dist.std.double().expand(len(grid), 2)
        reward = coherent_reward(lambda _, m=mean, s=std: TanhNormal(m, s), grid, grid)
        integrand = (math.exp(uniform_prior_log_prob(2)) * (2.0 * reward).exp()).reshape(n, n)
        integral = torch.trapezoid(torch.trapezoid(integrand, axis, dim=1), axis)
        assert 0.5 * math.log(integral.item()) == pytest.approx(0.0, abs=0.01)


def test_reward_is_bounded_by_max_reward(policy: HetStatPolicy) -> None:
    # DESIGN 2.4: −½ log(min variance) + log 2 (−log p per dimension).
    assert pytest.approx(-0.5 * math.log(1e-5) + math.log(2.0)) == MAX_REWARD
    obs, action = toy_demos()
    assert coherent_reward(policy, obs, action).max() <= MAX_REWARD
    # The tightest case: variance at its floor, mode at the centre (tanh Jacobian = 1).
    torch.manual_seed(0)
    collapsed = HetStatPolicy(obs_dim=1, action_dim=3, hidden_sizes=(16,), num_features=16)
    with torch.no_grad():
        collapsed.scale_tril.zero_()
    peak = coherent_reward(collapsed, torch.zeros(1, 1), torch.zeros(1, 3))
    assert MAX_REWARD - 1.0 < peak.item() <= MAX_REWARD


def test_alpha_defaults_to_one_over_the_action_dimension(policy: HetStatPolicy) -> None:
    obs, action = toy_demos()
    log_ratio = policy(obs).log_prob(action).detach() + 2 * math.log(2.0)
    torch.testing.assert_close(coherent_reward(policy, obs, action), log_ratio / 2)
    torch.testing.assert_close(coherent_reward(policy, obs, action, alpha=0.1), 0.1 * log_ratio)


def test_reward_is_gradient_free_unless_refining(policy: HetStatPolicy) -> None:
    obs, action = toy_demos()
    assert not coherent_reward(policy, obs, action).requires_grad
    refined = coherent_reward(policy, obs, action, requires_grad=True)
    policy.zero_grad()
    refined.mean().backward()
    assert policy.scale_tril.grad.abs().sum() > 0 and policy.mean_weights.grad.abs().sum() > 0
    policy.zero_grad()
