"""dashboard_node in the launched graphs (coirl_ros/graph.py's extension point) and `coirl launch`
printing its URL."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest
from conftest import fresh_ros_env

from coirl_ros.graph import GraphError, build_graph

ROOT = Path(__file__).resolve().parent.parent
COIRL = [sys.executable, "-m", "coirl_ros.cli"]


def nodes_of(kind: str, sim: bool, values: dict[str, str]) -> dict:
    return {n.name: n for n in build_graph(kind, sim, values)}  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kind", "sim", "values", "store"),
    [
        ("finetune", True, {}, "runs/sim/episodes.zarr"),
        (
            "finetune",
            False,
            {"store": "a.zarr", "record_store": "eval.zarr"},
            "eval.zarr",
        ),  # what is recorded
        ("record", False, {"teleop_source": "joy", "store": "demos.zarr"}, "demos.zarr"),
        ("record", True, {"robot_config": "robot_sim_state.yaml"}, "runs/sim/episodes.zarr"),
    ],
)
def test_every_graph_starts_the_dashboard_on_the_recorders_store(
    kind: str, sim: bool, values: dict[str, str], store: str
) -> None:
    nodes = nodes_of(kind, sim, values)
    dashboard = nodes["dashboard_node"]
    params = dashboard.parameters
    assert dashboard.executable == "dashboard_node" and dashboard.respawn  # a crash never ends the graph
    assert params["store"] == str(Path(store).resolve()) == nodes["recorder_node"].parameters["store"]
    assert params["use_sim_time"] is sim and params["port"] == 8765
    assert Path(params["dashboard_config"]).name == "dashboard.yaml"
    others = [name for name in nodes if name not in ("dashboard_node", "episode_driver")]
    assert params["expected_nodes"].split(",") == others


def test_dashboard_launch_arguments() -> None:
    assert "dashboard_node" not in nodes_of("finetune", True, {"dashboard": "false"})
    assert nodes_of("finetune", True, {"dashboard_port": "0"})["dashboard_node"].parameters["port"] == 0
    for values, message in (
        ({"dashboard_port": "http"}, "dashboard_port"),
        ({"dashboard_port": "70000"}, "dashboard_port"),
        ({"dashboard": "maybe"}, "dashboard"),
        ({"dashboard_config": "nope.yaml"}, "no file 'nope.yaml'"),
    ):
        with pytest.raises(GraphError, match=message):
            build_graph("finetune", True, values)


def test_coirl_launch_dry_run_lists_the_dashboard() -> None:
    command = [*COIRL, "launch", "finetune", "--sim", "--dry-run", "dashboard_port:=0"]
    out = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    line = next(x for x in out.stdout.splitlines() if x.startswith("dashboard_node:"))
    assert "coirl_ros.nodes.dashboard_node" in line


@pytest.mark.slow
@pytest.mark.ros
def test_coirl_launch_prints_the_dashboard_url_and_the_page_sees_the_graph(tmp_path: Path) -> None:
    env = fresh_ros_env()
    args = [
        *COIRL, "launch", "record", "--sim", "robot_config:=robot_sim_state.yaml", "episodes:=0",
        f"store:={tmp_path / 'episodes.zarr'}", "dashboard_port:=0", "--log-dir", str(tmp_path / "logs"),
    ]  # fmt: skip
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
        try:
            deadline = time.monotonic() + 90
            url = None
            while url is None and time.monotonic() < deadline and proc.poll() is None:
                log.seek(0)
                match = re.search(r"\[dashboard_node\] dashboard: (http://\S+)", log.read())
                url = match.group(1) if match else None
                time.sleep(0.2)
            log.seek(0)
            assert url, log.read()
            base, token = url.split("?token=")
            with httpx.Client(
                base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=10
            ) as http:
                wanted = {"sim_node", "joint_node", "recorder_node", "teleop_node"}
                while time.monotonic() < deadline:
                    alive = {n["name"] for n in http.get("/api/status").json()["nodes"] if n["alive"]}
                    if wanted <= alive:
                        break
                    time.sleep(0.5)
                assert wanted <= alive, alive
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=60)
