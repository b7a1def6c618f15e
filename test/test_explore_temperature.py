"""Exploration at a temperature: the policy node's rollouts sample the residual with a narrower spread."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from coirl_ros.configs import LearnerConfig
from coirl_ros.configs.learner import BCConfig, CriticConfig
from coirl_ros.constants import OBS_ENV_STATE, OBS_STATE
from coirl_ros.control.policy_actor import PolicyActor, prepare_acting
from coirl_ros.control.weight_swap import WeightSwapper
from coirl_ros.data import EpisodeSpec, EpisodeStore
from coirl_ros.learning.learner import Learner


class ConstantBase:
    """A base source that always proposes the same action (the residual is what is measured)."""

    def action(self, observation: dict) -> np.ndarray:
        return np.full(7, 0.1)

    def reset(self) -> None:
        pass


def actor_with_weights(tmp_path: Path, temperature: float) -> PolicyActor:
    store = EpisodeStore.create(tmp_path / f"t{temperature}.zarr", EpisodeSpec(8, 7, (), 20.0, 3))
    config = LearnerConfig(
        bc=BCConfig(hidden_sizes=[16, 16], bottleneck=4, num_features=16),
        critic=CriticConfig(hidden_sizes=[16, 16], num_bins=11),
    )
    learner = Learner(config, store, "residual", 0.5)
    swapper = WeightSwapper(prepare=prepare_acting)
    swapper.validate(learner.snapshot().to_bytes())
    inputs = (OBS_STATE, OBS_ENV_STATE)
    actor = PolicyActor(ConstantBase(), inputs, "residual", 0.5, swapper, True, temperature)
    actor.before_tick()  # adopts the validated weights, as the loop does between two ticks
    return actor


def residual_spread(actor: PolicyActor) -> float:
    obs = {OBS_STATE: np.zeros(8), OBS_ENV_STATE: np.zeros(3)}
    torch.manual_seed(0)
    return float(np.std([actor.act(obs).residual for _ in range(200)]))


def test_exploration_spread_scales_with_the_temperature(tmp_path: Path) -> None:
    full = residual_spread(actor_with_weights(tmp_path, 1.0))
    narrow = residual_spread(actor_with_weights(tmp_path, 0.3))
    assert full > 0.05  # the fresh residual's std is the prior's: samples clearly spread
    assert narrow == pytest.approx(0.3 * full, rel=0.25)
    assert residual_spread(actor_with_weights(tmp_path, 0.0)) == 0.0  # temperature 0: the mode


def test_temperature_outside_zero_one_is_refused() -> None:
    with pytest.raises(ValueError, match="explore_temperature"):
        PolicyActor(ConstantBase(), (OBS_STATE,), explore=True, explore_temperature=1.5)
