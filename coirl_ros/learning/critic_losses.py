"""Critic losses and TD targets (DESIGN.md 2.3, 2.4, 2.6).

`gamma` is the discount of the bootstrap: a float, or a per-row tensor [B] γ^k for n-step returns,
whose `reward` is then the discounted sum of the window's k rewards (Learner._n_step_return).

A TD update is three steps, identical for both critic kinds:
    prediction, next_q = critic_predictions(critic, target_critic, s, a, s', a')
    y = soft_td_target(...) | sparse_td_target(...) | r + γ(1 − done)·next_q      (no gradient)
    loss, metrics = td_loss(critic, prediction, y)
`critic_predictions` hides the one difference that matters: the XQC critic needs (s, a) and (s', a')
in a single batch-norm forward (critics.py), so the prediction and the bootstrap come out of one call.
Metric values are detached 0-d tensors (no device sync); call `.item()` when logging.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from coirl_ros.learning.critics import CriticEnsemble, XQCCritic

Metrics = dict[str, Tensor]


class CriticBatch(NamedTuple):
    """A batch of (s, a, s', a', done); a' is the demo's next action (SARSA) or a sample of π_θ(·|s')."""

    obs: Tensor  # [B, obs_dim]
    action: Tensor  # [B, action_dim]
    next_obs: Tensor  # [B, obs_dim]
    next_action: Tensor  # [B, action_dim]
    done: Tensor  # [B], 1.0 where s' is terminal: no bootstrap (a time limit is NOT done)


@contextmanager
def _eval_mode(module: nn.Module):
    """Temporarily switch to eval mode (batch norm on running statistics), restoring the old mode."""
    was_training = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was_training)


def critic_predictions(
    critic: nn.Module,
    target_critic: nn.Module | None,
    obs: Tensor,
    action: Tensor,
    next_obs: Tensor,
    next_action: Tensor,
) -> tuple[Tensor, Tensor]:
    """The critic's prediction on (s, a) and the gradient-free bootstrap value Q̄(s', a') [B].

    The prediction is what `td_loss` consumes: logits [B, K] for `XQCCritic`, values [B] otherwise.
    Q̄ is `target_critic` if given, else the critic itself with the gradient stopped.
    - XQC: one joint forward of both batches (shared BN statistics, CrossQ); with a target network
      the target also takes the joint batch, so its bootstrap is normalised like the prediction.
    - Other critics: plain forwards.
    - `CriticEnsemble`: each member's prediction (a list, in member order) and one bootstrap, the
      ensemble's lower bound of the members' bootstraps (each member by the rules above).
    """
    if isinstance(critic, CriticEnsemble):
        targets = [None] * len(critic.members) if target_critic is None else list(target_critic.members)
        pairs = [
            critic_predictions(member, target, obs, action, next_obs, next_action)
            for member, target in zip(critic.members, targets, strict=True)
        ]
        return [p for p, _ in pairs], critic.combine(torch.stack([q for _, q in pairs]))
    if isinstance(critic, XQCCritic):
        logits, next_logits = critic.joint_forward(obs, action, next_obs, next_action)
        if target_critic is None:
            return logits, critic.values_from_logits(next_logits.detach())
        with torch.no_grad():
            _, target_next_logits = target_critic.joint_forward(obs, action, next_obs, next_action)
        return logits, target_critic.values_from_logits(target_next_logits)
    with torch.no_grad():
        next_q = (critic if target_critic is None else target_critic)(next_obs, next_action)
    return critic(obs, action), next_q


def td_loss(
    critic: nn.Module, prediction: Tensor | list[Tensor], target_values: Tensor
) -> tuple[Tensor, Metrics]:
    """TD regression of the prediction onto fixed targets y [B].

    XQC:      L = mean_i CE( HL-Gauss(y_i), softmax(logits_i) ) = −mean_i Σ_k p_k(y_i) log softmax(logits_i)_k
    scalar:   L = mean_i (Q_i − y_i)²
    ensemble: the mean of the members' losses (each member's gradient is its own; the mean keeps the
              scale of one critic's loss and metrics), `prediction` one per member.
    """
    target_values = target_values.detach()
    if isinstance(critic, CriticEnsemble):
        parts = [td_loss(m, p, target_values) for m, p in zip(critic.members, prediction, strict=True)]
        return _mean_of(parts)
    if isinstance(critic, XQCCritic):
        loss = critic.cross_entropy(prediction, target_values).mean()
        q = critic.values_from_logits(prediction)
        metrics = {"losses/critic_td_ce": loss.detach()}
    else:
        q = prediction
        loss = F.mse_loss(q, target_values)
        metrics = {"losses/critic_td_mse": loss.detach()}
    metrics |= {
        "critic/q_mean": q.detach().mean(),
        "critic/target_mean": target_values.mean(),
        "critic/td_abs_error": (q.detach() - target_values).abs().mean(),
    }
    return loss, metrics


