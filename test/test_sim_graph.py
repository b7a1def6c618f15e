"""Sim in the loop: the whole node graph in MuJoCo, started through the launcher `coirl launch` uses.

Node-level behaviour (rates, every rejection reason, SIGKILL/resume details, pairing) is tested per node
(test_policy_node, test_learner_node, test_recorder_node, test_episode_driver, test_teleop_node). Here the
graph is the subject: demonstrations recorded through teleop_node's scripted source land in the store;
then, in the fine-tuning graph, the learner's weights reach the policy and are swapped mid-episode
without a hold or a lost step; the learner is SIGKILLed and respawned by the launcher while the policy
keeps acting on its last weights, and resumes from its checkpoint above the versions it published; a
frozen joint_node (a stale sensor) makes the policy hold and recover; malformed weights published
into the running graph are rejected and reported. Tiny learner sizes keep it to about a minute.
"""

from __future__ import annotations

import itertools
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch
import yaml
from conftest import fresh_ros_env
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from ros_probe import RosProbe
from std_msgs.msg import Float64MultiArray, String, UInt8MultiArray

from coirl_ros.configs import LearnerConfig
from coirl_ros.configs.learner import BCConfig, CriticConfig
from coirl_ros.constants import ACTION
from coirl_ros.data import EpisodeStore
from coirl_ros.graph import build_graph
from coirl_ros.launcher import Launcher
from coirl_ros.learning import weight_snapshot
from coirl_ros.learning.weight_snapshot import WeightSnapshot
from coirl_ros.nodes.control_messages import weights_message, weights_payload
from coirl_ros.nodes.interfaces import (
    EPISODE_TOPIC,
    LATCHED_QOS,
    LEARNER_METRICS_TOPIC,
    POLICY_DIAGNOSTICS_TOPIC,
    STEP_TOPIC,
    WEIGHTS_STATUS_TOPIC,
    WEIGHTS_TOPIC,
    decode_step,
)
from coirl_ros.policies.local_bc_base import LocalBCConfig, train_local_bc_base

pytestmark = pytest.mark.ros

PERIOD = 0.05  # robot_sim_state.yaml: 20 Hz
DEEP = QoSProfile(depth=500, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)
DEEP_LATCHED = QoSProfile(
    depth=100,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.TRANSIENT_LOCAL,
    history=HistoryPolicy.KEEP_LAST,
)


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """`coirl launch record --sim`: two scripted demonstrations through teleop_node into a store."""
    root = tmp_path_factory.mktemp("sim_graph")
    store = root / "episodes.zarr"
    command = [
        sys.executable,
        "-m",
        "coirl_ros.cli",
        "launch",
        "record",
        "--sim",
        "--log-dir",
        str(root / "record"),
        "robot_config:=robot_sim_state.yaml",
        "episodes:=2",
        f"store:={store}",
        # Real time, not faster: the scripted expert closes its loop through three processes, and one CI
        # run at 2x on a loaded runner ran out of its 100 steps (81 / 76 frames here, 2 s more than 2x).
        "real_time_factor:=1",
        "dashboard:=false",  # tested on its own (test_dashboard_launch.py); the graph here is the subject
    ]
    out = subprocess.run(command, env=fresh_ros_env(), cwd=root, capture_output=True, text=True, timeout=180)
    return {"root": root, "store": store, "returncode": out.returncode, "output": out.stdout + out.stderr}


def test_teleop_demonstrations_land_in_the_store(recorded: dict) -> None:
    output = recorded["output"]
    assert recorded["returncode"] == 0, output
    assert (
        "[episode_driver] episode 2/2" in output and "episode_driver finished; stopping the graph" in output
    )
    assert "all nodes stopped" in output and "Traceback" not in output
    store = EpisodeStore.open(recorded["store"])
    metas = store.list_episodes()
    assert [m.index for m in metas] == [0, 1]
    for meta in metas:
        assert meta.source == "scripted" and meta.task == "lift" and meta.success, (meta, output)
        assert 40 < meta.num_frames <= 110
        actions = store.read_episode(meta.index, [ACTION]).data[ACTION]
        assert actions.shape[1] == 7 and np.abs(actions).max() <= 1.0  # ee_delta: the base's action space
        assert actions[:, 6].max() > 0.5  # the gripper closed on the cube


