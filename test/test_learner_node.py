"""learner_node as a real process: follows the store, publishes versioned weights, pauses, and resumes
from its checkpoint after SIGKILL with versions above everything it published before."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch
import yaml
from conftest import fresh_ros_env, record_reach
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from ros_probe import NodeProcess, RosProbe
from std_msgs.msg import String, UInt8MultiArray
from std_srvs.srv import SetBool

from coirl_ros.configs import LearnerConfig
from coirl_ros.configs.learner import BCConfig, CriticConfig
from coirl_ros.data import EpisodeSpec, EpisodeStore
from coirl_ros.learning.weight_snapshot import WeightSnapshot, read_snapshot
from coirl_ros.nodes.control_messages import weights_payload
from coirl_ros.nodes.interfaces import (
    COMMAND_QOS,
    LEARNER_METRICS_TOPIC,
    LEARNER_PAUSE_SERVICE,
    WEIGHTS_TOPIC,
)
from coirl_ros.paths import config_dir

pytestmark = pytest.mark.ros

SCALE = 0.5
# The weights topic keeps one snapshot for late joiners (interfaces.LATCHED_QOS). These tests count
# every version published, so their reader queue is deep: two snapshots published back to back
# (pre-training, then a re-anchoring) must not replace each other before the probe takes the first.
EVERY_WEIGHTS_QOS = QoSProfile(
    depth=20,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.TRANSIENT_LOCAL,
    history=HistoryPolicy.KEEP_LAST,
)


@pytest.fixture
def setup(tmp_path: Path) -> dict[str, Path]:
    """A toy reaching store (demos + rollouts) and tiny learner/policy configs pointing at it."""
    store_root = tmp_path / "episodes.zarr"
    store = EpisodeStore.create(store_root, EpisodeSpec(state_dim=2, action_dim=2, fps=20.0))
    record_reach(store, "scripted", episodes=4, seed=0, noise=0.0, scale=SCALE)
    record_reach(store, "policy", episodes=10, seed=1, noise=0.3, scale=SCALE)
    learner = LearnerConfig(
        store=str(store_root),
        batch_size=32,
        utd_ratio=50.0,  # plenty of updates due: the node is killed while training
        bc=BCConfig(steps=50, hidden_sizes=[16, 16], bottleneck=4, num_features=16),
        critic=CriticConfig(hidden_sizes=[16, 16], num_bins=11, pretrain_steps=20),
        actor_warmup_updates=10,
        publish_every_updates=20,
        checkpoint_every_updates=40,
    )
    policy = yaml.safe_load((config_dir() / "policy.yaml").read_text())
    policy["residual"]["scale"] = SCALE
    (tmp_path / "learner.yaml").write_text(yaml.safe_dump(learner.model_dump(mode="json")))
    (tmp_path / "policy.yaml").write_text(yaml.safe_dump(policy))
    return {"root": tmp_path, "checkpoint": tmp_path / "run" / "learner.pt"}


def start(setup: dict[str, Path], env: dict[str, str]) -> NodeProcess:
    return NodeProcess(
        "learner_node",
        env,
        {
            "learner_config": setup["root"] / "learner.yaml",
            "policy_config": setup["root"] / "policy.yaml",
            "checkpoint": setup["checkpoint"],
            "metrics_period_s": 0.2,
            "updates_per_slice": 20,
            "keep_snapshots": True,
        },
    )


def snapshots(probe: RosProbe) -> list[WeightSnapshot]:
    return [WeightSnapshot.from_bytes(weights_payload(m)) for m in probe.got(WEIGHTS_TOPIC)]


def metrics(probe: RosProbe) -> list[dict]:
    return [json.loads(m.data) for m in probe.got(LEARNER_METRICS_TOPIC)]


def wait_metrics(probe: RosProbe, where, timeout: float = 60.0) -> dict:
    msgs = probe.wait_for(LEARNER_METRICS_TOPIC, timeout=timeout, where=lambda m: where(json.loads(m.data)))
    return json.loads(msgs[-1].data)


def checkpoint_updates(path: Path) -> int:
    return torch.load(path, map_location="cpu", weights_only=False)["state"]["updates"]


def test_publishes_weights_and_resumes_after_sigkill(setup: dict[str, Path], ros_env: dict[str, str]) -> None:
    with RosProbe(ros_env) as probe:
        probe.subscribe(UInt8MultiArray, WEIGHTS_TOPIC, EVERY_WEIGHTS_QOS)
        probe.subscribe(String, LEARNER_METRICS_TOPIC, COMMAND_QOS)
        first = start(setup, ros_env)
        try:
            probe.wait_for(WEIGHTS_TOPIC, 3, timeout=90)  # pretrained (v1), then every 20 updates
            wait_metrics(probe, lambda m: (m.get("last_checkpoint_updates") or 0) >= 40)
        finally:
            first.kill()  # SIGKILL: no cleanup, as a crash
            log = first.output
            first.stop()
        before = snapshots(probe)
        versions = [s.version for s in before]
        # No version skipped. The topic latches only the newest, so a probe that matches late (a
        # loaded machine, seen in CI) starts above v1; every version is on disk (keep_snapshots).
        assert versions == list(range(versions[0], versions[0] + len(versions))), versions
        kept = {
            v: read_snapshot(setup["checkpoint"].parent / "snapshots" / f"v{v}.weights")
            for v in range(1, versions[-1] + 1)
        }
        assert kept[1].updates == 0 and before[-1].updates >= 40  # pretrained, then online updates
        run_id = kept[1].run_id
        assert "pretrained in" in log and all(k.run_id == run_id for k in kept.values())
        assert [k.version for k in kept.values()] == list(kept)
        for snap in before:  # what was published is what was kept
            on_disk = kept[snap.version]
            assert (on_disk.run_id, on_disk.updates) == (snap.run_id, snap.updates)
            assert all(torch.equal(on_disk.tensors[k], t) for k, t in snap.tensors.items())
        saved = checkpoint_updates(setup["checkpoint"])
        assert saved >= 40
        bc_steps = metrics(probe)[-1]["bc_steps"]

    # The restarted learner gets a ROS domain of its own: DDS lists a killed node's services until its
    # lease ends, and a request to the restarted one could go to that ghost alone.
    again_env = fresh_ros_env()
    with RosProbe(again_env) as probe:
        probe.subscribe(UInt8MultiArray, WEIGHTS_TOPIC, EVERY_WEIGHTS_QOS)
        probe.subscribe(String, LEARNER_METRICS_TOPIC, COMMAND_QOS)
        second = start(setup, again_env)
        try:
            assert second.wait_output("resumed from", timeout=60), second.output
            resumed = probe.wait_for(WEIGHTS_TOPIC, timeout=60)
            snap = WeightSnapshot.from_bytes(weights_payload(resumed[0]))
            # Same run, continued from the checkpoint, above every version the robot may be running.
            # The resume snapshot itself has updates == saved, but the topic latches one message: a
            # probe that matches late (a loaded machine, seen in CI) first gets a later one. The exact
            # resume point is `resumed_updates` below.
            assert snap.run_id == run_id and snap.version > before[-1].version and snap.updates >= saved
            later = wait_metrics(probe, lambda m: m.get("updates", 0) > saved + 20)
            assert later["resumed_updates"] == saved
            assert later["bc_steps"] == bc_steps  # restored, not pretrained again
            assert "pretrained in" not in second.output

            assert probe.call(SetBool, LEARNER_PAUSE_SERVICE, SetBool.Request(data=True)).success
            paused = wait_metrics(probe, lambda m: m["paused"] and m["status"] == "paused")
            time.sleep(0.6)
            assert metrics(probe)[-1]["updates"] == paused["updates"]  # nothing trains while paused
            assert probe.call(SetBool, LEARNER_PAUSE_SERVICE, SetBool.Request(data=False)).success
            wait_metrics(probe, lambda m: m.get("updates", 0) > paused["updates"])
        finally:
            code = second.stop()  # SIGINT: a clean shutdown checkpoints what it learned
        assert code == 0, second.output
        assert checkpoint_updates(setup["checkpoint"]) >= paused["updates"]


def test_a_reanchoring_bc_learner_publishes_each_reanchoring_and_then_waits(
    setup: dict[str, Path], ros_env: dict[str, str]
) -> None:
    """Success-filtered BC (`method: bc` + re-anchoring) makes no gradient updates: the node must still
    publish and checkpoint each re-anchoring, and then wait for rollouts instead of spinning."""
    config = yaml.safe_load((setup["root"] / "learner.yaml").read_text())
    config.update(method="bc", successes_as_demos=True, reanchor_every_env_steps=50, reanchor_bc_steps=30)
    (setup["root"] / "learner.yaml").write_text(yaml.safe_dump(config))
    with RosProbe(ros_env) as probe:
        probe.subscribe(UInt8MultiArray, WEIGHTS_TOPIC, EVERY_WEIGHTS_QOS)
        probe.subscribe(String, LEARNER_METRICS_TOPIC, COMMAND_QOS)
        node = start(setup, ros_env)
        try:
            # The store already holds 10 rollouts (> 50 env steps): one re-anchoring covers them. Pre-
            # training and re-anchoring take well under a second, so a probe that matches late (a
            # loaded machine) gets only the latched v2; v1 is read from the kept snapshots.
            probe.wait_for(
                WEIGHTS_TOPIC,
                timeout=90,
                where=lambda m: WeightSnapshot.from_bytes(weights_payload(m)).version == 2,
            )
            waiting = wait_metrics(probe, lambda m: m["status"] == "waiting_for_rollouts" and m["reanchors"])
        finally:
            code = node.stop()
        assert code == 0, node.output
    kept = setup["checkpoint"].parent / "snapshots"
    pretrained, reanchored = (read_snapshot(kept / f"v{v}.weights") for v in (1, 2))
    assert (pretrained.version, reanchored.version) == (1, 2) and reanchored.updates == 0
    assert any(not torch.equal(pretrained.tensors[k], t) for k, t in reanchored.tensors.items())
    assert waiting["updates"] == 0 and waiting["bc_steps"] == 50 + 30
    assert waiting["demo_transitions"] > 0 and "re-anchored at" in node.output
    state = torch.load(setup["checkpoint"], map_location="cpu", weights_only=False)["state"]
    assert state["reanchors"] == waiting["env_steps"] // 50
