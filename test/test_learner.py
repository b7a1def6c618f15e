"""The learner object: coherent start, methods a flag apart, UTD bookkeeping, snapshots, checkpoints.

The store is a real zarr episode store holding a small synthetic task: the state is a point in the
plane, the demonstrator's action moves it toward the origin, the base proposes zero. Networks are
shrunk so each test runs in about a second.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import record_reach

from coirl_ros.configs import LearnerConfig
from coirl_ros.constants import ACTION_BASE, DONE, NEXT
from coirl_ros.data import EpisodeSpec, EpisodeStore
from coirl_ros.data.transition_sampler import TransitionSampler
from coirl_ros.learning.actor_losses import MAX_ADAPTIVE_BETA, AdaptiveKLWeight
from coirl_ros.learning.critic_losses import conservative_penalty
from coirl_ros.learning.distributions import gaussian_kl
from coirl_ros.learning.learner import Learner, LearnerError
from coirl_ros.learning.residual_policy import ResidualPolicy, policy_action_from_executed
from coirl_ros.learning.weight_snapshot import SnapshotError, WeightSnapshot

SPEC = EpisodeSpec(state_dim=2, action_dim=2, fps=20.0)
SCALE = 0.5
SMALL = {
    "batch_size": 64,
    "bc": {"steps": 600, "lr": 3e-3, "hidden_sizes": [32, 32], "num_features": 64, "bottleneck": 8},
    "critic": {"hidden_sizes": [64, 64], "pretrain_steps": 100, "num_bins": 51},
}


def _config(**overrides: object) -> LearnerConfig:
    return LearnerConfig.model_validate({**SMALL, **overrides})


def _record(store: EpisodeStore, source: str, episodes: int, seed: int, noise: float) -> None:
    record_reach(store, source, episodes, seed, noise, SCALE)


@pytest.fixture(scope="module")
def _templates(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The stores the tests start from, recorded once per module (each test works on its own copy):
    "demos" holds 20 demonstrations, "mixed" those and 10 rollouts."""
    root = tmp_path_factory.mktemp("learner_stores")
    demos = EpisodeStore.create(root / "demos.zarr", SPEC)
    _record(demos, "teleop", episodes=20, seed=0, noise=0.0)
    shutil.copytree(demos.root, root / "mixed.zarr")
    _record(EpisodeStore.open(root / "mixed.zarr"), "policy", episodes=10, seed=1, noise=1.0)
    return {"demos": demos.root, "mixed": root / "mixed.zarr"}


def _copy(template: Path, tmp_path: Path) -> EpisodeStore:
    return EpisodeStore.open(shutil.copytree(template, tmp_path / "episodes.zarr"))


@pytest.fixture
def demo_store(_templates: dict[str, Path], tmp_path: Path) -> EpisodeStore:
    return _copy(_templates["demos"], tmp_path)


@pytest.fixture
def mixed_store(_templates: dict[str, Path], tmp_path: Path) -> EpisodeStore:
    return _copy(_templates["mixed"], tmp_path)


def test_pretraining_needs_demonstrations(tmp_path: Path) -> None:
    empty = EpisodeStore.create(tmp_path / "empty.zarr", SPEC)
    with pytest.raises(LearnerError, match="no demonstrations"):
        Learner(_config(), empty, scale=SCALE).pretrain()


def test_train_before_pretrain_is_an_error(demo_store: EpisodeStore) -> None:
    with pytest.raises(LearnerError, match="pretrain"):
        Learner(_config(), demo_store, scale=SCALE).train(1)


def test_policy_actions_invert_both_compositions() -> None:
    base = np.array([0.2, -0.9], np.float32)
    u = np.array([0.5, -0.4], np.float32)
    assert np.allclose(policy_action_from_executed(base + 0.1 * u, base, "residual", 0.1), u, atol=1e-6)
    assert np.allclose(policy_action_from_executed((base + u) / 2, base, "ensemble", 0.1), u, atol=1e-6)


