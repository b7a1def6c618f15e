"""Sensing and simulation nodes through real DDS: sim_node steps/s, camera_node publish rate and age.

- sim_node in lockstep (task lift), answered by a minimal commander in this process that sends the
  arm and gripper command as soon as it hears each joint state: steps/s with no cameras and with
  the sim config's two 84x84 cameras (the round trip sim -> commander -> sim is in the figure);
- sim_node free-running at real_time_factor 0 (as fast as it can, no cameras): sim seconds per
  wall second, from /clock;
- camera_node (OpenCV source on a looping video file, 640x480 at 30 Hz): the rate it publishes (its
  diagnostics), the rate a best-effort subscriber in this process receives (0.9 MB frames over
  loopback UDP: a busy subscriber loses some), and the age of each frame when it arrives here
  (receive time - capture stamp).

Loopback DDS on a private domain. Run: .venv/bin/python bench/sensing_bench.py [--steps 300]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "test"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("MUJOCO_GL", "egl")

from bench_common import machine_info, write_csv  # noqa: E402
from ros_probe import NodeProcess, RosProbe, robot_config_file  # noqa: E402
from rosgraph_msgs.msg import Clock  # noqa: E402
from sensor_msgs.msg import Image, JointState  # noqa: E402
from std_msgs.msg import Float64MultiArray, String  # noqa: E402

from coirl_ros.nodes.interfaces import CAMERA_DIAGNOSTICS_TOPIC, COMMAND_QOS, SENSOR_QOS  # noqa: E402
from coirl_ros.sim.kinematics import HOME_QPOS  # noqa: E402


def ros_env(domain: int) -> dict[str, str]:
    return dict(
        os.environ, ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST", ROS_DOMAIN_ID=str(domain), PYTHONUNBUFFERED="1"
    )


def lockstep_rate(tmp: Path, domain: int, cameras: list[dict], steps: int) -> float:
    env = ros_env(domain)
    robot = robot_config_file(tmp, cameras)
    params = {"robot_config": robot, "use_sim_time": True, "lockstep": True, "task": "lift"}
    with NodeProcess("sim_node", env, params), RosProbe(env, "bench_commander") as probe:
        arm = probe.node.create_publisher(
            Float64MultiArray, "/forward_position_controller/commands", COMMAND_QOS
        )
        grip = probe.node.create_publisher(Float64MultiArray, "/gripper_controller/commands", COMMAND_QOS)
        target = Float64MultiArray(data=list(HOME_QPOS))
        open_ = Float64MultiArray(data=[0.04])

        def answer(_msg: JointState) -> None:
            arm.publish(target)
            grip.publish(open_)

        probe.subscribe(JointState, "/joint_states", 10, answer)
        probe.wait_subscribers(arm)
        probe.wait_subscribers(grip)
        probe.wait_for("/joint_states", 20, timeout=60)  # warm: steps are flowing
        n0, t0 = len(probe.got("/joint_states")), time.monotonic()
        probe.wait_for("/joint_states", n0 + steps, timeout=600)
        return steps / (time.monotonic() - t0)


def free_running_factor(tmp: Path, domain: int, seconds: float) -> float:
    env = ros_env(domain)
    params = {
        "robot_config": robot_config_file(tmp),
        "use_sim_time": True,
        "real_time_factor": 0.0,
        "task": "lift",
    }
    with NodeProcess("sim_node", env, params), RosProbe(env, "bench_clock") as probe:
        probe.subscribe(Clock, "/clock", 10)
        probe.wait_for("/clock", 20, timeout=60)

        def sim_now() -> float:
            c = probe.got("/clock")[-1].clock
            return c.sec + c.nanosec * 1e-9

        s0, t0 = sim_now(), time.monotonic()
        time.sleep(seconds)
        return (sim_now() - s0) / (time.monotonic() - t0)


def camera_rate(tmp: Path, domain: int, seconds: float) -> tuple[float, float, float, float]:
    import cv2

    video = tmp / "bench.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (640, 480))
    rng = np.random.default_rng(0)
    for _ in range(30):
        writer.write(rng.integers(0, 255, (480, 640, 3), dtype=np.uint8))
    writer.release()
    cams = [
        {"name": "front", "source": "opencv", "device": str(video), "width": 640, "height": 480, "fps": 30.0}
    ]
    env = ros_env(domain)
    arrivals: list[tuple[float, float]] = []
    with (
        NodeProcess("camera_node", env, {"robot_config": robot_config_file(tmp, cams)}),
        RosProbe(env) as probe,
    ):

        def on_image(msg: Image) -> None:
            arrivals.append((time.time(), msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9))

        probe.subscribe(Image, "/cameras/front/image_raw", SENSOR_QOS, on_image)
        probe.subscribe(String, CAMERA_DIAGNOSTICS_TOPIC, 10)
        probe.wait_for("/cameras/front/image_raw", 10, timeout=60)
        published0 = json.loads(probe.wait_for(CAMERA_DIAGNOSTICS_TOPIC)[-1].data)
        arrivals.clear()
        time.sleep(seconds)
        got = list(arrivals)
        published1 = json.loads(probe.got(CAMERA_DIAGNOSTICS_TOPIC)[-1].data)
    ages = np.array([r - s for r, s in got]) * 1000
    rate = (len(got) - 1) / (got[-1][1] - got[0][1])
    node_rate = (published1["published"] - published0["published"]) / (
        published1["stamp"] - published0["stamp"]
    )
    return node_rate, rate, float(np.median(ages)), float(np.percentile(ages, 99))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300, help="lockstep steps per configuration")
    parser.add_argument(
        "--seconds", type=float, default=5.0, help="duration of the free-running measurements"
    )
    parser.add_argument("--csv", type=Path, default=ROOT / "bench" / "results" / "sensing_bench.csv")
    args = parser.parse_args()
    for key, value in machine_info().items():
        print(f"{key}: {value}")
    domain = 60 + os.getpid() % 30
    rows = []
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        two_cams = [
            {"name": c, "source": "sim", "width": 84, "height": 84, "fps": 20.0} for c in ("front", "wrist")
        ]
        for label, cams in (("no cameras", []), ("2 cameras 84x84", two_cams)):
            rate = lockstep_rate(tmp, domain, cams, args.steps)
            rows.append({"what": f"sim_node lockstep, {label}", "value": round(rate, 1), "unit": "steps/s"})
            print(f"sim_node lockstep, {label}: {rate:.1f} steps/s ({rate / 20:.1f}x real time at 20 Hz)")
        factor = free_running_factor(tmp, domain, args.seconds)
        rows.append(
            {
                "what": "sim_node real_time_factor 0, no cameras",
                "value": round(factor, 1),
                "unit": "x real time",
            }
        )
        print(f"sim_node free-running (real_time_factor 0), no cameras: {factor:.1f}x real time")
        node_rate, rate, p50, p99 = camera_rate(tmp, domain, args.seconds)
        rows += [
            {
                "what": "camera_node opencv 640x480 @ 30 Hz: published",
                "value": round(node_rate, 1),
                "unit": "Hz",
            },
            {
                "what": "camera_node opencv 640x480 @ 30 Hz: received here",
                "value": round(rate, 1),
                "unit": "Hz",
            },
            {"what": "camera_node frame age at receipt p50", "value": round(p50, 2), "unit": "ms"},
            {"what": "camera_node frame age at receipt p99", "value": round(p99, 2), "unit": "ms"},
        ]
        print(
            f"camera_node opencv 640x480 @ 30 Hz: published {node_rate:.1f} Hz, received here {rate:.1f} Hz,"
            f" frame age at receipt p50 {p50:.1f} ms, p99 {p99:.1f} ms"
        )
    write_csv(rows, args.csv)


if __name__ == "__main__":
    main()
