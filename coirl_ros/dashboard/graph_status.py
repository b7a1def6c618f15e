"""The node graph's live state, folded from the JSON reports the nodes publish. No ROS here.

`dashboard_node` hands every diagnostics / metrics / episode-event payload to `GraphStatus` together
with the names currently in the ROS graph; the web app asks it for a `StatusSnapshot`. A node is alive
while its periodic diagnostics are fresh (younger than `node_timeout_s`); nodes that publish no
diagnostics (sim_node, recorder_node) are alive while they are in the ROS graph. Thread-safe: the ROS
callbacks write, the web server's threads read.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from pydantic import BaseModel, ValidationError

from coirl_ros.dashboard.models import (
    ControlState,
    LearnerState,
    LossCurves,
    LossSeries,
    NodeState,
    Quantiles,
    RecordingState,
    StatusSnapshot,
    WeightsState,
)

POLICY = "policy_node"
JOINT = "joint_node"
LEARNER = "learner_node"
RECORDER = "recorder_node"


def camera_node_name(camera: str) -> str:
    """The row of one camera's ingestion node: camera_node runs once per camera, named `camera_<name>`
    by the launch files, so its diagnostics and its presence in the ROS graph share one row."""
    return f"camera_{camera}"


class _Heartbeat:
    __slots__ = ("detail", "received")

    def __init__(self, received: float, detail: str) -> None:
        self.received = received
        self.detail = detail


class GraphStatus:
    """Folds node reports into node liveness, control-loop, learner and recorder state."""

    def __init__(
        self,
        node_timeout_s: float = 5.0,
        expected_nodes: Iterable[str] = (),
        loss_history: int = 500,
        clock: Callable[[], float] = time.monotonic,
        ignore_nodes: Iterable[str] = (),
    ) -> None:
        self.node_timeout_s = node_timeout_s
        self.expected = list(expected_nodes)
        self.clock = clock
        self.ignore = set(ignore_nodes)  # the dashboard itself, tools
        self._lock = threading.Lock()
        self._beats: dict[str, _Heartbeat] = {}
        self._in_graph: set[str] = set()
        self._ever_in_graph: set[str] = set()
        self._policy: dict[str, Any] | None = None
        self._policy_received = 0.0
        self._rate_hz: float | None = None
        self._learner: dict[str, Any] | None = None
        self._learner_received = 0.0
        self._recording = RecordingState()
        self._weights: WeightsState | None = None
        self._losses: deque[tuple[int, dict[str, float]]] = deque(maxlen=loss_history)
        self._loss_revision = 0

    # ---- inputs --------------------------------------------------------------------------------
    def _beat(self, node: str, detail: str) -> float:
        now = self.clock()
        self._beats[node] = _Heartbeat(now, detail)
        return now

    def policy_diagnostics(self, report: dict[str, Any]) -> None:
        """policy_node's diagnostics (ticks, tick latency, hold reason, active version)."""
        with self._lock:
            hold = report.get("hold_reason")
            now = self._beat(POLICY, "acting" if hold is None else f"holding: {hold}")
            previous, previous_received = self._policy, self._policy_received
            if previous is not None:
                # Ticks per second of the node's own clock (sim time under use_sim_time); receive times
                # when a report has no stamp.
                dt = _number(report.get("stamp")) - _number(previous.get("stamp"))
                if not dt > 0:
                    dt = now - previous_received
                dticks = _number(report.get("ticks")) - _number(previous.get("ticks"))
                if dt > 0 and dticks >= 0:
                    self._rate_hz = dticks / dt
            self._policy, self._policy_received = report, now

    def joint_diagnostics(self, report: dict[str, Any]) -> None:
        with self._lock:
            self._beat(JOINT, str(report.get("status", "")))

    def camera_diagnostics(self, report: dict[str, Any]) -> None:
        with self._lock:
            camera = str(report.get("camera") or "?")
            self._beat(camera_node_name(camera), str(report.get("status", "")))

    def learner_metrics(self, report: dict[str, Any]) -> None:
        """learner_node's metrics; a report with new updates and losses adds a loss-curve point."""
        with self._lock:
            self._beat(LEARNER, str(report.get("status") or report.get("phase") or ""))
            self._learner, self._learner_received = report, self.clock()
            updates = report.get("updates")
            raw = report.get("losses")
            losses = {
                str(k): float(v)
                for k, v in (raw if isinstance(raw, dict) else {}).items()
                if isinstance(v, int | float)
            }
            if isinstance(updates, int) and losses and (not self._losses or self._losses[-1][0] != updates):
                if self._losses and updates < self._losses[-1][0]:
                    self._losses.clear()  # a fresh learner run (not a resume): start the curves again
                self._losses.append((updates, losses))
                self._loss_revision += 1

    def episode_event(self, event: dict[str, Any]) -> None:
        """The recorder's /coirl/episode events: start / stop / discard."""
        with self._lock:
            kind = event.get("event")
            index = event.get("index") if isinstance(event.get("index"), int) else None
            if kind == "start":
                self._recording = RecordingState(active=True, index=index, last_event="start")
            elif kind in ("stop", "discard"):
                success = event.get("success") if kind == "stop" else None
                frames = event.get("frames") if isinstance(event.get("frames"), int) else None
                self._recording = RecordingState(
                    active=False, index=index, last_event=kind, success=success, frames=frames
                )

    def weights_status(self, report: dict[str, Any]) -> None:
        with self._lock:
            version = report.get("version")
            self._weights = WeightsState(
                accepted=bool(report.get("accepted")),
                version=version if isinstance(version, int) else None,
                reason=report.get("reason"),
            )

    def graph_nodes(self, names: Iterable[str]) -> None:
        """The node names in the ROS graph right now (presence, for nodes without diagnostics)."""
        with self._lock:
            # Names starting with "_" are hidden nodes by ROS convention (ros2cli's daemon, tools).
            present = {n for n in names if n not in self.ignore and not n.startswith("_")}
            self._in_graph = present
            self._ever_in_graph |= present

    # ---- outputs -------------------------------------------------------------------------------
    def snapshot(self) -> StatusSnapshot:
        with self._lock:
            now = self.clock()
            return StatusSnapshot(
                time=time.time(),
                nodes=self._nodes(now),
                control=self._control(now),
                learner=self._learner_state(now),
                recording=self._recording,
                weights=self._weights,
            )

    def loss_curves(self) -> LossCurves:
        with self._lock:
            keys = sorted({k for _, losses in self._losses for k in losses})
            series = [
                LossSeries(key=k, points=[(u, losses[k]) for u, losses in self._losses if k in losses])
                for k in keys
            ]
            return LossCurves(revision=self._loss_revision, series=series)

    def _nodes(self, now: float) -> list[NodeState]:
        names = list(self.expected)
        for name in sorted(self._ever_in_graph | set(self._beats)):
            if name not in names:
                names.append(name)
        out = []
        for name in names:
            beat = self._beats.get(name)
            if beat is not None:
                age = now - beat.received
                alive = age <= self.node_timeout_s
                detail = beat.detail if alive else f"silent for {age:.0f} s"
                out.append(
                    NodeState(name=name, alive=alive, seen=True, via="diagnostics", age_s=age, detail=detail)
                )
            elif name in self._ever_in_graph:
                alive = name in self._in_graph
                detail = "running" if alive else "left the graph"
                out.append(NodeState(name=name, alive=alive, seen=True, via="graph", detail=detail))
            else:
                out.append(NodeState(name=name, alive=False, seen=False, via="none", detail="not seen yet"))
        return out

    def _control(self, now: float) -> ControlState | None:
        report = self._policy
        if report is None:
            return None
        period_ms = report.get("period_ms")
        latency = report.get("tick_latency_ms") or {}
        if not isinstance(latency, dict):
            latency = {}
        return _lenient(
            ControlState,
            rate_hz=None if self._rate_hz is None else round(self._rate_hz, 2),
            target_rate_hz=round(1000.0 / period_ms, 3)
            if isinstance(period_ms, int | float) and period_ms
            else None,
            tick_latency_ms=_lenient(Quantiles, **{k: latency.get(k) for k in ("p50", "p99", "max")}),
            missed_ticks=report.get("missed_ticks"),
            hold_reason=report.get("hold_reason"),
            operator_hold=bool(report.get("operator_hold")),
            episode_active=bool(report.get("episode_active")),
            active_version=report.get("active_version"),
            commands_sent=report.get("commands_sent"),
            age_s=now - self._policy_received,
        )

    def _learner_state(self, now: float) -> LearnerState | None:
        report = self._learner
        if report is None:
            return None
        fields = {k: report.get(k) for k in LearnerState.model_fields if k not in ("losses", "age_s")}
        raw = report.get("losses")
        raw = raw if isinstance(raw, dict) else {}
        losses = {str(k): (v if isinstance(v, int | float) else None) for k, v in raw.items()}
        return _lenient(LearnerState, **fields, losses=losses, age_s=now - self._learner_received)


def _lenient[M: BaseModel](model_cls: type[M], **fields: Any) -> M:
    """The model from a node's report, leaving out fields of the wrong type (a malformed report from
    another version of a node must not take the whole page down)."""
    try:
        return model_cls(**fields)
    except ValidationError as err:
        bad = {e["loc"][0] for e in err.errors() if e["loc"]}
        return model_cls(**{k: v for k, v in fields.items() if k not in bad})


def _number(value: Any) -> float:
    return float(value) if isinstance(value, int | float) else float("nan")