def test_bc_pretraining_fits_the_demonstrations(demo_store: EpisodeStore) -> None:
    losses: list[float] = []
    learner = Learner(_config(method="bc"), demo_store, scale=SCALE)
    learner.pretrain(progress=lambda phase, step, total, m: losses.append(m["losses/bc_mse"]))
    assert losses[-1] < 0.2 * losses[0], f"BC MSE must fall: {losses[0]:.3f} -> {losses[-1]:.3f}"
    policy = learner.acting_policy
    s = np.array([0.2, -0.1], np.float32)
    u = policy.act(np.concatenate([s, np.zeros(2, np.float32)]))
    assert np.allclose(u, np.clip(-2 * s, -0.9, 0.9), atol=0.1), "π_BC should reproduce the demonstrator"
    assert learner.train(10) == {}, "the BC baseline does not train online"


@pytest.mark.parametrize("warmup", [1000, 0])
def test_csil_starts_coherent_and_stays_near_bc_over_the_first_updates(
    mixed_store: EpisodeStore, warmup: int
) -> None:
    # At the reference β 0.01, where the KL term holds the actor least (β 1, the default, damps the
    # unwarmed jump to ~0.03).
    config = _config(method="csil", actor_warmup_updates=warmup, beta=0.01)
    learner = Learner(config, mixed_store, scale=SCALE)
    learner.pretrain()
    demo = learner._tensors(learner.sampler.sample(256, np.random.default_rng(5), "demo"))

    def kl_to_bc(policy: ResidualPolicy) -> float:
        with torch.no_grad():
            p, q = policy(demo["x"]), learner.bc_prior(demo["x"])
            return float(gaussian_kl(p.mean, p.std, q.mean, q.std).mean())

    assert kl_to_bc(learner.actor) == 0.0, "the actor must start as an exact copy of π_BC"
    # The coherent reward ranks the demonstrated action above random ones at demo states.
    with torch.no_grad():
        r_demo = learner.reward_policy(demo["x"]).log_prob(demo["u"]).mean()
        r_rand = learner.reward_policy(demo["x"]).log_prob(torch.rand_like(demo["u"]) * 2 - 1).mean()
    assert r_demo > r_rand + 1.0
    kls = []
    for _ in range(5):
        learner.train(4)
        kls.append(kl_to_bc(learner.actor))
    # An incoherent start (the same actor loss from a fresh policy) sits orders of magnitude away.
    fresh = kl_to_bc(ResidualPolicy(2, 2, [32, 32], 8, 64))
    if warmup == 0:
        # Without the actor's learning-rate warm-up, Adam's first steps (~lr in every weight, however
        # small the gradient) push the actor off π_BC at once: the reason the warm-up is the default.
        assert max(kls) > 0.1, f"expected the unwarmed start to jump: {kls}"
        return
    assert max(kls) < 0.01, f"KL(π_θ‖π_BC) on demo states over the first 20 updates: {kls}"
    assert fresh > 100 * max(max(kls), 1e-3)


def test_a_kl_target_adapts_beta_toward_the_budget_and_caps_it() -> None:
    weight = AdaptiveKLWeight(initial=0.01, target=0.05)
    optim = torch.optim.Adam(weight.parameters(), lr=0.1)

    def step(kl: float) -> float:
        optim.zero_grad()
        weight.loss(torch.tensor(kl)).backward()
        optim.step()
        weight.clamp_()
        return weight.value

    over = [step(0.2) for _ in range(10)]
    assert over[-1] > 2 * 0.01 and over == sorted(over), f"over budget, β must rise: {over}"
    under = [step(0.0) for _ in range(30)]
    assert under[-1] < over[-1], f"under budget, β must fall (after Adam's momentum): {under}"
    assert max(step(1e6) for _ in range(300)) == pytest.approx(MAX_ADAPTIVE_BETA)
    with pytest.raises(ValueError, match="must be > 0"):
        AdaptiveKLWeight(initial=0.0, target=0.05)


