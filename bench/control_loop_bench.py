"""The robot's control loop through real DDS: tick timing at 50 Hz, weight swap latency, obs -> command.

The robot fine-tuning graph as `coirl launch finetune` starts it (coirl_ros/graph.py: joint_node,
recorder_node recording the episode, policy_node with a full-size local BC base 256x256 computed
asynchronously and the default residual of config/learner.yaml), with the learner replaced by this
process, which publishes real `Learner` snapshots. A separate child process plays the robot driver:
/joint_states at 50 Hz stamped with the wall clock (+ the object state a sim would give the base).

Measured:
- tick: compute time inside the tick (policy_node's diagnostics, p50/p99/max over the run's last
  1000 ticks), interval jitter and missed ticks from the stamps of the step records it publishes;
- swap: publish -> first tick acting with the new version (stamp of that step record), and the
  node's own arrival -> active figure;
- observation -> command: /joint_states capture stamp -> the tick that acted on it (step stamp), and
  -> this process receiving the step record (one more DDS hop).

Run: .venv/bin/python bench/control_loop_bench.py [--seconds 20] [--swaps 8] [--rate 50]
Prints a table and writes bench/results/control_loop_bench.csv. On a shared machine the tails are the
machine's: the load average is printed with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "test"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_common import machine_info, write_csv  # noqa: E402
from ros_probe import RosProbe  # noqa: E402
from std_msgs.msg import Float64MultiArray, String, UInt8MultiArray  # noqa: E402
from std_srvs.srv import SetBool, Trigger  # noqa: E402

from coirl_ros.configs import LearnerConfig, RobotConfig, load_config  # noqa: E402
from coirl_ros.data import EpisodeStore  # noqa: E402
from coirl_ros.graph import build_graph  # noqa: E402
from coirl_ros.launcher import Launcher  # noqa: E402
from coirl_ros.learning.learner import Learner  # noqa: E402
from coirl_ros.nodes.control_messages import weights_message  # noqa: E402
from coirl_ros.nodes.interfaces import (  # noqa: E402
    COMMAND_QOS,
    LATCHED_QOS,
    POLICY_DIAGNOSTICS_TOPIC,
    RECORDER_START_SERVICE,
    RECORDER_STOP_SERVICE,
    STEP_TOPIC,
    WEIGHTS_STATUS_TOPIC,
    WEIGHTS_TOPIC,
    decode_step,
)
from coirl_ros.paths import config_dir  # noqa: E402
from coirl_ros.policies.local_bc_base import LocalBCBase, LocalBCConfig, Normalisation, build_network  # noqa: E402
from coirl_ros.sim.kinematics import HOME_QPOS  # noqa: E402

ENV_DIM = 7  # lift's object state, which the local base reads (a sim gives it; here this bench does)


def publish_joint_states(rate: float, names: list[str]) -> None:
    """Child process: the robot driver's /joint_states (+ object state), stamped now, at `rate` Hz."""
    import rclpy
    from rclpy.executors import ExternalShutdownException
    from rclpy.node import Node
    from sensor_msgs.msg import JointState

    from coirl_ros.nodes.interfaces import ENV_STATE_TOPIC, STATE_QOS, encode_environment_state

    rclpy.init()
    node = Node("bench_robot_driver")
    pub = node.create_publisher(JointState, "/joint_states", STATE_QOS)
    pub_env = node.create_publisher(Float64MultiArray, ENV_STATE_TOPIC, STATE_QOS)
    positions = [*HOME_QPOS.tolist(), 0.04]
    env_state = [0.55, 0.0, 0.022, 1.0, 0.0, 0.0, 0.0]

    def tick() -> None:
        now = node.get_clock().now()
        msg = JointState(name=names, position=positions, velocity=[0.0] * len(names))
        msg.header.stamp = now.to_msg()
        pub.publish(msg)
        sec, nsec = divmod(now.nanoseconds, 1_000_000_000)
        pub_env.publish(encode_environment_state(env_state, sec, nsec))

    node.create_timer(1.0 / rate, tick)
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


