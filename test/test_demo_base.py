"""Teleop demonstrations get the base's proposals as the learner loads them; nothing else is touched."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from coirl_ros.constants import ACTION, ACTION_BASE, OBS_ENV_STATE, OBS_STATE
from coirl_ros.control.demo_base import demo_base_filler
from coirl_ros.data import EpisodeSpec, EpisodeStore
from coirl_ros.policies.composition import ChunkedBaseRunner
from coirl_ros.policies.local_bc_base import LocalBCBase, LocalBCConfig, Normalisation, build_network


def test_fills_zero_base_actions_of_demos_only(tmp_path: Path) -> None:
    torch.manual_seed(0)
    norm = Normalisation(np.zeros(5), np.ones(5), np.zeros(2), np.ones(2))
    base = LocalBCBase(build_network(5, 2, 4, (8,)), norm, LocalBCConfig(chunk_size=4, hidden=(8,)), 3, 2, 2)
    store = EpisodeStore.create(tmp_path / "s.zarr", EpisodeSpec(3, 2, (), 20.0, env_state_dim=2))
    rng = np.random.default_rng(0)
    with store.writer() as writer:
        for source in ("teleop", "policy"):
            writer.begin_episode("reach", source)
            for _ in range(9):
                frame = {
                    OBS_STATE: rng.normal(size=3),
                    OBS_ENV_STATE: rng.normal(size=2),
                    ACTION: rng.normal(size=2),
                }
                if source == "policy":
                    frame[ACTION_BASE] = np.full(2, 0.25)
                writer.add_frame(frame)
            writer.save_episode(success=True)
    fill = demo_base_filler(base, requery_every=3)
    demo, rollout = (store.read_episode(i) for i in store.episode_indices())
    fill(demo)
    fill(rollout)
    runner = ChunkedBaseRunner(base, 3)
    expected = [
        runner.base_action({"state": s, "object": o})
        for s, o in zip(demo.data[OBS_STATE], demo.data[OBS_ENV_STATE], strict=True)
    ]
    np.testing.assert_allclose(demo.data[ACTION_BASE], np.array(expected), atol=1e-6)
    assert np.any(demo.data[ACTION_BASE])
    np.testing.assert_array_equal(rollout.data[ACTION_BASE], 0.25)  # recorded with the base: kept