def test_learner_with_a_kl_target_raises_beta_while_the_actor_is_over_it(mixed_store: EpisodeStore) -> None:
    # No warm-up: Adam's first steps push the actor off π_BC at once (see the coherence test), far
    # past a budget of 0.001, so the multiplier must climb, and the critic and actor use it.
    config = _config(method="csil", actor_warmup_updates=0, beta=0.01, kl_target=0.001, kl_target_lr=0.1)
    learner = Learner(config, mixed_store, scale=SCALE)
    learner.pretrain()
    learner.add_env_steps(100)
    metrics = learner.train(20)
    assert metrics["actor/kl_to_bc"] > 0.001
    assert learner.beta > 2 * 0.01 and metrics["actor/beta"] > 0.01, (learner.beta, metrics["actor/beta"])
    with pytest.raises(ValueError, match="kl_target"):
        _config(method="sparse", kl_target=0.05)


def test_sparse_baseline_starts_at_the_base_and_learns_a_bounded_value(mixed_store: EpisodeStore) -> None:
    learner = Learner(_config(method="sparse"), mixed_store, scale=SCALE)
    learner.pretrain()
    x = np.array([0.3, 0.3, 0.0, 0.0], np.float32)
    assert np.allclose(learner.actor.act(x), 0.0), "a fresh residual adds nothing to the base"
    assert learner.value_range == (0.0, 1.0), "sparse targets are success probabilities"
    first = learner.train(1)
    later = learner.train(30)
    assert 0.0 <= later["critic/q_mean"] <= 1.0
    assert later["losses/critic_td_ce"] < first["losses/critic_td_ce"]


def test_updates_follow_the_utd_ratio_and_warmup(demo_store: EpisodeStore) -> None:
    learner = Learner(_config(utd_ratio=0.5, warmup_env_steps=10), demo_store, scale=SCALE)
    assert learner.add_env_steps(10) == 0, "nothing is due during warm-up"
    assert learner.add_env_steps(20) == 10
    assert learner.add_env_steps(3) == 1  # int(23 * 0.5) = 11 updates owed in total


def test_sampler_fills_base_actions_on_load_and_returns_them_for_next_states(tmp_path: Path) -> None:
    store = EpisodeStore.create(tmp_path / "e.zarr", SPEC)
    _record(store, "teleop", episodes=2, seed=0, noise=0.0)

    def fill(episode):
        episode.data[ACTION_BASE] = np.tile(np.arange(len(episode), dtype=np.float32)[:, None], (1, 2))

    sampler = TransitionSampler(store, on_load=fill)
    sampler.refresh()
    batch = sampler.sample(64, np.random.default_rng(0))
    t = batch["frame_index"].astype(np.float32)
    assert np.array_equal(batch[ACTION_BASE][:, 0], t)
    assert np.array_equal(batch[NEXT + ACTION_BASE][:, 0], np.where(batch[DONE], t, t + 1))

    def bad(episode):
        episode.data[ACTION_BASE] = np.zeros((len(episode), 3), np.float32)

    with pytest.raises(ValueError, match="changed the shape"):
        TransitionSampler(store, on_load=bad).refresh()


def test_snapshot_round_trip_acts_identically_and_rejects_another_spec(demo_store: EpisodeStore) -> None:
    learner = Learner(_config(method="bc"), demo_store, scale=SCALE)
    learner.pretrain()
    first, second = learner.snapshot(), learner.snapshot()
    assert (first.version, second.version) == (1, 2)
    received = WeightSnapshot.from_bytes(second.to_bytes())
    fresh = ResidualPolicy(2, 2, [32, 32], 8, 64)
    received.load_into(fresh, learner.policy_spec(), min_version=first.version)
    x = np.array([0.1, 0.4, 0.0, 0.0], np.float32)
    assert np.array_equal(fresh.act(x), learner.actor.act(x)), "normalisation must travel with the weights"
    other = learner.policy_spec().__class__(**{**learner.policy_spec().__dict__, "scale": 0.2})
    with pytest.raises(SnapshotError, match="scale"):
        received.load_into(fresh, other)
    with pytest.raises(SnapshotError, match="version"):
        received.load_into(fresh, learner.policy_spec(), min_version=second.version)


