"""dashboard_node: the operator's web page over the running graph (coirl_ros.dashboard, FastAPI).

A thin adapter: it implements the dashboard's `DashboardSource` with ROS.

- in: /coirl/policy/diagnostics, /coirl/joint/diagnostics, /coirl/cameras/diagnostics,
  /coirl/learner/metrics, /coirl/policy/weights_status (JSON), /coirl/episode (latched events), and
  the ROS graph's node names (liveness of nodes without diagnostics); the episode store (read, and
  relabel: no writer lock needed beside the recorder);
- out: calls /recorder/{start,stop,discard}, /sim/reset, /learner/pause, /policy/hold, each with
  `service_timeout_s` (a node that is not running is a 503 on the page within a second).

Threads: rclpy spins on the main thread (its signal handling lives there); uvicorn serves on its own
thread (`DashboardServer`), and the web handlers only read `GraphStatus` (lock-protected) or wait on
a service future with a timeout, so ROS never blocks the web server and the web never blocks ROS.
Shutdown (Ctrl-C / SIGTERM): the live-update streams end, the server stops, then rclpy.

Parameters: `dashboard_config` (config/dashboard.yaml) with overrides `host`, `port`, `store`,
`update_period_s`, `node_timeout_s`, `service_timeout_s`, `success_window`, and `expected_nodes`
(comma-separated node names, e.g. the graph a launch file starts). The token is deliberately
not a ROS parameter (any process on the DDS domain can read parameters): it is generated at start,
or set in the YAML file. The page URL with the token is printed once on stdout (not to /rosout).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Sequence
from typing import Any

from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.node import Node
from std_msgs.msg import String
from std_srvs.srv import SetBool, Trigger

from coirl_ros.configs import ConfigError, config_from_dict
from coirl_ros.configs.dashboard import DashboardConfig
from coirl_ros.dashboard import (
    CommandRefused,
    CommandUnavailable,
    DashboardServer,
    GraphStatus,
    NotFound,
    PortInUse,
    ServerError,
    StoreView,
    create_app,
)
from coirl_ros.dashboard.models import CommandResult, EpisodeList, EpisodeRow, LossCurves, StatusSnapshot
from coirl_ros.dashboard.security import resolve_token
from coirl_ros.dashboard.source import CommandError
from coirl_ros.data import StoreError
from coirl_ros.nodes.interfaces import (
    CAMERA_DIAGNOSTICS_TOPIC,
    COMMAND_QOS,
    EPISODE_TOPIC,
    JOINT_DIAGNOSTICS_TOPIC,
    LATCHED_QOS,
    LEARNER_METRICS_TOPIC,
    LEARNER_PAUSE_SERVICE,
    POLICY_DIAGNOSTICS_TOPIC,
    POLICY_HOLD_SERVICE,
    RECORDER_DISCARD_SERVICE,
    RECORDER_START_SERVICE,
    RECORDER_STOP_SERVICE,
    SIM_RESET_SERVICE,
    WEIGHTS_STATUS_TOPIC,
)
from coirl_ros.nodes.node_runtime import run_node
from coirl_ros.nodes.ros_params import declare_config_file, declare_overrides

DASHBOARD_FIELDS = (
    "host", "port", "store", "update_period_s", "node_timeout_s", "service_timeout_s", "success_window",
)  # fmt: skip
# Which node answers each service, for "is it running?" in the error the operator sees.
SERVICES: dict[str, tuple[type, str]] = {
    RECORDER_START_SERVICE: (Trigger, "recorder_node"),
    RECORDER_STOP_SERVICE: (SetBool, "recorder_node"),
    RECORDER_DISCARD_SERVICE: (Trigger, "recorder_node"),
    SIM_RESET_SERVICE: (Trigger, "sim_node"),
    LEARNER_PAUSE_SERVICE: (SetBool, "learner_node"),
    POLICY_HOLD_SERVICE: (SetBool, "policy_node"),
}
SERVICE_WAIT_S = 1.0  # a service not in the graph within this is reported unavailable at once
GRAPH_PERIOD_S = 1.0


class DashboardNode(Node):
    """The dashboard's source over ROS, and the web server's owner (module docstring)."""

    def __init__(self) -> None:
        super().__init__("dashboard_node")
        config = declare_config_file(self, "dashboard_config", "dashboard.yaml", DashboardConfig)
        config = declare_overrides(self, config, DASHBOARD_FIELDS)
        # The nodes a launch file starts, listed before they first report: comma-separated ("" = YAML's).
        expected = str(self.declare_parameter("expected_nodes", "").value)
        if expected.strip():
            names = [n.strip() for n in expected.split(",") if n.strip()]
            config = config_from_dict(
                DashboardConfig,
                config.model_dump() | {"expected_nodes": names},
                "dashboard_node expected_nodes",
            )
        self.config: DashboardConfig = config
        cfg = self.config
        self.graph = GraphStatus(
            cfg.node_timeout_s, cfg.expected_nodes, cfg.loss_history, ignore_nodes={self.get_name()}
        )
        self.view = StoreView(cfg.store, cfg.curve_sources, cfg.success_window)

        group = ReentrantCallbackGroup()
        feeds: list[tuple[str, Callable[[dict[str, Any]], None], Any]] = [
            (POLICY_DIAGNOSTICS_TOPIC, self.graph.policy_diagnostics, COMMAND_QOS),
            (JOINT_DIAGNOSTICS_TOPIC, self.graph.joint_diagnostics, COMMAND_QOS),
            (CAMERA_DIAGNOSTICS_TOPIC, self.graph.camera_diagnostics, COMMAND_QOS),
            (LEARNER_METRICS_TOPIC, self.graph.learner_metrics, COMMAND_QOS),
            (WEIGHTS_STATUS_TOPIC, self.graph.weights_status, COMMAND_QOS),
            (EPISODE_TOPIC, self.graph.episode_event, LATCHED_QOS),  # the latest event, even if sent before
        ]
        for topic, feed, qos in feeds:
            self.create_subscription(String, topic, self._json_feed(topic, feed), qos, callback_group=group)
        self.clients_ = {
            name: self.create_client(srv, name, callback_group=group) for name, (srv, _) in SERVICES.items()
        }
        self.create_timer(GRAPH_PERIOD_S, self._poll_graph, callback_group=group)

        token = resolve_token(cfg)
        app = create_app(self, cfg, token)
        try:
            try:
                server = DashboardServer(app, cfg.host, cfg.port)
            except PortInUse as err:
                # A second graph on this machine (tests, a sim beside the robot) must not fail over a
                # port: serve on a free one, and the URL printed below says which.
                self.get_logger().warn(f"{err}; serving on a free port instead")
                server = DashboardServer(app, cfg.host, 0)
            self.server = server.start()
        except ServerError as err:
            raise ConfigError(str(err)) from None
        where = "this machine only" if cfg.loopback_only else f"the network ({cfg.host})"
        # The token goes to stdout once, never to /rosout (every node on the domain could read it there).
        print(f"dashboard: {self.server.page_url(token)}", flush=True)
        self.get_logger().info(
            f"dashboard at {self.server.url} (reachable from {where}; the URL with its token is on stdout),"
            f" store {cfg.store}"
        )

    # ---- inputs --------------------------------------------------------------------------------
    def _json_feed(self, topic: str, feed: Callable[[dict[str, Any]], None]) -> Callable[[String], None]:
        def on_message(msg: String) -> None:
            try:
                payload = json.loads(msg.data)
                if not isinstance(payload, dict):
                    raise ValueError("not a JSON object")
            except ValueError as err:
                self.get_logger().warn(f"ignored {topic}: {err}", throttle_duration_sec=5.0)
                return
            feed(payload)

        return on_message

    def _poll_graph(self) -> None:
        self.graph.graph_nodes(self.get_node_names())

    # ---- DashboardSource: reading ----------------------------------------------------------------
    def status(self) -> StatusSnapshot:
        return self.graph.snapshot()

    def loss_curves(self) -> LossCurves:
        return self.graph.loss_curves()

    def episodes(self) -> EpisodeList:
        return self.view.episodes()

    # ---- DashboardSource: controls (called on the web server's worker threads) ------------------
    def _call(self, name: str, request: Any) -> Any:
        client = self.clients_[name]
        owner = SERVICES[name][1]
        if not client.service_is_ready() and not client.wait_for_service(timeout_sec=SERVICE_WAIT_S):
            raise CommandUnavailable(f"{name} is not available: is {owner} running?")
        future = client.call_async(request)
        done = threading.Event()
        future.add_done_callback(lambda _f: done.set())
        if not done.wait(self.config.service_timeout_s):
            client.remove_pending_request(future)
            raise CommandUnavailable(
                f"{name}: {owner} did not answer within {self.config.service_timeout_s} s"
            )
        response = future.result()
        if response is None:  # cancelled (shutting down)
            raise CommandUnavailable(f"{name}: no answer from {owner}")
        if not response.success:
            raise CommandRefused(f"{owner} refused: {response.message}")
        try:
            detail = json.loads(response.message)
        except ValueError:
            detail = None
        return CommandResult(
            ok=True, message=response.message, detail=detail if isinstance(detail, dict) else {}
        )

    def start_episode(self) -> CommandResult:
        return self._call(RECORDER_START_SERVICE, Trigger.Request())

    def stop_episode(self, success: bool) -> CommandResult:
        return self._call(RECORDER_STOP_SERVICE, SetBool.Request(data=success))

    def discard_episode(self) -> CommandResult:
        return self._call(RECORDER_DISCARD_SERVICE, Trigger.Request())

    def reset_sim(self) -> CommandResult:
        return self._call(SIM_RESET_SERVICE, Trigger.Request())

    def pause_learner(self, paused: bool) -> CommandResult:
        return self._call(LEARNER_PAUSE_SERVICE, SetBool.Request(data=paused))

    def hold(self, hold: bool) -> CommandResult:
        result = self._call(POLICY_HOLD_SERVICE, SetBool.Request(data=hold))
        self.get_logger().warn(f"operator {'HOLD' if hold else 'release'} from the dashboard")
        return result

    def label_episode(self, index: int | None, success: bool | None) -> EpisodeRow:
        try:
            row = self.view.relabel(index, success)
        except LookupError as err:
            raise NotFound(str(err)) from None
        except (StoreError, OSError) as err:
            raise CommandError(f"relabel failed: {err}") from None
        self.get_logger().info(f"episode {row.index} labelled {row.success} from the dashboard")
        return row

    def close(self) -> None:
        server = getattr(self, "server", None)
        if server is not None:
            server.stop()


def main(args: Sequence[str] | None = None) -> None:
    raise SystemExit(run_node(DashboardNode, args, threads=2))


if __name__ == "__main__":
    main()