def _mean_of(parts: list[tuple[Tensor, Metrics]]) -> tuple[Tensor, Metrics]:
    """The mean loss and mean metrics of an ensemble's members."""
    loss = torch.stack([loss for loss, _ in parts]).mean()
    metrics = {k: torch.stack([m[k] for _, m in parts]).mean() for k in parts[0][1]}
    return loss, metrics


def action_gradient_penalty(critic: nn.Module, obs: Tensor, action: Tensor) -> Tensor:
    """G = sqrt( mean_i ‖∇_a Q(s_i, a)|_{a=a_i}‖² ) on demo pairs (DESIGN.md 2.3).

    Makes demo actions stationary points of Q, so the actor is not pushed off the demonstrations
    by spurious slopes. The critic is evaluated in eval mode: with batch norm on batch statistics,
    ∇_{a_i} Σ_j Q_j would add cross-sample terms through the batch mean and variance, whereas with
    running statistics each Q_i depends on a_i alone (and it is the function the actor ascends).
    Differentiable w.r.t. the critic's parameters (double backprop). For a `CriticEnsemble`, the mean
    of the members' penalties: each member's demo actions are its own stationary points.
    """
    if isinstance(critic, CriticEnsemble):
        return torch.stack([action_gradient_penalty(m, obs, action) for m in critic.members]).mean()
    action = action.detach().requires_grad_(True)
    with _eval_mode(critic):
        q = critic(obs, action)
    (grad,) = torch.autograd.grad(q.sum(), action, create_graph=True, allow_unused=True)
    if grad is None:  # the critic ignores the action altogether
        return q.sum() * 0.0
    # The epsilon keeps the sqrt's gradient finite when the critic is (nearly) flat in a.
    return torch.sqrt(grad.pow(2).sum(dim=-1).mean() + 1e-12)


def conservative_penalty(
    critic: nn.Module, obs: Tensor, action: Tensor, candidates: Tensor, temperature: float
) -> tuple[Tensor, Metrics]:
    """A CQL(H)-style term that keeps Q low at actions the data never tried:

        C = mean_i [ τ · log( (1/N) Σ_j exp(Q(s_i, a_ij) / τ) ) − Q(s_i, a_i) ],

    a soft maximum (temperature τ, value units) of Q over N candidate actions per state minus Q at the
    recorded action. Minimising it lowers Q where it is high away from the recorded actions and raises
    it at them. It is 0 when the critic is flat in a, so it never pushes a critic that ignores the
    action; it only stops one that has a slope from extrapolating it (bench/critic_guided_eval.py
    found the critics' favourite candidates fail every episode). obs [B, o], action [B, d],
    candidates [B, N, d]. Evaluated in eval mode, as `action_gradient_penalty`, so that batch norm
    does not couple the rows; differentiable w.r.t. the critic's parameters. For a `CriticEnsemble`,
    the mean over its members.
    """
    if isinstance(critic, CriticEnsemble):
        parts = [conservative_penalty(m, obs, action, candidates, temperature) for m in critic.members]
        return _mean_of(parts)
    b, n, d = candidates.shape
    with _eval_mode(critic):
        q_data = critic(obs, action.detach())
        flat = candidates.detach().reshape(b * n, d)
        q_candidates = critic(obs.repeat_interleave(n, dim=0), flat).view(b, n)
    soft_max = temperature * (torch.logsumexp(q_candidates / temperature, dim=1) - math.log(n))
    gap = soft_max - q_data
    return gap.mean(), {
        "losses/critic_conservative": gap.mean().detach(),
        "critic/candidate_q_std": q_candidates.detach().std(dim=1).mean(),
    }


