"""LeRobot v3 export/import: round trip of arrays and metadata, corrupt episodes, spec mismatch, overwrite."""

from __future__ import annotations

import os
import shutil

os.environ["HF_HUB_OFFLINE"] = "1"  # before anything imports huggingface_hub: these tests never go online

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from coirl_ros.constants import (
    ACTION,
    ACTION_BASE,
    ACTION_RESIDUAL,
    DONE,
    OBS_STATE,
    REWARD,
    TIMESTAMP,
    image_key,
)
from coirl_ros.data import EpisodeSpec, EpisodeStore, StoreError
from coirl_ros.data.lerobot_io import SIDECAR, export_to_lerobot, import_from_lerobot

SPEC = EpisodeSpec(state_dim=8, action_dim=8, cameras=(("front", (24, 32)), ("wrist", (24, 32))), fps=20.0)
# (task, source, success, policy_version, frames)
EPISODES = [
    ("lift", "teleop", True, None, 10),
    ("stack", "policy", False, 3, 15),
    ("lift", "scripted", None, None, 12),
]
REPO = "local/test_export"


def _frame(rng: np.random.Generator, episode: int, t: int, frames: int) -> dict:
    frame = {
        OBS_STATE: rng.normal(size=8).astype(np.float32) + episode,
        ACTION: rng.normal(size=8).astype(np.float32),
        ACTION_BASE: rng.normal(size=8).astype(np.float32),
        ACTION_RESIDUAL: rng.normal(size=8).astype(np.float32),
        REWARD: float(episode * 10 + t),
        DONE: episode == 1 and t == frames - 1,
    }
    for name, (h, w) in SPEC.cameras:
        frame[image_key(name)] = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)  # noise: PNG must be exact
    return frame


def _make_store(root: Path) -> EpisodeStore:
    store = EpisodeStore.create(root, SPEC)
    rng = np.random.default_rng(0)
    with store.writer(robot_config_hash="cafe") as writer:
        for i, (task, source, success, version, frames) in enumerate(EPISODES):
            writer.begin_episode(task, source, policy_version=version)
            for t in range(frames):
                writer.add_frame(_frame(rng, i, t, frames))
            writer.save_episode(success=success)
    return store


@pytest.fixture(scope="module", autouse=True)
def _datasets_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """LeRobot loads parquet through `datasets`, which copies it into its cache: keep that in tmp."""
    import datasets

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path_factory.mktemp("hf_datasets"))
        yield


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[EpisodeStore, Path]:
    """One store and its export, shared by the tests (LeRobot writes are the slow part)."""
    tmp = tmp_path_factory.mktemp("lerobot")
    store = _make_store(tmp / "src.zarr")
    report = export_to_lerobot(store, tmp / "ds", repo_id=REPO, progress=False)
    assert (report.episodes, report.frames, report.skipped) == (3, 37, [])
    assert report.exported == [(0, 0), (1, 1), (2, 2)]
    return store, tmp / "ds"


def test_exported_dataset_loads_with_lerobot(exported: tuple[EpisodeStore, Path]) -> None:
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    _, root = exported
    ds = LeRobotDataset(REPO, root=root)
    assert (ds.num_episodes, ds.num_frames, ds.fps) == (3, 37, 20)
    assert ds.features[OBS_STATE]["shape"] == (8,) and ds.features["next.reward"]["shape"] == (1,)
    assert ds.features[image_key("front")]["dtype"] == "image"
    item = ds[10]  # first frame of episode 1
    assert item["episode_index"].item() == 1 and item["task"] == "stack"
    assert item[image_key("wrist")].shape == (3, 24, 32)  # LeRobot hands images back as float CHW
    assert item["next.done"].item() is False and ds[24]["next.done"].item() is True
    assert (root / SIDECAR).is_file()


