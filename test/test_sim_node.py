"""sim_node as a process on loopback DDS: real MuJoCo physics behind the robot's topics."""

from __future__ import annotations

import itertools
import json
import time
from pathlib import Path

import numpy as np
import pytest
from builtin_interfaces.msg import Duration
from ros_probe import NodeProcess, RosProbe, robot_config_file
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import Float64MultiArray
from std_srvs.srv import SetBool, Trigger
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from coirl_ros.nodes.interfaces import (
    COMMAND_QOS,
    ENV_STATE_QOS,
    ENV_STATE_TOPIC,
    SENSOR_QOS,
    SIM_STATE_TOPIC,
    decode_environment_state,
    decode_sim_state,
    sim_camera_topic,
)
from coirl_ros.sim.kinematics import HOME_QPOS

ARM = "/forward_position_controller/commands"
GRIPPER = "/gripper_controller/commands"
JOINTS = [f"panda_joint{i}" for i in range(1, 8)] + ["panda_finger_joint1"]


def stamp(msg) -> float:
    return msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9


def wait_publisher(probe: RosProbe, topic: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while probe.node.count_publishers(topic) == 0:
        assert time.monotonic() < deadline, f"no publisher on {topic}"
        time.sleep(0.02)
    time.sleep(0.2)  # let the other side match our subscriptions too


@pytest.mark.ros
def test_lockstep_sim_steps_once_per_command(ros_env: dict[str, str], tmp_path: Path) -> None:
    cameras = [
        {"name": "front", "source": "sim", "width": 32, "height": 24, "fps": 20.0},
        {"name": "wrist", "source": "sim", "width": 16, "height": 16, "fps": 10.0},
    ]
    params = {
        "robot_config": robot_config_file(tmp_path, cameras),
        "use_sim_time": True,
        "lockstep": True,
        "lockstep_timeout_s": 30.0,
        "task": "lift",
        "seed": 3,
    }
    with NodeProcess("sim_node", ros_env, params) as sim, RosProbe(ros_env) as probe:
        for topic, kind, qos in [
            ("/joint_states", JointState, 10),
            ("/clock", Clock, 10),
            (ENV_STATE_TOPIC, Float64MultiArray, 10),
            (SIM_STATE_TOPIC, Float64MultiArray, 10),
            (sim_camera_topic("front"), Image, SENSOR_QOS),
            (sim_camera_topic("wrist"), Image, SENSOR_QOS),
            ("/sim/cameras/front/camera_info", CameraInfo, SENSOR_QOS),
        ]:
            probe.subscribe(kind, topic, qos)
        arm = probe.node.create_publisher(Float64MultiArray, ARM, COMMAND_QOS)
        grip = probe.node.create_publisher(Float64MultiArray, GRIPPER, COMMAND_QOS)
        wait_publisher(probe, "/joint_states")
        probe.wait_subscribers(arm)
        probe.wait_subscribers(grip)

        reset = probe.call(Trigger, "/sim/reset")
        info = json.loads(reset.message)
        assert reset.success and info["seed"] == 4 and info["task"] == "lift"
        first = probe.wait_for("/joint_states", where=lambda m: abs(stamp(m) - info["time"]) < 1e-6)[0]
        assert list(first.name) == JOINTS
        np.testing.assert_allclose(first.position[:7], HOME_QPOS, atol=0.05)
        assert len(first.velocity) == 8

        # Everything the sim publishes for one instant carries the same time.
        t0 = stamp(first)
        env = probe.wait_for(
            ENV_STATE_TOPIC, where=lambda m: decode_environment_state(m)[0] == pytest.approx(t0)
        )
        assert decode_environment_state(env[-1])[1].shape == (7,)  # lift: cube position + quaternion
        sim_state = decode_sim_state(probe.wait_for(SIM_STATE_TOPIC)[-1])
        assert sim_state.time == pytest.approx(t0) and sim_state.qpos.shape == (16,)
        probe.wait_for("/clock", where=lambda m: m.clock.sec + m.clock.nanosec * 1e-9 == pytest.approx(t0))
        front = probe.wait_for(sim_camera_topic("front"), where=lambda m: stamp(m) == pytest.approx(t0))[-1]
        assert (front.width, front.height, front.encoding, len(front.data)) == (32, 24, "rgb8", 32 * 24 * 3)
        assert np.frombuffer(bytes(front.data), np.uint8).std() > 5  # a rendered scene, not a blank
        info_msg = probe.wait_for("/sim/cameras/front/camera_info")[-1]
        assert info_msg.k[0] > 0 and info_msg.k[2] == pytest.approx(16.0)

        # Lockstep: nothing moves without a command; an arm command alone waits for its gripper half.
        n0 = len(probe.got("/joint_states"))
        time.sleep(0.4)
        assert len(probe.got("/joint_states")) == n0
        target = list(HOME_QPOS)
        target[0] += 0.4
        arm.publish(Float64MultiArray(data=target))
        time.sleep(0.3)
        assert len(probe.got("/joint_states")) == n0
        grip.publish(Float64MultiArray(data=[0.0]))
        probe.wait_for("/joint_states", n0 + 1)
        for k in range(2, 16):
            arm.publish(Float64MultiArray(data=target))
            grip.publish(Float64MultiArray(data=[0.0]))
            probe.wait_for("/joint_states", n0 + k)
        time.sleep(0.2)
        states = probe.got("/joint_states")[n0 - 1 :]
        assert len(states) == 16, "one state per command, no more"
        np.testing.assert_allclose(np.diff([stamp(m) for m in states]), 0.05, atol=1e-6)
        last = states[-1]
        assert last.position[0] - HOME_QPOS[0] > 0.3  # MuJoCo moved the arm toward the target
        assert last.position[7] < 0.01  # and closed the gripper
        fronts = [m for m in probe.got(sim_camera_topic("front")) if stamp(m) > t0]
        wrists = [m for m in probe.got(sim_camera_topic("wrist")) if stamp(m) > t0]
        assert len(fronts) >= 12 and len(wrists) <= len(fronts) // 2 + 1  # each camera at its own rate

        assert not probe.call(Trigger, "/sim/success").success
        assert probe.call(SetBool, "/sim/pause", SetBool.Request(data=True)).message == "paused"
        n1 = len(probe.got("/joint_states"))
        arm.publish(Float64MultiArray(data=target))
        grip.publish(Float64MultiArray(data=[0.0]))
        time.sleep(0.3)
        assert len(probe.got("/joint_states")) == n1
        # Paused, nothing is published; the object state is latched: a node subscribing now (a recorder
        # that sizes a new store from it) still gets the current one.
        latched: list[Float64MultiArray] = []
        probe.node.create_subscription(Float64MultiArray, ENV_STATE_TOPIC, latched.append, ENV_STATE_QOS)
        deadline = time.monotonic() + 20
        while not latched and time.monotonic() < deadline:
            time.sleep(0.02)
        assert latched and decode_environment_state(latched[-1])[1].shape == (7,)
        probe.call(SetBool, "/sim/pause", SetBool.Request(data=False))
        probe.wait_for("/joint_states", n1 + 1)  # the command kept while paused runs now

        again = json.loads(probe.call(Trigger, "/sim/reset").message)
        assert again["seed"] == 5 and again["time"] > stamp(probe.got("/joint_states")[n1])
        fresh = probe.wait_for("/joint_states", where=lambda m: stamp(m) == pytest.approx(again["time"]))[0]
        np.testing.assert_allclose(fresh.position[:7], HOME_QPOS, atol=0.05)  # new scene, home pose
        assert sim.alive()
    assert "Traceback" not in sim.output, sim.output


@pytest.mark.ros
def test_free_running_sim_keeps_pace_and_follows_trajectories(
    ros_env: dict[str, str], tmp_path: Path
) -> None:
    robot = robot_config_file(tmp_path, command={"interface": "joint_trajectory"})
    params = {"robot_config": robot, "use_sim_time": True, "real_time_factor": 2.0, "task": "lift"}
    with NodeProcess("sim_node", ros_env, params) as sim, RosProbe(ros_env) as probe:
        probe.subscribe(Clock, "/clock")
        probe.subscribe(JointState, "/joint_states")
        traj_pub = probe.node.create_publisher(JointTrajectory, ARM, COMMAND_QOS)
        probe.wait_for("/clock", 5)
        probe.wait_subscribers(traj_pub)

        def sim_time() -> float:
            c = probe.got("/clock")[-1].clock
            return c.sec + c.nanosec * 1e-9

        wall0, sim0 = time.monotonic(), sim_time()
        target = [*HOME_QPOS, 0.04]
        target[1] += 0.3
        traj = JointTrajectory(joint_names=JOINTS)
        traj.points = [
            JointTrajectoryPoint(positions=target, time_from_start=Duration(sec=0, nanosec=500_000_000))
        ]
        traj_pub.publish(traj)
        # The sim paces itself: never faster than asked on average, and at the asked rate wherever
        # the machine lets it (the best of six quarter-second windows; a loaded CI machine can stall
        # the sim for a while, as it did the policy node's timer).
        marks = [(wall0, sim0)]
        for _ in range(6):
            time.sleep(0.25)
            marks.append((time.monotonic(), sim_time()))
        rate = (marks[-1][1] - sim0) / (marks[-1][0] - wall0)
        assert rate < 2.2, f"sim ran at {rate:.2f}x real time, asked for 2x"
        best = max((s1 - s0) / (w1 - w0) for (w0, s0), (w1, s1) in itertools.pairwise(marks))
        assert best > 1.6, f"sim ran at {best:.2f}x real time at best, asked for 2x"
        last = probe.got("/joint_states")[-1]
        assert last.position[1] == pytest.approx(target[1], abs=0.03)  # reached and held
        assert last.position[0] == pytest.approx(HOME_QPOS[0], abs=0.03)
        assert sim.alive()
    assert "Traceback" not in sim.output, sim.output
