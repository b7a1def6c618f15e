"""The local chunked BC base: trains on real ee_delta demos, plays in the env, checkpoints safely."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from coirl_ros.constants import ACTION
from coirl_ros.data import EpisodeStore
from coirl_ros.policies.base_policy import BasePolicy
from coirl_ros.policies.composition import ChunkedBaseRunner
from coirl_ros.policies.local_bc_base import (
    BaseCheckpointError,
    LocalBCBase,
    LocalBCConfig,
    Normalisation,
    build_network,
    miscalibrated,
    train_local_bc_base,
)
from coirl_ros.sim.demos import generate_demos
from coirl_ros.sim.env import EnvConfig, ManipulationEnv
from coirl_ros.sim.tasks import make_task

CONFIG = LocalBCConfig(chunk_size=6, hidden=(64, 64), steps=300, batch_size=64, seed=0)


@pytest.fixture(scope="module")
def lift_store(tmp_path_factory: pytest.TempPathFactory) -> EpisodeStore:
    root = tmp_path_factory.mktemp("demos") / "lift.zarr"
    report = generate_demos("lift", 3, root, progress=False, action_mode="ee_delta")
    assert len(report.saved) == 3
    return EpisodeStore.open(root)


@pytest.fixture(scope="module")
def base(lift_store: EpisodeStore) -> LocalBCBase:
    torch.set_num_threads(1)
    return train_local_bc_base(lift_store, CONFIG)


@pytest.fixture(scope="module")
def lift_obs() -> dict[str, np.ndarray]:
    env = ManipulationEnv(make_task("lift"), EnvConfig(action_mode="ee_delta"))
    obs, _ = env.reset(seed=123)
    env.close()
    return obs


def test_ee_delta_demos_record_7_dim_normalised_actions(lift_store: EpisodeStore) -> None:
    assert lift_store.spec.action_dim == 7 and lift_store.spec.env_state_dim > 0
    for episode in lift_store.iter_episodes(keys=[ACTION]):
        actions = episode.data[ACTION]
        assert actions.shape[1] == 7 and np.all(np.abs(actions) <= 1.0)
        assert set(np.unique(actions[:, 6])) <= {-1.0, 1.0}  # gripper: open or closed


def test_training_reduces_the_loss_and_is_deterministic(lift_store: EpisodeStore, base: LocalBCBase) -> None:
    info = base.info
    assert info.episodes == 3 and info.tasks == ["lift"] and info.steps == CONFIG.steps
    assert info.loss_last < 0.75 * info.loss_first  # means over the first and last 100 of 300 steps
    again = train_local_bc_base(lift_store, CONFIG)
    for a, b in zip(base.network.state_dict().values(), again.network.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_predict_chunk_shape_range_and_protocol(base: LocalBCBase, lift_obs: dict[str, np.ndarray]) -> None:
    assert isinstance(base, BasePolicy)
    chunk = base.predict_chunk(lift_obs)
    assert chunk.shape == (CONFIG.chunk_size, 7) == (base.chunk_size, base.action_dim)
    assert np.all(np.isfinite(chunk)) and np.all(np.abs(chunk) <= 1.0)
    # The store's key names work too (ingestion hands those over).
    store_keys = {"observation.state": lift_obs["state"], "observation.environment_state": lift_obs["object"]}
    np.testing.assert_array_equal(base.predict_chunk(store_keys), chunk)
    with pytest.raises(ValueError, match="object values"):
        base.predict_chunk({"state": lift_obs["state"], "object": lift_obs["object"][:-1]})


def test_joint_mode_demos_are_refused(tmp_path: Path) -> None:
    generate_demos("lift", 1, tmp_path / "joint.zarr", progress=False)
    with pytest.raises(ValueError, match="--action-mode ee_delta"):
        train_local_bc_base(EpisodeStore.open(tmp_path / "joint.zarr"), CONFIG)


def test_save_load_round_trip_gives_identical_chunks(
    base: LocalBCBase, lift_obs: dict[str, np.ndarray], tmp_path: Path
) -> None:
    base.save(tmp_path / "ckpt")
    assert {p.name for p in (tmp_path / "ckpt").iterdir()} == {"model.safetensors", "config.json"}
    loaded = LocalBCBase.load(tmp_path / "ckpt")
    assert loaded.config == base.config and loaded.info.frames == base.info.frames
    np.testing.assert_array_equal(loaded.predict_chunk(lift_obs), base.predict_chunk(lift_obs))


def test_load_fails_clearly_on_missing_directory_or_file(base: LocalBCBase, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nowhere.*train_local_bc_base"):
        LocalBCBase.load(tmp_path / "nowhere")
    base.save(tmp_path / "ckpt")
    (tmp_path / "ckpt" / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match=r"model\.safetensors.*missing"):
        LocalBCBase.load(tmp_path / "ckpt")


def _corrupt(base: LocalBCBase, directory: Path, edit) -> Path:
    base.save(directory)
    path = directory / "model.safetensors"
    tensors = load_file(str(path))
    edit(tensors)
    save_file(tensors, str(path))
    return directory


def test_load_rejects_bad_weights_naming_the_key(base: LocalBCBase, tmp_path: Path) -> None:
    cases = {
        "missing": (lambda t: t.pop("2.bias"), "'2.bias' missing"),
        "unexpected": (lambda t: t.update({"extra.weight": torch.zeros(2)}), "unexpected.*'extra.weight'"),
        "shape": (lambda t: t.update({"0.weight": torch.zeros(3, 3)}), "'0.weight' has shape \\(3, 3\\)"),
        "nan": (lambda t: t["4.weight"].view(-1).__setitem__(0, float("nan")), "'4.weight' is not finite"),
    }
    for name, (edit, message) in cases.items():
        with pytest.raises(BaseCheckpointError, match=message):
            LocalBCBase.load(_corrupt(base, tmp_path / name, edit))


def test_load_rejects_a_bad_config(base: LocalBCBase, tmp_path: Path) -> None:
    base.save(tmp_path / "ckpt")
    path = tmp_path / "ckpt" / "config.json"
    meta = json.loads(path.read_text())
    meta["normalisation"]["obs_std"][0] = 0.0
    path.write_text(json.dumps(meta))
    with pytest.raises(BaseCheckpointError, match="obs_std"):
        LocalBCBase.load(tmp_path / "ckpt")


def test_base_plays_an_episode_through_the_chunked_runner(base: LocalBCBase) -> None:
    env = ManipulationEnv(make_task("lift"), EnvConfig(action_mode="ee_delta"))
    runner = ChunkedBaseRunner(base, requery_every=3)
    obs, _ = env.reset(seed=10_000)
    runner.reset()
    steps, done = 0, False
    while not done:
        obs, _, terminated, truncated, _ = env.step(runner.base_action(obs))
        steps, done = steps + 1, terminated or truncated
    env.close()
    assert runner.queries == -(-steps // 3)  # ceil: one query per 3 steps


def test_cli_demos_generate_takes_the_action_mode() -> None:
    from coirl_ros.cli import build_parser

    args = build_parser().parse_args(["demos", "generate", "--task", "lift", "--action-mode", "ee_delta"])
    assert args.action_mode == "ee_delta"
    assert build_parser().parse_args(["demos", "generate", "--task", "lift"]).action_mode == "joint"


def test_the_miscalibrated_base_sees_the_object_offset_and_keeps_it_in_its_checkpoint(tmp_path: Path) -> None:
    torch.manual_seed(0)
    config = LocalBCConfig(chunk_size=4, hidden=(16,), steps=0)
    rng = np.random.default_rng(0)
    norm = Normalisation(rng.normal(size=15), rng.uniform(0.5, 2, 15), np.zeros(7), np.ones(7))
    base = LocalBCBase(build_network(15, 7, 4, (16,)), norm, config, 8, 7, 7)
    obs = {"state": rng.normal(size=8), "object": rng.normal(size=7)}
    shifted = {"state": obs["state"], "object": obs["object"] + np.array([0, 0.04, 0, 0, 0, 0, 0])}

    off = miscalibrated(base, (0.0, 0.04, 0.0))
    np.testing.assert_allclose(off.predict_chunk(obs), base.predict_chunk(shifted), atol=1e-6)
    assert not np.allclose(off.predict_chunk(obs), base.predict_chunk(obs))
    np.testing.assert_array_equal(base.norm.obs_mean, norm.obs_mean)  # the original is untouched
    reloaded = LocalBCBase.load(off.save(tmp_path / "base"))  # what policy_node and the learner load
    np.testing.assert_allclose(reloaded.predict_chunk(obs), off.predict_chunk(obs), atol=1e-6)

    no_object = LocalBCBase(build_network(8, 7, 4, (16,)), norm, config, 8, 0, 7)
    with pytest.raises(ValueError, match="needs a position"):
        miscalibrated(no_object, (0.0, 0.04, 0.0))
    with pytest.raises(ValueError, match=r"metres and must be within \+-0.1"):
        miscalibrated(base, (0.0, 4.0, 0.0))  # centimetres typed as metres