def test_round_trip_restores_arrays_and_metadata(exported: tuple[EpisodeStore, Path], tmp_path: Path) -> None:
    store, root = exported
    report = import_from_lerobot(root, tmp_path / "back.zarr", progress=False)
    assert (report.created_store, report.episodes, report.frames, report.skipped) == (True, 3, 37, [])
    assert report.ignored_features == []
    back = EpisodeStore.open(tmp_path / "back.zarr")
    assert back.spec == SPEC
    for (_, new_index), original in zip(report.imported, store.iter_episodes(), strict=True):
        copy = back.read_episode(new_index)
        for key in (*SPEC.image_keys(), DONE):
            np.testing.assert_array_equal(copy.data[key], original.data[key], err_msg=key)
        for key in (OBS_STATE, ACTION, ACTION_BASE, ACTION_RESIDUAL, REWARD, TIMESTAMP):
            np.testing.assert_allclose(copy.data[key], original.data[key], rtol=1e-6, err_msg=key)
        a, b = copy.meta, original.meta
        assert (a.task, a.source, a.success, a.policy_version) == (
            b.task,
            b.source,
            b.success,
            b.policy_version,
        )
        assert (a.robot_config_hash, a.has_policy_actions, a.num_frames) == (
            "cafe",
            b.has_policy_actions,
            b.num_frames,
        )


def test_import_without_sidecar_uses_defaults(exported: tuple[EpisodeStore, Path], tmp_path: Path) -> None:
    _, root = exported
    plain = tmp_path / "plain"
    shutil.copytree(root, plain)
    (plain / SIDECAR).unlink()
    report = import_from_lerobot(plain, tmp_path / "plain.zarr", source="scripted", progress=False)
    metas = EpisodeStore.open(tmp_path / "plain.zarr").list_episodes()
    assert report.episodes == 3
    assert [(m.task, m.source, m.success) for m in metas] == [(t, "scripted", None) for t, *_ in EPISODES]


def test_import_into_mismatched_store_names_the_difference(
    exported: tuple[EpisodeStore, Path], tmp_path: Path
) -> None:
    _, root = exported
    other = EpisodeSpec(state_dim=6, action_dim=8, cameras=(("front", (24, 32)),), fps=20.0)
    EpisodeStore.create(tmp_path / "other.zarr", other)
    with pytest.raises(StoreError, match=r"state_dim: store has 6, dataset has 8.*cameras"):
        import_from_lerobot(root, tmp_path / "other.zarr", progress=False)
    assert EpisodeStore.open(tmp_path / "other.zarr").episode_indices() == []


def test_export_skips_corrupt_episode_and_refuses_existing_root(tmp_path: Path) -> None:
    store = _make_store(tmp_path / "src.zarr")
    chunks = [p for p in (store.episode_path(1) / OBS_STATE / "c").rglob("*") if p.is_file()]
    chunks[0].write_bytes(b"\x00garbage\xff" * 8)
    report = export_to_lerobot(store, tmp_path / "ds", repo_id=REPO, episodes=[0, 1, 2, 7], progress=False)
    assert report.episodes == 2 and report.exported == [(0, 0), (2, 1)]
    assert [i for i, _ in report.skipped] == [1, 7] and "observation.state" in report.skipped[0][1]
    back = import_from_lerobot(tmp_path / "ds", tmp_path / "back.zarr", progress=False)
    assert [m.task for m in EpisodeStore.open(tmp_path / "back.zarr").list_episodes()] == ["lift", "lift"]
    assert back.frames == 22
    with pytest.raises(FileExistsError, match="already exists"):
        export_to_lerobot(store, tmp_path / "ds", progress=False)


