"""An in-process node graph for dashboard tests: a real `DashboardSource` without ROS.

`InMemoryGraph` keeps the graph's state the way the real nodes would report it: a policy loop whose
diagnostics it publishes on `tick()` (in policy_node's JSON format), a recorder that writes real
episodes into a real episode store (EpisodeWriter), a learner whose metrics it reports, a hold and a
pause. Its readings go through the same `GraphStatus` and `StoreView` the dashboard node uses; only
the transport (ROS topics and services) is left out. Nodes can be "stopped" to exercise the
unavailable-node paths.
"""

from __future__ import annotations

from pathlib import Path

from conftest import make_frame

from coirl_ros.configs.dashboard import DashboardConfig
from coirl_ros.dashboard import CommandRefused, CommandUnavailable, GraphStatus, NotFound, StoreView
from coirl_ros.dashboard.models import CommandResult, EpisodeList, EpisodeRow, LossCurves, StatusSnapshot
from coirl_ros.data import EpisodeSpec, EpisodeStore
from coirl_ros.data.episode_writer import EpisodeWriter


class Clock:
    """A monotonic clock the test moves by hand (node freshness without sleeping)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class InMemoryGraph:
    """policy + recorder + learner + sim stand-ins behind the dashboard's source protocol."""

    def __init__(
        self, store_path: Path, spec: EpisodeSpec, config: DashboardConfig, task: str = "lift"
    ) -> None:
        self.spec = spec
        self.store_path = store_path
        self.task = task
        self.clock = Clock()
        self.graph = GraphStatus(
            config.node_timeout_s, config.expected_nodes, config.loss_history, self.clock
        )
        self.view = StoreView(store_path, config.curve_sources, config.success_window, min_refresh_s=0.0)
        self.running = {"policy_node", "recorder_node", "learner_node", "sim_node"}
        self.writer: EpisodeWriter | None = None
        self.frames_per_episode = 5
        self.ticks = 0
        self.operator_hold = False
        self.learner_paused = False
        self.sim_seed = 0
        self.calls: list[str] = []

    # ---- what the nodes would publish ------------------------------------------------------------
    def tick(self, ticks: int = 20, dt: float = 1.0) -> None:
        """One second of the policy loop: its diagnostics report (policy_node's format)."""
        self.clock.advance(dt)
        self.ticks += ticks
        recording = self.writer is not None and self.writer.recording
        hold = "operator_hold" if self.operator_hold else (None if recording else "no_episode")
        self.graph.policy_diagnostics(
            {
                "stamp": self.clock.now,
                "hold_reason": hold,
                "episode_active": recording,
                "operator_hold": self.operator_hold,
                "ticks": self.ticks,
                "missed_ticks": 0,
                "period_ms": 50.0,
                "tick_latency_ms": {"p50": 1.5, "p99": 4.0, "max": 6.0},
                "active_version": 3,
                "commands_sent": self.ticks,
            }
        )
        self.graph.joint_diagnostics({"status": "ok", "age_s": 0.01})
        self.graph.graph_nodes(sorted(self.running))

    def learner_report(self, updates: int, losses: dict[str, float], **extra: object) -> None:
        self.graph.learner_metrics(
            {"status": "training", "phase": "online", "updates": updates, "env_steps": updates, "version": 3,
             "paused": self.learner_paused, "method": "csil", "losses": losses, **extra}
        )  # fmt: skip

    def _require(self, node: str, service: str) -> None:
        self.calls.append(service)
        if node not in self.running:
            raise CommandUnavailable(f"{service} is not available: is {node} running?")

    # ---- DashboardSource -------------------------------------------------------------------------
    def status(self) -> StatusSnapshot:
        return self.graph.snapshot()

    def loss_curves(self) -> LossCurves:
        return self.graph.loss_curves()

    def episodes(self) -> EpisodeList:
        return self.view.episodes()

    def start_episode(self) -> CommandResult:
        self._require("recorder_node", "/recorder/start")
        if self.writer is None:
            store = EpisodeStore.create(self.store_path, self.spec, exist_ok=True)
            self.writer = store.writer()
        if self.writer.recording:
            raise CommandRefused("recorder_node refused: already recording")
        index = self.writer.begin_episode(self.task, "policy", policy_version=3)
        self.graph.episode_event({"event": "start", "index": index, "success": None})
        return CommandResult(ok=True, message=f'{{"index": {index}}}', detail={"index": index})

    def stop_episode(self, success: bool) -> CommandResult:
        self._require("recorder_node", "/recorder/stop")
        if self.writer is None or not self.writer.recording:
            raise CommandRefused("recorder_node refused: not recording")
        for t in range(self.frames_per_episode):
            self.writer.add_frame(make_frame(self.spec, 0, t))
        meta = self.writer.save_episode(success=success)
        self.graph.episode_event(
            {"event": "stop", "index": meta.index, "success": success, "frames": meta.num_frames}
        )
        return CommandResult(
            ok=True, message="saved", detail={"index": meta.index, "frames": meta.num_frames}
        )

    def discard_episode(self) -> CommandResult:
        self._require("recorder_node", "/recorder/discard")
        if self.writer is None or not self.writer.recording:
            raise CommandRefused("recorder_node refused: not recording")
        self.writer.discard_episode()
        self.graph.episode_event({"event": "discard", "index": None, "success": None})
        return CommandResult(ok=True, message="discarded")

    def label_episode(self, index: int | None, success: bool | None) -> EpisodeRow:
        try:
            return self.view.relabel(index, success)
        except LookupError as err:
            raise NotFound(str(err)) from None

    def reset_sim(self) -> CommandResult:
        self._require("sim_node", "/sim/reset")
        self.sim_seed += 1
        return CommandResult(ok=True, message=f'{{"seed": {self.sim_seed}}}', detail={"seed": self.sim_seed})

    def pause_learner(self, paused: bool) -> CommandResult:
        self._require("learner_node", "/learner/pause")
        self.learner_paused = paused
        return CommandResult(ok=True, message="training paused" if paused else "training resumed")

    def hold(self, hold: bool) -> CommandResult:
        self._require("policy_node", "/policy/hold")
        self.operator_hold = hold
        return CommandResult(ok=True, message="holding position until released" if hold else "released")

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
