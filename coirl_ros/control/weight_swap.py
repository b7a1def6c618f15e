"""Residual weights from the learner: validated off the control loop, adopted between two ticks.

`submit(bytes)` only stores the bytes and wakes a worker thread; the worker parses them
(`WeightSnapshot.from_bytes`), builds a fresh module of the expected architecture and loads them into
it with `load_into` (shape, finite values, policy spec, version: all checked before anything is
copied). The control loop calls `take()` at the start of a tick: a pointer swap under a lock held for
nanoseconds, so a tick never waits for validation and never sees a half-loaded module (the module that
is acting is never written to).

Versions: a snapshot must be newer than the newest accepted one *of the same learner run*. A snapshot
of another `run_id` starts that run's versions afresh (a learner started from scratch counts from 1
again), unless it was created before the newest accepted snapshot: that is a replay of an older run,
and is rejected. Every accept and reject is reported with its reason (for the operator's log).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from torch import nn

from coirl_ros.learning.acting_policy import load_acting_policy
from coirl_ros.learning.weight_snapshot import PolicySpec, SnapshotError, WeightSnapshot

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReceiverCapabilities:
    """What a receiver can run. Weights for anything else are refused before a module is built for
    them; within these limits any architecture the spec names is accepted (`acting_policy_from_spec`),
    so a learner restarted with other network sizes needs no restart of the robot side."""

    composition: str  # how the receiver composes base and residual (policy.yaml residual)
    scale: float
    action_dim: int  # the robot's action space
    inputs: frozenset[str]  # observation keys the receiver can feed, the base action included

    def check(self, spec: PolicySpec) -> None:
        """Raise `SnapshotError` naming the first thing in `spec` this receiver cannot run."""
        if (spec.composition, spec.scale) != (self.composition, self.scale):
            raise SnapshotError(
                f"policy spec mismatch: the weights are for composition {spec.composition} at scale"
                f" {spec.scale:g}; this policy composes {self.composition} at scale {self.scale:g}"
                " (policy.yaml residual)"
            )
        if spec.action_dim != self.action_dim:
            raise SnapshotError(
                f"policy spec mismatch: the weights act in {spec.action_dim} dimensions; this robot's"
                f" action space has {self.action_dim}"
            )
        missing = [k for k in spec.obs_keys if k not in self.inputs]
        if missing:
            raise SnapshotError(
                f"policy spec mismatch: the weights read {missing}, which this policy does not receive"
                f" (it has {sorted(self.inputs)})"
            )


@dataclass(frozen=True)
class LoadedPolicy:
    """A validated residual module ready to act, with where its weights came from."""

    module: nn.Module
    spec: PolicySpec
    version: int
    run_id: str
    method: str
    created_unix: float
    updates: int
    received_mono: float  # time.monotonic() when its bytes arrived (swap latency = activation - this)
    acting: Any = None  # what `prepare` built from the module off the loop (e.g. cached inference)


@dataclass(frozen=True)
class SwapReport:
    """One accept or reject, as published on the weights-status topic."""

    accepted: bool
    reason: str
    version: int | None
    run_id: str | None
    method: str | None
    bytes: int
    validate_ms: float
    stamp_unix: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class WeightSwapper:
    """Validates snapshots on a worker thread; the loop adopts the newest valid one with `take()`.

    Each snapshot's module is built from its own spec (`load_acting_policy`), after `receiver`
    (None: anything) has checked that this side can run it; the weights must then fit that module
    exactly. `prepare(module)` runs on the worker after a successful load (e.g. caching what acting
    needs), so the loop never pays for it.
    """

    def __init__(
        self,
        receiver: ReceiverCapabilities | None = None,
        on_report: Callable[[SwapReport], None] | None = None,
        prepare: Callable[[nn.Module], Any] | None = None,
    ) -> None:
        self.receiver = receiver
        self._prepare = prepare
        self._on_report = on_report
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._pending: tuple[bytes, float] | None = None  # newest bytes not yet validated
        self._ready: LoadedPolicy | None = None  # validated, not yet taken by the loop
        self._newest: LoadedPolicy | None = None  # newest accepted (ready or active): the version floor
        self._closed = False
        self._thread: threading.Thread | None = None
        self.accepted = 0
        self.rejected = 0

    # ---- life cycle ----------------------------------------------------------------------------
    def start(self) -> WeightSwapper:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name="weight-validator", daemon=True)
                self._thread.start()
        return self

    def close(self, timeout: float = 5.0) -> None:
        with self._lock:
            self._closed = True
            self._wake.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(timeout)

    # ---- producer side (the subscription callback) ----------------------------------------------
    def submit(self, data: bytes) -> None:
        """Queue bytes for validation; never blocks. A newer message supersedes one still queued."""
        superseded = None
        with self._lock:
            if self._pending is not None:
                superseded = SwapReport(
                    False, "superseded by a newer message before validation", None, None, None,
                    len(self._pending[0]), 0.0, time.time(),
                )  # fmt: skip
            self._pending = (bytes(data), time.monotonic())
            self._wake.notify()
        if superseded is not None:
            self._report(superseded)
        if self._thread is None:
            self.start()

    # ---- consumer side (the control loop) ------------------------------------------------------
    def take(self) -> LoadedPolicy | None:
        """A newly validated policy, or None; call between ticks. Never waits for validation."""
        with self._lock:
            ready, self._ready = self._ready, None
        return ready

    # ---- validation ----------------------------------------------------------------------------
    def validate(self, data: bytes, received_mono: float | None = None) -> SwapReport:
        """Validate and (if accepted) stage one snapshot now, on the calling thread; returns the report."""
        received_mono = time.monotonic() if received_mono is None else received_mono
        start = time.perf_counter()
        snap: WeightSnapshot | None = None
        try:
            snap = WeightSnapshot.from_bytes(data)
            if self.receiver is not None:
                self.receiver.check(snap.spec)
            with self._lock:
                newest = self._newest
            min_version = None
            if newest is not None and snap.run_id == newest.run_id:
                min_version = newest.version
            elif newest is not None and snap.created_unix < newest.created_unix:
                raise SnapshotError(
                    f"snapshot of learner run {snap.run_id!r} was created before the loaded one of run"
                    f" {newest.run_id!r}: a replay of an older run"
                )
            module = load_acting_policy(snap, min_version)  # all checks first; all or nothing
            module.eval()
            module.requires_grad_(False)
        except SnapshotError as err:
            return self._report(_report_for(False, str(err), snap, len(data), start))
        acting = self._prepare(module) if self._prepare is not None else None
        loaded = LoadedPolicy(
            module, snap.spec, snap.version, snap.run_id, snap.method, snap.created_unix, snap.updates,
            received_mono, acting,
        )  # fmt: skip
        with self._lock:
            self._newest = loaded
            self._ready = loaded
        return self._report(_report_for(True, "accepted", snap, len(data), start))

    def _work(self) -> None:
        while True:
            with self._lock:
                while self._pending is None and not self._closed:
                    self._wake.wait()
                if self._closed:
                    return
                (data, received), self._pending = self._pending, None
            try:
                self.validate(data, received)
            except Exception:  # a bug here must not kill the thread: the loop keeps its weights
                log.exception("weight validation failed unexpectedly")

    def _report(self, report: SwapReport) -> SwapReport:
        # The callback publishes a message: never under the lock `take()` needs.
        with self._lock:
            if report.accepted:
                self.accepted += 1
            else:
                self.rejected += 1
        if self._on_report is not None:
            try:
                self._on_report(report)
            except Exception:
                log.exception("weight status report failed")
        return report


def _report_for(
    accepted: bool, reason: str, snap: WeightSnapshot | None, size: int, start: float
) -> SwapReport:
    """A report on `snap` (None: the bytes did not even parse), timed from `start` (perf_counter)."""
    return SwapReport(
        accepted,
        reason,
        snap.version if snap else None,
        snap.run_id if snap else None,
        snap.method if snap else None,
        size,
        round((time.perf_counter() - start) * 1e3, 3),
        time.time(),
    )
