"""Episode store: round trip, validation of frames, relabel/delete, corrupt data, crash, concurrency."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zarr
from conftest import make_frame, record

from coirl_ros.constants import ACTION, ACTION_BASE, DONE, OBS_STATE, TIMESTAMP, image_key
from coirl_ros.data import EpisodeSpec, EpisodeStore, FrameError, StoreError

SCRIPTS = Path(__file__).parent / "scripts"


def test_round_trip_preserves_every_array_and_attribute(store: EpisodeStore) -> None:
    with store.writer(flush_every=4, robot_config_hash="abc123") as writer:
        index = writer.begin_episode("square", "policy", policy_version=7)
        for t in range(10):
            writer.add_frame(make_frame(store.spec, index, t, **{ACTION_BASE: np.ones(8), DONE: t == 9}))
        meta = writer.save_episode(success=True)
    episode = EpisodeStore.open(store.root).read_episode(index)
    assert episode.meta == meta
    assert (meta.task, meta.source, meta.policy_version, meta.robot_config_hash) == (
        "square",
        "policy",
        7,
        "abc123",
    )
    assert meta.has_policy_actions and meta.success is True and meta.num_frames == 10
    np.testing.assert_array_equal(episode.data[OBS_STATE][:, 0], np.arange(10))
    np.testing.assert_array_equal(episode.data[ACTION_BASE], np.ones((10, 8)))
    assert episode.data[DONE].tolist() == [False] * 9 + [True]
    np.testing.assert_allclose(episode.data[TIMESTAMP], np.arange(10) / 20.0)
    front = episode.data[image_key("front")]
    assert front.shape == (10, 12, 16, 3) and front.dtype == np.uint8
    np.testing.assert_array_equal(front[:, 0, 0, 0], np.arange(10) + index * 7)


def test_bad_frames_are_refused_and_the_episode_continues(store: EpisodeStore) -> None:
    with store.writer() as writer:
        index = writer.begin_episode("lift", "teleop")
        writer.add_frame(make_frame(store.spec, index, 0))
        bad_frames = {
            "NaN action": make_frame(store.spec, index, 1, **{ACTION: np.full(8, np.nan)}),
            "wrong state shape": make_frame(store.spec, index, 1, **{OBS_STATE: np.zeros(7)}),
            "float image": make_frame(store.spec, index, 1, **{image_key("front"): np.zeros((12, 16, 3))}),
            "unknown key": make_frame(store.spec, index, 1, gripper=1.0),
        }
        for frame in bad_frames.values():
            with pytest.raises(FrameError):
                writer.add_frame(frame)
        missing = make_frame(store.spec, index, 1)
        del missing[image_key("wrist")]
        with pytest.raises(FrameError, match=r"missing required keys \['observation.images.wrist'\]"):
            writer.add_frame(missing)
        writer.add_frame(make_frame(store.spec, index, 1))
        meta = writer.save_episode()
    assert meta.num_frames == 2
    np.testing.assert_array_equal(store.read_episode(index).data[OBS_STATE][:, 0], [0, 1])


def test_nan_message_names_the_key(store: EpisodeStore) -> None:
    with store.writer() as writer:
        writer.begin_episode("lift", "teleop")
        with pytest.raises(FrameError, match="frame 0: action contains NaN"):
            writer.add_frame(make_frame(store.spec, 0, 0, **{ACTION: np.full(8, np.nan)}))


def test_indices_are_never_reused_after_delete(store: EpisodeStore) -> None:
    record(store, episodes=3, frames=5)
    store.delete(2)
    assert store.episode_indices() == [0, 1]
    record(store, episodes=1, frames=5)
    assert store.episode_indices() == [0, 1, 3]
    with pytest.raises(StoreError, match="episode 2 does not exist"):
        store.delete(2)


def test_relabel_and_discard(store: EpisodeStore) -> None:
    record(store, episodes=1, frames=5)
    assert store.relabel(0, False).success is False
    assert store.relabel(0, None).success is None
    assert EpisodeStore.open(store.root).read_meta(0).success is None
    with store.writer() as writer:
        writer.begin_episode("lift", "teleop")
        writer.add_frame(make_frame(store.spec, 1, 0))
        writer.discard_episode()
    assert store.episode_indices() == [0] and store.partial_episodes() == []


def test_single_writer_is_enforced(store: EpisodeStore) -> None:
    with store.writer(), pytest.raises(StoreError, match="another writer holds the store"):
        store.writer()
    store.writer().close()  # released on close


def test_create_tolerates_a_reader_that_opened_the_store_mid_creation(
    tmp_path: Path, spec: EpisodeSpec
) -> None:
    """A reader may open the store once its zarr.json exists, before `create` has made the staging and
    trash folders, and `open` makes them; `create` must not then fail (seen with the dashboard)."""
    root = tmp_path / "episodes.zarr"
    (root / ".staging").mkdir(parents=True)  # as the reader's `open` leaves it
    created = EpisodeStore.create(root, spec)
    record(created, 1, 3)
    assert EpisodeStore.open(root).episode_indices() == [0]


def test_open_errors_are_clear(tmp_path: Path, spec: EpisodeSpec) -> None:
    with pytest.raises(StoreError, match="no episode store here"):
        EpisodeStore.open(tmp_path / "missing.zarr")
    EpisodeStore.create(tmp_path / "s.zarr", spec)
    with pytest.raises(StoreError, match="already exists"):
        EpisodeStore.create(tmp_path / "s.zarr", spec)
    other = EpisodeSpec(state_dim=9, action_dim=8, fps=20.0)
    with pytest.raises(StoreError, match="existing store has spec"):
        EpisodeStore.create(tmp_path / "s.zarr", other, exist_ok=True)


def _corrupt(store: EpisodeStore) -> dict[int, str]:
    """Damage episodes 1-4 in four different ways; returns the expected reason fragment per episode."""
    ep = store.episode_path
    chunk = next(p for p in (ep(1) / OBS_STATE / "c").rglob("*") if p.is_file())
    chunk.write_bytes(b"\x00garbage" * 3)  # a chunk overwritten by junk
    (ep(2) / "zarr.json").write_text("{ not json")  # metadata torn
    shutil.rmtree(ep(3) / image_key("wrist"))  # an array lost
    zarr.open_group(ep(4), mode="r+").attrs["num_frames"] = 99  # lengths disagree
    return {1: "observation.state' unreadable", 2: "metadata unreadable", 3: "missing", 4: "expected"}


def test_corrupt_episodes_are_reported_and_skipped(store: EpisodeStore) -> None:
    record(store, episodes=6, frames=6)
    expected = _corrupt(store)
    report = store.verify()
    assert report.ok == [0, 5] and not report.clean
    reasons = dict(report.corrupt)
    assert sorted(reasons) == [1, 2, 3, 4]
    for index, fragment in expected.items():
        assert fragment in reasons[index], (index, reasons[index])
    problems: list[tuple[int, str]] = []
    readable = [e.meta.index for e in store.iter_episodes(problems=problems)]
    assert readable == [0, 5] and sorted(i for i, _ in problems) == [1, 2, 3, 4]


def test_writer_killed_mid_episode_leaves_earlier_episodes_intact(store: EpisodeStore) -> None:
    proc = subprocess.run(
        [sys.executable, str(SCRIPTS / "killed_writer.py"), str(store.root), "3", "13", "5"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == -9 and "KILLING" in proc.stdout, proc.stderr
    reopened = EpisodeStore.open(store.root)
    report = reopened.verify()
    assert report.ok == [0, 1, 2] and report.corrupt == []
    for index in report.ok:
        np.testing.assert_array_equal(
            reopened.read_episode(index).data[OBS_STATE][:, 0], index * 1000 + np.arange(20)
        )
    [partial] = report.partial
    # 13 frames with flush_every=5: 10 reached disk, 3 were in memory when the process died.
    assert partial.name == "ep_000003" and partial.frames_flushed == 10 and not partial.writer_alive
    assert not report.clean
    # The lock died with the process: a new writer can start, and continues the numbering.
    record(reopened, episodes=1, frames=4)
    assert reopened.episode_indices() == [0, 1, 2, 4]
    assert reopened.remove_abandoned() == ["ep_000003"] and reopened.verify().clean


def test_reader_in_another_process_only_ever_sees_complete_episodes(store: EpisodeStore) -> None:
    writer = subprocess.Popen(
        [sys.executable, str(SCRIPTS / "slow_writer.py"), str(store.root), "8"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    reader = EpisodeStore.open(store.root)
    seen_counts = []
    deadline = time.monotonic() + 120
    while writer.poll() is None and time.monotonic() < deadline:
        for episode in reader.iter_episodes():
            n = episode.meta.num_frames
            assert n == 15 + 3 * episode.meta.index  # never a prefix of an episode
            np.testing.assert_array_equal(
                episode.data[OBS_STATE][:, 0], episode.meta.index * 1000 + np.arange(n)
            )
        seen_counts.append(len(reader.episode_indices()))
    out, err = writer.communicate(timeout=60)
    assert writer.returncode == 0 and "WRITER DONE" in out, err
    assert reader.episode_indices() == list(range(8))
    assert seen_counts == sorted(seen_counts)  # episodes only ever appear
    assert len(set(seen_counts)) > 2, "reader never overlapped the writer; the test proved nothing"


def test_failed_background_flush_surfaces_as_an_error(store: EpisodeStore) -> None:
    with store.writer(flush_every=2) as writer:
        index = writer.begin_episode("lift", "teleop")
        # Sabotage the staging array: its chunk directory becomes a file, so the flush thread fails.
        chunk_dir = store.root / ".staging" / f"ep_{index:06d}" / OBS_STATE / "c"
        chunk_dir.parent.mkdir(parents=True, exist_ok=True)
        chunk_dir.write_text("not a directory")
        writer.add_frame(make_frame(store.spec, index, 0))
        writer.add_frame(make_frame(store.spec, index, 1))  # queues a block for the flush thread
        with pytest.raises(StoreError, match="writing the episode to disk failed"):
            writer.flush()
        writer.discard_episode()
        # The writer stays usable after the failed episode is discarded.
        index = writer.begin_episode("lift", "teleop")
        writer.add_frame(make_frame(store.spec, index, 0))
        writer.save_episode()
    assert store.verify().ok == [index]


def test_failed_flush_blocks_the_episode_until_discarded(store: EpisodeStore) -> None:
    """A lost block must never be papered over by a retry: add, flush and save all refuse."""
    with store.writer(flush_every=2) as writer:
        index = writer.begin_episode("lift", "teleop")
        chunk_dir = store.root / ".staging" / f"ep_{index:06d}" / OBS_STATE / "c"
        chunk_dir.parent.mkdir(parents=True, exist_ok=True)
        chunk_dir.write_text("not a directory")
        for t in range(2):
            writer.add_frame(make_frame(store.spec, index, t))
        for attempt in (
            writer.flush,
            writer.save_episode,
            lambda: writer.add_frame(make_frame(store.spec, 0, 2)),
        ):
            with pytest.raises(StoreError, match="discard it"):
                attempt()
        assert store.episode_indices() == []
        writer.discard_episode()
    assert store.verify().clean and store.episode_indices() == []


def test_reused_caller_buffers_do_not_alias_recorded_frames(store: EpisodeStore) -> None:
    """Camera SDKs hand out views into reused frame pools; the writer must copy on add_frame."""
    state = np.zeros(8, np.float32)
    frame = make_frame(store.spec, 0, 0)
    image = frame[image_key("front")]
    with store.writer(flush_every=100) as writer:  # nothing flushed until save: worst case
        writer.begin_episode("lift", "teleop")
        for t in range(5):
            state[:] = t
            image[:] = t
            writer.add_frame({**frame, OBS_STATE: state, image_key("front"): image})
        writer.save_episode()
    data = store.read_episode(0).data
    np.testing.assert_array_equal(data[OBS_STATE][:, 0], np.arange(5))
    np.testing.assert_array_equal(data[image_key("front")][:, 0, 0, 0], np.arange(5))


def test_writer_start_survives_a_concurrent_lock_probe(store: EpisodeStore) -> None:
    """`verify` probes the lock; a writer starting at that moment must wait, not fail."""
    import fcntl
    import threading

    (store.root / ".writer.lock").touch()
    probe = open(store.root / ".writer.lock")  # noqa: SIM115
    fcntl.flock(probe, fcntl.LOCK_SH)
    threading.Timer(0.3, lambda: (fcntl.flock(probe, fcntl.LOCK_UN), probe.close())).start()
    with store.writer() as writer:
        assert writer.recording is False


def test_a_new_writer_does_not_adopt_a_dead_writers_partial_episode(store: EpisodeStore) -> None:
    """Liveness is by token: a restarted writer (even with the same PID) sees the old partial as abandoned."""
    dead = store.writer(flush_every=1)
    dead.begin_episode("lift", "teleop")
    dead.add_frame(make_frame(store.spec, 0, 0))
    dead.flush()
    dead._lock_fh.close()  # the process "died": its lock is gone, its staging data is not
    dead._lock_fh = None
    with store.writer() as writer:
        [partial] = store.partial_episodes()
        assert not partial.writer_alive and partial.frames_flushed == 1
        writer.begin_episode("lift", "teleop")
        in_progress = [p.name for p in store.partial_episodes() if p.writer_alive]
        assert in_progress == ["ep_000001"]
        writer.discard_episode()