@pytest.fixture(scope="module")
def finetune(recorded: dict) -> Iterator[dict]:
    """The fine-tuning graph (sim, real time) on the recorded demos: a tiny base and learner."""
    assert recorded["returncode"] == 0, recorded["output"]
    root: Path = recorded["root"]
    torch.set_num_threads(1)
    base = train_local_bc_base(EpisodeStore.open(recorded["store"]), LocalBCConfig(steps=200, hidden=(32,)))
    base.save(root / "base")
    learner = LearnerConfig(
        store=str(recorded["store"]),
        batch_size=32,
        utd_ratio=2.0,
        actor_warmup_updates=10,
        bc=BCConfig(steps=50, hidden_sizes=[16, 16], bottleneck=4, num_features=16),
        critic=CriticConfig(hidden_sizes=[16, 16], num_bins=11, pretrain_steps=20),
        publish_every_updates=10,
        checkpoint_every_updates=40,
    )
    (root / "learner.yaml").write_text(yaml.safe_dump(learner.model_dump(mode="json")))
    # A ROS parameter file as a user would pass one (params_file): small training slices, so versions
    # come out every 10 updates even on a loaded machine.
    params = {"learner_node": {"ros__parameters": {"updates_per_slice": 5, "metrics_period_s": 0.5}}}
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    nodes = build_graph(
        "finetune",
        True,
        {
            "robot_config": "robot_sim_state.yaml",
            "store": str(recorded["store"]),
            "base_checkpoint": str(root / "base"),
            "learner_config": str(root / "learner.yaml"),
            "episodes": "100",
            "max_steps": "40",
            "real_time_factor": "1",
            "checkpoint": str(root / "learner" / "learner.pt"),
            "seed": "500",
            "params_file": str(root / "params.yaml"),
            "dashboard": "false",
        },
    )
    env = fresh_ros_env()
    launcher = Launcher(nodes, env=env, log_dir=root / "finetune", stream=None)
    with RosProbe(env) as probe:
        probe.subscribe(Float64MultiArray, STEP_TOPIC, DEEP)
        probe.subscribe(String, WEIGHTS_STATUS_TOPIC, DEEP)
        probe.subscribe(String, POLICY_DIAGNOSTICS_TOPIC, DEEP)
        probe.subscribe(String, LEARNER_METRICS_TOPIC, DEEP)
        probe.subscribe(String, EPISODE_TOPIC, DEEP_LATCHED)
        launcher.start()
        try:
            yield {"launcher": launcher, "probe": probe, "root": root}
        finally:
            code = launcher.stop("test done")
            for name in launcher.instances:
                print(f"---- {name} ----\n{launcher.output(name)[-3000:]}")
    assert code == 0


def statuses(probe: RosProbe) -> list[dict]:
    return [json.loads(m.data) for m in probe.got(WEIGHTS_STATUS_TOPIC)]


def accepted_versions(probe: RosProbe) -> list[int]:
    return [s["version"] for s in statuses(probe) if s["accepted"]]


def diagnostics(probe: RosProbe, after: float, timeout: float = 20.0) -> dict:
    msgs = probe.wait_for(
        POLICY_DIAGNOSTICS_TOPIC, timeout=timeout, where=lambda m: json.loads(m.data)["wall_time"] > after
    )
    return json.loads(msgs[-1].data)


def wait_until(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.05)


def test_weights_flow_and_swap_mid_episode_without_a_hold(finetune: dict) -> None:
    probe = finetune["probe"]

    def stop_events() -> list[dict]:
        return [e for m in probe.got(EPISODE_TOPIC) if (e := json.loads(m.data))["event"] == "stop"]

    def swapped_mid_episode() -> bool:
        # Two episodes at least: the first can already be the one that acts on two versions (CI saw
        # it, when the learner published its first snapshots early in that episode).
        stops = stop_events()
        two_versions = any(len(e["policy_versions"]) >= 2 for e in stops)
        return len(stops) >= 2 and two_versions and len(accepted_versions(probe)) >= 3

    wait_until(swapped_mid_episode, 120, "two episodes, one acting on two weight versions")
    stops = stop_events()
    assert len(stops) >= 2 and not any(e["skipped"] for e in stops)  # every step of every episode recorded
    assert any(len(e["policy_versions"]) >= 2 for e in stops), stops  # weights changed during an episode
    assert len(accepted_versions(probe)) >= 3 and accepted_versions(probe) == sorted(accepted_versions(probe))
    steps = [decode_step(m) for m in probe.got(STEP_TOPIC)]
    swaps = [
        (a, b) for a, b in itertools.pairwise(steps) if b.tick > 0 and b.policy_version != a.policy_version
    ]
    assert swaps, "no swap inside an episode"
    for before, after in swaps:  # between two consecutive ticks: no hold, no lost step record
        assert after.tick == before.tick + 1 and after.policy_version > before.policy_version
    # Adopted at the next control period. Not asserted for every swap: on a loaded two-core machine the
    # loop misses periods whether or not weights arrive (bench/policy_swap_bench.py compares the
    # intervals next to swaps with all others); one swap one period apart shows the mechanism.
    gaps = [after.stamp - before.stamp for before, after in swaps]
    assert any(gap == pytest.approx(PERIOD, abs=1e-6) for gap in gaps), gaps
    store = EpisodeStore.open(finetune["root"] / "episodes.zarr")
    rollouts = [m for m in store.list_episodes() if m.source == "policy"]
    assert rollouts and all(m.success is not None for m in rollouts)  # labelled by the driver


