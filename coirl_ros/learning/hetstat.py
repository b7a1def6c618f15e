"""HetStat: the heteroscedastic stationary BC policy of CSIL (DESIGN 2.2).

obs → ELU MLP torso → ELU bottleneck z (≈12) → stationary features
    f(z) = [φ(zᵀ diag(e^ℓ) W + π/4), φ(zᵀ diag(e^ℓ) W − π/4)] / √D      (φ: triangle wave, D features)
→ mean = fᵀ w                        (w init 0, no bias)
→ σ²_i = fᵀ L_i L_iᵀ f               (one lower-triangular D×D L_i per action dimension, init identity)
→ std_i = √0.75 · tanh(√(1e-5 + σ²_i)),   π(a|s) = TanhNormal(mean, std).

Periodic features with Gaussian W make fᵀf' depend only on z − z' (a stationary kernel). Away from the
data, f decorrelates from every training feature; gradient steps move w, and L's action on f, only
within the span of training features, so there the mean falls back to ≈ 0 and the variance to its
init value (‖f‖² ≈ 1, std ≈ 0.65): the policy reverts to a near-uniform prior instead of
extrapolating, and the coherent reward is ≈ 0 there.

Follows google-deepmind/csil `sil/networks.py` (StationaryHeteroskedasticNormalTanhDistribution,
HETSTATTRI, policy_network = [256, 256, 12, 256]).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from coirl_ros.learning.distributions import TanhNormal

# Variance floor: bounds log π, hence the coherent reward (see coherent_reward.MAX_REWARD).
MIN_VAR = 1e-5
# Cap on the pre-squash variance. tanh(N(0, 0.75)) is close to uniform on [-1, 1], so the cap is the
# prior-like spread; the reference calls it prior_variance.
PRIOR_VAR = 0.75
# π/(2√2): scales the triangle wave (amplitude π/2) so that its mean square ≈ 1, like sin + cos.
_TRIANGLE_GAIN = math.pi / (2.0 * math.sqrt(2.0))


def triangle_wave(x: torch.Tensor) -> torch.Tensor:
    """Periodic triangle wave with period 2π, equal to x·gain on [-π/2, π/2] (a piecewise-linear sine)."""
    k = torch.floor(x / math.pi + 0.5)
    sign = 1.0 - 2.0 * torch.remainder(k, 2.0)  # (-1)^k
    return _TRIANGLE_GAIN * (x - math.pi * k) * sign


class HetStatPolicy(nn.Module):
    """Heteroscedastic stationary tanh-Normal policy π_BC(a|s); see the module docstring for the maths."""

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        hidden_sizes: Sequence[int] = (256, 256),
        bottleneck: int = 12,
        num_features: int = 256,
    ) -> None:
        super().__init__()
        if num_features % 2:
            raise ValueError(f"num_features must be even (a ±π/4 pair per projection), got {num_features}")
        self.obs_dim, self.action_dim, self.num_features = obs_dim, action_dim, num_features
        layers: list[nn.Module] = []
        width = obs_dim
        # The reference MLP activates its last (bottleneck) layer too: activate_final=True.
        for size in (*hidden_sizes, bottleneck):
            linear = nn.Linear(width, size)
            nn.init.orthogonal_(linear.weight)
            nn.init.zeros_(linear.bias)
            layers += [linear, nn.ELU()]
            width = size
        self.torso = nn.Sequential(*layers)
        # Trainable despite the random-feature theory: the reference finds fixed W underfits, and
        # training barely moves its distribution, so stationarity is kept in practice.
        self.projection = nn.Parameter(torch.randn(bottleneck, num_features // 2))
        # Multiplies z, so it is an inverse length scale (the reference's "log_lengthscales"). e^-5 makes
        # every feature nearly constant at init: the initial policy is the same for all observations.
        self.log_inv_lengthscale = nn.Parameter(torch.full((bottleneck,), -5.0))
        # Zero and bias-free: a bias would be the far-from-data mean, breaking the reversion to 0.
        self.mean_weights = nn.Parameter(torch.zeros(num_features, action_dim))
        # Only the lower triangle is used (tril in forward); identity gives σ² = ‖f‖² at init.
        self.scale_tril = nn.Parameter(torch.eye(num_features).repeat(action_dim, 1, 1))

    def features(self, obs: torch.Tensor) -> torch.Tensor:
        """Stationary features f(z(obs)) [B, D]."""
        z = self.torso(obs)
        wz = (z * self.log_inv_lengthscale.exp()) @ self.projection
        quarter_pi = math.pi / 4.0
        f = torch.cat((triangle_wave(wz + quarter_pi), triangle_wave(wz - quarter_pi)), dim=-1)
        return f / math.sqrt(self.num_features)

    def forward(self, obs: torch.Tensor, faithful: bool = False) -> TanhNormal:
        """π(·|obs) for obs [B, obs_dim].

        faithful=True stops the gradient of the variance into the features (torso, W, ℓ), as the
        reference does for the faithful BC loss: the variance is then fitted on fixed features and
        cannot trade off against the mean fit.
        """
        f = self.features(obs)
        mean = f @ self.mean_weights
        f_var = f.detach() if faithful else f
        # σ²_i = ‖L_iᵀ f‖² = fᵀ L_i L_iᵀ f, one Cholesky factor per action dimension i.
        # As one [B, D] x [D, d·D] matmul rather than a batched einsum: the variance term is most of
        # HetStat's cost (B·d·D² multiply-adds), and a single GEMM runs it ~1.2-1.6x faster on CPU.
        d, n = self.action_dim, self.num_features
        factors = torch.tril(self.scale_tril).permute(1, 0, 2).reshape(n, d * n)
        lt_f = (f_var @ factors).view(-1, d, n)
        var = lt_f.square().sum(-1)
        std = math.sqrt(PRIOR_VAR) * torch.tanh(torch.sqrt(MIN_VAR + var))
        return TanhNormal(mean, std)