def make_artefacts(tmp: Path, rate: float) -> dict[str, Path]:
    """A robot config at `rate` without cameras, a full-size random local BC base, a learner config."""
    robot = yaml.safe_load((config_dir() / "robot_sim_state.yaml").read_text())
    robot["control_rate_hz"] = rate
    (tmp / "robot.yaml").write_text(yaml.safe_dump(robot))
    config = LocalBCConfig(chunk_size=10)
    obs_dim = 8 + ENV_DIM
    norm = Normalisation(np.zeros(obs_dim), np.ones(obs_dim), np.zeros(7), np.full(7, 0.3))
    torch.manual_seed(0)
    network = build_network(obs_dim, 7, config.chunk_size, config.hidden)
    LocalBCBase(network, norm, config, 8, ENV_DIM, 7).save(tmp / "base")
    learner = load_config(config_dir() / "learner.yaml", LearnerConfig)
    learner_file = tmp / "learner.yaml"
    learner_file.write_text(
        yaml.safe_dump(
            learner.model_copy(update={"store": str(tmp / "episodes.zarr")}).model_dump(mode="json")
        )
    )
    return {
        "robot": tmp / "robot.yaml",
        "base": tmp / "base",
        "learner": learner_file,
        "store": tmp / "episodes.zarr",
    }


def quantiles(values: list[float] | np.ndarray) -> tuple[float, float, float]:
    a = np.asarray(values, dtype=float)
    return float(np.quantile(a, 0.5)), float(np.quantile(a, 0.99)), float(a.max())


