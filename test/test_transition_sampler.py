"""Learner-style minibatch sampling: correct successors, subsets, new and deleted episodes, corrupt data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import make_frame, record

from coirl_ros.constants import ACTION, DONE, NEXT, OBS_ENV_STATE, OBS_STATE, REWARD, image_key
from coirl_ros.data import EpisodeSpec, EpisodeStore, FrameError, StoreError
from coirl_ros.data.transition_sampler import TransitionSampler


@pytest.mark.parametrize("images", ["none", "lazy", "preload"])
def test_successor_is_the_next_frame_of_the_same_episode(store: EpisodeStore, images: str) -> None:
    record(store, episodes=4, frames=9)
    sampler = TransitionSampler(store, images=images)
    assert sampler.refresh() == 4
    assert sampler.num_transitions() == 4 * 8  # last frames are not terminal: never sampled
    batch = sampler.sample(512, np.random.default_rng(0))
    ep, t = batch["episode_index"], batch["frame_index"]
    assert t.max() == 7
    np.testing.assert_array_equal(batch[OBS_STATE][:, 0], ep * 1000 + t)
    np.testing.assert_array_equal(batch[NEXT + OBS_STATE][:, 0], ep * 1000 + t + 1)
    np.testing.assert_array_equal(batch[NEXT + ACTION][:, 0], -(ep * 1000 + t + 1))
    if images != "none":
        key = image_key("wrist")
        np.testing.assert_array_equal(batch[key][:, 0, 0, 0], (ep * 7 + t) % 256)
        np.testing.assert_array_equal(batch[NEXT + key][:, 0, 0, 0], (ep * 7 + t + 1) % 256)
    else:
        assert image_key("wrist") not in batch


def test_terminal_last_frame_is_sampled_with_itself_as_successor(store: EpisodeStore) -> None:
    with store.writer() as writer:
        writer.begin_episode("lift", "policy")
        for t in range(3):
            writer.add_frame(make_frame(store.spec, 0, t, **{DONE: t == 2}))
        writer.save_episode(success=True)
    sampler = TransitionSampler(store)
    sampler.refresh()
    batch = sampler.sample(200, np.random.default_rng(1))
    assert set(batch["frame_index"]) == {0, 1, 2}
    last = batch["frame_index"] == 2
    assert batch[DONE][last].all() and not batch[DONE][~last].any()
    np.testing.assert_array_equal(batch[NEXT + OBS_STATE][last], batch[OBS_STATE][last])


def test_demo_and_rollout_subsets(store: EpisodeStore) -> None:
    record(store, episodes=2, frames=5, source="teleop")
    record(store, episodes=3, frames=5, source="policy")
    sampler = TransitionSampler(store)
    sampler.refresh()
    rng = np.random.default_rng(2)
    assert set(sampler.sample(100, rng, subset="demo")["episode_index"]) == {0, 1}
    assert set(sampler.sample(100, rng, subset="rollout")["episode_index"]) == {2, 3, 4}
    assert sampler.num_transitions("demo") == 8 and sampler.num_transitions("rollout") == 12


def test_successful_rollouts_join_the_demos_only_when_asked(store: EpisodeStore) -> None:
    record(store, episodes=2, frames=5, source="teleop")
    record(store, episodes=3, frames=5, source="policy")  # `record` labels even indices successful
    rng = np.random.default_rng(3)
    plain = TransitionSampler(store)
    plain.refresh()
    assert set(plain.sample(200, rng, subset="demo")["episode_index"]) == {0, 1}
    promoted = TransitionSampler(store, successes_as_demos=True)
    promoted.refresh()
    assert set(promoted.sample(200, rng, subset="demo")["episode_index"]) == {0, 1, 2, 4}
    assert set(promoted.sample(200, rng, subset="rollout")["episode_index"]) == {3}


def test_refresh_follows_new_and_deleted_episodes(store: EpisodeStore) -> None:
    sampler = TransitionSampler(store)
    assert sampler.refresh() == 0
    with pytest.raises(StoreError, match="no 'all' transitions"):
        sampler.sample(4, np.random.default_rng(0))
    record(store, episodes=2, frames=5)
    assert sampler.refresh() == 2 and sampler.refresh() == 0
    record(store, episodes=1, frames=5)
    assert sampler.refresh() == 1 and sampler.num_episodes == 3
    store.delete(1)
    sampler.refresh()
    assert sampler.num_episodes == 2
    assert set(sampler.sample(300, np.random.default_rng(0))["episode_index"]) == {0, 2}


def test_corrupt_episode_is_skipped_not_fatal(store: EpisodeStore) -> None:
    record(store, episodes=3, frames=5)
    (store.episode_path(1) / ACTION / "zarr.json").write_text("garbage")
    sampler = TransitionSampler(store, images="preload")
    assert sampler.refresh() == 2
    assert list(sampler.skipped) == [1]
    assert set(sampler.sample(200, np.random.default_rng(0))["episode_index"]) == {0, 2}


def test_lazy_images_never_return_fill_for_a_deleted_episode(store: EpisodeStore) -> None:
    record(store, episodes=3, frames=6)
    sampler = TransitionSampler(store, images="lazy")
    sampler.refresh()
    store.delete(1)  # no refresh(): the sampler still holds episode 1's array handles
    batch = sampler.sample(256, np.random.default_rng(0))
    assert set(batch["episode_index"]) == {0, 2}
    ep, t = batch["episode_index"], batch["frame_index"]
    np.testing.assert_array_equal(batch[image_key("front")][:, 0, 0, 0], (ep * 7 + t) % 256)


class _StaleListingStore(EpisodeStore):
    """Lists an episode that is deleted before it can be read: the race of a delete during refresh."""

    def episode_indices(self) -> list[int]:
        return sorted({*super().episode_indices(), 1})


@pytest.mark.parametrize("images", ["none", "lazy"])
def test_delete_during_refresh_leaves_the_sampler_usable(store: EpisodeStore, images: str) -> None:
    record(store, episodes=3, frames=6)
    store.delete(1)
    sampler = TransitionSampler(_StaleListingStore(store.root, store.spec), images=images)
    assert sampler.refresh() == 2
    batch = sampler.sample(128, np.random.default_rng(0))
    assert set(batch["episode_index"]) == {0, 2}
    np.testing.assert_array_equal(
        batch[OBS_STATE][:, 0], batch["episode_index"] * 1000 + batch["frame_index"]
    )


def test_environment_state_is_sampled_with_its_successor(tmp_path: Path) -> None:
    spec = EpisodeSpec(state_dim=8, action_dim=8, fps=20.0, env_state_dim=3)
    store = EpisodeStore.create(tmp_path / "env.zarr", spec)
    with store.writer() as writer:
        writer.begin_episode("lift", "scripted")
        for t in range(6):
            with pytest.raises(FrameError, match=r"observation\.environment_state"):
                writer.add_frame({OBS_STATE: np.zeros(8), ACTION: np.zeros(8)})
            writer.add_frame({OBS_STATE: np.zeros(8), ACTION: np.zeros(8), OBS_ENV_STATE: np.full(3, t)})
        writer.save_episode()
    sampler = TransitionSampler(store)
    sampler.refresh()
    batch = sampler.sample(64, np.random.default_rng(0))
    np.testing.assert_array_equal(batch[OBS_ENV_STATE][:, 0], batch["frame_index"])
    np.testing.assert_array_equal(batch[NEXT + OBS_ENV_STATE][:, 0], batch["frame_index"] + 1)


def test_a_corrected_label_reaches_the_reward_and_the_subsets_on_the_next_refresh(tmp_path: Path) -> None:
    """The operator stopped one rollout as a success and one as a failure, then corrected both (the
    dashboard's "mark success/failure" relabels a committed episode)."""
    store = EpisodeStore.create(tmp_path / "episodes.zarr", EpisodeSpec(state_dim=2, action_dim=2, fps=20.0))
    with store.writer() as writer:
        for success in (True, False):  # what /recorder/stop(success) writes
            writer.begin_episode("lift", "policy")
            for t in range(5):
                last = t == 4
                frame = {OBS_STATE: np.full(2, t, np.float32), ACTION: np.zeros(2, np.float32)}
                writer.add_frame(frame | {REWARD: float(last and success), DONE: last and success})
            writer.save_episode(success=success)
    loads: list[int] = []
    sampler = TransitionSampler(
        store, follow_labels=True, successes_as_demos=True, on_load=lambda e: loads.append(e.meta.index)
    )
    assert sampler.refresh() == 2
    assert sampler.num_transitions() == 4 + 1 + 4 and sampler.num_transitions("demo") == 5

    store.relabel(0, False)
    store.relabel(1, True)
    assert sampler.refresh() == 0 and loads == [0, 1], "relabelled in place: nothing read again"
    assert sampler.num_transitions() == 4 + 4 + 1 and sampler.num_transitions("demo") == 5
    batch = sampler.sample(256, np.random.default_rng(0))
    terminal = batch["frame_index"] == 4
    assert set(batch["episode_index"][terminal]) == {1}  # only the episode now labelled a success
    assert (batch[REWARD][terminal] == 1).all() and (batch[REWARD][~terminal] == 0).all()
    assert batch[DONE][terminal].all()
    demo = sampler.sample(64, np.random.default_rng(1), subset="demo")
    assert set(demo["episode_index"]) == {1}
    assert store.read_episode(0).data[REWARD][-1] == 1  # the store keeps what was recorded

    # Cleared labels fall back to what was recorded: episode 0 a success terminal again, 1 unfinished.
    store.relabel(0, None)
    store.relabel(1, None)
    sampler.refresh()
    assert sampler.num_transitions() == 4 + 1 + 4 and sampler.num_transitions("demo") == 0
    batch = sampler.sample(256, np.random.default_rng(2))
    terminal = batch["frame_index"] == 4
    assert set(batch["episode_index"][terminal]) == {0} and (batch[REWARD][terminal] == 1).all()
    windows, mask = sampler.sample_windows(256, np.random.default_rng(3), horizon=3)
    last = np.where(windows[0]["episode_index"] == 0, 4, 3)  # episode 1's frame 4 has no successor
    assert (windows[0]["frame_index"] <= last).all()
    assert ((windows[0]["frame_index"] + mask.sum(axis=1) - 1) <= last).all(), "windows stop at the end"


def test_without_follow_labels_the_recorded_arrays_are_used(tmp_path: Path) -> None:
    store = EpisodeStore.create(tmp_path / "episodes.zarr", EpisodeSpec(state_dim=2, action_dim=2, fps=20.0))
    record(store, episodes=2, frames=5)  # episode 0 labelled a success, its last frame not terminal
    sampler = TransitionSampler(store)
    sampler.refresh()
    store.relabel(1, True)
    sampler.refresh()
    assert sampler.num_transitions() == 2 * 4


def test_windows_follow_their_episode_and_stop_at_its_last_transition(store: EpisodeStore) -> None:
    record(store, episodes=1, frames=6)  # unfinished: transitions t = 0..4 (frame 5 has no successor)
    with store.writer() as writer:  # a success: transitions t = 0..3, the terminal frame 3 included
        writer.begin_episode("lift", "policy")
        for t in range(4):
            writer.add_frame(make_frame(store.spec, 1, t, **{DONE: t == 3, REWARD: float(t == 3)}))
        writer.save_episode(success=True)
    sampler = TransitionSampler(store)
    sampler.refresh()
    horizon = 3
    steps, mask = sampler.sample_windows(400, np.random.default_rng(4), horizon=horizon)
    ep, t0 = steps[0]["episode_index"], steps[0]["frame_index"]
    last_transition = np.where(ep == 0, 4, 3)
    length = np.minimum(horizon, last_transition - t0 + 1)
    assert set(length) == {1, 2, 3}, "the draw covers windows cut short by either ending"
    np.testing.assert_array_equal(mask.sum(axis=1), length)
    np.testing.assert_array_equal(mask, np.arange(horizon) < length[:, None])
    for i, step in enumerate(steps):
        t = t0 + np.minimum(i, length - 1)  # past its end a window repeats its last transition
        np.testing.assert_array_equal(step["episode_index"], ep)
        np.testing.assert_array_equal(step[OBS_STATE][:, 0], ep * 1000 + t)
    # The bootstrap after the window: the next frame, or the terminal frame itself.
    terminal = (ep == 1) & (t0 + length - 1 == 3)
    successor = steps[-1]["frame_index"] + ~terminal
    np.testing.assert_array_equal(steps[-1][NEXT + OBS_STATE][:, 0], ep * 1000 + successor)
    np.testing.assert_array_equal(steps[-1][DONE], terminal)
    # One-step windows are `sample`'s batches, drawn from the same random stream.
    plain = sampler.sample(50, np.random.default_rng(5))
    (window,), _ = sampler.sample_windows(50, np.random.default_rng(5))
    assert plain.keys() == window.keys()
    for key in plain:
        np.testing.assert_array_equal(plain[key], window[key])
    with pytest.raises(ValueError, match="horizon"):
        sampler.sample_windows(4, np.random.default_rng(0), horizon=0)
