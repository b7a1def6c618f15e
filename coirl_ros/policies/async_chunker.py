"""Asynchronous action chunking: base-policy inference off the control loop, latency compensated.

pi0.5 takes tens of milliseconds per chunk on a GPU (seconds on a CPU); a 10-50 Hz control loop
cannot wait for it. `AsyncChunker` wraps any `BasePolicy` (pi0.5, the local BC base, ...):

- a worker thread runs `predict_chunk`; the loop's `action(observation)` only takes a short lock
  to swap pointers and never waits for inference;
- chunks are indexed by control tick: a chunk computed from the observation of tick r holds the
  actions for ticks r, r+1, ...; when it arrives at tick t, the t - r actions already in the past
  are skipped (counted in `skipped_actions`) and tick t plays row t - r;
- the next chunk is requested `requery_every` ticks after the current chunk's observation (the same
  replanning rate as the synchronous `ChunkedBaseRunner`), or earlier when the measured latency
  (the largest recent request-to-arrival time in ticks) plus `margin_steps` would otherwise let
  the chunk run out before its successor arrives;
- before the first chunk of an episode arrives, and whenever a chunk runs out (inference slower than
  the chunk is long, or failing), `action` returns None: the caller holds position. Ticks of the
  first kind count as `warmup_ticks`, of the second as `starved_ticks` (missed deadlines);
- a failing or malformed chunk (exception, wrong shape, NaN) never reaches the robot: it is counted
  in `errors` with `last_error`, logged, and retried after `error_backoff_s`.

Real-time chunking (RTC, which inpaints the new chunk to agree with the actions still being
executed) is not used: LeRobot's needs the leftover actions and delay passed into pi0.5's sampler,
which the narrow `BasePolicy.predict_chunk(observation)` contract does not carry.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from coirl_ros.policies.base_policy import BasePolicy

log = logging.getLogger(__name__)


@dataclass
class ChunkerStats:
    """Counters since construction (not reset per episode); latencies of the last `history` chunks."""

    ticks: int = 0
    warmup_ticks: int = 0  # ticks before an episode's first chunk arrived: None returned (hold)
    starved_ticks: int = 0  # ticks after that with the chunk run out: None returned, a missed deadline
    requests: int = 0
    chunks: int = 0  # chunks adopted by the loop
    skipped_actions: int = 0  # actions of adopted chunks that were already in the past on arrival
    discarded: int = 0  # chunks computed for an episode that was reset meanwhile
    errors: int = 0
    last_error: str = ""
    max_age: int = 0  # largest row index played: ticks between an observation and an action using it
    latency_s: list[float] = field(default_factory=list)  # predict_chunk wall time
    latency_ticks: list[int] = field(default_factory=list)  # request tick -> adoption tick

    def latency_quantile(self, q: float) -> float:
        """A quantile of the recent chunk latencies in seconds (nan before the first chunk)."""
        return float(np.quantile(self.latency_s, q)) if self.latency_s else float("nan")


@dataclass
class _Request:
    observation: dict[str, np.ndarray]
    tick: int
    episode: int


class AsyncChunker:
    """Feeds a control loop from a base policy running on a worker thread (module docstring).

    Use: `with AsyncChunker(base, requery_every=10) as chunker:` then
    `a = chunker.action(obs)` once per control tick (a row of the chunk, or None = hold), and
    `chunker.reset()` at each episode start.
    """

    def __init__(
        self,
        base: BasePolicy,
        requery_every: int | None = None,
        margin_steps: int = 1,
        error_backoff_s: float = 0.5,
        history: int = 100,
    ) -> None:
        requery_every = base.chunk_size if requery_every is None else requery_every
        if not 1 <= requery_every <= base.chunk_size:
            raise ValueError(
                f"requery_every must be in [1, {base.chunk_size}] (the chunk size), got {requery_every}"
            )
        if margin_steps < 0 or error_backoff_s < 0 or history < 1:
            raise ValueError(
                f"need margin_steps >= 0, error_backoff_s >= 0, history >= 1; got"
                f" {margin_steps}, {error_backoff_s}, {history}"
            )
        self.base = base
        self.requery_every = requery_every
        self.margin_steps = margin_steps
        self.error_backoff_s = error_backoff_s
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._thread: threading.Thread | None = None
        self._closed = False
        self._stats = ChunkerStats()
        self._latency_s: deque[float] = deque(maxlen=history)
        self._latency_ticks: deque[int] = deque(maxlen=20)  # the lead estimate follows recent load
        self._episode = 0
        self._base_reset_due = False
        self._tick = 0
        self._chunk: np.ndarray | None = None
        self._chunk_tick = 0
        self._request: _Request | None = None  # waiting for the worker
        self._in_flight = False  # a request is queued or being computed
        self._result: tuple[np.ndarray, int, int] | None = None  # (chunk, request tick, episode)
        self._logged_errors: set[str] = set()

    # ---- life cycle ----------------------------------------------------------------------------
    def start(self) -> AsyncChunker:
        """Start the worker thread (idempotent; `action` starts it too)."""
        with self._lock:
            if self._closed:
                raise RuntimeError("AsyncChunker is closed")
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name="base-chunk-worker", daemon=True)
                self._thread.start()
        return self

    def close(self, timeout: float = 5.0) -> None:
        """Stop the worker (waits for a running inference up to `timeout` s)."""
        with self._lock:
            self._closed = True
            self._wake.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(timeout)

    def __enter__(self) -> AsyncChunker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def reset(self) -> None:
        """New episode: drop the current chunk and any result still coming for the old episode.

        The base's own `reset` runs on the worker before its next inference (never concurrently).
        An inference already running finishes first, so the new episode's first chunk may take up
        to two latencies.
        """
        with self._lock:
            self._episode += 1
            self._base_reset_due = True
            self._tick = 0
            self._chunk = None
            if self._request is not None:  # queued, not yet taken by the worker: withdraw it
                self._request = None
                self._in_flight = False
            self._result = None

    # ---- the control loop's side ----------------------------------------------------------------
    @property
    def expected_latency_steps(self) -> int:
        """Ticks from request to arrival, as recently measured (the worst of the last 20)."""
        with self._lock:
            return max(self._latency_ticks, default=0)

    def action(self, observation: Mapping[str, np.ndarray]) -> np.ndarray | None:
        """The base action for this control tick, or None (no chunk yet / chunk ran out): hold.

        Never waits for inference. Call exactly once per control tick: ticks are what chunk rows
        are indexed by.
        """
        if self._thread is None:
            self.start()
        with self._lock:
            tick = self._tick
            self._tick += 1
            self._stats.ticks += 1
            self._adopt_result(tick)
            out = None
            if self._chunk is None:
                self._stats.warmup_ticks += 1
            else:
                row = tick - self._chunk_tick
                if row < len(self._chunk):
                    out = self._chunk[row].copy()
                    self._stats.max_age = max(self._stats.max_age, row)
                else:
                    self._stats.starved_ticks += 1
            if not self._in_flight and self._request_due(tick):
                # Copy: the caller may reuse its arrays while the worker still reads them.
                obs = {k: np.array(v, copy=True) for k, v in observation.items()}
                self._request = _Request(obs, tick, self._episode)
                self._in_flight = True
                self._stats.requests += 1
                self._wake.notify()
        return out

    def stats(self) -> ChunkerStats:
        """A snapshot of the counters."""
        with self._lock:
            snap = ChunkerStats(**{k: v for k, v in vars(self._stats).items() if not k.startswith("latency")})
            snap.latency_s = list(self._latency_s)
            snap.latency_ticks = list(self._latency_ticks)
        return snap

    def _adopt_result(self, tick: int) -> None:
        if self._result is None:
            return
        chunk, request_tick, episode = self._result
        self._result = None
        if episode != self._episode:
            self._stats.discarded += 1
            return
        self._chunk, self._chunk_tick = chunk, request_tick
        self._stats.chunks += 1
        self._stats.skipped_actions += min(tick - request_tick, len(chunk))
        self._latency_ticks.append(tick - request_tick)

    def _request_due(self, tick: int) -> bool:
        if self._chunk is None:
            return True
        lead = max(self._latency_ticks, default=0) + self.margin_steps
        row = tick - self._chunk_tick
        return row >= min(self.requery_every, len(self._chunk) - lead)

    # ---- the worker's side ----------------------------------------------------------------------
    def _work(self) -> None:
        while True:
            with self._lock:
                while self._request is None and not self._closed:
                    self._wake.wait()
                if self._closed:
                    return
                request, self._request = self._request, None
                reset_base, self._base_reset_due = self._base_reset_due, False
            assert request is not None
            chunk, error, elapsed = None, "", 0.0
            try:
                if reset_base:
                    self.base.reset()
                start = time.perf_counter()
                chunk = self._validated(self.base.predict_chunk(request.observation))
                elapsed = time.perf_counter() - start
            except Exception as err:  # a failing base must not kill the worker; the loop holds
                error = f"{type(err).__name__}: {err}"
            if error:
                self._report(error)
                time.sleep(self.error_backoff_s)
            with self._lock:
                self._in_flight = False
                if error:
                    self._stats.errors += 1
                    self._stats.last_error = error
                elif request.episode != self._episode:
                    self._stats.discarded += 1
                else:
                    self._latency_s.append(elapsed)
                    self._result = (chunk, request.tick, request.episode)

    def _validated(self, chunk: np.ndarray) -> np.ndarray:
        chunk = np.asarray(chunk, dtype=np.float64)
        expected = (self.base.chunk_size, self.base.action_dim)
        if chunk.shape != expected:
            raise ValueError(f"base policy returned a chunk of shape {chunk.shape}, expected {expected}")
        if not np.all(np.isfinite(chunk)):
            raise ValueError("base policy returned NaN or inf actions")
        return np.clip(chunk, -1.0, 1.0)

    def _report(self, error: str) -> None:
        if error not in self._logged_errors:  # once per distinct message: a persistent fault must not flood
            self._logged_errors.add(error)
            log.error("base policy inference failed (the loop holds until a chunk arrives): %s", error)
