"""The dashboard in the launched graphs: dashboard_node and its launch arguments, through coirl_ros/graph.py's
extension point (`register_extra_nodes`), so `ros2 launch coirl_ros ...` and `coirl launch ...` both start it
and it prints its URL (with the token) among the graph's output.

    dashboard:=true|false      start it (default true)
    dashboard_port:=8765       0 = any free port; a port in use falls back to a free one (printed)
    dashboard_config:=dashboard.yaml

It shows the store the recorder writes (`record_store` when set, else `store`), lists the graph's
other long-running nodes before they first report, and is restarted if it dies: a dashboard crash
must never take the control graph down.
"""

from __future__ import annotations

from coirl_ros import graph
from coirl_ros.configs import ConfigError, load_config
from coirl_ros.configs.dashboard import DashboardConfig
from coirl_ros.graph import GraphContext, GraphError, GraphKind, LaunchArgument, NodeSpec

NODE_NAME = "dashboard_node"


def dashboard_arguments(kind: GraphKind, sim: bool) -> list[LaunchArgument]:
    """The dashboard's launch arguments (the same in every graph)."""
    return [
        LaunchArgument(
            "dashboard", "true",
            "start the operator dashboard (web page on 127.0.0.1: node status, success and loss curves,"
            " episodes and labels, start/stop, emergency hold); it prints its URL with the access token",
            ("true", "false"),
        ),
        LaunchArgument(
            "dashboard_port", "8765",
            "dashboard port (0: any free one; if the port is taken, a free one is used and printed)",
        ),
        LaunchArgument(
            "dashboard_config", "dashboard.yaml",
            "dashboard YAML (DashboardConfig): host, fixed token, timeouts, success window, curve sources",
        ),
    ]  # fmt: skip


def graph_node_names(ctx: GraphContext) -> list[str]:
    """The graph's long-running nodes (the episode driver finishes by itself, so it is not listed)."""
    nodes = graph._sim_nodes(ctx) if ctx.sim else []
    nodes += graph._sensing_nodes(ctx)
    nodes += graph._record_nodes(ctx) if ctx.kind == "record" else graph._finetune_nodes(ctx)
    return [n.name for n in nodes]


def dashboard_nodes(ctx: GraphContext) -> list[NodeSpec]:
    """dashboard_node for this graph, or none with `dashboard:=false`."""
    if not graph.parse_bool("dashboard", ctx.values["dashboard"]):
        return []
    config = graph.resolve_config(ctx.values["dashboard_config"], "dashboard_config")
    try:
        load_config(config, DashboardConfig)
    except ConfigError as err:
        raise GraphError(f"launch argument dashboard_config: {err}") from None
    port_text = ctx.values["dashboard_port"]
    if not port_text.isdigit() or int(port_text) > 65535:
        raise GraphError(f"launch argument dashboard_port: expected 0-65535, got {port_text!r}")
    store = ctx.path("record_store") if ctx.values.get("record_store") else ctx.path("store")
    params = {
        "use_sim_time": ctx.sim,
        "dashboard_config": str(config),
        "store": store,
        "port": int(port_text),
        "expected_nodes": ",".join(graph_node_names(ctx)),
    }
    description = "operator web page: status, curves, episodes, controls, hold (prints its URL)"
    return [NodeSpec("dashboard_node", NODE_NAME, params, description, respawn=True)]


graph.register_extra_nodes(dashboard_nodes, dashboard_arguments)
