"""The tanh-squashed diagonal Normal every policy returns, the analytic Gaussian KL and the uniform prior.

Actions live in [-1, 1]^d: a = tanh(x), x ~ N(mean, diag(std²)). `mean` and `std` are those of the
pre-squash Gaussian x (the KL of DESIGN 2.5 is taken between these).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

# atanh(±1) is infinite: demo or replay actions sitting exactly on the bound are pulled this far inside.
ACTION_CLIP = 1.0 - 1e-6
_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)
_LOG_2 = math.log(2.0)


def log1m_tanh_sq(x: torch.Tensor) -> torch.Tensor:
    """log(1 - tanh(x)²) = 2 (log 2 - x - softplus(-2x)), exact and free of cancellation for large |x|."""
    return 2.0 * (_LOG_2 - x - F.softplus(-2.0 * x))


class TanhNormal:
    """a = tanh(x), x ~ N(mean, diag(std²)), independent over the last (action) dimension.

    log π(a) = Σ_i [ log N(x_i; mean_i, std_i) - log(1 - tanh(x_i)²) ],  x = atanh(a).
    """

    def __init__(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        if mean.shape != std.shape:
            raise ValueError(f"mean shape {tuple(mean.shape)} != std shape {tuple(std.shape)}")
        self.mean = mean
        self.std = std

    @property
    def action_dim(self) -> int:
        """d, the size of the last dimension."""
        return self.mean.shape[-1]

    def mode(self) -> torch.Tensor:
        """tanh(mean): the deterministic (evaluation) action. Differentiable in `mean`."""
        return torch.tanh(self.mean)

    def _log_prob_pre_squash(self, x: torch.Tensor) -> torch.Tensor:
        z = (x - self.mean) / self.std
        log_normal = -0.5 * z.square() - self.std.log() - _HALF_LOG_2PI
        return (log_normal - log1m_tanh_sq(x)).sum(-1)

    def log_prob(self, action: torch.Tensor) -> torch.Tensor:
        """log π(a) [B] for actions [B, d]; actions are clipped into (-1+1e-6, 1-1e-6) before atanh."""
        x = torch.atanh(action.clamp(-ACTION_CLIP, ACTION_CLIP))
        return self._log_prob_pre_squash(x)

    def rsample(self) -> tuple[torch.Tensor, torch.Tensor]:
        """A reparameterised sample a [B, d] and its log π(a) [B] (tanh Jacobian included).

        The log-prob is evaluated at the pre-squash sample x, not at atanh(tanh(x)), so it stays exact
        even where tanh(x) rounds to ±1 in float32.
        """
        x = self.mean + self.std * torch.randn_like(self.mean)
        return torch.tanh(x), self._log_prob_pre_squash(x)

    @torch.no_grad()
    def sample(self, temperature: float = 1.0) -> torch.Tensor:
        """An action [B, d] without gradients (acting): tanh(mean + temperature·std·ε).

        temperature < 1 explores with a narrower spread than the policy's own (1: exact sample, 0: mode).
        """
        return torch.tanh(self.mean + temperature * self.std * torch.randn_like(self.mean))

    @torch.no_grad()
    def sample_n(self, n: int, temperature: float = 1.0) -> torch.Tensor:
        """`n` actions per row [..., n, d] without gradients, from this one distribution.

        For candidate sets (the critic's conservative term, critic-guided choice): one policy forward
        serves all n, instead of a forward over n copies of each state.
        """
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        shape = (*self.mean.shape[:-1], n, self.action_dim)
        noise = torch.randn(shape, dtype=self.mean.dtype, device=self.mean.device)
        return torch.tanh(self.mean.unsqueeze(-2) + temperature * self.std.unsqueeze(-2) * noise)


def gaussian_kl(
    mean_p: torch.Tensor, std_p: torch.Tensor, mean_q: torch.Tensor, std_q: torch.Tensor
) -> torch.Tensor:
    """KL(N_p || N_q) [B] between diagonal Gaussians, summed over the last dimension.

    KL = Σ_i [ log(σ_q/σ_p) + (σ_p² + (μ_p - μ_q)²) / (2σ_q²) - ½ ].
    tanh is a bijection, so this is also the KL between the squashed policies (DESIGN 2.5).
    """
    var_ratio = (std_p / std_q).square()
    mean_term = ((mean_p - mean_q) / std_q).square()
    return 0.5 * (var_ratio + mean_term - 1.0 - var_ratio.log()).sum(-1)


def uniform_prior_log_prob(action_dim: int) -> float:
    """log p(a) = -d log 2 for the uniform prior on [-1, 1]^d."""
    return -action_dim * _LOG_2