@pytest.mark.parametrize(
    ("kind", "extra"),
    [
        ("xqc", {}),
        ("layernorm_mlp", {}),
        ("xqc", {"kl_target": 0.001, "kl_target_lr": 0.05}),
        ("xqc", {"critic": {"ensemble_size": 2}}),
        ("layernorm_mlp", {"critic": {"ensemble_size": 2, "pessimism": 0.5}}),
    ],
)
def test_checkpoint_resume_continues_exactly(
    mixed_store: EpisodeStore, tmp_path: Path, kind: str, extra: dict[str, float]
) -> None:
    store = mixed_store
    extra = dict(extra)
    critic = {**SMALL["critic"], "kind": kind, **extra.pop("critic", {})}
    config = _config(method="csil", critic=critic, **extra)
    learner = Learner(config, store, scale=SCALE)
    learner.pretrain()
    learner.add_env_steps(100)
    learner.train(5)
    path = learner.save_checkpoint(tmp_path / "ckpt" / "learner.pt")
    learner.train(3)
    expected = {k: v.clone() for k, v in learner.actor.state_dict().items()}
    critic_expected = {k: v.clone() for k, v in learner.critic.state_dict().items()}

    resumed = Learner(config, store, scale=SCALE)
    state = resumed.load_checkpoint(path)
    assert (state.phase, state.updates, state.env_steps) == ("online", 5, 100)
    assert resumed.pretrain() == {}, "a resumed learner does not pre-train again"
    resumed.train(3)
    for key, value in resumed.actor.state_dict().items():
        assert torch.equal(value, expected[key]), f"actor {key} diverged after resume"
    for key, value in resumed.critic.state_dict().items():
        assert torch.equal(value, critic_expected[key]), f"critic {key} diverged after resume"
    assert resumed.beta == learner.beta  # an adapted KL weight resumes where it was, not at `beta`
    assert [p.name for p in path.parent.iterdir()] == ["learner.pt"], "no temporary files left behind"


def test_checkpoint_from_another_config_or_a_torn_file_is_refused(
    demo_store: EpisodeStore, tmp_path: Path
) -> None:
    learner = Learner(_config(method="bc"), demo_store, scale=SCALE)
    path = learner.save_checkpoint(tmp_path / "learner.pt")
    with pytest.raises(LearnerError, match="written with learner config"):
        Learner(_config(method="bc", batch_size=32), demo_store, scale=SCALE).load_checkpoint(path)
    # Written before an option existed (here n_step, at its default): the same config, so it resumes.
    payload = torch.load(path, weights_only=False)
    before_n_step = {k: v for k, v in payload["config"].items() if k != "n_step"}
    older = dict(payload, config=before_n_step, config_hash="0")
    torch.save(older, tmp_path / "older.pt")
    Learner(_config(method="bc"), demo_store, scale=SCALE).load_checkpoint(tmp_path / "older.pt")
    # Written with an option this version no longer has: refused, saying so.
    newer = dict(payload, config=payload["config"] | {"option_from_the_future": 1})
    torch.save(newer, tmp_path / "newer.pt")
    with pytest.raises(LearnerError, match="cannot read"):
        Learner(_config(method="bc"), demo_store, scale=SCALE).load_checkpoint(tmp_path / "newer.pt")
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(LearnerError, match="not a readable"):
        Learner(_config(method="bc"), demo_store, scale=SCALE).load_checkpoint(path)
    with pytest.raises(LearnerError, match="no learner checkpoint"):
        learner.load_checkpoint(tmp_path / "missing.pt")


@pytest.mark.parametrize(("absorbing", "reward_kind"), [(True, "own"), (True, "demo_mean"), (False, "own")])
def test_csil_terminal_rows_bootstrap_cut_or_earn_the_demo_reward(
    demo_store: EpisodeStore, absorbing: bool, reward_kind: str
) -> None:
    cfg = _config(method="csil", absorbing_terminals=absorbing, absorbing_reward=reward_kind)
    learner = Learner(cfg, demo_store, scale=SCALE)
    learner.refresh()
    batch = learner._tensors(learner.sampler.sample(512, np.random.default_rng(0), "demo"))
    assert batch["done"].sum() > 0, "the demos end in success: some sampled rows are terminal"
    demo_reward = torch.linspace(0.5, 1.5, 512)
    done, value = learner._csil_terminals(batch, demo_reward)
    if absorbing and reward_kind == "own":
        # The terminal row bootstraps from s' = s (the success state) instead of cutting the return,
        # so a mostly positive learned reward does not make success a loss.
        assert torch.equal(done, torch.zeros_like(done)) and value is None
    elif absorbing:
        # DAC-style: staying in the success state earns the mean demonstration reward forever.
        assert torch.equal(done, batch["done"])
        assert value is not None and float(value) == pytest.approx(1.0 / (1.0 - cfg.gamma), rel=1e-5)
    else:
        assert torch.equal(done, batch["done"]) and value is None