def run(seconds: float, swaps: int, rate: float) -> list[dict]:
    period = 1.0 / rate
    tmp = Path(tempfile.mkdtemp(prefix="control_loop_bench_"))
    files = make_artefacts(tmp, rate)
    env = dict(
        os.environ,
        ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
        ROS_DOMAIN_ID=str(os.getpid() % 50 + 51),
        PYTHONUNBUFFERED="1",
    )
    nodes = build_graph(
        "finetune",
        False,
        {
            "robot_config": str(files["robot"]),
            "policy_config": "policy_sim.yaml",
            "learner_config": str(files["learner"]),
            "base_checkpoint": str(files["base"]),
            "store": str(files["store"]),
            "learner": "false",
            "explore": "true",
            "dashboard": "false",
        },
    )
    robot = load_config(files["robot"], RobotConfig)
    names = [*robot.joint_names, robot.gripper.joint]
    driver = subprocess.Popen(
        [sys.executable, __file__, "--publish-joint-states", str(rate), json.dumps(names)], env=env
    )
    launcher = Launcher(nodes, env=env, log_dir=tmp / "logs", stream=None)
    rows: list[dict] = []
    try:
        with RosProbe(env, "control_loop_bench") as probe:
            received: list[tuple[float, object]] = []
            probe.subscribe(
                Float64MultiArray,
                STEP_TOPIC,
                COMMAND_QOS,
                lambda m: received.append((time.time(), decode_step(m))),
            )
            probe.subscribe(String, WEIGHTS_STATUS_TOPIC, COMMAND_QOS)
            probe.subscribe(String, POLICY_DIAGNOSTICS_TOPIC, COMMAND_QOS)
            weights = probe.node.create_publisher(UInt8MultiArray, WEIGHTS_TOPIC, LATCHED_QOS)
            launcher.start()
            if not launcher.wait_output("policy_node", "holding: no_episode", timeout=120):
                raise RuntimeError(f"policy_node did not start:\n{launcher.output('policy_node')[-3000:]}")
            start = probe.call(Trigger, RECORDER_START_SERVICE)
            if not start.success:
                raise RuntimeError(f"/recorder/start: {start.message}")
            learner = Learner(
                load_config(files["learner"], LearnerConfig),
                EpisodeStore.open(files["store"]),
                "residual",
                0.5,
            )
            probe.wait_subscribers(weights)
            began = time.time()
            published: dict[int, float] = {}
            gap = seconds / (swaps + 1)
            for k in range(swaps):
                time.sleep(max(0.0, began + (k + 1) * gap - time.time()))
                with torch.no_grad():
                    learner.actor.net.mean_weights.normal_(0.0, 1.0)
                data = learner.snapshot().to_bytes()
                published[learner.state.version] = time.time()
                weights.publish(weights_message(data))
            time.sleep(max(0.0, began + seconds - time.time()))
            probe.call(SetBool, RECORDER_STOP_SERVICE, SetBool.Request(data=False))
            diag = json.loads(probe.got(POLICY_DIAGNOSTICS_TOPIC)[-1].data)
            statuses = [json.loads(m.data) for m in probe.got(WEIGHTS_STATUS_TOPIC)]
            load = os.getloadavg()[0]
    finally:
        launcher.stop("bench done")
        driver.send_signal(signal.SIGINT)
        driver.wait(timeout=20)

    steps = [(t, s) for t, s in received if s.stamp >= began]
    stamps = np.array([s.stamp for _, s in steps])
    intervals = np.diff(stamps)
    deviation = np.abs(intervals - period) * 1e3
    missed = int(sum(round(i / period) - 1 for i in intervals if i > 1.5 * period))
    age_at_tick = [(s.stamp - s.observation_stamp) * 1e3 for _, s in steps]
    age_at_receipt = [(t - s.observation_stamp) * 1e3 for t, s in steps]
    swap_ms = []
    for version, when in published.items():
        first = next((s for _, s in steps if s.policy_version >= version), None)
        if first is not None:
            swap_ms.append((first.stamp - when) * 1e3)
    # A snapshot overtaken by a newer one before its validation started is dropped by design (the loop
    # only ever wants the newest); any other rejection means the bench is broken.
    rejected = [s for s in statuses if not s["accepted"] and "superseded" not in s["reason"]]
    if rejected:
        raise RuntimeError(f"snapshots rejected: {rejected}")
    superseded = sum(1 for s in statuses if not s["accepted"])
    if not any(s["accepted"] for s in statuses):
        raise RuntimeError(f"no snapshot became active: {statuses}; policy_node log in {tmp / 'logs'}")
    lat = diag["tick_latency_ms"]
    context = f"{rate:g} Hz, {len(steps)} ticks, load average {load:.1f}"

    def row(what: str, p50: float, p99: float, worst: float, note: str = "") -> dict:
        return {
            "measure": what,
            "p50_ms": round(p50, 2),
            "p99_ms": round(p99, 2),
            "max_ms": round(worst, 2),
            "note": note,
            "context": context,
        }

    rows.append(
        row(
            "tick latency (compute inside the tick)",
            lat["p50"],
            lat["p99"],
            lat["max"],
            "policy_node diagnostics, last 1000 ticks",
        )
    )
    rows.append(
        row(
            "tick interval deviation from the period",
            *quantiles(deviation),
            f"std {float(np.std(intervals - period) * 1e3):.2f} ms, missed ticks {missed}",
        )
    )
    steady = swap_ms[1:] or swap_ms
    rows.append(
        row(
            "weight swap: publish -> first tick acting on it",
            *quantiles(steady),
            f"{len(steady)} swaps after the first ({superseded} superseded before validation);"
            f" node arrival -> active {diag['last_swap_latency_ms']} ms (last)",
        )
    )
    rows.append(
        row(
            "first weight swap",
            swap_ms[0],
            swap_ms[0],
            swap_ms[0],
            "includes building the validation template (the learner's networks): the store did not exist"
            " when policy_node started, so it is built on the first snapshot",
        )
    )
    rows.append(
        row(
            "observation -> command (joint_states stamp -> tick)",
            *quantiles(age_at_tick),
            "via joint_node; includes waiting for the next tick (up to one period)",
        )
    )
    rows.append(
        row("observation -> step record received here", *quantiles(age_at_receipt), "one more DDS hop")
    )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--swaps", type=int, default=8)
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument("--publish-joint-states", type=float, default=0.0, help=argparse.SUPPRESS)
    parser.add_argument("names", nargs="?", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.publish_joint_states:
        publish_joint_states(args.publish_joint_states, json.loads(args.names))
        return
    torch.set_num_threads(1)
    for key, value in machine_info({"torch": torch.__version__}).items():
        print(f"{key}: {value}")
    rows = run(args.seconds, args.swaps, args.rate)
    print(f"\n{rows[0]['context']}")
    print("| measure | p50 ms | p99 ms | max ms | note |\n|---|---:|---:|---:|---|")
    for r in rows:
        print(f"| {r['measure']} | {r['p50_ms']} | {r['p99_ms']} | {r['max_ms']} | {r['note']} |")
    write_csv(rows, ROOT / "bench" / "results" / "control_loop_bench.csv")


if __name__ == "__main__":
    main()
