"""HetStat BC policy, its faithful BC loss and the tanh-Normal maths (DESIGN 2.2, 2.5)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from coirl_ros.learning.bc_losses import faithful_bc_loss
from coirl_ros.learning.distributions import TanhNormal, gaussian_kl, uniform_prior_log_prob
from coirl_ros.learning.hetstat import MIN_VAR, PRIOR_VAR, HetStatPolicy

torch.set_num_threads(1)

SMALL = {"hidden_sizes": (64, 64), "bottleneck": 12, "num_features": 256}
FAR_OBS = torch.tensor([[-100.0], [-50.0], [50.0], [100.0]])


def toy_demos() -> tuple[torch.Tensor, torch.Tensor]:
    """1-D observations on [-1, 1], 2-D actions with a clear trend (so a plain MLP extrapolates it)."""
    obs = torch.linspace(-1.0, 1.0, 64)[:, None]
    action = torch.cat([0.5 * torch.tanh(2.0 * obs) + 0.2 * torch.sin(3.0 * obs), -0.6 * obs], dim=-1)
    return obs, action


def fit(policy: nn.Module, steps: int = 400) -> list[dict[str, float]]:
    """Adam 1e-3 on the faithful BC loss; returns the metric history."""
    obs, action = toy_demos()
    optimiser = torch.optim.Adam(policy.parameters(), lr=1e-3)
    history = []
    for _ in range(steps):
        loss, metrics = faithful_bc_loss(policy, obs, action)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        history.append({k: float(v) for k, v in metrics.items()})
    return history


class PlainMLPPolicy(nn.Module):
    """Ordinary heteroscedastic tanh-Gaussian MLP (the reference's ClampedScaleNormalTanh): no reversion."""

    def __init__(self, obs_dim: int, action_dim: int, hidden: int = 64) -> None:
        super().__init__()
        self.torso = nn.Sequential(nn.Linear(obs_dim, hidden), nn.ELU(), nn.Linear(hidden, hidden), nn.ELU())
        self.mean_head = nn.Linear(hidden, action_dim)
        self.log_std_head = nn.Linear(hidden, action_dim)

    def forward(self, obs: torch.Tensor, faithful: bool = False) -> TanhNormal:
        h = self.torso(obs)
        unit = 0.5 * (torch.tanh(self.log_std_head(h.detach() if faithful else h)) + 1.0)
        return TanhNormal(self.mean_head(h), math.sqrt(MIN_VAR) + torch.exp(-5.0 + 5.0 * unit))


@pytest.fixture(scope="module")
def fitted() -> tuple[HetStatPolicy, list[dict[str, float]]]:
    """HetStat fitted to the toy demos (shared: the tests below only evaluate it)."""
    torch.manual_seed(0)
    policy = HetStatPolicy(obs_dim=1, action_dim=2, **SMALL)
    return policy, fit(policy)


def test_shapes_and_std_range() -> None:
    torch.manual_seed(0)
    policy = HetStatPolicy(obs_dim=3, action_dim=2)
    dist = policy(torch.randn(5, 3))
    assert dist.mean.shape == dist.std.shape == (5, 2)
    action, log_prob = dist.rsample()
    assert action.shape == (5, 2) and log_prob.shape == (5,)
    assert dist.log_prob(action).shape == (5,)
    assert policy.scale_tril.shape == (2, 256, 256)  # one Cholesky factor per action dimension
    assert (dist.std > 0).all() and (dist.std <= math.sqrt(PRIOR_VAR)).all()


def test_initial_policy_is_the_prior_for_every_observation() -> None:
    torch.manual_seed(0)
    policy = HetStatPolicy(obs_dim=3, action_dim=2)
    obs = torch.cat([torch.randn(8, 3), 100.0 * torch.randn(8, 3)])
    with torch.no_grad():
        dist = policy(obs)
    assert (dist.mean == 0).all()
    # Nearly constant features (ℓ = -5): same std everywhere, ≈ √0.75·tanh(√(π⁴/128)) ≈ 0.61.
    assert dist.std.min() > 0.58 and dist.std.max() < 0.65
    # Roughly uniform: per-dimension log π − log p within ±0.5 over [-0.8, 0.8]².
    grid = torch.linspace(-0.8, 0.8, 9)
    actions = torch.cartesian_prod(grid, grid)
    log_ratio = TanhNormal(dist.mean[:1].expand(81, 2), dist.std[:1].expand(81, 2)).log_prob(actions)
    log_ratio = (log_ratio - uniform_prior_log_prob(2)) / 2
    assert log_ratio.abs().max() < 0.5


def test_faithful_loss_trains_the_mean_by_mse_and_the_variance_by_nll() -> None:
    torch.manual_seed(0)
    policy = HetStatPolicy(obs_dim=1, action_dim=2, **SMALL)
    obs, action = toy_demos()
    fit(policy, steps=5)  # move off the zero-init mean so every gradient path is live
    mean_params = [
        policy.mean_weights,
        policy.projection,
        policy.log_inv_lengthscale,
        *policy.torso.parameters(),
    ]
    params = [*mean_params, policy.scale_tril]
    total = torch.autograd.grad(faithful_bc_loss(policy, obs, action)[0], params)
    # Mean path (torso, W, ℓ, mean head): exactly the gradient of the MSE alone, no NLL leaking in.
    mse_only = torch.autograd.grad((policy(obs).mode() - action).square().mean(), mean_params)
    for got, expected in zip(total[:-1], mse_only, strict=True):
        torch.testing.assert_close(got, expected)
        assert expected.abs().sum() > 0
    # Variance head: exactly the gradient of the NLL alone.
    (nll_only,) = torch.autograd.grad(-policy(obs).log_prob(action).mean(), [policy.scale_tril])
    torch.testing.assert_close(total[-1], nll_only)
    assert nll_only.abs().sum() > 0


def test_faithful_bc_fits_the_demonstrations(fitted: tuple[HetStatPolicy, list[dict[str, float]]]) -> None:
    policy, history = fitted
    first, last = history[0], history[-1]
    assert last["losses/bc_mse"] < 0.1 * first["losses/bc_mse"]
    assert last["losses/bc_nll"] < first["losses/bc_nll"] - 2.0
    obs, action = toy_demos()
    with torch.no_grad():
        dist = policy(obs)
    assert (dist.mode() - action).abs().mean() < 0.08
    assert dist.std.mean() < 0.15 and dist.std.max() < 0.3


def test_reverts_to_the_prior_far_from_the_data_unlike_a_plain_mlp(
    fitted: tuple[HetStatPolicy, list[dict[str, float]]],
) -> None:
    hetstat = fitted[0]
    torch.manual_seed(0)
    mlp = PlainMLPPolicy(1, 2)
    fit(mlp)
    obs, _ = toy_demos()
    with torch.no_grad():
        on_data, far, mlp_far = hetstat(obs), hetstat(FAR_OBS), mlp(FAR_OBS)
    # HetStat: mean back near 0 (up to finite-D feature noise), std back near its prior value and
    # far above its on-data value.
    assert far.mode().abs().max() < 0.4 and far.mode().abs().mean() < 0.2
    assert far.std.min() > 0.55 and far.std.min() > 2.0 * on_data.std.max()
    # The plain MLP extrapolates the trend into a saturated mode (its far std lands on either clamp,
    # seed-dependent, so only the mode is compared).
    assert mlp_far.mode().abs().max() > 0.9


def test_tanh_normal_log_prob_is_the_change_of_variables_density() -> None:
    torch.manual_seed(0)
    mean, std = torch.randn(6, 3), 0.1 + torch.rand(6, 3)
    dist = TanhNormal(mean, std)
    action = torch.rand(6, 3) * 1.98 - 0.99
    reference = torch.distributions.TransformedDistribution(
        torch.distributions.Normal(mean, std), [torch.distributions.TanhTransform()]
    )
    torch.testing.assert_close(
        dist.log_prob(action), reference.log_prob(action).sum(-1), rtol=1e-4, atol=1e-4
    )
    # The 1-D density integrates to 1 over (-1, 1), also for a mode close to the bound (tanh(2.5) ≈ 0.987).
    grid = torch.linspace(-1 + 1e-6, 1 - 1e-6, 200_001, dtype=torch.float64)[:, None]
    for m, s in [(0.0, 0.5), (1.5, 0.3), (2.5, 0.5)]:
        one_d = TanhNormal(torch.full_like(grid, m), torch.full_like(grid, s))
        assert torch.trapezoid(one_d.log_prob(grid).exp(), grid[:, 0]).item() == pytest.approx(1.0, abs=2e-3)
    # Monte-Carlo: P(a < 0.5) from samples matches the Normal CDF at atanh(0.5).
    mc = TanhNormal(torch.full((200_000, 1), 0.3), torch.full((200_000, 1), 0.7)).sample()
    exact = torch.distributions.Normal(0.3, 0.7).cdf(torch.atanh(torch.tensor(0.5)))
    assert (mc < 0.5).float().mean().item() == pytest.approx(exact.item(), abs=5e-3)


def test_log_prob_is_finite_at_the_action_bounds() -> None:
    dist = TanhNormal(torch.tensor([[8.0, -8.0]]), torch.tensor([[0.5, 0.5]]))
    assert torch.isfinite(dist.log_prob(torch.tensor([[1.0, -1.0]]))).all()


def test_rsample_log_prob_is_exact_where_tanh_saturates() -> None:
    """tanh(12) rounds to 1 in float32: log(1 - tanh²) would be -inf; the softplus form is exact."""
    mean, std = torch.full((4, 1), 12.0), torch.full((4, 1), 0.1)
    torch.manual_seed(0)
    eps = torch.randn(4, 1)
    torch.manual_seed(0)  # rsample draws the same ε
    action, log_prob = TanhNormal(mean, std).rsample()
    assert (action == 1.0).all() and torch.isfinite(log_prob).all()
    x = (mean + std * eps).double()  # in float64, 1 - tanh(12)² ≈ 1.5e-10 is still representable
    expected = torch.distributions.Normal(12.0, 0.1).log_prob(x) - torch.log(1.0 - torch.tanh(x) ** 2)
    torch.testing.assert_close(log_prob.double(), expected[:, 0], rtol=1e-5, atol=1e-3)


def test_rsample_log_prob_equals_log_prob_of_the_sample_and_is_differentiable() -> None:
    torch.manual_seed(0)
    mean = torch.randn(64, 4, requires_grad=True)
    std = (0.2 + torch.rand(64, 4)).requires_grad_()
    dist = TanhNormal(mean, std)
    action, log_prob = dist.rsample()
    torch.testing.assert_close(log_prob, dist.log_prob(action), rtol=1e-3, atol=1e-3)
    # Same pathwise gradient (through the sample and the parameters) as re-scoring the sample.
    grads = torch.autograd.grad(log_prob.sum(), [mean, std], retain_graph=True)
    rescored = torch.autograd.grad(dist.log_prob(action).sum(), [mean, std], retain_graph=True)
    for got, expected in zip(grads, rescored, strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-2, atol=1e-2)
    assert torch.autograd.grad(action.sum(), mean)[0].abs().sum() > 0


def test_sample_n_draws_n_actions_per_row_from_each_rows_distribution() -> None:
    """One distribution, n samples per row: row i's samples follow row i's mean and std (checked on
    the pre-squash values), and temperature scales the spread (0: every sample is the mode)."""
    torch.manual_seed(0)
    mean = torch.tensor([[0.5, -1.0], [-0.3, 0.2]])
    std = torch.tensor([[0.1, 0.4], [0.3, 0.05]])
    dist = TanhNormal(mean, std)
    samples = dist.sample_n(20_000)
    assert samples.shape == (2, 20_000, 2) and not samples.requires_grad
    pre = torch.atanh(samples.double())
    torch.testing.assert_close(pre.mean(1).float(), mean, atol=0.01, rtol=0.0)
    torch.testing.assert_close(pre.std(1).float(), std, atol=0.0, rtol=0.03)
    narrow = torch.atanh(dist.sample_n(20_000, temperature=0.25).double())
    torch.testing.assert_close(narrow.std(1).float(), 0.25 * std, atol=0.0, rtol=0.03)
    torch.testing.assert_close(dist.sample_n(3, temperature=0.0), dist.mode().unsqueeze(1).expand(2, 3, 2))
    with pytest.raises(ValueError, match="n must be"):
        dist.sample_n(0)


def test_gaussian_kl() -> None:
    torch.manual_seed(0)
    mean_p, mean_q = torch.randn(10, 3), torch.randn(10, 3)
    std_p, std_q = 0.1 + torch.rand(10, 3), 0.1 + torch.rand(10, 3)
    assert gaussian_kl(mean_p, std_p, mean_p, std_p).abs().max() < 1e-6
    Normal, Independent = torch.distributions.Normal, torch.distributions.Independent
    expected = torch.distributions.kl_divergence(
        Independent(Normal(mean_p, std_p), 1), Independent(Normal(mean_q, std_q), 1)
    )
    torch.testing.assert_close(gaussian_kl(mean_p, std_p, mean_q, std_q), expected)


def test_uniform_prior_log_prob() -> None:
    assert uniform_prior_log_prob(7) == pytest.approx(-7 * math.log(2.0))