def test_learner_killed_and_respawned_resumes_while_the_policy_keeps_acting(finetune: dict) -> None:
    probe, launcher = finetune["probe"], finetune["launcher"]
    checkpointed = probe.wait_for(
        LEARNER_METRICS_TOPIC,
        timeout=60,
        where=lambda m: (json.loads(m.data).get("last_checkpoint_updates") or 0) >= 40,
    )
    saved = json.loads(checkpointed[-1].data)["last_checkpoint_updates"]
    launcher.send_signal("learner_node", signal.SIGKILL)
    killed_at = time.time()
    # While the learner is down (the launcher restarts it after 2 s, and it takes seconds more to
    # publish), the robot does not notice: the policy acts on its last weights, tick after tick. A
    # snapshot published just before the kill may still be in flight or being validated: let it land.
    # Counted in steps, not in a wall-clock window: between two episodes the sim is paused and the
    # policy sends none (a 1.2 s window once held 4, in CI). The respawned learner needs the 2 s
    # restart delay and more before it publishes, far longer than six steps take while acting.
    time.sleep(0.5)
    last = max(accepted_versions(probe))
    probe.clear(STEP_TOPIC)
    acting = [decode_step(m) for m in probe.wait_for(STEP_TOPIC, 6, timeout=20)[:6]]
    assert {s.policy_version for s in acting} == {last}
    assert launcher.wait_output("learner_node", "resumed from", timeout=60, instance=1), launcher.output(
        "learner_node"
    )
    wait_until(lambda: max(accepted_versions(probe)) > last, 60, "a version from the respawned learner")
    diag = diagnostics(probe, after=time.time())
    assert diag["active_version"] > last and diag["active_run_id"] == statuses(probe)[-1]["run_id"]
    assert diag["wall_time"] > killed_at
    resumed = probe.wait_for(
        LEARNER_METRICS_TOPIC,
        timeout=60,
        where=lambda m: (
            json.loads(m.data).get("resumed_updates") is not None
            and json.loads(m.data)["updates"] > json.loads(m.data)["resumed_updates"]
        ),
    )
    metrics = json.loads(resumed[-1].data)
    assert metrics["resumed_updates"] >= saved  # from its checkpoint, not from scratch
    assert "pretrained in" not in launcher.output("learner_node", instance=1)


def test_a_stale_sensor_makes_the_policy_hold_then_it_recovers(finetune: dict) -> None:
    probe, launcher = finetune["probe"], finetune["launcher"]
    launcher.send_signal("joint_node", signal.SIGSTOP)  # /coirl/state stops; the sim runs on
    try:
        wait_until(
            lambda: diagnostics(probe, after=time.time() - 0.5)["hold_reason"] == "stale:observation.state",
            20,
            "policy_node holding on the stale state",
        )
        probe.clear(STEP_TOPIC)
        time.sleep(0.5)
        assert probe.got(STEP_TOPIC) == []  # holding: no policy actions
    finally:
        launcher.send_signal("joint_node", signal.SIGCONT)
    probe.wait_for(STEP_TOPIC, 5, timeout=20)
    assert launcher.running


def test_malformed_weights_are_rejected_and_reported_in_the_running_graph(finetune: dict) -> None:
    probe = finetune["probe"]
    publisher = probe.node.create_publisher(UInt8MultiArray, WEIGHTS_TOPIC, LATCHED_QOS)
    probe.subscribe(UInt8MultiArray, WEIGHTS_TOPIC, LATCHED_QOS)
    latest = WeightSnapshot.from_bytes(weights_payload(probe.wait_for(WEIGHTS_TOPIC)[-1]))
    data = latest.to_bytes()
    tensors = safetensors.torch.load(data)
    name = sorted(tensors)[0]
    tensors[name] = torch.full_like(tensors[name], float("nan"))
    metadata = weight_snapshot._read_metadata(data) | {"version": str(latest.version + 1000)}
    diverged = safetensors.torch.save(tensors, metadata=metadata)
    before = len(statuses(probe))
    active = diagnostics(probe, after=time.time())["active_version"]
    probe.wait_subscribers(publisher)

    def rejected_for(reason: str, within_s: float) -> bool:
        until = time.monotonic() + within_s
        while time.monotonic() < until:
            if any(not s["accepted"] and reason in s["reason"] for s in statuses(probe)[before:]):
                return True
            time.sleep(0.05)
        return False

    for payload, reason in ((b"\x00garbage, not a snapshot", "safetensors"), (diverged, "non-finite")):
        # The topic keeps one message and the learner publishes every few tenths of a second, so a
        # payload can be replaced before policy_node takes it: publish again until it is answered.
        for _attempt in range(20):
            publisher.publish(weights_message(payload))
            if rejected_for(reason, within_s=1.0):
                break
        else:
            raise AssertionError(f"no rejection naming {reason!r} in 20 tries: {statuses(probe)[before:]}")
    diag = diagnostics(probe, after=time.time())
    assert diag["active_version"] >= active and diag["active_version"] < latest.version + 1000
    assert diag["weights"]["rejected"] >= 2
    probe.clear(STEP_TOPIC)
    probe.wait_for(STEP_TOPIC, 5, timeout=20)  # still acting