def test_success_reward_lands_on_success_terminals_and_raises_their_value(demo_store: EpisodeStore) -> None:
    with pytest.raises(ValueError, match="success_reward adds to CSIL"):
        _config(method="sparse", success_reward=1.0)
    # A fast-settling value (gamma 0.5, a plain critic, no gradient penalty) so that a few hundred
    # SARSA steps show where the bonus goes.
    critic = {"kind": "layernorm_mlp", "hidden_sizes": [64, 64], "pretrain_steps": 500, "pretrain_lr": 1e-3}
    values = {}
    for bonus in (0.0, 5.0):
        torch.manual_seed(0)
        cfg = _config(method="csil", success_reward=bonus, gamma=0.5, critic=critic | {"grad_penalty": 0.0})
        learner = Learner(cfg, demo_store, scale=SCALE)
        learner.pretrain()
        batch = learner._tensors(learner.sampler.sample(512, np.random.default_rng(0), "demo"))
        success = batch["success"] > 0
        assert success.any() and not success.all(), "the demos end in success: some rows are terminal"
        reward = torch.linspace(0.5, 1.5, 512)
        np.testing.assert_allclose(
            learner._with_success_reward(reward, batch) - reward, bonus * success.float(), atol=1e-6
        )
        learner.critic.eval()
        with torch.no_grad():
            q = learner.critic(batch["x"], batch["u"]).reshape(-1, 512).mean(0)
        values[bonus] = (float(q[success].mean()), float(q[~success].mean()))
    # The success states gain value (3.3 measured; up to 5 / (1 - gamma) = 10 at convergence), the
    # others far less (0.4 measured).
    gain_success, gain_rest = (values[5.0][i] - values[0.0][i] for i in (0, 1))
    assert gain_success > gain_rest + 1.5, values


def test_n_step_targets_sum_the_window_and_discount_the_bootstrap(mixed_store: EpisodeStore) -> None:
    n, bonus = 4, 2.0
    cfg = _config(method="csil", n_step=n, success_reward=bonus, gamma=0.9)
    learner = Learner(cfg, mixed_store, scale=SCALE)
    learner.refresh()
    window, mask, n_demo = learner._sample_windows(256, n)
    assert n_demo == 128 and len(window) == n and mask.shape == (256, n)
    rewards = torch.stack([learner._csil_reward(step) for step in window], dim=1)  # [B, n]
    total, discount = learner._n_step_return(rewards[:, 0], window, mask, learner._csil_reward)
    length = mask.sum(dim=1).long()
    assert set(length.tolist()) >= {1, n}, "some windows run their length, some are cut by an episode's end"
    for row in range(256):
        k = int(length[row])
        assert torch.equal(mask[row], (torch.arange(n) < k).float()), "a window is a prefix"
        expected = sum(cfg.gamma**i * float(rewards[row, i]) for i in range(k))
        assert float(total[row]) == pytest.approx(expected, rel=1e-5, abs=1e-5)
        assert float(discount[row]) == pytest.approx(cfg.gamma**k, rel=1e-6)
        # A window never runs past a success: only its last step may be terminal, and the bonus sits there.
        assert not any(float(window[i]["done"][row]) for i in range(k - 1))
        bonus_part = sum(cfg.gamma**i * bonus * float(window[i]["success"][row]) for i in range(k))
        assert bonus_part == pytest.approx(bonus * cfg.gamma ** (k - 1) * float(window[-1]["success"][row]))
    assert (window[-1]["success"] > 0).any(), "the draw includes windows that end in a success"
    # Both methods pre-train and train on n-step targets.
    learner.pretrain()
    assert np.isfinite(learner.train(5)["losses/critic_td_ce"])
    sparse = Learner(_config(method="sparse", n_step=n), mixed_store, scale=SCALE)
    sparse.pretrain()
    assert 0.0 <= sparse.train(5)["critic/target_mean"] <= 1.0


