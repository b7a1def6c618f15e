"""The learner on camera images: encoder trained with π_BC then frozen, cached keypoints, image snapshots.

The store is a real zarr episode store with two 20×20 cameras whose pictures show where the state is (a
bright square at the point's position), so the keypoints carry the information the policy needs. No
object state is recorded: the image learner must not need it. Networks are tiny so the file runs in
seconds.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import record_reach

from coirl_ros.configs import LearnerConfig
from coirl_ros.constants import ACTION_BASE, DONE, NEXT, OBS_STATE, image_key
from coirl_ros.data import EpisodeSpec, EpisodeStore
from coirl_ros.data.transition_sampler import TransitionSampler
from coirl_ros.learning.image_policy import IMAGE_FEATURES, ImageResidualPolicy
from coirl_ros.learning.learner import Learner, LearnerError
from coirl_ros.learning.weight_snapshot import WeightSnapshot

SIZE = 20
CAMS = (("front", (SIZE, SIZE)), ("wrist", (SIZE, SIZE)))
SPEC = EpisodeSpec(state_dim=2, action_dim=2, fps=20.0, cameras=CAMS)
SCALE = 0.5
TINY = {
    "observation": "images",
    "batch_size": 32,
    "image": {"num_keypoints": 4, "conv_layers": [[8, 4, 2], [8, 3, 1]], "feature_batch": 16},
    "bc": {"steps": 20, "hidden_sizes": [32], "num_features": 16, "bottleneck": 4},
    "critic": {"hidden_sizes": [32], "pretrain_steps": 5, "num_bins": 21},
}


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _config(**overrides: object) -> LearnerConfig:
    return LearnerConfig.model_validate({**TINY, **overrides})


def _picture(s: np.ndarray, shift: int) -> np.ndarray:
    """A dark image with a bright 4×4 square where the point s ∈ [-1, 1]² is."""
    image = np.full((SIZE, SIZE, 3), 20, np.uint8)
    r, c = ((s + 1) / 2 * (SIZE - 5)).astype(int).clip(0, SIZE - 5)
    image[(r + shift) % (SIZE - 4) : (r + shift) % (SIZE - 4) + 4, c : c + 4] = 230
    return image


def _pictures(s: np.ndarray) -> dict[str, np.ndarray]:
    return {image_key("front"): _picture(s, 0), image_key("wrist"): _picture(s, 3)}


def _record(store: EpisodeStore, source: str, episodes: int, seed: int, noise: float) -> None:
    record_reach(store, source, episodes, seed, noise, SCALE, steps=12, extra=_pictures)


@pytest.fixture
def image_store(tmp_path: Path) -> EpisodeStore:
    store = EpisodeStore.create(tmp_path / "episodes.zarr", SPEC)
    _record(store, "teleop", episodes=6, seed=0, noise=0.0)
    _record(store, "policy", episodes=3, seed=1, noise=1.0)
    return store


def _observation(store: EpisodeStore) -> tuple[dict[str, np.ndarray], np.ndarray]:
    episode = store.read_episode(store.episode_indices()[0])
    obs = {k: episode.data[k][3] for k in (OBS_STATE, *SPEC.image_keys())}
    return obs, np.array([0.2, -0.3], np.float32)


def test_image_learner_pretrains_trains_and_publishes_a_policy_that_acts_on_pixels(
    image_store: EpisodeStore,
) -> None:
    learner = Learner(_config(method="csil"), image_store, scale=SCALE)
    encoder_before = {k: v.clone() for k, v in learner.encoder.state_dict().items()}
    learner.pretrain()
    assert learner.state.phase == "pretrained" and learner.state.critic_pretrain_steps == 5
    changed = [k for k, v in learner.encoder.state_dict().items() if not torch.equal(v, encoder_before[k])]
    assert changed, "the encoder trains with π_BC"
    assert not any(p.requires_grad for p in learner.encoder.parameters()), "then it is frozen"

    # Batches carry the frozen encoder's keypoints (no pixels), and they are what it computes.
    batch = learner.sampler.sample(8, np.random.default_rng(0))
    assert not any(k.startswith("observation.images") for k in batch)
    feature_dim = 2 * 4 * 2
    assert batch[IMAGE_FEATURES].shape == batch[NEXT + IMAGE_FEATURES].shape == (8, feature_dim)
    episode = image_store.read_episode(int(batch["episode_index"][0]))
    t = int(batch["frame_index"][0])
    with torch.no_grad():
        expected = learner.encoder({k: episode.data[k][t : t + 1] for k in SPEC.image_keys()})
    assert np.allclose(batch[IMAGE_FEATURES][0], expected[0].numpy(), atol=1e-5)
    assert learner.actor.obs_dim == feature_dim + 2, "keypoints + robot state, no object state"

    learner.add_env_steps(10)
    metrics = learner.train(3)
    assert learner.state.updates == 3 and np.isfinite(metrics["critic/q_mean"])

    # The snapshot alone rebuilds a policy that maps raw frames + state + base action to the same u.
    policy = learner.acting_policy
    assert isinstance(policy, ImageResidualPolicy)
    spec = learner.policy_spec()
    assert spec.obs_keys == (*SPEC.image_keys(), OBS_STATE, ACTION_BASE)
    assert dict(spec.extra)["image_sizes"] == "front:20x20,wrist:20x20"
    received = WeightSnapshot.from_bytes(learner.snapshot().to_bytes())
    assert any(k.startswith("encoder.") for k in received.tensors) and "policy.obs_mean" in received.tensors
    fresh = learner.new_acting_policy()
    received.load_into(fresh, spec)
    obs, base = _observation(image_store)
    u = policy.act(obs, base)
    assert u.shape == (2,) and np.all(np.abs(u) <= 1)
    assert np.array_equal(fresh.act(obs, base), u), "encoder and normaliser travel with the weights"
    assert not np.array_equal(fresh.act({**obs, OBS_STATE: obs[OBS_STATE] + 1}, base), u)


def test_image_checkpoint_resume_continues_exactly(image_store: EpisodeStore, tmp_path: Path) -> None:
    config = _config(method="csil")
    learner = Learner(config, image_store, scale=SCALE)
    learner.pretrain()
    learner.add_env_steps(50)
    learner.train(2)
    path = learner.save_checkpoint(tmp_path / "learner.pt")
    learner.train(2)
    expected = {k: v.clone() for k, v in learner.acting_policy.state_dict().items()}

    resumed = Learner(config, image_store, scale=SCALE)
    assert resumed.load_checkpoint(path).updates == 2
    assert not any(p.requires_grad for p in resumed.encoder.parameters())
    resumed.train(2)
    for key, value in resumed.acting_policy.state_dict().items():
        assert torch.equal(value, expected[key]), f"{key} diverged after resume"


def test_images_need_a_store_with_cameras(tmp_path: Path) -> None:
    store = EpisodeStore.create(tmp_path / "state.zarr", EpisodeSpec(state_dim=2, action_dim=2, fps=20.0))
    with pytest.raises(LearnerError, match="no cameras"):
        Learner(_config(), store, scale=SCALE)


def test_sampler_derived_arrays_are_sampled_with_successors_and_checked(image_store: EpisodeStore) -> None:
    def add(episode):
        n = len(episode)
        assert image_key("front") in episode.data, "hook_keys are read for the hook"
        episode.data["feat"] = np.stack([np.arange(n), episode.data[image_key("front")][:, 0, 0, 0]], 1)

    sampler = TransitionSampler(
        image_store, on_load=add, derived={"feat": ((2,), "float32")}, hook_keys=[image_key("front")]
    )
    sampler.refresh()
    batch = sampler.sample(64, np.random.default_rng(0))
    assert image_key("front") not in batch, "hook-only arrays are not kept"
    assert batch["feat"].dtype == np.float32
    t = batch["frame_index"].astype(np.float32)
    assert np.array_equal(batch["feat"][:, 0], t)
    assert np.array_equal(batch[NEXT + "feat"][:, 0], np.where(batch[DONE], t, t + 1))

    with pytest.raises(ValueError, match="did not add the derived array 'feat'"):
        TransitionSampler(image_store, on_load=lambda e: None, derived={"feat": ((2,), "float32")}).refresh()

    def wrong(episode):
        episode.data["feat"] = np.zeros((len(episode), 3), np.float32)

    with pytest.raises(ValueError, match=r"has shape .*expected"):
        TransitionSampler(image_store, on_load=wrong, derived={"feat": ((2,), "float32")}).refresh()
    with pytest.raises(ValueError, match="need an on_load hook"):
        TransitionSampler(image_store, derived={"feat": ((2,), "float32")})
    with pytest.raises(ValueError, match="clash"):
        TransitionSampler(image_store, on_load=add, derived={OBS_STATE: ((2,), "float32")})


def test_bench_learn_with_images_records_frames_and_acts_on_them(tmp_path: Path) -> None:
    from coirl_ros.experiment import ExperimentConfig, run_experiment
    from coirl_ros.policies.local_bc_base import LocalBCConfig

    learner = _config(
        batch_size=16, critic={**TINY["critic"], "pretrain_steps": 2}, bc={**TINY["bc"], "steps": 5}
    )
    config = ExperimentConfig(
        task="lift", methods=("csil",), seeds=1, env_steps=20, demos=1, eval_every=20, eval_episodes=1,
        base=LocalBCConfig(steps=5, hidden=(16,)), learner=learner, out_dir=tmp_path, image_size=16,
    )  # fmt: skip
    rows = run_experiment(config)
    assert [r["env_steps"] for r in rows] == [0, 20] and rows[-1]["updates"] > 0
    assert (
        tmp_path / "lift" / "demos_1_img16.zarr"
    ).is_dir() and config.csv_path.name == "curves_d1_img16.csv"
    store = EpisodeStore.open(tmp_path / "lift" / "csil_d1_img16_s0" / "episodes.zarr")
    rollout = store.read_episode(store.list_episodes()[-1].index)
    assert rollout.meta.source == "policy" and rollout.data[image_key("front")].shape[1:] == (16, 16, 3)
    assert rollout.data[image_key("wrist")].any(), "the rollouts record rendered frames"
