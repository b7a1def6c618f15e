"""State-action critics Q(s, a): a LayerNorm MLP and the XQC critic (DESIGN.md 2.3-2.5).

`XQCCritic` follows XQC (Palenicek et al. 2025), itself built on CrossQ (Bhatt, Palenicek et al. 2024):
batch-normalised hidden layers whose weights are weight-normalised, and a categorical value head
trained with cross-entropy against a projected scalar target. Two CrossQ rules decide how it is used:

- the current (s, a) and the bootstrap (s', a') batches go through the critic in ONE train-mode forward
  (`joint_forward`), so both are normalised with the same batch statistics. Separate forwards would
  normalise the two batches differently (a' ~ π_θ is distributed unlike replay actions), and the TD
  target would compare values on two different scales;
- there is no target network: the bootstrap comes from the online critic's joint forward, gradient
  stopped. A target network stays optional (see `critic_losses.critic_predictions`).

Outside the TD forward (acting, the actor loss, the action-gradient penalty) evaluate the critic in
eval mode: batch norm then uses its running statistics, so Q(s_i, a_i) depends on row i only, as
the actor's ∇_a Q and the per-sample penalty assume (CrossQ's actor also reads the critic so).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import parametrize

# MAX_REWARD = −½·log(1e-5) + log 2, the CSIL bound on the coherent reward (DESIGN.md 2.4). Re-exported.
from coirl_ros.learning.coherent_reward import MAX_REWARD

__all__ = ["MAX_REWARD", "CriticEnsemble", "LayerNormCritic", "XQCCritic", "value_bounds"]


def value_bounds(
    gamma: float, max_reward: float = MAX_REWARD, min_reward: float | None = None
) -> tuple[float, float]:
    """The range of discounted returns, [min_reward, max_reward] / (1 − γ).

    `min_reward` defaults to −max_reward: the coherent reward has no finite lower bound (log π_BC → −∞
    far from the mean), so the support is made symmetric and lower targets are clipped to its edge,
    which still ranks them lowest.
    """
    if not 0.0 < gamma < 1.0:
        raise ValueError(f"gamma must lie in (0, 1), got {gamma}")
    low = -max_reward if min_reward is None else min_reward
    if not low < max_reward:
        raise ValueError(f"min_reward ({low}) must be below max_reward ({max_reward})")
    return low / (1.0 - gamma), max_reward / (1.0 - gamma)


class LayerNormCritic(nn.Module):
    """Q(s, a) = MLP([s, a]) with Linear → LayerNorm → ReLU per hidden layer and a scalar output."""

    def __init__(self, obs_dim: int, action_dim: int, hidden_sizes: Sequence[int] = (512, 512)) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = obs_dim + action_dim
        for size in hidden_sizes:
            layers += [nn.Linear(width, size), nn.LayerNorm(size), nn.ReLU()]
            width = size
        layers.append(nn.Linear(width, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, obs: Tensor, action: Tensor) -> Tensor:
        """Q values [B] for observations [B, obs_dim] and actions [B, action_dim]."""
        return self.net(torch.cat([obs, action], dim=-1)).squeeze(-1)


class _UnitNormRows(nn.Module):
    """Weight-norm parametrisation w = v / ‖v‖ per output row, without a gain.

    The gain of Salimans & Kingma's weight norm is redundant here: the batch norm right after the
    layer removes any per-unit scale.
    """

    def forward(self, weight: Tensor) -> Tensor:
        return weight / weight.norm(dim=1, keepdim=True).clamp_min(1e-8)


class XQCCritic(nn.Module):
    """XQC critic: BN on the input, then [weight-normed Linear → BatchNorm1d → ReLU] per hidden layer,
    and a categorical head of `num_bins` logits over atoms evenly spaced on [v_min, v_max].

    Q(s, a) = Σ_k softmax(logits)_k · z_k. Targets are projected onto the atoms with HL-Gauss
    (`project`). The head starts at zero, so every initial Q is the support midpoint (0 for the
    default symmetric bounds), which matches the coherent critic's V = 0 at the BC optimum.
    """

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        hidden_sizes: Sequence[int] = (512, 512),
        num_bins: int = 101,
        v_min: float | None = None,
        v_max: float | None = None,
        gamma: float = 0.99,
        sigma_ratio: float = 0.75,
        bn_momentum: float = 0.01,
    ) -> None:
        """`v_min`/`v_max` default to `value_bounds(gamma)`; `sigma_ratio` is the HL-Gauss σ in bin widths;
        `bn_momentum` is torch's (weight of the new batch), 0.01 as CrossQ's 0.99 decay."""
        super().__init__()
        default_min, default_max = value_bounds(gamma)
        v_min = default_min if v_min is None else v_min
        v_max = default_max if v_max is None else v_max
        if num_bins < 2:
            raise ValueError(f"num_bins must be at least 2, got {num_bins}")
        if not v_min < v_max:
            raise ValueError(f"v_min ({v_min}) must be below v_max ({v_max})")
        if sigma_ratio <= 0:
            raise ValueError(f"sigma_ratio must be positive, got {sigma_ratio}")
        self.num_bins, self.v_min, self.v_max = num_bins, float(v_min), float(v_max)
        self.register_buffer("support", torch.linspace(v_min, v_max, num_bins))
        bin_width = (v_max - v_min) / (num_bins - 1)
        # Atoms are bin centres; the outer bins reach half a width beyond v_min and v_max.
        self.register_buffer(
            "bin_edges", torch.linspace(v_min - bin_width / 2, v_max + bin_width / 2, num_bins + 1)
        )
        self.sigma = sigma_ratio * bin_width

        layers: list[nn.Module] = [nn.BatchNorm1d(obs_dim + action_dim, momentum=bn_momentum)]
        width = obs_dim + action_dim
        for size in hidden_sizes:
            linear = nn.Linear(width, size, bias=False)  # the BN shift makes a bias redundant
            parametrize.register_parametrization(linear, "weight", _UnitNormRows())
            layers += [linear, nn.BatchNorm1d(size, momentum=bn_momentum), nn.ReLU()]
            width = size
        self.torso = nn.Sequential(*layers)
        self.head = nn.Linear(width, num_bins)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        self.project_weights_()

    # ---- network --------------------------------------------------------------------------------
    def logits(self, obs: Tensor, action: Tensor) -> Tensor:
        """Categorical logits [B, num_bins] over `support`."""
        return self.head(self.torso(torch.cat([obs, action], dim=-1)))

    def values_from_logits(self, logits: Tensor) -> Tensor:
        """Expected value Σ_k softmax(logits)_k z_k, shape [B]."""
        return torch.softmax(logits, dim=-1) @ self.support

    def forward(self, obs: Tensor, action: Tensor) -> Tensor:
        """Q values [B]: the expectation of the categorical value distribution."""
        return self.values_from_logits(self.logits(obs, action))

    def joint_forward(
        self, obs: Tensor, action: Tensor, next_obs: Tensor, next_action: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Logits for (s, a) [B, K] and for (s', a') [B', K] from ONE forward of the stacked batch.

        In train mode the batch-norm statistics are those of both batches together (CrossQ), so the
        prediction and its bootstrap are normalised alike; running statistics are updated once. The
        second output carries gradient: the caller stops it (`critic_losses.critic_predictions`).
        """
        n = obs.shape[0]
        logits = self.logits(torch.cat([obs, next_obs], dim=0), torch.cat([action, next_action], dim=0))
        return logits[:n], logits[n:]

    @torch.no_grad()
    def project_weights_(self) -> None:
        """Rescale the weight-normed layers' raw weights to unit row norm; the function is unchanged.

        Call after each optimiser step. The output is invariant to the raw norm ‖v‖, but a gradient
        step of fixed size turns the direction by ~lr/‖v‖, and ‖v‖ grows as training goes on; keeping
        ‖v‖ = 1 holds that effective learning rate constant (the point of WN in XQC).
        """
        for module in self.torso:
            if isinstance(module, nn.Linear) and parametrize.is_parametrized(module, "weight"):
                raw = module.parametrizations.weight.original
                raw.div_(raw.norm(dim=1, keepdim=True).clamp_min(1e-8))

    # ---- targets --------------------------------------------------------------------------------
    @torch.no_grad()
    def project(self, target_values: Tensor) -> Tensor:
        """HL-Gauss projection of scalar targets [B] onto the atoms: probabilities [B, num_bins].

        p_k = Φ((e_{k+1} − y)/σ) − Φ((e_k − y)/σ), renormalised over [e_0, e_K], with bin edges e,
        σ = sigma_ratio · bin width and y clipped to [v_min, v_max]. HL-Gauss rather than two-hot:
        Farebrother et al. (2024, "Stop Regressing") found it the better classification target for
        value learning; its smoothing spreads the target over neighbouring atoms, which regularises
        and gives every nearby logit a gradient, while its mean still equals y to < 1e-3 bin widths
        for y at least ~3σ inside the support. Within ~σ of an edge the truncated Gaussian's mean is
        pulled inward by up to ~0.3 bin widths — the price of a bounded support.
        """
        y = target_values.clamp(self.v_min, self.v_max).unsqueeze(-1)
        cdf = torch.special.ndtr((self.bin_edges - y) / self.sigma)
        mass = cdf[:, 1:] - cdf[:, :-1]
        return mass / (cdf[:, -1:] - cdf[:, :1]).clamp_min(1e-12)

    def cross_entropy(self, logits: Tensor, target_values: Tensor) -> Tensor:
        """Per-sample cross-entropy [B] between softmax(logits) and `project(target_values)`."""
        return -(self.project(target_values) * F.log_softmax(logits, dim=-1)).sum(dim=-1)