def test_advantage_weighted_actor_trains_csil_only(mixed_store: EpisodeStore) -> None:
    with pytest.raises(ValueError, match="option of the CSIL actor"):
        _config(method="sparse", actor_update="advantage_weighted")
    learner = Learner(_config(method="csil", actor_update="advantage_weighted"), mixed_store, scale=SCALE)
    learner.pretrain()
    metrics = learner.train(10)
    assert np.isfinite(metrics["losses/actor"]) and 1.0 <= metrics["actor/weight_max"] <= 20.0
    assert "actor/advantage_std" in metrics


def test_conservative_critic_values_untried_actions_below_recorded_ones(mixed_store: EpisodeStore) -> None:
    """critic.conservative_weight adds the CQL-style term in pre-training and online; the gap it
    measures (soft maximum over candidates minus Q at the recorded action) ends below the plain
    critic's. (The sparse baseline goes through the same `_with_conservative_term`.)"""
    critic = {**SMALL["critic"], "grad_penalty": 0.1}
    gaps = {}
    for weight in (0.0, 1.0):
        learner = Learner(_config(critic={**critic, "conservative_weight": weight}), mixed_store, scale=SCALE)
        pre = learner.pretrain()
        metrics = learner.train(40)
        if weight:
            assert np.isfinite(metrics["losses/critic_conservative"])
            assert "losses/critic_conservative" in pre
        batch = learner._tensors(learner.sampler.sample(256, np.random.default_rng(0), "rollout"))
        g = torch.Generator().manual_seed(0)
        candidates = torch.rand(256, 8, batch["u"].shape[1], generator=g) * 2 - 1
        gap, _ = conservative_penalty(learner.critic, batch["x"], batch["u"], candidates, temperature=1.0)
        gaps[weight] = gap.item()
    assert gaps[1.0] < gaps[0.0]


def test_reanchoring_needs_success_labels_and_a_method_that_imitates() -> None:
    with pytest.raises(ValueError, match="successes_as_demos"):
        _config(method="csil", reanchor_every_env_steps=100)
    with pytest.raises(ValueError, match="method csil or bc"):
        _config(method="sparse", successes_as_demos=True, reanchor_every_env_steps=100)


@pytest.mark.parametrize("method", ["csil", "bc"])
def test_reanchoring_restarts_coherent_on_the_demos_plus_the_successes(
    mixed_store: EpisodeStore, method: str
) -> None:
    config = _config(
        method=method, successes_as_demos=True, reanchor_every_env_steps=40, reanchor_bc_steps=50,
        reanchor_critic_steps=20,
    )  # fmt: skip
    learner = Learner(config, mixed_store, scale=SCALE)
    learner.pretrain()
    assert learner.trains_online, "rollouts change a re-anchoring policy, whatever the method"
    plain = TransitionSampler(mixed_store)
    plain.refresh()
    assert learner.sampler.num_transitions("demo") > plain.num_transitions("demo"), "successes join the demos"
    bc_before = {k: v.clone() for k, v in learner.bc_policy.state_dict().items()}

    learner.train(learner.add_env_steps(39))
    assert learner.state.reanchors == 0, "not due before 40 env steps"
    metrics = learner.train(learner.add_env_steps(1))
    assert learner.state.reanchors == 1 and metrics["reanchor/period"] == 1.0
    assert metrics["reanchor/demo_transitions"] == learner.sampler.num_transitions("demo")
    assert learner.state.bc_steps == config.bc.steps + 50
    bc_after = learner.bc_policy.state_dict()
    assert any(not torch.equal(bc_before[k], bc_after[k]) for k in bc_after), "π_BC trained further"
    # The prior and the reward restart as copies (CSIL's one update since has refined the reward a step).
    for module in (learner.bc_prior,) if method == "csil" else (learner.bc_prior, learner.reward_policy):
        for key, value in module.state_dict().items():
            torch.testing.assert_close(value, bc_after[key], rtol=0, atol=0)

    demo = learner._tensors(learner.sampler.sample(256, np.random.default_rng(6), "demo"))
    with torch.no_grad():
        p, q = learner.actor(demo["x"]), learner.bc_prior(demo["x"])
        kl = float(gaussian_kl(p.mean, p.std, q.mean, q.std).mean())
    if method == "bc":
        assert kl == 0.0 and learner.state.updates == 0
        return
    # CSIL made one update after re-anchoring, at the first step of a restarted learning-rate warm-up.
    assert learner.state.updates == 40 and kl < 1e-3, kl
    assert learner.state.critic_pretrain_steps == config.critic.pretrain_steps + 20
    # After an outage of several periods (a learner node restarted late), one re-anchoring covers them.
    learner.train(learner.add_env_steps(130))
    assert learner.state.reanchors == 4, "170 env steps: periods 2-4 are covered by one re-anchoring"
    assert learner.state.critic_pretrain_steps == config.critic.pretrain_steps + 40