def test_import_refuses_a_directory_without_dataset(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(StoreError, match="no LeRobot dataset here"):
        import_from_lerobot(tmp_path / "empty", tmp_path / "x.zarr", progress=False)
    assert not (tmp_path / "x.zarr").exists()


def _plain_dataset(root: Path, features: dict, frames: int = 5) -> None:
    """An ordinary LeRobot dataset (no coirl extras), written with LeRobot's own API."""
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    ds = LeRobotDataset.create("local/plain", fps=10, features=features, root=root, use_videos=False)
    for episode in range(2):
        for t in range(frames):
            dtypes = {k: "uint8" if ft["dtype"] == "image" else ft["dtype"] for k, ft in features.items()}
            frame = {k: np.full(ft["shape"], episode * 100 + t, dtypes[k]) for k, ft in features.items()}
            ds.add_frame({**frame, "task": f"task {episode}"})
        ds.save_episode()
    ds.finalize()


def test_import_plain_lerobot_dataset_fills_defaults(tmp_path: Path) -> None:
    vec = {"dtype": "float32", "names": None}
    features = {
        OBS_STATE: {**vec, "shape": (6,)},
        ACTION: {**vec, "shape": (3,)},
        "observation.environment_state": {**vec, "shape": (2,)},
        "observation.velocity": {**vec, "shape": (4,)},
        "observation.images.top": {
            "dtype": "image",
            "shape": (16, 20, 3),
            "names": ["height", "width", "channels"],
        },
    }
    _plain_dataset(tmp_path / "plain", features)
    report = import_from_lerobot(tmp_path / "plain", tmp_path / "s.zarr", progress=False)
    assert (report.episodes, report.frames) == (2, 10)
    assert report.ignored_features == ["observation.velocity"]
    store = EpisodeStore.open(tmp_path / "s.zarr")
    assert store.spec == EpisodeSpec(6, 3, (("top", (16, 20)),), 10.0, env_state_dim=2)
    episode = store.read_episode(report.imported[1][1])
    assert (episode.meta.task, episode.meta.source, episode.meta.success) == ("task 1", "teleop", None)
    np.testing.assert_array_equal(episode.data[OBS_STATE][:, 0], 100 + np.arange(5))
    np.testing.assert_array_equal(episode.data["observation.environment_state"][:, 1], 100 + np.arange(5))
    np.testing.assert_array_equal(episode.data["observation.images.top"][:, 0, 0, 0], 100 + np.arange(5))
    assert (
        not episode.data[ACTION_BASE].any()
        and not episode.data[REWARD].any()
        and not episode.data[DONE].any()
    )
    np.testing.assert_allclose(episode.data[TIMESTAMP], np.arange(5) / 10.0, rtol=1e-6)


def test_import_without_action_is_refused(tmp_path: Path) -> None:
    _plain_dataset(tmp_path / "noaction", {OBS_STATE: {"dtype": "float32", "shape": (4,), "names": None}})
    with pytest.raises(StoreError, match=r"needs a 1-D 'action' feature"):
        import_from_lerobot(tmp_path / "noaction", tmp_path / "s.zarr", progress=False)
    assert not (tmp_path / "s.zarr").exists()


def test_video_round_trip_is_close(tmp_path: Path) -> None:
    spec = EpisodeSpec(state_dim=2, action_dim=2, cameras=(("front", (24, 32)),), fps=20.0)
    store = EpisodeStore.create(tmp_path / "src.zarr", spec)
    with store.writer() as writer:
        writer.begin_episode("lift", "teleop")
        for t in range(8):  # flat images: lossy video keeps them within a few levels
            writer.add_frame(
                {
                    OBS_STATE: np.zeros(2),
                    ACTION: np.ones(2),
                    image_key("front"): np.full((24, 32, 3), 30 * t, np.uint8),
                }
            )
        writer.save_episode(success=True)
    policy = os.sched_getscheduler(0)
    export_to_lerobot(store, tmp_path / "ds", use_videos=True, progress=False)
    # As root, SVT-AV1 moves the encoding thread to SCHED_FIFO 99; the export puts it back.
    assert os.sched_getscheduler(0) == policy
    assert list((tmp_path / "ds" / "videos").rglob("*.mp4"))
    report = import_from_lerobot(tmp_path / "ds", tmp_path / "back.zarr", progress=False)
    back = EpisodeStore.open(tmp_path / "back.zarr").read_episode(report.imported[0][1])
    original = store.read_episode(0).data[image_key("front")].astype(int)
    assert back.meta.success is True and np.abs(back.data[image_key("front")] - original).max() <= 4
