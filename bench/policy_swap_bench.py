"""policy_node weight swaps through real DDS: does adopting new residual weights delay a tick?

- policy_node as a process (local BC base: a random checkpoint made here; the residual of
  config/learner.yaml, i.e. the default 256x256 HetStat, or `--hidden`), at `--rate` Hz, deterministic;
- a state publisher process (test/scripts/state_publisher.py) stands in for joint_node and the sim;
- this process starts an episode, publishes `--swaps` snapshots of a real `Learner` (latched, as
  learner_node does), one every `--every` s, and records every /coirl/step.

Per swap: validation time on the node's worker (weights_status), arrival -> active
(`last_swap_latency_ms`), and the tick intervals just before and after the first tick of the new
version, in periods. Summary: the median interval and the share of intervals over 1.5 periods
(missed ticks) at swaps and elsewhere: on a busy machine both are > 0; a swap that cost a tick
would make the first clearly larger than the second. Timing belongs here, not in the unit tests
(test_policy_node.py checks what a swap does, not how long it takes).

Loopback DDS on a private domain. Run: .venv/bin/python bench/policy_swap_bench.py [--swaps 20]
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

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "test"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
import yaml  # noqa: E402
from bench_common import machine_info, write_csv  # noqa: E402
from ros_probe import NodeProcess, RosProbe  # noqa: E402
from std_msgs.msg import Float64MultiArray, String, UInt8MultiArray  # noqa: E402

from coirl_ros.configs import LearnerConfig, RobotConfig, load_config  # noqa: E402
from coirl_ros.data import EpisodeSpec, EpisodeStore  # noqa: E402
from coirl_ros.learning.learner import Learner  # noqa: E402
from coirl_ros.nodes.control_messages import weights_message  # noqa: E402
from coirl_ros.nodes.interfaces import (  # noqa: E402
    COMMAND_QOS,
    EPISODE_TOPIC,
    LATCHED_QOS,
    POLICY_DIAGNOSTICS_TOPIC,
    STEP_TOPIC,
    WEIGHTS_STATUS_TOPIC,
    WEIGHTS_TOPIC,
    decode_step,
)
from coirl_ros.paths import config_dir  # noqa: E402
from coirl_ros.policies.local_bc_base import LocalBCBase, LocalBCConfig, Normalisation, build_network  # noqa: E402
from coirl_ros.sim.kinematics import HOME_QPOS  # noqa: E402

ENV_DIM = 3


def artefacts(root: Path, rate: float, hidden: int | None) -> dict[str, Path]:
    """A random local BC base, an empty store, and learner/policy configs pointing at them."""
    robot = load_config(config_dir() / "robot.yaml", RobotConfig)
    torch.manual_seed(0)
    obs_dim = robot.state_dim + ENV_DIM
    norm = Normalisation(np.zeros(obs_dim), np.ones(obs_dim), np.zeros(7), np.full(7, 0.3))
    network = build_network(obs_dim, 7, 10, (64, 64))
    LocalBCBase(
        network, norm, LocalBCConfig(chunk_size=10, hidden=(64, 64)), robot.state_dim, ENV_DIM, 7
    ).save(root / "base")
    store = root / "episodes.zarr"
    EpisodeStore.create(store, EpisodeSpec(robot.state_dim, 7, (), rate, ENV_DIM))
    learner = yaml.safe_load((config_dir() / "learner.yaml").read_text())
    learner["store"] = str(store)
    if hidden is not None:
        learner["bc"]["hidden_sizes"] = [hidden, hidden]
    (root / "learner.yaml").write_text(yaml.safe_dump(learner))
    policy = yaml.safe_load((config_dir() / "policy.yaml").read_text())
    policy["base"]["checkpoint"] = str(root / "base")
    (root / "policy.yaml").write_text(yaml.safe_dump(policy))
    return {"store": store, "learner": root / "learner.yaml", "policy": root / "policy.yaml"}


def run(args: argparse.Namespace, tmp: Path) -> tuple[list[dict], dict]:
    files = artefacts(tmp, args.rate, args.hidden)
    robot = load_config(config_dir() / "robot.yaml", RobotConfig)
    env = dict(os.environ, ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST", ROS_DOMAIN_ID=str(args.domain))
    env["PYTHONUNBUFFERED"] = "1"
    spec = {
        "names": [*robot.joint_names, robot.gripper.joint],
        "positions": [*HOME_QPOS.tolist(), 0.04],
        "env_state": [0.1, -0.2, 0.3],
    }
    params = {
        "policy_config": files["policy"],
        "learner_config": files["learner"],
        "explore": False,
        "robot.control_rate_hz": args.rate,
        "robot.state_timeout_s": 1.0,
        "diagnostics_period_s": 0.5,
    }
    publisher = subprocess.Popen(
        [sys.executable, str(ROOT / "test" / "scripts" / "state_publisher.py"), json.dumps(spec)], env=env
    )
    try:
        with NodeProcess("policy_node", env, params) as node, RosProbe(env, "bench_swaps") as probe:
            probe.subscribe(Float64MultiArray, STEP_TOPIC, COMMAND_QOS)
            probe.subscribe(String, WEIGHTS_STATUS_TOPIC, COMMAND_QOS)
            probe.subscribe(String, POLICY_DIAGNOSTICS_TOPIC, COMMAND_QOS)
            pub_episode = probe.node.create_publisher(String, EPISODE_TOPIC, COMMAND_QOS)
            pub_weights = probe.node.create_publisher(UInt8MultiArray, WEIGHTS_TOPIC, LATCHED_QOS)
            assert node.wait_output("policy: local_bc base", timeout=120), node.output
            probe.wait_subscribers(pub_episode)
            pub_episode.publish(String(data=json.dumps({"event": "start", "index": 0, "stamp": time.time()})))
            probe.wait_for(STEP_TOPIC, int(2 * args.rate), timeout=60)  # acting, warmed up
            learner = Learner(LearnerConfig.model_validate(yaml.safe_load(files["learner"].read_text())),
                              EpisodeStore.open(files["store"]))  # fmt: skip
            rows = []
            for version in range(1, args.swaps + 1):
                with torch.no_grad():
                    learner.actor.net.mean_weights.normal_(0.0, 1.0)
                data = learner.snapshot().to_bytes()
                pub_weights.publish(weights_message(data))
                probe.wait_for(
                    STEP_TOPIC, where=lambda m, v=version: decode_step(m).policy_version == v, timeout=60
                )
                status = next(
                    json.loads(m.data)
                    for m in probe.got(WEIGHTS_STATUS_TOPIC)
                    if json.loads(m.data)["version"] == version
                )
                diag = probe.wait_for(
                    POLICY_DIAGNOSTICS_TOPIC,
                    where=lambda m, v=version: json.loads(m.data)["active_version"] == v,
                    timeout=30,
                )
                rows.append(
                    {
                        "version": version,
                        "snapshot_bytes": len(data),
                        "validate_ms": round(status["validate_ms"], 2),
                        "arrival_to_active_ms": json.loads(diag[0].data)["last_swap_latency_ms"],
                    }
                )
                time.sleep(args.every)
            steps = [decode_step(m) for m in probe.got(STEP_TOPIC)]
            final = json.loads(probe.wait_for(POLICY_DIAGNOSTICS_TOPIC)[-1].data)
    finally:
        publisher.send_signal(signal.SIGTERM)
        publisher.wait(timeout=20)

    period = 1.0 / args.rate
    stamps = np.array([s.stamp for s in steps])
    versions = np.array([s.policy_version for s in steps])
    intervals = np.diff(stamps) / period  # intervals[i]: tick i -> i + 1, in periods
    swap_ticks = np.flatnonzero(np.diff(versions)) + 1
    for row in rows:
        i = next((j for j in swap_ticks if versions[j] == row["version"]), None)
        row["interval_before_periods"] = round(float(intervals[i - 1]), 3) if i else None
        row["interval_after_periods"] = (
            round(float(intervals[i]), 3) if i is not None and i < len(intervals) else None
        )
    at_swap = np.zeros(len(intervals), bool)
    for i in swap_ticks:
        at_swap[max(i - 1, 0) : i + 1] = True
    summary = {
        "ticks": len(steps),
        "median_interval_periods": round(float(np.median(intervals)), 3),
        "late_at_swaps": f"{int((intervals[at_swap] > 1.5).sum())}/{int(at_swap.sum())}",
        "late_elsewhere": f"{int((intervals[~at_swap] > 1.5).sum())}/{int((~at_swap).sum())}",
        "node_missed_ticks": final.get("missed_ticks"),
        "tick_latency_ms": final.get("tick_latency_ms"),
    }
    return rows, summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--swaps", type=int, default=20)
    parser.add_argument("--every", type=float, default=0.5, help="seconds between swaps (after one acts)")
    parser.add_argument("--rate", type=float, default=20.0, help="control rate (Hz)")
    parser.add_argument("--hidden", type=int, default=None, help="residual width (default: learner.yaml's)")
    parser.add_argument("--domain", type=int, default=63)
    parser.add_argument("--csv", type=Path, default=ROOT / "bench" / "results" / "policy_swap_bench.csv")
    args = parser.parse_args()
    for key, value in machine_info({"load average": " ".join(f"{x:.1f}" for x in os.getloadavg())}).items():
        print(f"{key}: {value}")
    with tempfile.TemporaryDirectory() as tmp:
        rows, summary = run(args, Path(tmp))
    for row in rows:
        print(row)
    print(json.dumps(summary))
    write_csv(rows, args.csv)


if __name__ == "__main__":
    main()
