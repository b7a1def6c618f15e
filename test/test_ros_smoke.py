"""Two processes exchange sensor_msgs/JointState over rclpy on loopback DDS (proves the ROS wheels work)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).parent / "scripts"


@pytest.mark.ros
def test_joint_states_cross_process_boundary(ros_env: dict[str, str]) -> None:
    talker = subprocess.Popen([sys.executable, str(SCRIPTS / "joint_state_talker.py")], env=ros_env)
    try:
        listener = subprocess.run(
            [sys.executable, str(SCRIPTS / "joint_state_listener.py")],
            env=ros_env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        talker.terminate()
        talker.wait(timeout=20)
    assert listener.returncode == 0, f"no JointState received: {listener.stderr}"
    got = json.loads(listener.stdout)
    assert got["names"] == [f"panda_joint{i}" for i in range(1, 8)]
    firsts = [p[0] for p in got["positions"]]
    assert firsts == sorted(firsts) and len(set(firsts)) == 5  # distinct, in-order messages


@pytest.mark.ros
def test_other_domain_hears_nothing(ros_env: dict[str, str]) -> None:
    """The domain id isolates tests from each other: a listener on another domain must time out."""
    other = dict(ros_env, ROS_DOMAIN_ID=str(int(ros_env["ROS_DOMAIN_ID"]) + 50))  # 51-100
    talker = subprocess.Popen([sys.executable, str(SCRIPTS / "joint_state_talker.py")], env=ros_env)
    try:
        code = f"import runpy,sys,time; sys.argv=['x']; import rclpy; {_SHORT_LISTENER}"
        listener = subprocess.run(
            [sys.executable, "-c", code], env=other, capture_output=True, text=True, timeout=60
        )
        # Control: the talker was alive and audible on its own domain the whole time.
        control = subprocess.run(
            [sys.executable, str(SCRIPTS / "joint_state_listener.py")],
            env=ros_env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert talker.poll() is None
    finally:
        talker.terminate()
        talker.wait(timeout=20)
    assert listener.returncode == 0, listener.stderr
    assert listener.stdout.strip() == "0"
    assert control.returncode == 0, "the control listener heard nothing: the talker was not publishing"


_SHORT_LISTENER = (
    "from sensor_msgs.msg import JointState; rclpy.init(); n=rclpy.create_node('iso'); got=[];"
    " n.create_subscription(JointState,'/joint_states',got.append,10); t=time.monotonic()\n"
    "while time.monotonic()-t<3: rclpy.spin_once(n,timeout_sec=0.1)\n"
    "print(len(got))"
)