class CriticEnsemble(nn.Module):
    """K critics of one kind, initialised independently, read as one lower confidence bound:

        Q(s, a) = mean_k Q_k(s, a) − pessimism · std_k Q_k(s, a).

    Why: a single critic that sees the action at all ranked actions near π_BC's mean too coarsely,
    and its slope pulled the actor to worse actions (lift, threading; docs/learning_results.md).
    Members fitted to the same data agree where the data are and disagree away from them, so the
    lower bound is flat or falling where any member is unsure and the actor moves only where all
    agree (the pessimism of SAC-N / EDAC and REDQ's minimum over members). Each member is trained on
    its own TD error against one shared target whose bootstrap is this same bound
    (`critic_losses.critic_predictions`); penalties apply to each member (`critic_losses`).
    """

    def __init__(self, members: Sequence[nn.Module], pessimism: float) -> None:
        super().__init__()
        if len(members) < 2:
            raise ValueError(f"an ensemble needs at least 2 critics, got {len(members)}")
        if pessimism < 0:
            raise ValueError(f"pessimism must be >= 0, got {pessimism}")
        self.members = nn.ModuleList(members)
        self.pessimism = pessimism

    def combine(self, values: Tensor) -> Tensor:
        """The bound [B] from the members' values [K, B] (population std: K = 2 gives |Q_1 − Q_2| / 2)."""
        return values.mean(dim=0) - self.pessimism * values.std(dim=0, correction=0)

    def member_values(self, obs: Tensor, action: Tensor) -> Tensor:
        """Every member's Q [K, B]."""
        return torch.stack([member(obs, action) for member in self.members])

    def forward(self, obs: Tensor, action: Tensor) -> Tensor:
        """The lower confidence bound [B]."""
        return self.combine(self.member_values(obs, action))

    @torch.no_grad()
    def project_weights_(self) -> None:
        """`XQCCritic.project_weights_` on each XQC member (call after each optimiser step)."""
        for member in self.members:
            if isinstance(member, XQCCritic):
                member.project_weights_()
