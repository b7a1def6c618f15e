"""pi0.5 through LeRobot on CPU: a miniature of the real `PI05Policy`, saved and loaded back.

The module builds one miniature pi0.5 (LeRobot's classes at toy widths, a local word-level
tokenizer), saves it as a LeRobot checkpoint directory and loads it through the product's loader
(`Pi05BasePolicy.from_config`), the path a real checkpoint takes. Broken copies of that directory
check that nothing ever falls back to random weights.
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # before anything imports huggingface_hub: never go online

import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from coirl_ros.configs import PolicyConfig, RobotConfig, TaskConfig, config_from_dict, load_config
from coirl_ros.configs.loading import ConfigError
from coirl_ros.constants import ACTION, OBS_STATE, image_key
from coirl_ros.data import EpisodeSpec, EpisodeStore
from coirl_ros.policies.async_chunker import AsyncChunker
from coirl_ros.policies.base_policy import BasePolicy
from coirl_ros.policies.composition import ChunkedBaseRunner, ComposedPolicy
from coirl_ros.policies.pi05_base import Pi05BasePolicy, map_cameras
from coirl_ros.policies.pi05_checkpoint import Pi05CheckpointError
from coirl_ros.policies.pi05_miniature import build_miniature_pi05, save_miniature_checkpoint

ROOT = Path(__file__).resolve().parent.parent
ROBOT = load_config(ROOT / "config" / "robot.yaml", RobotConfig)  # 7 joints + gripper, cameras front/wrist
TASK = load_config(ROOT / "config" / "task.yaml", TaskConfig)
STATE_DIM, ACTION_DIM = ROBOT.state_dim, 7  # action_space ee_delta


def identity_stats(dim: int) -> dict[str, np.ndarray]:
    """Quantile statistics that leave values in [-1, 1] unchanged."""
    return {"q01": -np.ones(dim), "q99": np.ones(dim), "mean": np.zeros(dim), "std": np.ones(dim)}


def policy_config(checkpoint: Path, **pi05: object) -> PolicyConfig:
    base = {
        "type": "pi05",
        "checkpoint": str(checkpoint),
        "chunk_size": 10,
        "requery_every": 5,
        "device": "cpu",
    }
    return config_from_dict(PolicyConfig, {"base": {**base, "pi05": pi05}})


def observation(rng: np.random.Generator, state: np.ndarray | None = None) -> dict[str, np.ndarray]:
    obs = {OBS_STATE: rng.uniform(-1, 1, STATE_DIM).astype(np.float32) if state is None else state}
    for cam in ("front", "wrist"):
        obs[image_key(cam)] = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    return obs


@pytest.fixture(scope="module")
def miniature(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, torch.Tensor], Any]:
    """(checkpoint directory, the weights it was saved with, the model)."""
    torch.set_num_threads(1)
    model = build_miniature_pi05(STATE_DIM, ACTION_DIM, ["front", "wrist"], chunk_size=10)
    stats = {OBS_STATE: identity_stats(STATE_DIM), ACTION: identity_stats(ACTION_DIM)}
    directory = tmp_path_factory.mktemp("pi05") / "checkpoint"
    save_miniature_checkpoint(model, directory, [TASK.instruction], stats)
    return directory, {k: v.clone() for k, v in model.state_dict().items()}, model


@pytest.fixture(scope="module")
def loaded(miniature: tuple[Path, dict[str, torch.Tensor]]) -> Pi05BasePolicy:
    return Pi05BasePolicy.from_config(policy_config(miniature[0]), ROBOT, TASK)


def broken_copy(src: Path, dst: Path, drop: str | None = None) -> Path:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(drop) if drop else None)
    return dst


def test_loads_the_saved_weights_and_predicts_a_chunk(loaded: Pi05BasePolicy, miniature: tuple) -> None:
    _, saved, _ = miniature
    assert isinstance(loaded, BasePolicy)
    assert (loaded.chunk_size, loaded.action_dim) == (10, 7)
    state = loaded.policy.state_dict()
    assert state.keys() == saved.keys()
    assert all(torch.equal(state[k], saved[k]) for k in saved)  # every weight from the file, none random
    chunk = loaded.predict_chunk(observation(np.random.default_rng(0)))
    assert chunk.shape == (10, 7) and np.all(np.isfinite(chunk)) and np.abs(chunk).max() <= 1.0


def test_prompt_carries_the_instruction_and_the_discretised_state(loaded: Pi05BasePolicy) -> None:
    from lerobot.utils.constants import OBS_LANGUAGE_TOKENS

    state = np.zeros(STATE_DIM, np.float32)
    state[0] = 1.0 - 1e-6  # identity stats: 0 -> bin 128, just below 1 -> bin 255
    processed = loaded.preprocessor(loaded.batch(observation(np.random.default_rng(1), state)))
    tokenizer = loaded.preprocessor.steps[-2].input_tokenizer
    text = tokenizer.decode(processed[OBS_LANGUAGE_TOKENS][0], skip_special_tokens=True)
    assert TASK.instruction in text
    assert "State : 255 " + " ".join(["128"] * (STATE_DIM - 1)) + " ;" in text
    assert processed[image_key("front")].shape == (1, 3, 48, 64)


def test_chunks_flow_through_the_async_chunker_and_the_residual(loaded: Pi05BasePolicy) -> None:
    rng = np.random.default_rng(2)
    obs = observation(rng)
    with AsyncChunker(loaded, requery_every=5) as chunker:
        actions = []
        deadline = time.monotonic() + 60
        while len(actions) < 12 and time.monotonic() < deadline:
            a = chunker.action(obs)
            if a is not None:
                actions.append(a)
            time.sleep(0.02)
        stats = chunker.stats()
    assert len(actions) == 12 and stats.errors == 0 and stats.chunks >= 2
    runner = ChunkedBaseRunner(loaded, requery_every=5)
    composed = ComposedPolicy(runner, lambda o, a_base: np.full(7, 5.0), composition="residual", scale=0.1)
    for _ in range(6):
        action, base, residual = composed.act(obs)
        assert np.all(np.abs(residual) <= 0.1 + 1e-9) and np.all(np.abs(action) <= 1.0)
        assert np.allclose(action, np.clip(base + 0.1 * np.tanh(5.0), -1, 1))
    assert runner.queries == 2


def test_missing_weights_file_is_refused(miniature: tuple, tmp_path: Path) -> None:
    directory = broken_copy(miniature[0], tmp_path / "ckpt", drop="model.safetensors")
    with pytest.raises(Pi05CheckpointError) as err:
        Pi05BasePolicy.from_config(policy_config(directory), ROBOT, TASK)
    message = str(err.value)
    assert str(directory / "model.safetensors") in message and "random weights" in message
    assert "hf download lerobot/pi05_base" in message


@pytest.mark.parametrize("damage", ["missing", "shape"])
def test_damaged_weights_are_refused_naming_the_key(miniature: tuple, tmp_path: Path, damage: str) -> None:
    directory = broken_copy(miniature[0], tmp_path / "ckpt", drop="model.safetensors")
    tensors = load_file(str(miniature[0] / "model.safetensors"))
    key = "model.action_out_proj.weight"
    if damage == "missing":
        del tensors[key]
    else:
        tensors[key] = torch.zeros(3, 3)
    save_file(tensors, str(directory / "model.safetensors"))
    expected = (
        "1 of .* weights missing .*action_out_proj.weight"
        if damage == "missing"
        else "action_out_proj.weight.* shape"
    )
    with pytest.raises(Pi05CheckpointError, match=expected):
        Pi05BasePolicy.from_config(policy_config(directory), ROBOT, TASK)


def test_checkpoint_without_statistics_needs_the_store(miniature: tuple, tmp_path: Path) -> None:
    directory = save_miniature_checkpoint(miniature[2], tmp_path / "no_stats", [TASK.instruction], stats=None)
    with pytest.raises(Pi05CheckpointError, match="stats: store"):
        Pi05BasePolicy.from_config(policy_config(directory), ROBOT, TASK)

    spec = EpisodeSpec(STATE_DIM, ACTION_DIM, (("front", (12, 16)), ("wrist", (12, 16))))
    store = EpisodeStore.create(tmp_path / "demos.zarr", spec)
    rng = np.random.default_rng(3)
    states = rng.normal(0.5, 0.2, (2, 30, STATE_DIM)).astype(np.float32)
    with store.writer() as writer:
        for ep in range(2):
            writer.begin_episode("square", "teleop")
            for t in range(30):
                frame = {OBS_STATE: states[ep, t], ACTION: rng.uniform(-1, 1, ACTION_DIM).astype(np.float32)}
                frame |= {image_key(c): np.zeros((12, 16, 3), np.uint8) for c in ("front", "wrist")}
                writer.add_frame(frame)
            writer.save_episode(success=True)
    base = Pi05BasePolicy.from_config(
        policy_config(directory, stats="store", stats_store=str(store.root)), ROBOT, TASK
    )
    normaliser = next(s for s in base.preprocessor.steps if type(s).__name__ == "NormalizerProcessorStep")
    q01 = np.quantile(states.reshape(-1, STATE_DIM), 0.01, axis=0)
    assert np.allclose(normaliser.stats[OBS_STATE]["q01"], q01, atol=1e-5)
    assert base.predict_chunk(observation(rng)).shape == (10, 7)


def test_missing_tokenizer_is_refused_with_instructions(miniature: tuple, tmp_path: Path) -> None:
    directory = broken_copy(miniature[0], tmp_path / "ckpt", drop="tokenizer")
    with pytest.raises(Pi05CheckpointError, match=r"no pi0\.5 tokenizer found locally.*paligemma-3b-pt-224"):
        Pi05BasePolicy.from_config(policy_config(directory), ROBOT, TASK)


def test_hub_id_outside_the_local_cache_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(Pi05CheckpointError, match=r"not in the local Hugging Face cache.*never downloads"):
        Pi05BasePolicy.from_config(policy_config(Path("lerobot/pi05_base")), ROBOT, TASK)


def test_cameras_map_by_name_or_through_camera_map() -> None:
    ckpt = [image_key("base_0_rgb"), image_key("left_wrist_0_rgb"), image_key("wrist")]
    assert map_cameras(["front", "wrist"], ckpt, {"front": "base_0_rgb"}) == {
        "front": image_key("base_0_rgb"),
        "wrist": image_key("wrist"),
    }
    with pytest.raises(Pi05CheckpointError, match="no robot camera"):
        map_cameras(["front"], ckpt, {})
    with pytest.raises(Pi05CheckpointError, match="checkpoint's cameras are"):
        map_cameras(["front"], ckpt, {"front": "top"})


def test_store_statistics_need_a_store_path() -> None:
    with pytest.raises(ConfigError, match="stats_store"):
        config_from_dict(PolicyConfig, {"base": {"type": "pi05", "pi05": {"stats": "store"}}})
