"""joint_node as a process: name mapping onto the policy's state; bad data flagged and never passed on,
late data passed on with its stamp and flagged."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pytest
from builtin_interfaces.msg import Time
from ros_probe import NodeProcess, RosProbe, robot_config_file
from sensor_msgs.msg import JointState
from std_msgs.msg import String

from coirl_ros.ingestion.joint_state_mapper import JointSample, JointStateMapper, RobotState, StateProblem
from coirl_ros.nodes.interfaces import JOINT_DIAGNOSTICS_TOPIC, STATE_QOS, STATE_TOPIC

ARM = [f"panda_joint{i}" for i in range(1, 8)]
GRIPPER = "panda_finger_joint1"


def joint_state(t: float, names: list[str], positions: list[float]) -> JointState:
    msg = JointState(name=names, position=positions)
    msg.header.stamp = Time(sec=int(t), nanosec=round((t % 1) * 1e9) % 1_000_000_000)
    return msg


def test_mapper_orders_joints_and_rejects_bad_samples() -> None:
    m = JointStateMapper(ARM, GRIPPER, timeout_s=0.2)
    names = ["panda_finger_joint2", GRIPPER, *reversed(ARM), "base_yaw"]
    values = [0.5, 0.03, *[7 - i for i in range(7)], 9.0]  # joint i+1 has value i+1 in reversed order
    state = m.update(JointSample(10.0, names, values), now=10.05)
    assert isinstance(state, RobotState)
    assert state.names == (*ARM, GRIPPER) and state.positions.tolist() == [1, 2, 3, 4, 5, 6, 7, 0.03]
    kinds = {
        "backwards": m.update(JointSample(9.9, names, values), now=10.05),
        "duplicate": m.update(JointSample(10.0, names, values), now=10.05),
        "future": m.update(JointSample(11.0, names, values), now=10.2),
        "no_clock": m.update(JointSample(10.1, names, values), now=0.0),  # sim time before /clock
        "nan": m.update(JointSample(10.2, names, [*values[:3], math.nan, *values[4:]]), now=10.2),
        "missing": m.update(JointSample(10.3, ARM[:6], list(range(6))), now=10.3),
        "unstamped": m.update(JointSample(0.0, names, values), now=10.3),
        "malformed": m.update(JointSample(10.4, names, values[:-1]), now=10.4),
    }
    for kind, result in kinds.items():
        assert isinstance(result, StateProblem) and result.kind == kind, (kind, result)
    # Late is not wrong: the values and stamp are right, and who acts on them judges freshness.
    late = m.update(JointSample(10.5, names, values), now=11.0)
    assert isinstance(late, RobotState) and late.stamp == 10.5 and late.age_s == pytest.approx(0.5)
    # The gripper on its own topic: stored, then merged into the next arm sample.
    m2 = JointStateMapper(ARM, GRIPPER, timeout_s=0.2)
    assert m2.update(JointSample(5.0, [GRIPPER], [0.02]), now=5.0) is None
    merged = m2.update(JointSample(5.05, ARM, list(range(7))), now=5.05)
    assert isinstance(merged, RobotState) and merged.positions[-1] == 0.02
    late = m2.update(JointSample(5.5, ARM, list(range(7))), now=5.5)
    assert isinstance(late, StateProblem) and late.kind == "missing" and "gripper" in late.reason


@pytest.mark.ros
def test_joint_node_maps_and_flags(ros_env: dict[str, str], tmp_path: Path) -> None:
    params = {"robot_config": robot_config_file(tmp_path, state_timeout_s=0.3), "diagnostics_period_s": 0.2}
    with NodeProcess("joint_node", ros_env, params) as node, RosProbe(ros_env) as probe:
        probe.subscribe(JointState, STATE_TOPIC)
        probe.subscribe(String, JOINT_DIAGNOSTICS_TOPIC)
        pub = probe.node.create_publisher(JointState, "/joint_states", STATE_QOS)
        probe.wait_subscribers(pub)
        probe.wait_for(JOINT_DIAGNOSTICS_TOPIC)  # the node is up and spinning

        def now() -> float:
            return time.time()

        def diag(status: str) -> dict:
            msgs = probe.wait_for(
                JOINT_DIAGNOSTICS_TOPIC, where=lambda m: json.loads(m.data)["status"] == status
            )
            return json.loads(msgs[-1].data)

        names = [GRIPPER, *reversed(ARM), "panda_finger_joint2"]
        values = [0.04, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.04]
        old = now() - 5.0
        pub.publish(joint_state(old, names, values))  # late: passed on with its stamp, flagged
        late = diag("stale")
        assert late["late"] == 1 and late["rejected"] == {} and "arrived 5." in late["reason"]
        t = now()
        pub.publish(joint_state(t, names, values))
        got = probe.wait_for(STATE_TOPIC, 2)
        assert [m.header.stamp.sec + m.header.stamp.nanosec * 1e-9 for m in got] == pytest.approx(
            [old, t], abs=1e-6
        )
        out = got[-1]
        assert list(out.name) == [*ARM, GRIPPER]
        assert list(out.position) == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.04])
        assert diag("ok")["published"] == 2

        # Bad data: none of it reaches /coirl/state; diagnostics say why.
        bad = [
            joint_state(now(), names, [0.04, 0.7, 0.6, float("nan"), 0.4, 0.3, 0.2, 0.1, 0.04]),
            joint_state(now(), names[:5], values[:5]),  # arm joints missing
            joint_state(t - 0.01, names, values),  # older than the last: backwards
        ]
        for msg in bad:
            pub.publish(msg)
        report = probe.wait_for(
            JOINT_DIAGNOSTICS_TOPIC, where=lambda m: sum(json.loads(m.data)["rejected"].values()) >= 3
        )[-1]
        rejected = json.loads(report.data)["rejected"]
        assert rejected == {"nan": 1, "missing": 1, "backwards": 1}
        assert len(probe.got(STATE_TOPIC)) == 2

        # Silence: the last good state ages out and the node says so.
        pub.publish(joint_state(now(), names, values))
        probe.wait_for(STATE_TOPIC, 3)
        stale = diag("stale")
        assert "no valid joint state" in stale["reason"] or "old" in stale["reason"]
        assert node.alive()
    assert "rejected (nan)" in node.output and "late joint state" in node.output
    assert "Traceback" not in node.output
