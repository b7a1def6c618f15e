"""AsyncChunker: inference off the control loop, latency compensation, holds, errors, resets.

The bases here are real `BasePolicy` implementations whose inference takes real time (a sleep or
a gate the test opens); each encodes in its actions the control tick they are meant for, so a test
can check that the row played at tick t is exactly the one planned for tick t.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from coirl_ros.constants import OBS_STATE
from coirl_ros.policies.async_chunker import AsyncChunker
from coirl_ros.policies.base_policy import BasePolicy
from coirl_ros.policies.local_bc_base import LocalBCBase, LocalBCConfig, Normalisation, build_network

SCALE = 1e-4  # action[0] = tick * SCALE: ticks up to 10^4 stay inside [-1, 1]


class TickPlanner:
    """Row j of the chunk for the observation of tick r is the action for tick r + j."""

    def __init__(self, chunk_size: int, latency: tuple[float, float] = (0.0, 0.0), seed: int = 0) -> None:
        self.chunk_size, self.action_dim = chunk_size, 2
        self.latency = latency
        self.rng = np.random.default_rng(seed)
        self.gate = threading.Event()
        self.gate.set()
        self.resets = 0
        self.calls = 0
        self.fail_next = 0
        self.bad: np.ndarray | None = None

    def predict_chunk(self, observation: dict[str, np.ndarray]) -> np.ndarray:
        self.calls += 1
        self.gate.wait()
        time.sleep(self.rng.uniform(*self.latency))
        if self.fail_next:
            self.fail_next -= 1
            raise RuntimeError("camera frame missing")
        if self.bad is not None:
            return self.bad
        ticks = int(observation["tick"][0]) + np.arange(self.chunk_size)
        return np.stack([ticks * SCALE, np.zeros(self.chunk_size)], axis=1)

    def reset(self) -> None:
        self.resets += 1


def tick_of(action: np.ndarray) -> int:
    return round(action[0] / SCALE)


def wait_for(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.002)


def test_keeps_a_50hz_loop_fed_while_chunks_take_50_to_150_ms() -> None:
    base = TickPlanner(chunk_size=30, latency=(0.05, 0.15))
    assert isinstance(base, BasePolicy)
    period, ticks = 0.02, 150  # 3 s of a 50 Hz loop
    played: list[tuple[int, np.ndarray | None]] = []
    with AsyncChunker(base, requery_every=10, margin_steps=1) as chunker:
        next_deadline = time.monotonic()
        for t in range(ticks):
            played.append((t, chunker.action({"tick": np.array([t])})))
            next_deadline += period
            time.sleep(max(0.0, next_deadline - time.monotonic()))  # a late tick is not made up
        stats = chunker.stats()
    first = next(t for t, a in played if a is not None)
    # Holds only until the first chunk; afterwards every tick gets the action planned for it.
    assert all(a is None for _, a in played[:first])
    assert all(a is not None and tick_of(a) == t for t, a in played[first:])
    assert stats.warmup_ticks == first and stats.starved_ticks == 0 and stats.errors == 0
    assert stats.ticks == ticks
    # Latency is compensated: rows already in the past on arrival were skipped, never played late.
    assert stats.skipped_actions >= stats.chunks * 2  # >= 50 ms = 2.5 ticks per chunk
    assert min(stats.latency_s) >= 0.05
    # Replanned about every requery_every ticks; no action older than that plus the worst latency.
    assert stats.chunks >= (ticks - first) // 10 - 1
    assert stats.max_age <= 10 + max(stats.latency_ticks) + 1


def test_action_never_waits_for_a_running_inference() -> None:
    base = TickPlanner(chunk_size=8)
    base.gate.clear()  # inference "runs" until the test opens the gate
    with AsyncChunker(base, requery_every=4) as chunker:
        results: list[np.ndarray | None] = []
        caller = threading.Thread(
            target=lambda: results.extend(chunker.action({"tick": np.array([t])}) for t in range(5))
        )
        caller.start()
        caller.join(timeout=5.0)
        assert not caller.is_alive(), "action() blocked on inference"
        assert results == [None] * 5
        assert chunker.stats().requests == 1  # one request in flight, not one per tick
        base.gate.set()
        wait_for(lambda: chunker.stats().latency_s)  # computed, not yet adopted
        action = chunker.action({"tick": np.array([5])})
        # The chunk was planned at tick 0 and arrives at tick 5: rows 0-4 are skipped.
        assert action is not None and tick_of(action) == 5
        stats = chunker.stats()
        assert stats.skipped_actions == 5 and stats.latency_ticks == [5]


def test_chunk_running_out_is_a_counted_hold() -> None:
    base = TickPlanner(chunk_size=4)
    with AsyncChunker(base, requery_every=4, margin_steps=0) as chunker:
        chunker.action({"tick": np.array([0])})
        wait_for(lambda: chunker.stats().latency_s)
        base.gate.clear()  # the next inference stalls
        out = [chunker.action({"tick": np.array([t])}) for t in range(1, 7)]
        base.gate.set()
    assert [tick_of(a) for a in out[:3]] == [1, 2, 3]
    assert out[3:] == [None, None, None]
    assert chunker.stats().starved_ticks == 3


@pytest.mark.parametrize("fault", ["exception", "nan", "shape"])
def test_failed_inference_never_reaches_the_loop(fault: str) -> None:
    base = TickPlanner(chunk_size=6)
    if fault == "exception":
        base.fail_next = 1
    else:
        base.bad = np.full((6, 2), np.nan) if fault == "nan" else np.zeros((5, 2))
    with AsyncChunker(base, requery_every=3, error_backoff_s=0.01) as chunker:
        assert chunker.action({"tick": np.array([0])}) is None
        wait_for(lambda: chunker.stats().errors >= 1)
        stats = chunker.stats()
        expected = {"exception": "camera frame missing", "nan": "NaN", "shape": "shape (5, 2)"}[fault]
        assert expected in stats.last_error
        base.bad = None  # the fault clears: the chunker recovers on its own
        wait_for(lambda: chunker.action({"tick": np.array([0])}) is not None)
    assert chunker.stats().chunks >= 1


def test_reset_discards_the_old_episodes_chunk_and_resets_the_base_on_the_worker() -> None:
    base = TickPlanner(chunk_size=6)
    base.gate.clear()
    with AsyncChunker(base, requery_every=3) as chunker:
        chunker.action({"tick": np.array([100])})  # episode 1 requests a chunk planned at "tick 100"
        wait_for(lambda: base.calls == 1)
        chunker.reset()
        base.gate.set()
        wait_for(lambda: chunker.stats().discarded == 1)
        assert chunker.action({"tick": np.array([0])}) is None  # nothing from episode 1 is played
        wait_for(lambda: base.resets == 1)
        wait_for(lambda: chunker.stats().latency_s and len(chunker.stats().latency_s) >= 1)
        action = None
        for t in range(1, 6):
            action = chunker.action({"tick": np.array([t])})
            if action is not None:
                break
            time.sleep(0.01)
        assert action is not None and tick_of(action) == t


def test_wraps_the_local_bc_base() -> None:
    rng = np.random.default_rng(0)
    config = LocalBCConfig(chunk_size=5, hidden=(16,))
    norm = Normalisation(np.zeros(8), np.ones(8), np.zeros(7), np.full(7, 0.3))
    base = LocalBCBase(
        build_network(8, 7, 5, (16,)), norm, config, state_dim=8, env_state_dim=0, action_dim=7
    )
    obs = {OBS_STATE: rng.normal(size=8).astype(np.float32)}
    rows = base.predict_chunk(obs)
    with AsyncChunker(base, requery_every=3) as chunker:
        played = []
        for _ in range(40):
            played.append(chunker.action(obs))
            time.sleep(0.005)
        stats = chunker.stats()
    assert stats.chunks >= 3 and stats.starved_ticks == 0 and stats.errors == 0
    # The observation never changes, so every action is some row of its chunk.
    assert all(any(np.allclose(a, r) for r in rows) for a in played if a is not None)


def test_requery_every_must_fit_the_chunk() -> None:
    with pytest.raises(ValueError, match="requery_every must be in"):
        AsyncChunker(TickPlanner(chunk_size=4), requery_every=5)
