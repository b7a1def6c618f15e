"""Critics (LayerNorm MLP, XQC) and their losses: shapes, HL-Gauss projection, the joint batch-norm
forward, the action-gradient penalty, SARSA pre-training on a known chain, and the TD targets."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from coirl_ros.learning.critic_losses import (
    CriticBatch,
    action_gradient_penalty,
    conservative_penalty,
    critic_predictions,
    sarsa_pretrain_loss,
    soft_td_target,
    sparse_td_target,
    td_loss,
)
from coirl_ros.learning.critics import MAX_REWARD, CriticEnsemble, LayerNormCritic, XQCCritic, value_bounds

torch.set_num_threads(1)

OBS_DIM, ACTION_DIM = 5, 2


def _xqc(hidden=(32, 32), num_bins=51, v_min=-5.0, v_max=5.0, random_head=False, **kwargs) -> XQCCritic:
    critic = XQCCritic(OBS_DIM, ACTION_DIM, hidden, num_bins=num_bins, v_min=v_min, v_max=v_max, **kwargs)
    if random_head:  # the zero-initialised head makes every Q equal; some tests need a non-flat critic
        nn.init.normal_(critic.head.weight, std=0.5)
    return critic


def _batch(n: int, shift: float = 0.0, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    obs = torch.randn(n, OBS_DIM, generator=g) + shift
    action = torch.rand(n, ACTION_DIM, generator=g) * 2 - 1
    return obs, action


# ---- shapes and construction -----------------------------------------------------------------
def test_layernorm_critic_returns_one_value_per_pair():
    torch.manual_seed(0)
    obs, action = _batch(7)
    q = LayerNormCritic(OBS_DIM, ACTION_DIM, (16, 16))(obs, action)
    assert q.shape == (7,)


def test_xqc_critic_shapes():
    torch.manual_seed(0)
    critic = _xqc(num_bins=21)
    obs, action = _batch(6)
    next_obs, next_action = _batch(4, seed=1)
    assert critic(obs, action).shape == (6,)
    assert critic.logits(obs, action).shape == (6, 21)
    logits, next_logits = critic.joint_forward(obs, action, next_obs, next_action)
    assert logits.shape == (6, 21) and next_logits.shape == (4, 21)
    probs = critic.project(torch.tensor([0.3, -1.0, 4.9]))
    assert probs.shape == (3, 21)
    assert torch.allclose(probs.sum(-1), torch.ones(3)) and (probs >= 0).all()


def test_xqc_starts_at_the_support_midpoint():
    torch.manual_seed(0)
    critic = _xqc(v_min=-2.0, v_max=6.0)
    obs, action = _batch(8)
    assert torch.allclose(critic(obs, action), torch.full((8,), 2.0), atol=1e-5)


def test_default_support_comes_from_the_csil_reward_bound():
    assert math.isclose(MAX_REWARD, -0.5 * math.log(1e-5) + math.log(2.0)) and 6.44 < MAX_REWARD < 6.46
    low, high = value_bounds(0.99)
    assert high == pytest.approx(MAX_REWARD / 0.01) and low == pytest.approx(-high)
    assert value_bounds(0.9, max_reward=2.0, min_reward=0.0) == pytest.approx((0.0, 20.0))
    critic = XQCCritic(OBS_DIM, ACTION_DIM, (8,), gamma=0.99)
    assert (critic.v_min, critic.v_max) == pytest.approx(value_bounds(0.99))
    with pytest.raises(ValueError, match="gamma"):
        value_bounds(1.0)
    with pytest.raises(ValueError, match="v_min"):
        XQCCritic(OBS_DIM, ACTION_DIM, (8,), v_min=1.0, v_max=1.0)
    with pytest.raises(ValueError, match="num_bins"):
        XQCCritic(OBS_DIM, ACTION_DIM, (8,), num_bins=1)


# ---- HL-Gauss projection ---------------------------------------------------------------------
def test_projection_mean_equals_targets_inside_the_support():
    critic = _xqc(num_bins=51, v_min=-5.0, v_max=5.0)  # bin width 0.2, sigma 0.15
    targets = torch.linspace(-4.5, 4.5, 37) + 0.0123  # off-atom values, >= 3 sigma inside the edges
    probs = critic.project(targets)
    expected = probs @ critic.support
    assert torch.allclose(expected, targets, atol=1e-3 * 0.2)
    # The mass sits around the target: the most probable atom is the nearest one.
    nearest = (critic.support[None, :] - targets[:, None]).abs().argmin(-1)
    assert torch.equal(probs.argmax(-1), nearest)


def test_projection_clips_targets_outside_the_support_to_its_edges():
    critic = _xqc(num_bins=51, v_min=-5.0, v_max=5.0)
    above = critic.project(torch.tensor([5.0, 5.3, 1e4]))
    below = critic.project(torch.tensor([-5.0, -80.0]))
    assert torch.allclose(above[1:], above[:1].expand(2, -1)) and torch.allclose(below[1], below[0])
    assert above.argmax(-1).eq(50).all() and below.argmax(-1).eq(0).all()
    # The truncated Gaussian's mean is pulled inward a little at the edge, by less than half a bin.
    assert 5.0 - 0.1 < (above[0] @ critic.support) < 5.0
    assert -5.0 < (below[0] @ critic.support) < -5.0 + 0.1


def test_xqc_td_loss_is_cross_entropy_to_the_projected_target():
    torch.manual_seed(0)
    critic = _xqc(random_head=True)
    obs, action = _batch(6)
    logits = critic.logits(obs, action)
    target = torch.linspace(-1.0, 2.0, 6)
    loss, metrics = td_loss(critic, logits, target)
    manual = -(critic.project(target) * torch.log_softmax(logits, -1)).sum(-1).mean()
    assert torch.allclose(loss, manual)
    assert {"losses/critic_td_ce", "critic/q_mean", "critic/target_mean"} <= metrics.keys()
    mse, mse_metrics = td_loss(LayerNormCritic(OBS_DIM, ACTION_DIM, (8,)), torch.zeros(6), target)
    assert torch.allclose(mse, (target**2).mean()) and "losses/critic_td_mse" in mse_metrics


# ---- batch norm: the joint forward -----------------------------------------------------------
def test_joint_forward_normalises_both_batches_with_shared_statistics():
    torch.manual_seed(0)
    critic = _xqc(random_head=True, bn_momentum=0.1)
    obs, action = _batch(16)
    next_obs, next_action = _batch(16, shift=3.0, seed=1)  # a differently distributed batch
    tracked = critic.torso[0].num_batches_tracked.item()
    logits, next_logits = critic.joint_forward(obs, action, next_obs, next_action)
    assert critic.torso[0].num_batches_tracked.item() == tracked + 1  # running stats updated once
    stacked = critic.logits(torch.cat([obs, next_obs]), torch.cat([action, next_action]))
    assert torch.allclose(torch.cat([logits, next_logits]), stacked, atol=1e-5)
    separate = critic.logits(obs, action)
    separate_next = critic.logits(next_obs, next_action)
    assert (logits - separate).abs().max() > 1e-2 and (next_logits - separate_next).abs().max() > 1e-2
    # In eval mode (running statistics) rows are independent, so the two ways agree.
    critic.eval()
    logits, next_logits = critic.joint_forward(obs, action, next_obs, next_action)
    assert torch.allclose(logits, critic.logits(obs, action), atol=1e-5)
    assert torch.allclose(next_logits, critic.logits(next_obs, next_action), atol=1e-5)


def test_critic_predictions_bootstrap_from_the_joint_forward_without_gradient():
    torch.manual_seed(0)
    critic = _xqc(random_head=True)
    obs, action = _batch(8)
    next_obs, next_action = _batch(8, shift=1.0, seed=1)
    prediction, next_q = critic_predictions(critic, None, obs, action, next_obs, next_action)
    _, next_logits = critic.joint_forward(obs, action, next_obs, next_action)
    assert prediction.shape == (8, 51) and prediction.requires_grad and not next_q.requires_grad
    assert torch.allclose(next_q, critic.values_from_logits(next_logits), atol=1e-5)
    # An optional target network bootstraps from its own joint forward (a deep copy here).
    target = copy.deepcopy(critic)
    nn.init.normal_(target.head.weight, std=0.5)
    _, next_q_target = critic_predictions(critic, target, obs, action, next_obs, next_action)
    _, target_next_logits = target.joint_forward(obs, action, next_obs, next_action)
    assert torch.allclose(next_q_target, target.values_from_logits(target_next_logits), atol=1e-5)
    assert not torch.allclose(next_q_target, next_q)


def test_weight_projection_keeps_the_function_and_unit_rows():
    torch.manual_seed(0)
    critic = _xqc(random_head=True).eval()
    obs, action = _batch(8)
    before = critic(obs, action)
    linear = critic.torso[1]
    with torch.no_grad():
        linear.parametrizations.weight.original.mul_(3.0)
    assert torch.allclose(critic(obs, action), before, atol=1e-5)  # invariant to the raw norm
    critic.project_weights_()
    raw = linear.parametrizations.weight.original
    assert torch.allclose(raw.norm(dim=1), torch.ones(raw.shape[0]), atol=1e-6)
    assert torch.allclose(critic(obs, action), before, atol=1e-5)


# ---- action-gradient penalty -----------------------------------------------------------------
class _StateOnlyCritic(nn.Module):
    def __init__(self, uses_action: bool) -> None:
        super().__init__()
        self.net = nn.Linear(OBS_DIM, 1)
        self.uses_action = uses_action

    def forward(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        q = self.net(obs).squeeze(-1)
        return q + 0.0 * action.sum(-1) if self.uses_action else q


class _LinearInAction(nn.Module):
    def __init__(self, w: torch.Tensor) -> None:
        super().__init__()
        self.w = nn.Parameter(w)

    def forward(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        return obs.sum(-1) + action @ self.w


def test_gradient_penalty_is_zero_for_a_critic_constant_in_the_action():
    obs, action = _batch(10)
    for uses_action in (True, False):
        assert action_gradient_penalty(_StateOnlyCritic(uses_action), obs, action).item() < 1e-5


def test_gradient_penalty_is_the_action_gradient_norm():
    obs, action = _batch(10)
    w = torch.tensor([3.0, -4.0])
    penalty = action_gradient_penalty(_LinearInAction(w), obs, action)
    assert penalty.item() == pytest.approx(5.0, rel=1e-5)
    torch.manual_seed(0)
    assert action_gradient_penalty(LayerNormCritic(OBS_DIM, ACTION_DIM, (16,)), obs, action).item() > 1e-3


def test_gradient_penalty_uses_per_sample_gradients_under_batch_norm():
    torch.manual_seed(0)
    critic = _xqc(random_head=True)
    obs, action = _batch(12)
    critic.logits(obs * 2 + 1, action)  # move the running statistics away from their initial values
    penalty = action_gradient_penalty(critic, obs, action)
    assert critic.training  # the mode is restored
    critic.eval()
    norms = []
    for i in range(12):  # one row at a time: no coupling through batch statistics is possible
        a = action[i : i + 1].clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(critic(obs[i : i + 1], a).sum(), a)
        norms.append(grad.pow(2).sum())
    assert penalty.item() == pytest.approx(torch.stack(norms).mean().sqrt().item(), rel=1e-4)


@pytest.mark.parametrize("kind", ["layernorm", "xqc"])
def test_training_on_the_penalty_flattens_q_at_demo_actions(kind):
    torch.manual_seed(0)
    critic = LayerNormCritic(OBS_DIM, ACTION_DIM, (32, 32)) if kind == "layernorm" else _xqc(random_head=True)
    obs, action = _batch(32)
    initial = action_gradient_penalty(critic, obs, action).item()
    assert initial > 1e-2
    optimiser = torch.optim.Adam(critic.parameters(), lr=3e-3)
    for _ in range(150):
        penalty = action_gradient_penalty(critic, obs, action)
        optimiser.zero_grad()
        penalty.backward()
        optimiser.step()
    assert action_gradient_penalty(critic, obs, action).item() < 0.1 * initial


# ---- SARSA pre-training on a chain with a known return ---------------------------------------
# ---- conservative term --------------------------------------------------------------------------
def test_conservative_penalty_matches_a_hand_computation_and_is_zero_for_a_flat_critic():
    obs, action = _batch(6)
    candidates = torch.rand(6, 4, ACTION_DIM, generator=torch.Generator().manual_seed(1)) * 2 - 1
    w = torch.tensor([3.0, -4.0])
    gap, metrics = conservative_penalty(_LinearInAction(w), obs, action, candidates, temperature=0.5)
    q_candidates = obs.sum(-1, keepdim=True) + candidates @ w  # [6, 4]
    q_data = obs.sum(-1) + action @ w
    soft_max = 0.5 * (torch.logsumexp(q_candidates / 0.5, dim=1) - math.log(4))
    assert gap.item() == pytest.approx((soft_max - q_data).mean().item(), rel=1e-5)
    assert metrics["critic/candidate_q_std"].item() > 0
    flat, _ = conservative_penalty(_StateOnlyCritic(True), obs, action, candidates, temperature=0.5)
    assert abs(flat.item()) < 1e-5  # no slope in a: nothing to push down


@pytest.mark.parametrize("kind", ["layernorm", "xqc"])
def test_conservative_term_lowers_q_away_from_the_recorded_actions(kind):
    """TD regression alone lets an untried action inherit a high value; with the term it stays below."""
    torch.manual_seed(0)
    obs, _ = _batch(64)
    action = torch.full((64, ACTION_DIM), -0.5)  # every recorded action sits in one corner
    far = torch.full((64, ACTION_DIM), 0.8)
    targets = torch.full((64,), 2.0)

    def gap_after(weight: float) -> float:
        torch.manual_seed(0)
        critic = LayerNormCritic(OBS_DIM, ACTION_DIM, (32, 32)) if kind == "layernorm" else _xqc()
        optimiser = torch.optim.Adam(critic.parameters(), lr=3e-3)
        for _ in range(200):
            prediction = critic.logits(obs, action) if kind == "xqc" else critic(obs, action)
            loss, _ = td_loss(critic, prediction, targets)
            candidates = torch.rand(64, 4, ACTION_DIM) * 2 - 1
            gap, _ = conservative_penalty(critic, obs, action, candidates, temperature=0.1)
            optimiser.zero_grad()
            (loss + weight * gap).backward()
            optimiser.step()
        critic.eval()
        with torch.no_grad():
            return (critic(obs, action) - critic(obs, far)).mean().item()

    assert gap_after(1.0) > gap_after(0.0) + 0.2
    assert gap_after(1.0) > 0.2  # the recorded actions are worth clearly more than the untried one


def _chain(gamma: float, copies: int = 8):
    """5 states (one-hot), one demo action per state, s_i → s_{i+1}, terminal at the last state."""
    rewards = torch.tensor([1.0, 0.5, 1.0, 0.0, 2.0])
    n = len(rewards)
    obs = torch.eye(n)
    angles = torch.arange(n, dtype=torch.float32)
    action = 0.8 * torch.stack([torch.cos(angles), torch.sin(angles)], dim=-1)
    nxt = torch.tensor([1, 2, 3, 4, 4])  # the terminal's successor is ignored through (1 - done)
    done = torch.tensor([0.0, 0.0, 0.0, 0.0, 1.0])
    returns = torch.zeros(n)
    running = 0.0
    for i in reversed(range(n)):
        running = rewards[i].item() + gamma * running * (1.0 - done[i].item())
        returns[i] = running
    batch = CriticBatch(obs, action, obs[nxt], action[nxt], done)
    batch = CriticBatch(*(t.repeat(copies, *[1] * (t.dim() - 1)) for t in batch))
    return batch, rewards.repeat(copies), returns


@pytest.mark.parametrize("kind", ["layernorm", "xqc"])
def test_sarsa_pretraining_recovers_the_discounted_return(kind):
    torch.manual_seed(0)
    gamma = 0.9
    batch, reward, returns = _chain(gamma)  # returns: 3.572, 2.858, 2.62, 1.8, 2.0
    if kind == "layernorm":
        critic = LayerNormCritic(OBS_DIM, ACTION_DIM, (64, 64))
        target = copy.deepcopy(critic).requires_grad_(False)  # Polyak target, as in the CSIL reference
    else:
        critic, target = _xqc(hidden=(64, 64), bn_momentum=0.1), None  # CrossQ: no target network
    optimiser = torch.optim.Adam(critic.parameters(), lr=3e-3)
    td_key = "losses/critic_td_mse" if kind == "layernorm" else "losses/critic_td_ce"
    history = []
    for _ in range(400):
        loss, metrics = sarsa_pretrain_loss(critic, target, batch, gamma, reward, penalty_weight=0.1)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        history.append(metrics[td_key].item())
        if kind == "xqc":
            critic.project_weights_()
        else:
            with torch.no_grad():
                for p, p_target in zip(critic.parameters(), target.parameters(), strict=True):
                    p_target.lerp_(p, 0.05)
    assert sum(history[-20:]) < 0.5 * sum(history[:20])
    with torch.no_grad():
        if kind == "xqc":  # the TD forward's function (batch statistics of the joint batch) ...
            logits, _ = critic.joint_forward(batch.obs, batch.action, batch.next_obs, batch.next_action)
            q_train = critic.values_from_logits(logits)[:5]
            assert torch.allclose(q_train, returns, atol=0.1), (q_train, returns)
            critic.eval()  # ... and the acting function (running statistics) agree with the return
        q = critic(batch.obs[:5], batch.action[:5])
    assert torch.allclose(q, returns, atol=0.1), (q, returns)


# ---- critic ensemble ---------------------------------------------------------------------------
def test_ensemble_reads_its_members_as_a_lower_confidence_bound():
    obs, action = _batch(6)
    members = [_LinearInAction(torch.tensor([1.0, 0.0])), _LinearInAction(torch.tensor([-1.0, 2.0]))]
    ensemble = CriticEnsemble(members, pessimism=2.0)
    q = torch.stack([m(obs, action) for m in members])
    assert torch.allclose(ensemble(obs, action), q.mean(0) - 2.0 * (q[0] - q[1]).abs() / 2, atol=1e-6)
    # Its penalty is the members' mean: each member's demo actions are its own stationary points.
    penalties = [action_gradient_penalty(m, obs, action) for m in members]
    assert action_gradient_penalty(ensemble, obs, action).item() == pytest.approx(
        (sum(penalties) / 2).item(), rel=1e-6
    )
    with pytest.raises(ValueError, match="at least 2"):
        CriticEnsemble(members[:1], pessimism=1.0)
    with pytest.raises(ValueError, match="pessimism"):
        CriticEnsemble(members, pessimism=-1.0)


@pytest.mark.parametrize("kind", ["layernorm", "xqc"])
def test_ensemble_members_fit_one_shared_target_and_disagree_away_from_the_data(kind):
    """Every member learns the TD target; where no action was recorded the members disagree more than
    at the recorded ones, so the bound ranks the untried action lower than the mean does."""
    torch.manual_seed(0)
    make = (lambda: LayerNormCritic(OBS_DIM, ACTION_DIM, (32, 32))) if kind == "layernorm" else _xqc
    ensemble = CriticEnsemble([make() for _ in range(4)], pessimism=1.0)
    obs, _ = _batch(64)
    action = torch.full((64, ACTION_DIM), -0.5)
    batch = CriticBatch(obs, action, obs, action, torch.ones(64))  # terminal: the target is the reward
    reward = obs[:, 0].clamp(-2, 2)  # a state-dependent target, so the members must learn something
    optimiser = torch.optim.Adam(ensemble.parameters(), lr=3e-3)
    for _ in range(300):
        prediction, next_q = critic_predictions(ensemble, None, *batch[:4])
        assert isinstance(prediction, list) and len(prediction) == 4 and next_q.shape == (64,)
        loss, _ = td_loss(ensemble, prediction, reward + 0.9 * (1 - batch.done) * next_q)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        ensemble.project_weights_()
    ensemble.eval()
    with torch.no_grad():
        at_data = ensemble.member_values(obs, action)
        far = ensemble.member_values(obs, torch.full((64, ACTION_DIM), 0.9))
    for member_q in at_data:
        assert (member_q - reward).abs().mean().item() < 0.15
    assert far.std(0, correction=0).mean() > 2 * at_data.std(0, correction=0).mean()


# ---- TD targets ------------------------------------------------------------------------------
def test_soft_td_target_matches_a_hand_computation():
    reward = torch.tensor([1.0, 2.0, 3.0, 0.5, -1.0])
    done = torch.tensor([0.0, 0.0, 1.0, 0.0, 0.0])
    next_q = torch.tensor([10.0, 700.0, 5.0, 100.4, -1e4])
    next_log_pi = torch.tensor([-1.0, 0.0, 2.0, 1.0, 0.0])
    next_log_prior = torch.tensor([-2.0, 1.0, 0.0, 0.0, 0.0])
    y = soft_td_target(
        reward, done, next_q, next_log_pi, next_log_prior, gamma=0.9, beta=0.5, max_value=100.0
    )
    expected = torch.tensor(
        [
            1.0 + 0.9 * (10.0 - 0.5 * 1.0),  # plain soft bootstrap
            2.0 + 0.9 * 100.0,  # soft value 700.5 clipped at max_value
            3.0,  # terminal: no bootstrap
            0.5 + 0.9 * 99.9,  # the SOFT value (100.4 − 0.5) is clipped, not Q̄ alone (→ 99.5)
            -1.0 + 0.9 * -1e4,  # no clipping from below
        ]
    )
    assert torch.allclose(y, expected)
    assert not y.requires_grad
    # A terminal value is credited on terminal rows only (absorbing state earning a fixed reward).
    credited = soft_td_target(
        reward, done, next_q, next_log_pi, next_log_prior, gamma=0.9, beta=0.5, max_value=100.0,
        terminal_value=torch.tensor(20.0),
    )  # fmt: skip
    assert torch.allclose(credited, expected + 0.9 * 20.0 * done)


def test_sparse_td_target_stays_in_the_unit_interval():
    g = torch.Generator().manual_seed(0)
    success = (torch.rand(256, generator=g) < 0.3).float()
    done = (torch.rand(256, generator=g) < 0.2).float()
    next_q = torch.randn(256, generator=g) * 3
    y = sparse_td_target(success, done, next_q, gamma=0.99)
    assert (y >= 0).all() and (y <= 1).all()
    hand = sparse_td_target(
        torch.tensor([0.0, 1.0, 0.0, 0.0]),
        torch.tensor([0.0, 0.0, 0.0, 1.0]),
        torch.tensor([0.5, 1.0, -2.0, 0.7]),
        gamma=0.9,
    )
    assert torch.allclose(hand, torch.tensor([0.45, 1.0, 0.0, 0.0]))