def test_bc_ensemble_distils_the_fits_mean_action_and_keeps_the_demonstrators_spread(
    demo_store: EpisodeStore,
) -> None:
    bc = SMALL["bc"] | {"steps": 300}
    single = Learner(_config(method="bc", bc=bc), demo_store, scale=SCALE)
    single.pretrain()
    config = _config(method="bc", bc=bc | {"ensemble": 2, "distill_noise": 0.1})
    learner = Learner(config, demo_store, scale=SCALE)
    phases = []
    learner.pretrain(lambda phase, step, total, metrics: phases.append(phase))
    assert learner.state.bc_steps == 3 * config.bc.steps, "two fits and the distillation"
    assert {"bc fit 1/2", "bc fit 2/2", "bc distil"} <= set(phases)

    demo = learner._tensors(learner.sampler.sample(512, np.random.default_rng(4), "demo"))
    with torch.no_grad():
        distilled, one = learner.bc_policy(demo["x"]), single.bc_policy(demo["x"])
        # The demos act u = clip(-2s, +-0.9): the distilled mean fits them as well as one fit does ...
        err_distilled = float((distilled.mode() - demo["u"]).abs().mean())
        err_one = float((one.mode() - demo["u"]).abs().mean())
        # ... and its spread is the demonstrator's, not collapsed onto the deterministic teacher.
        ratio = float(distilled.std.mean() / one.std.mean())
    assert err_distilled < max(2 * err_one, 0.05), (err_distilled, err_one)
    assert 0.5 < ratio < 2.0, ratio
    assert learner.acting_policy is not None


def test_bc_ensemble_is_for_state_policies() -> None:
    with pytest.raises(ValueError, match=r"bc\.ensemble"):
        _config(method="bc", observation="images", bc=SMALL["bc"] | {"ensemble": 2})


def test_bc_weight_average_ends_each_fit_on_the_average_of_its_iterates(demo_store: EpisodeStore) -> None:
    bc = SMALL["bc"] | {"steps": 300}

    def fit(decay: float) -> tuple[Learner, torch.Tensor, torch.Tensor]:
        learner = Learner(_config(method="bc", bc=bc | {"weight_average": decay}), demo_store, scale=SCALE)
        start = torch.nn.utils.parameters_to_vector(learner.bc_policy.parameters()).detach().clone()
        learner.pretrain()
        return learner, start, torch.nn.utils.parameters_to_vector(learner.bc_policy.parameters()).detach()

    last, start_last, end_last = fit(0.0)
    _, start_frozen, end_frozen = fit(0.9999)  # 0.9999^300 = 0.97: the average is mostly the start
    averaged, _, end_averaged = fit(0.95)  # about the last 20 of 300 steps
    assert torch.equal(start_last, start_frozen), "same seed, same initial weights"
    moved = float((end_last - start_last).norm())
    assert float((end_frozen - start_frozen).norm()) < 0.1 * moved
    assert not torch.equal(end_averaged, end_last)
    demo = last._tensors(last.sampler.sample(512, np.random.default_rng(4), "demo"))
    with torch.no_grad():
        err_last = float((last.bc_policy(demo["x"]).mode() - demo["u"]).abs().mean())
        err_averaged = float((averaged.bc_policy(demo["x"]).mode() - demo["u"]).abs().mean())
    assert err_averaged < max(1.5 * err_last, 0.05), (err_averaged, err_last)