def sarsa_pretrain_loss(
    critic: nn.Module,
    target_critic: nn.Module | None,
    batch: CriticBatch,
    gamma: float | Tensor,
    reward: Tensor,
    penalty_weight: float,
    max_value: float | None = None,
    terminal_value: Tensor | None = None,
) -> tuple[Tensor, Metrics]:
    """Critic pre-training on demonstrations (DESIGN.md 2.3):

        L = TD( Q(s, a), y ) + λ · sqrt(mean ‖∇_a Q(s, a)‖²),
        y = r + γ(1 − done) · Q̄(s', a') + γ · done · V_terminal,

    with (s, a, s', a') all from the demos, r [B] the coherent reward of (s, a), λ = penalty_weight,
    TD the cross-entropy (XQC) or squared error (`td_loss`), Q̄(s', a') optionally clipped above at
    `max_value`, and V_terminal the value credited at terminal rows (0 when None: a plain cut).
    """
    prediction, next_q = critic_predictions(
        critic, target_critic, batch.obs, batch.action, batch.next_obs, batch.next_action
    )
    if max_value is not None:
        next_q = next_q.clamp(max=max_value)
    target = reward.detach() + gamma * (1.0 - batch.done) * next_q
    if terminal_value is not None:
        target = target + gamma * batch.done * terminal_value.detach()
    loss, metrics = td_loss(critic, prediction, target)
    penalty = action_gradient_penalty(critic, batch.obs, batch.action)
    metrics["losses/critic_grad_penalty"] = penalty.detach()
    total = loss + penalty_weight * penalty
    metrics["losses/critic_pretrain"] = total.detach()
    return total, metrics


def soft_td_target(
    reward: Tensor,
    done: Tensor,
    next_q: Tensor,
    next_log_pi: Tensor,
    next_log_prior_bc: Tensor,
    gamma: float | Tensor,
    beta: float,
    max_value: float,
    terminal_value: Tensor | None = None,
) -> Tensor:
    """The CSIL soft TD target (DESIGN.md 2.4), no gradient:

        V̄(s') = Q̄(s', a') − β · ( log π_θ(a'|s') − log π_BC(a'|s') ),   a' ~ π_θ(·|s')
        y     = r + γ · (1 − done) · min( V̄(s'), max_value ) + γ · done · V_terminal

    V_terminal (`terminal_value`, 0-d or [B]) is what a terminal row is credited instead of a
    bootstrap; None credits nothing (the return is cut).

    What is clipped: the bootstrapped soft value V̄(s') — Q̄ together with its KL term — from above
    only, at max_value (MAX_REWARD / (1 − γ), the largest return the bounded coherent reward allows).
    Neither the reward nor the final target is clipped, and nothing is clipped from below, as in the
    CSIL reference. All inputs are [B].
    """
    with torch.no_grad():
        soft_value = next_q - beta * (next_log_pi - next_log_prior_bc)
        target = reward + gamma * (1.0 - done) * soft_value.clamp(max=max_value)
        if terminal_value is not None:
            target = target + gamma * done * terminal_value
        return target


def sparse_td_target(success_reward: Tensor, done: Tensor, next_q: Tensor, gamma: float | Tensor) -> Tensor:
    """The sparse-reward baseline's target (DESIGN.md 2.6), no gradient:

        y = clip( r + γ · (1 − done) · Q̄(s', a'), 0, 1 ),   r ∈ {0, 1} the success flag.

    With a binary success reward that ends the episode, every true return lies in [0, 1], so the
    clamp only removes bootstrap overestimation.
    """
    with torch.no_grad():
        return (success_reward + gamma * (1.0 - done) * next_q).clamp(0.0, 1.0)


def soft_critic_loss(
    critic: nn.Module,
    target_critic: nn.Module | None,
    batch: CriticBatch,
    reward: Tensor,
    next_log_pi: Tensor,
    next_log_prior_bc: Tensor,
    gamma: float | Tensor,
    beta: float,
    max_value: float,
    terminal_value: Tensor | None = None,
) -> tuple[Tensor, Metrics]:
    """Online CSIL critic TD loss: TD( Q(s, a), soft_td_target(...) ), batch.next_action ~ π_θ(·|s').

    The action-gradient penalty on the batch's demo rows is added by the caller, who knows them:
    L = this + λ · action_gradient_penalty(critic, s_demo, a_demo).
    """
    prediction, next_q = critic_predictions(
        critic, target_critic, batch.obs, batch.action, batch.next_obs, batch.next_action
    )
    target = soft_td_target(
        reward.detach(),
        batch.done,
        next_q,
        next_log_pi.detach(),
        next_log_prior_bc.detach(),
        gamma,
        beta,
        max_value,
        terminal_value,
    )
    return td_loss(critic, prediction, target)


def sparse_critic_loss(
    critic: nn.Module,
    target_critic: nn.Module | None,
    batch: CriticBatch,
    success_reward: Tensor,
    gamma: float | Tensor,
) -> tuple[Tensor, Metrics]:
    """Sparse-baseline critic TD loss: TD( Q(s, a), sparse_td_target(...) ), batch.next_action ~ π_θ(·|s')."""
    prediction, next_q = critic_predictions(
        critic, target_critic, batch.obs, batch.action, batch.next_obs, batch.next_action
    )
    return td_loss(critic, prediction, sparse_td_target(success_reward, batch.done, next_q, gamma))
