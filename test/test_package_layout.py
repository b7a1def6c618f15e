"""Package contract: ROS-free core, package.xml/setup.py consistency, installed share files."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_core_imports_without_rclpy() -> None:
    # Block rclpy and every message package: importing any of them raises ImportError.
    code = (
        "import sys\n"
        "for m in ('rclpy','sensor_msgs','std_msgs','trajectory_msgs','std_srvs','geometry_msgs'):\n"
        "    sys.modules[m] = None\n"
        "import coirl_ros, coirl_ros.cli, coirl_ros.configs, coirl_ros.data\n"
        "import coirl_ros.data.transition_sampler, coirl_ros.data.lerobot_io, coirl_ros.store_demo\n"
        "import coirl_ros.sim.env, coirl_ros.sim.demos, coirl_ros.sim.tasks.lift\n"
        "import coirl_ros.learning.hetstat, coirl_ros.learning.critics, coirl_ros.policies.composition\n"
        "import coirl_ros.ingestion.joint_state_mapper, coirl_ros.ingestion.camera_sources\n"
        "import coirl_ros.recording.frame_assembler, coirl_ros.recording.episode_recorder\n"
        "import coirl_ros.recording.progress, coirl_ros.sim.sim_robot, coirl_ros.sim.command_input\n"
        "import coirl_ros.sim.lockstep, coirl_ros.configs.sim, coirl_ros.configs.recorder\n"
        "import coirl_ros.configs.ingestion\n"
        "import coirl_ros.control.action_space, coirl_ros.control.loop, coirl_ros.control.policy_actor\n"
        "import coirl_ros.control.weight_swap, coirl_ros.control.base_source, coirl_ros.control.teleop\n"
        "import coirl_ros.control.scripted_teleop, coirl_ros.configs.teleop\n"
        "import coirl_ros.control.residual_inference, coirl_ros.control.demo_base\n"
        "import coirl_ros.policies.async_chunker, coirl_ros.policies.pi05_base\n"
        "import coirl_ros.policies.pi05_checkpoint, coirl_ros.policies.pi05_miniature\n"
        "import coirl_ros.graph, coirl_ros.launcher, coirl_ros.launch_actions, coirl_ros.sim_demo\n"
        "import coirl_ros.dashboard, coirl_ros.configs.dashboard\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_package_xml_is_format_3_with_ros_dependencies() -> None:
    root = ET.parse(ROOT / "package.xml").getroot()
    assert root.get("format") == "3" and root.findtext("name") == "coirl_ros"
    deps = {e.text for e in root.iter("exec_depend")}
    assert {"rclpy", "sensor_msgs", "std_msgs", "trajectory_msgs", "std_srvs"} <= deps
    assert root.find("export/build_type").text == "ament_python"


def test_setup_installs_share_folders_and_resource_marker() -> None:
    setup_text = (ROOT / "setup.py").read_text()
    for folder in ("launch", "config", "urdf", "sim"):
        assert f'share_files("{folder}")' in setup_text
    assert (ROOT / "resource" / "coirl_ros").is_file()
    assert (ROOT / "setup.cfg").read_text().count("$base/lib/coirl_ros") == 2
    dist = importlib.metadata.distribution("coirl_ros")
    assert dist.version == "0.1.0"
    entry_points = {ep.name: ep.value for ep in dist.entry_points}
    assert entry_points["coirl"] == "coirl_ros.cli:entry_point"
